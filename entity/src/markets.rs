use sea_orm::entity::prelude::*;

use crate::Amount;

/// A trading pair such as `BTC-USD`: base asset priced in the quote asset.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "markets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub symbol: String,
    pub base_asset: String,
    pub quote_asset: String,
    pub tick_size: Amount,
    pub lot_size: Amount,
    pub min_notional: Amount,
    pub maker_fee_bps: i32,
    pub taker_fee_bps: i32,
    /// `TRADING` or `HALTED`.
    pub status: String,
    pub last_price: Option<Amount>,
    /// The next order priority number; taken under the market's row lock.
    pub next_sequence: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
