//! A minimal SMTP server on 127.0.0.1 that keeps what it receives, so tests can read
//! the e-mails tradegraph sends through its real SMTP path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub struct FakeSmtp {
    pub url: String,
    messages: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSmtp {
    pub async fn start() -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("smtp bind");
        let port = listener.local_addr().expect("smtp addr").port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let store = messages.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, store.clone()));
            }
        });
        FakeSmtp {
            url: format!("smtp://127.0.0.1:{port}"),
            messages,
            task,
        }
    }

    /// Every message received so far, decoded from quoted-printable soft breaks.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The first message (in arrival order) that `matches`, waiting up to 20 s.
    pub async fn wait_for(&self, matches: impl Fn(&str) -> bool) -> String {
        for _ in 0..200 {
            if let Some(found) = self.messages().into_iter().find(|m| matches(m)) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no matching e-mail arrived; got {:#?}", self.messages());
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: TcpStream, store: Arc<Mutex<Vec<String>>>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    if write.write_all(b"220 fake ESMTP\r\n").await.is_err() {
        return;
    }
    let mut data: Option<String> = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(body) = data.as_mut() {
            if line == "." {
                let text = std::mem::take(body).replace("=\n", "").replace("=3D", "=");
                if let Ok(mut messages) = store.lock() {
                    messages.push(text);
                }
                data = None;
                let _ = write.write_all(b"250 queued\r\n").await;
            } else {
                body.push_str(line.strip_prefix('.').unwrap_or(&line));
                body.push('\n');
            }
            continue;
        }
        let verb = line.to_ascii_uppercase();
        let reply: &[u8] = if verb.starts_with("EHLO") {
            b"250-fake\r\n250 8BITMIME\r\n"
        } else if verb.starts_with("DATA") {
            data = Some(String::new());
            b"354 go on\r\n"
        } else if verb.starts_with("QUIT") {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"250 ok\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
