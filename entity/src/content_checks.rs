use sea_orm::entity::prelude::*;

/// One run of the automated compliance checks over one version, written once.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "content_checks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub content_id: Uuid,
    pub version: i32,
    /// SHA-256 of the rules file that ran, so any result can be traced to its rules.
    pub rules_fingerprint: String,
    /// 0 to 100.
    pub risk_score: i32,
    pub blocked: bool,
    pub senior_review_required: bool,
    /// The findings as a JSON array.
    #[sea_orm(column_type = "Text")]
    pub findings: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
