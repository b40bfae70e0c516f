//! Use cases, one module per area: transactions, ownership checks, and the rules that
//! need the database. Resolvers call these and nothing below them.

pub mod accounts;
pub mod alerts;
pub mod api_keys;
pub mod audit;
pub mod auth;
mod bulk;
pub mod compliance;
pub mod content;
pub mod email;
pub mod funds;
pub mod gathered_reads;
pub mod kyc;
pub mod ledger;
pub mod live;
pub mod market_data;
pub mod markets;
pub mod monitoring;
pub mod order_batches;
mod order_writes;
pub mod orders;
pub mod passkeys;
pub mod password_reset;
pub mod portfolio;
pub mod privacy;
pub mod rate_limits;
pub mod security;
pub mod sessions;
pub mod two_factor;
pub mod withdrawals;

/// Who is calling, as far as the network tells: recorded on sessions and used to
/// throttle logins.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}
