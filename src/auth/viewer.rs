use entity::{Role, RoleSet};
use uuid::Uuid;

/// The signed-in user a request acts for, with the session it came through.
///
/// Built once per request (or per WebSocket connection) from the access token and the
/// session and user rows, so resolvers never re-read them.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub user: entity::users::Model,
    pub session_id: Uuid,
    pub roles: RoleSet,
}

impl Viewer {
    pub fn new(user: entity::users::Model, session_id: Uuid) -> Self {
        let roles = user.role_set();
        Viewer {
            user,
            session_id,
            roles,
        }
    }

    pub fn user_id(&self) -> Uuid {
        self.user.id
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(role)
    }
}
