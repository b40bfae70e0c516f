//! Request rate limiting with GCRA (the generic cell rate algorithm).
//!
//! A bucket (a user, an API key, a client IP, a user's order placements...) may make
//! `per_minute` requests per minute, as a burst or spread out. GCRA keeps one instant
//! per bucket (the "theoretical arrival time"), so state is a few bytes per active
//! client. One request may be checked against several buckets at once (an API key and
//! its user): it passes only if every bucket has room, and only then is each charged.
//!
//! With Redis the buckets are shared by every replica: one Lua script checks and charges
//! all of a request's buckets atomically, on Redis's clock (so replicas' clocks do not
//! matter). Without Redis, or while it is failing, the same arithmetic runs in process
//! ([`crate::redis_fallback`]): limits become per replica instead of requests failing.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::auth::Viewer;
use crate::config::RateLimits;
use crate::redis_fallback::{self, RedisOrLocal};

const SWEEP_AT: usize = 100_000;

/// A user's request tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Basic,
    Standard,
    Pro,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Basic => "BASIC",
            Tier::Standard => "STANDARD",
            Tier::Pro => "PRO",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "BASIC" => Ok(Tier::Basic),
            "STANDARD" => Ok(Tier::Standard),
            "PRO" => Ok(Tier::Pro),
            other => Err(format!("`{other}` is not BASIC, STANDARD or PRO")),
        }
    }
}

/// One bucket a request is charged to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub key: String,
    pub per_minute: u32,
}

impl Bucket {
    pub fn new(key: impl Into<String>, per_minute: u32) -> Self {
        Bucket {
            key: key.into(),
            per_minute,
        }
    }
}

/// The tier a user's requests are limited by.
pub fn tier_of(config: &RateLimits, user: &entity::users::Model) -> Tier {
    user.rate_limit_tier
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(config.default_tier)
}

/// The buckets one GraphQL request (or subscription) is charged to: the user's, by tier,
/// and also the API key's when it came with one; the client IP's when anonymous.
pub fn request_buckets(config: &RateLimits, viewer: Option<&Viewer>, ip: &str) -> Vec<Bucket> {
    if !config.enabled {
        return Vec::new();
    }
    let Some(viewer) = viewer else {
        return vec![Bucket::new(format!("ip:{ip}"), config.anonymous)];
    };
    let limit = config.for_tier(tier_of(config, &viewer.user));
    let mut buckets = vec![Bucket::new(format!("user:{}", viewer.user_id()), limit)];
    if let Some(access) = &viewer.api_key {
        buckets.push(Bucket::new(format!("key:{}", access.key.id), limit));
    }
    buckets
}

/// The state to report in `RateLimit-*` headers: the tightest bucket's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the full burst is available again.
    pub reset_secs: u64,
    /// When refused: seconds until the next request is allowed.
    pub retry_after_secs: Option<u64>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.retry_after_secs.is_none()
    }
}

/// GCRA parameters of one bucket, in microseconds.
#[derive(Clone, Copy, Debug)]
struct Params {
    limit: u32,
    interval_us: f64,
    tolerance_us: f64,
}

impl Params {
    fn of(per_minute: u32) -> Self {
        let limit = per_minute.max(1);
        let interval_us = 60_000_000.0 / f64::from(limit);
        Params {
            limit: per_minute,
            interval_us,
            tolerance_us: interval_us * f64::from(limit),
        }
    }
}

/// Checks and charges requests against buckets, in Redis when it answers.
pub struct RateLimiter {
    local: Mutex<HashMap<String, Instant>>,
    shared: Arc<RedisOrLocal>,
}

impl RateLimiter {
    pub fn new(shared: Arc<RedisOrLocal>) -> Self {
        RateLimiter {
            local: Mutex::new(HashMap::new()),
            shared,
        }
    }

    /// Charges one request to every bucket, or to none if any is full. Buckets with a
    /// zero limit are unlimited and skipped; `None` when none is left.
    pub async fn check(&self, buckets: &[Bucket]) -> Option<Decision> {
        let buckets: Vec<&Bucket> = buckets.iter().filter(|b| b.per_minute > 0).collect();
        if buckets.is_empty() {
            return None;
        }
        if let Some(decision) = self.check_redis(&buckets).await {
            return Some(decision);
        }
        Some(self.check_local(&buckets, Instant::now()))
    }

    async fn check_redis(&self, buckets: &[&Bucket]) -> Option<Decision> {
        let mut conn = self.shared.connection()?;
        // EVAL sends the script each time (about 1 KB): simpler than EVALSHA's cache
        // dance, and cheap next to the round trip itself.
        let mut command = redis::cmd("EVAL");
        command.arg(GCRA_SCRIPT).arg(buckets.len());
        for bucket in buckets {
            command.arg(self.shared.key(&format!("rl:{}", bucket.key)));
        }
        for bucket in buckets {
            let params = Params::of(bucket.per_minute);
            command.arg(params.interval_us).arg(params.tolerance_us);
        }
        let reply: Vec<i64> =
            redis_fallback::run(&self.shared, "rate limit", command.query_async(&mut conn)).await?;
        let [allowed, index, remaining, reset_us, retry_us] = reply[..] else {
            self.shared.failed("rate limit", &"unexpected script reply");
            return None;
        };
        let limit = usize::try_from(index - 1)
            .ok()
            .and_then(|i| buckets.get(i))
            .map(|b| b.per_minute)
            .unwrap_or(0);
        Some(Decision {
            limit,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            reset_secs: ceil_secs_us(reset_us),
            retry_after_secs: (allowed == 0).then(|| ceil_secs_us(retry_us).max(1)),
        })
    }

    fn check_local(&self, buckets: &[&Bucket], now: Instant) -> Decision {
        let mut arrivals = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if arrivals.len() >= SWEEP_AT {
            arrivals.retain(|_, tat| *tat > now);
        }
        let mut planned = Vec::with_capacity(buckets.len());
        let mut retry: Option<Duration> = None;
        let mut tightest: Option<(u32, u32, Duration)> = None;
        for bucket in buckets {
            let params = Params::of(bucket.per_minute);
            let interval = Duration::from_secs_f64(params.interval_us / 1e6);
            let tolerance = Duration::from_secs_f64(params.tolerance_us / 1e6);
            let tat = arrivals
                .get(&bucket.key)
                .copied()
                .filter(|t| *t > now)
                .unwrap_or(now);
            let new_tat = tat + interval;
            let ahead = new_tat - now;
            if ahead > tolerance {
                let wait = ahead - tolerance;
                retry = Some(retry.map_or(wait, |r| r.max(wait)));
                tightest = Some((params.limit, 0, tat - now));
                continue;
            }
            let left = ((tolerance - ahead).as_secs_f64() / interval.as_secs_f64().max(1e-12))
                .floor()
                .min(f64::from(u32::MAX)) as u32;
            if tightest.is_none_or(|(_, r, _)| left < r) && retry.is_none() {
                tightest = Some((params.limit, left, ahead));
            }
            planned.push((bucket.key.clone(), new_tat));
        }
        let (limit, remaining, reset) = tightest.unwrap_or((0, 0, Duration::ZERO));
        if let Some(wait) = retry {
            return Decision {
                limit,
                remaining: 0,
                reset_secs: ceil_secs(reset),
                retry_after_secs: Some(ceil_secs(wait).max(1)),
            };
        }
        arrivals.extend(planned);
        Decision {
            limit,
            remaining,
            reset_secs: ceil_secs(reset),
            retry_after_secs: None,
        }
    }
}

/// GCRA over every key of one request, atomically. ARGV holds each key's interval and
/// tolerance in microseconds. Replies `{allowed, tightest key (1-based), remaining,
/// reset µs, retry µs}`. Redis's own clock is used, so replicas need not agree.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local retry = 0
local tightest, remaining, reset = 1, -1, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  local ahead = new_tat - now
  if ahead > tolerance then
    if ahead - tolerance > retry then
      retry = ahead - tolerance
      tightest, remaining, reset = i, 0, tat - now
    end
  elseif retry == 0 then
    local left = math.floor((tolerance - ahead) / interval)
    if remaining < 0 or left < remaining then
      tightest, remaining, reset = i, left, ahead
    end
  end
  tats[i] = new_tat
end
if retry > 0 then
  return {0, tightest, 0, math.floor(reset), math.ceil(retry)}
end
for i = 1, #KEYS do
  local ttl = math.ceil((tats[i] - now) / 1000) + 1000
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl)
end
return {1, tightest, remaining, math.ceil(reset), 0}
";

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn ceil_secs_us(micros: i64) -> u64 {
    let micros = u64::try_from(micros.max(0)).unwrap_or(0);
    micros.div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter {
        RateLimiter::new(Arc::new(RedisOrLocal::new(None, "t:")))
    }

    fn check(limiter: &RateLimiter, buckets: &[Bucket], at: Instant) -> Decision {
        let refs: Vec<&Bucket> = buckets.iter().collect();
        limiter.check_local(&refs, at)
    }

    #[test]
    fn allows_the_burst_then_refuses_until_the_interval_passes() {
        let limiter = limiter();
        let k = [Bucket::new("k", 60)];
        let t0 = Instant::now();
        for i in 0..60 {
            let d = check(&limiter, &k, t0);
            assert_eq!(d.retry_after_secs, None, "request {i}");
            assert_eq!(d.remaining, 59 - i);
            assert_eq!(d.limit, 60);
        }
        let refused = check(&limiter, &k, t0);
        assert_eq!(refused.retry_after_secs, Some(1));
        assert_eq!(refused.remaining, 0);
        assert!(check(&limiter, &[Bucket::new("other", 60)], t0).allowed());
        let t1 = t0 + Duration::from_secs(1);
        assert!(check(&limiter, &k, t1).allowed());
        assert!(!check(&limiter, &k, t1).allowed());
    }

    #[test]
    fn a_request_passes_only_when_every_bucket_has_room_and_charges_all_or_none() {
        let limiter = limiter();
        let t0 = Instant::now();
        let key_and_user = [Bucket::new("key", 3), Bucket::new("user", 5)];
        for _ in 0..3 {
            assert!(check(&limiter, &key_and_user, t0).allowed());
        }
        let refused = check(&limiter, &key_and_user, t0);
        assert_eq!(refused.limit, 3, "the full bucket is reported");
        assert!(!refused.allowed());
        // The refusal charged nothing: the user's bucket still has exactly two left.
        let user = [Bucket::new("user", 5)];
        let d = check(&limiter, &user, t0);
        assert_eq!((d.allowed(), d.remaining), (true, 1));
        assert_eq!(check(&limiter, &user, t0).remaining, 0);
        assert!(!check(&limiter, &user, t0).allowed());
    }

    #[test]
    fn headers_report_the_tightest_bucket() {
        let limiter = limiter();
        let t0 = Instant::now();
        let d = check(
            &limiter,
            &[Bucket::new("wide", 100), Bucket::new("narrow", 4)],
            t0,
        );
        assert_eq!((d.limit, d.remaining), (4, 3));
    }

    #[tokio::test]
    async fn zero_limits_are_unlimited() {
        let limiter = limiter();
        assert_eq!(limiter.check(&[Bucket::new("k", 0)]).await, None);
        let d = limiter
            .check(&[Bucket::new("k", 0), Bucket::new("j", 2)])
            .await
            .expect("one bucket left");
        assert_eq!(d.limit, 2);
    }

    #[test]
    fn idle_keys_are_swept() {
        let limiter = limiter();
        let t0 = Instant::now();
        for i in 0..SWEEP_AT {
            check(&limiter, &[Bucket::new(format!("k{i}"), 600)], t0);
        }
        check(
            &limiter,
            &[Bucket::new("late", 600)],
            t0 + Duration::from_secs(120),
        );
        assert_eq!(limiter.local.lock().map(|a| a.len()).unwrap_or(0), 1);
    }

    #[test]
    fn tiers_parse() {
        assert_eq!("pro".parse::<Tier>(), Ok(Tier::Pro));
        assert!("gold".parse::<Tier>().is_err());
    }
}
