//! Orders: placement with matching, cancellation, and reads.
//!
//! Placing or cancelling runs in one transaction that first locks the market's row
//! (PostgreSQL `SELECT … FOR UPDATE`; SQLite has a single writer anyway), so exactly one
//! writer at a time changes a market's book, across any number of server processes. It
//! reads only the best opposite orders it needs through the book index, lets the pure
//! planner (`domain::matching`) decide, then writes orders, fills, ledger entries and
//! per-user order events before committing. Orders that arrive while a placement runs
//! are placed together in one such transaction, whatever their markets
//! (`service::order_batches`, `LockedMarkets`); on
//! PostgreSQL a placement's writes are held and sent together at the end of it
//! (`service::order_writes`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend,
    DatabaseTransaction, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::bulk::{Bulk, Cell, Columns, Params};
use super::ledger::{self, Draft};
use super::markets;
use super::order_batches::OrderBatches;
use super::order_writes::{Locking, Pending, Renumbering};
use crate::auth::Viewer;
use crate::domain::fees::{self, FeeTier};
use crate::domain::ledger::{AccountKind, AccountRef, Leg};
use crate::domain::matching::{
    self, ExpireReason, Maker, SelfTradePrevention, Side, TakerOutcome, TimeInForce,
};
use crate::domain::order_rules::{self, MarketRules, OrderRequest, OrderType};
use crate::domain::pricing::PriceTable;
use crate::error::ApiError;
use crate::events::{Collector, Event};
use crate::state::AppState;
use entity::{
    fills, markets as market_rows, order_events, orders, user_daily_volumes, user_sequences, Amount,
};

/// Order statuses as stored.
pub mod status {
    pub const UNTRIGGERED: &str = "UNTRIGGERED";
    pub const OPEN: &str = "OPEN";
    pub const PARTIALLY_FILLED: &str = "PARTIALLY_FILLED";
    pub const FILLED: &str = "FILLED";
    pub const CANCELLED: &str = "CANCELLED";
    pub const REJECTED: &str = "REJECTED";
    pub const EXPIRED: &str = "EXPIRED";
}

/// How many resting orders one read of the book fetches; the read repeats with a
/// larger page only when a taker sweeps past it.
const BOOK_PAGE: u64 = 64;

/// A new order, as the API receives it (already parsed).
#[derive(Clone, Debug)]
pub struct NewOrder {
    pub market: String,
    pub side: Side,
    pub order_type: OrderType,
    pub quantity: Option<Decimal>,
    pub price: Option<Decimal>,
    pub quote_quantity: Option<Decimal>,
    pub trigger_price: Option<Decimal>,
    pub time_in_force: TimeInForce,
    pub expire_at: Option<DateTime<Utc>>,
    pub post_only: bool,
    pub self_trade_prevention: SelfTradePrevention,
    pub client_order_id: Option<String>,
}

pub fn side_str(side: Side) -> &'static str {
    match side {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    }
}

pub fn type_str(order_type: OrderType) -> &'static str {
    match order_type {
        OrderType::Limit => "LIMIT",
        OrderType::Market => "MARKET",
        OrderType::StopLimit => "STOP_LIMIT",
    }
}

pub fn tif_str(tif: TimeInForce) -> &'static str {
    match tif {
        TimeInForce::Gtc => "GTC",
        TimeInForce::Ioc => "IOC",
        TimeInForce::Fok => "FOK",
        TimeInForce::Gtd => "GTD",
    }
}

pub fn stp_str(stp: SelfTradePrevention) -> &'static str {
    match stp {
        SelfTradePrevention::ExpireTaker => "EXPIRE_TAKER",
        SelfTradePrevention::ExpireMaker => "EXPIRE_MAKER",
        SelfTradePrevention::ExpireBoth => "EXPIRE_BOTH",
        SelfTradePrevention::None => "NONE",
    }
}

/// What placing would do (or did): the order and its fills.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order: orders::Model,
    pub fills: Vec<fills::Model>,
    /// The amount held when the order was accepted, in `order.held_asset`.
    pub hold: Decimal,
}

/// Places an order. With a `clientOrderId` already used by this user, returns that
/// order and changes nothing.
#[tracing::instrument(skip_all, fields(market = %input.market))]
pub async fn place(state: &AppState, viewer: &Viewer, input: NewOrder) -> Result<Placed, ApiError> {
    // KYC: the viewer's tier must allow trading (configuration, `KYC_TIER_LIMITS`).
    super::kyc::check_can_trade(&state.config, viewer)?;
    let user_id = viewer.user_id();
    if let Some(client_order_id) = &input.client_order_id {
        let client_order_id = client_order_id.trim();
        if client_order_id.is_empty() || client_order_id.len() > 64 {
            return Err(ApiError::bad_input(
                "input.clientOrderId",
                "must be 1 to 64 characters",
            ));
        }
        if let Some(existing) = find_by_client_id(state.db.conn(), user_id, client_order_id).await?
        {
            return Ok(Placed {
                fills: fills_of(state.db.conn(), existing.id).await?,
                hold: Decimal::ZERO,
                order: existing,
            });
        }
    }
    let prepared = prepare(state, &input).await?;
    let result = OrderBatches::place(state, user_id, input.clone(), prepared).await;
    match result {
        Ok(placed) => Ok(placed),
        Err(ApiError::Internal(error)) if is_unique_violation(&error) => {
            // The same clientOrderId raced in from another request: return the winner.
            let client_order_id = input.client_order_id.as_deref().unwrap_or_default().trim();
            match find_by_client_id(state.db.conn(), user_id, client_order_id).await? {
                Some(order) => Ok(Placed {
                    fills: fills_of(state.db.conn(), order.id).await?,
                    hold: Decimal::ZERO,
                    order,
                }),
                None => Err(ApiError::Internal(error)),
            }
        }
        Err(error) => Err(error),
    }
}

/// Runs placement in a transaction that is always rolled back: what would happen now.
pub async fn preview(
    state: &AppState,
    viewer: &Viewer,
    input: NewOrder,
) -> Result<Placed, ApiError> {
    let prepared = prepare(state, &input).await?;
    let user_id = viewer.user_id();
    state
        .db
        .dry_run(|txn| {
            let (input, prepared) = (input.clone(), prepared.clone());
            Box::pin(async move {
                let mut input = input;
                input.client_order_id = None;
                let order = (user_id, &input, &prepared);
                let events = Collector::default();
                let preview = execute_alone(txn, &events, order, Locking::UpFront).await?;
                Ok(preview.0)
            })
        })
        .await
}

fn is_unique_violation(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<sea_orm::DbErr>()
        .and_then(|e| e.sql_err())
        .is_some_and(|e| matches!(e, sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

async fn find_by_client_id<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    client_order_id: &str,
) -> Result<Option<orders::Model>, ApiError> {
    Ok(orders::Entity::find()
        .filter(orders::Column::UserId.eq(user_id))
        .filter(orders::Column::ClientOrderId.eq(client_order_id))
        .one(conn)
        .await?)
}

/// The market's rules, checked before the transaction starts.
#[derive(Clone, Debug)]
pub(super) struct Prepared {
    /// The market's symbol as stored.
    pub(super) symbol: String,
    rules: MarketRules,
    fee_tiers: Vec<FeeTier>,
}

/// Checks an order against its market's rules, which come from the in-process cache
/// after the market's first order. Whether the market trades is left to the placing
/// transaction, which reads it under the market's lock anyway.
async fn prepare(state: &AppState, input: &NewOrder) -> Result<Prepared, ApiError> {
    let (symbol, rules) = markets::rules(state, &input.market)
        .await?
        .ok_or_else(|| ApiError::bad_input("input.market", "unknown market"))?;
    if let Err(error) = check_request(input, &rules) {
        // A halted market refuses any order with CONFLICT before its input is judged.
        // Only this (rare) path reads the status here; valid orders find it under the
        // lock.
        let market = markets::find_market(state.db.conn(), &symbol).await?;
        if let Some(market) = market.filter(|m| m.status != markets::TRADING) {
            return Err(halted(&market));
        }
        return Err(error);
    }
    Ok(Prepared {
        symbol,
        rules,
        fee_tiers: state.config.fee_tiers.clone(),
    })
}

fn check_request(input: &NewOrder, rules: &MarketRules) -> Result<(), ApiError> {
    let request = OrderRequest {
        side: input.side,
        order_type: input.order_type,
        quantity: input.quantity,
        price: input.price,
        quote_quantity: input.quote_quantity,
        trigger_price: input.trigger_price,
        time_in_force: input.time_in_force,
        has_expire_at: input.expire_at.is_some(),
        post_only: input.post_only,
    };
    order_rules::validate(&request, rules).map_err(|e| ApiError::bad_input(e.field, e.message))?;
    if let Some(expire_at) = input.expire_at {
        if expire_at <= Utc::now() {
            return Err(ApiError::bad_input(
                "input.expireAt",
                "must be in the future",
            ));
        }
    }
    Ok(())
}

/// The refusal of an order in a halted market.
fn halted(market: &market_rows::Model) -> ApiError {
    ApiError::Conflict(format!("market {} is halted", market.symbol))
}

/// Locks the market row so one transaction at a time changes its book.
async fn lock_market(
    txn: &DatabaseTransaction,
    symbol: &str,
) -> Result<market_rows::Model, ApiError> {
    let mut query = market_rows::Entity::find_by_id(symbol.to_owned());
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        query = query.lock_exclusive();
    }
    query.one(txn).await?.ok_or(ApiError::NotFound("market"))
}

/// A market's row as the running transaction holds it locked, and the places in the
/// market's price-time queue handed out under that lock. The row is read once per
/// transaction rather than once per order of a batch, and the next sequence is written
/// once, by [`LockedMarket::finish`]: nobody else reads or changes the row before
/// commit. Made afresh for every attempt at a transaction, so an attempt rolled back
/// and tried again starts from the stored row.
pub(super) struct LockedMarket {
    /// The row as this transaction has left it so far (last price, next sequence).
    row: market_rows::Model,
    /// `next_sequence` as stored.
    stored_sequence: i64,
    /// Users whose ledger accounts in this market's assets and whose event sequences
    /// [`prelock_batch`] already read, and under [`Locking::UpFront`] locked (none
    /// outside a batch, and none on SQLite).
    locked_users: std::collections::BTreeSet<Uuid>,
    /// The transaction's audit entries, in the order of what they record, written
    /// together by [`LockedMarket::finish`].
    audit: Vec<AuditEntry>,
    /// A placement's writes on PostgreSQL, held until [`LockedMarket::finish`]; `None`
    /// where every write goes out at once (SQLite, amendments).
    pending: Option<Pending>,
    /// The last price as stored, for the price alerts of held trades.
    stored_last_price: Option<Amount>,
    /// Every market's last price as this transaction has left them, read at the first
    /// trade of a market quoted in another currency than P&L's cost currency.
    prices: Option<PriceTable>,
}

impl LockedMarket {
    /// Locks the market's row (PostgreSQL `SELECT … FOR UPDATE`).
    pub(super) async fn lock(txn: &DatabaseTransaction, symbol: &str) -> Result<Self, ApiError> {
        Ok(Self::of(lock_market(txn, symbol).await?))
    }

    /// The market as `row`, which the transaction has just locked.
    fn of(row: market_rows::Model) -> Self {
        LockedMarket {
            stored_sequence: row.next_sequence,
            stored_last_price: row.last_price,
            row,
            locked_users: Default::default(),
            audit: Vec::new(),
            pending: None,
            prices: None,
        }
    }

    /// Whether the transaction changed the market's row.
    fn changed(&self) -> bool {
        self.row.next_sequence != self.stored_sequence
            || self.row.last_price != self.stored_last_price
    }

    /// [`LockedMarket::lock`] for placing orders: on PostgreSQL their writes are held
    /// and sent together by [`LockedMarket::finish`] (`service::order_writes`).
    pub(super) async fn lock_for_placement(
        txn: &DatabaseTransaction,
        symbol: &str,
        locking: Locking,
    ) -> Result<Self, ApiError> {
        let mut locked = Self::lock(txn, symbol).await?;
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            locked.pending = Some(Pending::new(locking));
        }
        Ok(locked)
    }

    /// Whether every row `plan` writes is already locked, so that [`prelock`] has
    /// nothing left to do: the accounts and event sequences of the taker and of every
    /// maker it trades with (the market's fee accounts are locked with them). Whose
    /// orders a plan expires is not known without a read, so such a plan is never
    /// covered.
    fn covers(&self, taker: Uuid, plan: &matching::MatchPlan) -> bool {
        plan.expired_makers.is_empty()
            && self.locked_users.contains(&taker)
            && plan
                .fills
                .iter()
                .all(|fill| self.locked_users.contains(&fill.maker_owner))
    }

    /// Refuses orders while the market is halted.
    pub(super) fn ensure_trading(&self) -> Result<(), ApiError> {
        if self.row.status != markets::TRADING {
            return Err(halted(&self.row));
        }
        Ok(())
    }

    /// The price of this market's quote asset in P&L's cost currency right after a
    /// trade at `price`, which the fills of that trade keep: P&L folds them in after
    /// commit, valued as they were when they happened.
    async fn cost_rate(
        &mut self,
        txn: &DatabaseTransaction,
        price: Decimal,
    ) -> Result<Option<Decimal>, ApiError> {
        let cost_currency = super::portfolio::COST_CURRENCY;
        if self.row.quote_asset == cost_currency {
            return Ok(Some(Decimal::ONE));
        }
        let prices = match &mut self.prices {
            Some(prices) => prices,
            None => self
                .prices
                .insert(super::portfolio::price_table(txn).await?),
        };
        // This trade is the market's newest price, even before its row says so.
        prices.insert(&self.row.base_asset, &self.row.quote_asset, price);
        Ok(prices.price(&self.row.quote_asset, cost_currency))
    }

    /// The next place in the market's queue.
    fn take_sequence(&mut self) -> i64 {
        let sequence = self.row.next_sequence;
        self.row.next_sequence += 1;
        sequence
    }

    /// Writes what the transaction held back (see [`LockedMarkets::finish`]). Events
    /// collected before this carry the event numbers first taken: the caller applies
    /// the returned renumbering to them.
    pub(super) async fn finish(
        self,
        txn: &DatabaseTransaction,
        events: &Collector,
    ) -> Result<Renumbering, ApiError> {
        LockedMarkets::from(self).finish(txn, events).await
    }
}

/// The markets of one placing transaction, locked in symbol order. Orders that arrive
/// together are placed together whatever their markets: the traders' rows are read
/// once and written once for all of them, where a transaction per market would read
/// and lock the same accounts (a trader's quote currency, say) once per market, and
/// the markets would take turns on them. What belongs to the transaction rather than
/// to one market (its held writes and its price table) is lent to the market whose
/// order is running.
pub(super) struct LockedMarkets {
    markets: std::collections::BTreeMap<String, LockedMarket>,
    /// The market that holds the shared parts.
    holder: String,
}

impl From<LockedMarket> for LockedMarkets {
    fn from(locked: LockedMarket) -> Self {
        let holder = locked.row.symbol.clone();
        LockedMarkets {
            markets: [(holder.clone(), locked)].into(),
            holder,
        }
    }
}

impl LockedMarkets {
    /// Locks the rows of `symbols`, in symbol order, in one statement.
    async fn lock(
        txn: &DatabaseTransaction,
        symbols: &std::collections::BTreeSet<&str>,
        locking: Locking,
    ) -> Result<Self, ApiError> {
        let mut query = market_rows::Entity::find()
            .filter(market_rows::Column::Symbol.is_in(symbols.iter().copied()))
            .order_by_asc(market_rows::Column::Symbol);
        let postgres = txn.get_database_backend() == DatabaseBackend::Postgres;
        if postgres {
            query = query.lock_exclusive();
        }
        let mut markets = std::collections::BTreeMap::new();
        for row in query.all(txn).await? {
            markets.insert(row.symbol.clone(), LockedMarket::of(row));
        }
        if markets.len() != symbols.len() {
            return Err(ApiError::NotFound("market"));
        }
        let holder = symbols.first().map(|s| s.to_string()).unwrap_or_default();
        if postgres {
            if let Some(first) = markets.get_mut(&holder) {
                first.pending = Some(Pending::new(locking));
            }
        }
        Ok(LockedMarkets { markets, holder })
    }

    /// The locked market `symbol`, holding the transaction's shared parts.
    pub(super) fn market(&mut self, symbol: &str) -> Result<&mut LockedMarket, ApiError> {
        if self.holder != symbol {
            let (pending, prices) = match self.markets.get_mut(&self.holder) {
                Some(holder) => (holder.pending.take(), holder.prices.take()),
                None => (None, None),
            };
            let next = self.markets.get_mut(symbol).ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("market {symbol} is not locked"))
            })?;
            next.pending = pending;
            next.prices = prices;
            symbol.clone_into(&mut self.holder);
        }
        self.markets
            .get_mut(symbol)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("market {symbol} is not locked")))
    }

    /// Writes what the transaction held back: the markets' next sequences, when orders
    /// took places, the held writes of placements (with the price alerts and price
    /// candles of their trades) and the audit entries. Runs before commit; events of
    /// price alerts go to `events`. Events collected before this carry the event
    /// numbers first taken: the caller applies the returned renumbering to them.
    pub(super) async fn finish(
        mut self,
        txn: &DatabaseTransaction,
        events: &Collector,
    ) -> Result<Renumbering, ApiError> {
        let audit: Vec<AuditEntry> = self
            .markets
            .values_mut()
            .flat_map(|m| std::mem::take(&mut m.audit))
            .collect();
        let pending = self
            .markets
            .get_mut(&self.holder)
            .and_then(|h| h.pending.take());
        let Some(mut pending) = pending else {
            for locked in self.markets.values() {
                if locked.row.next_sequence != locked.stored_sequence {
                    market_rows::Entity::update_many()
                        .col_expr(
                            market_rows::Column::NextSequence,
                            Expr::value(locked.row.next_sequence),
                        )
                        .filter(market_rows::Column::Symbol.eq(locked.row.symbol.as_str()))
                        .exec(txn)
                        .await?;
                }
            }
            audit::record_all(txn, audit).await?;
            return Ok(Renumbering::default());
        };
        // Alerts judge the whole path from the price before these trades.
        let before: Vec<market_rows::Model> = self
            .markets
            .values()
            .filter(|locked| !pending.prices(&locked.row.symbol).is_empty())
            .map(|locked| market_rows::Model {
                last_price: locked.stored_last_price,
                ..locked.row.clone()
            })
            .collect();
        let moves: Vec<(&market_rows::Model, Vec<Decimal>)> = before
            .iter()
            .map(|row| (row, pending.prices(&row.symbol).to_vec()))
            .collect();
        if !moves.is_empty() {
            super::alerts::on_trades_in(txn, events, &moves).await?;
        }
        // The audit chains are the markets' own: their heads are taken before the
        // traders' rows are locked, so they keep them locked for no longer; the
        // entries go out with the other writes.
        let mut bulk = Bulk::default();
        audit::record_all_in(txn, audit, &mut bulk).await?;
        let renumbering = pending.settle(txn).await?;
        super::portfolio::in_bulk::candles_of(pending.fills(), &mut bulk);
        pending.write(&mut bulk);
        let mut rows = Columns::new(&[
            ("symbol", ""),
            ("next_sequence", "bigint"),
            ("last_price", "numeric?"),
            ("updated_at", "timestamptz"),
        ]);
        for row in self
            .markets
            .values()
            .filter(|m| m.changed())
            .map(|m| &m.row)
        {
            rows.push([
                row.symbol.cell(),
                row.next_sequence.cell(),
                row.last_price.map(|a| a.0).cell(),
                row.updated_at.cell(),
            ]);
        }
        bulk.add(|p| {
            format!(
                "UPDATE markets AS m SET next_sequence = v.next_sequence, \
                 last_price = v.last_price, updated_at = v.updated_at \
                 FROM ({}) AS v WHERE m.symbol = v.symbol",
                rows.select(p, "r")
            )
        });
        bulk.run(txn).await?;
        Ok(renumbering)
    }
}

/// Resting orders on `side` (`"BUY"` or `"SELL"`) of the book, in the words of that
/// side's partial index (`idx_orders_open_bids`, `idx_orders_open_asks`): with bound
/// values (`is_open = $1`, `side = $2`) instead, neither database could tell from a
/// prepared statement that the index applies.
pub(crate) fn in_open_book(side: &str) -> sea_orm::Condition {
    let side = if side == "BUY" {
        "\"orders\".\"side\" = 'BUY'"
    } else {
        "\"orders\".\"side\" = 'SELL'"
    };
    sea_orm::Condition::all()
        .add(Expr::col((orders::Entity, orders::Column::IsOpen)))
        .add(Expr::cust(side))
}

/// Loads up to `limit` resting orders that the taker could trade with, best first.
async fn load_makers(
    txn: &DatabaseTransaction,
    market: &str,
    taker_side: Side,
    limit_ticks: Option<i64>,
    limit: u64,
) -> Result<Vec<orders::Model>, ApiError> {
    Ok(makers_query(market, taker_side, limit_ticks, limit)
        .all(txn)
        .await?)
}

/// The read of [`load_makers`].
fn makers_query(
    market: &str,
    taker_side: Side,
    limit_ticks: Option<i64>,
    limit: u64,
) -> sea_orm::Select<orders::Entity> {
    let mut query = orders::Entity::find()
        .filter(orders::Column::Market.eq(market))
        .filter(in_open_book(side_str(taker_side.opposite())));
    query = match (taker_side, limit_ticks) {
        (Side::Buy, Some(ticks)) => query.filter(orders::Column::PriceTicks.lte(ticks)),
        (Side::Sell, Some(ticks)) => query.filter(orders::Column::PriceTicks.gte(ticks)),
        (_, None) => query,
    };
    query = match taker_side {
        Side::Buy => query.order_by_asc(orders::Column::PriceTicks),
        Side::Sell => query.order_by_desc(orders::Column::PriceTicks),
    };
    query.order_by_asc(orders::Column::Sequence).limit(limit)
}

fn remaining(order: &orders::Model) -> Decimal {
    order.quantity.map(|q| q.0).unwrap_or_default() - order.filled_quantity.0
}

/// Creates the user's event-sequence row the first time; a no-op afterwards.
async fn ensure_sequence_row(txn: &DatabaseTransaction, user_id: Uuid) -> Result<(), ApiError> {
    let insert = user_sequences::Entity::insert(user_sequences::ActiveModel {
        user_id: Set(user_id),
        last_sequence: Set(0),
    })
    .on_conflict(
        sea_orm::sea_query::OnConflict::column(user_sequences::Column::UserId)
            .do_nothing()
            .to_owned(),
    );
    let _ = insert.exec_without_returning(txn).await?;
    Ok(())
}

/// Takes the next number in the user's order event log: one `UPDATE … RETURNING`, plus
/// the row's creation the first time.
async fn next_sequence(txn: &DatabaseTransaction, user_id: Uuid) -> Result<i64, ApiError> {
    for _ in 0..2 {
        let updated = user_sequences::Entity::update_many()
            .col_expr(
                user_sequences::Column::LastSequence,
                Expr::col(user_sequences::Column::LastSequence).add(1),
            )
            .filter(user_sequences::Column::UserId.eq(user_id))
            .exec_with_returning(txn)
            .await?;
        if let Some(row) = updated.into_iter().next() {
            return Ok(row.last_sequence);
        }
        ensure_sequence_row(txn, user_id).await?;
    }
    Err(ApiError::internal(anyhow::anyhow!(
        "user sequence row missing after creation"
    )))
}

/// Appends an event to the user's order event log under the next number of its
/// gap-free sequence, and collects it for publication after commit.
async fn record_event(
    txn: &DatabaseTransaction,
    pending: Option<&mut Pending>,
    events: &Collector,
    user_id: Uuid,
    kind: &str,
    order_id: Uuid,
    fill_id: Option<Uuid>,
) -> Result<(), ApiError> {
    let event = order_events::Model {
        user_id,
        sequence: 0,
        kind: kind.to_owned(),
        order_id,
        fill_id,
        created_at: Utc::now(),
    };
    let sequence = if let Some(pending) = pending {
        pending.event(txn, &event).await?
    } else if txn.get_database_backend() == DatabaseBackend::Postgres {
        insert_event_postgres(txn, &event).await?
    } else {
        let sequence = next_sequence(txn, user_id).await?;
        order_events::ActiveModel::from(order_events::Model { sequence, ..event })
            .reset_all()
            .insert(txn)
            .await?;
        sequence
    };
    events.push(Event::OrderUpdate {
        user_id,
        sequence,
        kind: kind.to_owned(),
        order_id,
        fill_id,
    });
    Ok(())
}

/// Takes the next number of the user's event sequence and stores the event under it
/// in one statement (a data-modifying `WITH`), plus the sequence row's creation the
/// first time: when the row is missing, the `UPDATE` finds nothing and nothing is
/// inserted.
async fn insert_event_postgres(
    txn: &DatabaseTransaction,
    event: &order_events::Model,
) -> Result<i64, ApiError> {
    const SQL: &str = "WITH taken AS (\
             UPDATE user_sequences SET last_sequence = last_sequence + 1 \
             WHERE user_id = $1 RETURNING last_sequence) \
         INSERT INTO order_events (user_id, sequence, kind, order_id, fill_id, created_at) \
         SELECT $1, last_sequence, $2, $3, $4, $5 FROM taken \
         RETURNING sequence";
    for _ in 0..2 {
        let inserted = txn
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                SQL,
                [
                    event.user_id.into(),
                    event.kind.as_str().into(),
                    event.order_id.into(),
                    event.fill_id.into(),
                    event.created_at.into(),
                ],
            ))
            .await?;
        if let Some(row) = inserted {
            return Ok(row.try_get("", "sequence")?);
        }
        ensure_sequence_row(txn, event.user_id).await?;
    }
    Err(ApiError::internal(anyhow::anyhow!(
        "user sequence row missing after creation"
    )))
}

/// What a resting limit order holds: its full value for a buy, its quantity for a sell.
fn limit_hold(side: Side, price: Option<Decimal>, quantity: Option<Decimal>) -> Decimal {
    let quantity = quantity.unwrap_or_default();
    match side {
        Side::Buy => price.unwrap_or_default() * quantity,
        Side::Sell => quantity,
    }
}

/// An order action for the audit log, in the market's chain: the placing transaction
/// already holds that market's lock, so the chain adds no waiting.
fn order_audit(order: &orders::Model, action: &str, actor: Option<Uuid>) -> AuditEntry {
    let mut entry = AuditEntry::new(action, "order", order.id)
        .owner(order.user_id)
        .in_chain(format!("market:{}", order.market))
        .details(serde_json::json!({
            "market": order.market,
            "side": order.side,
            "type": order.order_type,
            "price": order.price.map(|p| p.0.to_string()),
            "quantity": order.quantity.map(|q| q.0.to_string()),
            "quoteQuantity": order.quote_quantity.map(|q| q.0.to_string()),
            "status": order.status,
            "filledQuantity": order.filled_quantity.0.to_string(),
            "rejectReason": order.reject_reason,
        }));
    if let Some(actor) = actor {
        entry = entry.actor(actor);
    }
    entry
}

/// Stores an order's state: inserts a new one or overwrites a stored one (or keeps it
/// with the transaction's held writes).
async fn save_order(
    txn: &DatabaseTransaction,
    pending: Option<&mut Pending>,
    order: &orders::Model,
    new: bool,
) -> Result<(), ApiError> {
    let Some(pending) = pending else {
        let active = orders::ActiveModel::from(order.clone()).reset_all();
        if new {
            active.insert(txn).await?;
        } else {
            active.update(txn).await?;
        }
        return Ok(());
    };
    pending.save_order(order);
    Ok(())
}

/// Posts a journal entry, or keeps it with the transaction's held writes.
async fn post(
    txn: &DatabaseTransaction,
    pending: Option<&mut Pending>,
    draft: Draft,
) -> Result<(), ApiError> {
    match pending {
        Some(pending) => pending.post(txn, draft).await,
        None => ledger::post(txn, draft).await.map(|_| ()),
    }
}

/// Stores a new order, holds its funds and records its CREATED event.
async fn store_and_hold(
    txn: &DatabaseTransaction,
    mut pending: Option<&mut Pending>,
    events: &Collector,
    order: &mut orders::Model,
    hold: Decimal,
) -> Result<(), ApiError> {
    order.held = Amount(hold);
    save_order(txn, pending.as_deref_mut(), order, true).await?;
    let asset = order.held_asset.clone();
    let (user_id, order_id) = (order.user_id, order.id);
    move_hold(
        txn,
        pending.as_deref_mut(),
        user_id,
        &asset,
        hold,
        true,
        order_id,
    )
    .await?;
    record_event(txn, pending, events, user_id, "CREATED", order_id, None).await
}

/// Moves `amount` between a user's available and locked balances.
async fn move_hold(
    txn: &DatabaseTransaction,
    pending: Option<&mut Pending>,
    user_id: Uuid,
    asset: &str,
    amount: Decimal,
    to_locked: bool,
    order_id: Uuid,
) -> Result<(), ApiError> {
    if amount.is_zero() {
        return Ok(());
    }
    let signed = if to_locked { amount } else { -amount };
    post(
        txn,
        pending,
        Draft {
            kind: if to_locked {
                "ORDER_HOLD"
            } else {
                "ORDER_RELEASE"
            },
            reference: None,
            user_id: Some(user_id),
            asset: asset.to_owned(),
            amount: -signed,
            description: format!(
                "{} {} {asset} for order {order_id}",
                if to_locked { "Held" } else { "Released" },
                amount.normalize()
            ),
            legs: vec![
                Leg {
                    account: AccountRef::user(user_id, asset, AccountKind::Available),
                    amount: -signed,
                },
                Leg {
                    account: AccountRef::user(user_id, asset, AccountKind::Locked),
                    amount: signed,
                },
            ],
        },
    )
    .await
}

fn status_after_fill(order_quantity: Option<Decimal>, filled: Decimal) -> &'static str {
    match order_quantity {
        Some(quantity) if filled >= quantity => status::FILLED,
        _ if filled.is_zero() => status::OPEN,
        _ => status::PARTIALLY_FILLED,
    }
}

/// Places one order in `txn`, under a market lock of its own; its events in `events`
/// are numbered as stored, and the renumbering that took is returned too.
pub(super) async fn execute_alone(
    txn: &DatabaseTransaction,
    events: &Collector,
    (user_id, input, prepared): (Uuid, &NewOrder, &Prepared),
    locking: Locking,
) -> Result<(Placed, Renumbering), ApiError> {
    let mut locked = LockedMarket::lock_for_placement(txn, &prepared.symbol, locking).await?;
    let placed = execute(txn, &mut locked, events, user_id, input, prepared).await?;
    let renumbering = locked.finish(txn, events).await?;
    renumbering.apply_to(events);
    Ok((placed, renumbering))
}

/// Places one order in `txn`, whose lock on the market is `locked` (the caller runs
/// [`LockedMarket::finish`] after the last order).
pub(super) async fn execute(
    txn: &DatabaseTransaction,
    locked: &mut LockedMarket,
    events: &Collector,
    user_id: Uuid,
    input: &NewOrder,
    prepared: &Prepared,
) -> Result<Placed, ApiError> {
    locked.ensure_trading()?;
    let now = Utc::now();
    let sequence = locked.take_sequence();
    let market = locked.row.clone();
    let (base, quote) = (market.base_asset.clone(), market.quote_asset.clone());
    let tick = prepared.rules.tick_size;
    let limit_ticks = input.price.and_then(|p| order_rules::price_ticks(p, tick));
    let taker = matching::Taker {
        owner: user_id,
        side: input.side,
        limit_price: input.price,
        quantity: input.quantity,
        quote_quantity: input.quote_quantity,
        time_in_force: input.time_in_force,
        post_only: input.post_only,
        self_trade_prevention: input.self_trade_prevention,
        lot_size: prepared.rules.lot_size,
    };

    let order_id = Uuid::now_v7();
    let held_asset = match input.side {
        Side::Buy => quote.clone(),
        Side::Sell => base.clone(),
    };
    let mut order = orders::Model {
        id: order_id,
        user_id,
        market: market.symbol.clone(),
        side: side_str(input.side).to_owned(),
        order_type: type_str(input.order_type).to_owned(),
        status: status::OPEN.to_owned(),
        is_open: false,
        price: input.price.map(Amount),
        price_ticks: limit_ticks,
        trigger_price: input.trigger_price.map(Amount),
        trigger_ticks: input
            .trigger_price
            .and_then(|p| order_rules::price_ticks(p, tick)),
        quantity: input.quantity.map(Amount),
        quote_quantity: input.quote_quantity.map(Amount),
        filled_quantity: Amount::ZERO,
        filled_quote: Amount::ZERO,
        fee: Amount::ZERO,
        held_asset: held_asset.clone(),
        held: Amount::ZERO,
        time_in_force: tif_str(input.time_in_force).to_owned(),
        expire_at: input.expire_at,
        post_only: input.post_only,
        self_trade_prevention: stp_str(input.self_trade_prevention).to_owned(),
        client_order_id: input.client_order_id.as_ref().map(|c| c.trim().to_owned()),
        reject_reason: None,
        sequence,
        created_at: now,
        updated_at: now,
    };

    // A stop order waits off the book, with its funds held, until the last trade price
    // reaches its trigger.
    if input.order_type == OrderType::StopLimit {
        let hold = limit_hold(input.side, input.price, input.quantity);
        order.status = status::UNTRIGGERED.to_owned();
        store_and_hold(txn, locked.pending.as_mut(), events, &mut order, hold).await?;
        let placed = order_audit(&order, "order.placed", Some(user_id));
        locked.audit.push(placed);
        return Ok(Placed {
            order,
            fills: Vec::new(),
            hold,
        });
    }

    let (plan, makers) = plan_against_book(
        txn,
        locked.pending.as_ref(),
        &market.symbol,
        input.side,
        limit_ticks,
        &taker,
    )
    .await?;
    if !locked.covers(user_id, &plan) {
        prelock(
            txn,
            locked.pending.as_mut(),
            &market,
            user_id,
            &plan,
            &makers,
        )
        .await?;
    }

    if let TakerOutcome::Rejected { reason } = &plan.outcome {
        if reason.is_book_fault() {
            return Err(ApiError::internal(anyhow::anyhow!(
                "order book inconsistent: {reason}"
            )));
        }
        order.status = status::REJECTED.to_owned();
        order.reject_reason = Some(reason.to_string());
        save_order(txn, locked.pending.as_mut(), &order, true).await?;
        let pending = locked.pending.as_mut();
        record_event(txn, pending, events, user_id, "REJECTED", order_id, None).await?;
        let rejected = order_audit(&order, "order.rejected", Some(user_id));
        locked.audit.push(rejected);
        return Ok(Placed {
            order,
            fills: Vec::new(),
            hold: Decimal::ZERO,
        });
    }

    // Hold what the order may spend: the full limit value for a limit order, the exact
    // cost of its fills for a market order (it never rests), the budget for a buy by
    // quote amount.
    let hold = match (input.side, input.order_type) {
        (Side::Buy, OrderType::Market) => input.quote_quantity.unwrap_or(plan.quote_amount),
        (Side::Sell, OrderType::Market) => plan.filled_quantity,
        (side, _) => limit_hold(side, input.price, input.quantity),
    };
    store_and_hold(txn, locked.pending.as_mut(), events, &mut order, hold).await?;

    let taker_fills = apply_plan(
        txn,
        events,
        &prepared.fee_tiers,
        locked,
        &mut order,
        (&plan, &makers),
        hold,
        now,
    )
    .await?;
    let placed = order_audit(&order, "order.placed", Some(user_id));
    locked.audit.push(placed);
    // Only a trade moves the last price, so an order that traded nothing cannot have
    // reached any stop's trigger.
    if !taker_fills.is_empty() {
        trigger_stops(txn, events, &prepared.fee_tiers, locked).await?;
    }
    Ok(Placed {
        order,
        fills: taker_fills,
        hold,
    })
}

/// Locks, in one global order, every ledger account and event-log row the plan will
/// write: accounts sorted by (owner, asset, kind) first, then users' event sequences
/// sorted by user. Transactions on different markets share rows (fee income, traders
/// active in several markets); taking them piecemeal, posting by posting, let two such
/// transactions wait on each other in a cycle, which PostgreSQL breaks only after its
/// deadlock timeout. A placement under [`Locking::AtWrite`] only reads them here; its
/// write locks them, in the same order.
async fn prelock(
    txn: &DatabaseTransaction,
    pending: Option<&mut Pending>,
    market: &market_rows::Model,
    taker: Uuid,
    plan: &matching::MatchPlan,
    makers: &[orders::Model],
) -> Result<(), ApiError> {
    if txn.get_database_backend() != DatabaseBackend::Postgres {
        // SQLite has one writer at a time: there is nothing to order.
        return Ok(());
    }
    let mut users: std::collections::BTreeSet<Uuid> =
        plan.fills.iter().map(|f| f.maker_owner).collect();
    users.insert(taker);
    users.extend(
        makers
            .iter()
            .filter(|m| plan.expired_makers.contains(&m.id))
            .map(|m| m.user_id),
    );
    let mut accounts = std::collections::BTreeSet::new();
    for user in &users {
        for asset in [&market.base_asset, &market.quote_asset] {
            for kind in [AccountKind::Available, AccountKind::Locked] {
                accounts.insert(AccountRef::user(*user, asset, kind));
            }
        }
    }
    if !plan.fills.is_empty() {
        for asset in [&market.base_asset, &market.quote_asset] {
            accounts.insert(AccountRef::fee_income(&market.symbol, asset));
        }
    }
    match pending {
        Some(pending) => {
            pending.load_accounts(txn, &accounts).await?;
            pending.load_sequences(txn, &users).await
        }
        None => {
            ledger::lock_accounts(txn, &accounts).await?;
            lock_sequences(txn, &users).await.map(|_| ())
        }
    }
}

/// Resting orders whose owners a batch locks up front at most; beyond those, rows are
/// locked order by order, as a lone placement does.
const BATCH_PRELOCK_OWNERS: u64 = 64;

/// Locks, before a batch of placements, what its orders are likely to write, in the
/// global order [`prelock`] uses: the markets' rows (in symbol order), then the
/// ledger accounts and event sequences of the batch's traders and of the owners of
/// the best resting orders, as many as the batch's quantities could take. An order
/// whose plan touches only those users skips [`prelock`]; any other still runs it for
/// its own plan, and finds the rows taken here already held. Taking them order by
/// order instead would let two batches (sharing traders) lock them in opposite
/// orders. Under [`Locking::AtWrite`] those rows are only read here, and locked when
/// the batch writes.
/// Returns the markets, locked, for the batch's orders to share. An order in a halted
/// market fails on its own when it runs, so the batch is split around it.
pub(super) async fn prelock_batch(
    txn: &DatabaseTransaction,
    batch: &[(Uuid, NewOrder, Prepared)],
    locking: Locking,
) -> Result<LockedMarkets, ApiError> {
    if batch.is_empty() {
        return Err(ApiError::internal(anyhow::anyhow!("an empty batch")));
    }
    let symbols: std::collections::BTreeSet<&str> =
        batch.iter().map(|(_, _, p)| p.symbol.as_str()).collect();
    let mut locked = LockedMarkets::lock(txn, &symbols, locking).await?;
    if txn.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(locked);
    }
    let holder = locked.holder.clone();
    let mut pending = locked
        .market(&holder)?
        .pending
        .take()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("placement writes not held")))?;
    let in_market = |symbol: &str| -> Vec<&(Uuid, NewOrder, Prepared)> {
        batch
            .iter()
            .filter(|(_, _, p)| p.symbol == symbol)
            .collect()
    };
    // The best of every book side some order of the batch takes from, in one read.
    let mut reaches = Vec::new();
    for (symbol, market) in &locked.markets {
        // A halted market's orders are refused one by one (`execute`), with nothing
        // to read for them.
        if market.ensure_trading().is_err() {
            continue;
        }
        let orders = in_market(symbol);
        for side in [Side::Buy, Side::Sell] {
            if let Some(bound) = reach(&orders, side) {
                // What the batch could take from that side (none known when an order
                // has no base quantity: a buy by quote amount).
                let wanted: Option<Decimal> = orders
                    .iter()
                    .filter(|(_, input, _)| input.side == side)
                    .map(|(_, input, _)| input.quantity)
                    .sum();
                reaches.push(BookReach {
                    market: symbol.clone(),
                    side,
                    bound,
                    wanted,
                });
            }
        }
    }
    let mut books = load_books(txn, &reaches, BATCH_PRELOCK_OWNERS).await?;
    let mut accounts = std::collections::BTreeSet::new();
    let mut traders = std::collections::BTreeMap::new();
    for (symbol, market) in &mut locked.markets {
        let orders = in_market(symbol);
        let mut users: std::collections::BTreeSet<Uuid> =
            orders.iter().map(|(user, _, _)| *user).collect();
        for book in reaches.iter().filter(|r| &r.market == symbol) {
            let page = books.remove(&(symbol.clone(), book.side));
            let (makers, asked) = page.unwrap_or((Vec::new(), BATCH_PRELOCK_OWNERS));
            pending.keep_book(symbol, book.side, book.bound, &makers, asked);
            // The owners of the best resting orders, up to what the batch could take
            // from them (all of the page when that is not known).
            let wanted = book.wanted;
            let mut covered = Decimal::ZERO;
            for maker in makers {
                if wanted.is_some_and(|wanted| covered >= wanted) {
                    break;
                }
                covered += remaining(&maker);
                users.insert(maker.user_id);
            }
        }
        for asset in [&market.row.base_asset, &market.row.quote_asset] {
            for user in &users {
                for kind in [AccountKind::Available, AccountKind::Locked] {
                    accounts.insert(AccountRef::user(*user, asset, kind));
                }
            }
            accounts.insert(AccountRef::fee_income(symbol, asset));
        }
        market.locked_users.clone_from(&users);
        traders.insert(symbol.clone(), users);
    }
    // Their accounts, event sequences and fee-tier volumes in every market, in one read.
    let users = traders.values().flatten().copied().collect();
    pending
        .load_traders(txn, &accounts, &users, &traders, Utc::now())
        .await?;
    locked.market(&holder)?.pending = Some(pending);
    Ok(locked)
}

/// How far into the book on `side`'s opposite a batch's `orders` (of one market) can
/// reach: `None` when no order takes from it, `Some(None)` when one has no bound (a
/// market order), else the farthest limit.
fn reach(orders: &[&(Uuid, NewOrder, Prepared)], side: Side) -> Option<Option<i64>> {
    let mut orders = orders.iter().filter(|(_, input, _)| input.side == side);
    let first = orders.next()?;
    let ticks = |input: &NewOrder| {
        input
            .price
            .and_then(|p| order_rules::price_ticks(p, first.2.rules.tick_size))
    };
    orders.try_fold(ticks(&first.1), |bound, (_, input, _)| {
        Some(match (bound, ticks(input)) {
            (Some(a), Some(b)) if side == Side::Buy => Some(std::cmp::max(a, b)),
            (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
            _ => None,
        })
    })
}

/// One side of one market's book, as far as a batch's takers on `side` could reach.
struct BookReach {
    market: String,
    side: Side,
    /// The farthest limit; `None` for no limit (a market order).
    bound: Option<i64>,
    /// The base quantity the takers ask for together, when every one of them names it.
    wanted: Option<Decimal>,
}

/// [`load_makers`] for several book sides at once, in one statement whatever their
/// number (PostgreSQL): for each (market, taker side), the best resting orders within
/// reach, up to `limit`, and of those only as many as it takes to cover what the
/// takers want; with how many rows the page counts as (see [`Pending::keep_book`]).
/// The takers' own quantities bound what they can trade, so the rest of a deep book
/// is neither sent nor decoded; when the cut was made the page ends at its last row,
/// like a full one, and a taker passing over more makers than expected (self-trade
/// prevention) reads on from there.
async fn load_books(
    txn: &DatabaseTransaction,
    reaches: &[BookReach],
    limit: u64,
) -> Result<std::collections::HashMap<(String, Side), (Vec<orders::Model>, u64)>, ApiError> {
    let mut books = std::collections::HashMap::new();
    if reaches.is_empty() {
        return Ok(books);
    }
    const COLUMNS: [(&str, &str); 3] =
        [("market", ""), ("bound", "bigint"), ("wanted", "numeric?")];
    let (mut asks, mut bids) = (Columns::new(&COLUMNS), Columns::new(&COLUMNS));
    for reach in reaches {
        // No bound is the far end of the book.
        let (rows, far) = match reach.side {
            Side::Buy => (&mut asks, i64::MAX),
            Side::Sell => (&mut bids, i64::MIN),
        };
        rows.push([
            reach.market.cell(),
            reach.bound.unwrap_or(far).cell(),
            reach.wanted.cell(),
        ]);
    }
    let mut p = Params::default();
    // Each side in its own order, through its open-book index (a lateral scan per
    // market, stopped at the limit), then cut where the quantity resting before a row
    // reaches what is wanted. `fetched` tells a cut page from a short book. The limit
    // is written out rather than bound: with a bound one, PostgreSQL cannot tell how
    // few rows a plan made once would read, and plans the statement anew every time.
    let side = |maker_side: &str, reaches: String, within: &str, order: &str| {
        format!(
            "SELECT w.* FROM ({reaches}) AS k CROSS JOIN LATERAL (\
               SELECT b.*, count(*) OVER () AS fetched, \
                 coalesce(sum(coalesce(b.quantity, 0) - b.filled_quantity) OVER (\
                   ORDER BY b.price_ticks {order}, b.sequence \
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before \
               FROM (SELECT * FROM orders WHERE market = k.market AND is_open \
                 AND side = '{maker_side}' AND price_ticks {within} k.bound \
                 ORDER BY price_ticks {order}, sequence LIMIT {limit}) AS b) AS w \
             WHERE k.wanted IS NULL OR w.before < k.wanted"
        )
    };
    let sql = format!(
        "{} UNION ALL {}",
        side("SELL", asks.select(&mut p, "r"), "<=", "ASC"),
        side("BUY", bids.select(&mut p, "r"), ">=", "DESC"),
    );
    let rows = txn.query_all_raw(p.into_statement(sql)).await?;
    for row in rows {
        let order = orders::Model::from_query_result(&row, "")?;
        let fetched: i64 = row.try_get("", "fetched")?;
        let taker_side = if order.side == "SELL" {
            Side::Buy
        } else {
            Side::Sell
        };
        let (book, _) = books
            .entry((order.market.clone(), taker_side))
            .or_insert_with(|| (Vec::new(), u64::try_from(fetched).unwrap_or(limit)));
        book.push(order);
    }
    // A page cut short of what was fetched ends at its last row; one that was not
    // counts as asked for in full, so fewer rows than that mean the book ran out.
    // Pages are kept in priority order whatever order the rows came in: where a cut
    // page ends depends on it.
    for ((_, taker_side), (book, fetched)) in books.iter_mut() {
        match taker_side {
            Side::Buy => book.sort_by_key(|o| (o.price_ticks, o.sequence)),
            Side::Sell => book.sort_by_key(|o| (std::cmp::Reverse(o.price_ticks), o.sequence)),
        }
        *fetched = if (book.len() as u64) < *fetched {
            book.len() as u64
        } else {
            limit
        };
    }
    Ok(books)
}

/// Creates (if needed) and locks users' event-sequence rows, in user order, and
/// returns them.
pub(super) async fn lock_sequences(
    txn: &DatabaseTransaction,
    users: &std::collections::BTreeSet<Uuid>,
) -> Result<Vec<user_sequences::Model>, ApiError> {
    read_sequences(txn, users, true).await
}

/// Creates (if needed) and reads users' event-sequence rows; with `lock`, as
/// [`lock_sequences`]. Without it the rows are as last committed and stay free for
/// others to change.
pub(super) async fn read_sequences(
    txn: &DatabaseTransaction,
    users: &std::collections::BTreeSet<Uuid>,
    lock: bool,
) -> Result<Vec<user_sequences::Model>, ApiError> {
    // Arrays rather than lists: one statement text (and plan) for any number of users.
    let keys = |users: &mut dyn Iterator<Item = &Uuid>| {
        let mut keys = Columns::new(&[("user_id", "uuid")]);
        for user in users {
            keys.push([user.cell()]);
        }
        let mut p = Params::default();
        let keys = keys.select(&mut p, "k");
        (keys, p.into_values())
    };
    let lock = |(wanted, values): (String, Vec<sea_orm::Value>)| {
        user_sequences::Entity::find().from_raw_sql(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            format!(
                "SELECT * FROM user_sequences WHERE user_id IN ({wanted}) \
                 ORDER BY user_id{}",
                if lock { " FOR UPDATE" } else { "" }
            ),
            values,
        ))
    };
    let rows = lock(keys(&mut users.iter())).all(txn).await?;
    let found: std::collections::BTreeSet<Uuid> = rows.iter().map(|r| r.user_id).collect();
    let mut missing = users.difference(&found).peekable();
    if missing.peek().is_none() {
        return Ok(rows);
    }
    // Created once in a user's life; the usual batch skips this statement.
    let (created, values) = keys(&mut missing);
    txn.execute_raw(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        format!(
            "INSERT INTO user_sequences (user_id, last_sequence) SELECT k.user_id, 0 \
             FROM ({created}) AS k ON CONFLICT (user_id) DO NOTHING"
        ),
        values,
    ))
    .await?;
    Ok(lock(keys(&mut users.iter())).all(txn).await?)
}

/// Traded volume in a market over the last 30 days (this day included) of each of
/// `users`, in one read; zero for a user without trades.
pub(super) async fn volumes_30d(
    txn: &DatabaseTransaction,
    users: &std::collections::BTreeSet<Uuid>,
    market: &str,
    now: DateTime<Utc>,
) -> Result<std::collections::HashMap<Uuid, Decimal>, ApiError> {
    let wanted = std::collections::BTreeMap::from([(market.to_owned(), users.clone())]);
    let mut stored = volumes_30d_in(txn, &wanted, now).await?;
    Ok(users
        .iter()
        .map(|user| {
            let volume = stored.remove(&(market.to_owned(), *user));
            (*user, volume.unwrap_or_default())
        })
        .collect())
}

/// [`volumes_30d`] of several markets' traders (users by market), in one read, by
/// (market, user); a pair without trades is left out.
pub(super) async fn volumes_30d_in(
    txn: &DatabaseTransaction,
    wanted: &std::collections::BTreeMap<String, std::collections::BTreeSet<Uuid>>,
    now: DateTime<Utc>,
) -> Result<std::collections::HashMap<(String, Uuid), Decimal>, ApiError> {
    let since = volume_window_start(now);
    let users: std::collections::BTreeSet<Uuid> = wanted.values().flatten().copied().collect();
    let rows = user_daily_volumes::Entity::find()
        .filter(user_daily_volumes::Column::UserId.is_in(users))
        .filter(user_daily_volumes::Column::Market.is_in(wanted.keys().cloned()))
        .filter(user_daily_volumes::Column::Day.gte(since))
        .all(txn)
        .await?;
    let mut volumes = std::collections::HashMap::new();
    for row in rows {
        if wanted
            .get(&row.market)
            .is_some_and(|u| u.contains(&row.user_id))
        {
            *volumes.entry((row.market, row.user_id)).or_default() += row.volume.0;
        }
    }
    Ok(volumes)
}

/// The first day (as stored) of the fee-tier volume window ending today.
pub(super) fn volume_window_start(now: DateTime<Utc>) -> String {
    (now - chrono::Duration::days(29))
        .format("%Y-%m-%d")
        .to_string()
}

/// Adds a trade's quote value to its buyer's and seller's volume of the day (once when
/// they are the same user). Safe without more locking: volume rows of a market are
/// written only under that market's lock.
async fn add_volume(
    txn: &DatabaseTransaction,
    (buyer, seller): (Uuid, Uuid),
    market: &str,
    now: DateTime<Utc>,
    notional: Decimal,
) -> Result<(), ApiError> {
    let day = now.format("%Y-%m-%d").to_string();
    let mut traders = vec![(buyer, notional)];
    if seller == buyer {
        traders[0].1 += notional;
    } else {
        traders.push((seller, notional));
    }
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        // One upsert for both sides, adding exactly in NUMERIC.
        let mut values: Vec<sea_orm::Value> = vec![market.into(), day.into()];
        let rows: Vec<String> = traders
            .iter()
            .map(|(user, amount)| {
                values.extend([(*user).into(), (*amount).into()]);
                let n = values.len();
                format!("(${}::uuid, $1, $2, ${n}::numeric)", n - 1)
            })
            .collect();
        txn.execute_raw(sea_orm::Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            format!(
                "INSERT INTO user_daily_volumes AS v (user_id, market, day, volume) VALUES {} \
                 ON CONFLICT (user_id, market, day) DO UPDATE SET volume = v.volume + EXCLUDED.volume",
                rows.join(", ")
            ),
            values,
        ))
        .await?;
        return Ok(());
    }
    // SQLite keeps amounts as text, which its arithmetic would turn into binary
    // floats: the sum is made here (one writer at a time, so no update is lost).
    for (user_id, amount) in traders {
        let key = (user_id, market.to_owned(), day.clone());
        match user_daily_volumes::Entity::find_by_id(key).one(txn).await? {
            Some(row) => {
                let volume = row.volume.0 + amount;
                let mut active: user_daily_volumes::ActiveModel = row.into();
                active.volume = Set(Amount(volume));
                active.update(txn).await?;
            }
            None => {
                user_daily_volumes::ActiveModel {
                    user_id: Set(user_id),
                    market: Set(market.to_owned()),
                    day: Set(day.clone()),
                    volume: Set(Amount(amount)),
                }
                .insert(txn)
                .await?;
            }
        }
    }
    Ok(())
}

/// What both fills of one trade share.
struct TradeLeg<'a> {
    trade_id: Uuid,
    market: &'a str,
    price: Decimal,
    quantity: Decimal,
    now: DateTime<Utc>,
    cost_rate: Option<Decimal>,
}

/// One side's fill of a trade; the fee is in the asset that side receives.
fn fill_of(
    trade: &TradeLeg<'_>,
    order: &orders::Model,
    side: Side,
    fee: Decimal,
    (base, quote): (&str, &str),
    liquidity: &str,
) -> fills::Model {
    fills::Model {
        id: Uuid::now_v7(),
        order_id: order.id,
        user_id: order.user_id,
        trade_id: trade.trade_id,
        market: trade.market.to_owned(),
        side: side_str(side).to_owned(),
        price: Amount(trade.price),
        quantity: Amount(trade.quantity),
        fee: Amount(fee),
        fee_asset: match side {
            Side::Buy => base.to_owned(),
            Side::Sell => quote.to_owned(),
        },
        liquidity: liquidity.to_owned(),
        created_at: trade.now,
        cost_rate: trade.cost_rate.map(Amount),
    }
}

/// Reads the book a page at a time, further only if the taker swept the page, and plans
/// the match.
async fn plan_against_book(
    txn: &DatabaseTransaction,
    pending: Option<&Pending>,
    market: &str,
    side: Side,
    limit_ticks: Option<i64>,
    taker: &matching::Taker,
) -> Result<(matching::MatchPlan, Vec<orders::Model>), ApiError> {
    let mut page = BOOK_PAGE;
    // A batch read the best of the book when it started: the first look comes from that.
    let mut first_look = pending.and_then(|p| p.stored_book(market, side, limit_ticks));
    let planned = loop {
        let (stored, asked) = match first_look.take() {
            Some(known) => known,
            None => (
                load_makers(txn, market, side, limit_ticks, page).await?,
                page,
            ),
        };
        let full_page = stored.len() as u64 == asked;
        page = std::cmp::max(page, std::cmp::min(asked, 1 << 16));
        let makers = match pending {
            Some(pending) => pending.over_book(market, side, limit_ticks, stored, asked),
            None => stored,
        };
        let plan = matching::plan(
            taker,
            makers.iter().map(|m| Maker {
                order_id: m.id,
                owner: m.user_id,
                price: m.price.map(|p| p.0).unwrap_or_default(),
                remaining: remaining(m),
            }),
        );
        let touched = plan.fills.len() + plan.expired_makers.len();
        let wants_more = !matches!(
            plan.outcome,
            TakerOutcome::Filled | TakerOutcome::Rejected { .. }
        ) && touched >= makers.len();
        if full_page && wants_more && page < 1 << 16 {
            // A batch's page, cut to what its takers wanted, is followed by an
            // ordinary page; a page that was itself too short, by a longer one.
            if asked >= page {
                page *= 4;
            }
            continue;
        }
        break (plan, makers);
    };

    Ok(planned)
}

/// Writes what a plan says for `order` (already stored, its funds held): trades with
/// ledger entries and fees, maker updates, expired makers, the order's end state, the
/// release of whatever it no longer needs held, and the market's last price.
#[allow(clippy::too_many_arguments)]
async fn apply_plan(
    txn: &DatabaseTransaction,
    events: &Collector,
    tiers: &[FeeTier],
    locked: &mut LockedMarket,
    order: &mut orders::Model,
    (plan, makers): (&matching::MatchPlan, &[orders::Model]),
    hold: Decimal,
    now: DateTime<Utc>,
) -> Result<Vec<fills::Model>, ApiError> {
    let market = &locked.row.clone();
    let side = if order.side == "BUY" {
        Side::Buy
    } else {
        Side::Sell
    };
    let (base, quote) = (market.base_asset.clone(), market.quote_asset.clone());
    let makers_by_id: std::collections::HashMap<Uuid, &orders::Model> =
        makers.iter().map(|m| (m.id, m)).collect();
    // 30-day volumes as they stood when the order arrived: one read for every trader.
    let volumes = if plan.fills.is_empty() {
        std::collections::HashMap::new()
    } else {
        let mut traders: std::collections::BTreeSet<Uuid> =
            plan.fills.iter().map(|f| f.maker_owner).collect();
        traders.insert(order.user_id);
        match locked.pending.as_mut() {
            Some(pending) => pending.volumes(txn, &traders, &market.symbol, now).await?,
            None => volumes_30d(txn, &traders, &market.symbol, now).await?,
        }
    };
    let volume_of = |user: Uuid| volumes.get(&user).copied().unwrap_or_default();
    let mut taker_fills = Vec::new();
    let mut held = hold;
    let mut last_price = None;
    for fill in &plan.fills {
        let maker = makers_by_id.get(&fill.maker_order_id).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("planner returned an unknown maker"))
        })?;
        let trade_id = Uuid::now_v7();
        let notional = fill.quote_amount;
        let (buyer, seller) = match side {
            Side::Buy => (order.user_id, maker.user_id),
            Side::Sell => (maker.user_id, order.user_id),
        };
        let taker_bps =
            fees::discounted_bps(market.taker_fee_bps as u32, volume_of(order.user_id), tiers);
        let maker_bps =
            fees::discounted_bps(market.maker_fee_bps as u32, volume_of(maker.user_id), tiers);
        let (buyer_bps, seller_bps) = match side {
            Side::Buy => (taker_bps, maker_bps),
            Side::Sell => (maker_bps, taker_bps),
        };
        let overflow = || ApiError::internal(anyhow::anyhow!("fee overflow"));
        // Fees are taken from what each side receives, exactly (no rounding).
        let buyer_fee = matching::fee(fill.quantity, buyer_bps).ok_or_else(overflow)?;
        let seller_fee = matching::fee(notional, seller_bps).ok_or_else(overflow)?;
        let mut legs = vec![
            Leg {
                account: AccountRef::user(buyer, &quote, AccountKind::Locked),
                amount: -notional,
            },
            Leg {
                account: AccountRef::user(seller, &quote, AccountKind::Available),
                amount: notional - seller_fee,
            },
            Leg {
                account: AccountRef::user(seller, &base, AccountKind::Locked),
                amount: -fill.quantity,
            },
            Leg {
                account: AccountRef::user(buyer, &base, AccountKind::Available),
                amount: fill.quantity - buyer_fee,
            },
        ];
        if !seller_fee.is_zero() {
            legs.push(Leg {
                account: AccountRef::fee_income(&market.symbol, &quote),
                amount: seller_fee,
            });
        }
        if !buyer_fee.is_zero() {
            legs.push(Leg {
                account: AccountRef::fee_income(&market.symbol, &base),
                amount: buyer_fee,
            });
        }
        post(
            txn,
            locked.pending.as_mut(),
            Draft {
                kind: "TRADE",
                reference: None,
                user_id: Some(order.user_id),
                asset: base.clone(),
                amount: match side {
                    Side::Buy => fill.quantity - buyer_fee,
                    Side::Sell => -fill.quantity,
                },
                description: format!(
                    "Trade {} {base} at {} {quote}",
                    fill.quantity.normalize(),
                    fill.price.normalize()
                ),
                legs,
            },
        )
        .await?;

        // The maker.
        let maker_side = side.opposite();
        let maker_filled = maker.filled_quantity.0 + fill.quantity;
        let maker_status = status_after_fill(maker.quantity.map(|q| q.0), maker_filled);
        let maker_fee = match maker_side {
            Side::Buy => buyer_fee,
            Side::Sell => seller_fee,
        };
        let maker_held_used = match maker_side {
            Side::Buy => notional,
            Side::Sell => fill.quantity,
        };
        let filled_maker = orders::Model {
            filled_quantity: Amount(maker_filled),
            filled_quote: Amount(maker.filled_quote.0 + notional),
            fee: Amount(maker.fee.0 + maker_fee),
            held: Amount(maker.held.0 - maker_held_used),
            status: maker_status.to_owned(),
            is_open: maker_status != status::FILLED,
            updated_at: now,
            ..(*maker).clone()
        };
        save_order(txn, locked.pending.as_mut(), &filled_maker, false).await?;
        match locked.pending.as_mut() {
            Some(pending) => {
                let day = now.format("%Y-%m-%d").to_string();
                pending.add_volume(&market.symbol, (buyer, seller), &day, notional);
            }
            None => add_volume(txn, (buyer, seller), &market.symbol, now, notional).await?,
        }
        let trade = TradeLeg {
            trade_id,
            market: &market.symbol,
            price: fill.price,
            quantity: fill.quantity,
            now,
            cost_rate: locked.cost_rate(txn, fill.price).await?,
        };
        let maker_fill = fill_of(
            &trade,
            maker,
            maker_side,
            maker_fee,
            (&base, &quote),
            "MAKER",
        );

        // The taker.
        let taker_fee = match side {
            Side::Buy => buyer_fee,
            Side::Sell => seller_fee,
        };
        let taker_fill = fill_of(&trade, order, side, taker_fee, (&base, &quote), "TAKER");
        if locked.pending.is_none() {
            // Both fills in one statement, before the events that point at them.
            fills::Entity::insert_many(
                [&maker_fill, &taker_fill]
                    .map(|fill| fills::ActiveModel::from(fill.clone()).reset_all()),
            )
            .exec_without_returning(txn)
            .await?;
        }
        record_event(
            txn,
            locked.pending.as_mut(),
            events,
            maker.user_id,
            maker_status,
            maker.id,
            Some(maker_fill.id),
        )
        .await?;

        order.filled_quantity = Amount(order.filled_quantity.0 + fill.quantity);
        order.filled_quote = Amount(order.filled_quote.0 + notional);
        order.fee = Amount(order.fee.0 + taker_fee);
        held -= match side {
            Side::Buy => notional,
            Side::Sell => fill.quantity,
        };
        let interim = status_after_fill(order.quantity.map(|q| q.0), order.filled_quantity.0);
        record_event(
            txn,
            locked.pending.as_mut(),
            events,
            order.user_id,
            if interim == status::FILLED {
                "FILLED"
            } else {
                "PARTIALLY_FILLED"
            },
            order.id,
            Some(taker_fill.id),
        )
        .await?;
        // PORTFOLIO HOOK (the only one in matching): the market's price candle follows
        // this trade in this transaction, now or with the held writes
        // (`LockedMarket::finish`). Both traders' P&L state follows their order events
        // after commit (`service::portfolio::follow`), off the market's path.
        match locked.pending.as_mut() {
            Some(pending) => pending.add_trade(maker_fill, taker_fill.clone()),
            None => super::portfolio::on_trade(txn, &taker_fill).await?,
        }
        events.push(Event::Trade {
            market: market.symbol.clone(),
            price: fill.price,
            quantity: fill.quantity,
            at: now,
        });
        taker_fills.push(taker_fill);
        last_price = Some(fill.price);
    }

    for maker_id in &plan.expired_makers {
        if let Some(maker) = makers_by_id.get(maker_id) {
            let (pending, audit) = (locked.pending.as_mut(), &mut locked.audit);
            let expired = (status::EXPIRED, "EXPIRED");
            close_order(txn, pending, events, audit, maker, expired, now).await?;
        }
    }

    // The taker's end state, and what of its hold goes back.
    let (final_status, resting) = match &plan.outcome {
        TakerOutcome::Rest { .. } => (
            status_after_fill(order.quantity.map(|q| q.0), order.filled_quantity.0),
            true,
        ),
        TakerOutcome::Filled => (status::FILLED, false),
        TakerOutcome::Expired { .. } => (status::EXPIRED, false),
        TakerOutcome::Rejected { .. } => (status::REJECTED, false),
    };
    let keep = if resting {
        match side {
            // A resting buy keeps exactly its limit value for what is left; fills at
            // better prices free the difference now.
            Side::Buy => {
                order.price.map(|p| p.0).unwrap_or_default()
                    * (order.quantity.map(|q| q.0).unwrap_or_default() - order.filled_quantity.0)
            }
            Side::Sell => held,
        }
    } else {
        Decimal::ZERO
    };
    move_hold(
        txn,
        locked.pending.as_mut(),
        order.user_id,
        &order.held_asset.clone(),
        held - keep,
        false,
        order.id,
    )
    .await?;
    order.held = Amount(keep);
    order.status = final_status.to_owned();
    order.is_open = resting;
    if let TakerOutcome::Expired { reason, .. } = &plan.outcome {
        if *reason != ExpireReason::NoLiquidity || order.filled_quantity.0.is_zero() {
            order.reject_reason = Some(reason.to_string());
        }
        let pending = locked.pending.as_mut();
        record_event(
            txn,
            pending,
            events,
            order.user_id,
            "EXPIRED",
            order.id,
            None,
        )
        .await?;
    }
    save_order(txn, locked.pending.as_mut(), order, false).await?;
    if let (Some(price), None) = (last_price, &locked.pending) {
        market_rows::Entity::update_many()
            .col_expr(market_rows::Column::LastPrice, Amount(price).into())
            .col_expr(market_rows::Column::UpdatedAt, Expr::value(now))
            .filter(market_rows::Column::Symbol.eq(market.symbol.as_str()))
            .exec(txn)
            .await?;
    }
    // Price alerts: the one hook into `service::alerts`. Here the trades are written
    // and the market lock is held, so each crossing fires each alert exactly once;
    // `market.last_price` is still the price before these trades. Held trades are
    // judged together by `LockedMarket::finish`.
    if locked.pending.is_none() {
        let prices = plan.fills.iter().map(|f| f.price);
        super::alerts::on_trades(txn, events, market, prices).await?;
    }
    if let Some(price) = last_price {
        locked.row.last_price = Some(Amount(price));
        locked.row.updated_at = now;
    }
    events.book_changed(&market.symbol);
    Ok(taker_fills)
}

pub fn parse_side(value: &str) -> Side {
    if value == "BUY" {
        Side::Buy
    } else {
        Side::Sell
    }
}

pub fn parse_tif(value: &str) -> TimeInForce {
    match value {
        "IOC" => TimeInForce::Ioc,
        "FOK" => TimeInForce::Fok,
        "GTD" => TimeInForce::Gtd,
        _ => TimeInForce::Gtc,
    }
}

pub fn parse_stp(value: &str) -> SelfTradePrevention {
    match value {
        "EXPIRE_MAKER" => SelfTradePrevention::ExpireMaker,
        "EXPIRE_BOTH" => SelfTradePrevention::ExpireBoth,
        "NONE" => SelfTradePrevention::None,
        _ => SelfTradePrevention::ExpireTaker,
    }
}

/// The taker an existing order becomes when it (re)enters matching: a triggered stop,
/// or an amendment that moved its price.
fn taker_for(order: &orders::Model, lot_size: Decimal) -> matching::Taker {
    matching::Taker {
        owner: order.user_id,
        side: parse_side(&order.side),
        limit_price: order.price.map(|p| p.0),
        quantity: Some(remaining(order)),
        quote_quantity: None,
        time_in_force: parse_tif(&order.time_in_force),
        post_only: order.post_only,
        self_trade_prevention: parse_stp(&order.self_trade_prevention),
        lot_size,
    }
}

/// Guards against a trigger cascade without end; each round triggers one stop.
const MAX_TRIGGERS_PER_TRADE: usize = 1000;

/// Turns stop orders whose trigger the last trade price has reached into limit orders
/// and matches them, oldest first. Their trades move the price again, so this repeats
/// until no stop is triggered. Runs inside the transaction holding the market lock.
async fn trigger_stops(
    txn: &DatabaseTransaction,
    events: &Collector,
    tiers: &[FeeTier],
    locked: &mut LockedMarket,
) -> Result<(), ApiError> {
    use sea_orm::Condition;
    let symbol = locked.row.symbol.clone();
    let symbol = symbol.as_str();
    for _ in 0..MAX_TRIGGERS_PER_TRADE {
        // The row as this transaction left it: the last price of its latest trade.
        let market = locked.row.clone();
        let Some(last_ticks) = market
            .last_price
            .and_then(|p| order_rules::price_ticks(p.0, market.tick_size.0))
        else {
            return Ok(());
        };
        if let Some(pending) = locked.pending.as_mut() {
            if !pending.stops_may_trigger(txn, symbol, last_ticks).await? {
                return Ok(());
            }
            // The read below must see the held orders as they are now.
            pending.write_orders(txn).await?;
        }
        let triggered = orders::Entity::find()
            .filter(orders::Column::Market.eq(symbol))
            .filter(orders::Column::Status.eq(status::UNTRIGGERED))
            .filter(
                Condition::any()
                    .add(
                        Condition::all()
                            .add(orders::Column::Side.eq("BUY"))
                            .add(orders::Column::TriggerTicks.lte(last_ticks)),
                    )
                    .add(
                        Condition::all()
                            .add(orders::Column::Side.eq("SELL"))
                            .add(orders::Column::TriggerTicks.gte(last_ticks)),
                    ),
            )
            .order_by_asc(orders::Column::Sequence)
            .one(txn)
            .await?;
        let Some(mut order) = triggered else {
            return Ok(());
        };
        let now = Utc::now();
        order.status = status::OPEN.to_owned();
        order.updated_at = now;
        let (user_id, order_id) = (order.user_id, order.id);
        let pending = locked.pending.as_mut();
        record_event(txn, pending, events, user_id, "TRIGGERED", order_id, None).await?;
        let taker = taker_for(&order, market.lot_size.0);
        let (plan, makers) = plan_against_book(
            txn,
            locked.pending.as_ref(),
            symbol,
            taker.side,
            order.price_ticks,
            &taker,
        )
        .await?;
        if let TakerOutcome::Rejected { reason } = &plan.outcome {
            // A triggered FOK that cannot fill: it ends, its funds return.
            order.reject_reason = Some(reason.to_string());
            save_order(txn, locked.pending.as_mut(), &order, false).await?;
            let (pending, audit) = (locked.pending.as_mut(), &mut locked.audit);
            let expired = (status::EXPIRED, "EXPIRED");
            close_order(txn, pending, events, audit, &order, expired, now).await?;
            continue;
        }
        let hold = order.held.0;
        apply_plan(
            txn,
            events,
            tiers,
            locked,
            &mut order,
            (&plan, &makers),
            hold,
            now,
        )
        .await?;
    }
    tracing::warn!(market = symbol, "stop trigger cascade cut short");
    Ok(())
}

/// New values for a resting order.
pub struct Amendment {
    pub price: Option<Decimal>,
    pub quantity: Option<Decimal>,
}

/// Changes a resting limit order in place. Lowering only the quantity keeps its place
/// in the queue; any other change takes a new place, and a new price that crosses the
/// book trades at once. Held funds follow the change (`INSUFFICIENT_FUNDS` when an
/// increase cannot be held).
pub async fn amend(
    state: &AppState,
    viewer: &Viewer,
    order_id: Uuid,
    change: Amendment,
) -> Result<orders::Model, ApiError> {
    if change.price.is_none() && change.quantity.is_none() {
        return Err(ApiError::bad_input(
            "input",
            "give a new price, a new quantity, or both",
        ));
    }
    let user_id = viewer.user_id();
    let existing = orders::Entity::find_by_id(order_id)
        .one(state.db.conn())
        .await?
        .filter(|o| o.user_id == user_id)
        .ok_or(ApiError::NotFound("order"))?;
    if !existing.is_open || existing.price.is_none() {
        return Err(ApiError::Conflict(format!(
            "only resting limit orders can be amended; the order is {}",
            existing.status
        )));
    }
    let prepared = prepare(
        state,
        &NewOrder {
            market: existing.market.clone(),
            side: parse_side(&existing.side),
            order_type: OrderType::Limit,
            quantity: Some(
                change
                    .quantity
                    .unwrap_or_else(|| existing.quantity.map(|q| q.0).unwrap_or_default()),
            ),
            price: Some(
                change
                    .price
                    .unwrap_or_else(|| existing.price.map(|p| p.0).unwrap_or_default()),
            ),
            quote_quantity: None,
            trigger_price: None,
            time_in_force: TimeInForce::Gtc,
            expire_at: None,
            post_only: false,
            self_trade_prevention: SelfTradePrevention::ExpireTaker,
            client_order_id: None,
        },
    )
    .await?;
    let (order, events) = state
        .db
        .write(|txn| {
            let prepared = prepared.clone();
            let (new_price, new_quantity) = (change.price, change.quantity);
            Box::pin(async move {
                let events = Collector::default();
                let value: Result<_, ApiError> = async {
                    let mut locked = LockedMarket::lock(txn, &prepared.symbol).await?;
                    locked.ensure_trading()?;
                    let market = locked.row.clone();
                    let mut order = orders::Entity::find_by_id(order_id)
                        .one(txn)
                        .await?
                        .ok_or(ApiError::NotFound("order"))?;
                    if !order.is_open || order.order_type == "MARKET" {
                        return Err(ApiError::Conflict(format!(
                            "only resting limit orders can be amended; the order is {}",
                            order.status
                        )));
                    }
                    let (old_price, old_quantity) = (
                        order.price.map(|p| p.0).unwrap_or_default(),
                        order.quantity.map(|q| q.0).unwrap_or_default(),
                    );
                    let price = new_price.unwrap_or(old_price);
                    let quantity = new_quantity.unwrap_or(old_quantity);
                    if quantity <= order.filled_quantity.0 {
                        return Err(ApiError::bad_input(
                            "input.quantity",
                            format!("must exceed the {} already filled", order.filled_quantity),
                        ));
                    }
                    let side = parse_side(&order.side);
                    let keeps_priority =
                        matching::amend_keeps_priority(old_price, old_quantity, price, quantity);
                    let now = Utc::now();
                    let left = quantity - order.filled_quantity.0;
                    let needed = limit_hold(side, Some(price), Some(left));
                    let difference = needed - order.held.0;
                    let held_asset = order.held_asset.clone();
                    move_hold(
                        txn,
                        None,
                        order.user_id,
                        &held_asset,
                        difference.abs(),
                        difference > Decimal::ZERO,
                        order.id,
                    )
                    .await?;
                    order.price = Some(Amount(price));
                    order.price_ticks = order_rules::price_ticks(price, market.tick_size.0);
                    order.quantity = Some(Amount(quantity));
                    order.held = Amount(needed);
                    order.updated_at = now;
                    if !keeps_priority {
                        order.sequence = locked.take_sequence();
                    }
                    orders::ActiveModel::from(order.clone())
                        .reset_all()
                        .update(txn)
                        .await?;
                    let (user_id, order_id) = (order.user_id, order.id);
                    record_event(txn, None, &events, user_id, "AMENDED", order_id, None).await?;
                    events.book_changed(&market.symbol);
                    let amended = order_audit(&order, "order.amended", Some(order.user_id));
                    locked.audit.push(amended);
                    if keeps_priority || new_price.is_none() {
                        locked.finish(txn, &events).await?.apply_to(&events);
                        return Ok(order);
                    }
                    // A new price may cross the book: the order trades as a taker now.
                    let mut taker = taker_for(&order, market.lot_size.0);
                    taker.time_in_force = TimeInForce::Gtc;
                    let (plan, makers) = plan_against_book(
                        txn,
                        None,
                        &market.symbol,
                        side,
                        order.price_ticks,
                        &taker,
                    )
                    .await?;
                    if let TakerOutcome::Rejected { reason } = &plan.outcome {
                        return Err(ApiError::Conflict(format!(
                            "the amendment was refused: {reason}"
                        )));
                    }
                    apply_plan(
                        txn,
                        &events,
                        &prepared.fee_tiers,
                        &mut locked,
                        &mut order,
                        (&plan, &makers),
                        needed,
                        now,
                    )
                    .await?;
                    trigger_stops(txn, &events, &prepared.fee_tiers, &mut locked).await?;
                    locked.finish(txn, &events).await?.apply_to(&events);
                    Ok(order)
                }
                .await;
                Ok((value?, events.take()))
            })
        })
        .await?;
    state.events.publish(events).await;
    Ok(order)
}

/// Expires good-till-date orders whose time has come, a batch at a time. Returns how
/// many it expired. Each order is closed under its market's lock, like a cancel.
pub async fn expire_due(state: &AppState, batch: u64) -> Result<usize, ApiError> {
    let due = orders::Entity::find()
        .filter(orders::Column::IsOpen.eq(true))
        .filter(orders::Column::ExpireAt.lte(Utc::now()))
        .order_by_asc(orders::Column::ExpireAt)
        .limit(batch)
        .all(state.db.conn())
        .await?;
    let mut expired = 0;
    for order in due {
        let (done, events) = state
            .db
            .write(|txn| {
                let (id, market) = (order.id, order.market.clone());
                Box::pin(async move {
                    let events = Collector::default();
                    let value: Result<_, ApiError> = async {
                        lock_market(txn, &market).await?;
                        let Some(current) = orders::Entity::find_by_id(id).one(txn).await? else {
                            return Ok(false);
                        };
                        if !current.is_open {
                            return Ok(false);
                        }
                        let mut audit = Vec::new();
                        close_order(
                            txn,
                            None,
                            &events,
                            &mut audit,
                            &current,
                            (status::EXPIRED, "EXPIRED"),
                            Utc::now(),
                        )
                        .await?;
                        audit::record_all(txn, audit).await?;
                        Ok(true)
                    }
                    .await;
                    Ok((value?, events.take()))
                })
            })
            .await?;
        state.events.publish(events).await;
        expired += usize::from(done);
    }
    Ok(expired)
}

/// Ends an order that is still open or untriggered, releasing what it holds.
async fn close_order(
    txn: &DatabaseTransaction,
    mut pending: Option<&mut Pending>,
    events: &Collector,
    audit: &mut Vec<AuditEntry>,
    order: &orders::Model,
    (new_status, event): (&str, &str),
    now: DateTime<Utc>,
) -> Result<orders::Model, ApiError> {
    move_hold(
        txn,
        pending.as_deref_mut(),
        order.user_id,
        &order.held_asset,
        order.held.0,
        false,
        order.id,
    )
    .await?;
    let mut closed = order.clone();
    closed.status = new_status.to_owned();
    closed.is_open = false;
    closed.held = Amount::ZERO;
    closed.updated_at = now;
    save_order(txn, pending.as_deref_mut(), &closed, false).await?;
    record_event(txn, pending, events, order.user_id, event, order.id, None).await?;
    // A cancel is the owner's doing; an expiry is the system's.
    let actor = (new_status == status::CANCELLED).then_some(order.user_id);
    let action = format!("order.{}", new_status.to_lowercase());
    audit.push(order_audit(&closed, &action, actor));
    if order.is_open {
        events.book_changed(&order.market);
    }
    Ok(closed)
}

fn is_live(order: &orders::Model) -> bool {
    order.is_open || order.status == status::UNTRIGGERED
}

/// Cancels one of the viewer's live orders. Another user's order is `NOT_FOUND`; an
/// order already done is `CONFLICT` naming its status.
pub async fn cancel(
    state: &AppState,
    viewer: &Viewer,
    order_id: Uuid,
) -> Result<orders::Model, ApiError> {
    let user_id = viewer.user_id();
    let order = orders::Entity::find_by_id(order_id)
        .one(state.db.conn())
        .await?
        .filter(|o| o.user_id == user_id)
        .ok_or(ApiError::NotFound("order"))?;
    let (order, events) = state
        .db
        .write(|txn| {
            let market = order.market.clone();
            Box::pin(async move {
                let events = Collector::default();
                let value: Result<_, ApiError> = async {
                    lock_market(txn, &market).await?;
                    let current = orders::Entity::find_by_id(order_id)
                        .one(txn)
                        .await?
                        .ok_or(ApiError::NotFound("order"))?;
                    if !is_live(&current) {
                        return Err(ApiError::Conflict(format!(
                            "the order is already {}",
                            current.status
                        )));
                    }
                    let mut audit = Vec::new();
                    let cancelled = close_order(
                        txn,
                        None,
                        &events,
                        &mut audit,
                        &current,
                        (status::CANCELLED, "CANCELLED"),
                        Utc::now(),
                    )
                    .await?;
                    audit::record_all(txn, audit).await?;
                    Ok(cancelled)
                }
                .await;
                Ok((value?, events.take()))
            })
        })
        .await?;
    state.events.publish(events).await;
    Ok(order)
}

/// Cancels all of the viewer's live orders, in one market or everywhere.
pub async fn cancel_all(
    state: &AppState,
    viewer: &Viewer,
    market: Option<String>,
) -> Result<Vec<orders::Model>, ApiError> {
    let mut query = orders::Entity::find().filter(orders::Column::UserId.eq(viewer.user_id()));
    if let Some(market) = &market {
        query = query.filter(orders::Column::Market.eq(market.trim().to_uppercase()));
    }
    let live: Vec<orders::Model> = query
        .filter(
            sea_orm::Condition::any()
                .add(orders::Column::IsOpen.eq(true))
                .add(orders::Column::Status.eq(status::UNTRIGGERED)),
        )
        .all(state.db.conn())
        .await?;
    let mut cancelled = Vec::with_capacity(live.len());
    for order in live {
        match cancel(state, viewer, order.id).await {
            Ok(order) => cancelled.push(order),
            // Filled or cancelled meanwhile: nothing left to cancel.
            Err(ApiError::Conflict(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(cancelled)
}

/// One of the viewer's orders; `None` for unknown ids and other users' orders.
pub async fn find_own(
    state: &AppState,
    viewer: &Viewer,
    order_id: Uuid,
) -> Result<Option<orders::Model>, ApiError> {
    Ok(orders::Entity::find_by_id(order_id)
        .one(state.db.conn())
        .await?
        .filter(|o| o.user_id == viewer.user_id()))
}

pub async fn fills_of<C: ConnectionTrait>(
    conn: &C,
    order_id: Uuid,
) -> Result<Vec<fills::Model>, ApiError> {
    Ok(fills::Entity::find()
        .filter(fills::Column::OrderId.eq(order_id))
        .order_by_asc(fills::Column::Id)
        .all(conn)
        .await?)
}

/// Filters for order history.
#[derive(Default)]
pub struct OrderFilter {
    pub market: Option<String>,
    pub side: Option<Side>,
    pub status: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// A page of the viewer's orders, newest first, after the keyset cursor.
pub async fn list(
    state: &AppState,
    viewer: &Viewer,
    filter: &OrderFilter,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<orders::Model>, ApiError> {
    let mut query = orders::Entity::find().filter(orders::Column::UserId.eq(viewer.user_id()));
    if let Some(market) = &filter.market {
        query = query.filter(orders::Column::Market.eq(market.trim().to_uppercase()));
    }
    if let Some(side) = filter.side {
        query = query.filter(orders::Column::Side.eq(side_str(side)));
    }
    if let Some(status) = &filter.status {
        query = query.filter(orders::Column::Status.eq(status.as_str()));
    }
    if let Some(from) = filter.from {
        query = query.filter(orders::Column::CreatedAt.gte(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(orders::Column::CreatedAt.lt(to));
    }
    if let Some(after) = after {
        query = query.filter(orders::Column::Id.lt(after));
    }
    Ok(query
        .order_by_desc(orders::Column::Id)
        .limit(limit)
        .all(state.db.conn())
        .await?)
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, DatabaseBackend, QueryTrait};

    use super::{makers_query, Side};
    use crate::db::Db;
    use crate::metrics::Metrics;

    /// A book read must be able to use its side's index of open orders only, in that
    /// index's order; with `is_open` or `side` bound as a parameter, the database could
    /// not tell that it applies and would go through every order the market ever had.
    #[tokio::test]
    async fn book_reads_use_the_index_of_open_orders() {
        let db = Db::connect("sqlite::memory:", 1, &Metrics::new())
            .await
            .expect("an in-memory database");
        db.migrate().await.expect("the migrations apply");
        for (side, limit) in [
            (Side::Buy, Some(50)),
            (Side::Sell, Some(50)),
            (Side::Buy, None),
        ] {
            let mut statement =
                makers_query("BTC-USD", side, limit, 64).build(DatabaseBackend::Sqlite);
            statement.sql = format!("EXPLAIN QUERY PLAN {}", statement.sql);
            let plan: Vec<String> = db
                .conn()
                .query_all_raw(statement)
                .await
                .expect("SQLite explains the read")
                .iter()
                .map(|row| row.try_get::<String>("", "detail").unwrap_or_default())
                .collect();
            let index = match side {
                Side::Buy => "idx_orders_open_asks",
                Side::Sell => "idx_orders_open_bids",
            };
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{side:?} taker, limit {limit:?}: {plan:?}"
            );
            // Read in the index's own order: nothing left to sort.
            assert!(
                !plan.iter().any(|step| step.contains("TEMP B-TREE")),
                "{side:?} taker, limit {limit:?}: {plan:?}"
            );
        }
    }
}
