//! Subscriptions executed once per distinct document instead of once per subscriber.
//!
//! A market's ticker is the same for everybody, yet executing `ticker` per subscriber
//! makes every trade run the GraphQL selection (and serialise the result) ten thousand
//! times for ten thousand dashboards. Subscriptions whose result cannot depend on who
//! asks are therefore keyed by their document, variables and operation name: the first
//! subscriber starts one execution (with an anonymous context), every response is
//! serialised once into a [`watch`] channel, and each subscriber forwards the latest
//! payload with its own operation id. A slow subscriber skips to the latest value,
//! which is what `ticker` promises anyway. When the last subscriber of a document
//! leaves, its execution stops.
//!
//! # Where the pushes run
//!
//! One new ticker is a write to every subscriber's socket: ten thousand `send`s, a
//! good part of a second of CPU on a small machine. Run by the connections' own tasks,
//! those writes fill the runtime's queues, and a fill committed meanwhile reaches its
//! owner only after them. So the writes of shared results are made by a runtime of their
//! own ([`SharedStreams::pushers`]), one thread at a lower scheduling priority: private
//! events (fills, order updates) keep the server's cores, and tickers take what is left,
//! which is fine for a feed that only ever promises the latest value.
//!
//! # What may be shared
//!
//! Only documents whose operations are all subscriptions selecting nothing at the root
//! but fields listed in [`SHARED_ROOT_FIELDS`] (aliases allowed; fragments at the root
//! are not followed, so a document using them runs per subscriber). The list holds
//! fields that are public (open to anonymous callers and to every API key) and read
//! nothing of the viewer; a field added to it must be both, or one subscriber's data
//! would reach another. Every operation of the document is checked, not only the one
//! that runs, because the per-request gates (API-key scopes) look at all of them: a
//! shared document passes them for anyone, so sharing changes no answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{Response, ServerError};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::graphql::is_request_error;
use crate::metrics::Metrics;

/// Root subscription fields whose result is the same for every subscriber: public,
/// and independent of the viewer. See the module documentation before adding one.
pub const SHARED_ROOT_FIELDS: &[&str] = &["ticker", "__typename"];

/// What identifies one shared execution.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    query: String,
    /// The variables as JSON (their map is ordered, so equal variables give equal text).
    variables: String,
    operation: Option<String>,
}

/// The key of `request` when its result can be shared by every subscriber, per the
/// rule in the module documentation; `None` when it must run per subscriber (including
/// when it does not parse or names no operation it has: the ordinary path reports it).
pub fn shared_key(request: &async_graphql::Request) -> Option<Key> {
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    let mut chosen = false;
    for (name, operation) in document.operations.iter() {
        let operation = &operation.node;
        let public_only = operation.ty == OperationType::Subscription
            && operation.selection_set.node.items.iter().all(|item| {
                matches!(&item.node, Selection::Field(field)
                    if SHARED_ROOT_FIELDS.contains(&field.node.name.node.as_str()))
            });
        if !public_only {
            return None;
        }
        chosen |= match (&document.operations, request.operation_name.as_deref()) {
            (DocumentOperations::Single(_), None) => true,
            (_, Some(wanted)) => name.is_some_and(|n| n.as_str() == wanted),
            // A lone named operation runs without being named.
            (DocumentOperations::Multiple(all), None) => all.len() == 1,
        };
    }
    if !chosen {
        return None;
    }
    Some(Key {
        query: request.query.clone(),
        variables: serde_json::to_string(&request.variables).ok()?,
        operation: request.operation_name.clone(),
    })
}

/// What a shared execution has produced so far, as its subscribers see it.
#[derive(Clone, Debug, Default)]
pub struct Shared {
    /// How many responses there have been; a subscriber remembers the last it sent.
    pub version: u64,
    /// The latest response, serialised.
    pub latest: Option<Arc<str>>,
    /// Set once the execution is over.
    pub end: Option<End>,
}

/// How a shared execution ended.
#[derive(Clone, Debug)]
pub enum End {
    /// The stream finished: subscribers complete.
    Complete,
    /// The document was refused before anything ran (validation, limits).
    Refused(Arc<Vec<ServerError>>),
}

/// The shared executions of this process, one per distinct document with subscribers.
pub struct SharedStreams {
    running: Mutex<HashMap<Key, watch::Sender<Shared>>>,
    metrics: Metrics,
    pushers: Pushers,
}

/// How much lower than the server's the pushers' thread runs (a Linux nice value: at 19
/// it gets about 1.5 % of a core that a nice-0 thread also wants, and every idle cycle).
#[cfg(target_os = "linux")]
const PUSHER_NICENESS: i32 = 19;

/// The runtime that writes shared results to subscribers' sockets.
struct Pushers(Option<tokio::runtime::Runtime>);

impl Pushers {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shared-pushes")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(Pushers(Some(runtime)))
    }
}

impl Drop for Pushers {
    fn drop(&mut self) {
        // Dropped from async code, where waiting for the runtime's tasks is not allowed;
        // they are connections' pushers, which end with their connections anyway.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's scheduling priority (on Linux, where a nice value can be
/// set per thread); elsewhere the pushers still keep their writes off the server's
/// runtime, at the same priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(thread), PUSHER_NICENESS) {
            tracing::warn!(%error, "cannot lower the priority of the shared pushes' thread");
        }
    }
}

impl SharedStreams {
    pub fn new(metrics: Metrics) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(SharedStreams {
            running: Mutex::default(),
            metrics,
            pushers: Pushers::start()?,
        }))
    }

    /// Where the writes of shared results to subscribers go: a thread of lower priority
    /// than the server's runtime (see the module documentation).
    pub fn pushers(&self) -> tokio::runtime::Handle {
        match &self.pushers.0 {
            Some(runtime) => runtime.handle().clone(),
            // Only while being dropped, when nobody can ask.
            None => tokio::runtime::Handle::current(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, watch::Sender<Shared>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the execution of `key`, starting it with `execute` when none runs.
    pub fn join(
        self: &Arc<Self>,
        key: Key,
        execute: impl FnOnce() -> BoxStream<'static, Response>,
    ) -> watch::Receiver<Shared> {
        let mut running = self.lock();
        if let Some(sender) = running.get(&key) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(Shared::default());
        running.insert(key.clone(), sender.clone());
        drop(running);
        self.metrics.shared_subscription_executions.inc();
        tokio::spawn(self.clone().drive(key, sender, execute()));
        receiver
    }

    /// Distinct documents being executed for subscribers right now.
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    /// Forgets `key` if it still names this execution (a new one may have replaced it).
    fn forget(&self, key: &Key, sender: &watch::Sender<Shared>) {
        let mut running = self.lock();
        if running.get(key).is_some_and(|s| s.same_channel(sender)) {
            running.remove(key);
        }
    }

    /// Runs one execution for all its subscribers until it ends or they are gone.
    async fn drive(
        self: Arc<Self>,
        key: Key,
        sender: watch::Sender<Shared>,
        mut stream: BoxStream<'static, Response>,
    ) {
        let mut first = true;
        loop {
            tokio::select! {
                response = stream.next() => {
                    let Some(response) = response else {
                        // Forgotten first, so whoever subscribes next starts afresh.
                        self.forget(&key, &sender);
                        sender.send_modify(|shared| shared.end = Some(End::Complete));
                        return;
                    };
                    if first && is_request_error(&response) {
                        self.forget(&key, &sender);
                        let errors = Arc::new(response.errors);
                        sender.send_modify(|shared| shared.end = Some(End::Refused(errors)));
                        return;
                    }
                    first = false;
                    let payload: Arc<str> = match serde_json::to_string(&response) {
                        Ok(payload) => payload.into(),
                        Err(error) => {
                            tracing::error!(%error, "cannot serialise a shared subscription response");
                            continue;
                        }
                    };
                    sender.send_modify(|shared| {
                        shared.version += 1;
                        shared.latest = Some(payload);
                    });
                }
                _ = sender.closed() => {
                    let mut running = self.lock();
                    // Someone may have joined between the last leaving and this wake-up;
                    // under the lock, nobody else can join before the entry is gone.
                    if sender.receiver_count() == 0 {
                        if running.get(&key).is_some_and(|s| s.same_channel(&sender)) {
                            running.remove(&key);
                        }
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(query: &str, operation: Option<&str>) -> Option<Key> {
        let mut request = async_graphql::Request::new(query);
        request.operation_name = operation.map(str::to_owned);
        shared_key(&request)
    }

    const TICKER: &str = "subscription { ticker(market: \"ETH-USD\") { market lastPrice } }";

    #[test]
    fn public_ticker_documents_are_shared() {
        assert!(key(TICKER, None).is_some());
        assert!(key(
            "subscription T($m: String!) { a: ticker(market: $m) { at } b: ticker(market: \"BTC-USD\") { at } __typename }",
            None
        )
        .is_some());
    }

    #[test]
    fn private_or_unclear_documents_run_per_subscriber() {
        for query in [
            "subscription { fills { id } }",
            "subscription { orderUpdates(afterSequence: 0) { sequence } }",
            "subscription { portfolioValue { value } }",
            "subscription { priceAlertTriggered { price } }",
            // A public field beside a private one, under an alias or not.
            "subscription { ticker(market: \"ETH-USD\") { at } mine: fills { id } }",
            "subscription { t: ticker(market: \"ETH-USD\") { at } ticker: orderUpdates { sequence } }",
            // Fragments at the root are not followed.
            "subscription { ...F } fragment F on Subscription { ticker(market: \"ETH-USD\") { at } }",
            "subscription { ... on Subscription { ticker(market: \"ETH-USD\") { at } } }",
            // Not a subscription, or not GraphQL at all.
            "query { serverTime }",
            "subscription { ticker(",
        ] {
            assert!(key(query, None).is_none(), "{query}");
        }
    }

    #[test]
    fn with_several_operations_the_named_one_runs_and_every_one_must_be_public() {
        let two = "subscription A { ticker(market: \"ETH-USD\") { at } } \
                   subscription B { ticker(market: \"BTC-USD\") { at } }";
        let a = key(two, Some("A")).expect("A is shared");
        let b = key(two, Some("B")).expect("B is shared");
        assert_ne!(a, b, "the operation name is part of the key");
        assert!(key(two, None).is_none(), "no operation chosen");
        assert!(key(two, Some("C")).is_none(), "no such operation");
        let mixed = "subscription A { ticker(market: \"ETH-USD\") { at } } \
                     subscription B { fills { id } }";
        assert!(key(mixed, Some("A")).is_none());
        assert!(
            key(TICKER, Some("A")).is_none(),
            "names an operation it lacks"
        );
    }

    #[test]
    fn variables_are_part_of_the_key() {
        let query = "subscription($m: String!) { ticker(market: $m) { at } }";
        let with = |market: &str| {
            let request = async_graphql::Request::new(query).variables(
                async_graphql::Variables::from_json(serde_json::json!({"m": market})),
            );
            shared_key(&request).expect("shared")
        };
        assert_eq!(with("ETH-USD"), with("ETH-USD"));
        assert_ne!(with("ETH-USD"), with("BTC-USD"));
    }

    /// An execution that yields `make()` and then waits, counting how often it starts.
    fn responses(
        make: fn() -> Response,
        executions: Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl FnOnce() -> BoxStream<'static, Response> {
        move || {
            executions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            futures_util::stream::iter([make()])
                .chain(futures_util::stream::pending())
                .boxed()
        }
    }

    fn value() -> Response {
        Response::new(async_graphql::Value::from("v1"))
    }

    fn refusal() -> Response {
        Response::from_errors(vec![ServerError::new("refused", None)])
    }

    #[tokio::test]
    async fn subscribers_of_one_document_share_one_execution_until_the_last_leaves() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let streams = SharedStreams::new(Metrics::new()).expect("pushers start");
        let executions = Arc::new(AtomicUsize::new(0));
        let ticker = key(TICKER, None).expect("shared");
        let mut first = streams.join(ticker.clone(), responses(value, executions.clone()));
        let mut second = streams.join(ticker.clone(), responses(value, executions.clone()));
        assert_eq!(executions.load(Ordering::SeqCst), 1);
        first.changed().await.expect("a value");
        second.changed().await.expect("a value");
        let a = first.borrow().latest.clone().expect("a payload");
        let b = second.borrow().latest.clone().expect("a payload");
        assert!(Arc::ptr_eq(&a, &b), "serialised once for both");
        assert_eq!(streams.running(), 1);

        drop(first);
        drop(second);
        // The driver notices the last receiver leaving; a later subscriber starts over.
        for _ in 0..1000 {
            if streams.running() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(streams.running(), 0);
        let _third = streams.join(ticker, responses(value, executions.clone()));
        assert_eq!(executions.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn pushes_run_on_a_thread_of_their_own_at_a_lower_priority() {
        use std::time::{Duration, Instant};
        let streams = SharedStreams::new(Metrics::new()).expect("pushers start");
        let (started, running) = tokio::sync::oneshot::channel();
        // A push that keeps its thread, as ten thousand writes do.
        streams.pushers().spawn(async move {
            let _ = started.send((std::thread::current().id(), niceness()));
            std::thread::sleep(Duration::from_millis(500));
        });
        let (thread, nice) = running.await.expect("the push runs");
        assert_ne!(thread, std::thread::current().id());
        let before = Instant::now();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            before.elapsed() < Duration::from_millis(400),
            "the caller's runtime waited for the push"
        );
        if cfg!(target_os = "linux") {
            assert!(nice > niceness(), "{nice} is not below {}", niceness());
        }
    }

    /// The calling thread's nice value (0 where it cannot be read).
    fn niceness() -> i32 {
        #[cfg(target_os = "linux")]
        {
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0)
        }
        #[cfg(not(target_os = "linux"))]
        0
    }

    #[tokio::test]
    async fn a_refused_document_is_forgotten_so_the_next_subscriber_runs_it_again() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let streams = SharedStreams::new(Metrics::new()).expect("pushers start");
        let executions = Arc::new(AtomicUsize::new(0));
        let ticker = key(TICKER, None).expect("shared");
        let mut receiver = streams.join(ticker.clone(), responses(refusal, executions.clone()));
        receiver.changed().await.expect("an end");
        assert!(matches!(receiver.borrow().end, Some(End::Refused(_))));
        assert_eq!(streams.running(), 0);
        let _again = streams.join(ticker, responses(refusal, executions.clone()));
        assert_eq!(executions.load(Ordering::SeqCst), 2);
    }
}
