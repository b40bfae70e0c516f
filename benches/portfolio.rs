//! Portfolio benchmark: how long `portfolio` takes for a user with 20 assets as their
//! history grows from 1,000 to 10,000 to 100,000 fills, on SQLite and PostgreSQL.
//!
//! For each backend and history size, a fresh database gets 20 assets (each with a
//! market against USD) and one user whose fills are stored with their order events
//! and candles, as matching leaves them, and then folded into P&L state the way
//! committed trades are (`service::portfolio::follow`), so lots, running totals,
//! realized pieces and hourly holdings are exactly what real trading leaves behind.
//! Then, sequentially:
//!
//! - `service`: `service::portfolio::portfolio(USD, FIFO)` called directly;
//! - `http`: `POST /graphql` `{ portfolio { totalValue … positions { … } } }` with a
//!   Bearer token against the server in process (auth, session check, JSON included);
//! - `performance`: `portfolio { performance(interval: DAY) { … } }` over HTTP (30 days).
//!
//! p50 and p99 of 300 runs each after 30 warm-up runs. Run with
//! `cargo bench --bench portfolio`; `BENCH_PORTFOLIO_FILLS` (default `1000,10000,100000`)
//! and `BENCH_PORTFOLIO_BACKENDS` (default `sqlite,postgres`) narrow it. PostgreSQL is
//! `BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), in a
//! database created for the run and dropped after it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use chrono::Utc;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, EntityTrait};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tradegraph::domain::cost_basis::Method;
use tradegraph::service::portfolio;
use tradegraph::{App, Config};
use uuid::Uuid;

const ASSETS: usize = 20;
const WARMUP: usize = 30;
const RUNS: usize = 300;
const BATCH: usize = 250;
const PASSWORD: &str = "correct horse battery staple 7";
const QUERY: &str = "{ portfolio(quoteAsset: \"USD\", method: FIFO) { totalValue totalCost unrealizedPnl realizedPnl positions { asset { symbol } quantity price value allocation costBasis averageCost unrealizedPnl realizedPnl } } }";
const PERFORMANCE: &str = "{ portfolio { performance(interval: DAY) { points { at value } timeWeightedReturn moneyWeightedReturn netDeposits } } }";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

fn list(var: &str, default: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn run() -> anyhow::Result<()> {
    let sizes: Vec<usize> = list("BENCH_PORTFOLIO_FILLS", "1000,10000,100000")
        .iter()
        .map(|s| s.parse().context("BENCH_PORTFOLIO_FILLS"))
        .collect::<Result<_, _>>()?;
    let backends = list("BENCH_PORTFOLIO_BACKENDS", "sqlite,postgres");
    println!("| backend | fills | seeding | service p50 | service p99 | http p50 | http p99 | performance p50 | performance p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for backend in &backends {
        for &fills in &sizes {
            let row = measure(backend, fills).await?;
            println!("{row}");
        }
    }
    Ok(())
}

/// A database for one measurement, dropped afterwards.
struct BenchDb {
    url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

fn pg_admin() -> String {
    std::env::var("BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn create_db(backend: &str) -> anyhow::Result<BenchDb> {
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir()?;
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("bench.db").display()
            );
            Ok(BenchDb {
                url,
                pg_name: None,
                _dir: Some(dir),
            })
        }
        "postgres" => {
            let admin = pg_admin();
            let conn = sea_orm::Database::connect(admin.clone()).await?;
            let name = format!("tg_portfolio_bench_{}", Uuid::new_v4().simple());
            conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await?;
            let base = admin
                .rsplit_once('/')
                .map(|(b, _)| b.to_owned())
                .ok_or_else(|| anyhow!("BENCH_POSTGRES_URL must end with a database"))?;
            Ok(BenchDb {
                url: format!("{base}/{name}"),
                pg_name: Some(name),
                _dir: None,
            })
        }
        other => Err(anyhow!("unknown backend {other}")),
    }
}

async fn drop_db(db: BenchDb) {
    if let Some(name) = db.pg_name {
        if let Ok(conn) = sea_orm::Database::connect(pg_admin()).await {
            let _ = conn
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn measure(backend: &str, fills: usize) -> anyhow::Result<String> {
    let db = create_db(backend).await?;
    let vars: HashMap<String, String> = [
        ("BIND_ADDR", "127.0.0.1:0"),
        ("DATABASE_URL", db.url.as_str()),
        ("JWT_SECRET", "portfolio-bench-secret-0123456789abcdef"),
        ("RATE_LIMIT_PER_MINUTE", "0"),
        ("SEED_DEMO_DATA", "false"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "error"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let app = App::build(Config::from_vars(vars)?).await?;
    let state = app.state().clone();
    let address = format!("http://127.0.0.1:{}/graphql", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    let register = json!({"query": "mutation($i: RegisterInput!) { register(input: $i) { accessToken user { id } } }", "variables": {"i": {"email": format!("bench-{}@example.com", Uuid::new_v4().simple()), "password": PASSWORD, "displayName": "Bench"}}});
    let body: Value = http
        .post(&address)
        .json(&register)
        .send()
        .await?
        .json()
        .await?;
    let token = body["data"]["register"]["accessToken"]
        .as_str()
        .ok_or_else(|| anyhow!("register failed: {body}"))?
        .to_owned();
    let user_id: Uuid = body["data"]["register"]["user"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no user id: {body}"))?;

    let started = Instant::now();
    seed(&state, user_id, fills).await?;
    let seeding = started.elapsed();

    let mut service = Vec::with_capacity(RUNS);
    for i in 0..WARMUP + RUNS {
        let t = Instant::now();
        let view = portfolio::portfolio(&state, user_id, "USD", Method::Fifo).await?;
        if i >= WARMUP {
            service.push(t.elapsed());
        }
        if view.positions.len() != ASSETS + 1 {
            return Err(anyhow!(
                "expected {} positions, got {}",
                ASSETS + 1,
                view.positions.len()
            ));
        }
    }
    let timed = |query: &'static str| {
        let (http, address, token) = (http.clone(), address.clone(), token.clone());
        async move {
            let mut out = Vec::with_capacity(RUNS);
            for i in 0..WARMUP + RUNS {
                let t = Instant::now();
                let body: Value = http
                    .post(&address)
                    .bearer_auth(&token)
                    .json(&json!({"query": query}))
                    .send()
                    .await?
                    .json()
                    .await?;
                if i >= WARMUP {
                    out.push(t.elapsed());
                }
                if body["errors"].is_array() {
                    return Err(anyhow!("query failed: {body}"));
                }
            }
            out.sort();
            Ok::<_, anyhow::Error>(out)
        }
    };
    let over_http = timed(QUERY).await?;
    let performance = timed(PERFORMANCE).await?;
    service.sort();
    let _ = stop.send(());
    let _ = server.await;
    drop_db(db).await;
    Ok(format!(
        "| {backend} | {fills} | {:.1} s | {} | {} | {} | {} | {} | {} |",
        seeding.as_secs_f64(),
        ms(percentile(&service, 0.5)),
        ms(percentile(&service, 0.99)),
        ms(percentile(&over_http, 0.5)),
        ms(percentile(&over_http, 0.99)),
        ms(percentile(&performance, 0.5)),
        ms(percentile(&performance, 0.99)),
    ))
}

/// 20 assets with USD markets, a USD deposit, then `count` fills of the user spread
/// over the markets, at most an hour apart, each through the matching hook; finally
/// the ledger balances the fills imply.
async fn seed(state: &tradegraph::state::AppState, user: Uuid, count: usize) -> anyhow::Result<()> {
    let conn = state.db.conn();
    let now = Utc::now();
    let d = |s: &str| Decimal::from_str_exact(s).unwrap_or_default();
    let mut symbols = vec!["USD".to_owned()];
    symbols.extend((0..ASSETS).map(|i| format!("A{i:02}")));
    for symbol in &symbols {
        entity::assets::ActiveModel {
            symbol: Set(symbol.clone()),
            name: Set(symbol.clone()),
            precision: Set(if symbol == "USD" { 2 } else { 8 }),
            created_at: Set(now),
        }
        .insert(conn)
        .await?;
    }
    for symbol in &symbols[1..] {
        entity::markets::ActiveModel {
            symbol: Set(format!("{symbol}-USD")),
            base_asset: Set(symbol.clone()),
            quote_asset: Set("USD".to_owned()),
            tick_size: Set(entity::Amount(d("0.01"))),
            lot_size: Set(entity::Amount(d("0.001"))),
            min_notional: Set(entity::Amount(d("1"))),
            maker_fee_bps: Set(10),
            taker_fee_bps: Set(20),
            status: Set("TRADING".to_owned()),
            last_price: Set(Some(entity::Amount(d("100")))),
            next_sequence: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(conn)
        .await?;
    }
    let start = now - chrono::Duration::minutes(count as i64 + 60);
    let deposit = Decimal::from(1_000_000_000u64);
    state
        .db
        .write(|txn| {
            Box::pin(async move {
                portfolio::on_deposit(txn, user, "USD", deposit, start).await?;
                Ok(())
            })
        })
        .await
        .map_err(|e| anyhow!("deposit: {e}"))?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut held: Vec<Decimal> = vec![Decimal::ZERO; ASSETS];
    let mut prices: Vec<i64> = vec![10_000; ASSETS];
    let mut all = Vec::with_capacity(count);
    for i in 0..count {
        let asset = rng.gen_range(0..ASSETS);
        prices[asset] = (prices[asset] + rng.gen_range(-100..=100)).max(100);
        let price = Decimal::new(prices[asset], 2);
        let quantity = Decimal::new(rng.gen_range(1..=1000), 3);
        // Mostly buys until something is held, then a mix: lots are opened and closed.
        let sell = held[asset] >= quantity && rng.gen_bool(0.45);
        let (side, fee, fee_asset) = if sell {
            held[asset] -= quantity;
            (
                "SELL",
                price * quantity * Decimal::new(2, 3),
                "USD".to_owned(),
            )
        } else {
            let fee = quantity * Decimal::new(2, 3);
            held[asset] += quantity - fee;
            ("BUY", fee, symbols[asset + 1].clone())
        };
        all.push(entity::fills::Model {
            id: Uuid::now_v7(),
            order_id: Uuid::now_v7(),
            user_id: user,
            trade_id: Uuid::now_v7(),
            market: format!("{}-USD", symbols[asset + 1]),
            side: side.to_owned(),
            price: entity::Amount(price),
            quantity: entity::Amount(quantity),
            fee: entity::Amount(fee),
            fee_asset,
            liquidity: "TAKER".to_owned(),
            created_at: start + chrono::Duration::minutes(i as i64),
            cost_rate: Some(entity::Amount(Decimal::ONE)),
        });
    }
    for (n, chunk) in all.chunks(BATCH).enumerate() {
        let chunk = chunk.to_vec();
        state
            .db
            .write(|txn| {
                let chunk = chunk.clone();
                Box::pin(async move {
                    let rows: Vec<entity::fills::ActiveModel> = chunk
                        .iter()
                        .map(|f| entity::fills::ActiveModel::from(f.clone()).reset_all())
                        .collect();
                    entity::fills::Entity::insert_many(rows)
                        .exec_without_returning(txn)
                        .await?;
                    // Each fill's event in the user's log, as matching records it.
                    let events =
                        chunk
                            .iter()
                            .enumerate()
                            .map(|(i, f)| entity::order_events::ActiveModel {
                                user_id: Set(f.user_id),
                                sequence: Set((n * BATCH + i + 1) as i64),
                                kind: Set("FILLED".to_owned()),
                                order_id: Set(f.order_id),
                                fill_id: Set(Some(f.id)),
                                created_at: Set(f.created_at),
                            });
                    entity::order_events::Entity::insert_many(events)
                        .exec_without_returning(txn)
                        .await?;
                    for fill in &chunk {
                        portfolio::on_trade(txn, fill).await?;
                    }
                    Ok(())
                })
            })
            .await
            .map_err(|e| anyhow!("seeding fills: {e}"))?;
    }
    entity::user_sequences::ActiveModel {
        user_id: Set(user),
        last_sequence: Set(count as i64),
    }
    .insert(conn)
    .await?;
    // P&L state follows the events, as it does after real trades.
    portfolio::follow::catch_up(state, user)
        .await
        .map_err(|e| anyhow!("folding fills into P&L: {e}"))?;

    // The balances the fills left, as the ledger would hold them.
    let positions = entity::portfolio_positions::Entity::find()
        .all(conn)
        .await?
        .into_iter()
        .filter(|p| p.method == "FIFO" && p.user_id == user);
    for position in positions {
        entity::ledger_accounts::ActiveModel {
            id: Set(Uuid::now_v7()),
            owner_id: Set(user),
            asset: Set(position.asset.clone()),
            kind: Set("AVAILABLE".to_owned()),
            balance: Set(position.quantity),
            updated_at: Set(now),
        }
        .insert(conn)
        .await?;
    }
    Ok(())
}
