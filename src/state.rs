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
    /// Per-market placement tasks that commit waiting orders together.
    pub order_batches: Arc<crate::service::order_batches::OrderBatches>,
    /// Markets' rules (increments, minimum, precisions), which never change.
    pub market_rules: Arc<crate::service::markets::RulesCache>,
    pub login_throttle: Arc<LoginThrottles>,
    /// Sessions (with their users) that concurrent requests authenticate against, read
    /// together (`service::gathered_reads`).
    pub session_reads: Arc<crate::service::auth::SessionReads>,
    pub rate_limiter: Arc<crate::ratelimit::RateLimiter>,
    /// Signatures of signed API-key requests already seen, across replicas with Redis.
    pub replay_guard: Arc<crate::auth::replay::ReplayGuard>,
    /// Debounces writes of API keys' `lastUsedAt`.
    pub api_key_usage: Arc<crate::service::api_keys::UsageTracker>,
    /// Throttles wrong second-factor codes (TOTP and recovery codes) per account.
    pub second_factor_throttle: Arc<FailureThrottle>,
    /// The WebAuthn relying party, for passkeys.
    pub webauthn: Arc<webauthn_rs::Webauthn>,
    /// The content compliance rules in force (reloadable).
    pub compliance_rules: Arc<crate::service::compliance::ComplianceRules>,
    /// Flips to `true` when shutdown begins, so long-lived connections can close cleanly.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Open WebSocket connections, so shutdown can wait for their close frames to go out.
    pub live_sockets: Arc<LiveSockets>,
}

/// Counts connections that outlive the HTTP server's own bookkeeping (upgraded
/// WebSockets), so the process does not exit before they have said goodbye.
#[derive(Debug, Default)]
pub struct LiveSockets {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Held by one open connection; leaving decrements the count.
pub struct LiveSocket(Arc<LiveSockets>);

impl LiveSockets {
    pub fn enter(self: &Arc<Self>) -> LiveSocket {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        LiveSocket(self.clone())
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for LiveSocket {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

/// Failed-login throttles, per account and per client IP.
pub struct LoginThrottles {
    pub per_account: FailureThrottle,
    pub per_ip: FailureThrottle,
}
