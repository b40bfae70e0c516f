use sea_orm::entity::prelude::*;

use crate::Amount;

/// One side of a trade: each trade has a maker fill and a taker fill sharing `trade_id`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "fills")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub trade_id: Uuid,
    pub market: String,
    pub side: String,
    pub price: Amount,
    pub quantity: Amount,
    pub fee: Amount,
    pub fee_asset: String,
    /// `MAKER` or `TAKER`.
    pub liquidity: String,
    pub created_at: DateTimeUtc,
    /// The quote asset's price in the cost currency when the fill happened (1 for a
    /// market quoted in it; `None` when it had none), so P&L values the fill as it was
    /// whenever it is folded in.
    pub cost_rate: Option<Amount>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
