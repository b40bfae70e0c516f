//! Sessions: issuing token pairs, rotating refresh tokens, listing and revoking.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction,
    EntityTrait, QueryFilter, QueryOrder,
};
use uuid::Uuid;

use super::ClientInfo;
use crate::auth::{tokens, Viewer};
use crate::error::ApiError;
use crate::state::AppState;
use entity::{refresh_tokens, sessions, users};

/// What a successful login, registration or refresh hands back.
#[derive(Debug)]
pub struct AuthTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
    pub user: users::Model,
}

/// Why a session ended; stored for the user's security history.
pub mod reason {
    pub const LOGOUT: &str = "logout";
    pub const REVOKED: &str = "revoked";
    pub const REFRESH_REUSE: &str = "refresh_token_reuse";
    pub const PASSWORD_CHANGED: &str = "password_changed";
}

/// Starts a session for `user` inside the caller's transaction and returns its tokens.
pub async fn start(
    state: &AppState,
    txn: &DatabaseTransaction,
    user: users::Model,
    client: &ClientInfo,
) -> Result<AuthTokens, ApiError> {
    let now = Utc::now();
    let session = sessions::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user.id),
        device: Set(describe_device(&client.user_agent)),
        user_agent: Set(truncate(&client.user_agent, 512)),
        ip: Set(truncate(&client.ip, 64)),
        created_at: Set(now),
        last_seen_at: Set(now),
        expires_at: Set(now + state.config.refresh_token_ttl),
        revoked_at: Set(None),
        revoked_reason: Set(None),
    }
    .insert(txn)
    .await?;
    let refresh_token = issue_refresh_token(txn, session.id, now).await?;
    let (access_token, expires_at) = state.jwt.issue(user.id, session.id, now)?;
    Ok(AuthTokens {
        access_token,
        refresh_token,
        expires_at,
        user,
    })
}

async fn issue_refresh_token(
    txn: &DatabaseTransaction,
    session_id: Uuid,
    now: DateTime<Utc>,
) -> Result<String, ApiError> {
    let token = tokens::new_refresh_token();
    refresh_tokens::ActiveModel {
        token_hash: Set(tokens::hash_token(&token)),
        session_id: Set(session_id),
        created_at: Set(now),
        used_at: Set(None),
    }
    .insert(txn)
    .await?;
    Ok(token)
}

enum Refreshed {
    Tokens(Box<AuthTokens>),
    Refused,
    Replayed { user_id: Uuid, session_id: Uuid },
}

/// Exchanges a refresh token for a new pair. The old token is spent; presenting it again
/// means it was copied, so the whole session is revoked and both parties lose it.
#[tracing::instrument(skip_all)]
pub async fn refresh(
    state: &AppState,
    refresh_token: &str,
    client: &ClientInfo,
) -> Result<AuthTokens, ApiError> {
    let hash = tokens::hash_token(refresh_token.trim());
    let outcome = state
        .db
        .write(|txn| {
            let (hash, state, client) = (hash.clone(), state.clone(), client.clone());
            Box::pin(async move {
                let now = Utc::now();
                let Some(stored) = refresh_tokens::Entity::find_by_id(hash.clone())
                    .one(txn)
                    .await?
                else {
                    return Ok(Refreshed::Refused);
                };
                let Some((session, Some(user))) = sessions::Entity::find_by_id(stored.session_id)
                    .find_also_related(users::Entity)
                    .one(txn)
                    .await?
                else {
                    return Ok(Refreshed::Refused);
                };
                if !session.is_active(now) {
                    return Ok(Refreshed::Refused);
                }
                // Spending the token is a conditional update, so two concurrent uses of
                // one token cannot both succeed.
                let spent = refresh_tokens::Entity::update_many()
                    .col_expr(refresh_tokens::Column::UsedAt, Expr::value(now))
                    .filter(refresh_tokens::Column::TokenHash.eq(hash))
                    .filter(refresh_tokens::Column::UsedAt.is_null())
                    .exec(txn)
                    .await?;
                if spent.rows_affected == 0 {
                    revoke_in(txn, session.id, reason::REFRESH_REUSE, now).await?;
                    return Ok(Refreshed::Replayed {
                        user_id: session.user_id,
                        session_id: session.id,
                    });
                }
                let refresh_token = issue_refresh_token(txn, session.id, now).await?;
                sessions::Entity::update_many()
                    .col_expr(
                        sessions::Column::ExpiresAt,
                        Expr::value(now + state.config.refresh_token_ttl),
                    )
                    .col_expr(sessions::Column::LastSeenAt, Expr::value(now))
                    .col_expr(sessions::Column::Ip, Expr::value(truncate(&client.ip, 64)))
                    .filter(sessions::Column::Id.eq(session.id))
                    .exec(txn)
                    .await?;
                let (access_token, expires_at) = state.jwt.issue(user.id, session.id, now)?;
                Ok(Refreshed::Tokens(Box::new(AuthTokens {
                    access_token,
                    refresh_token,
                    expires_at,
                    user,
                })))
            })
        })
        .await?;
    match outcome {
        Refreshed::Tokens(tokens) => Ok(*tokens),
        Refreshed::Refused => Err(ApiError::Unauthenticated(
            "invalid or expired refresh token".into(),
        )),
        Refreshed::Replayed {
            user_id,
            session_id,
        } => {
            tracing::warn!("refresh token reused; session revoked");
            super::live::sessions_revoked(state, user_id, Some(session_id), None).await;
            Err(ApiError::Unauthenticated(
                "refresh token already used; the session has been revoked".into(),
            ))
        }
    }
}

async fn revoke_in<C: ConnectionTrait>(
    conn: &C,
    session_id: Uuid,
    why: &str,
    now: DateTime<Utc>,
) -> Result<u64, ApiError> {
    let result = sessions::Entity::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::value(now))
        .col_expr(sessions::Column::RevokedReason, Expr::value(why))
        .filter(sessions::Column::Id.eq(session_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}

/// Revokes every active session of a user except `keep`, inside the caller's transaction.
pub async fn revoke_all_except<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    keep: Option<Uuid>,
    why: &str,
) -> Result<u64, ApiError> {
    let mut update = sessions::Entity::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::value(Utc::now()))
        .col_expr(sessions::Column::RevokedReason, Expr::value(why))
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null());
    if let Some(keep) = keep {
        update = update.filter(sessions::Column::Id.ne(keep));
    }
    Ok(update.exec(conn).await?.rows_affected)
}

/// Ends the viewer's current session.
pub async fn logout(state: &AppState, viewer: &Viewer) -> Result<bool, ApiError> {
    let (session_id, user_id) = (viewer.session_id, viewer.user_id());
    let revoked = state
        .db
        .write(|txn| {
            Box::pin(async move {
                let revoked = revoke_in(txn, session_id, reason::LOGOUT, Utc::now()).await?;
                if revoked > 0 {
                    super::audit::record(
                        txn,
                        super::audit::AuditEntry::new("logout", "session", session_id)
                            .actor(user_id)
                            .owner(user_id),
                    )
                    .await?;
                }
                Ok(revoked > 0)
            })
        })
        .await?;
    // Open sockets of this session close, on every replica.
    super::live::sessions_revoked(state, user_id, Some(session_id), None).await;
    Ok(revoked)
}

/// The viewer's sessions that can still be used, newest first.
pub async fn list(state: &AppState, viewer: &Viewer) -> Result<Vec<sessions::Model>, ApiError> {
    Ok(sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(viewer.user_id()))
        .filter(sessions::Column::RevokedAt.is_null())
        .filter(sessions::Column::ExpiresAt.gt(Utc::now()))
        .order_by_desc(sessions::Column::CreatedAt)
        .all(state.db.conn())
        .await?)
}

/// Revokes one of the viewer's sessions. Another user's session, or one already ended,
/// is `NOT_FOUND`: the caller must not learn that it exists.
pub async fn revoke(state: &AppState, viewer: &Viewer, id: Uuid) -> Result<bool, ApiError> {
    let result = sessions::Entity::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::value(Utc::now()))
        .col_expr(
            sessions::Column::RevokedReason,
            Expr::value(reason::REVOKED),
        )
        .filter(sessions::Column::Id.eq(id))
        .filter(sessions::Column::UserId.eq(viewer.user_id()))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(state.db.conn())
        .await?;
    if result.rows_affected == 0 {
        return Err(ApiError::NotFound("session"));
    }
    super::live::sessions_revoked(state, viewer.user_id(), Some(id), None).await;
    Ok(true)
}

/// A short description such as "Firefox 133 on Linux", or the raw agent's start for
/// programs woothee does not know (curl, SDKs).
pub fn describe_device(user_agent: &str) -> String {
    let ua = user_agent.trim();
    if ua.is_empty() {
        return "Unknown device".to_owned();
    }
    let parsed = woothee::parser::Parser::new().parse(ua);
    match parsed {
        Some(r)
            if r.name != "UNKNOWN"
                && matches!(
                    r.category,
                    "pc" | "smartphone" | "mobilephone" | "appliance"
                ) =>
        {
            let version = r.version.split('.').next().unwrap_or_default();
            let os = if r.os == "UNKNOWN" {
                "unknown OS"
            } else {
                r.os
            };
            truncate(
                &format!("{} {} on {}", r.name, version, os).replace("  ", " "),
                128,
            )
        }
        _ => truncate(ua.split_whitespace().next().unwrap_or(ua), 128),
    }
}

fn truncate(value: &str, max_chars: usize) -> String {
    value.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_described_from_the_user_agent() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
        assert_eq!(describe_device(firefox), "Firefox 133 on Linux");
        assert_eq!(describe_device("curl/8.5.0"), "curl/8.5.0");
        assert_eq!(describe_device(""), "Unknown device");
        assert_eq!(describe_device(&"x".repeat(500)).chars().count(), 128);
    }
}
