//! SeaORM entities for tradegraph's tables, with the string-valued enums they store.
//!
//! Each module is one table. Enums are stored as their upper-case GraphQL names so that
//! a row read by hand in `psql` means the same as it does on the API.

/// Exact decimal amounts, stored as NUMERIC (PostgreSQL) or TEXT (SQLite).
pub mod amount;
/// Assets (currencies and tokens).
pub mod assets;
/// Fills: each side of each trade.
pub mod fills;
/// Journal entries of the double-entry ledger.
pub mod journal_entries;
/// Ledger accounts: balances per owner, asset and kind.
pub mod ledger_accounts;
/// Markets (trading pairs).
pub mod markets;
/// Order events, numbered per user for resumable subscriptions.
pub mod order_events;
/// Orders.
pub mod orders;
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

pub use amount::Amount;
pub use role::{Role, RoleSet};
