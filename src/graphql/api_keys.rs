//! API keys: creating, listing and revoking them, and the key a request came with.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};

use super::access::api_key;
use super::accounts::parse_id;
use super::context::ContextExt;
use super::scalars::DateTime;
use crate::service::api_keys as service;
use entity::ApiScope as EntityScope;

/// What an API key may do. Fields a key may call show the scope they need with
/// `@apiKey(scope: ...)` in the schema; fields without `@apiKey` (managing API keys,
/// two-factor authentication, passkeys, sessions, passwords, the account) are closed
/// to every key.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ApiScope {
    /// Queries and subscriptions.
    Read,
    /// Placing, amending and cancelling orders.
    Trade,
    /// Withdrawals and the withdrawal address book.
    Withdraw,
}

impl From<ApiScope> for EntityScope {
    fn from(scope: ApiScope) -> Self {
        match scope {
            ApiScope::Read => EntityScope::Read,
            ApiScope::Trade => EntityScope::Trade,
            ApiScope::Withdraw => EntityScope::Withdraw,
        }
    }
}

impl From<EntityScope> for ApiScope {
    fn from(scope: EntityScope) -> Self {
        match scope {
            EntityScope::Read => ApiScope::Read,
            EntityScope::Trade => ApiScope::Trade,
            EntityScope::Withdraw => ApiScope::Withdraw,
        }
    }
}

/// A credential for programs. Its secret is shown once, at creation, and stored only
/// as a hash.
pub struct ApiKey(pub entity::api_keys::Model);

/// A credential for programs. Its secret is shown once, at creation, and stored only
/// as a hash.
#[Object]
impl ApiKey {
    /// Opaque identifier, for `revokeApiKey`.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The owner's name for the key.
    async fn label(&self) -> &str {
        &self.0.label
    }

    /// The public start of the secret (`tgk_...`). A key with `requireSignature` sends
    /// only this as `X-API-Key`; it is safe to show and log.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }

    /// What the key may do.
    async fn scopes(&self) -> Vec<ApiScope> {
        self.0
            .scope_set()
            .to_vec()
            .into_iter()
            .map(ApiScope::from)
            .collect()
    }

    /// Addresses and CIDR ranges (IPv4 or IPv6) the key may be used from; empty means
    /// any address.
    async fn allowed_ips(&self) -> Vec<String> {
        self.0.allowed_ip_list()
    }

    /// Whether every request must be signed with HMAC-SHA256 instead of sending the
    /// secret.
    async fn require_signature(&self) -> bool {
        self.0.require_signature
    }

    /// How far (in seconds, either way) a signed request's `X-Timestamp` may be from
    /// the server's clock. Meaningful only with `requireSignature`.
    async fn signature_window_seconds(&self) -> i32 {
        self.0.signature_window_secs
    }

    /// When the key was created.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }

    /// When the key stops working; null for never.
    async fn expires_at(&self) -> Option<DateTime> {
        self.0.expires_at.map(DateTime)
    }

    /// The last request made with the key, accurate to about a minute; null if unused.
    async fn last_used_at(&self) -> Option<DateTime> {
        self.0.last_used_at.map(DateTime)
    }

    /// When the key was revoked; null while it is active.
    async fn revoked_at(&self) -> Option<DateTime> {
        self.0.revoked_at.map(DateTime)
    }
}

/// A key just created, with its secret.
#[derive(SimpleObject)]
pub struct CreatedApiKey {
    /// The key.
    api_key: ApiKey,
    /// The whole secret, shown this once: it is stored only as a hash and cannot be
    /// recovered. Without `requireSignature`, send it as `X-API-Key`. With it, keep it
    /// to sign requests and send only `apiKey.prefix`.
    secret: String,
}

/// A key to create.
#[derive(InputObject)]
pub struct CreateApiKeyInput {
    /// 1 to 64 characters, for the owner's own reference.
    label: String,
    /// At least one scope.
    scopes: Vec<ApiScope>,
    /// Addresses or CIDR ranges (`203.0.113.7`, `203.0.113.0/24`, `2001:db8::/32`), at
    /// most 32; omitted or empty allows any address.
    allowed_ips: Option<Vec<String>>,
    /// When the key stops working (in the future); omitted for never.
    expires_at: Option<DateTime>,
    /// When true, the secret never travels: each request carries `X-API-Key: <prefix>`,
    /// `X-Timestamp` (unix ms) and `X-Signature` = hex HMAC-SHA256, keyed with the
    /// secret, of `timestamp + method + path + body` (path with its query string, as
    /// sent). Default false.
    require_signature: Option<bool>,
    /// The accepted clock difference for signed requests, 1 to 60 seconds (default 5).
    signature_window_seconds: Option<i32>,
}

#[derive(Default)]
pub struct ApiKeyQuery;

#[Object]
impl ApiKeyQuery {
    /// The signed-in user's API keys, revoked ones included, newest first. Needs a
    /// session: `FORBIDDEN` with an API key.
    async fn api_keys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiKey>> {
        let viewer = ctx.viewer()?;
        let keys = service::list(ctx.state(), viewer).await?;
        Ok(keys.into_iter().map(ApiKey).collect())
    }

    /// The API key this request authenticated with, so a program can see its own
    /// scopes and expiry; null when the request used a session or no credentials.
    #[graphql(directive = api_key::apply(None))]
    async fn current_api_key(&self, ctx: &Context<'_>) -> Option<ApiKey> {
        ctx.request()
            .viewer
            .as_ref()
            .and_then(|v| v.api_key.as_ref())
            .map(|access| ApiKey(access.key.clone()))
    }
}

#[derive(Default)]
pub struct ApiKeyMutation;

#[Object]
impl ApiKeyMutation {
    /// Creates an API key and returns its secret, shown this once. Needs a session
    /// (`FORBIDDEN` with an API key: keys cannot mint keys). `BAD_USER_INPUT` naming
    /// `input.label`, `input.scopes`, `input.allowedIps`, `input.expiresAt` or
    /// `input.signatureWindowSeconds`; `CONFLICT` beyond the number of active keys
    /// allowed per user.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        input: CreateApiKeyInput,
    ) -> async_graphql::Result<CreatedApiKey> {
        let viewer = ctx.viewer()?;
        let created = service::create(
            ctx.state(),
            viewer,
            service::NewApiKey {
                label: input.label,
                scopes: input.scopes.into_iter().map(EntityScope::from).collect(),
                allowed_ips: input.allowed_ips.unwrap_or_default(),
                expires_at: input.expires_at.map(|d| d.0),
                require_signature: input.require_signature.unwrap_or(false),
                signature_window_secs: input.signature_window_seconds,
            },
        )
        .await?;
        Ok(CreatedApiKey {
            secret: created.secret.expose().to_owned(),
            api_key: ApiKey(created.key),
        })
    }

    /// Revokes one of the signed-in user's keys; it stops working at once. Revoking a
    /// revoked key returns it unchanged. `NOT_FOUND` for an unknown id or another
    /// user's key; needs a session.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ApiKey> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "API key")?;
        Ok(ApiKey(service::revoke(ctx.state(), viewer, id).await?))
    }
}
