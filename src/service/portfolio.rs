//! Portfolio: positions and P&L under four cost-basis methods, performance, fills
//! history and tax reports.
//!
//! P&L state follows the money. Trades are folded in after they commit, in the order
//! of each user's order events ([`follow`]), so working out lots and realized P&L
//! never holds up a market. Deposits ([`on_deposit`]) and withdrawals
//! ([`asset_left_account`]) fold in the user's trades so far and then themselves, in
//! their own transaction; reads of P&L state catch their user up first, so nobody sees
//! a portfolio behind their own trades. Per user and asset the state holds the open
//! lots of FIFO, LIFO and HIFO (each method consumes different lots, so each has its
//! own set), the AVERAGE_COST pool, and running totals per method (quantity, known
//! cost, unknown-cost quantity, realized P&L) in `portfolio_positions`, plus every
//! realized piece (for tax reports) and hourly holdings (for performance). Hourly price
//! candles are written by matching itself ([`on_trade`]). Reads never replay history:
//! `portfolio` is four indexed reads whatever the number of fills.
//!
//! Costs are kept in one cost currency, [`COST_CURRENCY`]: a trade in ETH-BTC costs the
//! BTC spent, valued at BTC's last USD price at that moment (the rate its fills keep).
//! A portfolio asked for in another quote asset converts costs and P&L at the current
//! rate.
//!
//! Concurrency: whoever changes a user's P&L state holds that user's cursor row
//! (`portfolio_cursors`, locked on PostgreSQL; SQLite has one writer), so the
//! read-modify-write of positions and lots below cannot interleave.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, DurationRound, TimeZone, Utc};
use rust_decimal::Decimal;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend,
    DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::bulk::{Bulk, Cell, Columns};
use super::{ledger, markets};

pub mod follow;
pub(super) mod in_bulk;
use crate::domain::cost_basis::{self, Lot, Method, Pool, Realized};
use crate::domain::pricing::{self, PriceTable};
use crate::domain::returns;
use crate::error::ApiError;
use crate::state::AppState;
use entity::{
    fills, markets as market_rows, portfolio_flows, portfolio_holdings_history, portfolio_lots,
    portfolio_positions, portfolio_realized, price_candles, Amount,
};

/// The currency costs, proceeds and realized P&L are kept in.
pub const COST_CURRENCY: &str = "USD";

/// Lots read per page when a disposal consumes them.
const LOT_PAGE: u64 = 32;

/// The most points a performance series may have.
pub const MAX_POINTS: i64 = 2000;

// ---------------------------------------------------------------------------------------
// Keeping state up to date
// ---------------------------------------------------------------------------------------

/// A change to one user's holding of one asset.
#[derive(Clone, Debug)]
enum Movement {
    /// `cost` in the cost currency; `None` when unknown.
    Acquire {
        quantity: Decimal,
        cost: Option<Decimal>,
    },
    /// `proceeds` in the cost currency; `None` when unknown.
    Dispose {
        quantity: Decimal,
        proceeds: Option<Decimal>,
    },
}

/// Every market's last price.
pub(super) async fn price_table<C: ConnectionTrait>(conn: &C) -> Result<PriceTable, ApiError> {
    let markets = market_rows::Entity::find().all(conn).await?;
    Ok(table_of(&markets))
}

fn table_of(markets: &[market_rows::Model]) -> PriceTable {
    let mut table = PriceTable::default();
    for market in markets {
        if let Some(price) = market.last_price {
            table.insert(&market.base_asset, &market.quote_asset, price.0);
        }
    }
    table
}

fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(chrono::Duration::hours(1)).unwrap_or(at)
}

/// Folds a trade (one of its fills) into its market's hourly candle. Called by order
/// matching inside its transaction, under the market's lock.
pub async fn on_trade(txn: &DatabaseTransaction, fill: &fills::Model) -> Result<(), ApiError> {
    record_candle(
        txn,
        &fill.market,
        fill.price.0,
        fill.quantity.0,
        fill.created_at,
    )
    .await
}

/// One movement of one user's holding of one asset.
struct Step {
    user: Uuid,
    asset: String,
    movement: Movement,
    at: DateTime<Utc>,
}

/// What a fill of market `base`-`quote` moves in its user's holdings, in order,
/// valued in the cost currency at the rate the fill kept.
fn movements_of(fill: &fills::Model, (base, quote): (&str, &str)) -> Vec<Step> {
    let quote_rate = fill.cost_rate.map(|r| r.0);
    let notional = fill.price.0 * fill.quantity.0;
    let fee = fill.fee.0;
    let fee_in = |asset: &str| {
        if fill.fee_asset == asset {
            fee
        } else {
            Decimal::ZERO
        }
    };
    let value = |quote_amount: Decimal| quote_rate.map(|r| quote_amount * r);
    let step = |asset: &str, movement: Movement| Step {
        user: fill.user_id,
        asset: asset.to_owned(),
        movement,
        at: fill.created_at,
    };
    let mut steps = Vec::with_capacity(3);
    if fill.side == "BUY" {
        // The fee comes out of what the buyer receives: the whole price paid is the
        // cost of what arrived.
        let base_in = fill.quantity.0 - fee_in(base);
        let quote_out = notional + fee_in(quote);
        let cost = value(quote_out);
        steps.push(step(
            quote,
            Movement::Dispose {
                quantity: quote_out,
                proceeds: cost,
            },
        ));
        steps.push(step(
            base,
            Movement::Acquire {
                quantity: base_in,
                cost,
            },
        ));
    } else {
        // The fee comes out of the proceeds.
        let base_out = fill.quantity.0 + fee_in(base);
        let quote_in = notional - fee_in(quote);
        let proceeds = value(quote_in);
        steps.push(step(
            base,
            Movement::Dispose {
                quantity: base_out,
                proceeds,
            },
        ));
        steps.push(step(
            quote,
            Movement::Acquire {
                quantity: quote_in,
                cost: proceeds,
            },
        ));
    }
    if !fee.is_zero() && fill.fee_asset != base && fill.fee_asset != quote {
        // A fee in a third asset is a disposal of it that brings nothing back.
        steps.push(step(
            &fill.fee_asset,
            Movement::Dispose {
                quantity: fee,
                proceeds: Some(Decimal::ZERO),
            },
        ));
    }
    steps
}

/// Records an external deposit: an acquisition at the asset's last price in the cost
/// currency at this moment (through cross rates), or at unknown cost when it has none.
pub async fn on_deposit(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    asset: &str,
    quantity: Decimal,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    // The user's trades so far come first (their accounts are locked by now, so none
    // of this asset can commit meanwhile).
    follow::catch_up_in(txn, user_id).await?;
    let table = price_table(txn).await?;
    let cost = table.price(asset, COST_CURRENCY).map(|p| p * quantity);
    record_flow(txn, user_id, asset, quantity, at).await?;
    apply(
        txn,
        user_id,
        asset,
        Movement::Acquire { quantity, cost },
        at,
    )
    .await
}

/// Records that `quantity` of `asset` left the user's account (a withdrawal) and that
/// `fee` of it was kept as a fee: both are disposals; the quantity at its market value
/// in the cost currency (unknown without a price), the fee for nothing. Call it in the
/// transaction that moves the funds out.
pub async fn asset_left_account(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    asset: &str,
    quantity: Decimal,
    fee: Decimal,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    follow::catch_up_in(txn, user_id).await?;
    let table = price_table(txn).await?;
    let proceeds = table.price(asset, COST_CURRENCY).map(|p| p * quantity);
    record_flow(txn, user_id, asset, -quantity, at).await?;
    apply(
        txn,
        user_id,
        asset,
        Movement::Dispose { quantity, proceeds },
        at,
    )
    .await?;
    if fee > Decimal::ZERO {
        let fee_move = Movement::Dispose {
            quantity: fee,
            proceeds: Some(Decimal::ZERO),
        };
        apply(txn, user_id, asset, fee_move, at).await?;
    }
    Ok(())
}

async fn record_flow(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    asset: &str,
    quantity: Decimal,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    portfolio_flows::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        asset: Set(asset.to_owned()),
        quantity: Set(Amount(quantity)),
        at: Set(at),
    }
    .insert(txn)
    .await?;
    Ok(())
}

/// Folds one trade into its market's hourly candle. Safe without more locking: a
/// market's trades are written only under that market's lock.
async fn record_candle(
    txn: &DatabaseTransaction,
    market: &str,
    price: Decimal,
    quantity: Decimal,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let bucket = hour_of(at);
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        // One upsert; NUMERIC compares and adds exactly.
        txn.execute_raw(sea_orm::Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "INSERT INTO price_candles AS c (market, bucket, open, high, low, close, volume) \
             VALUES ($1, $2, $3, $3, $3, $3, $4) \
             ON CONFLICT (market, bucket) DO UPDATE SET high = GREATEST(c.high, EXCLUDED.high), \
             low = LEAST(c.low, EXCLUDED.low), close = EXCLUDED.close, \
             volume = c.volume + EXCLUDED.volume",
            [market.into(), bucket.into(), price.into(), quantity.into()],
        ))
        .await?;
        return Ok(());
    }
    match price_candles::Entity::find_by_id((market.to_owned(), bucket))
        .one(txn)
        .await?
    {
        Some(candle) => {
            let mut active: price_candles::ActiveModel = candle.clone().into();
            active.high = Set(Amount(candle.high.0.max(price)));
            active.low = Set(Amount(candle.low.0.min(price)));
            active.close = Set(Amount(price));
            active.volume = Set(Amount(candle.volume.0 + quantity));
            active.update(txn).await?;
        }
        None => {
            price_candles::ActiveModel {
                market: Set(market.to_owned()),
                bucket: Set(bucket),
                open: Set(Amount(price)),
                high: Set(Amount(price)),
                low: Set(Amount(price)),
                close: Set(Amount(price)),
                volume: Set(Amount(quantity)),
            }
            .insert(txn)
            .await?;
        }
    }
    Ok(())
}

/// HIFO's SQL order key: unit cost in 1e-8 steps, saturating; unknown cost last.
fn cost_rank(quantity: Decimal, cost: Option<Decimal>) -> i64 {
    use rust_decimal::prelude::ToPrimitive;
    match cost.and_then(|c| c.checked_div(quantity)) {
        Some(unit) => (unit * Decimal::new(100_000_000, 0))
            .floor()
            .to_i64()
            .unwrap_or(if unit.is_sign_negative() {
                i64::MIN + 1
            } else {
                i64::MAX
            }),
        None => i64::MIN,
    }
}

fn empty_position(
    user_id: Uuid,
    asset: &str,
    method: Method,
    at: DateTime<Utc>,
) -> portfolio_positions::Model {
    portfolio_positions::Model {
        user_id,
        method: method.as_str().to_owned(),
        asset: asset.to_owned(),
        quantity: Amount::ZERO,
        cost: Amount::ZERO,
        unknown_quantity: Amount::ZERO,
        realized_pnl: Amount::ZERO,
        unknown_realized: Amount::ZERO,
        since: None,
        updated_at: at,
    }
}

fn add_realized(position: &mut portfolio_positions::Model, pieces: &[Realized]) {
    let (gain, unknown) = cost_basis::realized_total(pieces);
    position.realized_pnl = Amount(position.realized_pnl.0 + gain);
    position.unknown_realized = Amount(position.unknown_realized.0 + unknown);
}

/// Everything one movement changes in (user, asset)'s P&L state, worked out before
/// anything is written.
struct Writes {
    new_lots: Vec<portfolio_lots::Model>,
    /// Lots partly consumed: (id, quantity left, cost left).
    changed_lots: Vec<(Uuid, Decimal, Option<Decimal>)>,
    gone_lots: Vec<Uuid>,
    realized: Vec<portfolio_realized::Model>,
    /// Every method's position after the movement.
    positions: Vec<portfolio_positions::Model>,
    /// The quantity held (FIFO's count, which every method shares) for the hourly point.
    held: Decimal,
}

/// Applies one movement to every method's state of (user, asset): reads the positions
/// (and, for a disposal, the lots it may consume), works out the changes, writes them.
async fn apply(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    asset: &str,
    movement: Movement,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let quantity = match &movement {
        Movement::Acquire { quantity, .. } | Movement::Dispose { quantity, .. } => *quantity,
    };
    if quantity <= Decimal::ZERO {
        return Ok(());
    }
    let positions = read_positions(txn, user_id, asset, at).await?;
    let lots = match movement {
        Movement::Dispose { quantity, .. } if asset != COST_CURRENCY => {
            read_lots(txn, user_id, asset, quantity).await?
        }
        _ => HashMap::new(),
    };
    let writes = work_out(user_id, asset, movement, positions, lots, at);
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        write_in_one_statement(txn, user_id, asset, &writes, at).await
    } else {
        write_one_by_one(txn, user_id, asset, writes, at).await
    }
}

/// Every method's position of (user, asset), empty where none is stored yet, locked on
/// PostgreSQL until commit.
async fn read_positions(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    asset: &str,
    at: DateTime<Utc>,
) -> Result<BTreeMap<Method, portfolio_positions::Model>, ApiError> {
    let mut query = portfolio_positions::Entity::find()
        .filter(portfolio_positions::Column::UserId.eq(user_id))
        .filter(portfolio_positions::Column::Asset.eq(asset));
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        query = query.lock_exclusive();
    }
    let existing = query.all(txn).await?;
    let mut positions: BTreeMap<Method, portfolio_positions::Model> = Method::ALL
        .into_iter()
        .map(|m| (m, empty_position(user_id, asset, m, at)))
        .collect();
    for row in existing {
        if let Some(method) = Method::parse(&row.method) {
            positions.insert(method, row);
        }
    }
    Ok(positions)
}

/// The changes `movement` makes, given the positions and, for a disposal, each lot
/// method's first open lots in its consumption order (enough to cover the quantity
/// when there are enough).
fn work_out(
    user_id: Uuid,
    asset: &str,
    movement: Movement,
    mut positions: BTreeMap<Method, portfolio_positions::Model>,
    lots: HashMap<Method, Vec<Lot<Uuid>>>,
    at: DateTime<Utc>,
) -> Writes {
    let mut writes = Writes {
        new_lots: Vec::new(),
        changed_lots: Vec::new(),
        gone_lots: Vec::new(),
        realized: Vec::new(),
        positions: Vec::new(),
        held: Decimal::ZERO,
    };
    if asset == COST_CURRENCY {
        // The cost currency costs what it is: no lots, no P&L.
        for position in positions.values_mut() {
            let q = match movement {
                Movement::Acquire { quantity, .. } => position.quantity.0 + quantity,
                Movement::Dispose { quantity, .. } => {
                    (position.quantity.0 - quantity).max(Decimal::ZERO)
                }
            };
            position.quantity = Amount(q);
            position.cost = Amount(q);
        }
    } else {
        match movement {
            Movement::Acquire { quantity, cost } => {
                let rank = cost_rank(quantity, cost);
                writes.new_lots = Method::LOT_METHODS
                    .into_iter()
                    .map(|method| portfolio_lots::Model {
                        id: Uuid::now_v7(),
                        user_id,
                        asset: asset.to_owned(),
                        method: method.as_str().to_owned(),
                        quantity: Amount(quantity),
                        cost: cost.map(Amount),
                        cost_rank: rank,
                        acquired_at: at,
                    })
                    .collect();
                for (method, position) in positions.iter_mut() {
                    if *method == Method::AverageCost {
                        let mut pool = pool_of(position);
                        pool.acquire(quantity, cost, at);
                        store_pool(position, &pool);
                        continue;
                    }
                    position.quantity = Amount(position.quantity.0 + quantity);
                    match cost {
                        Some(cost) => position.cost = Amount(position.cost.0 + cost),
                        None => {
                            position.unknown_quantity =
                                Amount(position.unknown_quantity.0 + quantity)
                        }
                    }
                }
            }
            Movement::Dispose { quantity, proceeds } => {
                let no_lots = Vec::new();
                for (method, position) in positions.iter_mut() {
                    let pieces = if *method == Method::AverageCost {
                        let mut pool = pool_of(position);
                        let pieces = pool.dispose(quantity, proceeds, at);
                        store_pool(position, &pool);
                        pieces
                    } else {
                        let open = lots.get(method).unwrap_or(&no_lots);
                        let (pieces, cost_out, unknown_out) =
                            consume_lots(&mut writes, open, quantity, proceeds, at);
                        position.quantity =
                            Amount((position.quantity.0 - quantity).max(Decimal::ZERO));
                        position.cost = Amount(position.cost.0 - cost_out);
                        position.unknown_quantity =
                            Amount((position.unknown_quantity.0 - unknown_out).max(Decimal::ZERO));
                        pieces
                    };
                    add_realized(position, &pieces);
                    writes.realized.extend(pieces.into_iter().map(|piece| {
                        portfolio_realized::Model {
                            id: Uuid::now_v7(),
                            user_id,
                            asset: asset.to_owned(),
                            method: method.as_str().to_owned(),
                            quantity: Amount(piece.quantity),
                            acquired_at: piece.acquired_at,
                            disposed_at: piece.disposed_at,
                            proceeds: piece.proceeds.map(Amount),
                            cost: piece.cost.map(Amount),
                        }
                    }));
                }
            }
        }
    }
    writes.held = positions
        .get(&Method::Fifo)
        .map(|p| p.quantity.0)
        .unwrap_or_default();
    writes.positions = positions
        .into_values()
        .map(|mut p| {
            p.updated_at = at;
            p
        })
        .collect();
    writes
}

fn pool_of(position: &portfolio_positions::Model) -> Pool {
    Pool {
        quantity: position.quantity.0 - position.unknown_quantity.0,
        cost: position.cost.0,
        unknown_quantity: position.unknown_quantity.0,
        since: position.since,
    }
}

fn store_pool(position: &mut portfolio_positions::Model, pool: &Pool) {
    position.quantity = Amount(pool.quantity + pool.unknown_quantity);
    position.cost = Amount(pool.cost);
    position.unknown_quantity = Amount(pool.unknown_quantity);
    position.since = pool.since;
}

/// Consumes `quantity` from one lot method's open lots (in its order), noting which
/// lots shrink and which are gone. Returns the realized pieces, the known cost and the
/// unknown-cost quantity that left.
fn consume_lots(
    writes: &mut Writes,
    lots: &[Lot<Uuid>],
    quantity: Decimal,
    proceeds: Option<Decimal>,
    at: DateTime<Utc>,
) -> (Vec<Realized>, Decimal, Decimal) {
    let consumption = cost_basis::consume(lots, quantity, proceeds, at);
    let mut cost_out = Decimal::ZERO;
    let mut unknown_out = Decimal::ZERO;
    for (before, after) in lots.iter().zip(consumption.updated.iter()) {
        match (before.cost, after.cost) {
            (Some(b), Some(a)) => cost_out += b - a,
            _ => unknown_out += before.quantity - after.quantity,
        }
        if after.quantity <= Decimal::ZERO {
            writes.gone_lots.push(after.key);
        } else {
            writes
                .changed_lots
                .push((after.key, after.quantity, after.cost));
        }
    }
    (consumption.realized, cost_out, unknown_out)
}

/// Each lot method's first open lots of (user, asset) in its consumption order, enough
/// to cover `quantity` when there are enough: a page each (all three in one read on
/// PostgreSQL), and a bigger page for a method whose first did not cover it.
async fn read_lots(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    asset: &str,
    quantity: Decimal,
) -> Result<HashMap<Method, Vec<Lot<Uuid>>>, ApiError> {
    let pages = read_lot_pages(txn, user_id, asset, quantity).await?;
    Ok(pages
        .into_iter()
        .map(|(method, page)| (method, page.lots))
        .collect())
}

/// Open lots of one method, in its consumption order: all of them (`complete`) or the
/// first ones.
struct LotPage {
    lots: Vec<Lot<Uuid>>,
    complete: bool,
}

/// [`read_lots`], saying for each method whether the page holds every open lot.
async fn read_lot_pages(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    asset: &str,
    quantity: Decimal,
) -> Result<HashMap<Method, LotPage>, ApiError> {
    let postgres = txn.get_database_backend() == DatabaseBackend::Postgres;
    let mut first_pages: HashMap<Method, Vec<portfolio_lots::Model>> = HashMap::new();
    if postgres {
        for row in first_lot_pages(txn, user_id, asset).await? {
            if let Some(method) = Method::parse(&row.method) {
                first_pages.entry(method).or_default().push(row);
            }
        }
    }
    let mut all = HashMap::new();
    for method in Method::LOT_METHODS {
        let mut page = LOT_PAGE;
        let mut rows = if postgres {
            first_pages.remove(&method).unwrap_or_default()
        } else {
            lot_page(txn, user_id, asset, method, page).await?
        };
        loop {
            let available: Decimal = rows.iter().map(|r| r.quantity.0).sum();
            if available < quantity && rows.len() as u64 == page {
                page *= 4;
                rows = lot_page(txn, user_id, asset, method, page).await?;
                continue;
            }
            break;
        }
        let complete = (rows.len() as u64) < page;
        all.insert(method, lot_page_of(method, &rows, complete));
    }
    Ok(all)
}

/// Stored lots as a [`LotPage`], in the method's exact order.
fn lot_page_of(method: Method, rows: &[portfolio_lots::Model], complete: bool) -> LotPage {
    let mut lots: Vec<Lot<Uuid>> = rows
        .iter()
        .map(|r| Lot {
            key: r.id,
            quantity: r.quantity.0,
            cost: r.cost.map(|c| c.0),
            acquired_at: r.acquired_at,
        })
        .collect();
    // The rank is coarse (1e-8 a unit): the exact order is decided here.
    cost_basis::sort_lots(method, &mut lots);
    LotPage { lots, complete }
}

/// The SQL order in which `method` consumes lots (HIFO's rank is refined in Rust).
fn lot_order(method: Method) -> &'static str {
    match method {
        Method::Lifo => "id DESC",
        Method::Hifo => "cost_rank DESC, id ASC",
        _ => "id ASC",
    }
}

/// One page of a lot method's open lots, in its order.
async fn lot_page(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    asset: &str,
    method: Method,
    page: u64,
) -> Result<Vec<portfolio_lots::Model>, ApiError> {
    let mut query = portfolio_lots::Entity::find()
        .filter(portfolio_lots::Column::UserId.eq(user_id))
        .filter(portfolio_lots::Column::Asset.eq(asset))
        .filter(portfolio_lots::Column::Method.eq(method.as_str()));
    query = match method {
        Method::Lifo => query.order_by_desc(portfolio_lots::Column::Id),
        Method::Hifo => query
            .order_by_desc(portfolio_lots::Column::CostRank)
            .order_by_asc(portfolio_lots::Column::Id),
        _ => query.order_by_asc(portfolio_lots::Column::Id),
    };
    Ok(query.limit(page).all(txn).await?)
}

/// PostgreSQL: the first page of every lot method, in one read.
async fn first_lot_pages(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    asset: &str,
) -> Result<Vec<portfolio_lots::Model>, ApiError> {
    let pages: Vec<String> = Method::LOT_METHODS
        .into_iter()
        .map(|method| {
            format!(
                "(SELECT * FROM portfolio_lots WHERE user_id = $1 AND asset = $2 \
                 AND method = '{}' ORDER BY {} LIMIT {LOT_PAGE})",
                method.as_str(),
                lot_order(method)
            )
        })
        .collect();
    let statement = sea_orm::Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        pages.join(" UNION ALL "),
        [user_id.into(), asset.into()],
    );
    Ok(portfolio_lots::Entity::find()
        .from_raw_sql(statement)
        .all(txn)
        .await?)
}

/// SQLite: the changes statement by statement (one writer at a time, nothing to gain).
async fn write_one_by_one(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    asset: &str,
    writes: Writes,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    if !writes.new_lots.is_empty() {
        let lots = writes
            .new_lots
            .into_iter()
            .map(|lot| portfolio_lots::ActiveModel::from(lot).reset_all());
        portfolio_lots::Entity::insert_many(lots)
            .exec_without_returning(txn)
            .await?;
    }
    for (id, quantity, cost) in writes.changed_lots {
        portfolio_lots::Entity::update_many()
            .col_expr(portfolio_lots::Column::Quantity, Amount(quantity).into())
            .col_expr(
                portfolio_lots::Column::Cost,
                sea_orm::sea_query::Expr::value(cost.map(Amount)),
            )
            .filter(portfolio_lots::Column::Id.eq(id))
            .exec(txn)
            .await?;
    }
    if !writes.gone_lots.is_empty() {
        portfolio_lots::Entity::delete_many()
            .filter(portfolio_lots::Column::Id.is_in(writes.gone_lots))
            .exec(txn)
            .await?;
    }
    if !writes.realized.is_empty() {
        let realized = writes
            .realized
            .into_iter()
            .map(|piece| portfolio_realized::ActiveModel::from(piece).reset_all());
        portfolio_realized::Entity::insert_many(realized)
            .exec_without_returning(txn)
            .await?;
    }
    let rows = writes
        .positions
        .into_iter()
        .map(|p| portfolio_positions::ActiveModel::from(p).reset_all());
    portfolio_positions::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([
                portfolio_positions::Column::UserId,
                portfolio_positions::Column::Method,
                portfolio_positions::Column::Asset,
            ])
            .update_columns([
                portfolio_positions::Column::Quantity,
                portfolio_positions::Column::Cost,
                portfolio_positions::Column::UnknownQuantity,
                portfolio_positions::Column::RealizedPnl,
                portfolio_positions::Column::UnknownRealized,
                portfolio_positions::Column::Since,
                portfolio_positions::Column::UpdatedAt,
            ])
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    portfolio_holdings_history::Entity::insert(portfolio_holdings_history::ActiveModel {
        user_id: Set(user_id),
        asset: Set(asset.to_owned()),
        bucket: Set(hour_of(at)),
        quantity: Set(Amount(writes.held)),
    })
    .on_conflict(
        OnConflict::columns([
            portfolio_holdings_history::Column::UserId,
            portfolio_holdings_history::Column::Asset,
            portfolio_holdings_history::Column::Bucket,
        ])
        .update_column(portfolio_holdings_history::Column::Quantity)
        .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// PostgreSQL: every change of a movement in one statement (see `service::bulk`), so a
/// disposal is three round trips (positions, lots, this) instead of a dozen.
async fn write_in_one_statement(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    asset: &str,
    writes: &Writes,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let changes = PairChanges {
        user_id,
        asset: asset.to_owned(),
        new_lots: writes.new_lots.clone(),
        changed_lots: writes.changed_lots.clone(),
        gone_lots: writes.gone_lots.clone(),
        realized: writes.realized.clone(),
        positions: writes.positions.clone(),
        held: vec![(hour_of(at), writes.held)],
    };
    let mut bulk = Bulk::default();
    add_changes(&mut bulk, std::slice::from_ref(&changes), at);
    bulk.run(txn).await
}

/// Changes to one (user, asset)'s P&L state, ready to be written.
#[derive(Default)]
struct PairChanges {
    user_id: Uuid,
    asset: String,
    new_lots: Vec<portfolio_lots::Model>,
    /// Lots partly consumed: (id, quantity left, cost left).
    changed_lots: Vec<(Uuid, Decimal, Option<Decimal>)>,
    gone_lots: Vec<Uuid>,
    realized: Vec<portfolio_realized::Model>,
    positions: Vec<portfolio_positions::Model>,
    /// The quantity held at the end of each hour touched.
    held: Vec<(DateTime<Utc>, Decimal)>,
}

/// Adds the changes of several (user, asset) pairs to `bulk`: one part per kind of
/// row, present even when it has no rows (the statement's text stays the same).
/// Distinct pairs never touch the same row.
fn add_changes(bulk: &mut Bulk, pairs: &[PairChanges], at: DateTime<Utc>) {
    let mut new_lots = Columns::new(&[
        ("id", "uuid"),
        ("user_id", "uuid"),
        ("asset", ""),
        ("method", ""),
        ("quantity", "numeric"),
        ("cost", "numeric?"),
        ("cost_rank", "bigint"),
        ("acquired_at", "timestamptz"),
    ]);
    for lot in pairs.iter().flat_map(|c| &c.new_lots) {
        new_lots.push([
            lot.id.cell(),
            lot.user_id.cell(),
            lot.asset.cell(),
            lot.method.cell(),
            lot.quantity.cell(),
            lot.cost.cell(),
            lot.cost_rank.cell(),
            lot.acquired_at.cell(),
        ]);
    }
    bulk.add(|p| {
        format!(
            "INSERT INTO portfolio_lots (id, user_id, asset, method, quantity, cost, cost_rank, \
             acquired_at) {}",
            new_lots.select(p, "r")
        )
    });
    let mut changed = Columns::new(&[
        ("id", "uuid"),
        ("quantity", "numeric"),
        ("cost", "numeric?"),
    ]);
    for (id, quantity, cost) in pairs.iter().flat_map(|c| &c.changed_lots) {
        changed.push([id.cell(), quantity.cell(), cost.cell()]);
    }
    bulk.add(|p| {
        format!(
            "UPDATE portfolio_lots AS l SET quantity = v.quantity, cost = v.cost \
             FROM ({}) AS v WHERE l.id = v.id",
            changed.select(p, "r")
        )
    });
    let mut gone = Columns::new(&[("id", "uuid")]);
    for id in pairs.iter().flat_map(|c| &c.gone_lots) {
        gone.push([id.cell()]);
    }
    bulk.add(|p| {
        format!(
            "DELETE FROM portfolio_lots WHERE id IN ({})",
            gone.select(p, "r")
        )
    });
    let mut realized = Columns::new(&[
        ("id", "uuid"),
        ("user_id", "uuid"),
        ("asset", ""),
        ("method", ""),
        ("quantity", "numeric"),
        ("acquired_at", "timestamptz"),
        ("disposed_at", "timestamptz"),
        ("proceeds", "numeric?"),
        ("cost", "numeric?"),
    ]);
    for piece in pairs.iter().flat_map(|c| &c.realized) {
        realized.push([
            piece.id.cell(),
            piece.user_id.cell(),
            piece.asset.cell(),
            piece.method.cell(),
            piece.quantity.cell(),
            piece.acquired_at.cell(),
            piece.disposed_at.cell(),
            piece.proceeds.cell(),
            piece.cost.cell(),
        ]);
    }
    bulk.add(|p| {
        format!(
            "INSERT INTO portfolio_realized (id, user_id, asset, method, quantity, acquired_at, \
             disposed_at, proceeds, cost) {}",
            realized.select(p, "r")
        )
    });
    let mut positions = Columns::new(&[
        ("user_id", "uuid"),
        ("asset", ""),
        ("method", ""),
        ("quantity", "numeric"),
        ("cost", "numeric"),
        ("unknown_quantity", "numeric"),
        ("realized_pnl", "numeric"),
        ("unknown_realized", "numeric"),
        ("since", "timestamptz?"),
    ]);
    for position in pairs.iter().flat_map(|c| &c.positions) {
        positions.push([
            position.user_id.cell(),
            position.asset.cell(),
            position.method.cell(),
            position.quantity.cell(),
            position.cost.cell(),
            position.unknown_quantity.cell(),
            position.realized_pnl.cell(),
            position.unknown_realized.cell(),
            position.since.cell(),
        ]);
    }
    bulk.add(|p| {
        format!(
            "INSERT INTO portfolio_positions (user_id, asset, method, quantity, cost, \
             unknown_quantity, realized_pnl, unknown_realized, since, updated_at) \
             SELECT r.*, {} FROM ({}) AS r \
             ON CONFLICT (user_id, method, asset) DO UPDATE SET \
             quantity = EXCLUDED.quantity, cost = EXCLUDED.cost, \
             unknown_quantity = EXCLUDED.unknown_quantity, realized_pnl = EXCLUDED.realized_pnl, \
             unknown_realized = EXCLUDED.unknown_realized, since = EXCLUDED.since, \
             updated_at = EXCLUDED.updated_at",
            p.bind(at, "timestamptz"),
            positions.select(p, "r")
        )
    });
    let mut held = Columns::new(&[
        ("user_id", "uuid"),
        ("asset", ""),
        ("bucket", "timestamptz"),
        ("quantity", "numeric"),
    ]);
    for c in pairs {
        for (bucket, quantity) in &c.held {
            held.push([
                c.user_id.cell(),
                c.asset.cell(),
                bucket.cell(),
                quantity.cell(),
            ]);
        }
    }
    bulk.add(|p| {
        format!(
            "INSERT INTO portfolio_holdings_history (user_id, asset, bucket, quantity) {} \
             ON CONFLICT (user_id, asset, bucket) DO UPDATE SET quantity = EXCLUDED.quantity",
            held.select(p, "r")
        )
    });
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

/// One position as shown: amounts in the quote asset, exact (rounding is the caller's).
#[derive(Clone, Debug)]
pub struct PositionView {
    pub asset: entity::assets::Model,
    pub quantity: Decimal,
    pub available: Decimal,
    pub locked: Decimal,
    /// `None`: no market prices the asset in the quote asset.
    pub price: Option<Decimal>,
    pub value: Option<Decimal>,
    pub allocation: Option<Decimal>,
    /// Known cost of the quantity held; `None` when no rate converts the cost currency.
    pub cost_basis: Option<Decimal>,
    pub average_cost: Option<Decimal>,
    pub unrealized_pnl: Option<Decimal>,
    pub realized_pnl: Option<Decimal>,
    /// Quantity held whose cost is unknown (not in `cost_basis` nor in P&L).
    pub unknown_cost_quantity: Decimal,
}

#[derive(Clone, Debug)]
pub struct PortfolioView {
    pub quote_asset: String,
    pub quote_precision: u32,
    pub method: Method,
    pub total_value: Decimal,
    pub total_cost: Option<Decimal>,
    pub unrealized_pnl: Option<Decimal>,
    pub realized_pnl: Option<Decimal>,
    pub positions: Vec<PositionView>,
}

async fn quote_asset<C: ConnectionTrait>(
    conn: &C,
    symbol: &str,
) -> Result<entity::assets::Model, ApiError> {
    markets::find_asset(conn, &symbol.trim().to_uppercase())
        .await?
        .ok_or_else(|| ApiError::bad_input("quoteAsset", "unknown asset"))
}

/// The user's portfolio valued in `quote`: balances, last prices and the P&L state kept
/// by the hooks above. Four reads (assets, balances, markets, positions), none of them
/// over the user's history.
pub async fn portfolio(
    state: &AppState,
    user_id: Uuid,
    quote: &str,
    method: Method,
) -> Result<PortfolioView, ApiError> {
    follow::catch_up(state, user_id).await?;
    let conn = state.db.conn();
    // All assets in one read: the quote asset's precision and every position's asset.
    let assets: HashMap<String, entity::assets::Model> = markets::list_assets(conn)
        .await?
        .into_iter()
        .map(|a| (a.symbol.clone(), a))
        .collect();
    let quote = assets
        .get(&quote.trim().to_uppercase())
        .cloned()
        .ok_or_else(|| ApiError::bad_input("quoteAsset", "unknown asset"))?;
    let holdings = ledger::holdings(conn, user_id).await?;
    let table = price_table(conn).await?;
    let positions: HashMap<String, portfolio_positions::Model> =
        portfolio_positions::Entity::find()
            .filter(portfolio_positions::Column::UserId.eq(user_id))
            .filter(portfolio_positions::Column::Method.eq(method.as_str()))
            .all(conn)
            .await?
            .into_iter()
            .map(|p| (p.asset.clone(), p))
            .collect();
    // Costs are kept in the cost currency; shown in the quote asset at today's rate.
    let rate = table.price(COST_CURRENCY, &quote.symbol);
    let mut views = Vec::new();
    for (asset, holding) in &holdings {
        let quantity = holding.available + holding.locked;
        if quantity <= Decimal::ZERO {
            continue;
        }
        let Some(asset_row) = assets.get(asset) else {
            continue;
        };
        let price = table.price(asset, &quote.symbol);
        let value = price.map(|p| p * quantity);
        let state = positions.get(asset);
        let tracked = state.map(|p| p.quantity.0).unwrap_or_default();
        // Funds from before tracking began have no recorded cost.
        let unknown = state.map(|p| p.unknown_quantity.0).unwrap_or_default()
            + (quantity - tracked).max(Decimal::ZERO);
        let known = (quantity - unknown).max(Decimal::ZERO);
        let cost = rate.map(|r| state.map(|p| p.cost.0).unwrap_or_default() * r);
        let average_cost = cost.and_then(|c| c.checked_div(known));
        let unrealized = price.zip(cost).map(|(p, c)| known * p - c);
        let realized = rate.map(|r| state.map(|p| p.realized_pnl.0).unwrap_or_default() * r);
        views.push(PositionView {
            asset: asset_row.clone(),
            quantity,
            available: holding.available,
            locked: holding.locked,
            price,
            value,
            allocation: None,
            cost_basis: cost,
            average_cost,
            unrealized_pnl: unrealized,
            realized_pnl: realized,
            unknown_cost_quantity: unknown,
        });
    }
    let total_value: Decimal = views.iter().filter_map(|v| v.value).sum();
    for view in &mut views {
        view.allocation = view
            .value
            .and_then(|v| v.checked_div(total_value))
            .filter(|_| !total_value.is_zero());
    }
    let realized_all = rate.map(|r| {
        positions
            .values()
            .map(|p| p.realized_pnl.0)
            .sum::<Decimal>()
            * r
    });
    Ok(PortfolioView {
        quote_precision: quote.precision as u32,
        quote_asset: quote.symbol,
        method,
        total_value,
        total_cost: rate.map(|_| views.iter().filter_map(|v| v.cost_basis).sum()),
        unrealized_pnl: rate.map(|_| views.iter().filter_map(|v| v.unrealized_pnl).sum()),
        realized_pnl: realized_all,
        positions: views,
    })
}

/// The portfolio's current value in `quote` (priced positions only): two reads.
pub async fn current_value(
    state: &AppState,
    user_id: Uuid,
    quote: &str,
) -> Result<(Decimal, BTreeSet<String>), ApiError> {
    let conn = state.db.conn();
    let holdings = ledger::holdings(conn, user_id).await?;
    let table = price_table(conn).await?;
    let mut value = Decimal::ZERO;
    let mut held = BTreeSet::new();
    for (asset, holding) in holdings {
        let quantity = holding.available + holding.locked;
        if quantity <= Decimal::ZERO {
            continue;
        }
        if let Some(price) = table.price(&asset, quote) {
            value += price * quantity;
        }
        held.insert(asset);
    }
    Ok((value, held))
}

/// Validates a quote asset symbol for subscriptions; returns its precision.
pub async fn quote_precision(state: &AppState, quote: &str) -> Result<(String, u32), ApiError> {
    let asset = quote_asset(state.db.conn(), quote).await?;
    Ok((asset.symbol, asset.precision as u32))
}

/// Spacing of performance points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
    Week,
}

impl Interval {
    fn step(self) -> chrono::Duration {
        match self {
            Interval::Hour => chrono::Duration::hours(1),
            Interval::Day => chrono::Duration::days(1),
            Interval::Week => chrono::Duration::weeks(1),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PerformanceView {
    pub points: Vec<(DateTime<Utc>, Decimal)>,
    pub time_weighted_return: Option<Decimal>,
    pub money_weighted_return: Option<Decimal>,
    pub net_deposits: Decimal,
}

/// A step function of time: the latest value at or before a point.
struct Series<T>(BTreeMap<DateTime<Utc>, T>);

impl<T: Copy> Series<T> {
    fn at(&self, t: DateTime<Utc>) -> Option<T> {
        self.0.range(..=t).next_back().map(|(_, v)| *v)
    }
}

/// The value series from `from` to `to`, rebuilt from hourly holdings and hourly
/// candles (hour resolution: a point shows the holdings and close prices of the hour
/// it falls in), with TWR, XIRR and the net deposits valued when they happened.
pub async fn performance(
    state: &AppState,
    user_id: Uuid,
    quote: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    interval: Interval,
) -> Result<PerformanceView, ApiError> {
    follow::catch_up(state, user_id).await?;
    let conn = state.db.conn();
    let quote = quote_asset(conn, quote).await?;
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or(to - chrono::Duration::days(30));
    if from >= to {
        return Err(ApiError::bad_input("from", "must be before `to`"));
    }
    let step = interval.step();
    let count = (to - from).num_seconds() / step.num_seconds() + 1;
    if count > MAX_POINTS {
        return Err(ApiError::bad_input(
            "interval",
            format!("the range holds {count} points; at most {MAX_POINTS}: narrow it or use a longer interval"),
        ));
    }
    let mut times: Vec<DateTime<Utc>> = (0..count).map(|k| from + step * k as i32).collect();
    if times.last().is_some_and(|t| *t < to) {
        times.push(to);
    }

    // Holdings per asset: the last row at or before `from`, then every row up to `to`.
    let assets: Vec<String> = portfolio_positions::Entity::find()
        .filter(portfolio_positions::Column::UserId.eq(user_id))
        .filter(portfolio_positions::Column::Method.eq(Method::Fifo.as_str()))
        .all(conn)
        .await?
        .into_iter()
        .map(|p| p.asset)
        .collect();
    let mut holdings: BTreeMap<String, Series<Decimal>> = BTreeMap::new();
    for asset in &assets {
        let before = portfolio_holdings_history::Entity::find()
            .filter(portfolio_holdings_history::Column::UserId.eq(user_id))
            .filter(portfolio_holdings_history::Column::Asset.eq(asset.as_str()))
            .filter(portfolio_holdings_history::Column::Bucket.lte(hour_of(from)))
            .order_by_desc(portfolio_holdings_history::Column::Bucket)
            .one(conn)
            .await?;
        let series = holdings
            .entry(asset.clone())
            .or_insert_with(|| Series(BTreeMap::new()));
        if let Some(row) = before {
            series.0.insert(row.bucket, row.quantity.0);
        }
    }
    let rows = portfolio_holdings_history::Entity::find()
        .filter(portfolio_holdings_history::Column::UserId.eq(user_id))
        .filter(portfolio_holdings_history::Column::Bucket.gt(hour_of(from)))
        .filter(portfolio_holdings_history::Column::Bucket.lte(to))
        .all(conn)
        .await?;
    for row in rows {
        holdings
            .entry(row.asset.clone())
            .or_insert_with(|| Series(BTreeMap::new()))
            .0
            .insert(row.bucket, row.quantity.0);
    }

    // Close prices per market, the same way.
    let all_markets = market_rows::Entity::find().all(conn).await?;
    let mut closes: Vec<(&market_rows::Model, Series<Decimal>)> = Vec::new();
    for market in &all_markets {
        let before = price_candles::Entity::find()
            .filter(price_candles::Column::Market.eq(market.symbol.as_str()))
            .filter(price_candles::Column::Bucket.lte(hour_of(from)))
            .order_by_desc(price_candles::Column::Bucket)
            .one(conn)
            .await?;
        let mut series = Series(BTreeMap::new());
        if let Some(c) = before {
            series.0.insert(c.bucket, c.close.0);
        }
        let in_range = price_candles::Entity::find()
            .filter(price_candles::Column::Market.eq(market.symbol.as_str()))
            .filter(price_candles::Column::Bucket.gt(hour_of(from)))
            .filter(price_candles::Column::Bucket.lte(to))
            .all(conn)
            .await?;
        for c in in_range {
            series.0.insert(c.bucket, c.close.0);
        }
        closes.push((market, series));
    }
    let table_at = |t: DateTime<Utc>| {
        let mut table = PriceTable::default();
        for (market, series) in &closes {
            if let Some(price) = series.at(t) {
                table.insert(&market.base_asset, &market.quote_asset, price);
            }
        }
        table
    };

    let flows = portfolio_flows::Entity::find()
        .filter(portfolio_flows::Column::UserId.eq(user_id))
        .filter(portfolio_flows::Column::At.gt(from))
        .filter(portfolio_flows::Column::At.lte(to))
        .order_by_asc(portfolio_flows::Column::At)
        .all(conn)
        .await?;
    let flow_values: Vec<(DateTime<Utc>, Decimal)> = flows
        .iter()
        .filter_map(|f| {
            let price = table_at(hour_of(f.at)).price(&f.asset, &quote.symbol)?;
            Some((f.at, f.quantity.0 * price))
        })
        .collect();

    let mut points = Vec::with_capacity(times.len());
    let mut periods = Vec::with_capacity(times.len());
    let mut previous: Option<DateTime<Utc>> = None;
    for t in &times {
        let table = table_at(*t);
        let value: Decimal = holdings
            .iter()
            .filter_map(|(asset, series)| {
                let quantity = series.at(*t)?;
                Some(quantity * table.price(asset, &quote.symbol)?)
            })
            .sum();
        let net_flow = match previous {
            Some(p) => flow_values
                .iter()
                .filter(|(at, _)| *at > p && *at <= *t)
                .map(|(_, v)| *v)
                .sum(),
            None => Decimal::ZERO,
        };
        previous = Some(*t);
        points.push((*t, value));
        periods.push(returns::Period { value, net_flow });
    }
    let net_deposits: Decimal = flow_values.iter().map(|(_, v)| *v).sum();
    let mut cash_flows = vec![returns::Flow {
        at: from,
        amount: -points.first().map(|p| p.1).unwrap_or_default(),
    }];
    cash_flows.extend(flow_values.iter().map(|(at, v)| returns::Flow {
        at: *at,
        amount: -*v,
    }));
    cash_flows.push(returns::Flow {
        at: to,
        amount: points.last().map(|p| p.1).unwrap_or_default(),
    });
    Ok(PerformanceView {
        time_weighted_return: returns::time_weighted(&periods),
        money_weighted_return: returns::xirr(&cash_flows),
        net_deposits: pricing::display(net_deposits, quote.precision as u32),
        points: points
            .into_iter()
            .map(|(t, v)| (t, pricing::display(v, quote.precision as u32)))
            .collect(),
    })
}

/// One realized lot piece of a tax report, in the quote asset.
#[derive(Clone, Debug)]
pub struct TaxLotView {
    pub asset: String,
    pub quantity: Decimal,
    pub acquired_at: DateTime<Utc>,
    pub disposed_at: DateTime<Utc>,
    pub proceeds: Option<Decimal>,
    pub cost_basis: Option<Decimal>,
    pub gain: Option<Decimal>,
    pub long_term: bool,
}

#[derive(Clone, Debug)]
pub struct TaxReportView {
    pub year: i32,
    pub method: Method,
    pub quote_asset: String,
    pub quote_precision: u32,
    pub lots: Vec<TaxLotView>,
    pub totals: cost_basis::TaxTotals,
}

/// Realized lots disposed of in `year` (UTC) under `method`, with totals.
pub async fn tax_report(
    state: &AppState,
    user_id: Uuid,
    year: i32,
    method: Method,
    quote: &str,
) -> Result<TaxReportView, ApiError> {
    follow::catch_up(state, user_id).await?;
    let conn = state.db.conn();
    let quote = quote_asset(conn, quote).await?;
    let (Some(start), Some(end)) = (
        Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).single(),
        Utc.with_ymd_and_hms(year + 1, 1, 1, 0, 0, 0).single(),
    ) else {
        return Err(ApiError::bad_input("year", "out of range"));
    };
    if !(1970..=9998).contains(&year) {
        return Err(ApiError::bad_input("year", "out of range"));
    }
    let rate = if quote.symbol == COST_CURRENCY {
        Some(Decimal::ONE)
    } else {
        price_table(conn).await?.price(COST_CURRENCY, &quote.symbol)
    };
    let rows = portfolio_realized::Entity::find()
        .filter(portfolio_realized::Column::UserId.eq(user_id))
        .filter(portfolio_realized::Column::Method.eq(method.as_str()))
        .filter(portfolio_realized::Column::DisposedAt.gte(start))
        .filter(portfolio_realized::Column::DisposedAt.lt(end))
        .order_by_asc(portfolio_realized::Column::DisposedAt)
        .order_by_asc(portfolio_realized::Column::Id)
        .all(conn)
        .await?;
    let convert = |v: Option<Amount>| v.zip(rate).map(|(v, r)| v.0 * r);
    let pieces: Vec<(String, Realized)> = rows
        .into_iter()
        .map(|r| {
            (
                r.asset,
                Realized {
                    quantity: r.quantity.0,
                    acquired_at: r.acquired_at,
                    disposed_at: r.disposed_at,
                    proceeds: convert(r.proceeds),
                    cost: convert(r.cost),
                },
            )
        })
        .collect();
    let totals = cost_basis::tax_totals(pieces.iter().map(|(_, p)| p));
    Ok(TaxReportView {
        year,
        method,
        quote_precision: quote.precision as u32,
        quote_asset: quote.symbol,
        lots: pieces
            .into_iter()
            .map(|(asset, p)| TaxLotView {
                gain: p.gain(),
                long_term: p.long_term(),
                asset,
                quantity: p.quantity,
                acquired_at: p.acquired_at,
                disposed_at: p.disposed_at,
                proceeds: p.proceeds,
                cost_basis: p.cost,
            })
            .collect(),
        totals,
    })
}

impl TaxReportView {
    /// The report as CSV with a header row; amounts rounded half-even to the quote
    /// asset's precision, unknown amounts left empty.
    pub fn csv(&self) -> String {
        let dp = self.quote_precision;
        let amount = |v: Option<Decimal>| {
            v.map(|v| pricing::display(v, dp).to_string())
                .unwrap_or_default()
        };
        let mut out = String::from(
            "asset,quantity,acquired_at,disposed_at,proceeds,cost_basis,gain,long_term\n",
        );
        for lot in &self.lots {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                lot.asset,
                lot.quantity.normalize(),
                lot.acquired_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                lot.disposed_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                amount(lot.proceeds),
                amount(lot.cost_basis),
                amount(lot.gain),
                lot.long_term,
            ));
        }
        out
    }
}

/// Filters for fill history.
#[derive(Default)]
pub struct FillFilter {
    pub market: Option<String>,
    pub side: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// A page of the user's fills, newest first, after the keyset cursor (ids are
/// time-ordered), through the (user, id) index.
pub async fn fills_page(
    state: &AppState,
    user_id: Uuid,
    filter: &FillFilter,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<fills::Model>, ApiError> {
    let mut query = fills::Entity::find().filter(fills::Column::UserId.eq(user_id));
    if let Some(market) = &filter.market {
        query = query.filter(fills::Column::Market.eq(market.trim().to_uppercase()));
    }
    if let Some(side) = &filter.side {
        query = query.filter(fills::Column::Side.eq(side.as_str()));
    }
    if let Some(from) = filter.from {
        query = query.filter(fills::Column::CreatedAt.gte(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(fills::Column::CreatedAt.lt(to));
    }
    if let Some(after) = after {
        query = query.filter(fills::Column::Id.lt(after));
    }
    Ok(query
        .order_by_desc(fills::Column::Id)
        .limit(limit)
        .all(state.db.conn())
        .await?)
}
