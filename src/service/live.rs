//! Live data for subscriptions: a user's order updates and fills (resumable, gap-free),
//! their price alerts, and market tickers.
//!
//! Order updates never get lost. A feed subscribes to the bus *before* it reads the
//! database, replays every stored event after the client's cursor, then follows live
//! events, skipping those at or below the cursor. A live event that shows a gap (an
//! event another replica published while Redis was down, or events dropped because
//! this subscriber's buffer was full) sends the feed back to the database to catch up
//! from its cursor. So the client sees each sequence number once, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::Stream;
use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::watch;
use uuid::Uuid;

use super::{market_data, markets};
use crate::error::ApiError;
use crate::events::{Delivery, Event, Feed, Topic};
use crate::state::AppState;
use entity::{fills, order_events, orders, user_sequences};

/// Live events buffered per order or fill subscription before it falls back to
/// replaying from the database.
const ORDER_FEED_BUFFER: usize = 64;
/// Live alerts buffered per subscription before the client is told it missed some.
const ALERT_FEED_BUFFER: usize = 32;
/// Events read from the database per replay query.
const REPLAY_PAGE: u64 = 200;

/// One change to one of the user's orders.
#[derive(Clone, Debug)]
pub struct OrderUpdate {
    pub sequence: i64,
    pub kind: String,
    pub order: orders::Model,
    pub fill: Option<fills::Model>,
}

/// What a feed delivers: order updates, or only fills.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Updates,
    Fills,
}

struct OrderFeed {
    state: AppState,
    user_id: Uuid,
    market: Option<String>,
    wanted: Wanted,
    feed: Feed,
    /// The last sequence read (from the database or the bus).
    cursor: i64,
    catching_up: bool,
    ready: VecDeque<OrderUpdate>,
    done: bool,
}

/// The user's order updates after `after_sequence` (replayed from the database), then
/// live. Without `after_sequence`, only what happens from now on.
pub async fn order_updates(
    state: &AppState,
    user_id: Uuid,
    market: Option<String>,
    after_sequence: Option<i64>,
) -> Result<impl Stream<Item = Result<OrderUpdate, ApiError>>, ApiError> {
    open_order_feed(state, user_id, market, after_sequence, Wanted::Updates).await
}

/// The user's fills as they happen; with `after_sequence` (an order update sequence),
/// first those recorded after it.
pub async fn fills(
    state: &AppState,
    user_id: Uuid,
    market: Option<String>,
    after_sequence: Option<i64>,
) -> Result<impl Stream<Item = Result<fills::Model, ApiError>>, ApiError> {
    let updates = open_order_feed(state, user_id, market, after_sequence, Wanted::Fills).await?;
    Ok(futures_util::StreamExt::filter_map(
        updates,
        |update| async move {
            match update {
                Ok(update) => update.fill.map(Ok),
                Err(error) => Some(Err(error)),
            }
        },
    ))
}

async fn checked_market(
    state: &AppState,
    market: Option<String>,
) -> Result<Option<String>, ApiError> {
    match market {
        None => Ok(None),
        Some(symbol) => markets::find_market(state.db.conn(), &symbol)
            .await?
            .map(|m| Some(m.symbol))
            .ok_or_else(|| ApiError::bad_input("market", "unknown market")),
    }
}

async fn open_order_feed(
    state: &AppState,
    user_id: Uuid,
    market: Option<String>,
    after_sequence: Option<i64>,
    wanted: Wanted,
) -> Result<impl Stream<Item = Result<OrderUpdate, ApiError>>, ApiError> {
    let market = checked_market(state, market).await?;
    // Subscribe first: whatever commits from here on is either in the database read
    // below or arrives on the feed (or both, and the cursor drops the repeat).
    let feed = state.events.feed(Topic::Orders(user_id), ORDER_FEED_BUFFER);
    let last = user_sequences::Entity::find_by_id(user_id)
        .one(state.db.conn())
        .await?
        .map_or(0, |row| row.last_sequence);
    let cursor = match after_sequence {
        None => last,
        Some(n) if n < 0 => {
            return Err(ApiError::bad_input("afterSequence", "must not be negative"))
        }
        Some(n) if n > last => {
            return Err(ApiError::bad_input(
                "afterSequence",
                format!("is ahead of your latest order event ({last})"),
            ))
        }
        Some(n) => n,
    };
    let feed = OrderFeed {
        state: state.clone(),
        user_id,
        market,
        wanted,
        feed,
        cursor,
        catching_up: cursor < last,
        ready: VecDeque::new(),
        done: false,
    };
    Ok(futures_util::stream::unfold(feed, |mut feed| async move {
        let item = feed.next().await?;
        if item.is_err() {
            feed.done = true;
        }
        Some((item, feed))
    }))
}

impl OrderFeed {
    async fn next(&mut self) -> Option<Result<OrderUpdate, ApiError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(update) = self.ready.pop_front() {
                return Some(Ok(update));
            }
            // The database work is boxed so that the feed, idle most of its life,
            // does not keep room for those futures (ten thousand subscribers each
            // hold one).
            if self.catching_up {
                if let Err(error) = Box::pin(self.replay_page()).await {
                    return Some(Err(error));
                }
                continue;
            }
            match self.feed.recv().await? {
                Delivery::Lagged => self.catching_up = true,
                Delivery::Event(event) => {
                    let Event::OrderUpdate {
                        sequence,
                        kind,
                        order_id,
                        fill_id,
                        ..
                    } = &*event
                    else {
                        continue;
                    };
                    if *sequence <= self.cursor {
                        continue;
                    }
                    if *sequence > self.cursor + 1 {
                        self.catching_up = true;
                        continue;
                    }
                    self.cursor = *sequence;
                    if self.wanted == Wanted::Fills && fill_id.is_none() {
                        continue;
                    }
                    let row = order_events::Model {
                        user_id: self.user_id,
                        sequence: *sequence,
                        kind: kind.clone(),
                        order_id: *order_id,
                        fill_id: *fill_id,
                        created_at: Utc::now(),
                    };
                    if let Err(error) = Box::pin(self.resolve(vec![row])).await {
                        return Some(Err(error));
                    }
                }
            }
        }
    }

    /// Reads the next page of stored events after the cursor.
    async fn replay_page(&mut self) -> Result<(), ApiError> {
        let rows = order_events::Entity::find()
            .filter(order_events::Column::UserId.eq(self.user_id))
            .filter(order_events::Column::Sequence.gt(self.cursor))
            .order_by_asc(order_events::Column::Sequence)
            .limit(REPLAY_PAGE)
            .all(self.state.db.conn())
            .await?;
        if (rows.len() as u64) < REPLAY_PAGE {
            self.catching_up = false;
        }
        if let Some(last) = rows.last() {
            self.cursor = last.sequence;
        }
        let rows = rows
            .into_iter()
            .filter(|row| self.wanted == Wanted::Updates || row.fill_id.is_some())
            .collect();
        self.resolve(rows).await
    }

    /// Loads the orders and fills of `rows` (two queries) and queues the updates the
    /// client asked for.
    async fn resolve(&mut self, rows: Vec<order_events::Model>) -> Result<(), ApiError> {
        if rows.is_empty() {
            return Ok(());
        }
        let conn = self.state.db.conn();
        let order_ids: Vec<Uuid> = rows.iter().map(|r| r.order_id).collect();
        let orders: HashMap<Uuid, orders::Model> = orders::Entity::find()
            .filter(orders::Column::Id.is_in(order_ids))
            .all(conn)
            .await?
            .into_iter()
            .map(|o| (o.id, o))
            .collect();
        let fill_ids: Vec<Uuid> = rows.iter().filter_map(|r| r.fill_id).collect();
        let mut fills: HashMap<Uuid, fills::Model> = if fill_ids.is_empty() {
            HashMap::new()
        } else {
            fills::Entity::find()
                .filter(fills::Column::Id.is_in(fill_ids))
                .all(conn)
                .await?
                .into_iter()
                .map(|f| (f.id, f))
                .collect()
        };
        for row in rows {
            let Some(order) = orders.get(&row.order_id) else {
                return Err(ApiError::internal(anyhow::anyhow!(
                    "order event {} of a missing order",
                    row.sequence
                )));
            };
            if order.user_id != self.user_id {
                continue;
            }
            if self.market.as_ref().is_some_and(|m| *m != order.market) {
                continue;
            }
            self.ready.push_back(OrderUpdate {
                sequence: row.sequence,
                kind: row.kind,
                order: order.clone(),
                fill: row.fill_id.and_then(|id| fills.remove(&id)),
            });
        }
        Ok(())
    }
}

/// A price alert of the user that fired.
#[derive(Clone, Debug)]
pub struct AlertFired {
    pub alert_id: Uuid,
    pub notification_id: Uuid,
    pub market: String,
    pub price: Decimal,
    pub triggered_at: DateTime<Utc>,
}

/// The user's alerts as they fire. A subscriber too slow to keep up is told how to
/// find what it missed (every fired alert is also a stored notification).
pub fn alerts_fired(
    state: &AppState,
    user_id: Uuid,
) -> impl Stream<Item = Result<AlertFired, ApiError>> {
    let feed = state.events.feed(Topic::Alerts(user_id), ALERT_FEED_BUFFER);
    futures_util::stream::unfold(feed, |mut feed| async move {
        loop {
            match feed.recv().await? {
                Delivery::Lagged => {
                    let error = ApiError::Conflict(
                        "this subscription fell behind and missed some alerts; read them \
                         with `notifications(unreadOnly: true)`"
                            .into(),
                    );
                    return Some((Err(error), feed));
                }
                Delivery::Event(event) => {
                    if let Event::PriceAlertTriggered {
                        alert_id,
                        notification_id,
                        market,
                        price,
                        triggered_at,
                        ..
                    } = &*event
                    {
                        let fired = AlertFired {
                            alert_id: *alert_id,
                            notification_id: *notification_id,
                            market: market.clone(),
                            price: *price,
                            triggered_at: *triggered_at,
                        };
                        return Some((Ok(fired), feed));
                    }
                }
            }
        }
    })
}

/// A market's ticker: last price and 24-hour statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticker {
    pub market: String,
    pub last_price: Option<Decimal>,
    /// The first trade price inside the 24-hour window, for `change24h`.
    pub open_price: Option<Decimal>,
    pub volume24h: Decimal,
    pub at: DateTime<Utc>,
}

impl Ticker {
    /// Relative change over 24 hours (`0.05` is +5%); `None` without trades.
    pub fn change24h(&self) -> Option<Decimal> {
        match (self.open_price, self.last_price) {
            (Some(open), Some(last)) if !open.is_zero() => (last - open).checked_div(open),
            _ => None,
        }
    }

    fn apply_trade(&mut self, price: Decimal, quantity: Decimal, at: DateTime<Utc>) {
        self.open_price.get_or_insert(price);
        self.last_price = Some(price);
        self.volume24h += quantity;
        self.at = at;
    }
}

/// How often a live ticker is recomputed from the database, so that trades leaving the
/// 24-hour window (and any trade this replica did not hear of) are accounted for.
const TICKER_RESEED: Duration = Duration::from_secs(60);
/// Trades buffered for a ticker before it recomputes from the database instead.
const TICKER_FEED_BUFFER: usize = 1024;

/// The live tickers of this process: one task and one value per market that has
/// subscribers, shared by all of them, updated from trade events without touching the
/// database per trade. A slow subscriber simply skips to the latest value.
#[derive(Default)]
pub struct TickerBoard {
    markets: Mutex<HashMap<String, watch::Sender<Arc<Ticker>>>>,
}

impl TickerBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Arc<Ticker>>>> {
        self.markets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn existing(&self, symbol: &str) -> Option<watch::Receiver<Arc<Ticker>>> {
        self.lock().get(symbol).map(watch::Sender::subscribe)
    }
}

/// Subscribes to a market's ticker: the current value at once, then every change.
pub async fn ticker(
    state: &AppState,
    market: &str,
) -> Result<impl Stream<Item = Arc<Ticker>>, ApiError> {
    let symbol = markets::find_market(state.db.conn(), market)
        .await?
        .ok_or_else(|| ApiError::bad_input("market", "unknown market"))?
        .symbol;
    let board = state.tickers.clone();
    let receiver = match board.existing(&symbol) {
        Some(receiver) => receiver,
        None => {
            let trades = state
                .events
                .feed(Topic::Market(symbol.clone()), TICKER_FEED_BUFFER);
            let seed = load_ticker(state, &symbol).await?;
            let mut markets = board.lock();
            match markets.get(&symbol) {
                // Another subscriber started it meanwhile.
                Some(sender) => sender.subscribe(),
                None => {
                    let (sender, receiver) = watch::channel(Arc::new(seed));
                    markets.insert(symbol.clone(), sender.clone());
                    tokio::spawn(run_ticker(state.clone(), symbol, sender, trades));
                    receiver
                }
            }
        }
    };
    Ok(futures_util::stream::unfold(
        (receiver, true),
        |(mut receiver, first)| async move {
            if !first && receiver.changed().await.is_err() {
                return None;
            }
            let value = receiver.borrow_and_update().clone();
            Some((value, (receiver, false)))
        },
    ))
}

async fn load_ticker(state: &AppState, symbol: &str) -> Result<Ticker, ApiError> {
    let conn = state.db.conn();
    let market = markets::find_market(conn, symbol)
        .await?
        .ok_or(ApiError::NotFound("market"))?;
    let stats = market_data::day_stats(conn, symbol).await?;
    let since = Utc::now() - chrono::Duration::hours(24);
    let first = fills::Entity::find()
        .filter(fills::Column::Market.eq(symbol))
        .filter(fills::Column::Liquidity.eq("TAKER"))
        .filter(fills::Column::CreatedAt.gte(since))
        .order_by_asc(fills::Column::Id)
        .one(conn)
        .await?;
    let latest = market_data::recent_trades(conn, symbol, 1).await?;
    Ok(Ticker {
        market: market.symbol,
        last_price: market.last_price.map(|p| p.0),
        open_price: first.map(|f| f.price.0),
        volume24h: stats.volume,
        at: latest.first().map_or(market.updated_at, |t| t.created_at),
    })
}

/// Paces pushes of a value that may change very often: a change after a quiet spell
/// goes out at once, later ones are held and go out together at the end of the
/// interval.
struct Pacer {
    interval: Duration,
    next: tokio::time::Instant,
    holding: bool,
}

/// What to do with a change.
#[derive(Debug, PartialEq, Eq)]
enum Pace {
    Now,
    /// Hold it, and push at this moment.
    At(tokio::time::Instant),
    /// Already held: it goes out with the push already due.
    Held,
}

impl Pacer {
    fn new(interval: Duration, now: tokio::time::Instant) -> Self {
        Pacer {
            interval,
            next: now,
            holding: false,
        }
    }

    fn changed(&mut self, now: tokio::time::Instant) -> Pace {
        if self.holding {
            Pace::Held
        } else if now >= self.next {
            self.next = now + self.interval;
            Pace::Now
        } else {
            self.holding = true;
            Pace::At(self.next)
        }
    }

    fn holding(&self) -> bool {
        self.holding
    }

    fn pushed_held(&mut self, now: tokio::time::Instant) {
        self.holding = false;
        self.next = now + self.interval;
    }
}

async fn run_ticker(
    state: AppState,
    symbol: String,
    sender: watch::Sender<Arc<Ticker>>,
    mut trades: Feed,
) {
    let mut current = (**sender.borrow()).clone();
    let mut reseed = tokio::time::interval(TICKER_RESEED);
    reseed.tick().await;
    let mut shutdown = state.shutdown.clone();
    // Every push reaches every subscriber of the market (a socket write each), so a
    // busy market pushes at most once per interval, with the latest value; a trade
    // after a quiet spell still goes out at once.
    let mut pacer = Pacer::new(state.config.ticker_interval, tokio::time::Instant::now());
    let held = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(held);
    loop {
        let mut stale = false;
        tokio::select! {
            delivery = trades.recv() => match delivery {
                Some(Delivery::Event(event)) => {
                    if let Event::Trade { price, quantity, at, .. } = &*event {
                        current.apply_trade(*price, *quantity, *at);
                        match pacer.changed(tokio::time::Instant::now()) {
                            Pace::Now => {
                                sender.send_replace(Arc::new(current.clone()));
                            }
                            Pace::At(due) => held.as_mut().reset(due),
                            Pace::Held => {}
                        }
                    }
                }
                Some(Delivery::Lagged) => stale = true,
                None => break,
            },
            _ = &mut held, if pacer.holding() => {
                pacer.pushed_held(tokio::time::Instant::now());
                sender.send_replace(Arc::new(current.clone()));
            }
            _ = reseed.tick() => stale = true,
            _ = sender.closed() => {
                let mut markets = state.tickers.lock();
                // A subscriber may have joined while we were waking up.
                if sender.receiver_count() == 0 {
                    markets.remove(&symbol);
                    break;
                }
            }
            _ = shutdown.changed() => break,
        }
        if stale {
            match load_ticker(&state, &symbol).await {
                Ok(fresh) => {
                    if fresh != current {
                        current = fresh;
                        sender.send_replace(Arc::new(current.clone()));
                    }
                }
                Err(error) => tracing::warn!(%error, market = %symbol, "ticker refresh failed"),
            }
        }
    }
    let mut markets = state.tickers.lock();
    if markets
        .get(&symbol)
        .is_some_and(|s| s.same_channel(&sender))
    {
        markets.remove(&symbol);
    }
}

/// Announces, after commit, that sessions of a user were revoked (`session_id`, or
/// every session but `except`), so their open WebSockets close on every replica.
pub async fn sessions_revoked(
    state: &AppState,
    user_id: Uuid,
    session_id: Option<Uuid>,
    except: Option<Uuid>,
) {
    state
        .events
        .publish(vec![Event::SessionsRevoked {
            user_id,
            session_id,
            except,
        }])
        .await;
}

/// Whether a session can still be used (for connections that may have missed its
/// revocation).
pub async fn session_active(state: &AppState, session_id: Uuid) -> Result<bool, ApiError> {
    Ok(entity::sessions::Entity::find_by_id(session_id)
        .one(state.db.conn())
        .await?
        .is_some_and(|s| s.is_active(Utc::now())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_ticker_pushes_once_per_interval_and_a_quiet_one_at_once() {
        let start = tokio::time::Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        let mut pacer = Pacer::new(Duration::from_millis(250), start);
        assert_eq!(pacer.changed(ms(0)), Pace::Now);
        // Changes within the interval are held for one push at its end.
        assert_eq!(pacer.changed(ms(10)), Pace::At(ms(250)));
        assert_eq!(pacer.changed(ms(20)), Pace::Held);
        assert_eq!(pacer.changed(ms(249)), Pace::Held);
        assert!(pacer.holding());
        pacer.pushed_held(ms(250));
        assert!(!pacer.holding());
        // The held push starts the next interval.
        assert_eq!(pacer.changed(ms(300)), Pace::At(ms(500)));
        pacer.pushed_held(ms(500));
        // After a quiet spell, at once.
        assert_eq!(pacer.changed(ms(2000)), Pace::Now);
        // No interval: every change at once.
        let mut eager = Pacer::new(Duration::ZERO, start);
        assert_eq!(eager.changed(ms(0)), Pace::Now);
        assert_eq!(eager.changed(ms(0)), Pace::Now);
    }
}
