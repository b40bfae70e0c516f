//! Passkeys (WebAuthn, through webauthn-rs): registering several named ones per user,
//! passwordless sign-in, listing and removing.
//!
//! A ceremony's server state (which holds the challenge) lives in the database with a
//! short expiry, so any replica can finish what another started. It is deleted, in a
//! transaction of its own, before the answer is verified: a challenge is good for one
//! attempt, successful or not.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait,
    PaginatorTrait, QueryFilter, QueryOrder, SqlErr,
};
use serde_json::json;
use uuid::Uuid;
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Webauthn, WebauthnBuilder,
};

use super::audit::{self, AuditEntry};
use super::security::{self, LoginMethod};
use super::sessions::{self, AuthTokens};
use super::ClientInfo;
use crate::auth::Viewer;
use crate::config::SecurityConfig;
use crate::domain::account_rules;
use crate::error::ApiError;
use crate::state::AppState;
use entity::{passkeys, users, webauthn_challenges};

const REGISTRATION: &str = "REGISTRATION";
const AUTHENTICATION: &str = "AUTHENTICATION";
/// Passkeys one user may hold; more is a sign of abuse, not of care.
const MAX_PER_USER: u64 = 20;

/// The relying party, from `WEBAUTHN_RP_ID` / `WEBAUTHN_RP_ORIGIN` / `WEBAUTHN_RP_NAME`.
pub fn relying_party(config: &SecurityConfig) -> anyhow::Result<Webauthn> {
    let origin = Url::parse(&config.webauthn_rp_origin)
        .map_err(|e| anyhow::anyhow!("WEBAUTHN_RP_ORIGIN is not a URL: {e}"))?;
    WebauthnBuilder::new(&config.webauthn_rp_id, &origin)
        .and_then(|b| {
            b.rp_name(&config.webauthn_rp_name)
                .timeout(config.webauthn_challenge_ttl)
                .build()
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "WEBAUTHN_RP_ID must be the domain of WEBAUTHN_RP_ORIGIN (or a parent of it): {e}"
            )
        })
}

fn credential_key(id: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::internal(anyhow::anyhow!("passkey state: {error}"))
}

/// Replaces the user's ceremony of this purpose with a new one.
async fn store_challenge<C: ConnectionTrait>(
    conn: &C,
    state: &AppState,
    user_id: Uuid,
    purpose: &str,
    ceremony: String,
) -> Result<(), ApiError> {
    let now = Utc::now();
    webauthn_challenges::Entity::delete_many()
        .filter(webauthn_challenges::Column::UserId.eq(user_id))
        .filter(
            webauthn_challenges::Column::Purpose
                .eq(purpose)
                .or(webauthn_challenges::Column::ExpiresAt.lt(now)),
        )
        .exec(conn)
        .await?;
    let ttl = chrono::Duration::from_std(state.config.security.webauthn_challenge_ttl)
        .unwrap_or_else(|_| chrono::Duration::minutes(5));
    webauthn_challenges::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        purpose: Set(purpose.to_owned()),
        state: Set(ceremony),
        expires_at: Set(now + ttl),
        created_at: Set(now),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Takes (deletes and returns) the user's live ceremony of this purpose. Deleting with a
/// check of the rows affected makes it single use even across replicas.
async fn take_challenge(
    state: &AppState,
    user_id: Uuid,
    purpose: &'static str,
) -> Result<Option<String>, ApiError> {
    state
        .db
        .write(|txn| {
            Box::pin(async move {
                let Some(challenge) = webauthn_challenges::Entity::find()
                    .filter(webauthn_challenges::Column::UserId.eq(user_id))
                    .filter(webauthn_challenges::Column::Purpose.eq(purpose))
                    .order_by_desc(webauthn_challenges::Column::CreatedAt)
                    .one(txn)
                    .await?
                else {
                    return Ok(None);
                };
                let deleted = webauthn_challenges::Entity::delete_by_id(challenge.id)
                    .exec(txn)
                    .await?;
                let live = deleted.rows_affected == 1 && challenge.expires_at > Utc::now();
                Ok(live.then_some(challenge.state))
            })
        })
        .await
}

async fn user_passkeys<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
) -> Result<Vec<passkeys::Model>, ApiError> {
    Ok(passkeys::Entity::find()
        .filter(passkeys::Column::UserId.eq(user_id))
        .order_by_asc(passkeys::Column::CreatedAt)
        .all(conn)
        .await?)
}

/// Starts registering a passkey for the viewer: returns the options to pass to
/// `navigator.credentials.create()`. Keys the user already has are excluded, so one
/// authenticator is not registered twice.
pub async fn start_registration(
    state: &AppState,
    viewer: &Viewer,
) -> Result<serde_json::Value, ApiError> {
    let user = &viewer.user;
    let existing = user_passkeys(state.db.conn(), user.id).await?;
    if existing.len() as u64 >= MAX_PER_USER {
        return Err(ApiError::Conflict(format!(
            "at most {MAX_PER_USER} passkeys per account; remove one first"
        )));
    }
    let exclude = existing
        .iter()
        .filter_map(|p| serde_json::from_str::<Passkey>(&p.credential).ok())
        .map(|p| p.cred_id().clone())
        .collect::<Vec<_>>();
    let (options, ceremony) = state
        .webauthn
        .start_passkey_registration(user.id, &user.email, &user.display_name, Some(exclude))
        .map_err(internal)?;
    let ceremony = serde_json::to_string(&ceremony).map_err(internal)?;
    store_challenge(state.db.conn(), state, user.id, REGISTRATION, ceremony).await?;
    serde_json::to_value(options).map_err(internal)
}

/// Finishes registration with the authenticator's answer. `BAD_USER_INPUT` (naming
/// `credential`) when there is no live ceremony or the answer does not verify;
/// `CONFLICT` when that authenticator is already registered.
#[tracing::instrument(skip_all)]
pub async fn finish_registration(
    state: &AppState,
    viewer: &Viewer,
    credential: serde_json::Value,
    name: Option<String>,
) -> Result<passkeys::Model, ApiError> {
    let user = viewer.user.clone();
    let name = match name {
        Some(name) => Some(
            crate::domain::withdrawal_rules::check_label(&name)
                .map_err(|m| ApiError::bad_input("name", m.replace("label", "name")))?,
        ),
        None => None,
    };
    let answer: RegisterPublicKeyCredential = serde_json::from_value(credential)
        .map_err(|_| ApiError::bad_input("credential", "not a WebAuthn registration response"))?;
    let no_ceremony = || {
        ApiError::bad_input(
            "credential",
            "no passkey registration in progress (it may have expired): start again",
        )
    };
    let ceremony = take_challenge(state, user.id, REGISTRATION)
        .await?
        .ok_or_else(no_ceremony)?;
    let ceremony: PasskeyRegistration = serde_json::from_str(&ceremony).map_err(internal)?;
    let passkey = state
        .webauthn
        .finish_passkey_registration(&answer, &ceremony)
        .map_err(|error| {
            tracing::debug!(%error, "passkey registration refused");
            ApiError::bad_input("credential", "the passkey could not be verified")
        })?;
    let credential_id = credential_key(passkey.cred_id().as_ref());
    let stored = serde_json::to_string(&passkey).map_err(internal)?;
    state
        .db
        .write(|txn| {
            let (state, user, name) = (state.clone(), user.clone(), name.clone());
            let (credential_id, stored) = (credential_id.clone(), stored.clone());
            Box::pin(async move {
                let count = passkeys::Entity::find()
                    .filter(passkeys::Column::UserId.eq(user.id))
                    .count(txn)
                    .await?;
                let name = name.unwrap_or_else(|| format!("Passkey {}", count + 1));
                let inserted = passkeys::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    user_id: Set(user.id),
                    name: Set(name),
                    credential_id: Set(credential_id),
                    credential: Set(stored),
                    created_at: Set(Utc::now()),
                    last_used_at: Set(None),
                }
                .insert(txn)
                .await;
                let passkey = match inserted {
                    Ok(passkey) => passkey,
                    Err(error)
                        if matches!(
                            error.sql_err(),
                            Some(SqlErr::UniqueConstraintViolation(_))
                        ) =>
                    {
                        return Err(ApiError::Conflict(
                            "this passkey is already registered".into(),
                        ));
                    }
                    Err(error) => return Err(error.into()),
                };
                audit::record(
                    txn,
                    AuditEntry::new("passkey.added", "passkey", passkey.id)
                        .actor(user.id)
                        .owner(user.id),
                )
                .await?;
                security::security_changed(
                    &state,
                    txn,
                    &user,
                    &format!("a passkey named \"{}\" was added", passkey.name),
                )
                .await?;
                Ok(passkey)
            })
        })
        .await
}

/// The viewer's passkeys, oldest first.
pub async fn list(state: &AppState, viewer: &Viewer) -> Result<Vec<passkeys::Model>, ApiError> {
    user_passkeys(state.db.conn(), viewer.user_id()).await
}

/// Removes one of the viewer's passkeys: a security change (withdrawals pause).
/// `NOT_FOUND` for an unknown id or another user's passkey.
pub async fn remove(state: &AppState, viewer: &Viewer, id: Uuid) -> Result<bool, ApiError> {
    let user = viewer.user.clone();
    state
        .db
        .write(|txn| {
            let (state, user) = (state.clone(), user.clone());
            Box::pin(async move {
                let passkey = passkeys::Entity::find_by_id(id)
                    .filter(passkeys::Column::UserId.eq(user.id))
                    .one(txn)
                    .await?
                    .ok_or(ApiError::NotFound("passkey"))?;
                passkeys::Entity::delete_by_id(passkey.id).exec(txn).await?;
                audit::record(
                    txn,
                    AuditEntry::new("passkey.removed", "passkey", passkey.id)
                        .actor(user.id)
                        .owner(user.id),
                )
                .await?;
                security::security_changed(
                    &state,
                    txn,
                    &user,
                    &format!("the passkey named \"{}\" was removed", passkey.name),
                )
                .await?;
                Ok(true)
            })
        })
        .await
}

async fn find_user(state: &AppState, email: &str) -> Result<Option<users::Model>, ApiError> {
    let Ok(email) = account_rules::normalize_email(email) else {
        return Ok(None);
    };
    Ok(users::Entity::find()
        .filter(users::Column::Email.eq(email))
        .one(state.db.conn())
        .await?)
}

fn unavailable() -> ApiError {
    ApiError::Unauthenticated("passkey sign-in failed".into())
}

/// Options shaped like real ones for an address without passkeys (or without an
/// account), so that `startPasskeyLogin` does not tell who has an account or a passkey.
/// The credential id is derived from the address with a server key, so asking twice
/// gives the same one, as for a real account; finishing always fails.
fn decoy_options(state: &AppState, email: &str) -> serde_json::Value {
    use hmac::{Hmac, Mac};
    use rand::RngCore;
    let security = &state.config.security;
    let mut challenge = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut challenge);
    let credential_id = Hmac::<sha2::Sha256>::new_from_slice(security.totp_key.expose().as_bytes())
        .map(|mut mac| {
            mac.update(b"passkey-decoy:");
            mac.update(email.trim().to_lowercase().as_bytes());
            mac.finalize().into_bytes().to_vec()
        })
        .unwrap_or_default();
    json!({
        "publicKey": {
            "challenge": URL_SAFE_NO_PAD.encode(challenge),
            "timeout": security.webauthn_challenge_ttl.as_millis() as u64,
            "rpId": security.webauthn_rp_id,
            "allowCredentials": [{ "type": "public-key", "id": URL_SAFE_NO_PAD.encode(credential_id) }],
            "userVerification": "required",
        }
    })
}

/// Starts a passwordless sign-in: the options for `navigator.credentials.get()`. An
/// address without an account or without passkeys gets options of the same shape that
/// no authenticator can answer.
pub async fn start_login(state: &AppState, email: &str) -> Result<serde_json::Value, ApiError> {
    let Some(user) = find_user(state, email).await? else {
        return Ok(decoy_options(state, email));
    };
    let keys: Vec<Passkey> = user_passkeys(state.db.conn(), user.id)
        .await?
        .iter()
        .filter_map(|p| serde_json::from_str(&p.credential).ok())
        .collect();
    if keys.is_empty() {
        return Ok(decoy_options(state, email));
    }
    let (options, ceremony) = state
        .webauthn
        .start_passkey_authentication(&keys)
        .map_err(internal)?;
    let ceremony = serde_json::to_string(&ceremony).map_err(internal)?;
    store_challenge(state.db.conn(), state, user.id, AUTHENTICATION, ceremony).await?;
    serde_json::to_value(options).map_err(internal)
}

/// Finishes a passwordless sign-in and starts a session. Failures answer
/// `UNAUTHENTICATED` alike and count against the same throttles as password logins.
/// A passkey with user verification is itself two factors, so TOTP is not asked for.
#[tracing::instrument(skip_all)]
pub async fn finish_login(
    state: &AppState,
    email: &str,
    credential: serde_json::Value,
    client: &ClientInfo,
) -> Result<AuthTokens, ApiError> {
    let account_key = email.trim().to_lowercase();
    let throttles = &state.login_throttle;
    let limited = |retry_after_secs| ApiError::RateLimited { retry_after_secs };
    throttles.per_ip.check(&client.ip).map_err(limited)?;
    throttles.per_account.check(&account_key).map_err(limited)?;
    let refuse = |user_id: Option<Uuid>| async move {
        throttles.per_ip.fail(&client.ip);
        throttles.per_account.fail(&account_key);
        security::note_login_failure(state, user_id, "passkey").await?;
        Err::<AuthTokens, ApiError>(unavailable())
    };
    let Some(user) = find_user(state, email).await? else {
        return refuse(None).await;
    };
    let Ok(answer) = serde_json::from_value::<PublicKeyCredential>(credential) else {
        return refuse(Some(user.id)).await;
    };
    let Some(ceremony) = take_challenge(state, user.id, AUTHENTICATION).await? else {
        return refuse(Some(user.id)).await;
    };
    let ceremony: PasskeyAuthentication = serde_json::from_str(&ceremony).map_err(internal)?;
    let result = match state
        .webauthn
        .finish_passkey_authentication(&answer, &ceremony)
    {
        Ok(result) => result,
        Err(error) => {
            tracing::debug!(%error, "passkey assertion refused");
            return refuse(Some(user.id)).await;
        }
    };
    let credential_id = credential_key(result.cred_id().as_ref());
    let outcome = state
        .db
        .write(|txn| {
            let (state, user, client) = (state.clone(), user.clone(), client.clone());
            let (credential_id, result) = (credential_id.clone(), result.clone());
            Box::pin(async move {
                let Some(row) = passkeys::Entity::find()
                    .filter(passkeys::Column::UserId.eq(user.id))
                    .filter(passkeys::Column::CredentialId.eq(credential_id))
                    .one(txn)
                    .await?
                else {
                    // Removed between the start and the finish of the ceremony.
                    return Ok(None);
                };
                let mut passkey: Passkey =
                    serde_json::from_str(&row.credential).map_err(internal)?;
                passkey.update_credential(&result);
                let mut active: passkeys::ActiveModel = row.into();
                active.credential = Set(serde_json::to_string(&passkey).map_err(internal)?);
                active.last_used_at = Set(Some(Utc::now()));
                let row = active.update(txn).await?;
                security::note_login(txn, &user, &client, LoginMethod::Passkey).await?;
                audit::record(
                    txn,
                    AuditEntry::new("passkey.used", "passkey", row.id)
                        .actor(user.id)
                        .owner(user.id)
                        .details(json!({ "counter": result.counter() })),
                )
                .await?;
                sessions::start(&state, txn, user, &client).await.map(Some)
            })
        })
        .await?;
    match outcome {
        Some(tokens) => Ok(tokens),
        None => refuse(Some(user.id)).await,
    }
}
