//! Privacy: exporting everything held about the signed-in user, and erasing it.

use async_graphql::{Context, Json, Object};

use super::context::ContextExt;
use crate::service::privacy as service;

#[derive(Default)]
pub struct PrivacyQuery;

#[Object]
impl PrivacyQuery {
    /// Everything tradegraph holds about the signed-in user, as one JSON document:
    /// account, sessions, API keys (never their secrets), balances, ledger entries,
    /// orders and fills. Recorded in the security log. Needs a session (`FORBIDDEN`
    /// with an API key).
    async fn export_my_data(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Json<serde_json::Value>> {
        let viewer = ctx.viewer()?;
        Ok(Json(service::export(ctx.state(), viewer).await?))
    }
}

#[derive(Default)]
pub struct PrivacyMutation;

#[Object]
impl PrivacyMutation {
    /// Erases the signed-in user's personal data (e-mail, display name, password,
    /// anti-phishing code, sessions, API keys) and signs them out everywhere; the
    /// account can never sign in again. Orders, fills, ledger entries and the audit log
    /// are kept under the account id as a pseudonym. Needs a session and the current
    /// password (`BAD_USER_INPUT` naming `password` when wrong). `CONFLICT` while the
    /// account holds a balance or open orders (withdraw and cancel first), and for an
    /// ADMIN (give up the role first).
    async fn delete_my_account(
        &self,
        ctx: &Context<'_>,
        password: String,
    ) -> async_graphql::Result<bool> {
        let viewer = ctx.viewer()?;
        Ok(service::delete_account(ctx.state(), viewer, password).await?)
    }
}
