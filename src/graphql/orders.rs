//! Orders and fills: placing, previewing, cancelling, and the viewer's history.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::connection::{Connection, Edge};
use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use super::access::api_key;
use super::accounts::parse_id;
use super::api_keys::ApiScope;
use super::context::ContextExt;
use super::markets::Market;
use super::pagination;
use super::scalars::{DateTime, Decimal};
use crate::db::Db;
use crate::domain::matching;
use crate::domain::order_rules;
use crate::error::ApiError;
use crate::service::orders as service;

/// Buy or sell.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum OrderSide {
    /// Acquire the base asset, paying the quote asset.
    Buy,
    /// Give up the base asset for the quote asset.
    Sell,
}

impl From<OrderSide> for matching::Side {
    fn from(side: OrderSide) -> Self {
        match side {
            OrderSide::Buy => matching::Side::Buy,
            OrderSide::Sell => matching::Side::Sell,
        }
    }
}

/// How an order is priced.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum OrderType {
    /// At `price` or better; may rest on the book.
    Limit,
    /// At the best prices available now; never rests.
    Market,
    /// Waits (UNTRIGGERED) until the last trade reaches `triggerPrice`, then becomes a
    /// LIMIT order at `price`.
    StopLimit,
}

/// How long an order may stay on the book.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum TimeInForce {
    /// Good till cancelled.
    Gtc,
    /// Immediate or cancel: trade what can trade now, cancel the rest.
    Ioc,
    /// Fill or kill: trade all of it now, or nothing.
    Fok,
    /// Good till `expireAt`.
    Gtd,
}

/// What happens when an order would trade with another order of the same user.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum SelfTradePrevention {
    /// Cancel the incoming order's remainder (the default).
    ExpireTaker,
    /// Cancel the resting order and keep matching.
    ExpireMaker,
    /// Cancel both.
    ExpireBoth,
    /// Allow the self-trade.
    None,
}

/// Where an order stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    /// A stop order waiting for its trigger price.
    Untriggered,
    /// Resting on the book, nothing filled yet.
    Open,
    /// Resting on the book, partly filled.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// Cancelled by its owner.
    Cancelled,
    /// Refused on arrival (see `rejectReason`); nothing happened.
    Rejected,
    /// Ended by its time in force, expiry time or self-trade prevention.
    Expired,
}

/// Whether a fill added liquidity to the book or took it.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum Liquidity {
    /// The order was resting on the book.
    Maker,
    /// The order arrived and traded against the book.
    Taker,
}

fn parse_status(value: &str) -> OrderStatus {
    match value {
        service::status::UNTRIGGERED => OrderStatus::Untriggered,
        service::status::PARTIALLY_FILLED => OrderStatus::PartiallyFilled,
        service::status::FILLED => OrderStatus::Filled,
        service::status::CANCELLED => OrderStatus::Cancelled,
        service::status::REJECTED => OrderStatus::Rejected,
        service::status::EXPIRED => OrderStatus::Expired,
        _ => OrderStatus::Open,
    }
}

fn status_str(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Untriggered => service::status::UNTRIGGERED,
        OrderStatus::Open => service::status::OPEN,
        OrderStatus::PartiallyFilled => service::status::PARTIALLY_FILLED,
        OrderStatus::Filled => service::status::FILLED,
        OrderStatus::Cancelled => service::status::CANCELLED,
        OrderStatus::Rejected => service::status::REJECTED,
        OrderStatus::Expired => service::status::EXPIRED,
    }
}

/// Loads markets by symbol for orders and fills.
pub struct MarketLoader(pub Db);

impl Loader<String> for MarketLoader {
    type Value = entity::markets::Model;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = entity::markets::Entity::find()
            .filter(entity::markets::Column::Symbol.is_in(keys.iter().cloned()))
            .all(self.0.conn())
            .await
            .map_err(|e| Arc::new(ApiError::from(e)))?;
        Ok(rows.into_iter().map(|m| (m.symbol.clone(), m)).collect())
    }
}

/// Loads the fills of many orders at once.
pub struct FillsByOrderLoader(pub Db);

impl Loader<Uuid> for FillsByOrderLoader {
    type Value = Vec<entity::fills::Model>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = entity::fills::Entity::find()
            .filter(entity::fills::Column::OrderId.is_in(keys.iter().copied()))
            .order_by_asc(entity::fills::Column::Id)
            .all(self.0.conn())
            .await
            .map_err(|e| Arc::new(ApiError::from(e)))?;
        let mut by_order: HashMap<Uuid, Vec<entity::fills::Model>> = HashMap::new();
        for fill in rows {
            by_order.entry(fill.order_id).or_default().push(fill);
        }
        Ok(by_order)
    }
}

/// Loads orders by id, for `Fill.order`.
pub struct OrderLoader(pub Db);

impl Loader<Uuid> for OrderLoader {
    type Value = entity::orders::Model;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = entity::orders::Entity::find()
            .filter(entity::orders::Column::Id.is_in(keys.iter().copied()))
            .all(self.0.conn())
            .await
            .map_err(|e| Arc::new(ApiError::from(e)))?;
        Ok(rows.into_iter().map(|o| (o.id, o)).collect())
    }
}

fn loader_error(error: Arc<ApiError>) -> async_graphql::Error {
    ApiError::internal(anyhow::anyhow!("loader failed: {error}")).into()
}

async fn load_market(ctx: &Context<'_>, symbol: &str) -> async_graphql::Result<Market> {
    ctx.data_unchecked::<DataLoader<MarketLoader>>()
        .load_one(symbol.to_owned())
        .await
        .map_err(loader_error)?
        .map(Market)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("market {symbol} is missing")).into())
}

/// An order of the signed-in user.
pub struct Order(pub entity::orders::Model);

/// An order of the signed-in user.
#[Object]
impl Order {
    /// Opaque identifier.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The market traded.
    async fn market(&self, ctx: &Context<'_>) -> async_graphql::Result<Market> {
        load_market(ctx, &self.0.market).await
    }

    /// Buy or sell.
    async fn side(&self) -> OrderSide {
        if self.0.side == "BUY" {
            OrderSide::Buy
        } else {
            OrderSide::Sell
        }
    }

    /// LIMIT, MARKET or STOP_LIMIT.
    #[graphql(name = "type")]
    async fn order_type(&self) -> OrderType {
        match self.0.order_type.as_str() {
            "MARKET" => OrderType::Market,
            "STOP_LIMIT" => OrderType::StopLimit,
            _ => OrderType::Limit,
        }
    }

    /// Where the order stands.
    async fn status(&self) -> OrderStatus {
        parse_status(&self.0.status)
    }

    /// The limit price; null for MARKET orders.
    async fn price(&self) -> Option<Decimal> {
        self.0.price.map(|p| Decimal(p.0))
    }

    /// The STOP_LIMIT trigger; null otherwise.
    async fn trigger_price(&self) -> Option<Decimal> {
        self.0.trigger_price.map(|p| Decimal(p.0))
    }

    /// Base quantity ordered; null for a MARKET buy by `quoteQuantity`.
    async fn quantity(&self) -> Option<Decimal> {
        self.0.quantity.map(|q| Decimal(q.0))
    }

    /// Quote amount to spend, for a MARKET buy by quote amount; null otherwise.
    async fn quote_quantity(&self) -> Option<Decimal> {
        self.0.quote_quantity.map(|q| Decimal(q.0))
    }

    /// Base quantity filled so far.
    async fn filled_quantity(&self) -> Decimal {
        Decimal(self.0.filled_quantity.0)
    }

    /// Quantity still to fill; zero once the order is done.
    async fn remaining_quantity(&self) -> Decimal {
        let open = self.0.is_open || self.0.status == service::status::UNTRIGGERED;
        match self.0.quantity {
            Some(q) if open => Decimal(q.0 - self.0.filled_quantity.0),
            _ => Decimal(rust_decimal::Decimal::ZERO),
        }
    }

    /// Exact volume-weighted price of the fills; null before the first fill.
    async fn average_fill_price(&self) -> Option<Decimal> {
        let filled = self.0.filled_quantity.0;
        (!filled.is_zero())
            .then(|| self.0.filled_quote.0.checked_div(filled))
            .flatten()
            .map(Decimal)
    }

    /// Fees paid so far, in the asset received (base for buys, quote for sells).
    async fn fee(&self) -> Decimal {
        Decimal(self.0.fee.0)
    }

    /// How long the order may rest.
    async fn time_in_force(&self) -> TimeInForce {
        match self.0.time_in_force.as_str() {
            "IOC" => TimeInForce::Ioc,
            "FOK" => TimeInForce::Fok,
            "GTD" => TimeInForce::Gtd,
            _ => TimeInForce::Gtc,
        }
    }

    /// When a GTD order expires; null otherwise.
    async fn expire_at(&self) -> Option<DateTime> {
        self.0.expire_at.map(DateTime)
    }

    /// Whether the order may only add liquidity.
    async fn post_only(&self) -> bool {
        self.0.post_only
    }

    /// The self-trade prevention mode.
    async fn self_trade_prevention(&self) -> SelfTradePrevention {
        match self.0.self_trade_prevention.as_str() {
            "EXPIRE_MAKER" => SelfTradePrevention::ExpireMaker,
            "EXPIRE_BOTH" => SelfTradePrevention::ExpireBoth,
            "NONE" => SelfTradePrevention::None,
            _ => SelfTradePrevention::ExpireTaker,
        }
    }

    /// The client's own id for the order, unique per user.
    async fn client_order_id(&self) -> Option<&str> {
        self.0.client_order_id.as_deref()
    }

    /// Why the order was rejected or its remainder expired; null otherwise.
    async fn reject_reason(&self) -> Option<&str> {
        self.0.reject_reason.as_deref()
    }

    /// When the order was placed.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// When the order last changed.
    async fn updated_at(&self) -> DateTime {
        DateTime(self.0.updated_at)
    }

    /// The order's fills, oldest first.
    async fn fills(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Fill>> {
        let fills = ctx
            .data_unchecked::<DataLoader<FillsByOrderLoader>>()
            .load_one(self.0.id)
            .await
            .map_err(loader_error)?
            .unwrap_or_default();
        Ok(fills.into_iter().map(Fill).collect())
    }
}

/// One execution of one of the signed-in user's orders.
pub struct Fill(pub entity::fills::Model);

/// One execution of one of the signed-in user's orders.
#[Object]
impl Fill {
    /// Opaque identifier.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The trade this fill is one side of; the other side's fill has the same id.
    async fn trade_id(&self) -> ID {
        ID(self.0.trade_id.to_string())
    }

    /// The order that filled.
    async fn order(&self, ctx: &Context<'_>) -> async_graphql::Result<Order> {
        ctx.data_unchecked::<DataLoader<OrderLoader>>()
            .load_one(self.0.order_id)
            .await
            .map_err(loader_error)?
            .map(Order)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("fill without order")).into())
    }

    /// The market traded.
    async fn market(&self, ctx: &Context<'_>) -> async_graphql::Result<Market> {
        load_market(ctx, &self.0.market).await
    }

    /// The side of the user's order.
    async fn side(&self) -> OrderSide {
        if self.0.side == "BUY" {
            OrderSide::Buy
        } else {
            OrderSide::Sell
        }
    }

    /// The trade price (the maker's price).
    async fn price(&self) -> Decimal {
        Decimal(self.0.price.0)
    }

    /// Base quantity traded.
    async fn quantity(&self) -> Decimal {
        Decimal(self.0.quantity.0)
    }

    /// Fee charged, in `feeAsset`.
    async fn fee(&self) -> Decimal {
        Decimal(self.0.fee.0)
    }

    /// The asset the fee was taken in (the one received).
    async fn fee_asset(&self) -> &str {
        &self.0.fee_asset
    }

    /// Whether the order was the maker or the taker.
    async fn liquidity(&self) -> Liquidity {
        if self.0.liquidity == "MAKER" {
            Liquidity::Maker
        } else {
            Liquidity::Taker
        }
    }

    /// When the trade happened.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

/// A new order.
#[derive(InputObject, Clone)]
pub struct PlaceOrderInput {
    /// Market symbol, e.g. `BTC-USD`.
    market: String,
    /// Buy or sell.
    side: OrderSide,
    /// LIMIT, MARKET or STOP_LIMIT.
    #[graphql(name = "type")]
    order_type: OrderType,
    /// Base quantity, a multiple of the market's lot size. Omit only for a MARKET buy
    /// by `quoteQuantity`.
    quantity: Option<Decimal>,
    /// Limit price, a multiple of the tick size; required for LIMIT and STOP_LIMIT,
    /// refused for MARKET.
    price: Option<Decimal>,
    /// For a MARKET buy: the quote amount to spend instead of a quantity.
    quote_quantity: Option<Decimal>,
    /// For STOP_LIMIT: the last trade price that triggers the order.
    trigger_price: Option<Decimal>,
    /// Default GTC (IOC semantics for MARKET orders, which never rest).
    #[graphql(default_with = "TimeInForce::Gtc")]
    time_in_force: TimeInForce,
    /// Required for GTD: when the order expires.
    expire_at: Option<DateTime>,
    /// Refuse the order (REJECTED) if it would trade on arrival.
    #[graphql(default = false)]
    post_only: bool,
    /// Default EXPIRE_TAKER.
    #[graphql(default_with = "SelfTradePrevention::ExpireTaker")]
    self_trade_prevention: SelfTradePrevention,
    /// Your own id (1 to 64 characters). Reusing it returns the existing order and
    /// changes nothing, so a retried request never places twice.
    client_order_id: Option<String>,
}

impl PlaceOrderInput {
    fn into_new_order(self) -> service::NewOrder {
        service::NewOrder {
            market: self.market,
            side: self.side.into(),
            order_type: match self.order_type {
                OrderType::Limit => order_rules::OrderType::Limit,
                OrderType::Market => order_rules::OrderType::Market,
                OrderType::StopLimit => order_rules::OrderType::StopLimit,
            },
            quantity: self.quantity.map(|d| d.0),
            price: self.price.map(|d| d.0),
            quote_quantity: self.quote_quantity.map(|d| d.0),
            trigger_price: self.trigger_price.map(|d| d.0),
            time_in_force: match self.time_in_force {
                TimeInForce::Gtc => matching::TimeInForce::Gtc,
                TimeInForce::Ioc => matching::TimeInForce::Ioc,
                TimeInForce::Fok => matching::TimeInForce::Fok,
                TimeInForce::Gtd => matching::TimeInForce::Gtd,
            },
            expire_at: self.expire_at.map(|d| d.0),
            post_only: self.post_only,
            self_trade_prevention: match self.self_trade_prevention {
                SelfTradePrevention::ExpireTaker => matching::SelfTradePrevention::ExpireTaker,
                SelfTradePrevention::ExpireMaker => matching::SelfTradePrevention::ExpireMaker,
                SelfTradePrevention::ExpireBoth => matching::SelfTradePrevention::ExpireBoth,
                SelfTradePrevention::None => matching::SelfTradePrevention::None,
            },
            client_order_id: self.client_order_id,
        }
    }
}

/// New values for a resting order; omitted fields stay as they are.
#[derive(InputObject)]
pub struct AmendOrderInput {
    /// New limit price (a multiple of the tick size).
    price: Option<Decimal>,
    /// New total quantity, more than what has already filled.
    quantity: Option<Decimal>,
}

/// What an order would do if placed now.
#[derive(SimpleObject)]
pub struct OrderPreview {
    /// Whether the order would be accepted (false when it would be REJECTED).
    accepted: bool,
    /// Why it would be rejected or its remainder expire.
    reject_reason: Option<String>,
    /// The status it would have right after placement.
    status: OrderStatus,
    /// Base quantity that would fill now.
    estimated_fill_quantity: Decimal,
    /// Volume-weighted price of those fills; null when nothing would fill.
    estimated_average_price: Option<Decimal>,
    /// Fees on those fills, in the asset received.
    estimated_fee: Decimal,
    /// The amount that would be held, in `holdAsset`.
    hold_amount: Decimal,
    /// The asset held (quote for buys, base for sells).
    hold_asset: String,
}

/// Filters for `orders`.
#[derive(InputObject, Default)]
pub struct OrderFilter {
    /// Only this market.
    market: Option<String>,
    /// Only this side.
    side: Option<OrderSide>,
    /// Only this status.
    status: Option<OrderStatus>,
    /// Placed at or after.
    from: Option<DateTime>,
    /// Placed before.
    to: Option<DateTime>,
}

#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// One of the signed-in user's orders; null for an unknown id or another user's
    /// order.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Order>> {
        let viewer = ctx.viewer()?;
        let Ok(id) = parse_id(&id, "order") else {
            return Ok(None);
        };
        Ok(service::find_own(ctx.state(), viewer, id).await?.map(Order))
    }

    /// The signed-in user's orders, newest first. `first` is at most 200.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        filter: Option<OrderFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Connection<String, Order>> {
        let viewer = ctx.viewer()?;
        let page = pagination::page(first, after, last, before)?;
        let filter = filter.unwrap_or_default();
        let filter = service::OrderFilter {
            market: filter.market,
            side: filter.side.map(Into::into),
            status: filter.status.map(|s| status_str(s).to_owned()),
            from: filter.from.map(|d| d.0),
            to: filter.to.map(|d| d.0),
        };
        let mut rows =
            service::list(ctx.state(), viewer, &filter, page.after, page.limit + 1).await?;
        let has_next = rows.len() as u64 > page.limit;
        rows.truncate(page.limit as usize);
        let mut connection = Connection::new(page.after.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter()
                .map(|o| Edge::new(pagination::encode_cursor(o.id), Order(o))),
        );
        Ok(connection)
    }
}

#[derive(Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Places an order; it is matched at once and the rest rests or expires by its
    /// time in force. `INSUFFICIENT_FUNDS` (nothing written) when the funds to hold are
    /// not available; `BAD_USER_INPUT` naming the field for invalid input; `CONFLICT`
    /// for a halted market. A post-only order that would trade, or a FOK order that
    /// cannot fill, comes back REJECTED with `rejectReason`.
    #[graphql(directive = api_key::apply(Some(ApiScope::Trade)))]
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
    ) -> async_graphql::Result<Order> {
        let viewer = ctx.viewer()?;
        let placed = service::place(ctx.state(), viewer, input.into_new_order()).await?;
        Ok(Order(placed.order))
    }

    /// What `placeOrder` would do now, without doing it.
    #[graphql(directive = api_key::apply(Some(ApiScope::Trade)))]
    async fn preview_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
    ) -> async_graphql::Result<OrderPreview> {
        let viewer = ctx.viewer()?;
        let placed = service::preview(ctx.state(), viewer, input.into_new_order()).await?;
        let quantity: rust_decimal::Decimal = placed.fills.iter().map(|f| f.quantity.0).sum();
        let quote: rust_decimal::Decimal =
            placed.fills.iter().map(|f| f.price.0 * f.quantity.0).sum();
        let fee: rust_decimal::Decimal = placed.fills.iter().map(|f| f.fee.0).sum();
        Ok(OrderPreview {
            accepted: placed.order.status != service::status::REJECTED,
            reject_reason: placed.order.reject_reason.clone(),
            status: parse_status(&placed.order.status),
            estimated_fill_quantity: Decimal(quantity),
            estimated_average_price: (!quantity.is_zero())
                .then(|| quote.checked_div(quantity))
                .flatten()
                .map(Decimal),
            estimated_fee: Decimal(fee),
            hold_amount: Decimal(placed.hold),
            hold_asset: placed.order.held_asset,
        })
    }

    /// Changes a resting limit order in place. Lowering only the quantity keeps its
    /// queue priority; any other change loses it, and a price that crosses the book
    /// trades at once. `NOT_FOUND` for another user's order, `CONFLICT` when it no
    /// longer rests, `INSUFFICIENT_FUNDS` when more cannot be held.
    #[graphql(directive = api_key::apply(Some(ApiScope::Trade)))]
    async fn amend_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: AmendOrderInput,
    ) -> async_graphql::Result<Order> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "order")?;
        let change = service::Amendment {
            price: input.price.map(|d| d.0),
            quantity: input.quantity.map(|d| d.0),
        };
        Ok(Order(
            service::amend(ctx.state(), viewer, id, change).await?,
        ))
    }

    /// Cancels an order that is open or untriggered and releases its held funds.
    /// `NOT_FOUND` for an unknown id or another user's order; `CONFLICT` when it is
    /// already done.
    #[graphql(directive = api_key::apply(Some(ApiScope::Trade)))]
    async fn cancel_order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Order> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "order")?;
        Ok(Order(service::cancel(ctx.state(), viewer, id).await?))
    }

    /// Cancels every open or untriggered order of the signed-in user, in one market or
    /// all; returns the cancelled orders.
    #[graphql(directive = api_key::apply(Some(ApiScope::Trade)))]
    async fn cancel_all_orders(
        &self,
        ctx: &Context<'_>,
        market: Option<String>,
    ) -> async_graphql::Result<Vec<Order>> {
        let viewer = ctx.viewer()?;
        let cancelled = service::cancel_all(ctx.state(), viewer, market).await?;
        Ok(cancelled.into_iter().map(Order).collect())
    }
}
