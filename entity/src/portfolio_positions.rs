use sea_orm::entity::prelude::*;

use crate::Amount;

/// A user's running position in one asset under one cost-basis method.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "portfolio_positions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// `FIFO`, `LIFO`, `HIFO` or `AVERAGE_COST`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub method: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub asset: String,
    /// Quantity tracked (what the user holds, once tracking covers their history).
    pub quantity: Amount,
    /// Known cost of the quantity held, in the cost currency.
    pub cost: Amount,
    /// Quantity held whose cost is unknown.
    pub unknown_quantity: Amount,
    /// Realized P&L so far (known gains only).
    pub realized_pnl: Amount,
    /// Quantity disposed of whose gain is unknown.
    pub unknown_realized: Amount,
    /// AVERAGE_COST: since when the pool has been non-empty.
    pub since: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
