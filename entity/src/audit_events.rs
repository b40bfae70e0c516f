use sea_orm::entity::prelude::*;

/// One audit event: who did what to which subject, chained to the event before it in
/// the same chain by `prev_hash`, so a changed or removed row breaks the chain.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub chain: String,
    pub chain_seq: i64,
    pub action: String,
    pub actor_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub subject_type: String,
    pub subject_id: String,
    /// JSON, stored exactly as it was hashed.
    pub details: String,
    pub created_at: DateTimeUtc,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
