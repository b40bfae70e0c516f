use sea_orm::entity::prelude::*;

/// A WebAuthn ceremony in progress. Kept in the database so that any replica can finish
/// it; deleted when used, and useless after `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webauthn_challenges")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// `REGISTRATION` or `AUTHENTICATION`.
    pub purpose: String,
    /// The server-side ceremony state (JSON), holding the challenge.
    pub state: String,
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
