//! The writes of order placement on PostgreSQL, held until the end of the placing
//! transaction and sent together (see `service::bulk`).
//!
//! Everything a placement writes is decided in this process, under locks its
//! transaction holds: the market's row, and the ledger accounts and event sequences of
//! the traders involved, each locked and read before the first change to it. So rather
//! than one round trip per row while the market is held, the rows are worked out here
//! and kept in [`Pending`]; the placement's later reads see them through it (the book,
//! balances, event numbers, 30-day volumes), and [`Pending::write`] sends them all just
//! before commit. Nothing is published before commit either way: events wait in their
//! collector. SQLite keeps writing row by row: one writer at a time, no round trips.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction, Statement};
use uuid::Uuid;

use super::bulk::{Bulk, Cell, Columns, Params};
use super::ledger::{self, Draft};
use super::orders::{self, status};
use crate::domain::ledger::{AccountKind, AccountRef};
use crate::domain::matching::Side;
use crate::error::ApiError;
use crate::events::{Collector, Event};
use entity::{fills, journal_entries, order_events, orders as order_rows, postings, Amount};

/// When a placing transaction locks the traders' rows it writes: their ledger accounts
/// and their event sequences. The market's own row is locked first either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Locking {
    /// As it reads them, before it decides anything: nothing can change them under it.
    #[default]
    UpFront,
    /// Only just before its write, so that other transactions sharing traders with it
    /// (other replicas' placements, cancels, deposits) queue for the length of a write
    /// and a commit rather than for the whole batch. It reads the rows as last committed and decides on those; the
    /// lock then shows what others committed since, which [`Pending::settle`] carries
    /// over (amounts are added, never overwritten), unless it would have left an
    /// account short at some point of the transaction: then the transaction is
    /// [`Overtaken`] and must run again locking up front.
    AtWrite,
}

/// Other transactions spent from an account between this transaction's read of it and
/// its lock, so that something it decided (a hold, a fill) may not have been covered.
#[derive(Debug, thiserror::Error)]
#[error("a ledger account changed under the transaction; run it again with its locks up front")]
pub(crate) struct Overtaken;

/// Whether `error` is [`Overtaken`].
pub(crate) fn overtaken(error: &ApiError) -> bool {
    matches!(error, ApiError::Internal(inner) if inner.downcast_ref::<Overtaken>().is_some())
}

/// How far each user's event numbers moved when [`Pending::settle`] found that others
/// had taken numbers since the transaction read the user's sequence. Events collected
/// for publication carry the numbers as first taken; this brings them up to date.
#[derive(Debug, Default)]
#[must_use = "events collected before commit carry their first numbers until renumbered"]
pub(crate) struct Renumbering {
    numbers: HashMap<Uuid, i64>,
    /// Whether a changed account's balance had moved since it was read.
    balances_moved: bool,
}

impl Renumbering {
    /// Whether others committed for this transaction's traders meanwhile: event
    /// numbers taken, or balances changed.
    pub(crate) fn moved(&self) -> bool {
        self.balances_moved || !self.numbers.is_empty()
    }

    pub(crate) fn apply(&self, events: &mut [Event]) {
        if self.numbers.is_empty() {
            return;
        }
        for event in events {
            if let Event::OrderUpdate {
                user_id, sequence, ..
            } = event
            {
                *sequence += self.numbers.get(user_id).copied().unwrap_or_default();
            }
        }
    }

    /// [`Renumbering::apply`] to what `events` has collected so far.
    pub(crate) fn apply_to(&self, events: &Collector) {
        events.edit(|collected| self.apply(collected));
    }
}

/// A ledger account as this transaction has left it.
struct Account {
    id: Uuid,
    balance: Decimal,
    /// The balance as read; under [`Locking::AtWrite`], others may have changed it since.
    read: Decimal,
    changed: bool,
}

/// A user's order-event sequence: as stored, and as this transaction has taken it.
struct Sequence {
    stored: i64,
    last: i64,
}

/// The lowest trigger of a waiting buy stop and the highest of a waiting sell stop in
/// the market: no trade price between them can trigger anything.
#[derive(Clone, Copy, Default)]
struct StopBounds {
    buy_min: Option<i64>,
    sell_max: Option<i64>,
}

impl StopBounds {
    fn include(&mut self, order: &order_rows::Model) {
        let Some(ticks) = order.trigger_ticks else {
            return;
        };
        if order.side == "BUY" {
            self.buy_min = Some(self.buy_min.map_or(ticks, |t| t.min(ticks)));
        } else {
            self.sell_max = Some(self.sell_max.map_or(ticks, |t| t.max(ticks)));
        }
    }
}

/// The best resting orders of one side of the book as stored when a batch began, up to
/// the farthest price any order of the batch could reach.
struct StoredPage {
    bound: Option<i64>,
    rows: Vec<order_rows::Model>,
    /// How many rows were asked for.
    asked: u64,
}

/// What one placing transaction has decided to write, not written yet.
#[derive(Default)]
pub(super) struct Pending {
    locking: Locking,
    /// New and changed orders, latest state, first-touched first.
    orders: Vec<order_rows::Model>,
    order_index: HashMap<Uuid, usize>,
    fills: Vec<fills::Model>,
    entries: Vec<journal_entries::Model>,
    postings: Vec<postings::Model>,
    accounts: BTreeMap<AccountRef, Account>,
    sequences: BTreeMap<Uuid, Sequence>,
    events: Vec<order_events::Model>,
    /// What the transaction knows of each of its markets, by symbol.
    markets: BTreeMap<String, MarketState>,
}

/// What a placing transaction keeps of one market it trades in.
#[derive(Default)]
struct MarketState {
    /// Traded volume over the fee-tier window, this transaction's trades included.
    volumes: HashMap<Uuid, Decimal>,
    /// What this transaction's trades add to each (user, day)'s volume.
    volume_added: BTreeMap<(Uuid, String), Decimal>,
    /// The transaction's trade prices, in order, for price alerts.
    prices: Vec<Decimal>,
    stop_bounds: Option<StopBounds>,
    /// The book as stored at the start, for buyers and for sellers.
    book_for_buyers: Option<StoredPage>,
    book_for_sellers: Option<StoredPage>,
}

/// Whether a resting order at `ticks` is within a taker's limit.
fn reachable(taker_side: Side, limit_ticks: Option<i64>, ticks: Option<i64>) -> bool {
    match (taker_side, limit_ticks, ticks) {
        (_, None, _) => true,
        (Side::Buy, Some(limit), Some(ticks)) => ticks <= limit,
        (Side::Sell, Some(limit), Some(ticks)) => ticks >= limit,
        (_, Some(_), None) => false,
    }
}

impl Pending {
    pub(super) fn new(locking: Locking) -> Self {
        Pending {
            locking,
            ..Pending::default()
        }
    }

    fn market(&mut self, market: &str) -> &mut MarketState {
        if !self.markets.contains_key(market) {
            self.markets
                .insert(market.to_owned(), MarketState::default());
        }
        self.markets.get_mut(market).expect("inserted above")
    }

    /// Keeps the page of `market`'s book a batch read before its first order (resting
    /// orders a taker on `taker_side` could meet, up to `bound`), so that its orders
    /// need not read the book again.
    pub(super) fn keep_book(
        &mut self,
        market: &str,
        taker_side: Side,
        bound: Option<i64>,
        rows: &[order_rows::Model],
        asked: u64,
    ) {
        let page = Some(StoredPage {
            bound,
            rows: rows.to_vec(),
            asked,
        });
        let state = self.market(market);
        match taker_side {
            Side::Buy => state.book_for_buyers = page,
            Side::Sell => state.book_for_sellers = page,
        }
    }

    /// The stored book a taker on `taker_side` with `limit_ticks` would read, from the
    /// page kept by [`Pending::keep_book`] when it covers that limit: the rows and how
    /// many were asked for (more than were found when the limit cut the page short, so
    /// the rows are all there is).
    pub(super) fn stored_book(
        &self,
        market: &str,
        taker_side: Side,
        limit_ticks: Option<i64>,
    ) -> Option<(Vec<order_rows::Model>, u64)> {
        let state = self.markets.get(market)?;
        let page = match taker_side {
            Side::Buy => state.book_for_buyers.as_ref(),
            Side::Sell => state.book_for_sellers.as_ref(),
        }?;
        let covered = match (page.bound, limit_ticks) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(bound), Some(limit)) => reachable(taker_side, Some(bound), Some(limit)),
        };
        if !covered {
            return None;
        }
        let rows: Vec<order_rows::Model> = page
            .rows
            .iter()
            .filter(|r| reachable(taker_side, limit_ticks, r.price_ticks))
            .cloned()
            .collect();
        let asked = if rows.len() == page.rows.len() {
            page.asked
        } else {
            u64::MAX
        };
        Some((rows, asked))
    }

    /// What a batch reads of its traders before its first order, in one statement:
    /// their `accounts`, the event sequences of `users`, and each trader's fee-tier
    /// volume in each market of `volumes` ([`Pending::load_accounts`],
    /// [`Pending::load_sequences`] and [`Pending::read_volumes`] at once, locking as
    /// they would, accounts before sequences). Accounts and sequences used for the
    /// first time are then created by those, one statement more, once in a trader's
    /// life.
    pub(super) async fn load_traders(
        &mut self,
        txn: &DatabaseTransaction,
        accounts: &BTreeSet<AccountRef>,
        users: &BTreeSet<Uuid>,
        volumes: &BTreeMap<String, BTreeSet<Uuid>>,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let mut keys = Columns::new(&[("owner_id", "uuid"), ("asset", ""), ("kind", "")]);
        for account in accounts.iter().filter(|a| !self.accounts.contains_key(a)) {
            keys.push([
                account.owner.cell(),
                account.asset.cell(),
                account.kind.as_str().cell(),
            ]);
        }
        let mut wanted = Columns::new(&[("user_id", "uuid")]);
        for user in users.iter().filter(|u| !self.sequences.contains_key(u)) {
            wanted.push([user.cell()]);
        }
        let mut pairs = Columns::new(&[("market", ""), ("user_id", "uuid")]);
        for (market, traders) in volumes {
            let known = self.markets.get(market);
            for user in traders {
                if !known.is_some_and(|k| k.volumes.contains_key(user)) {
                    pairs.push([market.cell(), user.cell()]);
                }
            }
        }
        let lock = if self.locking == Locking::UpFront {
            " FOR UPDATE"
        } else {
            ""
        };
        let since = orders::volume_window_start(now);
        let mut p = Params::default();
        // `UNION ALL` runs each part to its end before the next: accounts are locked
        // before sequences, as everywhere.
        let sql = format!(
            "WITH a AS (SELECT id, owner_id, asset, kind, balance FROM ledger_accounts \
               WHERE (owner_id, asset, kind) IN ({}) ORDER BY owner_id, asset, kind{lock}), \
             s AS (SELECT user_id, last_sequence FROM user_sequences \
               WHERE user_id IN ({}) ORDER BY user_id{lock}), \
             v AS (SELECT market, user_id, sum(volume) AS volume FROM user_daily_volumes \
               WHERE (market, user_id) IN ({}) AND day >= {} GROUP BY market, user_id) \
             SELECT 'a' AS t, id, owner_id AS owner, asset, kind, balance AS amount, \
               NULL::bigint AS last FROM a \
             UNION ALL SELECT 's', NULL::uuid, user_id, NULL, NULL, NULL::numeric, \
               last_sequence FROM s \
             UNION ALL SELECT 'v', NULL::uuid, user_id, market, NULL, volume, NULL::bigint \
               FROM v",
            keys.select(&mut p, "k"),
            wanted.select(&mut p, "u"),
            pairs.select(&mut p, "m"),
            p.bind(since.clone(), "text"),
        );
        let rows = txn.query_all_raw(p.into_statement(sql)).await?;
        let mut stored: HashMap<(String, Uuid), Decimal> = HashMap::new();
        for row in rows {
            let (table, owner): (String, Uuid) = (row.try_get("", "t")?, row.try_get("", "owner")?);
            match table.as_str() {
                "a" => {
                    let kind: String = row.try_get("", "kind")?;
                    let Some(kind) = AccountKind::parse(&kind) else {
                        continue;
                    };
                    let balance: Decimal = row.try_get("", "amount")?;
                    let account = AccountRef {
                        owner,
                        asset: row.try_get("", "asset")?,
                        kind,
                    };
                    let state = Account {
                        id: row.try_get("", "id")?,
                        balance,
                        read: balance,
                        changed: false,
                    };
                    self.accounts.insert(account, state);
                }
                "s" => {
                    let last: i64 = row.try_get("", "last")?;
                    let sequence = Sequence { stored: last, last };
                    self.sequences.insert(owner, sequence);
                }
                _ => {
                    // A volume: the market in `asset`'s place.
                    let market: String = row.try_get("", "asset")?;
                    stored.insert((market, owner), row.try_get("", "amount")?);
                }
            }
        }
        self.keep_volumes(volumes, &stored, &since);
        // First use: created (and locked) one by one.
        self.load_accounts(txn, accounts).await?;
        self.load_sequences(txn, users).await
    }

    /// Reads the accounts not yet held (creating those used for the first time), and
    /// under [`Locking::UpFront`] locks them, in the global account order.
    pub(super) async fn load_accounts(
        &mut self,
        txn: &DatabaseTransaction,
        accounts: &BTreeSet<AccountRef>,
    ) -> Result<(), ApiError> {
        let missing: BTreeSet<AccountRef> = accounts
            .iter()
            .filter(|a| !self.accounts.contains_key(a))
            .cloned()
            .collect();
        let lock = self.locking == Locking::UpFront;
        for row in ledger::read_accounts(txn, &missing, lock).await? {
            let Some(kind) = AccountKind::parse(&row.kind) else {
                continue;
            };
            let account = AccountRef {
                owner: row.owner_id,
                asset: row.asset,
                kind,
            };
            let state = Account {
                id: row.id,
                balance: row.balance.0,
                read: row.balance.0,
                changed: false,
            };
            self.accounts.insert(account, state);
        }
        Ok(())
    }

    /// Posts a balanced entry against the balances held here: the same checks as
    /// [`ledger::post`], `INSUFFICIENT_FUNDS` before anything changes.
    pub(super) async fn post(
        &mut self,
        txn: &DatabaseTransaction,
        draft: Draft,
    ) -> Result<(), ApiError> {
        let now = Utc::now();
        let (entry, legs) = ledger::entry_of(draft, now)?;
        let touched: BTreeSet<AccountRef> = legs.iter().map(|l| l.account.clone()).collect();
        self.load_accounts(txn, &touched).await?;
        let mut after = Vec::with_capacity(legs.len());
        for leg in &legs {
            let account = self
                .accounts
                .get(&leg.account)
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("ledger account not read")))?;
            let balance = account
                .balance
                .checked_add(leg.amount)
                .ok_or_else(|| ApiError::bad_input("amount", "the amount is out of range"))?;
            if balance.is_sign_negative() && !leg.account.kind.may_go_negative() {
                return Err(ApiError::InsufficientFunds(format!(
                    "not enough {} available",
                    leg.account.asset
                )));
            }
            after.push(balance);
        }
        let entry_id = entry.id;
        self.entries.push(entry);
        for (leg, balance) in legs.into_iter().zip(after) {
            let Some(account) = self.accounts.get_mut(&leg.account) else {
                continue;
            };
            account.balance = balance;
            account.changed = true;
            self.postings.push(postings::Model {
                id: Uuid::now_v7(),
                entry_id,
                account_id: account.id,
                asset: leg.account.asset,
                amount: Amount(leg.amount),
                balance_after: Amount(balance),
                created_at: now,
            });
        }
        Ok(())
    }

    /// Reads the event sequences not yet held, and under [`Locking::UpFront`] locks
    /// them.
    pub(super) async fn load_sequences(
        &mut self,
        txn: &DatabaseTransaction,
        users: &BTreeSet<Uuid>,
    ) -> Result<(), ApiError> {
        let missing: BTreeSet<Uuid> = users
            .iter()
            .filter(|u| !self.sequences.contains_key(u))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let lock = self.locking == Locking::UpFront;
        for row in orders::read_sequences(txn, &missing, lock).await? {
            let sequence = Sequence {
                stored: row.last_sequence,
                last: row.last_sequence,
            };
            self.sequences.insert(row.user_id, sequence);
        }
        Ok(())
    }

    /// Holds `event` under the next number of its user's gap-free sequence, and returns
    /// that number.
    pub(super) async fn event(
        &mut self,
        txn: &DatabaseTransaction,
        event: &order_events::Model,
    ) -> Result<i64, ApiError> {
        let user_id = event.user_id;
        if !self.sequences.contains_key(&user_id) {
            self.load_sequences(txn, &BTreeSet::from([user_id])).await?;
        }
        let sequence = self.sequences.get_mut(&user_id).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("user sequence row missing after creation"))
        })?;
        sequence.last += 1;
        self.events.push(order_events::Model {
            sequence: sequence.last,
            ..event.clone()
        });
        Ok(sequence.last)
    }

    /// Under [`Locking::AtWrite`], locks the accounts and event sequences this
    /// transaction changes (one statement, in the global order: accounts by owner,
    /// asset and kind, then sequences by user) and carries over what others committed
    /// since they were read: every balance and posting moves by what the account
    /// gained or lost meanwhile, every event number by how many numbers others took.
    /// [`Overtaken`] when an account that may not go negative would have. Nothing to
    /// do under [`Locking::UpFront`].
    pub(super) async fn settle(
        &mut self,
        txn: &DatabaseTransaction,
    ) -> Result<Renumbering, ApiError> {
        let changed = self.accounts.values().any(|a| a.changed)
            || self.sequences.values().any(|s| s.last != s.stored);
        if self.locking == Locking::UpFront || !changed {
            return Ok(Renumbering::default());
        }
        let mut accounts = Columns::new(&[("id", "")]);
        for account in self.accounts.values().filter(|a| a.changed) {
            accounts.push([account.id.cell()]);
        }
        let mut users = Columns::new(&[("id", "")]);
        for (user, _) in self.sequences.iter().filter(|(_, s)| s.last != s.stored) {
            users.push([user.cell()]);
        }
        let mut p = Params::default();
        // Each part locks its rows in its own order, and `UNION ALL` runs the first to
        // its end before it starts the second.
        let sql = format!(
            "WITH a AS (SELECT 'a' AS t, id AS k, balance AS v FROM ledger_accounts \
               WHERE id IN (SELECT r.id::uuid FROM ({}) AS r) \
               ORDER BY owner_id, asset, kind FOR UPDATE), \
             s AS (SELECT 's' AS t, user_id AS k, last_sequence::numeric AS v FROM user_sequences \
               WHERE user_id IN (SELECT r.id::uuid FROM ({}) AS r) \
               ORDER BY user_id FOR UPDATE) \
             SELECT t, k, v FROM a UNION ALL SELECT t, k, v FROM s",
            accounts.select(&mut p, "r"),
            users.select(&mut p, "r"),
        );
        let rows = txn.query_all_raw(p.into_statement(sql)).await?;
        let (mut balances, mut lasts) = (HashMap::new(), HashMap::new());
        for row in rows {
            let (table, key, value): (String, Uuid, Decimal) = (
                row.try_get("", "t")?,
                row.try_get("", "k")?,
                row.try_get("", "v")?,
            );
            if table == "a" {
                balances.insert(key, value);
            } else {
                let last = i64::try_from(value).map_err(ApiError::internal)?;
                lasts.insert(key, last);
            }
        }
        self.rebase(&balances, &lasts)
    }

    /// [`Pending::settle`]'s reckoning, given the locked accounts' balances (by id) and
    /// the locked sequences' last numbers (by user).
    fn rebase(
        &mut self,
        balances: &HashMap<Uuid, Decimal>,
        lasts: &HashMap<Uuid, i64>,
    ) -> Result<Renumbering, ApiError> {
        let missing =
            |what: &str| ApiError::internal(anyhow::anyhow!("a changed {what} was not locked"));
        let mut moved: HashMap<Uuid, Decimal> = HashMap::new();
        for (account, state) in self.accounts.iter().filter(|(_, a)| a.changed) {
            let now = *balances
                .get(&state.id)
                .ok_or_else(|| missing("ledger account"))?;
            let shift = now - state.read;
            if shift.is_zero() {
                continue;
            }
            if !account.kind.may_go_negative() {
                // Every point the balance passed through in this transaction, moved.
                let lowest = self
                    .postings
                    .iter()
                    .filter(|p| p.account_id == state.id)
                    .map(|p| p.balance_after.0)
                    .min()
                    .unwrap_or(state.balance);
                if (lowest + shift).is_sign_negative() {
                    return Err(ApiError::internal(Overtaken));
                }
            }
            moved.insert(state.id, shift);
        }
        for state in self.accounts.values_mut() {
            if let Some(shift) = moved.get(&state.id) {
                state.balance += shift;
                state.read += shift;
            }
        }
        for posting in &mut self.postings {
            if let Some(shift) = moved.get(&posting.account_id) {
                posting.balance_after = Amount(posting.balance_after.0 + shift);
            }
        }
        let mut renumbering = HashMap::new();
        for (user, sequence) in self.sequences.iter_mut() {
            if sequence.last == sequence.stored {
                continue;
            }
            let now = *lasts.get(user).ok_or_else(|| missing("event sequence"))?;
            let shift = now - sequence.stored;
            if shift != 0 {
                sequence.stored += shift;
                sequence.last += shift;
                renumbering.insert(*user, shift);
            }
        }
        for event in &mut self.events {
            event.sequence += renumbering.get(&event.user_id).copied().unwrap_or_default();
        }
        Ok(Renumbering {
            numbers: renumbering,
            balances_moved: !moved.is_empty(),
        })
    }

    /// Keeps an order's latest state, new or changed.
    pub(super) fn save_order(&mut self, order: &order_rows::Model) {
        if order.status == status::UNTRIGGERED {
            let bounds = self.markets.get_mut(&order.market);
            if let Some(bounds) = bounds.and_then(|m| m.stop_bounds.as_mut()) {
                bounds.include(order);
            }
        }
        match self.order_index.get(&order.id) {
            Some(&at) => self.orders[at] = order.clone(),
            None => {
                self.order_index.insert(order.id, self.orders.len());
                self.orders.push(order.clone());
            }
        }
    }

    /// Resting orders of `market` a taker on `taker_side` could trade with, best
    /// first: `stored`, one page of the book as stored (`page` rows asked for), with
    /// this transaction's changes over it. When the page was full, orders that sort
    /// after its last row are left out: stored rows beyond the page could come first.
    pub(super) fn over_book(
        &self,
        market: &str,
        taker_side: Side,
        limit_ticks: Option<i64>,
        stored: Vec<order_rows::Model>,
        page: u64,
    ) -> Vec<order_rows::Model> {
        let maker_side = orders::side_str(taker_side.opposite());
        let order = |a: &order_rows::Model, b: &order_rows::Model| {
            let by_price = match taker_side {
                Side::Buy => a.price_ticks.cmp(&b.price_ticks),
                Side::Sell => b.price_ticks.cmp(&a.price_ticks),
            };
            by_price.then(a.sequence.cmp(&b.sequence))
        };
        let frontier = (stored.len() as u64 == page)
            .then(|| stored.last().cloned())
            .flatten();
        let mut book: Vec<order_rows::Model> = stored
            .into_iter()
            .filter(|row| !self.order_index.contains_key(&row.id))
            .collect();
        book.extend(
            self.orders
                .iter()
                .filter(|o| {
                    o.is_open
                        && o.market == market
                        && o.side == maker_side
                        && reachable(taker_side, limit_ticks, o.price_ticks)
                })
                .cloned(),
        );
        book.sort_by(order);
        if let Some(frontier) = frontier {
            book.retain(|o| order(o, &frontier) != std::cmp::Ordering::Greater);
        }
        book
    }

    /// Whether a trade at `last_ticks` could trigger a waiting stop order of `market`
    /// (read once per transaction, then kept up to date here).
    pub(super) async fn stops_may_trigger(
        &mut self,
        txn: &DatabaseTransaction,
        market: &str,
        last_ticks: i64,
    ) -> Result<bool, ApiError> {
        let bounds = match self.markets.get(market).and_then(|m| m.stop_bounds) {
            Some(bounds) => bounds,
            None => {
                let mut bounds = read_stop_bounds(txn, market).await?;
                for order in &self.orders {
                    if order.status == status::UNTRIGGERED && order.market == market {
                        bounds.include(order);
                    }
                }
                self.market(market).stop_bounds = Some(bounds);
                bounds
            }
        };
        Ok(bounds.buy_min.is_some_and(|t| t <= last_ticks)
            || bounds.sell_max.is_some_and(|t| t >= last_ticks))
    }

    /// Writes the orders held so far, so that a read of the `orders` table sees them.
    pub(super) async fn write_orders(&mut self, txn: &DatabaseTransaction) -> Result<(), ApiError> {
        let mut bulk = Bulk::default();
        add_orders(&mut bulk, &self.orders);
        self.orders.clear();
        self.order_index.clear();
        // Stored rows are current now; the pages kept from before are not.
        for state in self.markets.values_mut() {
            state.book_for_buyers = None;
            state.book_for_sellers = None;
        }
        bulk.run(txn).await
    }

    /// The traders' volumes in `market` over the fee-tier window, this transaction's
    /// trades included; one read for those not yet known.
    pub(super) async fn volumes(
        &mut self,
        txn: &DatabaseTransaction,
        users: &BTreeSet<Uuid>,
        market: &str,
        now: DateTime<Utc>,
    ) -> Result<HashMap<Uuid, Decimal>, ApiError> {
        let wanted = BTreeMap::from([(market.to_owned(), users.clone())]);
        self.read_volumes(txn, &wanted, now).await?;
        let known = self.markets.get(market);
        Ok(users
            .iter()
            .map(|u| {
                let volume = known.and_then(|k| k.volumes.get(u)).copied();
                (*u, volume.unwrap_or_default())
            })
            .collect())
    }

    /// Reads the fee-tier volumes of `wanted` (traders by market) not yet known, in
    /// one statement for every market.
    pub(super) async fn read_volumes(
        &mut self,
        txn: &DatabaseTransaction,
        wanted: &BTreeMap<String, BTreeSet<Uuid>>,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let missing: BTreeMap<String, BTreeSet<Uuid>> = wanted
            .iter()
            .map(|(market, users)| {
                let known = self.markets.get(market);
                let unknown = users
                    .iter()
                    .filter(|u| !known.is_some_and(|k| k.volumes.contains_key(u)))
                    .copied()
                    .collect::<BTreeSet<Uuid>>();
                (market.clone(), unknown)
            })
            .filter(|(_, users)| !users.is_empty())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let stored = orders::volumes_30d_in(txn, &missing, now).await?;
        self.keep_volumes(&missing, &stored, &orders::volume_window_start(now));
        Ok(())
    }

    /// Keeps the fee-tier volume of each trader of `wanted` not known yet: as `stored`
    /// (by market and trader, over the window from `since`) plus what this
    /// transaction's trades added.
    fn keep_volumes(
        &mut self,
        wanted: &BTreeMap<String, BTreeSet<Uuid>>,
        stored: &HashMap<(String, Uuid), Decimal>,
        since: &str,
    ) {
        for (market, users) in wanted {
            let state = self.market(market);
            for user in users {
                if state.volumes.contains_key(user) {
                    continue;
                }
                let added: Decimal = state
                    .volume_added
                    .range((*user, since.to_owned())..=(*user, String::from("~")))
                    .map(|(_, amount)| *amount)
                    .sum();
                let volume = stored.get(&(market.clone(), *user)).copied();
                state
                    .volumes
                    .insert(*user, volume.unwrap_or_default() + added);
            }
        }
    }

    /// Adds a trade's quote value to its buyer's and seller's volume in `market` (twice
    /// to one user who was both).
    pub(super) fn add_volume(
        &mut self,
        market: &str,
        (buyer, seller): (Uuid, Uuid),
        day: &str,
        notional: Decimal,
    ) {
        let state = self.market(market);
        for user in [buyer, seller] {
            *state
                .volume_added
                .entry((user, day.to_owned()))
                .or_default() += notional;
            if let Some(volume) = state.volumes.get_mut(&user) {
                *volume += notional;
            }
        }
    }

    /// Keeps a trade's two fills, in trade order.
    pub(super) fn add_trade(&mut self, maker: fills::Model, taker: fills::Model) {
        self.market(&taker.market).prices.push(taker.price.0);
        self.fills.push(maker);
        self.fills.push(taker);
    }

    /// The fills of this transaction's trades, in order.
    pub(super) fn fills(&self) -> &[fills::Model] {
        &self.fills
    }

    /// The prices this transaction traded at in `market`, in order.
    pub(super) fn prices(&self, market: &str) -> &[Decimal] {
        self.markets.get(market).map_or(&[], |m| &m.prices)
    }

    /// Adds every held row to `bulk`: one part per table, present even when it has no
    /// rows, so the statement's text is always the same.
    pub(super) fn write(self, bulk: &mut Bulk) {
        add_orders(bulk, &self.orders);
        let mut fills = Columns::new(&[
            ("id", "uuid"),
            ("order_id", "uuid"),
            ("user_id", "uuid"),
            ("trade_id", "uuid"),
            ("market", ""),
            ("side", ""),
            ("price", "numeric"),
            ("quantity", "numeric"),
            ("fee", "numeric"),
            ("fee_asset", ""),
            ("liquidity", ""),
            ("created_at", "timestamptz"),
            ("cost_rate", "numeric?"),
        ]);
        for f in &self.fills {
            fills.push([
                f.id.cell(),
                f.order_id.cell(),
                f.user_id.cell(),
                f.trade_id.cell(),
                f.market.cell(),
                f.side.cell(),
                f.price.cell(),
                f.quantity.cell(),
                f.fee.cell(),
                f.fee_asset.cell(),
                f.liquidity.cell(),
                f.created_at.cell(),
                f.cost_rate.cell(),
            ]);
        }
        bulk.add(|p| {
            format!(
                "INSERT INTO fills (id, order_id, user_id, trade_id, market, side, price, \
                 quantity, fee, fee_asset, liquidity, created_at, cost_rate) {}",
                fills.select(p, "r")
            )
        });
        let mut entries = Columns::new(&[
            ("id", "uuid"),
            ("kind", ""),
            ("reference", "?"),
            ("user_id", "uuid?"),
            ("asset", ""),
            ("amount", "numeric"),
            ("description", ""),
            ("created_at", "timestamptz"),
        ]);
        for e in &self.entries {
            entries.push([
                e.id.cell(),
                e.kind.cell(),
                e.reference.cell(),
                e.user_id.cell(),
                e.asset.cell(),
                e.amount.cell(),
                e.description.cell(),
                e.created_at.cell(),
            ]);
        }
        bulk.add(|p| {
            format!(
                "INSERT INTO journal_entries (id, kind, reference, user_id, asset, amount, \
                 description, created_at) {}",
                entries.select(p, "r")
            )
        });
        let mut postings = Columns::new(&[
            ("id", "uuid"),
            ("entry_id", "uuid"),
            ("account_id", "uuid"),
            ("asset", ""),
            ("amount", "numeric"),
            ("balance_after", "numeric"),
            ("created_at", "timestamptz"),
        ]);
        for posting in &self.postings {
            postings.push([
                posting.id.cell(),
                posting.entry_id.cell(),
                posting.account_id.cell(),
                posting.asset.cell(),
                posting.amount.cell(),
                posting.balance_after.cell(),
                posting.created_at.cell(),
            ]);
        }
        bulk.add(|p| {
            format!(
                "INSERT INTO postings (id, entry_id, account_id, asset, amount, balance_after, \
                 created_at) {}",
                postings.select(p, "r")
            )
        });
        let mut balances = Columns::new(&[("id", "uuid"), ("balance", "numeric")]);
        for account in self.accounts.values().filter(|a| a.changed) {
            balances.push([account.id.cell(), account.balance.cell()]);
        }
        let now = Utc::now();
        bulk.add(|p| {
            format!(
                "UPDATE ledger_accounts AS a SET balance = v.balance, updated_at = {} \
                 FROM ({}) AS v WHERE a.id = v.id",
                p.bind(now, "timestamptz"),
                balances.select(p, "r")
            )
        });
        let mut events = Columns::new(&[
            ("user_id", "uuid"),
            ("sequence", "bigint"),
            ("kind", ""),
            ("order_id", "uuid"),
            ("fill_id", "uuid?"),
            ("created_at", "timestamptz"),
        ]);
        for e in &self.events {
            events.push([
                e.user_id.cell(),
                e.sequence.cell(),
                e.kind.cell(),
                e.order_id.cell(),
                e.fill_id.cell(),
                e.created_at.cell(),
            ]);
        }
        bulk.add(|p| {
            format!(
                "INSERT INTO order_events (user_id, sequence, kind, order_id, fill_id, \
                 created_at) {}",
                events.select(p, "r")
            )
        });
        let mut sequences = Columns::new(&[("user_id", "uuid"), ("last", "bigint")]);
        for (user, sequence) in self.sequences.iter().filter(|(_, s)| s.last != s.stored) {
            sequences.push([user.cell(), sequence.last.cell()]);
        }
        bulk.add(|p| {
            format!(
                "UPDATE user_sequences AS s SET last_sequence = v.last \
                 FROM ({}) AS v WHERE s.user_id = v.user_id",
                sequences.select(p, "r")
            )
        });
        let mut volumes = Columns::new(&[
            ("user_id", "uuid"),
            ("market", ""),
            ("day", ""),
            ("volume", "numeric"),
        ]);
        for (market, state) in &self.markets {
            for ((user, day), amount) in &state.volume_added {
                volumes.push([user.cell(), market.cell(), day.cell(), amount.cell()]);
            }
        }
        bulk.add(|p| {
            format!(
                "INSERT INTO user_daily_volumes AS v (user_id, market, day, volume) \
                 SELECT r.user_id, r.market, r.day, r.volume FROM ({}) AS r \
                 ON CONFLICT (user_id, market, day) DO UPDATE SET volume = v.volume + EXCLUDED.volume",
                volumes.select(p, "r")
            )
        });
    }
}

/// Inserts new orders and overwrites changed ones with their latest state.
fn add_orders(bulk: &mut Bulk, orders: &[order_rows::Model]) {
    let mut rows = Columns::new(&[
        ("id", "uuid"),
        ("user_id", "uuid"),
        ("market", ""),
        ("side", ""),
        ("order_type", ""),
        ("status", ""),
        ("is_open", "boolean"),
        ("price", "numeric?"),
        ("price_ticks", "bigint?"),
        ("trigger_price", "numeric?"),
        ("trigger_ticks", "bigint?"),
        ("quantity", "numeric?"),
        ("quote_quantity", "numeric?"),
        ("filled_quantity", "numeric"),
        ("filled_quote", "numeric"),
        ("fee", "numeric"),
        ("held_asset", ""),
        ("held", "numeric"),
        ("time_in_force", ""),
        ("expire_at", "timestamptz?"),
        ("post_only", "boolean"),
        ("self_trade_prevention", ""),
        ("client_order_id", "?"),
        ("reject_reason", "?"),
        ("sequence", "bigint"),
        ("created_at", "timestamptz"),
        ("updated_at", "timestamptz"),
    ]);
    for o in orders {
        rows.push([
            o.id.cell(),
            o.user_id.cell(),
            o.market.cell(),
            o.side.cell(),
            o.order_type.cell(),
            o.status.cell(),
            o.is_open.cell(),
            o.price.cell(),
            o.price_ticks.cell(),
            o.trigger_price.cell(),
            o.trigger_ticks.cell(),
            o.quantity.cell(),
            o.quote_quantity.cell(),
            o.filled_quantity.cell(),
            o.filled_quote.cell(),
            o.fee.cell(),
            o.held_asset.cell(),
            o.held.cell(),
            o.time_in_force.cell(),
            o.expire_at.cell(),
            o.post_only.cell(),
            o.self_trade_prevention.cell(),
            o.client_order_id.cell(),
            o.reject_reason.cell(),
            o.sequence.cell(),
            o.created_at.cell(),
            o.updated_at.cell(),
        ]);
    }
    bulk.add(|p| {
        format!(
            "INSERT INTO orders AS o (id, user_id, market, side, order_type, status, is_open, \
             price, price_ticks, trigger_price, trigger_ticks, quantity, quote_quantity, \
             filled_quantity, filled_quote, fee, held_asset, held, time_in_force, expire_at, \
             post_only, self_trade_prevention, client_order_id, reject_reason, sequence, \
             created_at, updated_at) {} \
             ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, \
             is_open = EXCLUDED.is_open, filled_quantity = EXCLUDED.filled_quantity, \
             filled_quote = EXCLUDED.filled_quote, fee = EXCLUDED.fee, held = EXCLUDED.held, \
             reject_reason = EXCLUDED.reject_reason, updated_at = EXCLUDED.updated_at",
            rows.select(p, "r")
        )
    });
}

/// The trigger bounds of the market's waiting stop orders, as stored (two index
/// lookups).
async fn read_stop_bounds(txn: &DatabaseTransaction, market: &str) -> Result<StopBounds, ApiError> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT \
             (SELECT min(trigger_ticks) FROM orders WHERE market = $1 AND status = $2 \
              AND side = 'BUY') AS buy_min, \
             (SELECT max(trigger_ticks) FROM orders WHERE market = $1 AND status = $2 \
              AND side = 'SELL') AS sell_max",
            [market.into(), status::UNTRIGGERED.into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(StopBounds::default());
    };
    Ok(StopBounds {
        buy_min: row.try_get("", "buy_min")?,
        sell_max: row.try_get("", "sell_max")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resting(side: &str, ticks: i64, sequence: i64) -> order_rows::Model {
        let now = Utc::now();
        order_rows::Model {
            id: Uuid::now_v7(),
            user_id: Uuid::nil(),
            market: "BTC-USD".into(),
            side: side.into(),
            order_type: "LIMIT".into(),
            status: status::OPEN.into(),
            is_open: true,
            price: Some(Amount(Decimal::from(ticks))),
            price_ticks: Some(ticks),
            trigger_price: None,
            trigger_ticks: None,
            quantity: Some(Amount(Decimal::ONE)),
            quote_quantity: None,
            filled_quantity: Amount::ZERO,
            filled_quote: Amount::ZERO,
            fee: Amount::ZERO,
            held_asset: "BTC".into(),
            held: Amount(Decimal::ONE),
            time_in_force: "GTC".into(),
            expire_at: None,
            post_only: false,
            self_trade_prevention: "EXPIRE_TAKER".into(),
            client_order_id: None,
            reject_reason: None,
            sequence,
            created_at: now,
            updated_at: now,
        }
    }

    fn sequences(book: &[order_rows::Model]) -> Vec<i64> {
        book.iter().map(|o| o.sequence).collect()
    }

    #[test]
    fn held_changes_replace_stored_rows_and_new_orders_join_in_priority() {
        let stored = vec![resting("SELL", 100, 1), resting("SELL", 101, 2)];
        let mut pending = Pending::default();
        // The best stored sell was filled by an earlier order of the transaction.
        let mut filled = stored[0].clone();
        filled.is_open = false;
        filled.status = status::FILLED.into();
        pending.save_order(&filled);
        // New sells rest: one between the stored prices, one out of the buyer's reach,
        // one on the other side.
        pending.save_order(&resting("SELL", 100, 3));
        pending.save_order(&resting("SELL", 105, 4));
        pending.save_order(&resting("BUY", 99, 5));

        let book = pending.over_book("BTC-USD", Side::Buy, Some(101), stored.clone(), 64);
        assert_eq!(sequences(&book), vec![3, 2]);
        let book = pending.over_book("BTC-USD", Side::Buy, None, stored, 64);
        assert_eq!(sequences(&book), vec![3, 2, 4]);
    }

    #[test]
    fn past_a_full_page_only_what_sorts_before_its_last_row_is_known() {
        // A page of two was asked for and came back full: stored orders beyond it
        // (price 102 and worse) may exist, so a held order at 103 cannot be placed yet.
        let stored = vec![resting("BUY", 104, 1), resting("BUY", 102, 2)];
        let mut pending = Pending::default();
        pending.save_order(&resting("BUY", 105, 3));
        pending.save_order(&resting("BUY", 103, 4));
        pending.save_order(&resting("BUY", 101, 5));
        let book = pending.over_book("BTC-USD", Side::Sell, None, stored.clone(), 2);
        assert_eq!(sequences(&book), vec![3, 1, 4, 2]);
        // The same page that was not full is the whole book.
        let book = pending.over_book("BTC-USD", Side::Sell, None, stored, 3);
        assert_eq!(sequences(&book), vec![3, 1, 4, 2, 5]);
    }

    #[test]
    fn the_page_a_batch_read_first_serves_any_limit_within_its_reach() {
        let rows = vec![
            resting("SELL", 100, 1),
            resting("SELL", 101, 2),
            resting("SELL", 102, 3),
        ];
        let mut pending = Pending::default();
        // Buyers of the batch reach up to 102; the page of three came back full.
        pending.keep_book("BTC-USD", Side::Buy, Some(102), &rows, 3);
        let book = |side, limit| pending.stored_book("BTC-USD", side, limit);
        let (all, asked) = book(Side::Buy, Some(102)).expect("in reach");
        assert_eq!((sequences(&all), asked), (vec![1, 2, 3], 3));
        // A lower limit sees a prefix, and that prefix is the whole of its book.
        let (some, asked) = book(Side::Buy, Some(100)).expect("in reach");
        assert_eq!((sequences(&some), asked), (vec![1], u64::MAX));
        // Beyond the reach, or without a limit, the page says nothing.
        assert!(book(Side::Buy, Some(103)).is_none());
        assert!(book(Side::Buy, None).is_none());
        assert!(book(Side::Sell, Some(100)).is_none());
        // Nor does it say anything of another market.
        assert!(pending
            .stored_book("ETH-USD", Side::Buy, Some(101))
            .is_none());
        // A side read without bound (a market order in the batch) serves any limit.
        pending.keep_book("BTC-USD", Side::Sell, None, &[], 64);
        let (none, asked) = pending
            .stored_book("BTC-USD", Side::Sell, Some(1))
            .expect("unbounded");
        assert_eq!((none.len(), asked), (0, 64));
    }

    #[test]
    fn held_stop_orders_widen_the_known_trigger_bounds() {
        let mut pending = Pending::default();
        for market in ["BTC-USD", "ETH-USD"] {
            pending.market(market).stop_bounds = Some(StopBounds {
                buy_min: Some(110),
                sell_max: None,
            });
        }
        let mut stop = resting("SELL", 90, 1);
        stop.status = status::UNTRIGGERED.into();
        stop.is_open = false;
        stop.trigger_ticks = Some(95);
        pending.save_order(&stop);
        let bounds = |market: &str| pending.markets[market].stop_bounds.expect("bounds known");
        assert_eq!(bounds("BTC-USD").buy_min, Some(110));
        assert_eq!(bounds("BTC-USD").sell_max, Some(95));
        // The stop is in BTC-USD: another market's bounds stay as they were.
        assert_eq!(bounds("ETH-USD").sell_max, None);
    }

    /// A transaction that read a trader's USD at 100 and moved 60 of it to held, with
    /// an event numbered after the 4 the trader had.
    fn hold_of_60_read_at_100() -> (Pending, Uuid, [Uuid; 2]) {
        let user = Uuid::now_v7();
        let (available, held) = (Uuid::now_v7(), Uuid::now_v7());
        let mut pending = Pending::new(Locking::AtWrite);
        let now = Utc::now();
        for (id, kind, read, balance, amount) in [
            (available, AccountKind::Available, 100, 40, -60),
            (held, AccountKind::Locked, 0, 60, 60),
        ] {
            let account = AccountRef::user(user, "USD", kind);
            let state = Account {
                id,
                balance: Decimal::from(balance),
                read: Decimal::from(read),
                changed: true,
            };
            pending.accounts.insert(account, state);
            pending.postings.push(postings::Model {
                id: Uuid::now_v7(),
                entry_id: Uuid::nil(),
                account_id: id,
                asset: "USD".into(),
                amount: Amount(Decimal::from(amount)),
                balance_after: Amount(Decimal::from(balance)),
                created_at: now,
            });
        }
        pending
            .sequences
            .insert(user, Sequence { stored: 4, last: 5 });
        pending.events.push(order_events::Model {
            user_id: user,
            sequence: 5,
            kind: "PLACED".into(),
            order_id: Uuid::nil(),
            fill_id: None,
            created_at: now,
        });
        (pending, user, [available, held])
    }

    #[test]
    fn what_others_committed_meanwhile_is_carried_over() {
        let (mut pending, user, [available, held]) = hold_of_60_read_at_100();
        // Meanwhile another market spent 30 and took two event numbers.
        let balances = HashMap::from([(available, Decimal::from(70)), (held, Decimal::ZERO)]);
        let renumbering = pending
            .rebase(&balances, &HashMap::from([(user, 6)]))
            .expect("70 still covers 60");
        let after: Vec<Decimal> = pending.postings.iter().map(|p| p.balance_after.0).collect();
        assert_eq!(after, vec![Decimal::from(10), Decimal::from(60)]);
        let balance = |id| {
            pending
                .accounts
                .values()
                .find(|a| a.id == id)
                .map(|a| a.balance)
                .expect("the account is held")
        };
        assert_eq!(balance(available), Decimal::from(10));
        assert_eq!(balance(held), Decimal::from(60));
        assert_eq!(pending.events[0].sequence, 7);
        assert_eq!(pending.sequences[&user].last, 7);
        let mut published = vec![Event::OrderUpdate {
            user_id: user,
            sequence: 5,
            kind: "PLACED".into(),
            order_id: Uuid::nil(),
            fill_id: None,
        }];
        renumbering.apply(&mut published);
        assert!(matches!(
            published[0],
            Event::OrderUpdate { sequence: 7, .. }
        ));
    }

    #[test]
    fn a_balance_spent_meanwhile_below_the_transaction_s_needs_overtakes_it() {
        let (mut pending, user, [available, held]) = hold_of_60_read_at_100();
        let balances = HashMap::from([(available, Decimal::from(59)), (held, Decimal::ZERO)]);
        let error = pending
            .rebase(&balances, &HashMap::from([(user, 4)]))
            .expect_err("59 does not cover 60");
        assert!(overtaken(&error));
        // Exactly enough is enough.
        let (mut pending, user, [available, held]) = hold_of_60_read_at_100();
        let balances = HashMap::from([(available, Decimal::from(60)), (held, Decimal::ZERO)]);
        let renumbering = pending.rebase(&balances, &HashMap::from([(user, 4)]));
        // Its balance moved (by 40), its event numbers did not.
        assert!(renumbering.is_ok_and(|r| r.numbers.is_empty() && r.moved()));
        assert_eq!(pending.postings[0].balance_after.0, Decimal::ZERO);
    }

    #[test]
    fn volumes_add_both_sides_and_twice_for_one_user_on_both() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut pending = Pending::default();
        pending
            .market("BTC-USD")
            .volumes
            .insert(a, Decimal::from(10));
        pending
            .market("ETH-USD")
            .volumes
            .insert(a, Decimal::from(100));
        pending.add_volume("BTC-USD", (a, b), "2026-11-22", Decimal::from(5));
        pending.add_volume("BTC-USD", (a, a), "2026-11-22", Decimal::from(1));
        let btc = &pending.markets["BTC-USD"];
        assert_eq!(btc.volumes[&a], Decimal::from(17));
        // Not read yet: only the day's addition is kept, for when it is read.
        assert!(!btc.volumes.contains_key(&b));
        assert_eq!(
            btc.volume_added[&(b, "2026-11-22".to_owned())],
            Decimal::from(5)
        );
        assert_eq!(
            btc.volume_added[&(a, "2026-11-22".to_owned())],
            Decimal::from(7)
        );
        // Volumes are a market's own: fee tiers elsewhere are not moved.
        let eth = &pending.markets["ETH-USD"];
        assert_eq!(eth.volumes[&a], Decimal::from(100));
        assert!(eth.volume_added.is_empty());
    }
}
