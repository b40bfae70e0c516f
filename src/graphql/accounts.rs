//! Accounts and sessions: registration, login, token refresh, the viewer's profile,
//! session management and roles.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use uuid::Uuid;

use super::access::api_key;
use super::api_keys::ApiScope;
use super::context::ContextExt;
use super::scalars::DateTime;
use crate::error::ApiError;
use crate::service::{accounts, sessions};
use entity::Role as EntityRole;

/// A role beyond plain use of the exchange. Everyone holds `USER`.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "Role")]
pub enum RoleName {
    /// Every signed-in user.
    User,
    /// Publishes research and commentary, subject to compliance review.
    Advisor,
    /// Reviews advisors' content and KYC applications.
    ComplianceOfficer,
    /// Operates the exchange: markets, deposits, roles.
    Admin,
}

impl From<RoleName> for EntityRole {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::User => EntityRole::User,
            RoleName::Advisor => EntityRole::Advisor,
            RoleName::ComplianceOfficer => EntityRole::ComplianceOfficer,
            RoleName::Admin => EntityRole::Admin,
        }
    }
}

impl From<EntityRole> for RoleName {
    fn from(role: EntityRole) -> Self {
        match role {
            EntityRole::User => RoleName::User,
            EntityRole::Advisor => RoleName::Advisor,
            EntityRole::ComplianceOfficer => RoleName::ComplianceOfficer,
            EntityRole::Admin => RoleName::Admin,
        }
    }
}

/// How far a user's identity is verified; each tier has its own limits.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum KycTier {
    /// Nothing verified yet.
    Unverified,
    /// E-mail address verified.
    Basic,
    /// Identity and address verified.
    Intermediate,
    /// Source of funds verified.
    Advanced,
}

impl KycTier {
    fn from_column(value: &str) -> Self {
        match value {
            "BASIC" => KycTier::Basic,
            "INTERMEDIATE" => KycTier::Intermediate,
            "ADVANCED" => KycTier::Advanced,
            _ => KycTier::Unverified,
        }
    }
}

/// A tradegraph account, as seen by its owner (or an admin).
pub struct User(pub entity::users::Model);

/// A tradegraph account, as seen by its owner (or an admin).
#[Object]
impl User {
    /// Opaque, stable identifier.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The sign-in e-mail, normalised to lower case.
    async fn email(&self) -> &str {
        &self.0.email
    }

    /// The name shown to others.
    async fn display_name(&self) -> &str {
        &self.0.display_name
    }

    /// Every role held, always including `USER`.
    async fn roles(&self) -> Vec<RoleName> {
        self.0
            .role_set()
            .to_vec()
            .into_iter()
            .map(RoleName::from)
            .collect()
    }

    /// Whether logins need a second factor (TOTP or a recovery code).
    async fn two_factor_enabled(&self) -> bool {
        self.0.two_factor_enabled
    }

    /// The verification tier, which sets trading and withdrawal limits.
    async fn kyc_tier(&self) -> KycTier {
        KycTier::from_column(&self.0.kyc_tier)
    }

    /// The phrase included in every e-mail tradegraph sends this user, so they can tell
    /// real e-mails from phishing; null until set with `setAntiPhishingCode`.
    async fn anti_phishing_code(&self) -> Option<&str> {
        self.0.anti_phishing_code.as_deref()
    }

    /// When the account was created.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// The request rate tier (`RateLimit-*` headers show the budget in force).
    async fn rate_limit_tier(&self, ctx: &Context<'_>) -> super::rate_limits::RateLimitTier {
        crate::ratelimit::tier_of(&ctx.state().config.rate_limits, &self.0).into()
    }
}

/// A signed-in device or client. Revoking it ends its access and refresh tokens at once.
#[derive(SimpleObject)]
pub struct Session {
    /// Opaque identifier, for `revokeSession`.
    id: ID,
    /// A short description of the client, e.g. "Firefox 133 on Linux".
    device: String,
    /// The client's User-Agent as sent at login.
    user_agent: String,
    /// The IP address of the login or the latest refresh.
    ip: String,
    /// When the session started (the login).
    created_at: DateTime,
    /// Last activity, accurate to about a minute.
    last_seen_at: DateTime,
    /// When the session ends unless refreshed before.
    expires_at: DateTime,
    /// True for the session this request was made with.
    current: bool,
}

impl Session {
    fn new(model: entity::sessions::Model, current_id: Uuid) -> Self {
        Session {
            id: ID(model.id.to_string()),
            current: model.id == current_id,
            device: model.device,
            user_agent: model.user_agent,
            ip: model.ip,
            created_at: model.created_at.into(),
            last_seen_at: model.last_seen_at.into(),
            expires_at: model.expires_at.into(),
        }
    }
}

/// Tokens for a new or refreshed session.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// A short-lived JWT: send it as `Authorization: Bearer <accessToken>`, or as
    /// `{"authorization": "Bearer <accessToken>"}` in a WebSocket `connection_init`.
    access_token: String,
    /// An opaque token for `refreshSession`. Single use: each refresh returns a new one,
    /// and reusing a spent one revokes the session. Keep it out of reach of scripts.
    refresh_token: String,
    /// When `accessToken` expires.
    expires_at: DateTime,
    /// The signed-in user.
    user: User,
}

impl From<sessions::AuthTokens> for AuthPayload {
    fn from(tokens: sessions::AuthTokens) -> Self {
        AuthPayload {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_at: tokens.expires_at.into(),
            user: User(tokens.user),
        }
    }
}

/// A new account.
#[derive(InputObject)]
pub struct RegisterInput {
    /// A valid e-mail address; stored trimmed and in lower case, unique.
    email: String,
    /// At least 12 characters and not a well-known or easily guessed password.
    password: String,
    /// 1 to 64 characters.
    display_name: String,
}

/// Credentials for `login`.
#[derive(InputObject)]
pub struct LoginInput {
    /// The account's e-mail address (any case).
    email: String,
    /// The account's password.
    password: String,
    /// The current code of the authenticator app, when the account has 2FA.
    totp_code: Option<String>,
    /// A single-use recovery code, instead of `totpCode`.
    recovery_code: Option<String>,
}

pub(crate) fn parse_id(id: &ID, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id.as_str()).map_err(|_| ApiError::NotFound(what))
}

#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The signed-in user. `UNAUTHENTICATED` without a valid access token.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        Ok(User(ctx.viewer()?.user.clone()))
    }

    /// The signed-in user's active sessions, newest first, the current one marked.
    async fn sessions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Session>> {
        let viewer = ctx.viewer()?;
        let list = sessions::list(ctx.state(), viewer).await?;
        Ok(list
            .into_iter()
            .map(|s| Session::new(s, viewer.session_id))
            .collect())
    }
}

#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Creates an account and signs it in. `BAD_USER_INPUT` (naming `input.email`,
    /// `input.password` or `input.displayName`) for invalid input, `CONFLICT` when the
    /// e-mail is taken.
    async fn register(
        &self,
        ctx: &Context<'_>,
        input: RegisterInput,
    ) -> async_graphql::Result<AuthPayload> {
        let registration = accounts::Registration {
            email: input.email,
            password: input.password,
            display_name: input.display_name,
        };
        let tokens = accounts::register(ctx.state(), registration, &ctx.request().client).await?;
        Ok(tokens.into())
    }

    /// Signs in with e-mail and password. A wrong e-mail and a wrong password both answer
    /// `UNAUTHENTICATED`; repeated failures answer `RATE_LIMITED` with
    /// `retryAfterSeconds`. When the account has 2FA, a valid `totpCode` (each code works
    /// once) or an unused `recoveryCode` is needed too, else `TWO_FACTOR_REQUIRED`; wrong
    /// codes are throttled per account (`RATE_LIMITED`).
    async fn login(
        &self,
        ctx: &Context<'_>,
        input: LoginInput,
    ) -> async_graphql::Result<AuthPayload> {
        let credentials = accounts::Credentials {
            email: input.email,
            password: input.password,
            second_factor: crate::service::two_factor::Presented {
                totp_code: input.totp_code,
                recovery_code: input.recovery_code,
            },
        };
        let tokens = accounts::login(ctx.state(), credentials, &ctx.request().client).await?;
        Ok(tokens.into())
    }

    /// Exchanges a refresh token for a new token pair. The given token is spent;
    /// replaying a spent token revokes its whole session. `UNAUTHENTICATED` for an
    /// unknown, expired, spent or revoked token. Needs no access token.
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<AuthPayload> {
        let tokens = sessions::refresh(ctx.state(), &refresh_token, &ctx.request().client).await?;
        Ok(tokens.into())
    }

    /// Ends the current session; its access and refresh tokens stop working at once.
    async fn logout(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        Ok(sessions::logout(ctx.state(), ctx.viewer()?).await?)
    }

    /// Ends one of the viewer's sessions. `NOT_FOUND` for an unknown id, another user's
    /// session or one already ended.
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "session")?;
        Ok(sessions::revoke(ctx.state(), viewer, id).await?)
    }

    /// Changes the password after checking the current one, and signs out every other
    /// session; withdrawals pause for the security lock period. `BAD_USER_INPUT` naming
    /// `currentPassword` or `newPassword`.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> async_graphql::Result<bool> {
        let viewer = ctx.viewer()?;
        Ok(accounts::change_password(ctx.state(), viewer, current_password, new_password).await?)
    }

    /// Sets (or with null, clears) the anti-phishing code: 4 to 32 printable characters.
    async fn set_anti_phishing_code(
        &self,
        ctx: &Context<'_>,
        code: Option<String>,
    ) -> async_graphql::Result<User> {
        let viewer = ctx.viewer()?;
        Ok(User(
            accounts::set_anti_phishing_code(ctx.state(), viewer, code).await?,
        ))
    }

    /// Grants a role. ADMIN only (`FORBIDDEN` otherwise); `NOT_FOUND` for an unknown user.
    async fn grant_role(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        role: RoleName,
    ) -> async_graphql::Result<User> {
        change_role(ctx, user_id, role, true).await
    }

    /// Revokes a role. ADMIN only; `CONFLICT` when it would leave no ADMIN.
    async fn revoke_role(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        role: RoleName,
    ) -> async_graphql::Result<User> {
        change_role(ctx, user_id, role, false).await
    }
}

async fn change_role(
    ctx: &Context<'_>,
    user_id: ID,
    role: RoleName,
    grant: bool,
) -> async_graphql::Result<User> {
    let viewer = ctx.viewer_with_role(EntityRole::Admin)?;
    let user_id = parse_id(&user_id, "user")?;
    let user = accounts::set_role(ctx.state(), viewer, user_id, role.into(), grant).await?;
    Ok(User(user))
}
