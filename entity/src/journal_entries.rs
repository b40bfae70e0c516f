use sea_orm::entity::prelude::*;

use crate::Amount;

/// One balanced movement of funds; its postings sum to zero per asset.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "journal_entries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// What happened: `DEPOSIT`, `WITHDRAWAL`, `TRADE`, ...
    pub kind: String,
    /// The caller's idempotency reference, unique per kind.
    pub reference: Option<String>,
    /// The user the movement is about, if any.
    pub user_id: Option<Uuid>,
    /// The headline asset and signed amount, as the user sees the movement.
    pub asset: String,
    pub amount: Amount,
    pub description: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
