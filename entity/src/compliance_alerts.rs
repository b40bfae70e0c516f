use sea_orm::entity::prelude::*;

/// A transaction-monitoring rule hit, queued for a compliance officer with its evidence.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "compliance_alerts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// `LARGE_AMOUNT`, `RAPID_IN_OUT` or `STRUCTURING`.
    pub rule: String,
    /// What the hit adds to the user's risk score.
    pub score: i32,
    /// JSON: the amounts, times and thresholds that made the rule fire.
    pub evidence: String,
    /// `OPEN`, `DISMISSED` or `ESCALATED`.
    pub status: String,
    pub subject_type: String,
    pub subject_id: String,
    pub resolved_by: Option<Uuid>,
    pub resolution_note: Option<String>,
    pub created_at: DateTimeUtc,
    pub resolved_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
