use sea_orm::entity::prelude::*;

/// A WebAuthn credential (passkey) registered by a user.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "passkeys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    /// The authenticator's credential id, base64url: unique across all users.
    #[sea_orm(unique)]
    pub credential_id: String,
    /// The verified public key and counters as webauthn-rs serialises them (JSON).
    pub credential: String,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
