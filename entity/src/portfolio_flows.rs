use sea_orm::entity::prelude::*;

use crate::Amount;

/// Money in or out of a user's account from outside (deposit positive, withdrawal
/// negative): the cash flows of money-weighted and time-weighted returns.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "portfolio_flows")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    pub quantity: Amount,
    pub at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
