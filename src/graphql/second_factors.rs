//! Second factors and account recovery: TOTP, passkeys (WebAuthn), password reset.

use async_graphql::{Context, Object, SimpleObject, ID};

use super::accounts::{parse_id, AuthPayload};
use super::context::ContextExt;
use super::scalars::DateTime;
use crate::service::{passkeys, password_reset, two_factor};

/// WebAuthn options and authenticator responses travel as the library's `JSON` scalar,
/// in the shape of the browser's `navigator.credentials` API.
type Json = async_graphql::Json<serde_json::Value>;

/// A new TOTP secret, for an authenticator app. Shown once; 2FA is on only after
/// `confirmTotp`.
#[derive(SimpleObject)]
pub struct TotpSetup {
    /// The shared secret in base32, for typing into an app by hand.
    secret: String,
    /// The `otpauth://totp/...` URI to show as a QR code (SHA-1, 6 digits, 30 s).
    otpauth_uri: String,
}

/// A passkey (WebAuthn credential) registered to the viewer.
#[derive(SimpleObject)]
pub struct Passkey {
    /// Opaque identifier, for `removePasskey`.
    id: ID,
    /// The name given at registration (or "Passkey N").
    name: String,
    /// When it was registered.
    created_at: DateTime,
    /// The last sign-in with it; null if never used.
    last_used_at: Option<DateTime>,
}

impl From<entity::passkeys::Model> for Passkey {
    fn from(model: entity::passkeys::Model) -> Self {
        Passkey {
            id: ID(model.id.to_string()),
            name: model.name,
            created_at: model.created_at.into(),
            last_used_at: model.last_used_at.map(Into::into),
        }
    }
}

#[derive(Default)]
pub struct SecondFactorQuery;

#[Object]
impl SecondFactorQuery {
    /// The viewer's passkeys, oldest first. `UNAUTHENTICATED` without a session.
    async fn passkeys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Passkey>> {
        let viewer = ctx.viewer()?;
        let list = passkeys::list(ctx.state(), viewer).await?;
        Ok(list.into_iter().map(Passkey::from).collect())
    }
}

#[derive(Default)]
pub struct SecondFactorMutation;

#[Object]
impl SecondFactorMutation {
    /// Starts TOTP enrolment: a new secret and its `otpauth://` URI. 2FA is not on until
    /// `confirmTotp` succeeds; calling again replaces an unconfirmed secret. `CONFLICT`
    /// when 2FA is already on.
    async fn enable_totp(&self, ctx: &Context<'_>) -> async_graphql::Result<TotpSetup> {
        let viewer = ctx.viewer()?;
        let setup = two_factor::enable(ctx.state(), viewer).await?;
        Ok(TotpSetup {
            secret: setup.secret,
            otpauth_uri: setup.otpauth_uri,
        })
    }

    /// Turns 2FA on with a current code from the app, and returns ten single-use
    /// recovery codes: shown only this once. `BAD_USER_INPUT` (`code`) for a wrong code,
    /// `RATE_LIMITED` after repeated wrong codes, `CONFLICT` without `enableTotp` first.
    async fn confirm_totp(
        &self,
        ctx: &Context<'_>,
        code: String,
    ) -> async_graphql::Result<Vec<String>> {
        let viewer = ctx.viewer()?;
        Ok(two_factor::confirm(ctx.state(), viewer, code).await?)
    }

    /// Turns 2FA off, given a current TOTP code or an unused recovery code. Withdrawals
    /// pause for the security lock period. `TWO_FACTOR_REQUIRED` for a wrong code,
    /// `RATE_LIMITED` after repeated ones, `CONFLICT` when 2FA is off.
    async fn disable_totp(&self, ctx: &Context<'_>, code: String) -> async_graphql::Result<bool> {
        let viewer = ctx.viewer()?;
        Ok(two_factor::disable(ctx.state(), viewer, code).await?)
    }

    /// Starts registering a passkey: returns the `CreationChallengeResponse` to pass
    /// (its `publicKey`) to `navigator.credentials.create()`. The challenge expires after
    /// a few minutes and works once.
    async fn start_passkey_registration(&self, ctx: &Context<'_>) -> async_graphql::Result<Json> {
        let viewer = ctx.viewer()?;
        Ok(async_graphql::Json(
            passkeys::start_registration(ctx.state(), viewer).await?,
        ))
    }

    /// Finishes registering a passkey with the authenticator's response (the
    /// `PublicKeyCredential` as JSON). Withdrawals pause for the security lock period.
    /// `BAD_USER_INPUT` (`credential`) when it does not verify or no registration is in
    /// progress; `CONFLICT` for an authenticator already registered.
    async fn finish_passkey_registration(
        &self,
        ctx: &Context<'_>,
        credential: Json,
        #[graphql(desc = "A name to tell passkeys apart (1 to 64 characters).")] name: Option<
            String,
        >,
    ) -> async_graphql::Result<Passkey> {
        let viewer = ctx.viewer()?;
        let passkey =
            passkeys::finish_registration(ctx.state(), viewer, credential.0, name).await?;
        Ok(passkey.into())
    }

    /// Removes one of the viewer's passkeys. Withdrawals pause for the security lock
    /// period. `NOT_FOUND` for an unknown id or another user's passkey.
    async fn remove_passkey(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "passkey")?;
        Ok(passkeys::remove(ctx.state(), viewer, id).await?)
    }

    /// Starts a passwordless sign-in: returns the `RequestChallengeResponse` to pass (its
    /// `publicKey`) to `navigator.credentials.get()`. Needs no session. An address
    /// without an account or passkey gets options of the same shape (that no
    /// authenticator can answer), so the answer does not reveal who has one.
    async fn start_passkey_login(
        &self,
        ctx: &Context<'_>,
        email: String,
    ) -> async_graphql::Result<Json> {
        Ok(async_graphql::Json(
            passkeys::start_login(ctx.state(), &email).await?,
        ))
    }

    /// Finishes a passwordless sign-in with the authenticator's assertion and starts a
    /// session. `UNAUTHENTICATED` when it does not verify (the challenge is spent either
    /// way); repeated failures are `RATE_LIMITED` like password logins.
    async fn finish_passkey_login(
        &self,
        ctx: &Context<'_>,
        email: String,
        credential: Json,
    ) -> async_graphql::Result<AuthPayload> {
        let tokens =
            passkeys::finish_login(ctx.state(), &email, credential.0, &ctx.request().client)
                .await?;
        Ok(tokens.into())
    }

    /// E-mails a single-use password-reset token (valid for `PASSWORD_RESET_TTL_SECS`)
    /// when the address has an account. Always `true`, so the answer says nothing about
    /// who has an account; `RATE_LIMITED` when asked too often.
    async fn request_password_reset(
        &self,
        ctx: &Context<'_>,
        email: String,
    ) -> async_graphql::Result<bool> {
        Ok(password_reset::request(ctx.state(), &email, &ctx.request().client).await?)
    }

    /// Sets a new password with an e-mailed reset token, signs out every session and
    /// pauses withdrawals. `BAD_USER_INPUT` naming `token` (unknown, used or expired) or
    /// `newPassword`.
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        token: String,
        new_password: String,
    ) -> async_graphql::Result<bool> {
        Ok(password_reset::reset(ctx.state(), &token, new_password).await?)
    }
}
