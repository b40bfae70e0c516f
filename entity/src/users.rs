use sea_orm::entity::prelude::*;

use crate::RoleSet;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Normalised (trimmed, lower-case) so that uniqueness matches what users mean.
    #[sea_orm(unique)]
    pub email: String,
    pub display_name: String,
    /// An argon2id PHC string; never leaves the service layer.
    pub password_hash: String,
    /// Comma-separated role names beyond the implied `USER` (see [`RoleSet`]).
    pub roles: String,
    pub two_factor_enabled: bool,
    pub kyc_tier: String,
    pub anti_phishing_code: Option<String>,
    pub password_changed_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Set when the account was erased: personal data is gone, sign-in impossible.
    pub deleted_at: Option<DateTimeUtc>,
    /// `BASIC`, `STANDARD` or `PRO`; null means the configured default tier.
    pub rate_limit_tier: Option<String>,
}

impl Model {
    pub fn role_set(&self) -> RoleSet {
        RoleSet::parse(&self.roles)
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::sessions::Entity")]
    Sessions,
}

impl Related<super::sessions::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Sessions.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
