//! What a resolver knows about its request, and the guards built on it.

use async_graphql::Context;
use entity::Role;

use crate::auth::Viewer;
use crate::error::ApiError;
use crate::service::ClientInfo;
use crate::state::AppState;

/// Attached to every request (HTTP) or connection (WebSocket).
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    pub viewer: Option<Viewer>,
    pub client: ClientInfo,
}

pub trait ContextExt<'a> {
    fn state(&self) -> &'a AppState;
    fn request(&self) -> &'a RequestContext;
    /// The signed-in viewer, or `UNAUTHENTICATED`.
    fn viewer(&self) -> Result<&'a Viewer, ApiError>;
    /// The signed-in viewer holding `role`, or `UNAUTHENTICATED` / `FORBIDDEN`.
    fn viewer_with_role(&self, role: Role) -> Result<&'a Viewer, ApiError>;
}

/// Used only if a resolver runs on a schema built without data (SDL export never runs
/// resolvers); answering `INTERNAL` beats a panic.
static NO_REQUEST: std::sync::LazyLock<RequestContext> = std::sync::LazyLock::new(Default::default);

impl<'a> ContextExt<'a> for Context<'a> {
    fn state(&self) -> &'a AppState {
        self.data_unchecked::<AppState>()
    }

    fn request(&self) -> &'a RequestContext {
        self.data_opt::<RequestContext>().unwrap_or(&NO_REQUEST)
    }

    fn viewer(&self) -> Result<&'a Viewer, ApiError> {
        self.request().viewer.as_ref().ok_or_else(|| {
            ApiError::Unauthenticated("sign in first: send a Bearer access token".into())
        })
    }

    fn viewer_with_role(&self, role: Role) -> Result<&'a Viewer, ApiError> {
        let viewer = self.viewer()?;
        if viewer.has_role(role) {
            Ok(viewer)
        } else {
            Err(ApiError::Forbidden(format!("this needs the {role} role")))
        }
    }
}
