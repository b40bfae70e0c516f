//! Use cases, one module per area: transactions, ownership checks, and the rules that
//! need the database. Resolvers call these and nothing below them.

pub mod accounts;
pub mod auth;
pub mod funds;
pub mod ledger;
pub mod market_data;
pub mod markets;
pub mod orders;
pub mod portfolio;
pub mod sessions;

/// Who is calling, as far as the network tells: recorded on sessions and used to
/// throttle logins.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}
