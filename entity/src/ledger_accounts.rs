use sea_orm::entity::prelude::*;

use crate::Amount;

/// One balance in the double-entry ledger: a user's available or locked funds of an
/// asset, or a system account (fee income, external clearing) owned by the nil UUID.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub owner_id: Uuid,
    pub asset: String,
    /// `AVAILABLE`, `LOCKED`, `FEE_INCOME` or `EXTERNAL`.
    pub kind: String,
    /// Kept equal to the sum of this account's postings, in the same transaction.
    pub balance: Amount,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
