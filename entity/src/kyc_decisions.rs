use sea_orm::entity::prelude::*;

/// One step of an application's history: who (user, screening, provider or officer)
/// moved it to which status, and why.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kyc_decisions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub application_id: Uuid,
    pub status: String,
    /// `APPLICANT`, `SCREENING`, `PROVIDER` or `OFFICER`.
    pub source: String,
    pub actor_id: Option<Uuid>,
    pub note: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
