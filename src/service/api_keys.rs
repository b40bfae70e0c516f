//! API keys: creating, listing and revoking a user's keys, and authenticating requests
//! made with one (a whole secret, or a prefix with a signed request).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
};
use uuid::Uuid;

use crate::auth::api_keys::{self as secrets, Presented};
use crate::auth::Viewer;
use crate::domain::ip_allowlist;
use crate::error::ApiError;
use crate::events::Event;
use crate::state::AppState;
use entity::{api_keys, users, ApiScope, ScopeSet};

/// The signature window when a key is created without one, in seconds.
pub const DEFAULT_WINDOW_SECS: i32 = 5;
const MAX_WINDOW_SECS: i32 = 60;
/// How stale `lastUsedAt` may get: writing it on every request would turn reads into
/// writes.
const LAST_USED_GRANULARITY: Duration = Duration::from_secs(60);

/// A key to create, as the owner described it.
pub struct NewApiKey {
    pub label: String,
    pub scopes: Vec<ApiScope>,
    pub allowed_ips: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub require_signature: bool,
    pub signature_window_secs: Option<i32>,
}

/// A new key with its secret, which is never available again.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: api_keys::Model,
    pub secret: secrets::ApiKeySecret,
}

/// The parts of an HTTP request (or WebSocket `connection_init`) a signature covers.
#[derive(Clone, Copy, Debug, Default)]
pub struct SignedParts<'a> {
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub method: &'a str,
    /// The request target as received: path and query string.
    pub path: &'a str,
    pub body: &'a [u8],
}

/// Managing keys takes a session: a key must never mint, list or revoke keys, even if a
/// field forgot its scope marking.
fn session_only(viewer: &Viewer) -> Result<(), ApiError> {
    if viewer.is_session() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "API keys cannot manage API keys; sign in with a session".into(),
        ))
    }
}

/// Creates a key for the viewer and returns it with its secret.
#[tracing::instrument(skip_all)]
pub async fn create(
    state: &AppState,
    viewer: &Viewer,
    input: NewApiKey,
) -> Result<CreatedKey, ApiError> {
    session_only(viewer)?;
    let label = input.label.trim().to_owned();
    let label_chars = label.chars().count();
    if label_chars == 0 || label_chars > 64 || label.chars().any(char::is_control) {
        return Err(ApiError::bad_input(
            "input.label",
            "the label must be 1 to 64 printable characters",
        ));
    }
    let scopes = ScopeSet::from_iter(input.scopes);
    if scopes.is_empty() {
        return Err(ApiError::bad_input(
            "input.scopes",
            "give the key at least one scope",
        ));
    }
    let allowed = ip_allowlist::parse_list(&input.allowed_ips)
        .map_err(|message| ApiError::bad_input("input.allowedIps", message))?;
    let now = Utc::now();
    if input.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::bad_input(
            "input.expiresAt",
            "the expiry must be in the future",
        ));
    }
    let window = input.signature_window_secs.unwrap_or(DEFAULT_WINDOW_SECS);
    if !(1..=MAX_WINDOW_SECS).contains(&window) {
        return Err(ApiError::bad_input(
            "input.signatureWindowSeconds",
            format!("the window must be 1 to {MAX_WINDOW_SECS} seconds"),
        ));
    }
    let id = Uuid::now_v7();
    let prefix = secrets::new_prefix();
    let (secret, salt) = if input.require_signature {
        let salt = secrets::new_salt();
        let secret = secrets::derived_secret(
            state.config.api_keys.signing_secret.expose().as_bytes(),
            id,
            &prefix,
            &salt,
        );
        (secret, Some(salt))
    } else {
        (secrets::random_secret(&prefix), None)
    };
    let model = api_keys::Model {
        id,
        user_id: viewer.user_id(),
        label,
        prefix,
        secret_hash: secret.hash(),
        signing_salt: salt,
        scopes: scopes.to_column(),
        allowed_ips: allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        require_signature: input.require_signature,
        signature_window_secs: window,
        created_at: now,
        expires_at: input.expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    let max = state.config.api_keys.max_per_user;
    let key = state
        .db
        .write(|txn| {
            let model = model.clone();
            Box::pin(async move {
                let active = api_keys::Entity::find()
                    .filter(api_keys::Column::UserId.eq(model.user_id))
                    .filter(api_keys::Column::RevokedAt.is_null())
                    .count(txn)
                    .await?;
                if active >= max {
                    return Err(ApiError::Conflict(format!(
                        "at most {max} API keys may be active; revoke one first"
                    )));
                }
                let key = api_keys::ActiveModel::from(model)
                    .reset_all()
                    .insert(txn)
                    .await?;
                super::audit::record(
                    txn,
                    super::audit::AuditEntry::new("api_key.created", "api_key", key.id)
                        .actor(key.user_id)
                        .owner(key.user_id)
                        .details(serde_json::json!({
                            "prefix": key.prefix,
                            "scopes": key.scope_set().to_vec().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                            "requireSignature": key.require_signature,
                            "ipRestricted": !key.allowed_ips.is_empty(),
                            "expiresAt": key.expires_at,
                        })),
                )
                .await?;
                Ok(key)
            })
        })
        .await?;
    Ok(CreatedKey { key, secret })
}

/// The viewer's keys, revoked ones included, newest first.
pub async fn list(state: &AppState, viewer: &Viewer) -> Result<Vec<api_keys::Model>, ApiError> {
    session_only(viewer)?;
    Ok(api_keys::Entity::find()
        .filter(api_keys::Column::UserId.eq(viewer.user_id()))
        .order_by_desc(api_keys::Column::CreatedAt)
        .order_by_desc(api_keys::Column::Id)
        .all(state.db.conn())
        .await?)
}

/// Revokes one of the viewer's keys; it stops working at once. Revoking a revoked key
/// changes nothing. Another user's key is `NOT_FOUND`.
#[tracing::instrument(skip_all)]
pub async fn revoke(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
) -> Result<api_keys::Model, ApiError> {
    session_only(viewer)?;
    let user_id = viewer.user_id();
    let revoked = state
        .db
        .write(|txn| {
            Box::pin(async move {
                let key = api_keys::Entity::find_by_id(id)
                    .filter(api_keys::Column::UserId.eq(user_id))
                    .one(txn)
                    .await?
                    .ok_or(ApiError::NotFound("API key"))?;
                if key.revoked_at.is_some() {
                    return Ok(key);
                }
                let now = Utc::now();
                api_keys::Entity::update_many()
                    .col_expr(api_keys::Column::RevokedAt, Expr::value(now))
                    .filter(api_keys::Column::Id.eq(id))
                    .filter(api_keys::Column::RevokedAt.is_null())
                    .exec(txn)
                    .await?;
                super::audit::record(
                    txn,
                    super::audit::AuditEntry::new("api_key.revoked", "api_key", id)
                        .actor(user_id)
                        .owner(user_id)
                        .details(serde_json::json!({ "prefix": key.prefix })),
                )
                .await?;
                Ok(api_keys::Model {
                    revoked_at: Some(now),
                    ..key
                })
            })
        })
        .await?;
    // After commit: connections the key opened close, on every replica.
    state
        .events
        .publish(vec![Event::ApiKeyRevoked {
            user_id,
            key_id: revoked.id,
        }])
        .await;
    Ok(revoked)
}

/// Whether an API key can still be used (for connections that may have missed its
/// revocation).
pub async fn key_active(state: &AppState, key_id: Uuid) -> Result<bool, ApiError> {
    Ok(api_keys::Entity::find_by_id(key_id)
        .one(state.db.conn())
        .await?
        .is_some_and(|key| key.is_usable(Utc::now())))
}

/// Resolves `X-API-Key` (or the `apiKey` of a WebSocket `connection_init`) to the viewer
/// it stands for. Unknown keys and wrong secrets answer alike; the other refusals say
/// why, since only the key's holder can get that far.
#[tracing::instrument(skip_all)]
pub async fn authenticate(
    state: &AppState,
    presented: &str,
    signed: SignedParts<'_>,
    client_ip: &str,
) -> Result<Viewer, ApiError> {
    let refused = |why: &str| ApiError::Unauthenticated(why.to_owned());
    let invalid = || refused("invalid API key");
    let presented = secrets::parse_presented(presented).ok_or_else(invalid)?;
    let prefix = match presented {
        Presented::Secret { prefix, .. } | Presented::Prefix(prefix) => prefix,
    };
    let Some((key, Some(user))) = api_keys::Entity::find()
        .filter(api_keys::Column::Prefix.eq(prefix))
        .find_also_related(users::Entity)
        .one(state.db.conn())
        .await?
    else {
        return Err(invalid());
    };
    let mut replay_id = None;
    match presented {
        Presented::Secret { secret, .. } => {
            if key.require_signature {
                return Err(refused(
                    "this key signs its requests: send only its prefix as X-API-Key, with \
                     X-Timestamp and X-Signature",
                ));
            }
            if !secrets::constant_time_eq(&secrets::hash_secret(secret), &key.secret_hash) {
                return Err(invalid());
            }
        }
        Presented::Prefix(_) => {
            if !key.require_signature {
                return Err(refused("send the key's whole secret as X-API-Key"));
            }
            let signature = verify_signed(state, &key, signed)?;
            replay_id = Some(signature);
        }
    }
    let now = Utc::now();
    if user.deleted_at.is_some() {
        return Err(invalid());
    }
    if key.revoked_at.is_some() {
        return Err(refused("this API key has been revoked"));
    }
    if !key.is_usable(now) {
        return Err(refused("this API key has expired"));
    }
    let allowed: Vec<ip_allowlist::Cidr> = key
        .allowed_ip_list()
        .iter()
        .filter_map(|entry| entry.parse().ok())
        .collect();
    if !key.allowed_ips.is_empty() && !ip_allowlist::allows(&allowed, client_ip) {
        return Err(refused(
            "this API key may not be used from this address (see its allowedIps)",
        ));
    }
    if let Some(signature) = replay_id {
        let ttl = Duration::from_secs(2 * u64::from(key.signature_window_secs.unsigned_abs()) + 1);
        if !state
            .replay_guard
            .first_use(&format!("{}:{signature}", key.prefix), ttl)
            .await
        {
            return Err(refused("this signed request was already used"));
        }
    }
    state.api_key_usage.touch(state, &key, now);
    Ok(Viewer::with_api_key(user, key))
}

/// Checks the timestamp window and the signature; returns the signature, normalised,
/// to be remembered against replay.
fn verify_signed(
    state: &AppState,
    key: &api_keys::Model,
    signed: SignedParts<'_>,
) -> Result<String, ApiError> {
    let refused = |why: String| ApiError::Unauthenticated(why);
    let (Some(timestamp), Some(signature)) = (signed.timestamp, signed.signature) else {
        return Err(refused(
            "a signed request needs X-Timestamp (unix milliseconds) and X-Signature".into(),
        ));
    };
    let timestamp = timestamp.trim();
    let millis: i64 = timestamp
        .parse()
        .map_err(|_| refused("X-Timestamp must be unix time in milliseconds".into()))?;
    let window_ms = i64::from(key.signature_window_secs) * 1000;
    let skew = Utc::now().timestamp_millis().saturating_sub(millis);
    if skew.abs() > window_ms {
        return Err(refused(format!(
            "the request's timestamp is more than {} s from the server's clock (see serverTime)",
            key.signature_window_secs
        )));
    }
    let Some(salt) = key.signing_salt.as_deref() else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "signing key {} has no salt",
            key.id
        )));
    };
    let secret = secrets::derived_secret(
        state.config.api_keys.signing_secret.expose().as_bytes(),
        key.id,
        &key.prefix,
        salt,
    );
    if !secrets::constant_time_eq(&secret.hash(), &key.secret_hash) {
        tracing::error!(key = %key.prefix, "a signing key's secret no longer derives: was API_KEY_SECRET changed?");
        return Err(refused("invalid API key".into()));
    }
    let payload = secrets::signing_payload(timestamp, signed.method, signed.path, signed.body);
    if !secrets::verify_signature(secret.expose(), &payload, signature) {
        return Err(refused("the request signature does not match".into()));
    }
    Ok(signature.trim().to_ascii_lowercase())
}

/// Keeps `lastUsedAt` without a write per request: at most one write a minute per key,
/// off the request path.
#[derive(Default)]
pub struct UsageTracker {
    written: Mutex<HashMap<Uuid, Instant>>,
}

impl UsageTracker {
    fn touch(&self, state: &AppState, key: &api_keys::Model, now: DateTime<Utc>) {
        let fresh = key
            .last_used_at
            .is_some_and(|at| (now - at).to_std().unwrap_or_default() < LAST_USED_GRANULARITY);
        if fresh {
            return;
        }
        {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            let instant = Instant::now();
            if written
                .get(&key.id)
                .is_some_and(|at| instant.duration_since(*at) < LAST_USED_GRANULARITY)
            {
                return;
            }
            if written.len() > 100_000 {
                written.retain(|_, at| instant.duration_since(*at) < LAST_USED_GRANULARITY);
            }
            written.insert(key.id, instant);
        }
        let (db, id) = (state.db.clone(), key.id);
        tokio::spawn(async move {
            let result = api_keys::Entity::update_many()
                .col_expr(api_keys::Column::LastUsedAt, Expr::value(now))
                .filter(api_keys::Column::Id.eq(id))
                .exec(db.conn())
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, "could not record API key use");
            }
        });
    }
}
