use sea_orm::entity::prelude::*;

use crate::Amount;

/// One hour of a market's trades: open, high, low, close and base volume.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "price_candles")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub market: String,
    /// Start of the hour (UTC).
    #[sea_orm(primary_key, auto_increment = false)]
    pub bucket: DateTimeUtc,
    pub open: Amount,
    pub high: Amount,
    pub low: Amount,
    pub close: Amount,
    pub volume: Amount,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
