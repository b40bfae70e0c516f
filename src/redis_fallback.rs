//! Redis when it answers, this process's memory when it does not.
//!
//! Rate limits and the signed-request replay cache are shared across replicas through
//! Redis. When Redis is down they must not fail requests (nor make each one wait for a
//! timeout), so after a failure Redis is skipped for a short back-off and callers use
//! their in-process state; the first request after the back-off tries Redis again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use crate::redis_link::RedisLink;

/// How long one Redis command may take before the caller falls back.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(300);
/// How long Redis is skipped after a failure.
const BACK_OFF: Duration = Duration::from_secs(5);

pub struct RedisOrLocal {
    link: Option<RedisLink>,
    prefix: String,
    down_until: Mutex<Option<Instant>>,
}

impl RedisOrLocal {
    pub fn new(link: Option<RedisLink>, prefix: impl Into<String>) -> Self {
        RedisOrLocal {
            link,
            prefix: prefix.into(),
            down_until: Mutex::new(None),
        }
    }

    /// A connection when Redis is configured and not backing off.
    pub fn connection(&self) -> Option<ConnectionManager> {
        let link = self.link.as_ref()?;
        let down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        match *down {
            Some(until) if Instant::now() < until => None,
            _ => Some(link.connection()),
        }
    }

    /// The key for `name` in this deployment's namespace.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Records a failure: Redis is skipped for the back-off. Logged once per back-off.
    pub fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        let mut down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if down.is_none_or(|until| now >= until) {
            tracing::warn!(%error, what, "Redis unavailable; using per-process state");
        }
        *down = Some(now + BACK_OFF);
    }
}

/// Runs one Redis command with [`COMMAND_TIMEOUT`].
pub async fn run<T: redis::FromRedisValue>(
    shared: &RedisOrLocal,
    what: &str,
    command: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Option<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            shared.failed(what, &error);
            None
        }
        Err(_) => {
            shared.failed(what, &"timed out");
            None
        }
    }
}
