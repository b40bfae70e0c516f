use std::fmt;

use sea_orm::entity::prelude::*;

use crate::api_scope::ScopeSet;

/// An API key. The secret is never stored: only its SHA-256 (`secret_hash`), and for a
/// key that signs requests the salt its secret is derived from with the server's key.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub label: String,
    /// The public part (`tgk_…`), sent alone as `X-API-Key` by signing clients.
    #[sea_orm(unique)]
    pub prefix: String,
    /// Hex SHA-256 of the whole secret.
    pub secret_hash: String,
    /// Present only for `require_signature` keys (see `auth::api_keys`).
    pub signing_salt: Option<String>,
    /// Comma-separated scope names (see [`ScopeSet`]).
    pub scopes: String,
    /// Comma-separated CIDR ranges; empty means any address.
    pub allowed_ips: String,
    pub require_signature: bool,
    pub signature_window_secs: i32,
    pub created_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    /// Accurate to about a minute: written at most once a minute per key.
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

impl Model {
    pub fn scope_set(&self) -> ScopeSet {
        ScopeSet::parse(&self.scopes)
    }

    pub fn allowed_ip_list(&self) -> Vec<String> {
        self.allowed_ips
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn is_usable(&self, now: DateTimeUtc) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// Hash and salt stay out of logs and panic messages.
impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("prefix", &self.prefix)
            .field("secret_hash", &"***")
            .field("signing_salt", &self.signing_salt.as_ref().map(|_| "***"))
            .field("scopes", &self.scopes)
            .field("require_signature", &self.require_signature)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::users::Entity",
        from = "Column::UserId",
        to = "super::users::Column::Id",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::users::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
