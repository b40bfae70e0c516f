use sea_orm::entity::prelude::*;

/// A piece of advisor content, with a copy of its current version's text.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "contents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub author_id: Uuid,
    /// A `ContentStatus` name (`DRAFT`, `IN_REVIEW`, ...).
    pub status: String,
    pub title: String,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    pub topic: String,
    pub language: String,
    /// The current version number (1, 2, ...).
    pub version: i32,
    /// The compliance officer who last decided on the piece.
    pub reviewer_id: Option<Uuid>,
    /// The version approved and the SHA-256 of its text; cleared when the piece goes
    /// back to DRAFT.
    pub approved_version: Option<i32>,
    pub approved_hash: Option<String>,
    /// The latest reviewer's note (changes requested) or reason (rejected).
    #[sea_orm(column_type = "Text", nullable)]
    pub review_note: Option<String>,
    /// From the latest automated check of the current version; null until checked.
    pub risk_score: Option<i32>,
    pub senior_review_required: bool,
    /// When the piece was last submitted (its age in the review queue).
    pub submitted_at: Option<DateTimeUtc>,
    pub published_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
