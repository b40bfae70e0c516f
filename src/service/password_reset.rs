//! Password reset by e-mailed token: single use, short-lived, stored only as a hash.
//! Asking answers the same whether or not the account exists, so the form cannot be
//! used to find out who has one.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use super::audit::{self, AuditEntry};
use super::{email, security, sessions, ClientInfo};
use crate::auth::{password, tokens};
use crate::domain::account_rules;
use crate::error::ApiError;
use crate::state::AppState;
use entity::{password_reset_tokens, users};

/// Reasons stored on sessions ended by a reset.
pub const SESSIONS_REVOKED_REASON: &str = "password_reset";

/// E-mails a reset token when `email` names an account. Always answers `true`.
/// Requests are throttled like failed logins (per IP and per address), so the form
/// cannot be used to flood someone's inbox.
#[tracing::instrument(skip_all)]
pub async fn request(
    state: &AppState,
    email_address: &str,
    client: &ClientInfo,
) -> Result<bool, ApiError> {
    let throttles = &state.login_throttle;
    let account_key = format!("reset:{}", email_address.trim().to_lowercase());
    let limited = |retry_after_secs| ApiError::RateLimited { retry_after_secs };
    throttles.per_ip.check(&client.ip).map_err(limited)?;
    throttles.per_account.check(&account_key).map_err(limited)?;
    // Each request spends from the per-address bucket, whatever the outcome.
    throttles.per_account.fail(&account_key);
    let Ok(normalized) = account_rules::normalize_email(email_address) else {
        return Ok(true);
    };
    let Some(user) = users::Entity::find()
        .filter(users::Column::Email.eq(normalized))
        .one(state.db.conn())
        .await?
    else {
        return Ok(true);
    };
    let token = format!("tgp_{}", tokens::random_token(32));
    let ttl = chrono::Duration::from_std(state.config.security.password_reset_ttl)
        .unwrap_or_else(|_| chrono::Duration::hours(1));
    state
        .db
        .write(|txn| {
            let (user, token) = (user.clone(), token.clone());
            Box::pin(async move {
                let now = Utc::now();
                password_reset_tokens::ActiveModel {
                    token_hash: Set(tokens::hash_token(&token)),
                    user_id: Set(user.id),
                    created_at: Set(now),
                    expires_at: Set(now + ttl),
                    used_at: Set(None),
                }
                .insert(txn)
                .await?;
                audit::record(
                    txn,
                    AuditEntry::new("password_reset.requested", "user", user.id).owner(user.id),
                )
                .await?;
                email::enqueue(
                    txn,
                    &user,
                    "Reset your tradegraph password",
                    &format!(
                        "Someone asked to reset your password. To choose a new one, use this \
                         reset token within {} minutes:\n\n  {token}\n\nIt works once. If you \
                         did not ask, ignore this e-mail: your password stays as it is.",
                        ttl.num_minutes()
                    ),
                )
                .await
            })
        })
        .await?;
    Ok(true)
}

/// Sets a new password with a reset token, spends the token, signs out every session
/// and pauses withdrawals. An unknown, used or expired token is `BAD_USER_INPUT`
/// naming `token`.
#[tracing::instrument(skip_all)]
pub async fn reset(state: &AppState, token: &str, new_password: String) -> Result<bool, ApiError> {
    let hash = tokens::hash_token(token.trim());
    let invalid = || ApiError::bad_input("token", "the reset token is invalid, used or expired");
    let stored = password_reset_tokens::Entity::find_by_id(hash.clone())
        .one(state.db.conn())
        .await?
        .filter(|t| t.used_at.is_none() && t.expires_at > Utc::now())
        .ok_or_else(invalid)?;
    let user = users::Entity::find_by_id(stored.user_id)
        .one(state.db.conn())
        .await?
        .ok_or_else(invalid)?;
    let local_part = user.email.split('@').next().unwrap_or_default().to_owned();
    account_rules::check_password(
        &new_password,
        &[&user.email, &local_part, &user.display_name],
    )
    .map_err(|v| ApiError::bad_input("newPassword", v.0))?;
    let password_hash = password::hash(new_password).await?;
    state
        .db
        .write(|txn| {
            let (state, hash, password_hash) = (state.clone(), hash.clone(), password_hash.clone());
            Box::pin(async move {
                let now = Utc::now();
                // Spending is conditional, so of two concurrent resets with one token
                // only one succeeds.
                let spent = password_reset_tokens::Entity::update_many()
                    .col_expr(password_reset_tokens::Column::UsedAt, Expr::value(now))
                    .filter(password_reset_tokens::Column::TokenHash.eq(hash))
                    .filter(password_reset_tokens::Column::UsedAt.is_null())
                    .filter(password_reset_tokens::Column::ExpiresAt.gt(now))
                    .exec(txn)
                    .await?;
                if spent.rows_affected == 0 {
                    return Err(invalid());
                }
                let user = users::Entity::find_by_id(stored.user_id)
                    .one(txn)
                    .await?
                    .ok_or_else(invalid)?;
                let mut active: users::ActiveModel = user.into();
                active.password_hash = Set(password_hash);
                active.password_changed_at = Set(now);
                active.updated_at = Set(now);
                let user = active.update(txn).await?;
                // Other tokens of this user die with the old password.
                password_reset_tokens::Entity::update_many()
                    .col_expr(password_reset_tokens::Column::UsedAt, Expr::value(now))
                    .filter(password_reset_tokens::Column::UserId.eq(user.id))
                    .filter(password_reset_tokens::Column::UsedAt.is_null())
                    .exec(txn)
                    .await?;
                sessions::revoke_all_except(txn, user.id, None, SESSIONS_REVOKED_REASON).await?;
                audit::record(
                    txn,
                    AuditEntry::new("password.reset", "user", user.id).owner(user.id),
                )
                .await?;
                security::security_changed(&state, txn, &user, "the password was reset").await?;
                Ok(true)
            })
        })
        .await?;
    // Every session ended: their open sockets close on every replica.
    super::live::sessions_revoked(state, stored.user_id, None, None).await;
    Ok(true)
}
