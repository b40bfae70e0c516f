//! Subscriptions to live data: the viewer's order updates, fills and price alerts, and
//! public market tickers. The streams come from `service::live`; this layer only shapes
//! them.

use std::sync::Arc;

use async_graphql::{Context, Enum, Object, Subscription, ID};
use futures_util::{Stream, StreamExt};

use super::access::api_key;
use super::alerts::PriceAlert;
use super::api_keys::ApiScope;
use super::context::ContextExt;
use super::orders::{Fill, Order};
use super::scalars::{DateTime, Decimal};
use crate::service::{alerts, live};

/// What happened to an order.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum OrderUpdateKind {
    /// The order was accepted (it may have traded at once: more updates follow).
    Created,
    /// A stop order's trigger price was reached; it is now a limit order.
    Triggered,
    /// A fill, after which some quantity is still open.
    PartiallyFilled,
    /// The fill that completed the order.
    Filled,
    /// Its price or quantity was changed.
    Amended,
    /// Its owner cancelled it.
    Cancelled,
    /// Its time in force, expiry time or self-trade prevention ended it.
    Expired,
    /// It was refused on arrival.
    Rejected,
}

fn parse_kind(kind: &str) -> OrderUpdateKind {
    match kind {
        "CREATED" => OrderUpdateKind::Created,
        "TRIGGERED" => OrderUpdateKind::Triggered,
        "PARTIALLY_FILLED" => OrderUpdateKind::PartiallyFilled,
        "FILLED" => OrderUpdateKind::Filled,
        "CANCELLED" => OrderUpdateKind::Cancelled,
        "EXPIRED" => OrderUpdateKind::Expired,
        "REJECTED" => OrderUpdateKind::Rejected,
        _ => OrderUpdateKind::Amended,
    }
}

/// One change to one of the subscriber's orders.
pub struct OrderUpdate(live::OrderUpdate);

/// One change to one of the subscriber's orders.
#[Object]
impl OrderUpdate {
    /// The change's number in the subscriber's order event log: 1, 2, 3, ... without
    /// gaps across all their orders. Resubscribe with `afterSequence` set to the last
    /// one received to get exactly what was missed.
    async fn sequence(&self) -> i64 {
        self.0.sequence
    }

    /// What happened.
    async fn kind(&self) -> OrderUpdateKind {
        parse_kind(&self.0.kind)
    }

    /// The order, as it stands when the update is delivered (a replayed update shows
    /// the order's current state).
    async fn order(&self) -> Order {
        Order(self.0.order.clone())
    }

    /// The fill, for PARTIALLY_FILLED and FILLED; null otherwise.
    async fn fill(&self) -> Option<Fill> {
        self.0.fill.clone().map(Fill)
    }
}

/// A market's price and 24-hour statistics at one moment.
pub struct Ticker(Arc<live::Ticker>);

/// A market's price and 24-hour statistics at one moment.
#[Object]
impl Ticker {
    /// The market symbol, e.g. `BTC-USD`.
    async fn market(&self) -> &str {
        &self.0.market
    }

    /// The price of the latest trade; null before the first trade.
    async fn last_price(&self) -> Option<Decimal> {
        self.0.last_price.map(Decimal)
    }

    /// Relative change of the trade price over the last 24 hours, as a fraction
    /// (`0.05` is +5%); null without trades in that window.
    #[graphql(name = "change24h")]
    async fn change24h(&self) -> Option<Decimal> {
        self.0.change24h().map(Decimal)
    }

    /// Base quantity traded over the last 24 hours.
    #[graphql(name = "volume24h")]
    async fn volume24h(&self) -> Decimal {
        Decimal(self.0.volume24h)
    }

    /// When the latest trade happened (the market's last change before any trade).
    async fn at(&self) -> DateTime {
        DateTime(self.0.at)
    }
}

/// One of the subscriber's price alerts fired.
pub struct PriceAlertEvent(live::AlertFired);

/// One of the subscriber's price alerts fired.
#[Object]
impl PriceAlertEvent {
    /// The alert, as it stands now (a one-shot alert is no longer active); null if it
    /// was deleted meanwhile.
    async fn alert(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<PriceAlert>> {
        let viewer = ctx.viewer()?;
        Ok(alerts::find(ctx.state(), self.0.alert_id)
            .await?
            .filter(|a| a.user_id == viewer.user_id())
            .map(PriceAlert))
    }

    /// The market symbol.
    async fn market(&self) -> &str {
        &self.0.market
    }

    /// The trade price that crossed the threshold.
    async fn price(&self) -> Decimal {
        Decimal(self.0.price)
    }

    /// When it fired.
    async fn triggered_at(&self) -> DateTime {
        DateTime(self.0.triggered_at)
    }

    /// The id of the notification stored for it (see `notifications`).
    async fn notification_id(&self) -> ID {
        ID(self.0.notification_id.to_string())
    }
}

#[derive(Default)]
pub struct LiveSubscription;

#[Subscription]
impl LiveSubscription {
    /// Changes to the subscriber's own orders, in one market or all, each numbered by
    /// `sequence`. With `afterSequence`, first every stored update after that number
    /// (in order), then live ones: none lost or repeated. Without it, live updates
    /// only. `UNAUTHENTICATED` without credentials; `BAD_USER_INPUT` for an unknown
    /// market or an `afterSequence` that is negative or ahead of the latest update.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn order_updates(
        &self,
        ctx: &Context<'_>,
        market: Option<String>,
        after_sequence: Option<i32>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<OrderUpdate>>> {
        let viewer = ctx.viewer()?;
        let stream = live::order_updates(
            ctx.state(),
            viewer.user_id(),
            market,
            after_sequence.map(i64::from),
        )
        .await?;
        Ok(stream.map(|item| item.map(OrderUpdate).map_err(Into::into)))
    }

    /// The subscriber's own fills as they happen, in one market or all. With
    /// `afterSequence` (an `OrderUpdate.sequence`), first every fill recorded after
    /// that update, so a client can resume without a gap. `UNAUTHENTICATED` without
    /// credentials; `BAD_USER_INPUT` for an unknown market or a bad `afterSequence`.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn fills(
        &self,
        ctx: &Context<'_>,
        market: Option<String>,
        after_sequence: Option<i32>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Fill>>> {
        let viewer = ctx.viewer()?;
        let stream = live::fills(
            ctx.state(),
            viewer.user_id(),
            market,
            after_sequence.map(i64::from),
        )
        .await?;
        Ok(stream.map(|item| item.map(Fill).map_err(Into::into)))
    }

    /// A market's ticker: its current value at once, then a new one after trades, at
    /// most four times a second by default (trades in between are folded into the next
    /// value; a slow client skips straight to the latest). Public.
    /// `BAD_USER_INPUT` for an unknown market.
    #[graphql(directive = api_key::apply(None))]
    async fn ticker(
        &self,
        ctx: &Context<'_>,
        market: String,
    ) -> async_graphql::Result<impl Stream<Item = Ticker>> {
        let stream = live::ticker(ctx.state(), &market).await?;
        Ok(stream.map(Ticker))
    }

    /// The subscriber's price alerts as they fire. Each is also stored as a
    /// notification; a subscriber too slow to keep up gets a `CONFLICT` error item
    /// saying so, and finds what it missed in `notifications`. `UNAUTHENTICATED`
    /// without credentials.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn price_alert_triggered(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<PriceAlertEvent>>> {
        let viewer = ctx.viewer()?;
        let stream = live::alerts_fired(ctx.state(), viewer.user_id());
        Ok(stream.map(|item| item.map(PriceAlertEvent).map_err(Into::into)))
    }
}
