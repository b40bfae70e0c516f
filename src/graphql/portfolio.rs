//! Portfolio and history: positions and P&L, performance, tax report, fill history,
//! and the live portfolio value.
//!
//! Amounts in the quote asset are rounded here, for display only: half-even to the quote
//! asset's precision. Everything below this layer is exact.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, Subscription};
use futures_util::Stream;
use rust_decimal::Decimal as Exact;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::access::api_key;
use super::api_keys::ApiScope;
use super::context::ContextExt;
use super::markets::Asset;
use super::orders::{Fill, OrderSide};
use super::pagination;
use super::scalars::{DateTime, Decimal};
use crate::domain::cost_basis::Method;
use crate::domain::pricing::display;
use crate::events::Event;
use crate::service::portfolio as service;
use crate::state::AppState;

/// How disposals pick the acquisitions whose cost they take.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum CostBasisMethod {
    /// First in, first out: the oldest lots go first.
    Fifo,
    /// Last in, first out: the newest lots go first.
    Lifo,
    /// Highest in, first out: the dearest lots (by unit cost) go first.
    Hifo,
    /// One pool per asset at its average unit cost.
    AverageCost,
}

impl From<CostBasisMethod> for Method {
    fn from(method: CostBasisMethod) -> Self {
        match method {
            CostBasisMethod::Fifo => Method::Fifo,
            CostBasisMethod::Lifo => Method::Lifo,
            CostBasisMethod::Hifo => Method::Hifo,
            CostBasisMethod::AverageCost => Method::AverageCost,
        }
    }
}

/// Spacing of performance points.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum Interval {
    /// One point an hour.
    Hour,
    /// One point a day.
    Day,
    /// One point a week.
    Week,
}

impl From<Interval> for service::Interval {
    fn from(interval: Interval) -> Self {
        match interval {
            Interval::Hour => service::Interval::Hour,
            Interval::Day => service::Interval::Day,
            Interval::Week => service::Interval::Week,
        }
    }
}

fn shown(value: Option<Exact>, dp: u32) -> Option<Decimal> {
    value.map(|v| Decimal(display(v, dp)))
}

/// The signed-in user's holdings valued in one quote asset, with P&L.
pub struct Portfolio {
    view: service::PortfolioView,
    user_id: Uuid,
}

/// The signed-in user's holdings valued in `quoteAsset`, with cost basis and P&L under
/// the chosen method. Amounts are rounded half-even to the quote asset's precision;
/// totals are computed exactly and then rounded, so they may differ from the sum of the
/// rounded positions in the last place.
#[Object]
impl Portfolio {
    /// Symbol of the asset values are given in.
    async fn quote_asset(&self) -> &str {
        &self.view.quote_asset
    }

    /// The cost-basis method used.
    async fn method(&self) -> CostBasisMethod {
        match self.view.method {
            Method::Fifo => CostBasisMethod::Fifo,
            Method::Lifo => CostBasisMethod::Lifo,
            Method::Hifo => CostBasisMethod::Hifo,
            Method::AverageCost => CostBasisMethod::AverageCost,
        }
    }

    /// Sum of the priced positions' values (unpriced positions are left out, not
    /// counted as zero: see `Position.priced`).
    async fn total_value(&self) -> Decimal {
        Decimal(display(self.view.total_value, self.view.quote_precision))
    }

    /// Sum of the positions' known cost basis. Null when no market converts the cost
    /// currency (USD) into the quote asset.
    async fn total_cost(&self) -> Option<Decimal> {
        shown(self.view.total_cost, self.view.quote_precision)
    }

    /// Sum of the priced positions' unrealized P&L. Null as `totalCost`.
    async fn unrealized_pnl(&self) -> Option<Decimal> {
        shown(self.view.unrealized_pnl, self.view.quote_precision)
    }

    /// Realized P&L of every asset ever held (sold-out ones too). Null as `totalCost`.
    async fn realized_pnl(&self) -> Option<Decimal> {
        shown(self.view.realized_pnl, self.view.quote_precision)
    }

    /// True when every position has a price (so `totalValue` covers everything held).
    async fn fully_priced(&self) -> bool {
        self.view.positions.iter().all(|p| p.price.is_some())
    }

    /// One position per asset held (available + locked above zero), by symbol.
    async fn positions(&self) -> Vec<Position> {
        self.view
            .positions
            .iter()
            .map(|p| Position {
                view: p.clone(),
                dp: self.view.quote_precision,
            })
            .collect()
    }

    /// The value series over a range, with time- and money-weighted returns. `from`
    /// defaults to 30 days before `to`, `to` to now, `interval` to DAY; at most 2000
    /// points, else `BAD_USER_INPUT`.
    async fn performance(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime>,
        to: Option<DateTime>,
        interval: Option<Interval>,
    ) -> async_graphql::Result<Performance> {
        let view = service::performance(
            ctx.state(),
            self.user_id,
            &self.view.quote_asset,
            from.map(|d| d.0),
            to.map(|d| d.0),
            interval.unwrap_or(Interval::Day).into(),
        )
        .await?;
        Ok(Performance {
            points: view
                .points
                .into_iter()
                .map(|(at, value)| PortfolioPoint {
                    at: DateTime(at),
                    value: Decimal(value),
                })
                .collect(),
            time_weighted_return: view.time_weighted_return.map(Decimal),
            money_weighted_return: view.money_weighted_return.map(Decimal),
            net_deposits: Decimal(view.net_deposits),
        })
    }
}

/// What the user holds of one asset, valued in the portfolio's quote asset.
pub struct Position {
    view: service::PositionView,
    dp: u32,
}

/// What the user holds of one asset, valued in the portfolio's quote asset.
#[Object]
impl Position {
    /// The asset held (loaded with all positions' assets in one read).
    async fn asset(&self) -> Asset {
        Asset(self.view.asset.clone())
    }

    /// `available + locked`.
    async fn quantity(&self) -> Decimal {
        Decimal(self.view.quantity)
    }

    /// Free to trade or withdraw.
    async fn available(&self) -> Decimal {
        Decimal(self.view.available)
    }

    /// Held for open orders and pending withdrawals.
    async fn locked(&self) -> Decimal {
        Decimal(self.view.locked)
    }

    /// False when no market prices the asset in the quote asset, directly, inverted or
    /// through one intermediate asset; then `price`, `value`, `allocation` and
    /// `unrealizedPnl` are null (the position is not valued at zero).
    async fn priced(&self) -> bool {
        self.view.price.is_some()
    }

    /// Last trade price of ASSET-QUOTE, else its inverse market, else a cross rate such
    /// as ETH-BTC × BTC-USD (derived rates to 18 places). Null when unpriced.
    async fn price(&self) -> Option<Decimal> {
        self.view.price.map(|p| Decimal(p.normalize()))
    }

    /// `quantity × price`, rounded. Null when unpriced.
    async fn value(&self) -> Option<Decimal> {
        shown(self.view.value, self.dp)
    }

    /// Fraction of the portfolio's `totalValue` (0..1, 6 places). Null when unpriced or
    /// when the total is zero.
    async fn allocation(&self) -> Option<Decimal> {
        self.view.allocation.map(|a| Decimal(display(a, 6)))
    }

    /// Known cost of the quantity held (fees included), in the quote asset. Quantity
    /// of unknown cost (see `unknownCostQuantity`) is not in it. Null when no market
    /// converts the cost currency (USD) into the quote asset.
    async fn cost_basis(&self) -> Option<Decimal> {
        shown(self.view.cost_basis, self.dp)
    }

    /// `costBasis` per unit of known-cost quantity. Null when nothing held has a known
    /// cost, or as `costBasis`.
    async fn average_cost(&self) -> Option<Decimal> {
        shown(self.view.average_cost, self.dp)
    }

    /// Value of the known-cost quantity minus `costBasis`. Null when unpriced or as
    /// `costBasis`.
    async fn unrealized_pnl(&self) -> Option<Decimal> {
        shown(self.view.unrealized_pnl, self.dp)
    }

    /// Realized P&L of this asset so far under the method (known gains only). Null as
    /// `costBasis`.
    async fn realized_pnl(&self) -> Option<Decimal> {
        shown(self.view.realized_pnl, self.dp)
    }

    /// Quantity held whose cost is unknown: deposited when the asset had no price, or
    /// held before P&L tracking began. Zero when every unit's cost is known.
    async fn unknown_cost_quantity(&self) -> Decimal {
        Decimal(self.view.unknown_cost_quantity)
    }
}

/// The portfolio's value over time and its returns.
#[derive(SimpleObject)]
pub struct Performance {
    /// The value at each point, oldest first (rounded to the quote asset's precision).
    points: Vec<PortfolioPoint>,
    /// Time-weighted return over the range (0.05 is 5 %): the growth of the holdings,
    /// whatever the timing of deposits. Null when nothing was invested.
    time_weighted_return: Option<Decimal>,
    /// Money-weighted return (XIRR, annualized, 0.05 is 5 %/year): weights each deposit
    /// by how long it was invested. Null when it has no solution (e.g. nothing invested).
    money_weighted_return: Option<Decimal>,
    /// Deposits minus withdrawals within the range, each valued when it happened.
    net_deposits: Decimal,
}

/// The portfolio's value at one instant.
#[derive(SimpleObject, Clone)]
pub struct PortfolioPoint {
    /// When.
    at: DateTime,
    /// Value of the priced holdings in the quote asset.
    value: Decimal,
}

/// A piece of an acquisition that a disposal consumed.
#[derive(SimpleObject)]
pub struct TaxLot {
    /// The asset disposed of.
    asset: String,
    /// Quantity of this piece.
    quantity: Decimal,
    /// When the piece was acquired (AVERAGE_COST: when the pool last became non-empty).
    acquired_at: DateTime,
    /// When it was disposed of.
    disposed_at: DateTime,
    /// What it brought, net of fees; null when the disposal had no known value.
    proceeds: Option<Decimal>,
    /// What it cost, fees included; null for unknown-cost acquisitions.
    cost_basis: Option<Decimal>,
    /// `proceeds - costBasis`; null when either is unknown.
    gain: Option<Decimal>,
    /// Held for more than 365 days.
    long_term: bool,
}

/// Realized gains of one calendar year (UTC).
#[derive(SimpleObject)]
pub struct TaxReport {
    /// The year.
    year: i32,
    /// The cost-basis method used.
    method: CostBasisMethod,
    /// Symbol of the asset amounts are in.
    quote_asset: String,
    /// Every realized piece, in order of disposal.
    lots: Vec<TaxLot>,
    /// Sum of known proceeds.
    total_proceeds: Decimal,
    /// Sum of known cost basis.
    total_cost_basis: Decimal,
    /// Sum of known gains: the realized P&L of the year.
    total_gain: Decimal,
    /// Gains on pieces held a year or less.
    short_term_gain: Decimal,
    /// Gains on pieces held over a year.
    long_term_gain: Decimal,
    /// Quantity disposed of whose gain is unknown (left out of the totals).
    unknown_gain_quantity: Decimal,
    /// The lots as CSV with a header row
    /// (`asset,quantity,acquired_at,disposed_at,proceeds,cost_basis,gain,long_term`).
    csv: String,
}

/// Filters for `fills`.
#[derive(InputObject, Default)]
pub struct FillFilter {
    /// Only this market.
    market: Option<String>,
    /// Only this side.
    side: Option<OrderSide>,
    /// Only fills at or after this instant.
    from: Option<DateTime>,
    /// Only fills before this instant.
    to: Option<DateTime>,
}

#[derive(Default)]
pub struct PortfolioQuery;

#[Object]
impl PortfolioQuery {
    /// The signed-in user's portfolio valued in `quoteAsset` (default USD) with cost
    /// basis and P&L under `method` (default FIFO). An unknown quote asset is
    /// `BAD_USER_INPUT` (field `quoteAsset`).
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn portfolio(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = "USD")] quote_asset: String,
        #[graphql(default_with = "CostBasisMethod::Fifo")] method: CostBasisMethod,
    ) -> async_graphql::Result<Portfolio> {
        let viewer = ctx.viewer()?;
        let view =
            service::portfolio(ctx.state(), viewer.user_id(), &quote_asset, method.into()).await?;
        Ok(Portfolio {
            view,
            user_id: viewer.user_id(),
        })
    }

    /// The signed-in user's fills, newest first. `first` is at most 200.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn fills(
        &self,
        ctx: &Context<'_>,
        filter: Option<FillFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Connection<String, Fill>> {
        let viewer = ctx.viewer()?;
        let page = pagination::page(first, after, last, before)?;
        let filter = filter.unwrap_or_default();
        let filter = service::FillFilter {
            market: filter.market,
            side: filter.side.map(|s| match s {
                OrderSide::Buy => "BUY".to_owned(),
                OrderSide::Sell => "SELL".to_owned(),
            }),
            from: filter.from.map(|d| d.0),
            to: filter.to.map(|d| d.0),
        };
        let mut rows = service::fills_page(
            ctx.state(),
            viewer.user_id(),
            &filter,
            page.after,
            page.limit + 1,
        )
        .await?;
        let has_next = rows.len() as u64 > page.limit;
        rows.truncate(page.limit as usize);
        let mut connection = Connection::new(page.after.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter()
                .map(|f| Edge::new(pagination::encode_cursor(f.id), Fill(f))),
        );
        Ok(connection)
    }

    /// Realized gains of calendar year `year` (UTC) under `method`, in `quoteAsset`
    /// (default USD; other assets convert from USD at today's rate). An unknown quote
    /// asset or a year outside 1970..9998 is `BAD_USER_INPUT`.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn tax_report(
        &self,
        ctx: &Context<'_>,
        year: i32,
        method: CostBasisMethod,
        #[graphql(default = "USD")] quote_asset: String,
    ) -> async_graphql::Result<TaxReport> {
        let viewer = ctx.viewer()?;
        let report = service::tax_report(
            ctx.state(),
            viewer.user_id(),
            year,
            method.into(),
            &quote_asset,
        )
        .await?;
        let dp = report.quote_precision;
        let round = |v: Exact| Decimal(display(v, dp));
        Ok(TaxReport {
            csv: report.csv(),
            year: report.year,
            method,
            quote_asset: report.quote_asset.clone(),
            lots: report
                .lots
                .iter()
                .map(|lot| TaxLot {
                    asset: lot.asset.clone(),
                    quantity: Decimal(lot.quantity),
                    acquired_at: DateTime(lot.acquired_at),
                    disposed_at: DateTime(lot.disposed_at),
                    proceeds: shown(lot.proceeds, dp),
                    cost_basis: shown(lot.cost_basis, dp),
                    gain: shown(lot.gain, dp),
                    long_term: lot.long_term,
                })
                .collect(),
            total_proceeds: round(report.totals.proceeds),
            total_cost_basis: round(report.totals.cost_basis),
            total_gain: round(report.totals.gain),
            short_term_gain: round(report.totals.short_term_gain),
            long_term_gain: round(report.totals.long_term_gain),
            unknown_gain_quantity: Decimal(report.totals.unknown_quantity),
        })
    }
}

/// The shortest time between two pushes of `portfolioValue` to one subscriber.
const VALUE_PUSH_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Default)]
pub struct PortfolioSubscription;

#[Subscription]
impl PortfolioSubscription {
    /// The signed-in user's portfolio value in `quoteAsset` (default USD): pushed at
    /// once, then whenever a price that matters to it or one of the user's balances
    /// changes and the value moves, at most four times a second (changes in between are
    /// coalesced into the next push). `UNAUTHENTICATED` without a viewer;
    /// `BAD_USER_INPUT` for an unknown quote asset.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn portfolio_value(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = "USD")] quote_asset: String,
    ) -> async_graphql::Result<impl Stream<Item = PortfolioPoint>> {
        let user_id = ctx.viewer()?.user_id();
        let state = ctx.state().clone();
        let (quote, dp) = service::quote_precision(&state, &quote_asset).await?;
        let events = state.events.subscribe();
        let resyncs = state.events.resyncs();
        Ok(value_stream(state, user_id, quote, dp, events, resyncs))
    }
}

struct Watch {
    state: AppState,
    user_id: Uuid,
    quote: String,
    dp: u32,
    events: tokio::sync::broadcast::Receiver<Arc<Event>>,
    /// Changes when events may have been lost upstream (a Redis outage).
    resyncs: tokio::sync::watch::Receiver<u64>,
    last_value: Option<Exact>,
    last_push: Option<tokio::time::Instant>,
    held: std::collections::BTreeSet<String>,
    markets: std::collections::HashMap<String, (String, String)>,
}

impl Watch {
    /// Whether an event may move this subscriber's value.
    async fn concerns(&mut self, event: &Event) -> bool {
        match event {
            Event::OrderUpdate {
                user_id, fill_id, ..
            } => *user_id == self.user_id && fill_id.is_some(),
            Event::BalanceChanged { user_id } => *user_id == self.user_id,
            Event::Trade { market, .. } => {
                if !self.markets.contains_key(market) {
                    if let Ok(rows) =
                        crate::service::markets::list_markets(self.state.db.conn()).await
                    {
                        self.markets = rows
                            .into_iter()
                            .map(|m| (m.symbol, (m.base_asset, m.quote_asset)))
                            .collect();
                    }
                }
                // A trade matters when its market touches an asset held or the quote
                // asset: every price path (direct, inverse, one cross) goes through one.
                match self.markets.get(market) {
                    Some((base, quote)) => [base, quote]
                        .iter()
                        .any(|a| self.held.contains(*a) || **a == self.quote),
                    None => true,
                }
            }
            _ => false,
        }
    }

    async fn value(&mut self) -> Option<Exact> {
        match service::current_value(&self.state, self.user_id, &self.quote).await {
            Ok((value, held)) => {
                self.held = held;
                Some(display(value, self.dp))
            }
            Err(error) => {
                tracing::warn!(error = ?error, "portfolio value failed");
                None
            }
        }
    }
}

fn value_stream(
    state: AppState,
    user_id: Uuid,
    quote: String,
    dp: u32,
    events: tokio::sync::broadcast::Receiver<Arc<Event>>,
    resyncs: tokio::sync::watch::Receiver<u64>,
) -> impl Stream<Item = PortfolioPoint> {
    let watch = Watch {
        state,
        user_id,
        quote,
        dp,
        events,
        resyncs,
        last_value: None,
        last_push: None,
        held: Default::default(),
        markets: Default::default(),
    };
    futures_util::stream::unfold(watch, |mut watch| async move {
        loop {
            if watch.last_push.is_some() {
                // Wait for something that may move the value.
                loop {
                    let received = tokio::select! {
                        received = watch.events.recv() => received,
                        // Missed events upstream: recompute rather than guess.
                        Ok(()) = watch.resyncs.changed() => break,
                    };
                    match received {
                        Ok(event) => {
                            if watch.concerns(&event).await {
                                break;
                            }
                        }
                        // Missed events: recompute rather than guess.
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return None,
                    }
                }
                // At most one push per interval: later changes fold into this one.
                if let Some(last) = watch.last_push {
                    tokio::time::sleep_until(last + VALUE_PUSH_INTERVAL).await;
                }
                while watch.events.try_recv().is_ok() {}
            }
            let Some(value) = watch.value().await else {
                watch.last_push = Some(tokio::time::Instant::now());
                continue;
            };
            watch.last_push = Some(tokio::time::Instant::now());
            if watch.last_value == Some(value) {
                continue;
            }
            watch.last_value = Some(value);
            let point = PortfolioPoint {
                at: DateTime(chrono::Utc::now()),
                value: Decimal(value),
            };
            return Some((point, watch));
        }
    })
}
