use sea_orm::entity::prelude::*;

use crate::Amount;

/// A deposit or withdrawal as transaction monitoring saw it, with its USD value then.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "monitored_transfers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// `DEPOSIT` or `WITHDRAWAL`.
    pub direction: String,
    pub asset: String,
    pub amount: Amount,
    /// `None` when the asset had no USD price at the time.
    pub usd_value: Option<Amount>,
    /// The ledger entry or withdrawal it is about.
    pub subject_id: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
