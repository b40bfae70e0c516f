//! P&L state for many movements at once (PostgreSQL), and the price candles of a
//! placing transaction's trades.
//!
//! Movement by movement, each reads its (user, asset)'s positions and lots and writes
//! them back: several round trips each. Here the positions of every (user, asset) the
//! movements touch are read (and locked) in one statement, the first lots of every
//! disposal in one more, the movements are worked out in order in memory, and the
//! changes go into the caller's bulk write. The result is the same as one by one: the
//! same `work_out`, on the same state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::{DatabaseBackend, DatabaseTransaction, EntityTrait, Statement};
use uuid::Uuid;

use super::{
    add_changes, hour_of, lot_order, lot_page_of, read_lot_pages, work_out, LotPage, Movement,
    PairChanges, Step, Writes, COST_CURRENCY,
};
use crate::domain::cost_basis::{self, Lot, Method};
use crate::error::ApiError;
use crate::service::bulk::{Bulk, Cell, Columns, Params};
use entity::{fills, portfolio_lots, portfolio_positions, price_candles, Amount};

/// Adds the hourly candles of `fills` (the trades of `market`, in order, two fills
/// each) to `bulk`.
pub(in crate::service) fn candles_of(fills: &[fills::Model], bulk: &mut Bulk) {
    if fills.is_empty() {
        return;
    }
    let mut candles = Candles::default();
    for trade in fills.chunk_by(|a, b| a.trade_id == b.trade_id) {
        candles.add(&trade[0]);
    }
    candles.write(bulk);
}

/// Folds `steps` (in the order they happened for each user and asset) into P&L
/// state, adding every write to `bulk`. The caller holds the users' P&L cursors, so
/// nobody else changes these rows meanwhile.
pub(super) async fn fold_steps(
    txn: &DatabaseTransaction,
    mut steps: Vec<Step>,
    bulk: &mut Bulk,
) -> Result<(), ApiError> {
    steps.retain(|step| quantity_of(&step.movement) > Decimal::ZERO);
    if steps.is_empty() {
        return Ok(());
    }
    let pairs: BTreeSet<(Uuid, String)> = steps.iter().map(|s| (s.user, s.asset.clone())).collect();
    let disposing: BTreeSet<(Uuid, String)> = steps
        .iter()
        .filter(|s| matches!(s.movement, Movement::Dispose { .. }) && s.asset != COST_CURRENCY)
        .map(|s| (s.user, s.asset.clone()))
        .collect();
    let at = steps.iter().map(|s| s.at).max().unwrap_or_else(Utc::now);
    let mut state = read_positions(txn, &pairs, at).await?;
    for (pair, pages) in read_first_lot_pages(txn, &disposing).await? {
        if let Some(held) = state.get_mut(&pair) {
            held.set_lots(pages);
        }
    }
    for step in steps {
        let key = (step.user, step.asset.clone());
        let Some(held) = state.get_mut(&key) else {
            continue;
        };
        held.apply(txn, step).await?;
    }
    let changes: Vec<PairChanges> = state.into_values().map(Held::into_changes).collect();
    add_changes(bulk, &changes, at);
    Ok(())
}

fn quantity_of(movement: &Movement) -> Decimal {
    match movement {
        Movement::Acquire { quantity, .. } | Movement::Dispose { quantity, .. } => *quantity,
    }
}

/// One (user, asset)'s P&L state as the trades so far have left it, and what changed.
struct Held {
    user_id: Uuid,
    asset: String,
    positions: BTreeMap<Method, portfolio_positions::Model>,
    /// Each lot method's open lots as far as read, in consumption order, with changes;
    /// `None` until read.
    lots: Option<HashMap<Method, LotPage>>,
    /// Lots that came from the database (the rest are new here).
    stored_lots: HashSet<Uuid>,
    new_lots: BTreeMap<Uuid, portfolio_lots::Model>,
    changed_lots: BTreeMap<Uuid, (Decimal, Option<Decimal>)>,
    gone_lots: BTreeSet<Uuid>,
    realized: Vec<entity::portfolio_realized::Model>,
    held: BTreeMap<DateTime<Utc>, Decimal>,
}

impl Held {
    fn set_lots(&mut self, pages: HashMap<Method, LotPage>) {
        self.stored_lots = pages
            .values()
            .flat_map(|p| p.lots.iter().map(|l| l.key))
            .collect();
        self.lots = Some(pages);
    }

    /// Whether a disposal of `quantity` could reach past the lots read: a method whose
    /// page is not complete must cover it with stored lots it has read, since lots not
    /// read may come before anything after them.
    fn short_of(&self, quantity: Decimal) -> bool {
        let Some(lots) = &self.lots else {
            return true;
        };
        Method::LOT_METHODS.into_iter().any(|method| {
            lots.get(&method).is_none_or(|page| {
                !page.complete
                    && page
                        .lots
                        .iter()
                        .filter(|l| self.stored_lots.contains(&l.key))
                        .map(|l| l.quantity)
                        .sum::<Decimal>()
                        < quantity
            })
        })
    }

    async fn apply(&mut self, txn: &DatabaseTransaction, step: Step) -> Result<(), ApiError> {
        if let Movement::Dispose { quantity, .. } = step.movement {
            if step.asset != COST_CURRENCY && self.short_of(quantity) {
                // Write what this pair has so far, then read its lots again, further.
                let changes = self.take_changes(step.at);
                let mut bulk = Bulk::default();
                add_changes(&mut bulk, std::slice::from_ref(&changes), step.at);
                bulk.run(txn).await?;
                let pages = read_lot_pages(txn, self.user_id, &self.asset, quantity).await?;
                self.set_lots(pages);
            }
        }
        let lots: HashMap<Method, Vec<Lot<Uuid>>> = self
            .lots
            .as_ref()
            .map(|pages| {
                pages
                    .iter()
                    .map(|(method, page)| (*method, page.lots.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let writes = work_out(
            self.user_id,
            &self.asset,
            step.movement,
            self.positions.clone(),
            lots,
            step.at,
        );
        self.absorb(writes, step.at);
        Ok(())
    }

    /// Takes one movement's changes into the state and into what is to be written.
    fn absorb(&mut self, writes: Writes, at: DateTime<Utc>) {
        for position in writes.positions {
            if let Some(method) = Method::parse(&position.method) {
                self.positions.insert(method, position);
            }
        }
        let changed: HashMap<Uuid, (Decimal, Option<Decimal>)> = writes
            .changed_lots
            .iter()
            .map(|(id, quantity, cost)| (*id, (*quantity, *cost)))
            .collect();
        let gone: HashSet<Uuid> = writes.gone_lots.iter().copied().collect();
        if let Some(pages) = &mut self.lots {
            for page in pages.values_mut() {
                page.lots.retain(|lot| !gone.contains(&lot.key));
                for lot in &mut page.lots {
                    if let Some((quantity, cost)) = changed.get(&lot.key) {
                        lot.quantity = *quantity;
                        lot.cost = *cost;
                    }
                }
            }
            for lot in &writes.new_lots {
                let Some(method) = Method::parse(&lot.method) else {
                    continue;
                };
                if let Some(page) = pages.get_mut(&method) {
                    page.lots.push(Lot {
                        key: lot.id,
                        quantity: lot.quantity.0,
                        cost: lot.cost.map(|c| c.0),
                        acquired_at: lot.acquired_at,
                    });
                    cost_basis::sort_lots(method, &mut page.lots);
                }
            }
        }
        for lot in writes.new_lots {
            self.new_lots.insert(lot.id, lot);
        }
        for (id, (quantity, cost)) in changed {
            match self.new_lots.get_mut(&id) {
                Some(lot) => {
                    lot.quantity = Amount(quantity);
                    lot.cost = cost.map(Amount);
                }
                None => {
                    self.changed_lots.insert(id, (quantity, cost));
                }
            }
        }
        for id in gone {
            if self.new_lots.remove(&id).is_none() {
                self.changed_lots.remove(&id);
                self.gone_lots.insert(id);
            }
        }
        self.realized.extend(writes.realized);
        self.held.insert(hour_of(at), writes.held);
    }

    /// What changed since the last write, leaving the state as it is.
    fn take_changes(&mut self, at: DateTime<Utc>) -> PairChanges {
        PairChanges {
            user_id: self.user_id,
            asset: self.asset.clone(),
            new_lots: std::mem::take(&mut self.new_lots).into_values().collect(),
            changed_lots: std::mem::take(&mut self.changed_lots)
                .into_iter()
                .map(|(id, (quantity, cost))| (id, quantity, cost))
                .collect(),
            gone_lots: std::mem::take(&mut self.gone_lots).into_iter().collect(),
            realized: std::mem::take(&mut self.realized),
            positions: self
                .positions
                .values()
                .cloned()
                .map(|mut p| {
                    p.updated_at = at;
                    p
                })
                .collect(),
            held: std::mem::take(&mut self.held).into_iter().collect(),
        }
    }

    fn into_changes(mut self) -> PairChanges {
        let at = self
            .positions
            .values()
            .map(|p| p.updated_at)
            .max()
            .unwrap_or_else(Utc::now);
        self.take_changes(at)
    }
}

/// Every method's position of each pair, empty where none is stored yet, locked until
/// commit in one statement (rows in (user, asset, method) order).
async fn read_positions(
    txn: &DatabaseTransaction,
    pairs: &BTreeSet<(Uuid, String)>,
    at: DateTime<Utc>,
) -> Result<BTreeMap<(Uuid, String), Held>, ApiError> {
    let mut state: BTreeMap<(Uuid, String), Held> = pairs
        .iter()
        .map(|(user, asset)| {
            let positions = Method::ALL
                .into_iter()
                .map(|m| (m, super::empty_position(*user, asset, m, at)))
                .collect();
            let held = Held {
                user_id: *user,
                asset: asset.clone(),
                positions,
                lots: None,
                stored_lots: HashSet::new(),
                new_lots: BTreeMap::new(),
                changed_lots: BTreeMap::new(),
                gone_lots: BTreeSet::new(),
                realized: Vec::new(),
                held: BTreeMap::new(),
            };
            ((*user, asset.clone()), held)
        })
        .collect();
    if pairs.is_empty() {
        return Ok(state);
    }
    let mut p = Params::default();
    let keys = pair_keys(pairs).select(&mut p, "k");
    let sql = format!(
        "SELECT * FROM portfolio_positions WHERE (user_id, asset) IN ({keys}) \
         ORDER BY user_id, asset, method FOR UPDATE"
    );
    let values = p.into_values();
    let rows = portfolio_positions::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            sql,
            values,
        ))
        .all(txn)
        .await?;
    for row in rows {
        let Some(method) = Method::parse(&row.method) else {
            continue;
        };
        if let Some(held) = state.get_mut(&(row.user_id, row.asset.clone())) {
            held.positions.insert(method, row);
        }
    }
    Ok(state)
}

/// The (user, asset) pairs as rows.
fn pair_keys(pairs: &BTreeSet<(Uuid, String)>) -> Columns {
    let mut keys = Columns::new(&[("user_id", "uuid"), ("asset", "")]);
    for (user, asset) in pairs {
        keys.push([user.cell(), asset.cell()]);
    }
    keys
}

/// Lots read up front per (user, asset, method). A disposal usually takes one or two
/// lots; one that passes these reads further (`short_of`), so a small first page
/// keeps the batch's read small without limiting what a disposal can consume.
const FIRST_LOT_PAGE: u64 = 8;

/// The first page of every lot method of each pair, in one read.
async fn read_first_lot_pages(
    txn: &DatabaseTransaction,
    pairs: &BTreeSet<(Uuid, String)>,
) -> Result<Vec<((Uuid, String), HashMap<Method, LotPage>)>, ApiError> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let mut p = Params::default();
    let keys = pair_keys(pairs).select(&mut p, "k");
    let values = p.into_values();
    let pages: Vec<String> = Method::LOT_METHODS
        .into_iter()
        .map(|method| {
            format!(
                "SELECT l.* FROM ({keys}) AS k CROSS JOIN LATERAL \
                 (SELECT * FROM portfolio_lots p WHERE p.user_id = k.user_id \
                 AND p.asset = k.asset AND p.method = '{}' ORDER BY {} LIMIT {FIRST_LOT_PAGE}) AS l",
                method.as_str(),
                lot_order(method)
            )
        })
        .collect();
    let rows = portfolio_lots::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            pages.join(" UNION ALL "),
            values,
        ))
        .all(txn)
        .await?;
    let mut grouped: BTreeMap<(Uuid, String), HashMap<Method, Vec<portfolio_lots::Model>>> = pairs
        .iter()
        .map(|pair| (pair.clone(), HashMap::new()))
        .collect();
    for row in rows {
        let Some(method) = Method::parse(&row.method) else {
            continue;
        };
        if let Some(methods) = grouped.get_mut(&(row.user_id, row.asset.clone())) {
            methods.entry(method).or_default().push(row);
        }
    }
    Ok(grouped
        .into_iter()
        .map(|(pair, mut methods)| {
            let pages = Method::LOT_METHODS
                .into_iter()
                .map(|method| {
                    let rows = methods.remove(&method).unwrap_or_default();
                    let complete = (rows.len() as u64) < FIRST_LOT_PAGE;
                    (method, lot_page_of(method, &rows, complete))
                })
                .collect();
            (pair, pages)
        })
        .collect())
}

/// The hourly candles the trades touch, by market and hour.
#[derive(Default)]
struct Candles(BTreeMap<(String, DateTime<Utc>), price_candles::Model>);

impl Candles {
    fn add(&mut self, fill: &fills::Model) {
        let (price, quantity) = (fill.price.0, fill.quantity.0);
        let bucket = hour_of(fill.created_at);
        self.0
            .entry((fill.market.clone(), bucket))
            .and_modify(|c| {
                c.high = Amount(c.high.0.max(price));
                c.low = Amount(c.low.0.min(price));
                c.close = Amount(price);
                c.volume = Amount(c.volume.0 + quantity);
            })
            .or_insert_with(|| price_candles::Model {
                market: fill.market.clone(),
                bucket,
                open: Amount(price),
                high: Amount(price),
                low: Amount(price),
                close: Amount(price),
                volume: Amount(quantity),
            });
    }

    /// Merges into stored candles: an existing candle keeps its open.
    fn write(self, bulk: &mut Bulk) {
        let mut candles = Columns::new(&[
            ("market", ""),
            ("bucket", "timestamptz"),
            ("open", "numeric"),
            ("high", "numeric"),
            ("low", "numeric"),
            ("close", "numeric"),
            ("volume", "numeric"),
        ]);
        for c in self.0.values() {
            candles.push([
                c.market.cell(),
                c.bucket.cell(),
                c.open.cell(),
                c.high.cell(),
                c.low.cell(),
                c.close.cell(),
                c.volume.cell(),
            ]);
        }
        bulk.add(|p| {
            format!(
                "INSERT INTO price_candles AS c (market, bucket, open, high, low, close, volume) \
                 SELECT r.* FROM ({}) AS r ON CONFLICT (market, bucket) DO UPDATE SET \
                 high = GREATEST(c.high, EXCLUDED.high), low = LEAST(c.low, EXCLUDED.low), \
                 close = EXCLUDED.close, volume = c.volume + EXCLUDED.volume",
                candles.select(p, "r")
            )
        });
    }
}
