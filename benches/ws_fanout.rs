//! WebSocket fan-out benchmark: many subscribers on one server process.
//!
//! 1. A bare axum WebSocket echo server, in a child process: RSS before and after
//!    `BENCH_WS_CLIENTS` idle connections, for the floor any axum WebSocket pays.
//! 2. tradegraph (SQLite, no Redis), in a child process. `BENCH_WS_CLIENTS` users, each
//!    on its own WebSocket (`graphql-transport-ws`, signed in through
//!    `connection_init`), subscribed to `ticker(market: "ETH-USD")` and to their own
//!    `fills`. Then:
//!    a. memory per idle connection: server RSS before the connections and after all
//!    of them are subscribed and idle;
//!    b. latency: `BENCH_WS_TRADES` trades one after another, each filling one
//!    subscriber's resting order; for each, the time from the fill's `createdAt`
//!    (stamped inside the trade's transaction, so this slightly overstates
//!    commit-to-delivery) to the subscriber receiving it; every trade also changes the
//!    ticker every subscriber follows, pushed at most once per
//!    `BENCH_WS_TICKER_INTERVAL_MS` (the server's `TICKER_INTERVAL_MS`, default 250;
//!    0 pushes one per trade);
//!    c. saturation: `BENCH_WS_SAT_CONCURRENCY` trading loops for `BENCH_WS_SAT_SECS`
//!    seconds; messages delivered to all clients per second.
//!
//! Other work on the machine (a build, say) takes cores from the server and the
//! clients and skews every number, so the report says how busy the machine was just
//! before the run and how much CPU other processes took during each timed window.
//!
//! Run: `ulimit -n 20000; TRADEGRAPH_SKIP_PLAYGROUND=1 cargo bench --bench ws_fanout` (at
//! least `BENCH_WS_CLIENTS` + 512 descriptors).
//! Servers run as child processes (this program re-executed with `WS_FANOUT_ROLE`), so
//! their RSS is theirs alone and each process needs only one descriptor per
//! connection. Users and sessions are written straight into the database and their
//! tokens minted with the server's secret: 10,000 argon2 registrations would take longer
//! than the benchmark. Markdown goes to stdout, progress to stderr.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use sea_orm::{ActiveValue::Set, Database, EntityTrait};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const JWT_SECRET: &str = "ws-fanout-bench-secret-0123456789abcdef";
const ADMIN_EMAIL: &str = "bench-admin@example.com";
const ADMIN_PASSWORD: &str = "bench admin passphrase 0123456789";
const SUBSCRIBE_TICKER: &str =
    "subscription { ticker(market: \"ETH-USD\") { market lastPrice change24h volume24h at } }";
const SUBSCRIBE_FILLS: &str =
    "subscription { fills(afterSequence: 0) { id price quantity createdAt } }";
/// Connections opened at once while connecting.
const CONNECT_CONCURRENCY: usize = 256;
/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time used so far, in ticks: by the whole machine, this program and the server.
struct CpuSample {
    at: Instant,
    machine: u64,
    bench: u64,
    server: u64,
}

impl CpuSample {
    /// Best effort: zeros where `/proc` cannot be read.
    fn take(server_pid: Option<u32>) -> CpuSample {
        let process = |path: &str| -> u64 {
            let stat = std::fs::read_to_string(path).unwrap_or_default();
            // Fields after the command name: utime and stime are the 12th and 13th.
            let fields: Vec<&str> = stat
                .rfind(')')
                .and_then(|close| stat.get(close + 1..))
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            field(11).unwrap_or(0) + field(12).unwrap_or(0)
        };
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| {
                let line = stat.lines().find(|l| l.starts_with("cpu "))?.to_owned();
                let fields: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|f| f.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal: busy is all but idle
                // and iowait.
                let idle =
                    fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
                Some(fields.iter().take(8).sum::<u64>().saturating_sub(idle))
            })
            .unwrap_or(0);
        CpuSample {
            at: Instant::now(),
            machine,
            bench: process("/proc/self/stat"),
            server: server_pid.map_or(0, |pid| process(&format!("/proc/{pid}/stat"))),
        }
    }

    /// Cores used since `before` (1.0 = one core busy the whole window):
    /// (machine, this program, the server, everything else).
    fn since(&self, before: &CpuSample) -> (f64, f64, f64, f64) {
        let seconds = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let cores =
            |now: u64, then: u64| now.saturating_sub(then) as f64 / TICKS_PER_SECOND / seconds;
        let machine = cores(self.machine, before.machine);
        let bench = cores(self.bench, before.bench);
        let server = cores(self.server, before.server);
        (machine, bench, server, (machine - bench - server).max(0.0))
    }
}

struct Settings {
    clients: usize,
    trades: usize,
    sat_secs: u64,
    sat_concurrency: usize,
    ticker_interval_ms: u64,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let get = |name: &str, default: &str| -> anyhow::Result<u64> {
            let raw = std::env::var(name).unwrap_or_else(|_| default.to_owned());
            raw.parse()
                .with_context(|| format!("{name}={raw} is not a number"))
        };
        Ok(Settings {
            clients: get("BENCH_WS_CLIENTS", "10000")? as usize,
            trades: get("BENCH_WS_TRADES", "300")? as usize,
            sat_secs: get("BENCH_WS_SAT_SECS", "10")?,
            sat_concurrency: get("BENCH_WS_SAT_CONCURRENCY", "4")? as usize,
            ticker_interval_ms: get("BENCH_WS_TICKER_INTERVAL_MS", "250")?,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match std::env::var("WS_FANOUT_ROLE").as_deref() {
        Ok("echo") => runtime.block_on(echo_server()),
        Ok("server") => runtime.block_on(tradegraph_server()),
        _ => runtime.block_on(run()),
    }
}

/// Role: a bare axum WebSocket echo server.
async fn echo_server() -> anyhow::Result<()> {
    use axum::extract::ws::{WebSocket, WebSocketUpgrade};
    async fn echo(mut socket: WebSocket) {
        while let Some(Ok(message)) = socket.recv().await {
            if socket.send(message).await.is_err() {
                return;
            }
        }
    }
    let app = axum::Router::new().route(
        "/graphql",
        axum::routing::get(|upgrade: WebSocketUpgrade| async move {
            // The same buffer sizes as tradegraph's WebSocket, for a like-for-like floor.
            upgrade
                .protocols(["graphql-transport-ws"])
                .read_buffer_size(4 * 1024)
                .write_buffer_size(0)
                .on_upgrade(echo)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("PORT {}", listener.local_addr()?.port());
    axum::serve(listener, app).await?;
    Ok(())
}

/// Role: tradegraph, configured from the environment like the binary.
async fn tradegraph_server() -> anyhow::Result<()> {
    let config = tradegraph::Config::from_env()?;
    let app = tradegraph::App::build(config).await?;
    println!("PORT {}", app.port());
    app.run_until_stopped().await
}

/// Starts this program in `role`; returns the child and the port it listens on.
async fn spawn_role(role: &str, env: &[(&str, String)]) -> anyhow::Result<(Child, u16)> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .env("WS_FANOUT_ROLE", role)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let port = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(port) = line.strip_prefix("PORT ") {
                return Ok::<u16, anyhow::Error>(port.trim().parse()?);
            }
        }
        bail!("{role} exited before listening")
    })
    .await
    .context("server start timed out")??;
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, port))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_ws(port: u16) -> anyhow::Result<Ws> {
    let mut request = format!("ws://127.0.0.1:{port}/graphql").into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(ws)
}

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(text.as_str())?),
            Some(Ok(Message::Close(frame))) => bail!("closed: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Opens `count` connections with `open`, `CONNECT_CONCURRENCY` at a time.
async fn open_many<F, Fut, T>(count: usize, open: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut opened = Vec::with_capacity(count);
    let mut pending = JoinSet::new();
    for i in 0..count {
        if pending.len() >= CONNECT_CONCURRENCY {
            if let Some(done) = pending.join_next().await {
                opened.push(done??);
            }
        }
        pending.spawn(open(i));
    }
    while let Some(done) = pending.join_next().await {
        opened.push(done??);
    }
    Ok(opened)
}

async fn settle_rss(pid: u32) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    rss_kib(pid)
}

/// Part 1: the bare axum WebSocket's memory per idle connection, in KiB.
async fn echo_memory(clients: usize) -> anyhow::Result<f64> {
    let (child, port) = spawn_role("echo", &[]).await?;
    let pid = child.id().context("echo pid")?;
    // One connection first, so lazily allocated runtime state is in the baseline.
    let mut warm = open_ws(port).await?;
    warm.send(Message::Text("warm".into())).await?;
    next_ws_any(&mut warm).await?;
    let before = settle_rss(pid).await?;
    let sockets = open_many(clients, |_| async move {
        let mut ws = open_ws(port).await?;
        ws.send(Message::Text("hello".into())).await?;
        next_ws_any(&mut ws).await?;
        Ok(ws)
    })
    .await?;
    let after = settle_rss(pid).await?;
    eprintln!(
        "echo: {} connections, RSS {before} KiB -> {after} KiB",
        sockets.len()
    );
    drop(sockets);
    drop(child);
    Ok((after.saturating_sub(before)) as f64 / clients as f64)
}

async fn next_ws_any(ws: &mut Ws) -> anyhow::Result<()> {
    match ws.next().await {
        Some(Ok(_)) => Ok(()),
        Some(Err(error)) => Err(error.into()),
        None => bail!("echo connection ended"),
    }
}

struct Http {
    client: reqwest::Client,
    url: String,
}

impl Http {
    async fn gql(
        &self,
        query: &str,
        variables: Value,
        token: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .post(&self.url)
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let body: Value = request.send().await?.json().await?;
        if !body["errors"].is_null() {
            bail!("GraphQL error: {body}");
        }
        Ok(body["data"].clone())
    }

    async fn place(
        &self,
        token: &str,
        side: &str,
        price: &str,
        quantity: &str,
    ) -> anyhow::Result<()> {
        self.gql(
            "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id } }",
            json!({"i": {"market": "ETH-USD", "side": side, "type": "LIMIT", "price": price, "quantity": quantity}}),
            Some(token),
        )
        .await
        .map(|_| ())
    }

    async fn deposit(
        &self,
        admin: &str,
        user: Uuid,
        asset: &str,
        amount: &str,
    ) -> anyhow::Result<()> {
        self.gql(
            "mutation($i: CreditDepositInput!) { creditDeposit(input: $i) { id } }",
            json!({"i": {"userId": user, "asset": asset, "amount": amount, "reference": Uuid::new_v4().to_string()}}),
            Some(admin),
        )
        .await
        .map(|_| ())
    }
}

/// Writes `count` users with one session each; returns (user id, access token).
async fn bench_users(database_url: &str, count: usize) -> anyhow::Result<Vec<(Uuid, String)>> {
    let db = Database::connect(database_url).await?;
    let keys =
        tradegraph::auth::jwt::JwtKeys::new(JWT_SECRET.as_bytes(), Duration::from_secs(24 * 3600));
    let now = chrono::Utc::now();
    let mut users = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let mut user_rows = Vec::new();
        let mut session_rows = Vec::new();
        for i in chunk {
            let (user_id, session_id) = (Uuid::now_v7(), Uuid::now_v7());
            user_rows.push(entity::users::ActiveModel {
                id: Set(user_id),
                email: Set(format!("bench-{i}-{user_id}@example.com")),
                display_name: Set(format!("Bench {i}")),
                password_hash: Set("!bench: no password".into()),
                roles: Set(String::new()),
                two_factor_enabled: Set(false),
                kyc_tier: Set("UNVERIFIED".into()),
                anti_phishing_code: Set(None),
                deleted_at: Set(None),
                rate_limit_tier: Set(None),
                password_changed_at: Set(now),
                created_at: Set(now),
                updated_at: Set(now),
            });
            session_rows.push(entity::sessions::ActiveModel {
                id: Set(session_id),
                user_id: Set(user_id),
                device: Set("ws_fanout bench".into()),
                user_agent: Set("ws_fanout".into()),
                ip: Set("127.0.0.1".into()),
                created_at: Set(now),
                last_seen_at: Set(now),
                expires_at: Set(now + chrono::Duration::days(1)),
                revoked_at: Set(None),
                revoked_reason: Set(None),
            });
            let (token, _) = keys.issue(user_id, session_id, now)?;
            users.push((user_id, token));
        }
        entity::users::Entity::insert_many(user_rows)
            .exec_without_returning(&db)
            .await?;
        entity::sessions::Entity::insert_many(session_rows)
            .exec_without_returning(&db)
            .await?;
    }
    Ok(users)
}

/// What all subscriber tasks observed.
#[derive(Default)]
struct Observed {
    tickers: AtomicU64,
    fills: AtomicU64,
    errors: AtomicU64,
    /// Milliseconds from a fill's `createdAt` to its arrival.
    fill_latency_ms: Mutex<Vec<(chrono::DateTime<chrono::Utc>, f64)>>,
}

/// Signs in, subscribes to the ticker and the user's fills, and waits for the first
/// ticker (proof the connection is live).
async fn subscriber(port: u16, token: String) -> anyhow::Result<Ws> {
    let mut ws = open_ws(port).await?;
    let init =
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}});
    ws.send(Message::Text(init.to_string().into())).await?;
    let ack = next_json(&mut ws).await?;
    if ack["type"] != "connection_ack" {
        bail!("no ack: {ack}");
    }
    for (id, query) in [("t", SUBSCRIBE_TICKER), ("f", SUBSCRIBE_FILLS)] {
        let subscribe = json!({"id": id, "type": "subscribe", "payload": {"query": query}});
        ws.send(Message::Text(subscribe.to_string().into())).await?;
    }
    let first = next_json(&mut ws).await?;
    if first["id"] != "t" {
        bail!("expected a ticker first: {first}");
    }
    Ok(ws)
}

/// Reads one subscriber's messages for as long as the connection lives.
async fn observe(mut ws: Ws, observed: Arc<Observed>) {
    while let Ok(message) = next_json(&mut ws).await {
        match (message["type"].as_str(), message["id"].as_str()) {
            (Some("next"), Some("t")) => {
                observed.tickers.fetch_add(1, Ordering::Relaxed);
            }
            (Some("next"), Some("f")) => {
                let now = chrono::Utc::now();
                observed.fills.fetch_add(1, Ordering::Relaxed);
                let created = message["payload"]["data"]["fills"]["createdAt"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                if let Some(created) = created.map(|c| c.with_timezone(&chrono::Utc)) {
                    let ms = (now - created).num_microseconds();
                    if let (Some(us), Ok(mut all)) = (ms, observed.fill_latency_ms.lock()) {
                        all.push((created, us as f64 / 1000.0));
                    }
                }
            }
            _ => {
                observed.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("unexpected message: {message}");
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    if let Some(limit) = open_files_limit() {
        let needed = settings.clients as u64 + 512;
        if limit < needed {
            bail!(
                "open files limit {limit} is below the {needed} this run needs: run `ulimit -n 65536` first \
                 (or set BENCH_WS_CLIENTS lower)"
            );
        }
    }
    let clients = settings.clients;
    let quiet = CpuSample::take(None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (busy_before, _, _, _) = CpuSample::take(None).since(&quiet);
    if busy_before > 0.25 {
        eprintln!(
            "warning: the machine is already {busy_before:.2} cores busy: results will be off"
        );
    }
    eprintln!("part 1: bare axum WebSocket echo, {clients} idle connections");
    let echo_kib = echo_memory(clients).await?;

    eprintln!("part 2: tradegraph, {clients} subscribers");
    let dir = tempfile::tempdir()?;
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let env = vec![
        ("DATABASE_URL", database_url.clone()),
        ("BIND_ADDR", "127.0.0.1:0".to_owned()),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        ("ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ("RATE_LIMIT_PER_MINUTE", "0".to_owned()),
        ("WS_INIT_TIMEOUT_SECS", "120".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("REDIS_URL", String::new()),
        (
            "TICKER_INTERVAL_MS",
            settings.ticker_interval_ms.to_string(),
        ),
    ];
    let (server, port) = spawn_role("server", &env).await?;
    let pid = server.id().context("server pid")?;
    let http = Http {
        client: reqwest::Client::new(),
        url: format!("http://127.0.0.1:{port}/graphql"),
    };
    let admin = http
        .gql(
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            json!({"i": {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}}),
            None,
        )
        .await?["login"]["accessToken"]
        .as_str()
        .context("admin token")?
        .to_owned();
    let users = bench_users(&database_url, clients + 1).await?;
    let (taker_id, taker) = users[clients].clone();
    http.deposit(&admin, taker_id, "USD", "100000000").await?;
    let traders = settings.trades.min(clients).max(1);
    for (user, _) in users.iter().take(traders) {
        http.deposit(&admin, *user, "ETH", "1000").await?;
    }
    // A first trade, so the market has a price and the ticker task has run once.
    http.place(&users[0].1, "SELL", "2000", "0.01").await?;
    http.place(&taker, "BUY", "2000", "0.01").await?;

    // One subscriber first, so the ticker's shared state is in the baseline.
    let warm = subscriber(port, users[clients - 1].1.clone()).await?;
    let before = settle_rss(pid).await?;
    let started = Instant::now();
    // The makers' connections live on a runtime of their own, so that the time a fill
    // takes to arrive is not the time this program takes to read ten thousand tickers
    // before it (ten thousand dashboards are not on one machine).
    let fills_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fill-observer")
        .enable_all()
        .build()?;
    let fills_handle = fills_runtime.handle().clone();
    let sockets = open_many(clients - 1, |i| {
        let token = users[i].1.clone();
        let handle = fills_handle.clone();
        async move {
            if i < traders {
                let ws = handle.spawn(subscriber(port, token)).await??;
                Ok((i, ws))
            } else {
                Ok((i, subscriber(port, token).await?))
            }
        }
    })
    .await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let after = settle_rss(pid).await?;
    let per_connection = (after.saturating_sub(before)) as f64 / (clients - 1) as f64;
    eprintln!(
        "tradegraph: {clients} subscribers in {connect_secs:.1} s, RSS {before} KiB -> {after} KiB"
    );

    let observed = Arc::new(Observed::default());
    let mut readers = JoinSet::new();
    for (i, ws) in sockets
        .into_iter()
        .chain(std::iter::once((clients - 1, warm)))
    {
        if i < traders {
            readers.spawn_on(observe(ws, observed.clone()), &fills_handle);
        } else {
            readers.spawn(observe(ws, observed.clone()));
        }
    }

    eprintln!("part 2b: {traders} trades one after another");
    let latency_window = CpuSample::take(Some(pid));
    // The first subscriber's replay of the warm-up fill is not a live delivery.
    let live_from = chrono::Utc::now();
    for (_, token) in users.iter().take(traders) {
        http.place(token, "SELL", "2000", "0.01").await?;
        http.place(&taker, "BUY", "2000", "0.01").await?;
    }
    // Let the last deliveries land.
    let deadline = Instant::now() + Duration::from_secs(30);
    // One more than the trades: the warm-up fill, replayed to its maker on subscribing.
    while observed.fills.load(Ordering::Relaxed) < traders as u64 + 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies: Vec<f64> = observed
        .fill_latency_ms
        .lock()
        .map(|all| {
            all.iter()
                .filter(|(created, _)| *created >= live_from)
                .map(|(_, ms)| *ms)
                .collect()
        })
        .unwrap_or_default();
    latencies.sort_by(f64::total_cmp);
    let maker_fills = latencies.len();
    let latency_cpu = CpuSample::take(Some(pid)).since(&latency_window);

    eprintln!(
        "part 2c: saturation, {} trading loops for {} s",
        settings.sat_concurrency, settings.sat_secs
    );
    let delivered =
        |o: &Observed| o.tickers.load(Ordering::Relaxed) + o.fills.load(Ordering::Relaxed);
    let start_count = delivered(&observed);
    let trades_done = Arc::new(AtomicU64::new(0));
    let window = Duration::from_secs(settings.sat_secs);
    let saturation_window = CpuSample::take(Some(pid));
    let started = Instant::now();
    let mut loops = JoinSet::new();
    for worker in 0..settings.sat_concurrency {
        let (http, taker, makers, done) = (
            Http {
                client: http.client.clone(),
                url: http.url.clone(),
            },
            taker.clone(),
            users
                .iter()
                .take(traders)
                .skip(worker)
                .step_by(settings.sat_concurrency.max(1))
                .map(|(_, t)| t.clone())
                .collect::<Vec<_>>(),
            trades_done.clone(),
        );
        loops.spawn(async move {
            let mut i = 0;
            while started.elapsed() < window && !makers.is_empty() {
                http.place(&makers[i % makers.len()], "SELL", "2000", "0.01")
                    .await?;
                http.place(&taker, "BUY", "2000", "0.01").await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(done) = loops.join_next().await {
        done??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sat_delivered = delivered(&observed) - start_count;
    let saturation_cpu = CpuSample::take(Some(pid)).since(&saturation_window);
    let sat_trades = trades_done.load(Ordering::Relaxed);
    let peak_rss = rss_kib(pid)?;
    readers.abort_all();
    fills_runtime.shutdown_background();
    drop(server);

    println!("## WebSocket fan-out: `benches/ws_fanout.rs`\n");
    println!("| measure | value |");
    println!("| --- | --- |");
    println!("| subscribers (each: `ticker` + own `fills`) | {clients} |");
    println!("| connect + init + 2 subscriptions, all of them | {connect_secs:.1} s |");
    println!("| bare axum WebSocket, RSS per idle connection | {echo_kib:.1} KiB |");
    println!("| tradegraph, RSS per idle subscribed connection | {per_connection:.1} KiB |");
    println!(
        "| fill `createdAt` to delivery, p50 / p99 / max ({maker_fills} fills, one trade at a time; the ticker to all {clients} at most every {} ms) | {:.1} / {:.1} / {:.1} ms |",
        settings.ticker_interval_ms,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| saturation: trades/s ({} trading loops, {elapsed:.0} s) | {:.0} |",
        settings.sat_concurrency,
        sat_trades as f64 / elapsed
    );
    println!(
        "| saturation: messages delivered/s (tickers + fills, all clients) | {:.0} |",
        sat_delivered as f64 / elapsed
    );
    println!(
        "| server RSS at the end | {:.0} MiB |",
        peak_rss as f64 / 1024.0
    );
    println!(
        "| unexpected messages (errors) | {} |",
        observed.errors.load(Ordering::Relaxed)
    );
    println!(
        "| machine busy just before the run (near 0 for trustworthy numbers) | {busy_before:.2} cores |"
    );
    for (window, (machine, bench, server, rest)) in
        [("latency", latency_cpu), ("saturation", saturation_cpu)]
    {
        println!(
            "| CPU during the {window} window: server / clients (this program) / other processes | {server:.2} / {bench:.2} / {rest:.2} cores of {machine:.2} busy |"
        );
    }
    Ok(())
}
