//! GraphQL over WebSocket on `/graphql`: the `graphql-transport-ws` protocol of the
//! graphql-ws library, followed to the letter of its PROTOCOL.md, and the legacy
//! `graphql-ws` protocol of subscriptions-transport-ws for older clients.
//!
//! Owned here rather than taken from the library so that authentication happens in
//! `connection_init`, every protocol violation closes with its specified code (4400,
//! 4401, 4403, 4406, 4408, 4409, 4429), pre-execution errors arrive as `error`
//! messages, subscriptions per connection are capped, shutdown closes with 1001, and
//! subscriptions that are the same for everybody (tickers) run once for all their
//! subscribers (see [`super::shared_streams`]).
//!
//! Each connection has a bounded outbox. A client that reads slowly fills it, and then
//! its subscriptions wait (falling behind on the bus, which they handle alone); one
//! that takes nothing for `WS_WRITE_TIMEOUT_MS` is cut off. Nobody else waits for it.
//!
//! Two tasks write to a socket: the connection loop writes what is the connection's own
//! (acks, private events, errors, ends), and, once it follows a shared execution, a
//! pusher on the shared streams' lower-priority runtime writes those results, so that a
//! ticker's ten thousand writes never stand in front of somebody's fill.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::Response as GqlResponse;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamMap;

use super::graphql::{is_request_error, nesting_depth};
use super::shared_streams::{self, End, Shared};
use super::{client, HttpState};
use crate::error::ApiError;
use crate::events::{Delivery, Feed, Topic};
use crate::graphql::context::RequestContext;
use crate::metrics::Metrics;
use crate::service::ClientInfo;

const TRANSPORT_WS: &str = "graphql-transport-ws";
const LEGACY_WS: &str = "graphql-ws";
/// How often the server checks the peer is alive with a WebSocket ping (and, for the
/// legacy protocol, sends its `ka` keep-alive), so idle proxies do not cut the line.
const KEEP_ALIVE: Duration = Duration::from_secs(25);
/// Initial read buffer of a WebSocket.
const WS_BUFFER: usize = 4 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    TransportWs,
    Legacy,
}

/// Accepts the upgrade, choosing the subprotocol. A client that names only protocols we
/// do not speak is accepted and then closed with 4406, as graphql-ws specifies.
pub fn upgrade(
    state: HttpState,
    upgrade: WebSocketUpgrade,
    headers: &HeaderMap,
    peer: SocketAddr,
    target: &str,
) -> Response {
    let requested_any = upgrade.requested_protocols().next().is_some();
    let upgrade = upgrade
        .protocols([TRANSPORT_WS, LEGACY_WS])
        .max_message_size(state.app.config.limits.max_body_bytes)
        // The library's defaults (128 KiB each way, allocated per connection) would
        // make ten thousand idle dashboards cost gigabytes; GraphQL messages are small,
        // and the buffers still grow for the occasional big one.
        .read_buffer_size(WS_BUFFER)
        .write_buffer_size(0);
    let protocol = match upgrade.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(LEGACY_WS) => Some(Protocol::Legacy),
        Some(_) => Some(Protocol::TransportWs),
        None if !requested_any => Some(Protocol::TransportWs),
        None => None,
    };
    let client = client::client_info(&state.app, headers, Some(peer));
    let target = target.to_owned();
    upgrade.on_upgrade(move |socket| async move {
        let _live = state.app.live_sockets.enter();
        let metrics = state.app.metrics.clone();
        metrics.websockets_open.inc();
        match protocol {
            Some(protocol) => {
                let (sink, stream) = socket.split();
                Connection::new(state, protocol, client, target, sink)
                    .run(stream)
                    .await
            }
            None => {
                let mut socket = socket;
                let _ = socket.send(close(4406, "Subprotocol not acceptable")).await;
            }
        }
        metrics.websockets_open.dec();
    })
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_owned()),
    }))
}

fn text(value: Json) -> Message {
    Message::Text(Utf8Bytes::from(value.to_string()))
}

/// A `next` (`data` for the legacy protocol) message around an already serialised
/// response, so a payload shared by many subscribers is not serialised again for each.
fn next_message(protocol: Protocol, id: &str, payload: &str) -> Message {
    let kind = match protocol {
        Protocol::TransportWs => "next",
        Protocol::Legacy => "data",
    };
    let id = Json::String(id.to_owned()).to_string();
    let mut message = String::with_capacity(id.len() + payload.len() + 32);
    message.push_str("{\"id\":");
    message.push_str(&id);
    message.push_str(",\"type\":\"");
    message.push_str(kind);
    message.push_str("\",\"payload\":");
    message.push_str(payload);
    message.push('}');
    Message::Text(Utf8Bytes::from(message))
}

fn complete_message(id: &str) -> Message {
    text(json!({"id": id, "type": "complete"}))
}

/// Why a write did not go out.
#[derive(Clone, Copy, Debug)]
enum WriteFailure {
    /// The connection is gone.
    Closed,
    /// The peer took nothing for the whole write timeout.
    Stalled,
}

/// The sending half of a connection's socket, written by the connection loop and by
/// the connection's pusher.
type Outlet = Arc<tokio::sync::Mutex<OutletState>>;

struct OutletState {
    sink: SplitSink<WebSocket, Message>,
    /// Why the first failed write failed: after it nothing goes out, whoever writes.
    failed: Option<WriteFailure>,
}

/// Writes one message, giving up when the peer takes nothing for `limit`.
async fn write(
    outlet: &Outlet,
    message: Message,
    limit: Duration,
    metrics: &Metrics,
) -> Result<(), WriteFailure> {
    let _pending = Pending::new(&metrics.websocket_writes_pending);
    let deadline = tokio::time::Instant::now() + limit;
    // The other writer holds the socket for one write only: when that takes the whole
    // limit, the peer is not reading, and the connection ends all the same.
    let Ok(mut outlet) = tokio::time::timeout_at(deadline, outlet.lock()).await else {
        return Err(WriteFailure::Stalled);
    };
    if let Some(failure) = outlet.failed {
        return Err(failure);
    }
    let failure = match tokio::time::timeout_at(deadline, outlet.sink.send(message)).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(_)) => WriteFailure::Closed,
        Err(_) => WriteFailure::Stalled,
    };
    outlet.failed = Some(failure);
    Err(failure)
}

/// What the connection loop does after handling one client message.
enum Step {
    Continue,
    Close(u16, String),
}

/// Work finished by a subscription, reported back to the connection loop.
enum Outgoing {
    Message(Message),
    Finished(String),
}

/// A running operation of the connection.
enum Operation {
    /// Executed by a task of its own, which sends through the outbox.
    Task(JoinHandle<()>),
    /// Following a shared execution, written by the connection's pusher.
    Shared,
}

/// What the connection loop tells its pusher.
enum Follow {
    Start(String, FollowStream),
    Stop(String),
}

/// What the connection loop has told its pusher and the pusher not yet taken. (A
/// channel would do, but costs two kilobytes per connection even when empty.)
#[derive(Default)]
struct Follows {
    pending: std::sync::Mutex<Vec<Follow>>,
    added: tokio::sync::Notify,
}

impl Follows {
    fn send(&self, follow: Follow) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(follow);
        self.added.notify_one();
    }

    async fn recv(&self) -> Vec<Follow> {
        loop {
            let taken =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if !taken.is_empty() {
                return taken;
            }
            self.added.notified().await;
        }
    }
}

/// A connection's pusher: the task writing the shared executions it follows.
struct Pusher {
    follows: Arc<Follows>,
    /// Ends with the write failure that ends the connection.
    task: JoinHandle<Option<WriteFailure>>,
}

struct Connection {
    state: HttpState,
    protocol: Protocol,
    client: ClientInfo,
    /// The upgrade request's path and query, which a signed `connection_init` covers.
    target: String,
    context: Option<RequestContext>,
    init_received: bool,
    operations: HashMap<String, Operation>,
    outlet: Outlet,
    /// Started by the first shared subscription: a task for all of the connection's,
    /// and none for a connection without any.
    pusher: Option<Pusher>,
    outbox_tx: mpsc::Sender<Outgoing>,
    outbox_rx: mpsc::Receiver<Outgoing>,
    write_timeout: Duration,
    /// Revocations of the signed-in user's sessions, to close when ours ends.
    revocations: Option<Feed>,
}

impl Connection {
    fn new(
        state: HttpState,
        protocol: Protocol,
        client: ClientInfo,
        target: String,
        sink: SplitSink<WebSocket, Message>,
    ) -> Self {
        let config = &state.app.config;
        let (outbox_tx, outbox_rx) = mpsc::channel(config.ws_outbox_capacity);
        let write_timeout = config.ws_write_timeout;
        Connection {
            state,
            protocol,
            client,
            target,
            context: None,
            init_received: false,
            operations: HashMap::new(),
            outlet: Arc::new(tokio::sync::Mutex::new(OutletState { sink, failed: None })),
            pusher: None,
            outbox_tx,
            outbox_rx,
            write_timeout,
            revocations: None,
        }
    }

    async fn run(mut self, mut stream: SplitStream<WebSocket>) {
        let init_deadline = tokio::time::sleep(self.state.app.config.ws_init_timeout);
        tokio::pin!(init_deadline);
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.tick().await;
        let mut shutdown = self.state.app.shutdown.clone();
        let limit = self.write_timeout;
        let metrics = self.state.app.metrics.clone();

        let closing: Option<(u16, String)> = loop {
            tokio::select! {
                incoming = stream.next() => {
                    let message = match incoming {
                        Some(Ok(message)) => message,
                        // The peer went away: nothing more to send.
                        Some(Err(_)) | None => break None,
                    };
                    let step = match message {
                        Message::Text(text) => Box::pin(self.on_text(text.as_str())).await,
                        Message::Binary(_) => Step::Close(4400, "Binary messages are not supported".into()),
                        Message::Ping(_) | Message::Pong(_) => Step::Continue,
                        Message::Close(_) => break None,
                    };
                    match step {
                        Step::Continue => {}
                        Step::Close(code, reason) => break Some((code, reason)),
                    }
                }
                Some(outgoing) = self.outbox_rx.recv() => {
                    let Some(message) = self.outgoing(outgoing) else { continue };
                    if let Err(failure) = write(&self.outlet, message, limit, &metrics).await {
                        break self.write_failed(failure);
                    }
                }
                failure = pusher_failure(&mut self.pusher) => break self.write_failed(failure),
                Some(delivery) = next_revocation(&mut self.revocations) => {
                    if let Some(ended) = Box::pin(self.credential_ended(delivery)).await {
                        break Some((4403, format!("Forbidden: the {ended} was revoked")));
                    }
                }
                _ = &mut init_deadline, if !self.init_received => {
                    break Some((4408, "Connection initialisation timeout".into()));
                }
                _ = keep_alive.tick() => {
                    let message = match self.protocol {
                        Protocol::Legacy if self.context.is_some() => text(json!({"type": "ka"})),
                        _ => Message::Ping(Default::default()),
                    };
                    if let Err(failure) = write(&self.outlet, message, limit, &metrics).await {
                        break self.write_failed(failure);
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break Some((1001, "Server is shutting down".into()));
                    }
                }
            }
        };

        for (_, operation) in self.operations.drain() {
            if let Operation::Task(task) = operation {
                task.abort();
            }
        }
        if let Some(pusher) = self.pusher.take() {
            // Not waited for: a write it has under way finishes first (it holds the
            // outlet), and whatever it might try after the close frame is refused.
            pusher.task.abort();
        }
        if let Some((code, reason)) = closing {
            // A peer that reads nothing must not hold the connection (or shutdown) open.
            let _ = tokio::time::timeout(limit, async {
                let mut outlet = self.outlet.lock().await;
                if outlet.failed.is_none() {
                    let _ = outlet.sink.send(close(code, &reason)).await;
                    let _ = outlet.sink.flush().await;
                }
            })
            .await;
        }
    }

    /// Follows a shared execution as operation `id`, starting the pusher if need be.
    fn follow_shared(&mut self, id: String, stream: FollowStream) {
        let pusher = match &mut self.pusher {
            Some(pusher) => pusher,
            None => {
                let follows = Arc::new(Follows::default());
                let task = self.state.shared.pushers().spawn(push_shared(
                    self.outlet.clone(),
                    follows.clone(),
                    self.outbox_tx.clone(),
                    self.write_timeout,
                    self.state.app.metrics.clone(),
                ));
                self.pusher.insert(Pusher { follows, task })
            }
        };
        pusher.follows.send(Follow::Start(id, stream));
    }

    /// The message to write for `outgoing`, after noting a finished operation.
    fn outgoing(&mut self, outgoing: Outgoing) -> Option<Message> {
        match outgoing {
            Outgoing::Message(message) => Some(message),
            Outgoing::Finished(id) => {
                self.operations.remove(&id);
                None
            }
        }
    }

    /// Stops operation `id`, if it runs.
    fn stop(&mut self, id: &str) {
        match self.operations.remove(id) {
            Some(Operation::Task(task)) => task.abort(),
            Some(Operation::Shared) => {
                if let Some(pusher) = &self.pusher {
                    pusher.follows.send(Follow::Stop(id.to_owned()));
                }
            }
            None => {}
        }
    }

    /// Ends the connection after a failed write: nothing more can be sent, not even a
    /// close frame (a peer that takes no data takes no control frame either).
    fn write_failed(&self, failure: WriteFailure) -> Option<(u16, String)> {
        if let WriteFailure::Stalled = failure {
            self.state.app.metrics.websocket_write_timeouts.inc();
            tracing::info!(
                ip = %self.client.ip,
                "closing a WebSocket whose client stopped reading"
            );
        }
        None
    }

    async fn on_text(&mut self, raw: &str) -> Step {
        let Ok(message) = serde_json::from_str::<Json>(raw) else {
            return Step::Close(4400, "Invalid message: not JSON".into());
        };
        let Some(kind) = message.get("type").and_then(Json::as_str) else {
            return Step::Close(4400, "Invalid message: missing type".into());
        };
        let id = message.get("id").and_then(Json::as_str).map(str::to_owned);
        let payload = message.get("payload").cloned().unwrap_or(Json::Null);
        match (self.protocol, kind) {
            (_, "connection_init") => self.on_init(payload).await,
            (Protocol::TransportWs, "ping") => {
                let mut pong = json!({"type": "pong"});
                if !payload.is_null() {
                    pong["payload"] = payload;
                }
                self.send(text(pong)).await;
                Step::Continue
            }
            (Protocol::TransportWs, "pong") => Step::Continue,
            (Protocol::TransportWs, "subscribe") | (Protocol::Legacy, "start") => {
                let Some(id) = id.filter(|id| !id.is_empty()) else {
                    return Step::Close(4400, "Invalid message: missing id".into());
                };
                self.on_subscribe(id, payload).await
            }
            (Protocol::TransportWs, "complete") | (Protocol::Legacy, "stop") => {
                if let Some(id) = id {
                    self.stop(&id);
                }
                Step::Continue
            }
            (Protocol::Legacy, "connection_terminate") => {
                Step::Close(1000, "Normal Closure".into())
            }
            (_, other) => Step::Close(4400, format!("Invalid message type `{}`", truncate(other))),
        }
    }

    async fn on_init(&mut self, payload: Json) -> Step {
        if self.init_received {
            return Step::Close(4429, "Too many initialisation requests".into());
        }
        self.init_received = true;
        let viewer = match authenticate(&self.state, &payload, &self.client, &self.target).await {
            Ok(viewer) => viewer,
            Err(error) => {
                if self.protocol == Protocol::Legacy {
                    let error = json!({"type": "connection_error", "payload": {"message": error.to_string()}});
                    self.send(text(error)).await;
                }
                return Step::Close(4403, "Forbidden".into());
            }
        };
        if let Some(viewer) = viewer
            .as_ref()
            .filter(|v| !v.session_id.is_nil() || v.api_key.is_some())
        {
            let topic = Topic::Sessions(viewer.user_id());
            self.revocations = Some(self.state.app.events.feed(topic, 8));
        }
        self.context = Some(RequestContext {
            viewer,
            client: self.client.clone(),
        });
        self.send(text(json!({"type": "connection_ack"}))).await;
        if self.protocol == Protocol::Legacy {
            self.send(text(json!({"type": "ka"}))).await;
        }
        Step::Continue
    }

    async fn on_subscribe(&mut self, id: String, payload: Json) -> Step {
        let Some(context) = self.context.clone() else {
            return Step::Close(4401, "Unauthorized".into());
        };
        if self.operations.contains_key(&id) {
            return Step::Close(
                4409,
                format!("Subscriber for {} already exists", truncate(&id)),
            );
        }
        let request = match serde_json::from_value::<async_graphql::Request>(payload) {
            Ok(request) => request,
            Err(_) => {
                return match self.protocol {
                    Protocol::TransportWs => {
                        Step::Close(4400, "Invalid message: bad subscribe payload".into())
                    }
                    Protocol::Legacy => {
                        let error =
                            ApiError::bad_input("payload", "the payload is not a GraphQL request");
                        self.send_errors(&id, vec![error.into_server_error()]).await;
                        Step::Continue
                    }
                };
            }
        };
        let limits = &self.state.app.config.limits;
        let refusal = if self.operations.len() >= self.state.app.config.ws_max_subscriptions {
            Some(ApiError::bad_input(
                "subscribe",
                format!(
                    "at most {} operations may run at once on one connection",
                    self.state.app.config.ws_max_subscriptions
                ),
            ))
        } else if nesting_depth(&request.query) > (limits.max_depth * 3).max(64) {
            Some(ApiError::QueryTooComplex(
                "the query nests brackets too deeply".into(),
            ))
        } else {
            let app = &self.state.app;
            let buckets = crate::ratelimit::request_buckets(
                &app.config.rate_limits,
                context.viewer.as_ref(),
                &self.client.ip,
            );
            app.rate_limiter
                .check(&buckets)
                .await
                .and_then(|d| d.retry_after_secs)
                .map(|retry_after_secs| ApiError::RateLimited { retry_after_secs })
        };
        if let Some(error) = refusal {
            self.send_errors(&id, vec![error.into_server_error()]).await;
            return Step::Continue;
        }

        let tx = self.outbox_tx.clone();
        let protocol = self.protocol;
        let metrics = self.state.app.metrics.clone();
        let task_id = id.clone();
        let operation = match shared_streams::shared_key(&request) {
            Some(key) => {
                // The result cannot depend on who asks (see `shared_streams`), so it
                // runs as nobody, once for every subscriber of the same document.
                let anonymous = RequestContext {
                    viewer: None,
                    client: self.client.clone(),
                };
                let schema = self.state.schema.clone();
                let shared = self
                    .state
                    .shared
                    .join(key, move || schema.execute_stream(request.data(anonymous)));
                let active = ActiveSubscription::new(&metrics);
                self.follow_shared(id.clone(), follow(shared, protocol, task_id, active));
                Operation::Shared
            }
            None => {
                let stream = self.state.schema.execute_stream(request.data(context));
                Operation::Task(tokio::spawn(async move {
                    let _active = ActiveSubscription::new(&metrics);
                    forward(stream, tx.clone(), protocol, &task_id).await;
                    let _ = tx.send(Outgoing::Finished(task_id)).await;
                }))
            }
        };
        self.operations.insert(id, operation);
        Step::Continue
    }

    /// Which credential of the connection a revocation (or a lost one: then the
    /// database decides) ended, if any: its session, or the API key it opened with.
    async fn credential_ended(&self, delivery: Delivery) -> Option<&'static str> {
        let viewer = self.context.as_ref().and_then(|c| c.viewer.as_ref())?;
        let app = &self.state.app;
        if let Some(access) = &viewer.api_key {
            let key_id = access.key.id;
            let ended = match delivery {
                Delivery::Event(event) => event.revokes_key(key_id),
                Delivery::Lagged => !crate::service::api_keys::key_active(app, key_id)
                    .await
                    .unwrap_or(true),
            };
            return ended.then_some("API key");
        }
        let session_id = viewer.session_id;
        let ended = match delivery {
            Delivery::Event(event) => event.revokes(session_id),
            Delivery::Lagged => !crate::service::live::session_active(app, session_id)
                .await
                .unwrap_or(true),
        };
        ended.then_some("session")
    }

    async fn send(&self, message: Message) {
        let _ = self.outbox_tx.send(Outgoing::Message(message)).await;
    }

    async fn send_errors(&self, id: &str, errors: Vec<async_graphql::ServerError>) {
        for message in error_messages(self.protocol, id, errors) {
            self.send(message).await;
        }
    }
}

/// Sends a stream's results as `next`/`data` messages, a pre-execution failure as an
/// `error` message, and `complete` when the stream ends by itself.
async fn forward(
    mut stream: futures_util::stream::BoxStream<'static, GqlResponse>,
    tx: mpsc::Sender<Outgoing>,
    protocol: Protocol,
    id: &str,
) {
    let mut first = true;
    while let Some(response) = stream.next().await {
        if first && is_request_error(&response) {
            for message in error_messages(protocol, id, response.errors) {
                let _ = tx.send(Outgoing::Message(message)).await;
            }
            return;
        }
        first = false;
        let payload = serde_json::to_string(&response).unwrap_or_else(|_| "null".to_owned());
        let message = next_message(protocol, id, &payload);
        if tx.send(Outgoing::Message(message)).await.is_err() {
            return;
        }
    }
    let _ = tx.send(Outgoing::Message(complete_message(id))).await;
}

/// What a subscriber's following of a shared execution yields.
enum Followed {
    /// A new result, to write.
    Next(Message),
    /// How the execution ended (nothing, when the runtime is going away), to send
    /// through the outbox like an operation task's ending.
    End(Vec<Message>),
}

/// A subscriber's following of a shared execution.
type FollowStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Followed> + Send>>;

/// One subscriber's view of a shared execution: the latest payload at once, then the
/// latest one each time the pusher is ready for more (so a slow subscriber skips
/// straight to the newest), then how it ended.
fn follow(
    shared: watch::Receiver<Shared>,
    protocol: Protocol,
    id: String,
    active: ActiveSubscription,
) -> FollowStream {
    struct Follower {
        shared: watch::Receiver<Shared>,
        /// The version of the last payload sent.
        sent: u64,
        done: bool,
        _active: ActiveSubscription,
    }
    let follower = Follower {
        shared,
        sent: 0,
        done: false,
        _active: active,
    };
    let stream = futures_util::stream::unfold(follower, move |mut f| {
        let id = id.clone();
        async move {
            if f.done {
                return None;
            }
            loop {
                let (payload, end) = {
                    let now = f.shared.borrow_and_update();
                    let payload = now.latest.clone().filter(|_| now.version > f.sent);
                    f.sent = now.version;
                    (payload, now.end.clone())
                };
                // A last payload goes before the end, which the next poll sees again.
                if let Some(payload) = payload {
                    return Some((Followed::Next(next_message(protocol, &id, &payload)), f));
                }
                let ending = match end {
                    Some(End::Complete) => vec![complete_message(&id)],
                    Some(End::Refused(errors)) => error_messages(protocol, &id, errors.to_vec()),
                    None if f.shared.changed().await.is_ok() => continue,
                    // Stopped without an end (the runtime is going away).
                    None => Vec::new(),
                };
                f.done = true;
                return Some((Followed::End(ending), f));
            }
        }
    });
    Box::pin(stream)
}

/// Writes the shared executions a connection follows, on the pushers' runtime. Each is
/// polled only once the previous write is done, so a client slower than the updates is
/// sent the latest value instead of a queue of stale ones. Their ends go through the
/// outbox, then `Finished`, as an operation task's do. Returns the write failure that
/// ends the connection; `None` once the connection has gone.
async fn push_shared(
    outlet: Outlet,
    follows: Arc<Follows>,
    outbox: mpsc::Sender<Outgoing>,
    limit: Duration,
    metrics: Metrics,
) -> Option<WriteFailure> {
    let mut followed = StreamMap::new();
    loop {
        tokio::select! {
            taken = follows.recv() => for follow in taken {
                match follow {
                    Follow::Start(id, stream) => {
                        followed.insert(id, stream);
                    }
                    Follow::Stop(id) => {
                        followed.remove(&id);
                    }
                }
            },
            Some((id, item)) = followed.next(), if !followed.is_empty() => match item {
                Followed::Next(message) => {
                    if let Err(failure) = write(&outlet, message, limit, &metrics).await {
                        return Some(failure);
                    }
                }
                Followed::End(messages) => {
                    for message in messages {
                        outbox.send(Outgoing::Message(message)).await.ok()?;
                    }
                    outbox.send(Outgoing::Finished(id)).await.ok()?;
                }
            },
        }
    }
}

/// How the connection's pusher failed; never, while it runs or when there is none.
async fn pusher_failure(pusher: &mut Option<Pusher>) -> WriteFailure {
    if let Some(running) = pusher {
        match (&mut running.task).await {
            Ok(Some(failure)) => return failure,
            // It cannot write any more.
            Err(_) => return WriteFailure::Closed,
            Ok(None) => {}
        }
        *pusher = None;
    }
    std::future::pending().await
}

fn error_messages(
    protocol: Protocol,
    id: &str,
    errors: Vec<async_graphql::ServerError>,
) -> Vec<Message> {
    let errors: Vec<Json> = errors
        .into_iter()
        .map(|mut e| {
            crate::error::shape_server_error(&mut e);
            serde_json::to_value(&e).unwrap_or(Json::Null)
        })
        .collect();
    match protocol {
        Protocol::TransportWs => vec![text(json!({"id": id, "type": "error", "payload": errors}))],
        // subscriptions-transport-ws carries one error object, then completes.
        Protocol::Legacy => vec![
            text(
                json!({"id": id, "type": "error", "payload": errors.into_iter().next().unwrap_or(Json::Null)}),
            ),
            complete_message(id),
        ],
    }
}

/// Reads credentials from the `connection_init` payload:
/// `{"authorization": "Bearer <token>"}` or `{"apiKey": "<key>"}`; a signing key sends
/// `{"apiKey": "<prefix>", "timestamp": "<unix ms>", "signature": "<hex>"}`, signing
/// `timestamp + "GET" + <the upgrade request's path and query>` (an empty body). No
/// credentials means an anonymous connection (public subscriptions only).
async fn authenticate(
    state: &HttpState,
    payload: &Json,
    client: &ClientInfo,
    target: &str,
) -> Result<Option<crate::auth::Viewer>, ApiError> {
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| payload.get(*name).and_then(Json::as_str))
    };
    if let Some(value) = field(&["authorization", "Authorization"]) {
        let credential = client::bearer(value)?;
        return client::authenticate(&state.app, credential, Default::default(), client)
            .await
            .map(Some);
    }
    if let Some(key) = field(&["apiKey", "x-api-key", "X-API-Key"]) {
        let timestamp = payload.get("timestamp").and_then(|v| match v {
            Json::String(s) => Some(s.clone()),
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        });
        let signed = crate::service::api_keys::SignedParts {
            timestamp: timestamp.as_deref(),
            signature: field(&["signature"]),
            method: "GET",
            path: target,
            body: &[],
        };
        return client::authenticate(&state.app, client::Credential::ApiKey(key), signed, client)
            .await
            .map(Some);
    }
    Ok(None)
}

/// The next revocation, or never for a connection without a session or an API key.
async fn next_revocation(feed: &mut Option<Feed>) -> Option<Delivery> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

fn truncate(value: &str) -> String {
    value.chars().take(64).collect()
}

/// Counts something under way in a gauge for as long as it lives.
struct Pending<'a>(&'a prometheus::IntGauge);

impl<'a> Pending<'a> {
    fn new(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Pending(gauge)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts a running subscription for `/metrics` for as long as it lives.
struct ActiveSubscription(Metrics);

impl ActiveSubscription {
    fn new(metrics: &Metrics) -> Self {
        metrics.subscriptions_active.inc();
        ActiveSubscription(metrics.clone())
    }
}

impl Drop for ActiveSubscription {
    fn drop(&mut self) {
        self.0.subscriptions_active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::shared_streams::SharedStreams;
    use tokio_tungstenite::tungstenite::Message as ClientMessage;

    type Client = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// An accepted server-side WebSocket and its client, over loopback.
    async fn connected() -> (WebSocket, Client) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (accepted, socket) = mpsc::channel(1);
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move |upgrade: WebSocketUpgrade| async move {
                upgrade.on_upgrade(move |socket| async move {
                    let _ = accepted.send(socket).await;
                })
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let (client, _) = tokio_tungstenite::connect_async(format!("ws://{address}/"))
            .await
            .expect("connects");
        let mut socket = socket;
        (socket.recv().await.expect("accepted"), client)
    }

    async fn next_text(client: &mut Client) -> String {
        let next = tokio::time::timeout(Duration::from_secs(10), client.next()).await;
        match next {
            Ok(Some(Ok(ClientMessage::Text(text)))) => text.as_str().to_owned(),
            other => panic!("expected a text message: {other:?}"),
        }
    }

    /// While the pushers' thread is taken by a push (ten thousand tickers, say), the
    /// connection loop still writes its own messages: a fill does not wait for tickers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_private_message_goes_out_while_a_shared_push_holds_the_pushers() {
        let (socket, mut client) = connected().await;
        let (sink, _stream) = socket.split();
        let outlet: Outlet = Arc::new(tokio::sync::Mutex::new(OutletState { sink, failed: None }));
        let metrics = Metrics::new();
        let streams = SharedStreams::new(metrics.clone()).expect("pushers start");
        let limit = Duration::from_secs(10);

        let (ticker, followed) = watch::channel(Shared::default());
        let follows = Arc::new(Follows::default());
        let (outbox, outbox_rx) = mpsc::channel(4);
        let pusher = streams.pushers().spawn(push_shared(
            outlet.clone(),
            follows.clone(),
            outbox,
            limit,
            metrics.clone(),
        ));
        let active = ActiveSubscription::new(&metrics);
        let stream = follow(followed, Protocol::TransportWs, "t".into(), active);
        follows.send(Follow::Start("t".into(), stream));

        let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (started, running) = tokio::sync::oneshot::channel();
        let held = busy.clone();
        streams.pushers().spawn(async move {
            let _ = started.send(());
            while held.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        running.await.expect("the push runs");
        ticker.send_modify(|shared| {
            shared.version += 1;
            shared.latest = Some(r#"{"data":{"ticker":1}}"#.into());
        });

        let fill = text(json!({"id": "f", "type": "next", "payload": {"data": {"fill": 1}}}));
        write(&outlet, fill, limit, &metrics)
            .await
            .expect("written while the pushers are busy");
        assert!(next_text(&mut client).await.contains("fill"));

        busy.store(false, std::sync::atomic::Ordering::SeqCst);
        let pushed = next_text(&mut client).await;
        assert_eq!(
            pushed,
            r#"{"id":"t","type":"next","payload":{"data":{"ticker":1}}}"#
        );
        drop(outbox_rx);
        ticker.send_modify(|shared| shared.end = Some(End::Complete));
        assert!(pusher.await.expect("pusher ends").is_none());
    }
}
