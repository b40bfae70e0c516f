use sea_orm::entity::prelude::*;

/// One version of a piece's text, written once and never changed.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "content_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub content_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i32,
    pub title: String,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    pub topic: String,
    pub language: String,
    /// SHA-256 (hex) of the canonical encoding of title, body, topic and language.
    pub content_hash: String,
    pub editor_id: Uuid,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
