use sea_orm::entity::prelude::*;

use crate::Amount;

/// One leg of a journal entry: a signed change to one ledger account.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "postings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub entry_id: Uuid,
    pub account_id: Uuid,
    pub asset: String,
    pub amount: Amount,
    /// The account's balance right after this posting, for statements.
    pub balance_after: Amount,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
