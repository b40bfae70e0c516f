//! Authenticating requests: from an access token to the [`Viewer`] it acts for.

use std::collections::HashMap;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
};
use uuid::Uuid;

use super::gathered_reads::Gathered;
use crate::auth::Viewer;
use crate::db::Db;
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
    let Some((session, user)) = state.session_reads.get(claims.sid).await? else {
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

/// Most sessions read in one query.
const SESSIONS_PER_READ: usize = 64;

/// Sessions and their users by session id, read for many requests at once
/// (`service::gathered_reads`).
pub type SessionReads = Gathered<Uuid, (sessions::Model, users::Model)>;

/// Starts the session reads on `db`.
pub fn session_reads(db: &Db) -> SessionReads {
    let db = db.clone();
    Gathered::start(SESSIONS_PER_READ, move |ids| {
        let db = db.clone();
        async move { read_sessions(&db, ids).await }
    })
}

/// The sessions among `ids` that exist, with their users.
async fn read_sessions(
    db: &Db,
    ids: Vec<Uuid>,
) -> Result<HashMap<Uuid, (sessions::Model, users::Model)>, ApiError> {
    let rows = sessions::Entity::find()
        .filter(sessions::Column::Id.is_in(ids))
        .find_also_related(users::Entity)
        .all(db.conn())
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(session, user)| Some((session.id, (session, user?))))
        .collect())
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
