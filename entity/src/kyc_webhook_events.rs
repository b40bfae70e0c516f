use sea_orm::entity::prelude::*;

/// A provider webhook event already processed: the key makes deliveries idempotent.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kyc_webhook_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: String,
    pub application_id: Uuid,
    /// What the provider said: `VERIFIED` or `REJECTED`.
    pub result: String,
    /// What it did here: `APPLIED`, `STALE` (older than the newest decision) or `HELD`.
    pub outcome: String,
    pub occurred_at: DateTimeUtc,
    pub received_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
