//! Group commit of order placements: the orders waiting to be placed are placed
//! together, in arrival order, in one transaction, whatever their markets.
//!
//! A market's book changes one transaction at a time (its row lock), so on a busy
//! market every order used to wait for the one before it to finish its own `BEGIN`,
//! market lock, `COMMIT` and WAL flush, and for the lock to pass between connections.
//! Here one placement task per process takes whatever has queued up while the previous
//! batch ran (at most [`MAX_BATCH`]) and places it in a single transaction, then
//! publishes each order's events and answers each request, in order. Price-time
//! priority is arrival at the task, as it was arrival at the lock.
//!
//! One task for every market, rather than one per market: traders are active in
//! several markets, and a market's quote currency is shared by all its traders, so
//! transactions of different markets read, lock and write the same ledger accounts
//! and event sequences. Run side by side they took turns on those rows anyway, each
//! with a small batch and its own reads; together, the rows are read once and written
//! once per batch (`orders::LockedMarkets`).
//!
//! The task runs on a thread of its own, with database connections of its own. A
//! batch holds its markets from its first statement to its commit, so every moment it
//! spends waiting to be polled, behind requests being parsed and answered on the
//! server's workers, is a moment no order in those markets can trade. On its own thread
//! a placement task runs as soon as its database answers, and the operating system
//! shares the cores between it and the server as between any two busy threads.
//!
//! An order that fails (say, `INSUFFICIENT_FUNDS`) must not take its batch-mates with
//! it, and must not leave half its writes behind: the whole batch is rolled back and
//! each of its orders is placed again on its own, so every caller gets the answer it
//! would have got without batching. Several processes still serialise on the market
//! row, so batching changes nothing about correctness across replicas.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sea_orm::DatabaseBackend;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::order_writes::{overtaken, Locking, Renumbering};
use super::orders::{self, NewOrder, Placed, Prepared};
use crate::db::Db;
use crate::error::ApiError;
use crate::events::{Collector, Event};
use crate::metrics::Metrics;
use crate::state::AppState;

/// Most orders placed in one transaction. Bounds how long a batch holds its markets
/// (and the accounts it touches), and so the latency of the orders that arrive
/// while it runs.
const MAX_BATCH: usize = 16;
/// The placement task ends after this long without orders (and starts again with
/// the next one), so an idle process and dropped test applications hold nothing.
const IDLE: Duration = Duration::from_secs(2);

/// One order waiting to be placed.
struct Job {
    user_id: Uuid,
    input: NewOrder,
    prepared: Prepared,
    reply: oneshot::Sender<Result<Placed, ApiError>>,
}

/// The placement task of this process, while it has recent orders.
pub struct OrderBatches {
    queue: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    lane: Lane,
}

/// Where placements run: a runtime of one thread, and the database connections it uses.
struct Lane {
    runtime: Option<tokio::runtime::Runtime>,
    db: Db,
}

impl Drop for Lane {
    fn drop(&mut self) {
        // Dropped from async code (possibly a placement task's own, as the last holder
        // of the state), where waiting for the runtime's threads is not allowed. Its
        // task waits on an idle queue by then: nothing is left to answer.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl OrderBatches {
    /// Starts the placement thread. On PostgreSQL it gets its own pool of
    /// `connections`, opened on that thread; SQLite has one writer at a time, which
    /// `db` already queues, so placements share it.
    pub async fn start(
        db: &Db,
        database_url: &str,
        connections: u32,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("order-placement")
            .enable_all()
            .build()
            .context("cannot start the order placement thread")?;
        let lane_db = match db.backend() {
            DatabaseBackend::Postgres => {
                let (url, metrics) = (database_url.to_owned(), metrics.clone());
                runtime
                    .spawn(async move { Db::connect(&url, connections, &metrics).await })
                    .await
                    .context("the order placement thread stopped while connecting")??
            }
            _ => db.clone(),
        };
        Ok(OrderBatches {
            queue: Mutex::default(),
            lane: Lane {
                runtime: Some(runtime),
                db: lane_db,
            },
        })
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        match &self.lane.runtime {
            Some(runtime) => drop(runtime.spawn(task)),
            // Only while being dropped, when nobody can place an order.
            None => drop(tokio::spawn(task)),
        }
    }

    fn db(&self) -> &Db {
        &self.lane.db
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<mpsc::UnboundedSender<Job>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Places an order through the placement task and waits for the outcome. Events
    /// are published (after commit) before this returns.
    pub(super) async fn place(
        state: &AppState,
        user_id: Uuid,
        input: NewOrder,
        prepared: Prepared,
    ) -> Result<Placed, ApiError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            user_id,
            input,
            prepared,
            reply,
        };
        {
            let mut current = state.order_batches.lock();
            let unsent = match current.as_ref() {
                Some(queue) => queue.send(job).err().map(|e| e.0),
                None => Some(job),
            };
            // No task yet, or it has just stopped: start one.
            if let Some(job) = unsent {
                let (queue, jobs) = mpsc::unbounded_channel();
                // Cannot fail: the receiver is alive right here.
                let _ = queue.send(job);
                *current = Some(queue.clone());
                state.order_batches.spawn(run(state.clone(), queue, jobs));
            }
        }
        await_outcome(outcome).await
    }
}

async fn await_outcome(
    outcome: oneshot::Receiver<Result<Placed, ApiError>>,
) -> Result<Placed, ApiError> {
    outcome.await.unwrap_or_else(|_| {
        Err(ApiError::internal(anyhow::anyhow!(
            "the order placement task stopped before answering"
        )))
    })
}

/// The placement task: batches what has queued, until idle.
async fn run(
    state: AppState,
    queue: mpsc::UnboundedSender<Job>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    loop {
        let first = match tokio::time::timeout(IDLE, jobs.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(_) => {
                // Senders enqueue under this lock, so nothing can arrive between the
                // check and the removal.
                let mut current = state.order_batches.lock();
                if jobs.is_empty() {
                    if current.as_ref().is_some_and(|q| q.same_channel(&queue)) {
                        *current = None;
                    }
                    return;
                }
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        place_batch(&state, batch).await;
    }
}

/// Places a batch, front to back. When an order fails, the orders before it are
/// placed again as a batch, the failed one on its own (so it gets its own answer),
/// and the rest as a batch after it: one failure costs one extra attempt, not the
/// batch's throughput.
async fn place_batch(state: &AppState, batch: Vec<Job>) {
    let mut work = std::collections::VecDeque::from([batch]);
    while let Some(mut batch) = work.pop_front() {
        if batch.len() == 1 {
            let job = batch.remove(0);
            let mut outcome = place_alone(state, &job, Locking::AtWrite).await;
            if outcome.as_ref().is_err_and(overtaken) {
                count_overtaken(state);
                outcome = place_alone(state, &job, Locking::UpFront).await;
            }
            let _ = job.reply.send(outcome);
            continue;
        }
        if batch.is_empty() {
            continue;
        }
        let mut outcome = place_together(state, &batch, Locking::AtWrite).await;
        if matches!(&outcome, Err((_, error)) if overtaken(error)) {
            count_overtaken(state);
            outcome = place_together(state, &batch, Locking::UpFront).await;
        }
        match outcome {
            Ok(placed) => {
                state
                    .metrics
                    .order_batches
                    .with_label_values(&["committed"])
                    .inc();
                let markets: std::collections::HashSet<&str> = batch
                    .iter()
                    .map(|job| job.prepared.symbol.as_str())
                    .collect();
                state
                    .metrics
                    .order_batch_markets
                    .observe(markets.len() as f64);
                for (job, (order, events)) in batch.into_iter().zip(placed) {
                    state.events.publish(events).await;
                    let _ = job.reply.send(Ok(order));
                }
            }
            Err((failed, error)) => {
                state
                    .metrics
                    .order_batches
                    .with_label_values(&["split"])
                    .inc();
                tracing::debug!(%error, orders = batch.len(), "batch rolled back and split");
                match failed {
                    Some(at) => {
                        let after = batch.split_off(at + 1);
                        let failed = batch.split_off(at);
                        work.push_front(after);
                        work.push_front(failed);
                        work.push_front(batch);
                    }
                    // Not one order's fault (the commit, the connection): one by one.
                    None => {
                        for job in batch.into_iter().rev() {
                            work.push_front(vec![job]);
                        }
                    }
                }
            }
        }
    }
}

/// Counts a transaction that had to run again with its locks up front.
fn count_overtaken(state: &AppState) {
    state
        .metrics
        .order_batches
        .with_label_values(&["overtaken"])
        .inc();
}

/// Counts a transaction that carried over what others committed for its traders
/// between its read of their rows and its lock (see `Locking::AtWrite`).
fn count_carried_over(state: &AppState, renumbering: &Renumbering) {
    if renumbering.moved() {
        state
            .metrics
            .order_batches
            .with_label_values(&["carried_over"])
            .inc();
    }
}

type Outcome = (Placed, Vec<Event>);

/// Places every order of `batch` in one transaction; on failure, which order failed
/// (when one did) and why.
async fn place_together(
    state: &AppState,
    batch: &[Job],
    locking: Locking,
) -> Result<Vec<Outcome>, (Option<usize>, ApiError)> {
    let specs: Vec<(Uuid, NewOrder, Prepared)> = batch
        .iter()
        .map(|j| (j.user_id, j.input.clone(), j.prepared.clone()))
        .collect();
    // Which order failed in the last attempt; `usize::MAX` when none did.
    let failed_at = Arc::new(AtomicUsize::new(usize::MAX));
    let placed = state
        .order_batches
        .db()
        .write(|txn| {
            let (specs, failed_at) = (specs.clone(), failed_at.clone());
            Box::pin(async move {
                failed_at.store(usize::MAX, Ordering::Relaxed);
                let mut markets = orders::prelock_batch(txn, &specs, locking).await?;
                let mut placed = Vec::with_capacity(specs.len());
                for (at, (user_id, input, prepared)) in specs.iter().enumerate() {
                    let events = Collector::default();
                    let market = markets.market(&prepared.symbol)?;
                    let order = orders::execute(txn, market, &events, *user_id, input, prepared);
                    match order.await {
                        Ok(order) => placed.push((order, events.take())),
                        Err(error) => {
                            failed_at.store(at, Ordering::Relaxed);
                            return Err(error);
                        }
                    }
                }
                // Price alerts fired at the end belong with the last order's events.
                let last = Collector::default();
                let renumbering = markets.finish(txn, &last).await?;
                for (_, events) in &mut placed {
                    renumbering.apply(events);
                }
                if let Some((_, events)) = placed.last_mut() {
                    events.extend(last.take());
                }
                Ok((placed, renumbering))
            })
        })
        .await;
    placed
        .map(|(placed, renumbering)| {
            count_carried_over(state, &renumbering);
            placed
        })
        .map_err(|error| {
            let at = failed_at.load(Ordering::Relaxed);
            ((at != usize::MAX).then_some(at), error)
        })
}

/// Places one order in a transaction of its own.
async fn place_alone(state: &AppState, job: &Job, locking: Locking) -> Result<Placed, ApiError> {
    let (user_id, input, prepared) = (job.user_id, &job.input, &job.prepared);
    let (placed, renumbering, events): (Placed, Renumbering, Vec<Event>) = state
        .order_batches
        .db()
        .write(|txn| {
            let (input, prepared) = (input.clone(), prepared.clone());
            Box::pin(async move {
                let events = Collector::default();
                let order = (user_id, &input, &prepared);
                let (placed, renumbering) =
                    orders::execute_alone(txn, &events, order, locking).await?;
                Ok((placed, renumbering, events.take()))
            })
        })
        .await?;
    count_carried_over(state, &renumbering);
    state.events.publish(events).await;
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::OrderBatches;
    use crate::db::Db;
    use crate::metrics::Metrics;

    /// Placement tasks run on the placement thread, whoever starts them; and the thread
    /// goes away with its owner, even when dropped from async code.
    #[tokio::test]
    async fn placement_runs_on_a_thread_of_its_own() {
        let metrics = Metrics::new();
        let db = Db::connect("sqlite::memory:", 1, &metrics)
            .await
            .expect("an in-memory database");
        let batches = OrderBatches::start(&db, "sqlite::memory:", 2, &metrics)
            .await
            .expect("the placement thread starts");
        let (sender, thread) = oneshot::channel();
        batches.spawn(async move {
            let _ = sender.send(std::thread::current().name().map(str::to_owned));
        });
        let thread = thread.await.expect("the task ran");
        assert_eq!(thread.as_deref(), Some("order-placement"));
        assert_ne!(std::thread::current().name(), Some("order-placement"));
        drop(batches);
    }
}
