//! P&L state follows each user's trades after they commit.
//!
//! Working out lots and realized P&L inside the placing transaction made every trade
//! of a market wait for it, under the market's lock. Instead, a user's P&L state has a
//! cursor into the user's order events (`portfolio_cursors`): every fill of an event up
//! to it is folded in, none after it. The events' sequence is gap-free and is taken
//! under a lock of the user's row until commit, so per user it is commit order, across
//! markets and replicas, and the events a reader can see are always a prefix of it.
//!
//! Whoever changes a user's P&L state holds that user's cursor row (`FOR UPDATE`; one
//! writer on SQLite) and moves it in the same transaction, so every fill is folded in
//! exactly once and in order:
//!
//! - [`Follower`]: each replica folds in the users whose order events it published,
//!   right after commit, several users and many fills per transaction, skipping users
//!   someone else is folding in; a periodic sweep picks up users left behind (a
//!   replica that stopped between commit and fold).
//! - [`catch_up`]: reads of P&L state fold in their user first, so nobody sees a
//!   portfolio behind their own trades.
//! - [`catch_up_in`]: deposits and withdrawals fold in the user's trades so far in
//!   their own transaction, before themselves. They have posted to the user's account
//!   by then, so no trade in that asset can commit in between.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseBackend,
    DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use uuid::Uuid;

use super::{apply, in_bulk, movements_of, Step};
use crate::error::ApiError;
use crate::events::Event;
use crate::service::bulk::{Bulk, Cell, Columns};
use crate::state::AppState;
use entity::{fills, markets, order_events, portfolio_cursors, user_sequences};

/// Most users folded in by one transaction.
const MOST_USERS: usize = 256;
/// Most order events one transaction reads; a user with more is folded in over
/// several, each moving the cursor as far as it read.
const MOST_EVENTS: u64 = 2000;
/// How often each replica looks for users whose P&L is behind their events.
const SWEEP: Duration = Duration::from_secs(5);
/// How long a user someone else was folding in waits before this replica tries again.
const RETRY: Duration = Duration::from_millis(50);
/// How long the follower lets commits gather before folding them in. A busy trader's
/// positions are then read and written once for many fills rather than once per
/// batch of orders, and lots bought and sold within the wait are never written at all:
/// folding is much cheaper per fill, for a lag nobody sees (reads catch up first).
/// Most of a fold's cost is reading each due user's positions and first lots, whatever
/// the number of fills: at 100 ms the follower still took a tenth of the machine
/// under the placement benchmark (`BENCHMARKS.md`, session 8).
const GATHER: Duration = Duration::from_secs(1);

/// Whether a fold waits for users someone else is folding in, or leaves them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Locking {
    Wait,
    Skip,
}

/// What one fold did not finish.
#[derive(Debug, Default)]
struct Left {
    /// Users someone else held (with [`Locking::Skip`]).
    skipped: Vec<Uuid>,
    /// Users with more events than the fold read.
    unfinished: Vec<Uuid>,
}

/// Folds in `user_id`'s trades that are not yet in their P&L state. Cheap when there
/// are none: one read of two rows.
pub async fn catch_up(state: &AppState, user_id: Uuid) -> Result<(), ApiError> {
    if !is_behind(state.db.conn(), user_id).await? {
        return Ok(());
    }
    loop {
        let left = state
            .db
            .write(move |txn| Box::pin(fold_users(txn, vec![user_id], Locking::Wait)))
            .await?;
        if left.unfinished.is_empty() {
            return Ok(());
        }
    }
}

/// [`catch_up`] inside the caller's transaction, which must already hold whatever
/// keeps new trades of the asset it is about to change from committing (its ledger
/// account).
pub(super) async fn catch_up_in(txn: &DatabaseTransaction, user_id: Uuid) -> Result<(), ApiError> {
    loop {
        let left = fold_users(txn, vec![user_id], Locking::Wait).await?;
        if left.unfinished.is_empty() {
            return Ok(());
        }
    }
}

/// Whether `user_id` has order events past their P&L cursor: one read.
async fn is_behind<C: ConnectionTrait>(conn: &C, user_id: Uuid) -> Result<bool, ApiError> {
    let backend = conn.get_database_backend();
    let placeholder = match backend {
        DatabaseBackend::Postgres => "$1",
        _ => "?",
    };
    let row = conn
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT s.last_sequence AS events, COALESCE(c.last_sequence, 0) AS folded \
                 FROM user_sequences s LEFT JOIN portfolio_cursors c ON c.user_id = s.user_id \
                 WHERE s.user_id = {placeholder}"
            ),
            [user_id.into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let events: i64 = row.try_get("", "events")?;
    let folded: i64 = row.try_get("", "folded")?;
    Ok(events > folded)
}

/// Users whose P&L is behind their events, at most `limit` of them.
async fn users_behind<C: ConnectionTrait>(conn: &C, limit: u64) -> Result<Vec<Uuid>, ApiError> {
    let rows = conn
        .query_all_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            format!(
                "SELECT s.user_id FROM user_sequences s \
                 LEFT JOIN portfolio_cursors c ON c.user_id = s.user_id \
                 WHERE s.last_sequence > COALESCE(c.last_sequence, 0) LIMIT {limit}"
            ),
        ))
        .await?;
    rows.iter()
        .map(|row| row.try_get::<Uuid>("", "user_id").map_err(ApiError::from))
        .collect()
}

/// Locks the cursors of `users` (creating missing ones at the start of the user's
/// events), and returns them.
async fn lock_cursors(
    txn: &DatabaseTransaction,
    users: &[Uuid],
    locking: Locking,
) -> Result<BTreeMap<Uuid, i64>, ApiError> {
    let lock = |users: Vec<Uuid>| {
        let mut query = portfolio_cursors::Entity::find()
            .filter(portfolio_cursors::Column::UserId.is_in(users))
            .order_by_asc(portfolio_cursors::Column::UserId);
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            query = match locking {
                Locking::Wait => query.lock(LockType::Update),
                Locking::Skip => {
                    query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
                }
            };
        }
        query
    };
    let mut cursors: BTreeMap<Uuid, i64> = lock(users.to_vec())
        .all(txn)
        .await?
        .into_iter()
        .map(|c| (c.user_id, c.last_sequence))
        .collect();
    // Not found: never folded in, or (skipping) held by someone else. Inserting the
    // latter changes nothing, and it stays skipped.
    let missing: Vec<Uuid> = users
        .iter()
        .filter(|u| !cursors.contains_key(u))
        .copied()
        .collect();
    if !missing.is_empty() {
        portfolio_cursors::Entity::insert_many(missing.iter().map(|user| {
            portfolio_cursors::ActiveModel {
                user_id: Set(*user),
                last_sequence: Set(0),
            }
        }))
        .on_conflict_do_nothing_on([portfolio_cursors::Column::UserId])
        .exec_without_returning(txn)
        .await?;
        cursors.extend(
            lock(missing)
                .all(txn)
                .await?
                .into_iter()
                .map(|c| (c.user_id, c.last_sequence)),
        );
    }
    Ok(cursors)
}

/// Folds in the trades of `users` past their cursors and moves the cursors, in `txn`.
async fn fold_users(
    txn: &DatabaseTransaction,
    users: Vec<Uuid>,
    locking: Locking,
) -> Result<Left, ApiError> {
    fold_users_reading(txn, users, locking, MOST_EVENTS).await
}

/// [`fold_users`], reading at most `most_events` events.
async fn fold_users_reading(
    txn: &DatabaseTransaction,
    users: Vec<Uuid>,
    locking: Locking,
    most_events: u64,
) -> Result<Left, ApiError> {
    let mut left = Left::default();
    let cursors = lock_cursors(txn, &users, locking).await?;
    left.skipped = users
        .iter()
        .filter(|u| !cursors.contains_key(u))
        .copied()
        .collect();
    let held: Vec<Uuid> = cursors.keys().copied().collect();
    if held.is_empty() {
        return Ok(left);
    }
    // Committed events only, and every event up to a committed number is committed.
    let ends: BTreeMap<Uuid, i64> = user_sequences::Entity::find()
        .filter(user_sequences::Column::UserId.is_in(held))
        .all(txn)
        .await?
        .into_iter()
        .map(|s| (s.user_id, s.last_sequence))
        .collect();
    let ranges: Vec<(Uuid, i64, i64)> = cursors
        .iter()
        .filter_map(|(user, from)| {
            let to = *ends.get(user)?;
            (to > *from).then_some((*user, *from, to))
        })
        .collect();
    if ranges.is_empty() {
        return Ok(left);
    }
    let mut wanted = Condition::any();
    for (user, from, to) in &ranges {
        wanted = wanted.add(
            Condition::all()
                .add(order_events::Column::UserId.eq(*user))
                .add(order_events::Column::Sequence.gt(*from))
                .add(order_events::Column::Sequence.lte(*to)),
        );
    }
    // Only fills move P&L state; the cursor passes the other events all the same.
    let events = order_events::Entity::find()
        .filter(wanted)
        .filter(order_events::Column::FillId.is_not_null())
        .order_by_asc(order_events::Column::UserId)
        .order_by_asc(order_events::Column::Sequence)
        .limit(most_events)
        .all(txn)
        .await?;
    // Where each cursor moves: to the end of the user's events, unless the read
    // stopped short of it.
    let mut moves: BTreeMap<Uuid, i64> = ranges.iter().map(|(u, _, to)| (*u, *to)).collect();
    if events.len() as u64 == most_events {
        if let Some(last) = events.last() {
            moves.insert(last.user_id, last.sequence);
            left.unfinished.push(last.user_id);
            let unread: Vec<Uuid> = moves
                .range(last.user_id..)
                .skip(1)
                .map(|(u, _)| *u)
                .collect();
            for user in unread {
                moves.remove(&user);
                left.unfinished.push(user);
            }
        }
    }
    let steps = steps_of(txn, &events).await?;
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        let mut bulk = Bulk::default();
        in_bulk::fold_steps(txn, steps, &mut bulk).await?;
        let mut cursors = Columns::new(&[("user_id", "uuid"), ("last", "bigint")]);
        for (user, last) in &moves {
            cursors.push([user.cell(), last.cell()]);
        }
        bulk.add(|p| {
            format!(
                "UPDATE portfolio_cursors AS c SET last_sequence = v.last FROM ({}) AS v \
                 WHERE c.user_id = v.user_id",
                cursors.select(p, "v")
            )
        });
        bulk.run(txn).await?;
    } else {
        for step in steps {
            apply(txn, step.user, &step.asset, step.movement, step.at).await?;
        }
        for (user, last) in moves {
            portfolio_cursors::Entity::update_many()
                .col_expr(portfolio_cursors::Column::LastSequence, Expr::value(last))
                .filter(portfolio_cursors::Column::UserId.eq(user))
                .exec(txn)
                .await?;
        }
    }
    Ok(left)
}

/// The movements of the fills `events` point at, in the events' order.
async fn steps_of(
    txn: &DatabaseTransaction,
    events: &[order_events::Model],
) -> Result<Vec<Step>, ApiError> {
    let fill_ids: Vec<Uuid> = events.iter().filter_map(|e| e.fill_id).collect();
    if fill_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut fills: HashMap<Uuid, fills::Model> = HashMap::new();
    for chunk in fill_ids.chunks(500) {
        fills.extend(
            fills::Entity::find()
                .filter(fills::Column::Id.is_in(chunk.to_vec()))
                .all(txn)
                .await?
                .into_iter()
                .map(|f| (f.id, f)),
        );
    }
    let pairs: HashMap<String, (String, String)> = markets::Entity::find()
        .all(txn)
        .await?
        .into_iter()
        .map(|m| (m.symbol, (m.base_asset, m.quote_asset)))
        .collect();
    let mut steps = Vec::new();
    for id in fill_ids {
        // Each fill once, even if two events were to point at it.
        let Some(fill) = fills.remove(&id) else {
            continue;
        };
        let Some((base, quote)) = pairs.get(&fill.market) else {
            return Err(ApiError::internal(anyhow::anyhow!(
                "fill of unknown market {}",
                fill.market
            )));
        };
        steps.extend(movements_of(&fill, (base, quote)));
    }
    Ok(steps)
}

/// Folds in, on this replica, the users whose order events it publishes.
pub struct Follower;

impl Follower {
    /// Runs until shutdown.
    pub async fn run(state: AppState) {
        let mut shutdown = state.shutdown.clone();
        let mut published = state.events.published_here();
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due: BTreeSet<Uuid> = BTreeSet::new();
        // Users someone else was folding in, and when to try them again.
        let mut later: BTreeSet<Uuid> = BTreeSet::new();
        let mut retry_at = tokio::time::Instant::now();
        // When the last fold began: the next waits until `GATHER` after it.
        let start = tokio::time::Instant::now();
        let mut last_fold = start.checked_sub(GATHER).unwrap_or(start);
        loop {
            let mut look = false;
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                got = published.recv() => match got {
                    Ok(event) => note(&event, &mut due),
                    Err(RecvError::Lagged(_)) => look = true,
                    Err(RecvError::Closed) => return,
                },
                _ = sweep.tick() => look = true,
                _ = tokio::time::sleep_until(retry_at), if !later.is_empty() => {}
            }
            if !later.is_empty() && tokio::time::Instant::now() >= retry_at {
                due.append(&mut later);
            }
            loop {
                // Whatever else has committed meanwhile joins this fold.
                loop {
                    match published.try_recv() {
                        Ok(event) => note(&event, &mut due),
                        Err(TryRecvError::Lagged(_)) => look = true,
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    }
                }
                if std::mem::take(&mut look) {
                    match users_behind(state.db.conn(), MOST_USERS as u64).await {
                        Ok(users) => due.extend(users),
                        Err(error) => tracing::warn!(error = ?error, "P&L sweep failed"),
                    }
                }
                if due.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() < last_fold + GATHER {
                    tokio::select! {
                        _ = shutdown.wait_for(|stop| *stop) => return,
                        _ = tokio::time::sleep_until(last_fold + GATHER) => {}
                    }
                    continue;
                }
                last_fold = tokio::time::Instant::now();
                let users: Vec<Uuid> = std::mem::take(&mut due).into_iter().collect();
                let (now, rest) = users.split_at(users.len().min(MOST_USERS));
                due.extend(rest.iter().copied());
                let now = now.to_vec();
                let result = state
                    .db
                    .write(|txn| Box::pin(fold_users(txn, now.clone(), Locking::Skip)))
                    .await;
                match result {
                    Ok(left) => {
                        if later.is_empty() && !left.skipped.is_empty() {
                            retry_at = tokio::time::Instant::now() + RETRY;
                        }
                        later.extend(left.skipped);
                        due.extend(left.unfinished);
                    }
                    Err(error) => {
                        // A database outage must not lose the work: the sweep finds
                        // these users again.
                        tracing::warn!(error = ?error, users = now.len(), "P&L fold failed");
                        break;
                    }
                }
            }
        }
    }
}

/// Notes the user of an order event as due.
fn note(event: &Arc<Event>, due: &mut BTreeSet<Uuid>) {
    if let Event::OrderUpdate { user_id, .. } = event.as_ref() {
        due.insert(*user_id);
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use rust_decimal::Decimal;
    use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
    use uuid::Uuid;

    use super::{fold_users_reading, Locking};
    use crate::db::Db;
    use crate::metrics::Metrics;
    use entity::{
        fills, order_events, portfolio_cursors, portfolio_positions, user_sequences, Amount,
    };

    /// Stores `user`'s script as matching would leave it: a fill and its event each.
    async fn trades(db: &Db, user: Uuid, script: &[(&str, i64)]) {
        let start = Utc::now() - Duration::hours(1);
        for (n, (side, price)) in script.iter().enumerate() {
            let fill = fills::Model {
                id: Uuid::now_v7(),
                order_id: Uuid::now_v7(),
                user_id: user,
                trade_id: Uuid::now_v7(),
                market: "BTC-USD".to_owned(),
                side: (*side).to_owned(),
                price: Amount(Decimal::from(*price)),
                quantity: Amount(Decimal::ONE),
                fee: Amount::ZERO,
                fee_asset: "USD".to_owned(),
                liquidity: "TAKER".to_owned(),
                created_at: start + Duration::minutes(n as i64),
                cost_rate: Some(Amount(Decimal::ONE)),
            };
            fills::ActiveModel::from(fill.clone())
                .reset_all()
                .insert(db.conn())
                .await
                .expect("fill stored");
            order_events::ActiveModel::from(order_events::Model {
                user_id: user,
                sequence: n as i64 + 1,
                kind: "FILLED".to_owned(),
                order_id: fill.order_id,
                fill_id: Some(fill.id),
                created_at: fill.created_at,
            })
            .reset_all()
            .insert(db.conn())
            .await
            .expect("event stored");
        }
        user_sequences::ActiveModel::from(user_sequences::Model {
            user_id: user,
            last_sequence: script.len() as i64,
        })
        .reset_all()
        .insert(db.conn())
        .await
        .expect("sequence stored");
    }

    async fn cursor(db: &Db, user: Uuid) -> i64 {
        portfolio_cursors::Entity::find_by_id(user)
            .one(db.conn())
            .await
            .expect("cursor read")
            .map_or(0, |c| c.last_sequence)
    }

    async fn fifo(db: &Db, user: Uuid) -> Option<portfolio_positions::Model> {
        portfolio_positions::Entity::find()
            .filter(portfolio_positions::Column::UserId.eq(user))
            .filter(portfolio_positions::Column::Asset.eq("BTC"))
            .filter(portfolio_positions::Column::Method.eq("FIFO"))
            .one(db.conn())
            .await
            .expect("position read")
    }

    /// A backlog longer than one read is folded in over several transactions, each
    /// moving the cursor exactly as far as it read, in the events' order: the sale at
    /// the end consumes the first lot, whichever fold it lands in.
    #[tokio::test]
    async fn a_backlog_is_folded_in_a_read_at_a_time_in_order() {
        let db = Db::connect("sqlite::memory:", 1, &Metrics::new())
            .await
            .expect("an in-memory database");
        db.migrate().await.expect("the migrations apply");
        crate::service::markets::seed_demo(db.conn())
            .await
            .expect("demo markets");
        let script = [
            ("BUY", 100),
            ("BUY", 200),
            ("BUY", 300),
            ("BUY", 400),
            ("SELL", 500),
        ];
        let (first, second) = {
            let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
            (a.min(b), a.max(b))
        };
        trades(&db, first, &script).await;
        trades(&db, second, &script).await;

        let fold = |users: Vec<Uuid>| {
            let db = db.clone();
            async move {
                let txn = db.conn().begin().await.expect("begin");
                let left = fold_users_reading(&txn, users, Locking::Wait, 3)
                    .await
                    .expect("folded");
                txn.commit().await.expect("commit");
                left
            }
        };
        // Events are read user by user: three of the first user's, none of the other's.
        let left = fold(vec![first, second]).await;
        assert!(left.skipped.is_empty());
        assert_eq!(left.unfinished, vec![first, second]);
        assert_eq!(
            (cursor(&db, first).await, cursor(&db, second).await),
            (3, 0)
        );
        let position = fifo(&db, first).await.expect("a position");
        assert_eq!(position.quantity.0, Decimal::from(3));
        assert_eq!(position.cost.0, Decimal::from(600));
        assert!(fifo(&db, second).await.is_none());

        let left = fold(vec![first, second]).await;
        assert_eq!(left.unfinished, vec![second]);
        assert_eq!(
            (cursor(&db, first).await, cursor(&db, second).await),
            (5, 1)
        );
        let left = fold(vec![second]).await;
        assert_eq!(left.unfinished, vec![second]);
        let left = fold(vec![second]).await;
        assert!(left.unfinished.is_empty(), "{left:?}");
        for user in [first, second] {
            assert_eq!(cursor(&db, user).await, 5);
            let position = fifo(&db, user).await.expect("a position");
            assert_eq!(position.quantity.0, Decimal::from(3));
            // 100 + 200 + 300 + 400 bought, the 100 lot sold at 500.
            assert_eq!(position.cost.0, Decimal::from(900));
            assert_eq!(position.realized_pnl.0, Decimal::from(400));
        }
        // Nothing is folded twice: another fold finds nothing to do.
        let left = fold(vec![first, second]).await;
        assert!(left.unfinished.is_empty() && left.skipped.is_empty());
        assert_eq!(
            fifo(&db, first).await.expect("a position").quantity.0,
            Decimal::from(3)
        );
    }
}
