//! SeaORM entities for tradegraph's tables, with the string-valued enums they store.
//!
//! Each module is one table. Enums are stored as their upper-case GraphQL names so that
//! a row read by hand in `psql` means the same as it does on the API.

/// Exact decimal amounts, stored as NUMERIC (PostgreSQL) or TEXT (SQLite).
pub mod amount;
/// API keys: scoped, optionally IP-restricted and signing credentials of a user.
pub mod api_keys;
/// What an API key may do, and the set stored on the key row.
pub mod api_scope;
/// Assets (currencies and tokens).
pub mod assets;
/// Heads of the audit log's hash chains.
pub mod audit_chains;
/// The append-only, hash-chained audit log.
pub mod audit_events;
/// Transaction-monitoring alerts queued for compliance officers.
pub mod compliance_alerts;
/// Automated compliance checks of content versions.
pub mod content_checks;
/// Immutable versions of advisor content.
pub mod content_versions;
/// Advisor content under compliance review.
pub mod contents;
/// Fills: each side of each trade.
pub mod fills;
/// Journal entries of the double-entry ledger.
pub mod journal_entries;
/// KYC applications (personal data encrypted).
pub mod kyc_applications;
/// The decision history of KYC applications.
pub mod kyc_decisions;
/// Documents uploaded with KYC applications.
pub mod kyc_documents;
/// KYC provider webhook events already processed.
pub mod kyc_webhook_events;
/// Ledger accounts: balances per owner, asset and kind.
pub mod ledger_accounts;
/// Markets (trading pairs).
pub mod markets;
/// Deposits and withdrawals as transaction monitoring saw them.
pub mod monitored_transfers;
/// Notifications shown to users (price alerts that fired, ...).
pub mod notifications;
/// Order events, numbered per user for resumable subscriptions.
pub mod order_events;
/// Orders.
pub mod orders;
/// How far each user's P&L state has followed their order events.
pub mod portfolio_cursors;
/// External flows (deposits, withdrawals) of a user, for returns.
pub mod portfolio_flows;
/// A user's holdings per asset at the end of each hour they changed.
pub mod portfolio_holdings_history;
/// Open lots per user, asset and lot method.
pub mod portfolio_lots;
/// Running positions and realized P&L per user, asset and cost-basis method.
pub mod portfolio_positions;
/// Realized lot pieces, for tax reports.
pub mod portfolio_realized;
/// Postings: the legs of journal entries.
pub mod postings;
/// Price alerts: thresholds per market that notify their owner when crossed.
pub mod price_alerts;
/// Hourly price candles per market, built from trades.
pub mod price_candles;
/// Refresh tokens: one row per token ever issued, so a replayed one can be recognised.
pub mod refresh_tokens;
/// Roles a user can hold, and the set stored on the user row.
pub mod role;
/// Sessions: one per login on a device; revoking one ends its tokens at once.
pub mod sessions;
/// Traded volume per user, market and day (for fee tiers).
pub mod user_daily_volumes;
/// The last order event number per user.
pub mod user_sequences;
/// User accounts.
pub mod users;

/// E-mails waiting to be sent, written in the transaction of their cause.
pub mod email_outbox;
/// Passkeys (WebAuthn credentials).
pub mod passkeys;
/// Password-reset tokens (hashed, single use).
pub mod password_reset_tokens;
/// TOTP recovery codes (hashed, single use).
pub mod recovery_codes;
/// TOTP authenticators.
pub mod totp_credentials;
/// Per-user security state: the withdrawal lock after a security change.
pub mod user_security;
/// WebAuthn ceremonies in progress.
pub mod webauthn_challenges;
/// Withdrawal address book.
pub mod withdrawal_addresses;
/// Withdrawals.
pub mod withdrawals;

pub use amount::Amount;
pub use api_scope::{ApiScope, ScopeSet};
pub use role::{Role, RoleSet};
