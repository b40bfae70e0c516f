use sea_orm::entity::prelude::*;

use crate::Amount;

/// Something the user should see in their panel (a price alert that fired, ...).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// What kind of notification: `PRICE_ALERT`.
    pub kind: String,
    pub title: String,
    pub body: String,
    /// The price alert that fired, for `PRICE_ALERT` notifications.
    pub alert_id: Option<Uuid>,
    pub market: Option<String>,
    pub price: Option<Amount>,
    pub created_at: DateTimeUtc,
    pub read_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
