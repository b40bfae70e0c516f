//! Shared state handed to every request handler and resolver.

use std::sync::Arc;

use crate::auth::jwt::JwtKeys;
use crate::config::Config;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::redis_link::RedisLink;
use crate::throttle::FailureThrottle;

/// Everything a request may need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub jwt: Arc<JwtKeys>,
    pub metrics: Metrics,
    pub redis: Option<RedisLink>,
    /// Delivers committed events to subscribers, across replicas with Redis.
    pub events: crate::events::EventBus,
    /// Live market tickers shared by all subscribers of this process.
    pub tickers: Arc<crate::service::live::TickerBoard>,
    pub login_throttle: Arc<LoginThrottles>,
    pub rate_limiter: Arc<crate::ratelimit::RateLimiter>,
    /// Flips to `true` when shutdown begins, so long-lived connections can close cleanly.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Failed-login throttles, per account and per client IP.
pub struct LoginThrottles {
    pub per_account: FailureThrottle,
    pub per_ip: FailureThrottle,
}
