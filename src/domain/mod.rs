//! Pure rules with no I/O, unit-tested here and used by the services: account input,
//! double-entry bookkeeping, order validation and the matching planner.

pub mod account_rules;
pub mod cost_basis;
pub mod fees;
pub mod ledger;
pub mod matching;
pub mod order_rules;
pub mod pricing;
pub mod returns;
