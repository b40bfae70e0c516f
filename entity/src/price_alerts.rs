use sea_orm::entity::prelude::*;

use crate::Amount;

/// A user's price alert on one market: fires when a trade moves the last price across
/// `price` in the alert's direction.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "price_alerts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub market: String,
    /// `ABOVE` or `BELOW`.
    pub condition: String,
    pub price: Amount,
    /// `price` in whole ticks of the market, rounded so that it fires only once the
    /// price is really reached (up for ABOVE, down for BELOW).
    pub threshold_ticks: i64,
    pub recurring: bool,
    pub cooldown_seconds: i32,
    /// Whether the alert can still fire: a one-shot alert disarms when it fires.
    pub armed: bool,
    /// A recurring alert that fired stays quiet until then.
    pub cooldown_until: Option<DateTimeUtc>,
    pub last_triggered_at: Option<DateTimeUtc>,
    pub trigger_count: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
