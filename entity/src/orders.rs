use sea_orm::entity::prelude::*;

use crate::Amount;

/// An order, open or done. Enum columns hold the API's upper-case names.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub market: String,
    /// `BUY` or `SELL`.
    pub side: String,
    /// `LIMIT`, `MARKET` or `STOP_LIMIT`.
    pub order_type: String,
    pub status: String,
    /// True while the order rests on the book (OPEN or PARTIALLY_FILLED).
    pub is_open: bool,
    pub price: Option<Amount>,
    /// `price / tick_size`, the book's exact sort key.
    pub price_ticks: Option<i64>,
    pub trigger_price: Option<Amount>,
    /// `trigger_price / tick_size`, to find triggered stops exactly.
    pub trigger_ticks: Option<i64>,
    pub quantity: Option<Amount>,
    pub quote_quantity: Option<Amount>,
    pub filled_quantity: Amount,
    /// Σ price × quantity over the order's fills.
    pub filled_quote: Amount,
    pub fee: Amount,
    /// The asset held for the order (quote for buys, base for sells) and how much of
    /// it is still held.
    pub held_asset: String,
    pub held: Amount,
    pub time_in_force: String,
    pub expire_at: Option<DateTimeUtc>,
    pub post_only: bool,
    pub self_trade_prevention: String,
    pub client_order_id: Option<String>,
    pub reject_reason: Option<String>,
    /// Time priority within a price level; a new one when an amendment loses priority.
    pub sequence: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
