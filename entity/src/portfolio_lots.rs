use sea_orm::entity::prelude::*;

use crate::Amount;

/// What is left of one acquisition under one lot method (FIFO, LIFO or HIFO).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "portfolio_lots")]
pub struct Model {
    /// Time-ordered: the acquisition order FIFO and LIFO follow.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    /// `FIFO`, `LIFO` or `HIFO`.
    pub method: String,
    pub quantity: Amount,
    /// Total cost of `quantity` in the cost currency; `None` when unknown.
    pub cost: Option<Amount>,
    /// Unit cost in 1e-8 steps (HIFO order in SQL); `i64::MIN` for unknown cost.
    pub cost_rank: i64,
    pub acquired_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
