//! The `tradegraph` binary as an operator runs it: logs that never contain secrets,
//! graceful shutdown on SIGTERM, and the `schema` command.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Auth, TestApp, Ws, PASSWORD};

/// A server process whose output is captured line by line.
pub struct Server {
    child: Child,
    pub address: String,
    output: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(extra: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tradegraph"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("BIND_ADDR", "127.0.0.1:0")
            .env(
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
            )
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let (output, tx) = (output.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut all) = output.lock() {
                        all.push_str(&line);
                        all.push('\n');
                    }
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let address = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(remaining)
                .expect("the server announces its address");
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                if let Some(address) = event["fields"]["address"].as_str() {
                    break address.to_owned();
                }
            }
        };
        Server {
            child,
            address,
            output,
            _dir: dir,
        }
    }

    fn app_client(&self) -> TestClient {
        TestClient {
            address: self.address.clone(),
            http: reqwest::Client::new(),
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TestClient {
    address: String,
    http: reqwest::Client,
}

impl TestClient {
    async fn gql(
        &self,
        query: &str,
        variables: serde_json::Value,
        token: Option<&str>,
    ) -> serde_json::Value {
        let mut request = self
            .http
            .post(format!("http://{}/graphql", self.address))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_secrets() {
    let jwt_secret = "log-test-jwt-secret-which-must-never-appear-0001";
    let admin_password = "admin passphrase that must stay hidden 77";
    let wrong_password = "a wrong password that must stay hidden";
    let server = Server::start(&[
        ("RUST_LOG", "trace"),
        ("JWT_SECRET", jwt_secret),
        ("ADMIN_EMAIL", "root@example.com"),
        ("ADMIN_PASSWORD", admin_password),
    ]);
    let client = server.app_client();
    let registered = client
        .gql(
            "mutation($i: RegisterInput!) { register(input: $i) { accessToken refreshToken user { id } } }",
            json!({"i": {"email": "logs@example.com", "password": PASSWORD, "displayName": "Logs"}}),
            None,
        )
        .await;
    let auth = Auth::from_payload(&registered["data"]["register"]).expect("registered");
    let refreshed = client
        .gql(
            "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken user { id } } }",
            json!({"t": auth.refresh}),
            None,
        )
        .await;
    let rotated = Auth::from_payload(&refreshed["data"]["refreshSession"]).expect("refreshed");
    client
        .gql("{ me { id } }", json!({}), Some(&rotated.access))
        .await;
    let login = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }";
    client
        .gql(
            login,
            json!({"i": {"email": "logs@example.com", "password": wrong_password}}),
            None,
        )
        .await;
    client
        .gql(
            login,
            json!({"i": {"email": "root@example.com", "password": admin_password}}),
            None,
        )
        .await;
    client
        .gql("{ me { id } }", json!({}), Some("forged.token.value"))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let output = server.output();
    assert!(
        output.contains("request finished"),
        "logs were captured: {output}"
    );
    for (name, secret) in [
        ("password", PASSWORD),
        ("wrong password", wrong_password),
        ("admin password", admin_password),
        ("JWT secret", jwt_secret),
        ("access token", auth.access.as_str()),
        ("refresh token", auth.refresh.as_str()),
        ("rotated access token", rotated.access.as_str()),
        ("rotated refresh token", rotated.refresh.as_str()),
    ] {
        assert!(!output.contains(secret), "the {name} appears in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_websockets_with_1001_and_exits() {
    let mut server = Server::start(&[("SHUTDOWN_TIMEOUT_SECS", "5")]);
    let mut ws: Ws = TestApp::connect_websocket(&server.address, "graphql-transport-ws").await;
    ws.init(json!({})).await;
    ws.send(json!({"id": "t", "type": "subscribe", "payload": {"query": "subscription { serverTime }"}}))
        .await;
    assert_eq!(ws.next_json().await["type"], "next");
    let started = Instant::now();
    server.terminate();
    loop {
        match ws.next().await {
            crate::helpers::Frame::Json(message) => assert_eq!(message["type"], "next"),
            crate::helpers::Frame::Close(code, _) => {
                assert_eq!(code, 1001);
                break;
            }
            crate::helpers::Frame::Ended => panic!("closed without 1001"),
        }
    }
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "clean exit: {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(server.output().contains("tradegraph stopped"));
}

#[test]
fn production_refuses_to_start_without_a_jwt_secret() {
    let output = Command::new(env!("CARGO_BIN_EXE_tradegraph"))
        .env_clear()
        .env("APP_ENV", "production")
        .output()
        .expect("binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET is required"), "{stderr}");
}
