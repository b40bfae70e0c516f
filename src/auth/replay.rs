//! Signed requests are accepted once: each signature is remembered for as long as its
//! timestamp could still be accepted, and a second request carrying it is refused.
//!
//! With Redis the memory is shared by every replica (`SET NX` with an expiry), so a
//! request captured on its way to one replica cannot be replayed against another. Each
//! process also remembers what it saw itself, so while Redis is failing (see
//! [`crate::redis_fallback`]) replays to the same replica are still refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::redis_fallback::{self, RedisOrLocal};

const SWEEP_AT: usize = 100_000;

pub struct ReplayGuard {
    seen: Mutex<HashMap<String, Instant>>,
    shared: Arc<RedisOrLocal>,
}

impl ReplayGuard {
    pub fn new(shared: Arc<RedisOrLocal>) -> Self {
        ReplayGuard {
            seen: Mutex::new(HashMap::new()),
            shared,
        }
    }

    /// True the first time `id` is offered within `ttl`, false for a replay.
    pub async fn first_use(&self, id: &str, ttl: Duration) -> bool {
        if !self.remember_locally(id, ttl, Instant::now()) {
            return false;
        }
        let Some(mut conn) = self.shared.connection() else {
            return true;
        };
        let key = self.shared.key(&format!("sig:{id}"));
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = redis::cmd("SET");
        command.arg(key).arg(1).arg("NX").arg("PX").arg(millis);
        let set = command.query_async::<Option<String>>(&mut conn);
        match redis_fallback::run(&self.shared, "replay cache", set).await {
            Some(reply) => reply.is_some(),
            // Redis failed: this process's memory has already recorded it.
            None => true,
        }
    }

    fn remember_locally(&self, id: &str, ttl: Duration, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= SWEEP_AT {
            seen.retain(|_, until| *until > now);
        }
        match seen.get(id) {
            Some(until) if *until > now => false,
            _ => {
                seen.insert(id.to_owned(), now + ttl);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signature_is_accepted_once_per_window() {
        let guard = ReplayGuard::new(Arc::new(RedisOrLocal::new(None, "t:")));
        let ttl = Duration::from_secs(10);
        assert!(guard.first_use("abc", ttl).await);
        assert!(!guard.first_use("abc", ttl).await);
        assert!(guard.first_use("abd", ttl).await);
        let later = Instant::now() + Duration::from_secs(11);
        assert!(
            guard.remember_locally("abc", ttl, later),
            "expired entries are forgotten"
        );
    }
}
