//! Authenticating requests: from an access token to the [`Viewer`] it acts for.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, IntoActiveModel};

use crate::auth::Viewer;
use crate::error::ApiError;
use crate::state::AppState;
use entity::{sessions, users};

/// How stale `lastSeenAt` may get before a request refreshes it. Writing on every
/// request would turn every read into a write.
const LAST_SEEN_GRANULARITY: chrono::Duration = chrono::Duration::seconds(60);

/// Resolves a bearer access token. Every failure answers the same way, so a caller
/// learns nothing about why a token was refused; the reason goes to debug logs.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Viewer, ApiError> {
    let refused = || ApiError::Unauthenticated("invalid or expired access token".into());
    let claims = state.jwt.verify(token).map_err(|error| {
        tracing::debug!(%error, "access token refused");
        refused()
    })?;
    let Some((session, Some(user))) = sessions::Entity::find_by_id(claims.sid)
        .find_also_related(users::Entity)
        .one(state.db.conn())
        .await?
    else {
        return Err(refused());
    };
    let now = Utc::now();
    if session.user_id != claims.sub || !session.is_active(now) {
        tracing::debug!(session = %session.id, "access token of an ended session");
        return Err(refused());
    }
    if now - session.last_seen_at > LAST_SEEN_GRANULARITY {
        touch_session(state, session.clone(), now);
    }
    Ok(Viewer::new(user, session.id))
}

/// Records activity off the request path: a failure here must not fail the request.
fn touch_session(state: &AppState, session: sessions::Model, now: chrono::DateTime<Utc>) {
    let db = state.db.clone();
    tokio::spawn(async move {
        let mut active = session.into_active_model();
        active.last_seen_at = Set(now);
        if let Err(error) = active.update(db.conn()).await {
            tracing::warn!(%error, "could not record session activity");
        }
    });
}
