//! HTTP load benchmark, all in one run on one machine:
//!
//! 1. a bare axum server answering a constant: the floor any axum app pays;
//! 2. tradegraph's `POST /graphql` with `{ __typename }` on SQLite, served in process
//!    (2b: the same served by the release binary, with its JSON request logging on);
//! 3. the authenticated `me` query on PostgreSQL, served in process;
//! 4. `pgbench -S` on the same PostgreSQL: what the database alone does for a
//!    one-row read, the yardstick for (3);
//! 5. start-up time to the first successful `/healthz` on a fresh SQLite file, in
//!    process and as the release binary;
//! 6. `placeOrder` on PostgreSQL, served in process, 32 traders each on its own
//!    connection, LIMIT GTC orders of which about half trade: all on BTC-USD (6), or
//!    spread over the four demo markets (6b); against `pgbench -c 32` with its default
//!    TPC-B-like script on the same PostgreSQL (6c), the yardstick for a short
//!    read-write transaction.
//!
//! Run with `cargo bench --bench http_load`. Settings come from `BENCH_*` variables (see
//! [`Settings::from_env`]). The Markdown table goes to stdout, progress to stderr.
//!
//! The load generator is a minimal HTTP/1.1 client on raw sockets (closed loop: one
//! request in flight per keep-alive connection) rather than reqwest: it shares the
//! machine's cores with the server, so every cycle it spends is taken from the server,
//! and the cheaper it is the closer the numbers come to the server's own capacity, as
//! with wrk. It only understands `Content-Length` bodies, which is all these servers
//! send; anything else counts as an error, never as a success.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use sea_orm::{ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, Statement};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tradegraph::{App, Config};

const PASSWORD: &str = "correct horse battery staple 7";
const JWT_SECRET: &str = "http-load-bench-secret-0123456789abcdef";
const TYPENAME_QUERY: &str = r#"{"query":"{ __typename }"}"#;
const ME_QUERY: &str = r#"{"query":"{ me { id email } }"}"#;
/// Users signed in for the `me` run; connection `i` uses user `i % BENCH_USERS`, so
/// session rows are shared as they would be by a few busy dashboards, without paying
/// for 64 argon2 hashes before the run.
const BENCH_USERS: usize = 8;
/// How long a request may still take after the measured window before its connection
/// is abandoned: what keeps a hung server from hanging the benchmark.
const GRACE: Duration = Duration::from_secs(10);
/// How long start-up may take before that attempt counts as failed.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// Linux reports per-thread CPU time in these units (`USER_HZ`, 100 on every platform
/// Rust targets that has `/proc`).
const TICKS_PER_SECOND: f64 = 100.0;

const TARGET_GRAPHQL_VS_AXUM: f64 = 0.40;
const TARGET_ME_VS_PGBENCH: f64 = 0.50;
/// `placeOrder` against pgbench's TPC-B-like transaction (the issue's aim).
const TARGET_ORDERS_VS_PGBENCH: f64 = 0.50;
const TARGET_STARTUP: Duration = Duration::from_secs(1);
/// CPU used by unrelated work during a window above which its numbers get flagged.
const DISTURBED_CORES: f64 = 0.15;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("http_load: some measurements failed; see the table");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("http_load: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every part and prints the report; `Ok(false)` when a part failed (the others
/// still ran and are reported).
fn run() -> anyhow::Result<bool> {
    let settings = Settings::from_env()?;
    // The server gets a runtime of its own, built as `main.rs` builds it (one worker per
    // core), so that the generator's tasks never run on the server's workers; the OS then
    // shares the cores between the two as it would between two processes. The thread
    // names let the CPU accounting tell them apart.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("srv-worker")
        .enable_all()
        .build()
        .context("cannot build the server runtime")?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads)
        .thread_name("load-gen")
        .enable_all()
        .build()
        .context("cannot build the load generator runtime")?;
    let report = client_rt.block_on(run_all(&settings, server_rt.handle().clone()))?;
    print!("{}", report.markdown(&settings));
    Ok(report.rows.iter().all(|row| row.verdict != Verdict::Failed))
}

/// Configuration from `BENCH_*` variables.
struct Settings {
    warmup: Duration,
    measure: Duration,
    connections: usize,
    client_threads: usize,
    startup_runs: usize,
    postgres_admin_url: String,
    require_pg: bool,
    pgbench: Option<PathBuf>,
    /// Which parts to run (`BENCH_PARTS=1,2,2b,3,4,5,6,6b`, all by default): fewer when
    /// profiling one of them.
    parts: Vec<String>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let settings = Settings {
            measure: Duration::from_secs(env_or("BENCH_SECS", 10)?),
            warmup: Duration::from_secs(env_or("BENCH_WARMUP_SECS", 2)?),
            connections: env_or("BENCH_CONNECTIONS", 64)?,
            // Two, as wrk by default: with one, the generator itself caps bare axum
            // (about 10 % lower here), which would flatter every ratio against it;
            // tradegraph's numbers are the same with one or two (BENCHMARKS.md).
            client_threads: env_or("BENCH_CLIENT_THREADS", 2)?,
            startup_runs: env_or("BENCH_STARTUP_RUNS", 5)?,
            postgres_admin_url: std::env::var("BENCH_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
            require_pg: std::env::var("BENCH_REQUIRE_PG").is_ok_and(|v| v == "1" || v == "true"),
            pgbench: std::env::var_os("BENCH_PGBENCH").map(PathBuf::from),
            parts: std::env::var("BENCH_PARTS")
                .unwrap_or_else(|_| ALL_PARTS.join(","))
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        };
        if let Some(unknown) = settings
            .parts
            .iter()
            .find(|p| !ALL_PARTS.contains(&p.as_str()))
        {
            bail!("BENCH_PARTS: unknown part `{unknown}`; the parts are {ALL_PARTS:?}");
        }
        if settings.measure.is_zero() || settings.connections == 0 || settings.client_threads == 0 {
            bail!("BENCH_SECS, BENCH_CONNECTIONS and BENCH_CLIENT_THREADS must be at least 1");
        }
        if settings.startup_runs == 0 {
            bail!("BENCH_STARTUP_RUNS must be at least 1");
        }
        Ok(settings)
    }

    fn wants(&self, part: &str) -> bool {
        self.parts.iter().any(|p| p == part)
    }
}

const ALL_PARTS: [&str; 8] = ["1", "2", "2b", "3", "4", "5", "6", "6b"];

fn env_or<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(raw) => raw
            .trim()
            .parse()
            .map_err(|e| anyhow!("{name}=`{raw}` is not valid: {e}")),
        Err(_) => Ok(default),
    }
}

// ---------------------------------------------------------------------------------------
// The parts
// ---------------------------------------------------------------------------------------

async fn run_all(settings: &Settings, server: Handle) -> anyhow::Result<Report> {
    let mut report = Report {
        environment: environment().await,
        ..Report::default()
    };
    // Other work on the machine (a build, say) takes cores from the server and skews
    // every number; say so rather than report it as the server's speed.
    let before = CpuSample::take(None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy = CpuSample::take(None).since(&before).machine();
    report.environment.push((
        "machine busy just before the run",
        format!("{busy:.2} cores (near 0 for trustworthy numbers)"),
    ));
    if busy > 0.25 {
        eprintln!("warning: the machine is already {busy:.2} cores busy: results will be low");
    }

    let mut axum_rps = None;
    if settings.wants("1") {
        progress("1: bare axum");
        let label = "bare axum, `GET /` → constant";
        match bare_axum(settings, &server).await {
            Ok(load) => {
                axum_rps = Some(load.rps());
                report.load_row("1", label, &load, None);
            }
            Err(error) => report.failed("1", label, &error),
        }
    }
    let against_axum = |load: &LoadOutcome| {
        axum_rps.map(|base| Comparison {
            ratio: load.rps() / base,
            against: "(1)",
            target: TARGET_GRAPHQL_VS_AXUM,
        })
    };

    if settings.wants("2") {
        progress("2: tradegraph { __typename } on SQLite, in process");
        let label = "tradegraph `POST /graphql` `{ __typename }`, SQLite, in process";
        match graphql_typename_in_process(settings, &server).await {
            Ok(load) => report.load_row("2", label, &load, against_axum(&load)),
            Err(error) => report.failed("2", label, &error),
        }
    }

    if settings.wants("2b") {
        progress("2b: tradegraph { __typename } on SQLite, release binary with logging");
        let label = "same as (2), release binary, `LOG_FORMAT=json` to /dev/null";
        match release_binary() {
            Some(binary) => match graphql_typename_binary(settings, &binary).await {
                Ok(load) => report.load_row("2b", label, &load, against_axum(&load)),
                Err(error) => report.failed("2b", label, &error),
            },
            None => report.skipped("2b", label, "no release binary next to this benchmark"),
        }
    }

    if ["3", "4", "6", "6b"].iter().any(|p| settings.wants(p)) {
        postgres_parts(settings, &server, &mut report).await;
    }

    if settings.wants("5") {
        progress("5: start-up time");
        let label = "start-up to first `/healthz`, fresh SQLite, `App::build` in process";
        match startup_in_process(settings, &server).await {
            Ok(times) => report.startup_row("5a", label, &times),
            Err(error) => report.failed("5a", label, &error),
        }
        match release_binary() {
            Some(binary) => {
                let label = format!(
                    "start-up to first `/healthz`, fresh SQLite, spawned `{}`",
                    short_path(&binary)
                );
                match startup_binary(settings, &binary).await {
                    Ok(times) => report.startup_row("5b", &label, &times),
                    Err(error) => report.failed("5b", &label, &error),
                }
            }
            None => report.skipped(
                "5b",
                "start-up to first `/healthz`, spawned release binary",
                "no release binary found (target/release/tradegraph); build it with \
                 `cargo build --release`",
            ),
        }
    }
    Ok(report)
}

/// (1): axum with nothing but a constant handler, served on the server runtime.
async fn bare_axum(settings: &Settings, server: &Handle) -> anyhow::Result<LoadOutcome> {
    let listener = bind_on(server, "127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "Hello, World!" }));
    let task = server.spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    let load = run_load(&[Target::get(addr, "/", "Hello, World!")], settings, None).await;
    let _ = stop_tx.send(());
    tokio::time::timeout(GRACE, task)
        .await
        .context("the bare axum server did not stop")?
        .context("the bare axum server panicked")?
        .context("the bare axum server failed")?;
    load
}

/// Binds a listener from inside the server runtime, so its I/O is driven there.
async fn bind_on(server: &Handle, addr: &'static str) -> anyhow::Result<tokio::net::TcpListener> {
    server
        .spawn(tokio::net::TcpListener::bind(addr))
        .await
        .context("bind task panicked")?
        .with_context(|| format!("cannot listen on {addr}"))
}

/// (2): `{ __typename }` through the whole stack but the database.
async fn graphql_typename_in_process(
    settings: &Settings,
    server: &Handle,
) -> anyhow::Result<LoadOutcome> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let app = RunningApp::start(server, tradegraph_vars(&sqlite_url(dir.path()))).await?;
    let target = Target::post_json(
        app.addr,
        "/graphql",
        TYPENAME_QUERY,
        None,
        r#"{"data":{"__typename":"Query"}"#,
    );
    let load = run_load(&[target], settings, None).await;
    app.stop().await?;
    load
}

/// (2b): the same through the release binary, which logs every request as production
/// does; the difference from (2) is mostly the cost of that logging.
async fn graphql_typename_binary(
    settings: &Settings,
    binary: &Path,
) -> anyhow::Result<LoadOutcome> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let addr = free_local_addr()?;
    let mut child = spawn_binary(binary, addr, &sqlite_url(dir.path()))?;
    let result = async {
        wait_for_healthz(addr, Instant::now() + STARTUP_DEADLINE).await?;
        let target = Target::post_json(
            addr,
            "/graphql",
            TYPENAME_QUERY,
            None,
            r#"{"data":{"__typename":"Query"}"#,
        );
        run_load(&[target], settings, child.id()).await
    }
    .await;
    stop_child(&mut child).await;
    result
}

/// (3), (4), (6), (6b) and (6c), or rows saying why they could not run: skipped when
/// PostgreSQL or pgbench is missing, failed instead when `BENCH_REQUIRE_PG=1`.
async fn postgres_parts(settings: &Settings, server: &Handle, report: &mut Report) {
    let me_label = "tradegraph authenticated `{ me { id email } }`, PostgreSQL, in process";
    let pgbench_label = "`pgbench -S -c 8 -j 2` (scale 10), same PostgreSQL";
    let hot_label = "tradegraph `placeOrder` LIMIT GTC, all on BTC-USD, 32 traders, PostgreSQL, \
                     in process";
    let spread_label = "same as (6), spread over BTC-USD, ETH-USD, SOL-USD, ETH-BTC";
    let tpcb_label = "`pgbench -c 32 -j 2` TPC-B-like (scale 10), same PostgreSQL";
    let wants_orders = settings.wants("6") || settings.wants("6b");
    let unavailable = |report: &mut Report, id: &'static str, label: &str, error: anyhow::Error| {
        if settings.require_pg {
            report.failed(id, label, &error.context("BENCH_REQUIRE_PG=1"));
        } else {
            let reason = format!("{error:#}");
            eprintln!("!!! SKIPPING ({id}): {reason}");
            report.skipped(id, label, &reason);
        }
    };

    progress("3/4/6: PostgreSQL");
    let admin = match connect_admin(&settings.postgres_admin_url).await {
        Ok(admin) => admin,
        Err(error) => {
            let error = error.context("PostgreSQL unavailable");
            for (id, label) in [
                ("3", me_label),
                ("4", pgbench_label),
                ("6", hot_label),
                ("6b", spread_label),
            ] {
                if settings.wants(id) {
                    unavailable(report, id, label, anyhow!("{error:#}"));
                }
            }
            return;
        }
    };
    if let Ok(version) = server_version(&admin).await {
        report.environment.push(("PostgreSQL", version));
    }

    let mut me_rps = None;
    if settings.wants("3") {
        progress("3: me on PostgreSQL");
        match me_on_postgres(settings, server, &admin).await {
            Ok(load) => {
                me_rps = Some(load.rps());
                report.load_row("3", me_label, &load, None);
            }
            Err(error) => report.failed("3", me_label, &error),
        }
    }

    // Each order part gets a fresh database, so the second does not start with the
    // first one's book.
    let mut order_rates: Vec<(&'static str, f64)> = Vec::new();
    for (id, label, markets) in [
        ("6", hot_label, &ORDER_MARKETS[..1]),
        ("6b", spread_label, &ORDER_MARKETS[..]),
    ] {
        if !settings.wants(id) {
            continue;
        }
        progress(&format!("{id}: placeOrder on PostgreSQL"));
        match orders_on_postgres(settings, server, &admin, markets).await {
            Ok((load, book)) => {
                order_rates.push((id, load.rps()));
                report.load_row(id, label, &load, None);
                if let Some(row) = report.rows.last_mut() {
                    row.result = format!("{:.0} orders/s", load.rps());
                }
                report.notes.push(format!("({id}) {book}"));
            }
            Err(error) => report.failed(id, label, &error),
        }
    }

    if settings.wants("4") || wants_orders {
        progress("4/6c: pgbench");
        match find_pgbench(settings).await {
            Ok((pgbench, version)) => {
                report.environment.push(("pgbench", version));
                let outcome = pgbench_parts(
                    settings,
                    &admin,
                    &pgbench,
                    settings.wants("4"),
                    wants_orders,
                )
                .await;
                match outcome {
                    Ok((select_only, tpcb)) => {
                        if let Some(bench) = select_only {
                            report.pgbench_row("4", pgbench_label, &bench);
                            if let Some(me_rps) = me_rps {
                                report.compare_to_pgbench(
                                    "3",
                                    me_rps / bench.tps,
                                    "(4)",
                                    TARGET_ME_VS_PGBENCH,
                                );
                            }
                        }
                        if let Some(bench) = tpcb {
                            report.pgbench_row("6c", tpcb_label, &bench);
                            for (id, rps) in &order_rates {
                                report.compare_to_pgbench(
                                    id,
                                    rps / bench.tps,
                                    "(6c)",
                                    TARGET_ORDERS_VS_PGBENCH,
                                );
                            }
                        }
                    }
                    Err(error) => {
                        if settings.wants("4") {
                            report.failed("4", pgbench_label, &error);
                        }
                        if wants_orders {
                            report.failed("6c", tpcb_label, &error);
                        }
                    }
                }
            }
            Err(error) => {
                let error = error.context("pgbench unavailable");
                if settings.wants("4") {
                    unavailable(report, "4", pgbench_label, anyhow!("{error:#}"));
                }
                if wants_orders {
                    unavailable(report, "6c", tpcb_label, error);
                }
            }
        }
    }
    if let Err(error) = admin.close().await {
        eprintln!("warning: cannot close the PostgreSQL admin connection: {error}");
    }
}

async fn connect_admin(url: &str) -> anyhow::Result<DatabaseConnection> {
    let mut options = sea_orm::ConnectOptions::new(url.to_owned());
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(options)
        .await
        .with_context(|| format!("cannot connect to {url} (set BENCH_POSTGRES_URL)"))
}

async fn server_version(admin: &DatabaseConnection) -> anyhow::Result<String> {
    let row = admin
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            "SHOW server_version",
        ))
        .await?
        .context("SHOW server_version returned no row")?;
    Ok(row.try_get::<String>("", "server_version")?)
}

/// A database created for one part and dropped after it, whatever the part's outcome.
struct ScratchDatabase {
    name: String,
    url: String,
}

impl ScratchDatabase {
    async fn create(
        admin: &DatabaseConnection,
        admin_url: &str,
        purpose: &str,
    ) -> anyhow::Result<ScratchDatabase> {
        let name = format!("tradegraph_{purpose}_{}", std::process::id());
        let (base, _) = admin_url
            .rsplit_once('/')
            .context("BENCH_POSTGRES_URL must end with a database name")?;
        // Left over only if an earlier run with the same pid was killed.
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        Ok(ScratchDatabase {
            url: format!("{base}/{name}"),
            name,
        })
    }

    async fn drop(self, admin: &DatabaseConnection) -> anyhow::Result<()> {
        admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .with_context(|| format!("cannot drop database {}", self.name))?;
        Ok(())
    }
}

/// (3): signs in a few users, then asks `me` with their access tokens.
async fn me_on_postgres(
    settings: &Settings,
    server: &Handle,
    admin: &DatabaseConnection,
) -> anyhow::Result<LoadOutcome> {
    let db = ScratchDatabase::create(admin, &settings.postgres_admin_url, "bench").await?;
    let result = async {
        let app = RunningApp::start(server, tradegraph_vars(&db.url)).await?;
        let result = async {
            let tokens = register_users(app.addr, BENCH_USERS).await?;
            let targets: Vec<Target> = tokens
                .iter()
                .map(|token| {
                    Target::post_json(
                        app.addr,
                        "/graphql",
                        ME_QUERY,
                        Some(token),
                        r#"{"data":{"me":{"id":""#,
                    )
                })
                .collect();
            run_load(&targets, settings, None).await
        }
        .await;
        app.stop().await?;
        result
    }
    .await;
    db.drop(admin).await?;
    result
}

/// Registers `count` users through the API and returns their access tokens, checking
/// that each one is accepted by `me`.
async fn register_users(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/graphql");
    let mut registrations = JoinSet::new();
    for i in 0..count {
        let (http, url) = (http.clone(), url.clone());
        registrations.spawn(async move {
            let email = format!("bench{i}@example.com");
            let body = json!({
                "query": "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
                "variables": {"input": {"email": email, "password": PASSWORD, "displayName": format!("Bench {i}")}},
            });
            let reply: Value = http.post(&url).json(&body).send().await?.json().await?;
            let token = reply["data"]["register"]["accessToken"]
                .as_str()
                .with_context(|| format!("register answered without a token: {reply}"))?
                .to_owned();
            let reply: Value = http
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"query": "{ me { id email } }"}))
                .send()
                .await?
                .json()
                .await?;
            if reply["data"]["me"]["email"] != email {
                bail!("`me` with a fresh token answered {reply}");
            }
            anyhow::Ok(token)
        });
    }
    let mut tokens = Vec::with_capacity(count);
    while let Some(joined) = registrations.join_next().await {
        tokens.push(joined.context("registration task panicked")??);
    }
    Ok(tokens)
}

/// Connections, each its own trader, of (6) and (6b); pgbench's clients in (6c).
const ORDER_CONNECTIONS: usize = 32;
/// Distinct orders each connection sends in turn: enough for the prices to look random
/// to the book, and a multiple of twice the markets so that sides alternate evenly.
const ORDERS_PER_CONNECTION: usize = 64;
/// Buys and sells are both priced up to this many ticks either side of the mid, so
/// that about half of them meet a resting order of the other side.
const OFFSET_TICKS: u64 = 3;
const ORDER_ADMIN_EMAIL: &str = "bench-admin@example.com";
const PLACE_ORDER: &str = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }";
/// Each trader's deposits: far more than a run can hold or spend, so that no order is
/// refused for funds (`INSUFFICIENT_FUNDS` counts as an error).
const ORDER_DEPOSITS: [(&str, &str); 4] = [
    ("USD", "100000000"),
    ("BTC", "100000"),
    ("ETH", "100000"),
    ("SOL", "100000"),
];

/// A demo market as (6) trades it. Prices and quantities are integers in units of
/// `10^-decimals`, so they print exactly; one price unit is the market's tick.
struct OrderMarket {
    symbol: &'static str,
    mid: u64,
    price_decimals: u32,
    /// The smallest order, a multiple of the lot size above the minimum notional;
    /// orders are 1 to 3 of it.
    quantity: u64,
    quantity_decimals: u32,
}

/// The demo markets (`SEED_DEMO_DATA`); (6) uses the first only.
const ORDER_MARKETS: [OrderMarket; 4] = [
    // Tick 0.01, lot 0.00001: 50000.00 × 0.001 BTC = 50 USD.
    OrderMarket {
        symbol: "BTC-USD",
        mid: 5_000_000,
        price_decimals: 2,
        quantity: 1,
        quantity_decimals: 3,
    },
    // Tick 0.01, lot 0.0001: 3000.00 × 0.01 ETH = 30 USD.
    OrderMarket {
        symbol: "ETH-USD",
        mid: 300_000,
        price_decimals: 2,
        quantity: 1,
        quantity_decimals: 2,
    },
    // Tick 0.01, lot 0.01: 150.00 × 0.1 SOL = 15 USD.
    OrderMarket {
        symbol: "SOL-USD",
        mid: 15_000,
        price_decimals: 2,
        quantity: 1,
        quantity_decimals: 1,
    },
    // Tick 0.00001, lot 0.001: 0.06000 × 0.01 ETH = 0.0006 BTC, minimum 0.0001.
    OrderMarket {
        symbol: "ETH-BTC",
        mid: 6_000,
        price_decimals: 5,
        quantity: 1,
        quantity_decimals: 2,
    },
];

/// (6) and (6b): 32 funded traders placing LIMIT GTC orders on `markets`, each on its
/// own connection. Returns the load and what became of the orders.
async fn orders_on_postgres(
    settings: &Settings,
    server: &Handle,
    admin: &DatabaseConnection,
    markets: &[OrderMarket],
) -> anyhow::Result<(LoadOutcome, String)> {
    let db = ScratchDatabase::create(admin, &settings.postgres_admin_url, "orders").await?;
    let result = async {
        let mut vars = tradegraph_vars(&db.url);
        // `BENCH_SERVER_*` still wins, as everywhere.
        for (name, value) in [
            ("SEED_DEMO_DATA", "true"),
            ("ADMIN_EMAIL", ORDER_ADMIN_EMAIL),
            ("ADMIN_PASSWORD", PASSWORD),
        ] {
            vars.entry(name.to_owned())
                .or_insert_with(|| value.to_owned());
        }
        let app = RunningApp::start(server, vars).await?;
        let result = async {
            let tokens = funded_traders(app.addr, ORDER_CONNECTIONS).await?;
            let targets: Vec<Target> = tokens
                .iter()
                .enumerate()
                .map(|(i, token)| {
                    Target::post_json_each(
                        app.addr,
                        "/graphql",
                        &order_bodies(i, markets),
                        Some(token),
                        r#"{"data":{"placeOrder":{"id":""#,
                    )
                })
                .collect();
            let load = run_load_on(&targets, settings, ORDER_CONNECTIONS, None).await?;
            let lag = pnl_lag(&db.url)
                .await
                .unwrap_or_else(|error| format!("P&L lag unavailable: {error:#}"));
            let book = order_statuses(&db.url)
                .await
                .unwrap_or_else(|error| format!("order statuses unavailable: {error:#}"));
            anyhow::Ok((load, format!("{book}; {lag}")))
        }
        .await;
        app.stop().await?;
        result
    }
    .await;
    db.drop(admin).await?;
    result
}

/// The request bodies connection `connection` sends in turn: LIMIT GTC orders cycling
/// through `markets`, a few ticks either side of each mid, 1 to 3 minimum quantities.
/// Sides alternate within each market, and odd connections start with the other side,
/// so about as many buys as sells are in flight at any moment. Fixed seeds: every run
/// sends the same orders.
fn order_bodies(connection: usize, markets: &[OrderMarket]) -> Vec<String> {
    let mut seed = connection as u64 + 1;
    (0..ORDERS_PER_CONNECTION)
        .map(|j| {
            let market = &markets[j % markets.len()];
            let buy = (j / markets.len() + connection) % 2 == 0;
            // Within the mid ± OFFSET_TICKS (mid is far above OFFSET_TICKS).
            let price = market.mid + splitmix64(&mut seed) % (2 * OFFSET_TICKS + 1) - OFFSET_TICKS;
            let quantity = market.quantity * (1 + splitmix64(&mut seed) % 3);
            json!({
                "query": PLACE_ORDER,
                "variables": {"i": {
                    "market": market.symbol,
                    "side": if buy { "BUY" } else { "SELL" },
                    "type": "LIMIT",
                    "timeInForce": "GTC",
                    "price": fixed_point(price, market.price_decimals),
                    "quantity": fixed_point(quantity, market.quantity_decimals),
                }},
            })
            .to_string()
        })
        .collect()
}

/// `units × 10^-decimals` as a decimal string, e.g. (5000012, 2) → "50000.12".
fn fixed_point(units: u64, decimals: u32) -> String {
    let scale = 10u64.pow(decimals);
    if decimals == 0 {
        return units.to_string();
    }
    format!(
        "{}.{:0width$}",
        units / scale,
        units % scale,
        width = decimals as usize
    )
}

/// A small, good enough pseudo-random generator (SplitMix64); no dependency needed.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Registers `count` traders, credits each with [`ORDER_DEPOSITS`] through the admin
/// from `ADMIN_EMAIL`, and returns their access tokens.
async fn funded_traders(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/graphql");
    let admin_token = {
        let body = json!({
            "query": "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
            "variables": {"input": {"email": ORDER_ADMIN_EMAIL, "password": PASSWORD}},
        });
        let reply: Value = http.post(&url).json(&body).send().await?.json().await?;
        reply["data"]["login"]["accessToken"]
            .as_str()
            .with_context(|| format!("the admin's login answered without a token: {reply}"))?
            .to_owned()
    };
    let mut registrations = JoinSet::new();
    for i in 0..count {
        let (http, url, admin_token) = (http.clone(), url.clone(), admin_token.clone());
        registrations.spawn(async move {
            let body = json!({
                "query": "mutation($input: RegisterInput!) { register(input: $input) { accessToken user { id } } }",
                "variables": {"input": {
                    "email": format!("trader{i}@example.com"),
                    "password": PASSWORD,
                    "displayName": format!("Trader {i}"),
                }},
            });
            let reply: Value = http.post(&url).json(&body).send().await?.json().await?;
            let registered = &reply["data"]["register"];
            let (Some(token), Some(user_id)) = (
                registered["accessToken"].as_str(),
                registered["user"]["id"].as_str(),
            ) else {
                bail!("register answered without a token or user id: {reply}");
            };
            for (asset, amount) in ORDER_DEPOSITS {
                let body = json!({
                    "query": "mutation($input: CreditDepositInput!) { creditDeposit(input: $input) { __typename } }",
                    "variables": {"input": {
                        "userId": user_id,
                        "asset": asset,
                        "amount": amount,
                        "reference": format!("bench-{i}-{asset}"),
                    }},
                });
                let reply: Value = http
                    .post(&url)
                    .bearer_auth(&admin_token)
                    .json(&body)
                    .send()
                    .await?
                    .json()
                    .await?;
                if reply.get("errors").is_some() || reply["data"]["creditDeposit"].is_null() {
                    bail!("creditDeposit of {amount} {asset} to trader {i} answered {reply}");
                }
            }
            anyhow::Ok(token.to_owned())
        });
    }
    let mut tokens = Vec::with_capacity(count);
    while let Some(joined) = registrations.join_next().await {
        tokens.push(joined.context("registration task panicked")??);
    }
    Ok(tokens)
}

/// How long after the load stopped every trader's P&L state had followed all their
/// trades (it follows after commit, beside the placing path).
async fn pnl_lag(database_url: &str) -> anyhow::Result<String> {
    const LIMIT: Duration = Duration::from_secs(60);
    let conn = connect_admin(database_url).await?;
    let started = Instant::now();
    let result = async {
        loop {
            let behind: i64 = conn
                .query_one_raw(Statement::from_string(
                    DatabaseBackend::Postgres,
                    "SELECT COUNT(*) AS n FROM user_sequences s \
                     LEFT JOIN portfolio_cursors c ON c.user_id = s.user_id \
                     WHERE s.last_sequence > COALESCE(c.last_sequence, 0)",
                ))
                .await?
                .context("count of users behind returned no row")?
                .try_get("", "n")?;
            if behind == 0 {
                return anyhow::Ok(format!(
                    "every trader's P&L had followed their trades {} ms after the load stopped",
                    started.elapsed().as_millis()
                ));
            }
            if started.elapsed() > LIMIT {
                bail!("{behind} traders' P&L still behind {LIMIT:?} after the load stopped");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    .await;
    conn.close().await?;
    result
}

/// How many orders of the run (warm-up included) ended in each status, and the fills:
/// whether about half traded, as intended.
async fn order_statuses(database_url: &str) -> anyhow::Result<String> {
    let conn = connect_admin(database_url).await?;
    let result = async {
        let rows = conn
            .query_all_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                "SELECT status, COUNT(*) AS n FROM orders GROUP BY status ORDER BY status",
            ))
            .await?;
        let mut statuses = Vec::with_capacity(rows.len());
        let mut placed = 0;
        for row in rows {
            let status: String = row.try_get("", "status")?;
            let n: i64 = row.try_get("", "n")?;
            placed += n;
            statuses.push(format!("{status} {n}"));
        }
        let count = |sql: &'static str| {
            let conn = &conn;
            async move {
                conn.query_one_raw(Statement::from_string(DatabaseBackend::Postgres, sql))
                    .await?
                    .with_context(|| format!("`{sql}` returned no row"))?
                    .try_get::<i64>("", "n")
                    .map_err(anyhow::Error::from)
            }
        };
        let takers =
            count("SELECT COUNT(DISTINCT order_id) AS n FROM fills WHERE liquidity = 'TAKER'")
                .await?;
        let fills = count("SELECT COUNT(*) AS n FROM fills").await?;
        // Each one cost a transaction a `deadlock_timeout` (1 s by default) and a retry.
        let deadlocks =
            count("SELECT deadlocks AS n FROM pg_stat_database WHERE datname = current_database()")
                .await?;
        let traded = if placed > 0 {
            format!("{:.0} %", takers as f64 * 100.0 / placed as f64)
        } else {
            "—".to_owned()
        };
        anyhow::Ok(format!(
            "{ORDER_CONNECTIONS} connections; {placed} orders placed in the whole run, warm-up \
             included, by final status: {}; {takers} ({traded}) traded on arrival; {fills} fill \
             rows; {deadlocks} deadlocks detected by PostgreSQL",
            statuses.join(", ")
        ))
    }
    .await;
    conn.close().await?;
    result
}

struct PgbenchResult {
    tps: f64,
    latency_ms: Option<f64>,
    /// Failed transactions, from pgbench 15 on.
    failed: Option<u64>,
    cpu: CpuUse,
}

/// `pgbench` from `BENCH_PGBENCH`, `PATH` or PostgreSQL's own directory, with its
/// version line.
async fn find_pgbench(settings: &Settings) -> anyhow::Result<(PathBuf, String)> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = &settings.pgbench {
        candidates.push(path.clone());
    } else {
        candidates.push(PathBuf::from("pgbench"));
        if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
            let mut dirs: Vec<PathBuf> =
                versions.filter_map(|e| e.ok().map(|e| e.path())).collect();
            // Newest first: the directory names are major versions.
            dirs.sort_by_key(|d| {
                std::cmp::Reverse(d.file_name().and_then(|n| n.to_str()?.parse::<u32>().ok()))
            });
            candidates.extend(dirs.into_iter().map(|d| d.join("bin/pgbench")));
        }
    }
    for candidate in &candidates {
        let output = tokio::process::Command::new(candidate)
            .arg("--version")
            .kill_on_drop(true)
            .output()
            .await;
        if let Some(output) = output.ok().filter(|o| o.status.success()) {
            return Ok((
                candidate.clone(),
                String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            ));
        }
    }
    bail!("no working pgbench among {candidates:?} (set BENCH_PGBENCH)")
}

/// (4) and (6c): `pgbench -i -s 10` into a database of its own, then the select-only
/// run and/or the TPC-B-like one, as asked. The read-write run comes last, so the
/// select-only one reads the tables as initialized.
async fn pgbench_parts(
    settings: &Settings,
    admin: &DatabaseConnection,
    pgbench: &Path,
    select_only: bool,
    tpcb: bool,
) -> anyhow::Result<(Option<PgbenchResult>, Option<PgbenchResult>)> {
    let db = ScratchDatabase::create(admin, &settings.postgres_admin_url, "pgbench").await?;
    let result = async {
        let init = [
            "-i".to_owned(),
            "-s".to_owned(),
            "10".to_owned(),
            "-q".to_owned(),
            db.url.clone(),
        ];
        run_command(pgbench, &init, Duration::from_secs(300)).await?;
        let secs = settings.measure.as_secs().to_string();
        let select_only = if select_only {
            let args = ["-S", "-c", "8", "-j", "2", "-T", &secs, "-n", &db.url];
            Some(run_pgbench(settings, pgbench, &args).await?)
        } else {
            None
        };
        // As many clients as (6) has connections; the default script: three UPDATEs,
        // a SELECT and an INSERT in one transaction. `-n`: no VACUUM before, as for -S.
        let tpcb = if tpcb {
            let clients = ORDER_CONNECTIONS.to_string();
            let args = ["-c", &clients, "-j", "2", "-T", &secs, "-n", &db.url];
            Some(run_pgbench(settings, pgbench, &args).await?)
        } else {
            None
        };
        anyhow::Ok((select_only, tpcb))
    }
    .await;
    db.drop(admin).await?;
    result
}

/// One timed pgbench run and what its summary says.
async fn run_pgbench(
    settings: &Settings,
    pgbench: &Path,
    args: &[&str],
) -> anyhow::Result<PgbenchResult> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let before = CpuSample::take(None);
    let stdout = run_command(pgbench, &args, settings.measure + Duration::from_secs(60)).await?;
    let cpu = CpuSample::take(None).since(&before);
    let tps = stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no `tps = ...` line in pgbench's output:\n{stdout}"))?;
    let latency_ms = stdout
        .lines()
        .find_map(|line| line.strip_prefix("latency average = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    let failed = stdout
        .lines()
        .find_map(|line| line.strip_prefix("number of failed transactions: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    Ok(PgbenchResult {
        tps,
        latency_ms,
        failed,
        cpu,
    })
}

/// Runs a command to completion within `limit`; its stdout, or an error with its stderr.
async fn run_command(program: &Path, args: &[String], limit: Duration) -> anyhow::Result<String> {
    let run = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(limit, run)
        .await
        .with_context(|| {
            format!(
                "{} {} took longer than {limit:?}",
                program.display(),
                args.join(" ")
            )
        })?
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// (5a): `App::build` (connect, migrate, bind) until `/healthz` answers, fresh file
/// each time.
async fn startup_in_process(settings: &Settings, server: &Handle) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(settings.startup_runs);
    for _ in 0..settings.startup_runs {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let vars = tradegraph_vars(&sqlite_url(dir.path()));
        let started = Instant::now();
        let app = RunningApp::start(server, vars).await?;
        let ready = wait_for_healthz(app.addr, started + STARTUP_DEADLINE).await;
        let elapsed = started.elapsed();
        app.stop().await?;
        ready?;
        times.push(elapsed);
    }
    Ok(times)
}

/// (5b): the release binary from spawn until `/healthz` answers, fresh file each time.
async fn startup_binary(settings: &Settings, binary: &Path) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(settings.startup_runs);
    for _ in 0..settings.startup_runs {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let addr = free_local_addr()?;
        let started = Instant::now();
        let mut child = spawn_binary(binary, addr, &sqlite_url(dir.path()))?;
        let ready = wait_for_healthz(addr, started + STARTUP_DEADLINE).await;
        let elapsed = started.elapsed();
        stop_child(&mut child).await;
        ready?;
        times.push(elapsed);
    }
    Ok(times)
}

// ---------------------------------------------------------------------------------------
// tradegraph, in process and as a child process
// ---------------------------------------------------------------------------------------

/// Production settings, as deployed: JSON logs, no introspection, every other setting
/// at its default but the rate limit. In process no log subscriber is installed, so
/// nothing is actually written there; (2b) covers that. `BENCH_SERVER_<NAME>=value`
/// sets `<NAME>` too, to try a setting (say `BENCH_SERVER_DATABASE_MAX_CONNECTIONS=32`,
/// or `BENCH_SERVER_RATE_LIMIT_PER_MINUTE=0` to switch the limiter off) without editing
/// this.
fn tradegraph_vars(database_url: &str) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("APP_ENV", "production"),
        ("BIND_ADDR", "127.0.0.1:0"),
        ("DATABASE_URL", database_url),
        ("JWT_SECRET", JWT_SECRET),
        // Production refuses to start without its own KYC key, webhook secret and list.
        (
            "KYC_ENCRYPTION_KEY",
            "62656e63682d6b65792d62656e63682d6b65792d62656e63682d6b65792d2121",
        ),
        ("KYC_WEBHOOK_SECRET", "bench-kyc-webhook-secret-0123456789"),
        (
            "SANCTIONS_LIST_PATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/sanctions_sample.csv"),
        ),
        ("LOG_FORMAT", "json"),
        // All load comes from one IP and a few users, which the default limit (300 a
        // minute per user or IP) would refuse almost entirely. A limit this high is
        // never reached, yet every request still pays for the check, as it would with
        // many real users each under their limit.
        ("RATE_LIMIT_PER_MINUTE", "1000000000"),
        // Order placement and sign-in have tighter limits of their own.
        ("RATE_LIMIT_ORDERS_PER_MINUTE", "1000000000"),
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "1000000000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    vars.extend(server_overrides());
    vars
}

/// The `BENCH_SERVER_*` variables, prefix removed.
fn server_overrides() -> Vec<(String, String)> {
    let mut overrides: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix("BENCH_SERVER_")?.to_owned(), v)))
        .collect();
    overrides.sort();
    overrides
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("bench.db").display())
}

/// tradegraph served on the server runtime until [`RunningApp::stop`].
struct RunningApp {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningApp {
    async fn start(server: &Handle, vars: HashMap<String, String>) -> anyhow::Result<RunningApp> {
        let config = Config::from_vars(vars).context("invalid tradegraph configuration")?;
        let (addr_tx, addr_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        // Built on the server runtime too: the database pool spawns its tasks where it
        // is created.
        let task = server.spawn(async move {
            let app = App::build(config).await?;
            let _ = addr_tx.send(app.local_addr());
            app.run_until(async {
                let _ = stop_rx.await;
            })
            .await
        });
        match addr_rx.await {
            Ok(addr) => Ok(RunningApp { addr, stop, task }),
            // The task ended before binding: its result says why.
            Err(_) => match task.await.context("tradegraph panicked while starting")? {
                Err(error) => Err(error.context("tradegraph did not start")),
                Ok(()) => bail!("tradegraph stopped before it was listening"),
            },
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(GRACE + Duration::from_secs(5), self.task)
            .await
            .context("tradegraph did not shut down")?
            .context("tradegraph panicked")?
            .context("tradegraph failed while serving")
    }
}

/// The release binary built next to this benchmark (`cargo bench` builds the package's
/// binaries with the same profile, into the same directory).
fn release_binary() -> Option<PathBuf> {
    let built = option_env!("CARGO_BIN_EXE_tradegraph").map(PathBuf::from);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("tradegraph")));
    [built, beside]
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
}

fn short_path(path: &Path) -> String {
    let parts: Vec<_> = path.iter().rev().take(3).collect();
    let parts: Vec<String> = parts
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

/// A port that was free a moment ago, for a child that must be told its address. The
/// race with other processes is harmless here: start-up would then fail loudly.
fn free_local_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?)
}

fn spawn_binary(
    binary: &Path,
    addr: SocketAddr,
    database_url: &str,
) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new(binary)
        .arg("serve")
        .envs(tradegraph_vars(database_url))
        .env("BIND_ADDR", addr.to_string())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

/// Kills the child (its database is a throwaway file) and reaps it.
async fn stop_child(child: &mut tokio::process::Child) {
    if let Err(error) = child.kill().await {
        eprintln!("warning: cannot stop the tradegraph child process: {error}");
    }
}

/// Polls `GET /healthz` until it answers 200, or fails at `deadline`.
async fn wait_for_healthz(addr: SocketAddr, deadline: Instant) -> anyhow::Result<()> {
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let mut buf = Vec::with_capacity(1024);
    let mut last_error = anyhow!("no attempt made");
    while Instant::now() < deadline {
        match TcpStream::connect(addr).await {
            Ok(mut stream) => match exchange(&mut stream, &request, &mut buf).await {
                Ok(response) if response.status == 200 => return Ok(()),
                Ok(response) => last_error = anyhow!("/healthz answered {}", response.status),
                Err(error) => last_error = error,
            },
            Err(error) => last_error = error.into(),
        }
        // Short enough not to blur a sub-second start-up.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(last_error.context(format!(
        "/healthz on {addr} did not answer 200 within {STARTUP_DEADLINE:?}"
    )))
}

// ---------------------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------------------

/// Requests sent verbatim, in turn, over and over, and what a good answer looks like.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    /// Usually one; several when each request must differ (orders at varied prices).
    requests: Arc<[Vec<u8>]>,
    /// The start of a good response body; a 200 with anything else is an error too.
    expect_body: Arc<[u8]>,
}

impl Target {
    fn get(addr: SocketAddr, path: &str, expect_body: &str) -> Target {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        Target {
            addr,
            requests: vec![request.into_bytes()].into(),
            expect_body: expect_body.as_bytes().into(),
        }
    }

    fn post_json(
        addr: SocketAddr,
        path: &str,
        body: &str,
        bearer: Option<&str>,
        expect_body: &str,
    ) -> Target {
        Target::post_json_each(addr, path, &[body.to_owned()], bearer, expect_body)
    }

    /// One `POST` per body, sent in turn.
    fn post_json_each(
        addr: SocketAddr,
        path: &str,
        bodies: &[String],
        bearer: Option<&str>,
        expect_body: &str,
    ) -> Target {
        let auth = bearer
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let requests: Vec<Vec<u8>> = bodies
            .iter()
            .map(|body| {
                format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                     Accept: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            })
            .collect();
        Target {
            addr,
            requests: requests.into(),
            expect_body: expect_body.as_bytes().into(),
        }
    }
}

/// What one load run measured.
struct LoadOutcome {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    window: Duration,
    latency: Histogram,
    cpu: CpuUse,
}

impl LoadOutcome {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }
}

#[derive(Default)]
struct WorkerStats {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram,
}

impl WorkerStats {
    fn error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }

    fn merge(&mut self, other: WorkerStats) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency.merge(&other.latency);
    }
}

/// Closed-loop load: `settings.connections` keep-alive connections, each sending its
/// next request as soon as the previous answer is in. Connection `i` sends
/// `targets[i % targets.len()]`. Only requests started after the warm-up and finished
/// within the measured window count; errors count throughout. `server_pid` names the
/// server's process when it is not this one, for the CPU accounting.
async fn run_load(
    targets: &[Target],
    settings: &Settings,
    server_pid: Option<u32>,
) -> anyhow::Result<LoadOutcome> {
    run_load_on(targets, settings, settings.connections, server_pid).await
}

/// [`run_load`] with `connections` connections instead of `settings.connections`.
async fn run_load_on(
    targets: &[Target],
    settings: &Settings,
    connections: usize,
    server_pid: Option<u32>,
) -> anyhow::Result<LoadOutcome> {
    if targets.is_empty() || targets.iter().any(|t| t.requests.is_empty()) {
        bail!("no request to send");
    }
    let start = Instant::now();
    let measure_from = start + settings.warmup;
    let until = measure_from + settings.measure;
    let cpu_window = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let before = CpuSample::take(server_pid);
        tokio::time::sleep_until(until.into()).await;
        CpuSample::take(server_pid).since(&before)
    });
    let mut workers = JoinSet::new();
    for i in 0..connections {
        let target = targets[i % targets.len()].clone();
        let abandon_after = settings.warmup + settings.measure + GRACE;
        workers.spawn(tokio::time::timeout(
            abandon_after,
            worker(target, measure_from, until),
        ));
    }
    let mut total = WorkerStats::default();
    while let Some(joined) = workers.join_next().await {
        match joined.context("a load worker panicked")? {
            Ok(stats) => total.merge(stats),
            Err(_) => {
                total.error(|| format!("a request was still unanswered {GRACE:?} after the window"))
            }
        }
    }
    let cpu = cpu_window.await.context("the CPU sampler panicked")?;
    Ok(LoadOutcome {
        ok: total.ok,
        errors: total.errors,
        first_error: total.first_error,
        window: settings.measure,
        latency: total.latency,
        cpu,
    })
}

async fn worker(target: Target, measure_from: Instant, until: Instant) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut connection: Option<TcpStream> = None;
    let mut next = 0;
    loop {
        if Instant::now() >= until {
            break;
        }
        if connection.is_none() {
            match connect(target.addr).await {
                Ok(stream) => connection = Some(stream),
                Err(error) => {
                    stats.error(|| format!("connect: {error:#}"));
                    // Not a busy loop when the server is gone; the deadline still ends it.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(stream) = connection.as_mut() else {
            continue;
        };
        let request = &target.requests[next % target.requests.len()];
        next = next.wrapping_add(1);
        let started = Instant::now();
        match exchange(stream, request, &mut buf).await {
            Ok(response) => {
                let finished = Instant::now();
                let body = &buf[response.body_start..];
                if response.status != 200 || !body.starts_with(&target.expect_body) {
                    stats.error(|| {
                        format!(
                            "HTTP {}: {}",
                            response.status,
                            String::from_utf8_lossy(&body[..body.len().min(300)])
                        )
                    });
                } else if started >= measure_from && finished <= until {
                    stats.ok += 1;
                    stats.latency.record(finished - started);
                }
                if response.close {
                    connection = None;
                }
            }
            Err(error) => {
                stats.error(|| format!("{error:#}"));
                connection = None;
            }
        }
    }
    stats
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    // Requests are one small write each; Nagle would only add delay.
    stream.set_nodelay(true)?;
    Ok(stream)
}

struct ResponseHead {
    status: u16,
    body_start: usize,
    close: bool,
}

/// Sends `request` and reads one whole response into `buf`.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> anyhow::Result<ResponseHead> {
    stream.write_all(request).await.context("send")?;
    buf.clear();
    let head_end = loop {
        buf.reserve(4096);
        if stream.read_buf(buf).await.context("receive")? == 0 {
            bail!("the server closed the connection");
        }
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 64 * 1024 {
            bail!("response head larger than 64 KiB");
        }
    };
    let (status, content_length, close) = parse_head(&buf[..head_end])?;
    let body_end = head_end + content_length;
    while buf.len() < body_end {
        buf.reserve(body_end - buf.len());
        if stream.read_buf(buf).await.context("receive")? == 0 {
            bail!("the server closed the connection mid-body");
        }
    }
    if buf.len() > body_end {
        bail!("the server sent bytes past the end of the response");
    }
    Ok(ResponseHead {
        status,
        body_start: head_end,
        close,
    })
}

/// Status, `Content-Length` and whether the server will close the connection.
fn parse_head(head: &[u8]) -> anyhow::Result<(u16, usize, bool)> {
    let text = std::str::from_utf8(head).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line `{status_line}`"))?;
    let (mut length, mut close) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse()
                    .with_context(|| format!("bad Content-Length `{value}`"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("Transfer-Encoding `{value}` is not supported by this load generator");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let length = length.context("response without Content-Length")?;
    Ok((status, length, close))
}

/// Latencies in nanoseconds, log-linear buckets (64 per power of two, under 1.6 %
/// error): constant memory however long the run.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB_BUCKETS: u64 = 64;
const LINEAR_BELOW: u64 = 2 * SUB_BUCKETS;
const BUCKETS: usize = (LINEAR_BELOW + (64 - 7) * SUB_BUCKETS) as usize;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

impl Histogram {
    fn index(nanos: u64) -> usize {
        if nanos < LINEAR_BELOW {
            return nanos as usize;
        }
        let exponent = 63 - u64::from(nanos.leading_zeros()); // at least 7
        let mantissa = (nanos >> (exponent - 6)) & (SUB_BUCKETS - 1);
        (LINEAR_BELOW + (exponent - 7) * SUB_BUCKETS + mantissa) as usize
    }

    /// The middle of bucket `index`.
    fn value(index: usize) -> u64 {
        let index = index as u64;
        if index < LINEAR_BELOW {
            return index;
        }
        let exponent = (index - LINEAR_BELOW) / SUB_BUCKETS + 7;
        let mantissa = (index - LINEAR_BELOW) % SUB_BUCKETS;
        let width = 1u64 << (exponent - 6);
        (SUB_BUCKETS + mantissa) * width + width / 2
    }

    fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_nanos(Self::value(index)));
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------
// CPU accounting: where the two cores went during a measured window
// ---------------------------------------------------------------------------------------

/// CPU time used so far, in ticks: by this process's threads, grouped by name, by
/// PostgreSQL's processes, and by the whole machine.
struct CpuSample {
    at: Instant,
    server: u64,
    generator: u64,
    other_threads: u64,
    postgres: u64,
    machine_busy: u64,
}

/// CPU used over a window, in cores (1.0 = one core busy the whole window).
#[derive(Clone, Copy, Default)]
struct CpuUse {
    server: f64,
    generator: f64,
    other_threads: f64,
    postgres: f64,
    /// Everything else: other people's builds and tests, pgbench. Well above zero means
    /// the numbers of that window are low for reasons outside the benchmark.
    rest: f64,
    available: bool,
}

impl CpuSample {
    /// Best effort: zeros where `/proc` cannot be read. A `server_pid` process counts
    /// as server threads.
    fn take(server_pid: Option<u32>) -> CpuSample {
        let mut sample = CpuSample {
            at: Instant::now(),
            server: 0,
            generator: 0,
            other_threads: 0,
            postgres: 0,
            machine_busy: 0,
        };
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                    continue;
                };
                let Some((name, ticks)) = thread_ticks(&stat) else {
                    continue;
                };
                // The server's runtime and its own threads (order placement, pushes of
                // shared subscription results).
                if ["srv-worker", "order-placement", "shared-pushes"]
                    .iter()
                    .any(|server| name.starts_with(server))
                {
                    sample.server += ticks;
                } else if name.starts_with("load-gen") {
                    sample.generator += ticks;
                } else {
                    // SQLite's connection threads, the main thread.
                    sample.other_threads += ticks;
                }
            }
        }
        if let Some(pid) = server_pid {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // A process's line has the same layout, with all its threads added up.
            if let Some((_, ticks)) = thread_ticks(&stat) {
                sample.server += ticks;
            }
        }
        // Backends that exit within the window lose their time here; the pool's
        // connections live through it.
        for process in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let is_pid = process
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
            if !is_pid {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(process.path().join("stat")) else {
                continue;
            };
            if let Some(("postgres", ticks)) = thread_ticks(&stat) {
                sample.postgres += ticks;
            }
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            if let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) {
                let fields: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|f| f.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal: busy is all but idle
                // and iowait.
                let idle =
                    fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
                let all: u64 = fields.iter().take(8).sum();
                sample.machine_busy = all.saturating_sub(idle);
            }
        }
        sample
    }

    fn since(&self, before: &CpuSample) -> CpuUse {
        let seconds = self.at.duration_since(before.at).as_secs_f64();
        if seconds <= 0.0 || self.machine_busy == 0 {
            return CpuUse::default();
        }
        let cores =
            |now: u64, then: u64| now.saturating_sub(then) as f64 / TICKS_PER_SECOND / seconds;
        let server = cores(self.server, before.server);
        let generator = cores(self.generator, before.generator);
        let other_threads = cores(self.other_threads, before.other_threads);
        let postgres = cores(self.postgres, before.postgres);
        let machine = cores(self.machine_busy, before.machine_busy);
        CpuUse {
            server,
            generator,
            other_threads,
            postgres,
            rest: (machine - server - generator - other_threads - postgres).max(0.0),
            available: true,
        }
    }
}

/// A thread's name and user + system ticks from its `stat` line.
fn thread_ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // Fields 14 and 15 of the line are utime and stime; 3 is the first after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

impl CpuUse {
    fn describe(&self) -> String {
        if !self.available {
            return "CPU split unavailable (no /proc)".to_owned();
        }
        format!(
            "server {:.2}, load generator {:.2}, other threads of this process {:.2}, \
             PostgreSQL {:.2}, anything else on the machine {:.2} cores",
            self.server, self.generator, self.other_threads, self.postgres, self.rest,
        )
    }

    fn machine(&self) -> f64 {
        self.server + self.generator + self.other_threads + self.postgres + self.rest
    }
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Met,
    Missed,
    NoTarget,
    Skipped,
    Failed,
}

struct Comparison {
    ratio: f64,
    against: &'static str,
    target: f64,
}

struct Row {
    id: &'static str,
    what: String,
    result: String,
    p50: String,
    p99: String,
    errors: String,
    comparison: String,
    target: String,
    verdict: Verdict,
}

#[derive(Default)]
struct Report {
    environment: Vec<(&'static str, String)>,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn push(&mut self, id: &'static str, what: &str, result: String) -> &mut Row {
        self.rows.push(Row {
            id,
            what: what.to_owned(),
            result,
            p50: "—".to_owned(),
            p99: "—".to_owned(),
            errors: "—".to_owned(),
            comparison: "—".to_owned(),
            target: "—".to_owned(),
            verdict: Verdict::NoTarget,
        });
        let last = self.rows.len() - 1;
        &mut self.rows[last]
    }

    fn load_row(
        &mut self,
        id: &'static str,
        what: &str,
        load: &LoadOutcome,
        comparison: Option<Comparison>,
    ) {
        let row = self.push(id, what, format!("{:.0} req/s", load.rps()));
        row.p50 = load
            .latency
            .quantile(0.50)
            .map(format_latency)
            .unwrap_or_else(|| "—".to_owned());
        row.p99 = load
            .latency
            .quantile(0.99)
            .map(format_latency)
            .unwrap_or_else(|| "—".to_owned());
        row.errors = load.errors.to_string();
        if let Some(c) = comparison {
            row.comparison = format!("{:.1} % of {}", c.ratio * 100.0, c.against);
            row.target = format!("≥ {:.0} %", c.target * 100.0);
            row.verdict = if c.ratio >= c.target {
                Verdict::Met
            } else {
                Verdict::Missed
            };
        }
        if load.errors > 0 {
            // A run with errors measured something else than intended.
            row.verdict = Verdict::Failed;
        }
        let cpu = load.cpu.describe();
        self.notes.push(format!(
            "({id}) {} requests in {:?}; CPU: {cpu}",
            load.ok, load.window
        ));
        if let Some(error) = &load.first_error {
            self.notes.push(format!("({id}) first error: {error}"));
        }
        self.warn_if_disturbed(id, &load.cpu);
    }

    fn warn_if_disturbed(&mut self, id: &str, cpu: &CpuUse) {
        if cpu.rest > DISTURBED_CORES {
            self.notes.push(format!(
                "({id}) **disturbed**: other work on the machine used {:.2} cores during this \
                 window; its numbers are lower than the machine can do",
                cpu.rest
            ));
        }
    }

    fn pgbench_row(&mut self, id: &'static str, what: &str, bench: &PgbenchResult) {
        let row = self.push(id, what, format!("{:.0} tps", bench.tps));
        row.errors = bench
            .failed
            .map_or_else(|| "—".to_owned(), |n| n.to_string());
        if bench.failed.is_some_and(|n| n > 0) {
            row.verdict = Verdict::Failed;
        }
        let latency = bench
            .latency_ms
            .map(|ms| format!("average latency {ms:.3} ms; "))
            .unwrap_or_default();
        // No split here: pgbench and its backends have exited by the second sample,
        // taking their CPU times with them.
        self.notes.push(format!(
            "({id}) {latency}the machine was {:.2} cores busy during the run (pgbench, \
             PostgreSQL and anything else)",
            bench.cpu.machine(),
        ));
    }

    fn compare_to_pgbench(&mut self, id: &str, ratio: f64, against: &str, target: f64) {
        if let Some(row) = self.rows.iter_mut().find(|r| r.id == id) {
            row.comparison = format!("{:.1} % of {against}", ratio * 100.0);
            row.target = format!("≥ {:.0} %", target * 100.0);
            if row.verdict != Verdict::Failed {
                row.verdict = if ratio >= target {
                    Verdict::Met
                } else {
                    Verdict::Missed
                };
            }
        }
    }

    fn startup_row(&mut self, id: &'static str, what: &str, times: &[Duration]) {
        let mut sorted = times.to_vec();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        let max = sorted[sorted.len() - 1];
        let result = format!(
            "median {} (min {}, max {}, {} runs)",
            format_latency(median),
            format_latency(sorted[0]),
            format_latency(max),
            sorted.len()
        );
        let row = self.push(id, what, result);
        row.comparison = format!("max {}", format_latency(max));
        row.target = format!("< {}", format_latency(TARGET_STARTUP));
        row.verdict = if max < TARGET_STARTUP {
            Verdict::Met
        } else {
            Verdict::Missed
        };
        let all: Vec<String> = times.iter().map(|t| format_latency(*t)).collect();
        self.notes
            .push(format!("({id}) each run, in order: {}", all.join(", ")));
    }

    fn skipped(&mut self, id: &'static str, what: &str, reason: &str) {
        let row = self.push(id, what, format!("**skipped**: {reason}"));
        row.verdict = Verdict::Skipped;
    }

    fn failed(&mut self, id: &'static str, what: &str, error: &anyhow::Error) {
        eprintln!("!!! ({id}) FAILED: {error:#}");
        let row = self.push(id, what, format!("**failed**: {error:#}"));
        row.verdict = Verdict::Failed;
    }

    fn markdown(&self, settings: &Settings) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "### tradegraph HTTP load benchmark (`cargo bench --bench http_load`)\n"
        );
        for (name, value) in &self.environment {
            let _ = writeln!(out, "- {name}: {value}");
        }
        let _ = writeln!(
            out,
            "- load: closed loop, {} keep-alive HTTP/1.1 connections, {} s warm-up then {} s measured; \
             generator on {} thread(s) ({ORDER_CONNECTIONS} connections for (6)/(6b))\n- **the load generator \
             (and for (3)/(4)/(6) PostgreSQL and pgbench) \
             share the machine's cores with the server**: absolute numbers are lower than on separate \
             machines",
            settings.connections,
            settings.warmup.as_secs(),
            settings.measure.as_secs(),
            settings.client_threads,
        );
        let overrides = server_overrides();
        if !overrides.is_empty() {
            let list: Vec<String> = overrides
                .iter()
                .map(|(k, v)| format!("`{k}={v}`"))
                .collect();
            let _ = writeln!(
                out,
                "- server settings changed from the defaults: {}",
                list.join(", ")
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| # | Measurement | Result | p50 | p99 | Errors | Compared with | Target | Met? |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for row in &self.rows {
            let verdict = match row.verdict {
                Verdict::Met => "yes",
                Verdict::Missed => "**no**",
                Verdict::NoTarget => "—",
                Verdict::Skipped => "skipped",
                Verdict::Failed => "**failed**",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.id,
                row.what,
                row.result.replace('|', "\\|").replace('\n', " "),
                row.p50,
                row.p99,
                row.errors,
                row.comparison,
                row.target,
                verdict
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out);
            for note in &self.notes {
                let _ = writeln!(out, "- {}", note.replace('\n', " "));
            }
        }
        out
    }
}

fn format_latency(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1e6 {
        format!("{:.2} ms", micros / 1000.0)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

fn progress(message: &str) {
    eprintln!("http_load: {message}");
}

/// The machine, as far as the program can see it.
async fn environment() -> Vec<(&'static str, String)> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".to_owned());
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let rustc = tokio::process::Command::new("rustc")
        .arg("--version")
        .output()
        .await
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown (rustc not on PATH)".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    vec![
        ("cores (available_parallelism)", cores.to_string()),
        ("CPU", cpu),
        ("RAM", memory),
        ("OS", format!("{os}, Linux {kernel}")),
        ("rustc", rustc),
    ]
}
