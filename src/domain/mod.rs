//! Pure rules with no I/O, unit-tested here and used by the services: account input,
//! the audit log's hash chain, double-entry bookkeeping, order validation and the
//! matching planner, content compliance rules and the content state machine, KYC tiers
//! and limits, sanctions screening and transaction-monitoring rules.

pub mod account_rules;
pub mod alert_book;
pub mod audit;
pub mod compliance_rules;
pub mod content_workflow;
pub mod cost_basis;
pub mod demo_quotes;
pub mod fees;
pub mod ip_allowlist;
pub mod kyc;
pub mod ledger;
pub mod matching;
pub mod monitoring;
pub mod order_rules;
pub mod pricing;
pub mod returns;
pub mod screening;
pub mod totp;
pub mod withdrawal_rules;
