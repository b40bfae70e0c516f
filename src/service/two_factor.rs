//! TOTP two-factor authentication: enabling, confirming, disabling, and checking a
//! second factor (a TOTP code or a single-use recovery code) for sign-in and for
//! sensitive actions.
//!
//! Defences: the secret is sealed at rest (AES-256-GCM, bound to the user id); a code
//! is accepted once (the last used time step is kept per user and advanced with a
//! conditional update, so two replicas cannot both accept it); wrong codes are throttled
//! per account; recovery codes are stored as SHA-256 and spent with a conditional update.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;
use rand::RngCore;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait,
    DatabaseTransaction, EntityTrait, QueryFilter,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::{email, security};
use crate::auth::{tokens, Viewer};
use crate::domain::totp;
use crate::error::ApiError;
use crate::state::AppState;
use entity::{recovery_codes, totp_credentials, users};

/// Recovery codes handed out when TOTP is confirmed.
pub const RECOVERY_CODES: usize = 10;
const ISSUER: &str = "tradegraph";

/// What the user offered as a second factor.
#[derive(Clone, Debug, Default)]
pub struct Presented {
    pub totp_code: Option<String>,
    pub recovery_code: Option<String>,
}

impl Presented {
    pub fn totp(code: Option<String>) -> Self {
        Presented {
            totp_code: code,
            recovery_code: None,
        }
    }

    fn is_empty(&self) -> bool {
        let blank = |c: &Option<String>| c.as_deref().is_none_or(|c| c.trim().is_empty());
        blank(&self.totp_code) && blank(&self.recovery_code)
    }
}

/// A new TOTP secret, shown once so the user can add it to an authenticator app.
pub struct TotpSetup {
    pub secret: String,
    pub otpauth_uri: String,
}

fn cipher(state: &AppState) -> Aes256Gcm {
    let key = Sha256::digest(state.config.security.totp_key.expose().as_bytes());
    Aes256Gcm::new(&key)
}

fn seal(state: &AppState, user_id: Uuid, secret: &[u8]) -> Result<String, ApiError> {
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher(state)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: secret,
                aad: user_id.as_bytes(),
            },
        )
        .map_err(|_| ApiError::internal(anyhow::anyhow!("cannot seal a TOTP secret")))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(STANDARD.encode(out))
}

fn unseal(state: &AppState, user_id: Uuid, sealed: &str) -> Result<Vec<u8>, ApiError> {
    let failed = || {
        ApiError::internal(anyhow::anyhow!(
            "cannot unseal a TOTP secret (was TOTP_ENCRYPTION_KEY or JWT_SECRET changed?)"
        ))
    };
    let bytes = STANDARD.decode(sealed).map_err(|_| failed())?;
    if bytes.len() < 12 {
        return Err(failed());
    }
    let (nonce, ciphertext) = bytes.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| failed())?;
    cipher(state)
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: user_id.as_bytes(),
            },
        )
        .map_err(|_| failed())
}

fn now_unix() -> u64 {
    Utc::now().timestamp().max(0) as u64
}

fn throttle_key(user_id: Uuid) -> String {
    user_id.to_string()
}

fn throttled(state: &AppState, user_id: Uuid) -> Result<(), ApiError> {
    state
        .second_factor_throttle
        .check(&throttle_key(user_id))
        .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })
}

/// Starts enrolment: a new secret replaces any unconfirmed one. `CONFLICT` when 2FA is
/// already on (disable it first).
#[tracing::instrument(skip_all)]
pub async fn enable(state: &AppState, viewer: &Viewer) -> Result<TotpSetup, ApiError> {
    let user = viewer.user.clone();
    let mut secret = vec![0u8; totp::SECRET_LEN];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let sealed = seal(state, user.id, &secret)?;
    state
        .db
        .write(|txn| {
            let (sealed, user_id) = (sealed.clone(), user.id);
            Box::pin(async move {
                let existing = totp_credentials::Entity::find_by_id(user_id)
                    .one(txn)
                    .await?;
                if existing.is_some_and(|c| c.confirmed_at.is_some()) {
                    return Err(ApiError::Conflict(
                        "two-factor authentication is already enabled".into(),
                    ));
                }
                totp_credentials::Entity::insert(totp_credentials::ActiveModel {
                    user_id: Set(user_id),
                    secret_sealed: Set(sealed),
                    confirmed_at: Set(None),
                    last_used_step: Set(None),
                    created_at: Set(Utc::now()),
                })
                .on_conflict(
                    OnConflict::column(totp_credentials::Column::UserId)
                        .update_columns([
                            totp_credentials::Column::SecretSealed,
                            totp_credentials::Column::LastUsedStep,
                            totp_credentials::Column::CreatedAt,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
                Ok(())
            })
        })
        .await?;
    Ok(TotpSetup {
        otpauth_uri: totp::otpauth_uri(ISSUER, &user.email, &secret),
        secret: totp::base32_encode(&secret),
    })
}

/// Checks `code` against the user's TOTP secret and spends its time step, inside the
/// caller's transaction. `Ok(false)` for a wrong or already used code.
async fn spend_totp(
    state: &AppState,
    txn: &DatabaseTransaction,
    credential: &totp_credentials::Model,
    code: &str,
) -> Result<bool, ApiError> {
    let secret = unseal(state, credential.user_id, &credential.secret_sealed)?;
    let Some(step) = totp::verify(&secret, code, now_unix()) else {
        return Ok(false);
    };
    let step = step as i64;
    // The step only moves forward: a code is good once, and so is any older one.
    let spent = totp_credentials::Entity::update_many()
        .col_expr(totp_credentials::Column::LastUsedStep, Expr::value(step))
        .filter(totp_credentials::Column::UserId.eq(credential.user_id))
        .filter(
            Condition::any()
                .add(totp_credentials::Column::LastUsedStep.is_null())
                .add(totp_credentials::Column::LastUsedStep.lt(step)),
        )
        .exec(txn)
        .await?;
    Ok(spent.rows_affected == 1)
}

fn hash_recovery_code(code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    tokens::hash_token(&normalized)
}

async fn spend_recovery_code(
    txn: &DatabaseTransaction,
    user_id: Uuid,
    code: &str,
) -> Result<bool, ApiError> {
    let spent = recovery_codes::Entity::update_many()
        .col_expr(recovery_codes::Column::UsedAt, Expr::value(Utc::now()))
        .filter(recovery_codes::Column::UserId.eq(user_id))
        .filter(recovery_codes::Column::CodeHash.eq(hash_recovery_code(code)))
        .filter(recovery_codes::Column::UsedAt.is_null())
        .exec(txn)
        .await?;
    Ok(spent.rows_affected == 1)
}

/// Requires a valid second factor from a user who has 2FA on, inside the caller's
/// transaction (so the code is spent only if the action commits). Nothing offered, or
/// something wrong, is `TWO_FACTOR_REQUIRED`; too many wrong codes are `RATE_LIMITED`.
/// A user without 2FA passes.
pub async fn require(
    state: &AppState,
    txn: &DatabaseTransaction,
    user: &users::Model,
    presented: &Presented,
) -> Result<(), ApiError> {
    if !user.two_factor_enabled {
        return Ok(());
    }
    throttled(state, user.id)?;
    if presented.is_empty() {
        return Err(ApiError::TwoFactorRequired);
    }
    let credential = totp_credentials::Entity::find_by_id(user.id)
        .one(txn)
        .await?
        .filter(|c| c.confirmed_at.is_some());
    let valid = match (&presented.totp_code, &presented.recovery_code, &credential) {
        (Some(code), _, Some(credential)) if !code.trim().is_empty() => {
            spend_totp(state, txn, credential, code).await?
        }
        (_, Some(code), _) if !code.trim().is_empty() => {
            spend_recovery_code(txn, user.id, code).await?
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        state.second_factor_throttle.fail(&throttle_key(user.id));
        Err(ApiError::TwoFactorRequired)
    }
}

/// Turns 2FA on once the user proves their app works with a current code, and returns
/// ten recovery codes: shown this once, stored only hashed.
#[tracing::instrument(skip_all)]
pub async fn confirm(
    state: &AppState,
    viewer: &Viewer,
    code: String,
) -> Result<Vec<String>, ApiError> {
    let user_id = viewer.user_id();
    throttled(state, user_id)?;
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let result = state
        .db
        .write(|txn| {
            let (state, code, codes) = (state.clone(), code.clone(), codes.clone());
            Box::pin(async move {
                let credential = totp_credentials::Entity::find_by_id(user_id)
                    .one(txn)
                    .await?
                    .ok_or_else(|| {
                        ApiError::Conflict("start with enableTotp to get a secret".into())
                    })?;
                if credential.confirmed_at.is_some() {
                    return Err(ApiError::Conflict(
                        "two-factor authentication is already enabled".into(),
                    ));
                }
                if !spend_totp(&state, txn, &credential, &code).await? {
                    return Ok(None);
                }
                let now = Utc::now();
                totp_credentials::Entity::update_many()
                    .col_expr(totp_credentials::Column::ConfirmedAt, Expr::value(now))
                    .filter(totp_credentials::Column::UserId.eq(user_id))
                    .exec(txn)
                    .await?;
                let user = set_enabled(txn, user_id, true).await?;
                recovery_codes::Entity::delete_many()
                    .filter(recovery_codes::Column::UserId.eq(user_id))
                    .exec(txn)
                    .await?;
                for code in &codes {
                    recovery_codes::ActiveModel {
                        id: Set(Uuid::now_v7()),
                        user_id: Set(user_id),
                        code_hash: Set(hash_recovery_code(code)),
                        used_at: Set(None),
                        created_at: Set(now),
                    }
                    .insert(txn)
                    .await?;
                }
                audit::record(
                    txn,
                    AuditEntry::new("totp.enabled", "user", user_id)
                        .actor(user_id)
                        .owner(user_id),
                )
                .await?;
                email::enqueue(
                    txn,
                    &user,
                    "Two-factor authentication is on",
                    "Two-factor authentication was turned on for your account. Keep your \
                     recovery codes somewhere safe: each works once if you lose your \
                     authenticator.",
                )
                .await?;
                Ok(Some(()))
            })
        })
        .await?;
    match result {
        Some(()) => Ok(codes),
        None => {
            state.second_factor_throttle.fail(&throttle_key(user_id));
            Err(ApiError::bad_input("code", "the code is wrong or expired"))
        }
    }
}

/// Turns 2FA off, given a current TOTP code or an unused recovery code. It is a
/// security change: withdrawals pause and the owner is told.
#[tracing::instrument(skip_all)]
pub async fn disable(state: &AppState, viewer: &Viewer, code: String) -> Result<bool, ApiError> {
    let user = viewer.user.clone();
    if !user.two_factor_enabled {
        return Err(ApiError::Conflict(
            "two-factor authentication is not enabled".into(),
        ));
    }
    state
        .db
        .write(|txn| {
            let (state, user, code) = (state.clone(), user.clone(), code.clone());
            Box::pin(async move {
                // The code may be either kind: someone who lost the app still has codes.
                let looks_like_totp = code.trim().len() == totp::DIGITS as usize
                    && code.trim().bytes().all(|b| b.is_ascii_digit());
                let presented = if looks_like_totp {
                    Presented::totp(Some(code))
                } else {
                    Presented {
                        totp_code: None,
                        recovery_code: Some(code),
                    }
                };
                require(&state, txn, &user, &presented).await?;
                totp_credentials::Entity::delete_by_id(user.id)
                    .exec(txn)
                    .await?;
                recovery_codes::Entity::delete_many()
                    .filter(recovery_codes::Column::UserId.eq(user.id))
                    .exec(txn)
                    .await?;
                let user = set_enabled(txn, user.id, false).await?;
                audit::record(
                    txn,
                    AuditEntry::new("totp.disabled", "user", user.id)
                        .actor(user.id)
                        .owner(user.id),
                )
                .await?;
                security::security_changed(
                    &state,
                    txn,
                    &user,
                    "two-factor authentication was turned off",
                )
                .await?;
                Ok(true)
            })
        })
        .await
}

async fn set_enabled<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    enabled: bool,
) -> Result<users::Model, ApiError> {
    let user = users::Entity::find_by_id(user_id)
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let mut active: users::ActiveModel = user.into();
    active.two_factor_enabled = Set(enabled);
    active.updated_at = Set(Utc::now());
    Ok(active.update(conn).await?)
}

/// `xxxxx-xxxxx` from an unambiguous lower-case alphabet: 50 bits, typed rarely.
fn new_recovery_code() -> String {
    // 32 symbols, so a random byte maps to one without bias.
    const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz023456789";
    let mut bytes = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let chars: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_normalised_before_hashing() {
        let code = new_recovery_code();
        assert_eq!(code.len(), 11);
        assert_eq!(
            hash_recovery_code(&code),
            hash_recovery_code(&code.to_uppercase().replace('-', " "))
        );
        assert_ne!(
            hash_recovery_code(&code),
            hash_recovery_code(&new_recovery_code())
        );
    }
}
