//! In-process throttling of failed logins, keyed by account and by client IP.
//!
//! A key may fail `burst` times, then once per `refill` interval (a token bucket that
//! only failures drain). Successful logins cost nothing, so a user who mistypes once is
//! never slowed down, while guessing at one account or from one address is.
//! State lives in this process; with several replicas an attacker gets at most
//! `burst` per replica.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept before idle ones are swept, bounding memory under a flood of keys.
const SWEEP_AT: usize = 100_000;

#[derive(Debug)]
pub struct FailureThrottle {
    burst: u32,
    refill: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl FailureThrottle {
    pub fn new(burst: u32, refill: Duration) -> Self {
        FailureThrottle {
            burst: burst.max(1),
            refill: refill.max(Duration::from_millis(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)` when the key has no attempts left, with how long until it has.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    /// Records a failed attempt.
    pub fn fail(&self, key: &str) {
        self.fail_at(key, Instant::now())
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let gained = now.duration_since(bucket.updated).as_secs_f64() / self.refill.as_secs_f64();
        Bucket {
            tokens: (bucket.tokens + gained).min(self.burst as f64),
            updated: now,
        }
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let buckets = self.lock();
        let Some(bucket) = buckets.get(key).copied() else {
            return Ok(());
        };
        let bucket = self.refilled(bucket, now);
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) * self.refill.as_secs_f64();
            Err(wait.ceil().max(1.0) as u64)
        }
    }

    fn fail_at(&self, key: &str, now: Instant) {
        let mut buckets = self.lock();
        if buckets.len() >= SWEEP_AT {
            let burst = self.burst as f64;
            buckets.retain(|_, b| self.refilled(*b, now).tokens < burst);
        }
        let bucket = buckets.get(key).copied().unwrap_or(Bucket {
            tokens: self.burst as f64,
            updated: now,
        });
        let mut bucket = self.refilled(bucket, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        buckets.insert(key.to_owned(), bucket);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_of_failures_then_one_per_refill() {
        let throttle = FailureThrottle::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(throttle.check_at("a", t0).is_ok());
            throttle.fail_at("a", t0);
        }
        let wait = throttle.check_at("a", t0).expect_err("throttled");
        assert_eq!(wait, 60);
        assert!(throttle.check_at("b", t0).is_ok(), "keys are independent");
        assert_eq!(
            throttle.check_at("a", t0 + Duration::from_secs(30)),
            Err(30)
        );
        assert!(throttle.check_at("a", t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn sweeping_keeps_only_recent_failures() {
        let throttle = FailureThrottle::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..SWEEP_AT {
            throttle.fail_at(&format!("k{i}"), t0);
        }
        throttle.fail_at("late", t0 + Duration::from_secs(5));
        assert_eq!(throttle.lock().len(), 1);
    }
}
