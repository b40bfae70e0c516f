//! `TestApp`: the real server on `127.0.0.1:0` with a database of its own, and helpers
//! that talk to it only through the public HTTP and WebSocket API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tradegraph::{App, Config};

pub const PASSWORD: &str = "correct horse battery staple 42";
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const KYC_WEBHOOK_SECRET: &str = "test-kyc-webhook-secret-0123456789";

/// Which database a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1" || v == "true")
}

/// The Redis URL for tests on PostgreSQL, when Redis is to be used.
pub fn redis_url() -> Option<String> {
    std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A database created for one test and dropped after it.
pub enum TestDb {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { name: String },
}

impl TestDb {
    /// Creates the database; `None` when PostgreSQL is unreachable and not required
    /// (the test runner script says loudly when it is missing).
    async fn create(backend: Backend) -> Option<(TestDb, String)> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                Some((TestDb::Sqlite { _dir: dir }, url))
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let conn = match sea_orm::Database::connect(admin.clone()).await {
                    Ok(conn) => conn,
                    Err(error) => {
                        if required("TRADEGRAPH_REQUIRE_POSTGRES") {
                            panic!("PostgreSQL is required but unreachable at {admin}: {error}");
                        }
                        eprintln!("!!! SKIPPED on PostgreSQL: unreachable at {admin}: {error}");
                        return None;
                    }
                };
                static COUNTER: AtomicU32 = AtomicU32::new(0);
                let name = format!(
                    "tg_test_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    uuid::Uuid::new_v4()
                        .simple()
                        .to_string()
                        .get(..8)
                        .unwrap_or("x")
                );
                use sea_orm::ConnectionTrait;
                conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let url = match admin.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{name}"),
                    None => panic!("TEST_POSTGRES_URL must end with a database name"),
                };
                Some((TestDb::Postgres { name }, url))
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { name } = self {
            let name = name.clone();
            // Drop runs outside async context guarantees; use a private runtime.
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    use sea_orm::ConnectionTrait;
                    if let Ok(conn) = sea_orm::Database::connect(postgres_admin_url()).await {
                        let _ = conn
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub address: String,
    /// The database this server uses, so a second server can share it.
    pub database_url: String,
    /// The server's event bus, to observe what it publishes.
    pub events: tradegraph::events::EventBus,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _db: TestDb,
}

/// A short token derived from a database URL: servers sharing a database share it.
fn tokens_of(url: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    url.hash(&mut hasher);
    format!("{:x}", hasher.finish())
}

/// The variables every test server starts with; tests add or override.
pub fn base_vars(database_url: &str) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("BIND_ADDR", "127.0.0.1:0"),
        ("JWT_SECRET", JWT_SECRET),
        ("DATABASE_MAX_CONNECTIONS", "8"),
        ("SHUTDOWN_TIMEOUT_SECS", "5"),
        // Production refuses to start without these; development has defaults.
        (
            "KYC_ENCRYPTION_KEY",
            "6b79632d746573742d6b65792d6b79632d746573742d6b65792d6b79632d2121",
        ),
        ("KYC_WEBHOOK_SECRET", KYC_WEBHOOK_SECRET),
        (
            "SANCTIONS_LIST_PATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/sanctions_sample.csv"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    vars.insert("DATABASE_URL".into(), database_url.to_owned());
    vars
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, &[]).await
    }

    /// Starts a server with a first admin (from `ADMIN_EMAIL`/`ADMIN_PASSWORD`), signed in.
    pub async fn spawn_with_admin(backend: Backend) -> Option<(TestApp, Auth)> {
        Self::spawn_with_admin_and(backend, &[]).await
    }

    /// The same, with extra environment variables.
    pub async fn spawn_with_admin_and(
        backend: Backend,
        extra: &[(&str, &str)],
    ) -> Option<(TestApp, Auth)> {
        let admin_email = email("admin");
        let mut vars = vec![
            ("ADMIN_EMAIL", admin_email.as_str()),
            ("ADMIN_PASSWORD", PASSWORD),
        ];
        vars.extend_from_slice(extra);
        let app = Self::spawn_with(backend, &vars).await?;
        let login = app.login(&admin_email, PASSWORD).await;
        let admin = Auth::from_payload(&login["data"]["login"])
            .unwrap_or_else(|| panic!("the admin signs in: {login}"));
        Some((app, admin))
    }

    /// Starts a server with extra environment variables.
    pub async fn spawn_with(backend: Backend, extra: &[(&str, &str)]) -> Option<TestApp> {
        let (db, url) = TestDb::create(backend).await?;
        let (address, stop, server, events) = Self::start(backend, &url, extra).await;
        Some(TestApp {
            address,
            events,
            database_url: url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            stop: Some(stop),
            server: Some(server),
            _db: db,
        })
    }

    async fn start(
        backend: Backend,
        url: &str,
        extra: &[(&str, &str)],
    ) -> (
        String,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
        tradegraph::events::EventBus,
    ) {
        let mut vars = base_vars(url);
        if backend == Backend::Postgres {
            if let Some(redis) = redis_url() {
                vars.insert("REDIS_URL".into(), redis);
                // Tests run in parallel on one Redis: each server pair gets its own channel.
                let channel = format!("tradegraph:test:{}", tokens_of(url));
                vars.insert("REDIS_EVENTS_CHANNEL".into(), channel);
            }
        }
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_vars(vars).expect("test config is valid");
        let app = App::build(config).await.expect("server builds");
        let address = format!("127.0.0.1:{}", app.port());
        let events = app.state().events.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        (address, stop, server, events)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// POSTs a GraphQL request and returns (status, body).
    pub async fn post(&self, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .header("content-type", "application/json")
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Runs a query or mutation; returns the whole response body.
    pub async fn gql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        self.post(json!({"query": query, "variables": variables}), token)
            .await
            .1
    }

    /// Registers a user and returns its tokens.
    pub async fn register(&self, email: &str) -> Auth {
        let body = self
            .gql(
                "mutation($input: RegisterInput!) { register(input: $input) { accessToken refreshToken user { id email } } }",
                json!({"input": {"email": email, "password": PASSWORD, "displayName": "Tester"}}),
                None,
            )
            .await;
        Auth::from_payload(&body["data"]["register"])
            .unwrap_or_else(|| panic!("register failed: {body}"))
    }

    pub async fn login(&self, email: &str, password: &str) -> Value {
        self.gql(
            "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken user { id email } } }",
            json!({"input": {"email": email, "password": password}}),
            None,
        )
        .await
    }

    /// The value of a metric without labels on `/metrics`; 0 when it is not there.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Opens a WebSocket to `/graphql` speaking `protocol`.
    pub async fn websocket(&self, protocol: &str) -> Ws {
        Self::connect_websocket(&self.address, protocol).await
    }

    /// Opens a WebSocket to the server at `address`.
    pub async fn connect_websocket(address: &str, protocol: &str) -> Ws {
        Self::try_connect_websocket(address, protocol)
            .await
            .expect("websocket connects")
    }

    /// Opens a WebSocket, or returns the handshake error.
    pub async fn try_connect_websocket(
        address: &str,
        protocol: &str,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("ws://{address}/graphql")
            .into_client_request()
            .expect("ws request");
        if !protocol.is_empty() {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocol.parse().expect("header"));
        }
        let (stream, response) = tokio_tungstenite::connect_async(request).await?;
        let selected = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Ws { stream, selected })
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

#[derive(Clone, Debug)]
pub struct Auth {
    pub access: String,
    pub refresh: String,
    pub user_id: String,
}

impl Auth {
    pub fn from_payload(payload: &Value) -> Option<Auth> {
        Some(Auth {
            access: payload["accessToken"].as_str()?.to_owned(),
            refresh: payload["refreshToken"].as_str()?.to_owned(),
            user_id: payload["user"]["id"].as_str()?.to_owned(),
        })
    }
}

/// The `extensions.code` of the first error.
pub fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

/// A unique e-mail address for one test.
pub fn email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Ws {
    pub stream: WsStream,
    pub selected: Option<String>,
}

/// What the server sent next.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    Close(u16, String),
    Ended,
}

impl Ws {
    pub async fn send(&mut self, value: Value) {
        self.stream
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("ws send");
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("ws send");
    }

    /// The next JSON message or close frame, skipping pings; panics after `secs`.
    pub async fn next_within(&mut self, secs: u64) -> Frame {
        let deadline = Duration::from_secs(secs);
        tokio::time::timeout(deadline, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(text))) => {
                        return Frame::Json(
                            serde_json::from_str(text.as_str()).expect("json message"),
                        )
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return match frame {
                            Some(f) => Frame::Close(f.code.into(), f.reason.to_string()),
                            None => Frame::Close(1005, String::new()),
                        }
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Frame::Ended,
                }
            }
        })
        .await
        .expect("a websocket message in time")
    }

    pub async fn next(&mut self) -> Frame {
        self.next_within(10).await
    }

    pub async fn next_json(&mut self) -> Value {
        match self.next().await {
            Frame::Json(value) => value,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    pub async fn expect_close(&mut self, code: u16) -> String {
        match self.next().await {
            Frame::Close(got, reason) => {
                assert_eq!(got, code, "close code (reason: {reason})");
                reason
            }
            other => panic!("expected close {code}, got {other:?}"),
        }
    }

    /// Sends `connection_init` and expects the ack.
    pub async fn init(&mut self, payload: Value) {
        self.send(json!({"type": "connection_init", "payload": payload}))
            .await;
        let ack = self.next_json().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
    }
}

/// Runs a test body against SQLite and against PostgreSQL (with Redis when configured),
/// each as its own test so they run in parallel.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::helpers::Backend;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(Backend::Postgres).await
                }
            }
        )*
    };
}
