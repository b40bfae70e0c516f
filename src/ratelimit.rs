//! Request rate limiting with GCRA (the generic cell rate algorithm), in process.
//!
//! Each key (a user, or a client IP for anonymous requests) may make `limit` requests per
//! minute, as a burst or spread out. GCRA keeps one instant per key (the "theoretical
//! arrival time"), so memory is a few bytes per active client and idle keys are swept.
//! Limits are per process; sharing them across replicas comes with Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SWEEP_AT: usize = 100_000;

/// The state to report in `RateLimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the full burst is available again.
    pub reset_secs: u64,
    /// When refused: seconds until the next request is allowed.
    pub retry_after_secs: Option<u64>,
}

#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    interval: Duration,
    tolerance: Duration,
    arrivals: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    /// `per_minute` requests per minute per key; zero disables limiting.
    pub fn per_minute(per_minute: u32) -> Self {
        let limit = per_minute.max(1);
        let interval = Duration::from_secs(60) / limit;
        RateLimiter {
            limit: per_minute,
            interval,
            tolerance: interval * limit,
            arrivals: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    pub fn check(&self, key: &str) -> Decision {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Decision {
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        if arrivals.len() >= SWEEP_AT {
            arrivals.retain(|_, tat| *tat > now);
        }
        let tat = arrivals
            .get(key)
            .copied()
            .filter(|t| *t > now)
            .unwrap_or(now);
        let new_tat = tat + self.interval;
        let ahead = new_tat - now;
        if ahead > self.tolerance {
            let retry = ahead - self.tolerance;
            return Decision {
                limit: self.limit,
                remaining: 0,
                reset_secs: ceil_secs(tat - now),
                retry_after_secs: Some(ceil_secs(retry).max(1)),
            };
        }
        arrivals.insert(key.to_owned(), new_tat);
        let left = (self.tolerance - ahead).as_nanos() / self.interval.as_nanos().max(1);
        Decision {
            limit: self.limit,
            remaining: left.min(u32::MAX as u128) as u32,
            reset_secs: ceil_secs(ahead),
            retry_after_secs: None,
        }
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses_until_the_interval_passes() {
        let limiter = RateLimiter::per_minute(60);
        let t0 = Instant::now();
        for i in 0..60 {
            let d = limiter.check_at("k", t0);
            assert_eq!(d.retry_after_secs, None, "request {i}");
            assert_eq!(d.remaining, 59 - i);
        }
        let refused = limiter.check_at("k", t0);
        assert_eq!(refused.retry_after_secs, Some(1));
        assert_eq!(refused.remaining, 0);
        assert!(limiter.check_at("other", t0).retry_after_secs.is_none());
        assert!(limiter
            .check_at("k", t0 + Duration::from_secs(1))
            .retry_after_secs
            .is_none());
        assert!(limiter
            .check_at("k", t0 + Duration::from_secs(1))
            .retry_after_secs
            .is_some());
    }

    #[test]
    fn idle_keys_are_swept() {
        let limiter = RateLimiter::per_minute(600);
        let t0 = Instant::now();
        for i in 0..SWEEP_AT {
            limiter.check_at(&format!("k{i}"), t0);
        }
        limiter.check_at("late", t0 + Duration::from_secs(120));
        assert_eq!(limiter.arrivals.lock().map(|a| a.len()).unwrap_or(0), 1);
    }
}
