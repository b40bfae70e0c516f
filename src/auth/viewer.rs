use entity::{ApiScope, Role, RoleSet, ScopeSet};
use uuid::Uuid;

/// The signed-in user a request acts for, with the session or API key it came through.
///
/// Built once per request (or per WebSocket connection) from the access token and the
/// session and user rows, or from an API key and its user, so resolvers never re-read
/// them.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub user: entity::users::Model,
    /// The session of an access token; nil for a request made with an API key.
    pub session_id: Uuid,
    pub roles: RoleSet,
    /// Set when the request authenticated with an API key: what it may do.
    pub api_key: Option<ApiKeyAccess>,
}

/// The API key a request authenticated with.
#[derive(Clone, Debug)]
pub struct ApiKeyAccess {
    pub key: entity::api_keys::Model,
    pub scopes: ScopeSet,
}

impl Viewer {
    pub fn new(user: entity::users::Model, session_id: Uuid) -> Self {
        let roles = user.role_set();
        Viewer {
            user,
            session_id,
            roles,
            api_key: None,
        }
    }

    /// A viewer acting through an API key: no session, only the key's scopes.
    pub fn with_api_key(user: entity::users::Model, key: entity::api_keys::Model) -> Self {
        let roles = user.role_set();
        let scopes = key.scope_set();
        Viewer {
            user,
            session_id: Uuid::nil(),
            roles,
            api_key: Some(ApiKeyAccess { key, scopes }),
        }
    }

    pub fn user_id(&self) -> Uuid {
        self.user.id
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(role)
    }

    /// Whether the request may act with `scope`: always with a session, only with that
    /// scope through an API key.
    pub fn may(&self, scope: ApiScope) -> bool {
        self.api_key
            .as_ref()
            .is_none_or(|access| access.scopes.contains(scope))
    }

    /// True when the request came with a session (an access token), not an API key.
    pub fn is_session(&self) -> bool {
        self.api_key.is_none()
    }
}
