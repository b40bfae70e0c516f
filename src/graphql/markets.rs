//! Assets and markets: public reads and ADMIN changes.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::access::api_key;
use super::context::ContextExt;
use super::scalars::{DateTime, Decimal};
use crate::db::Db;
use crate::error::ApiError;
use crate::service::{market_data, markets};
use entity::Role;

/// Loads assets by symbol, batching the lookups of one request into one query.
pub struct AssetLoader(pub Db);

impl Loader<String> for AssetLoader {
    type Value = entity::assets::Model;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = entity::assets::Entity::find()
            .filter(entity::assets::Column::Symbol.is_in(keys.iter().cloned()))
            .all(self.0.conn())
            .await
            .map_err(|e| Arc::new(ApiError::from(e)))?;
        Ok(rows.into_iter().map(|a| (a.symbol.clone(), a)).collect())
    }
}

pub type AssetDataLoader = DataLoader<AssetLoader>;

pub(crate) async fn load_asset(ctx: &Context<'_>, symbol: &str) -> async_graphql::Result<Asset> {
    let loader = ctx.data_unchecked::<AssetDataLoader>();
    match loader.load_one(symbol.to_owned()).await {
        Ok(Some(asset)) => Ok(Asset(asset)),
        Ok(None) => Err(ApiError::internal(anyhow::anyhow!("asset {symbol} is missing")).into()),
        Err(error) => {
            Err(ApiError::internal(anyhow::anyhow!("asset lookup failed: {error}")).into())
        }
    }
}

/// A currency or token.
pub struct Asset(pub entity::assets::Model);

/// A currency or token that balances are held in.
#[Object]
impl Asset {
    /// Ticker symbol, e.g. `BTC`.
    async fn symbol(&self) -> &str {
        &self.0.symbol
    }

    /// Human name, e.g. `Bitcoin`.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// Decimal places amounts of this asset may carry; more is `BAD_USER_INPUT`.
    async fn precision(&self) -> i32 {
        self.0.precision.into()
    }
}

/// Whether a market accepts orders.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum MarketStatus {
    /// Orders are accepted and matched.
    Trading,
    /// New orders are refused; existing ones can be cancelled.
    Halted,
}

/// A trading pair: the base asset priced in the quote asset.
pub struct Market(pub entity::markets::Model);

/// A trading pair: the base asset priced in the quote asset.
#[Object]
impl Market {
    /// `BASE-QUOTE`, e.g. `BTC-USD`.
    async fn symbol(&self) -> &str {
        &self.0.symbol
    }

    /// The asset bought and sold.
    async fn base_asset(&self, ctx: &Context<'_>) -> async_graphql::Result<Asset> {
        load_asset(ctx, &self.0.base_asset).await
    }

    /// The asset prices are quoted in.
    async fn quote_asset(&self, ctx: &Context<'_>) -> async_graphql::Result<Asset> {
        load_asset(ctx, &self.0.quote_asset).await
    }

    /// Prices are multiples of this.
    async fn tick_size(&self) -> Decimal {
        Decimal(self.0.tick_size.0)
    }

    /// Quantities are multiples of this.
    async fn lot_size(&self) -> Decimal {
        Decimal(self.0.lot_size.0)
    }

    /// The smallest order value (price × quantity) accepted, in the quote asset.
    async fn min_notional(&self) -> Decimal {
        Decimal(self.0.min_notional.0)
    }

    /// Fee for orders that add liquidity, in basis points of the trade value.
    async fn maker_fee_bps(&self) -> i32 {
        self.0.maker_fee_bps
    }

    /// Fee for orders that take liquidity, in basis points of the trade value.
    async fn taker_fee_bps(&self) -> i32 {
        self.0.taker_fee_bps
    }

    /// Whether the market accepts orders.
    async fn status(&self) -> MarketStatus {
        if self.0.status == markets::HALTED {
            MarketStatus::Halted
        } else {
            MarketStatus::Trading
        }
    }

    /// The price of the latest trade; null before the first trade.
    async fn last_price(&self) -> Option<Decimal> {
        self.0.last_price.map(|p| Decimal(p.0))
    }

    /// When the market was listed.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// Relative change of the trade price over the last 24 hours, as a fraction
    /// (`0.05` is +5%); null without trades in that window.
    #[graphql(name = "change24h")]
    async fn change24h(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Decimal>> {
        let stats = market_data::day_stats(ctx.state().db.conn(), &self.0.symbol).await?;
        Ok(stats.change.map(Decimal))
    }

    /// Base quantity traded over the last 24 hours.
    #[graphql(name = "volume24h")]
    async fn volume24h(&self, ctx: &Context<'_>) -> async_graphql::Result<Decimal> {
        let stats = market_data::day_stats(ctx.state().db.conn(), &self.0.symbol).await?;
        Ok(Decimal(stats.volume))
    }

    /// Resting orders aggregated by price: the best `depth` levels per side (1 to 100,
    /// default 20).
    async fn order_book(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] depth: i32,
    ) -> async_graphql::Result<OrderBook> {
        if !(1..=100).contains(&depth) {
            return Err(ApiError::bad_input("depth", "must be between 1 and 100").into());
        }
        let conn = ctx.state().db.conn();
        let bids = market_data::side_levels(conn, &self.0.symbol, "BUY", depth as usize).await?;
        let asks = market_data::side_levels(conn, &self.0.symbol, "SELL", depth as usize).await?;
        Ok(OrderBook {
            bids: bids.into_iter().map(PriceLevel::from).collect(),
            asks: asks.into_iter().map(PriceLevel::from).collect(),
        })
    }

    /// The latest trades, newest first (1 to 100, default 50).
    async fn recent_trades(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] limit: i32,
    ) -> async_graphql::Result<Vec<PublicTrade>> {
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_input("limit", "must be between 1 and 100").into());
        }
        let trades =
            market_data::recent_trades(ctx.state().db.conn(), &self.0.symbol, limit as u64).await?;
        Ok(trades.into_iter().map(PublicTrade).collect())
    }
}

/// The book of a market, aggregated by price level.
#[derive(SimpleObject)]
pub struct OrderBook {
    /// Buy orders, highest price first.
    bids: Vec<PriceLevel>,
    /// Sell orders, lowest price first.
    asks: Vec<PriceLevel>,
}

/// All resting orders at one price.
#[derive(SimpleObject)]
pub struct PriceLevel {
    /// The price.
    price: Decimal,
    /// Total remaining base quantity at this price.
    quantity: Decimal,
    /// How many orders rest at this price.
    orders: u32,
}

impl From<market_data::Level> for PriceLevel {
    fn from(level: market_data::Level) -> Self {
        PriceLevel {
            price: Decimal(level.price),
            quantity: Decimal(level.quantity),
            orders: level.orders,
        }
    }
}

/// A trade in a market, as anyone may see it (no owners).
pub struct PublicTrade(entity::fills::Model);

/// A trade in a market, as anyone may see it (no owners).
#[Object]
impl PublicTrade {
    /// The trade's id.
    async fn id(&self) -> ID {
        ID(self.0.trade_id.to_string())
    }

    /// The price (the resting order's price).
    async fn price(&self) -> Decimal {
        Decimal(self.0.price.0)
    }

    /// Base quantity traded.
    async fn quantity(&self) -> Decimal {
        Decimal(self.0.quantity.0)
    }

    /// The side of the order that took liquidity: BUY when a buyer lifted an ask.
    async fn taker_side(&self) -> super::orders::OrderSide {
        if self.0.side == "BUY" {
            super::orders::OrderSide::Buy
        } else {
            super::orders::OrderSide::Sell
        }
    }

    /// When it happened.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

#[derive(Default)]
pub struct MarketQuery;

#[Object]
impl MarketQuery {
    /// Every asset, by symbol. Public.
    #[graphql(directive = api_key::apply(None))]
    async fn assets(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Asset>> {
        let list = markets::list_assets(ctx.state().db.conn()).await?;
        Ok(list.into_iter().map(Asset).collect())
    }

    /// Every market, by symbol. Public.
    #[graphql(directive = api_key::apply(None))]
    async fn markets(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Market>> {
        let list = markets::list_markets(ctx.state().db.conn()).await?;
        Ok(list.into_iter().map(Market).collect())
    }

    /// One market by symbol (case-insensitive), or null when there is none. Public.
    #[graphql(directive = api_key::apply(None))]
    async fn market(
        &self,
        ctx: &Context<'_>,
        symbol: String,
    ) -> async_graphql::Result<Option<Market>> {
        Ok(markets::find_market(ctx.state().db.conn(), &symbol)
            .await?
            .map(Market))
    }
}

/// A new asset.
#[derive(InputObject)]
pub struct CreateAssetInput {
    /// 2 to 16 letters or digits; stored upper-case.
    symbol: String,
    /// 1 to 64 characters.
    name: String,
    /// Decimal places, 0 to 18.
    precision: i32,
}

/// A new market between two existing assets.
#[derive(InputObject)]
pub struct CreateMarketInput {
    /// Symbol of the asset traded.
    base_asset: String,
    /// Symbol of the asset prices are in.
    quote_asset: String,
    /// Price increment, positive, within the quote asset's precision.
    tick_size: Decimal,
    /// Quantity increment, positive, within the base asset's precision.
    lot_size: Decimal,
    /// Smallest order value in the quote asset; zero for none.
    min_notional: Decimal,
    /// Maker fee in basis points (0 to 1000).
    #[graphql(default = 10)]
    maker_fee_bps: i32,
    /// Taker fee in basis points (0 to 1000).
    #[graphql(default = 20)]
    taker_fee_bps: i32,
}

#[derive(Default)]
pub struct MarketMutation;

#[Object]
impl MarketMutation {
    /// Lists a new asset. ADMIN only; `CONFLICT` if the symbol exists.
    async fn create_asset(
        &self,
        ctx: &Context<'_>,
        input: CreateAssetInput,
    ) -> async_graphql::Result<Asset> {
        let viewer = ctx.viewer_with_role(Role::Admin)?;
        let asset = markets::create_asset(
            ctx.state(),
            viewer,
            markets::NewAsset {
                symbol: input.symbol,
                name: input.name,
                precision: input.precision,
            },
        )
        .await?;
        Ok(Asset(asset))
    }

    /// Opens a new market `BASE-QUOTE`. ADMIN only; `CONFLICT` if it exists.
    async fn create_market(
        &self,
        ctx: &Context<'_>,
        input: CreateMarketInput,
    ) -> async_graphql::Result<Market> {
        let viewer = ctx.viewer_with_role(Role::Admin)?;
        let market = markets::create_market(
            ctx.state(),
            viewer,
            markets::NewMarket {
                base_asset: input.base_asset,
                quote_asset: input.quote_asset,
                tick_size: input.tick_size.0,
                lot_size: input.lot_size.0,
                min_notional: input.min_notional.0,
                maker_fee_bps: input.maker_fee_bps,
                taker_fee_bps: input.taker_fee_bps,
            },
        )
        .await?;
        Ok(Market(market))
    }

    /// Stops new orders in a market. ADMIN only; `NOT_FOUND` for an unknown market.
    async fn halt_market(
        &self,
        ctx: &Context<'_>,
        symbol: String,
    ) -> async_graphql::Result<Market> {
        let viewer = ctx.viewer_with_role(Role::Admin)?;
        Ok(Market(
            markets::set_halted(ctx.state(), viewer, &symbol, true).await?,
        ))
    }

    /// Accepts orders in a halted market again. ADMIN only.
    async fn resume_market(
        &self,
        ctx: &Context<'_>,
        symbol: String,
    ) -> async_graphql::Result<Market> {
        let viewer = ctx.viewer_with_role(Role::Admin)?;
        Ok(Market(
            markets::set_halted(ctx.state(), viewer, &symbol, false).await?,
        ))
    }
}
