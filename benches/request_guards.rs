//! What tradegraph's per-request guards cost: a rate-limit check (in process, and in
//! Redis with one Lua script per request), the replay cache of signed requests, and
//! checking a signed API-key request (deriving the key's secret, hashing it and
//! verifying the HMAC).
//!
//! `cargo bench --bench request_guards`; set `BENCH_REDIS_URL` (e.g.
//! `redis://127.0.0.1:6379`) to include the Redis parts. Prints one line per part.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tradegraph::auth::api_keys;
use tradegraph::auth::replay::ReplayGuard;
use tradegraph::ratelimit::{Bucket, RateLimiter};
use tradegraph::redis_fallback::RedisOrLocal;
use tradegraph::redis_link::RedisLink;

fn report(name: &str, n: u32, elapsed: Duration) {
    let per = elapsed / n;
    let rate = f64::from(n) / elapsed.as_secs_f64();
    println!("{name:<48} {per:>10.2?} per op  {rate:>12.0} ops/s  ({n} ops)");
}

async fn limiter_part(name: &str, limiter: &RateLimiter, n: u32, buckets_per_request: usize) {
    let buckets: Vec<Bucket> = (0..buckets_per_request)
        .map(|i| Bucket::new(format!("bench:{i}"), 1_000_000_000))
        .collect();
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(limiter.check(&buckets).await);
    }
    report(name, n, started.elapsed());
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let local = RateLimiter::new(Arc::new(RedisOrLocal::new(None, "bench:")));
        limiter_part("rate limit, in process, 1 bucket", &local, 200_000, 1).await;
        limiter_part(
            "rate limit, in process, 2 buckets (key + user)",
            &local,
            200_000,
            2,
        )
        .await;

        let server_key = b"bench-server-key-bench-server-key";
        let id = uuid::Uuid::now_v7();
        let secret = api_keys::derived_secret(server_key, id, "tgk_benchbenchben", "salt");
        let stored = secret.hash();
        let body = br#"{"query":"{ me { id } }"}"#;
        let payload = api_keys::signing_payload("1700000000000", "POST", "/graphql", body);
        let signature = api_keys::sign(secret.expose(), &payload);
        let n = 100_000;
        let started = Instant::now();
        for _ in 0..n {
            let derived = api_keys::derived_secret(server_key, id, "tgk_benchbenchben", "salt");
            assert!(api_keys::constant_time_eq(&derived.hash(), &stored));
            assert!(api_keys::verify_signature(
                derived.expose(),
                &payload,
                &signature
            ));
        }
        report(
            "signed request: derive + hash + verify HMAC",
            n,
            started.elapsed(),
        );

        let memory = ReplayGuard::new(Arc::new(RedisOrLocal::new(None, "bench:")));
        let started = Instant::now();
        for i in 0..n {
            memory
                .first_use(&format!("sig{i}"), Duration::from_secs(11))
                .await;
        }
        report("replay cache, in process", n, started.elapsed());

        let Ok(url) = std::env::var("BENCH_REDIS_URL") else {
            println!("(set BENCH_REDIS_URL for the Redis parts)");
            return;
        };
        let link = RedisLink::new(&url).expect("redis url");
        let prefix = format!("bench:{}:", uuid::Uuid::new_v4().simple());
        let shared = Arc::new(RedisOrLocal::new(Some(link), prefix));
        let redis = RateLimiter::new(shared.clone());
        limiter_part("rate limit, Redis script, 1 bucket", &redis, 20_000, 1).await;
        limiter_part("rate limit, Redis script, 2 buckets", &redis, 20_000, 2).await;
        let guard = ReplayGuard::new(shared);
        let n = 20_000;
        let started = Instant::now();
        for i in 0..n {
            guard
                .first_use(&format!("sig{i}"), Duration::from_secs(11))
                .await;
        }
        report("replay cache, Redis SET NX PX", n, started.elapsed());
    });
}
