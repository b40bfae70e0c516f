//! Pure rules with no I/O: what counts as a valid e-mail, an acceptable password, a
//! sensible display name. Unit-tested here, used by the services.

pub mod account_rules;
pub mod ledger;
