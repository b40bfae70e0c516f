use sea_orm::entity::prelude::*;

use crate::Amount;

/// A piece of a lot consumed by a disposal: one row of a tax report.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "portfolio_realized")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    pub method: String,
    pub quantity: Amount,
    pub acquired_at: DateTimeUtc,
    pub disposed_at: DateTimeUtc,
    /// In the cost currency; `None` when the disposal had no known value.
    pub proceeds: Option<Amount>,
    /// In the cost currency; `None` for an unknown-cost lot.
    pub cost: Option<Amount>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
