//! KYC on the API: the viewer's limits, submitting and following an application, the
//! compliance officers' review queue, and transaction-monitoring alerts.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, Json, Object, SimpleObject, Upload, ID};
use uuid::Uuid;

use super::access::api_key;
use super::accounts::KycTier;
use super::api_keys::ApiScope;
use super::context::ContextExt;
use super::pagination;
use super::scalars::{DateTime, Decimal};
use crate::domain::kyc::{Status, Tier, TierLimits};
use crate::error::ApiError;
use crate::service::{kyc, monitoring};

impl From<Tier> for KycTier {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Unverified => KycTier::Unverified,
            Tier::Basic => KycTier::Basic,
            Tier::Intermediate => KycTier::Intermediate,
            Tier::Advanced => KycTier::Advanced,
        }
    }
}

impl From<KycTier> for Tier {
    fn from(tier: KycTier) -> Self {
        match tier {
            KycTier::Unverified => Tier::Unverified,
            KycTier::Basic => Tier::Basic,
            KycTier::Intermediate => Tier::Intermediate,
            KycTier::Advanced => Tier::Advanced,
        }
    }
}

/// What one KYC tier allows. Amounts are USD per UTC day; null means unlimited.
#[derive(SimpleObject)]
pub struct KycTierLimits {
    /// The tier these limits belong to.
    tier: KycTier,
    /// Whether orders may be placed.
    can_trade: bool,
    /// The most that may be withdrawn per UTC day, in USD; null for no limit.
    daily_withdrawal_usd: Option<Decimal>,
    /// The most that may be deposited per UTC day, in USD; null for no limit.
    daily_deposit_usd: Option<Decimal>,
}

impl KycTierLimits {
    fn new(tier: Tier, limits: &TierLimits) -> Self {
        KycTierLimits {
            tier: tier.into(),
            can_trade: limits.can_trade,
            daily_withdrawal_usd: limits.daily_withdrawal_usd.map(Decimal),
            daily_deposit_usd: limits.daily_deposit_usd.map(Decimal),
        }
    }
}

/// The viewer's KYC tier, what it allows, and what was used of it today (UTC).
#[derive(SimpleObject)]
pub struct KycLimits {
    /// The viewer's current tier.
    tier: KycTier,
    /// What the current tier allows.
    limits: KycTierLimits,
    /// USD value of today's withdrawals that count against the limit.
    withdrawn_today_usd: Decimal,
    /// USD value of today's deposits, at current prices (assets without a USD market
    /// are not counted).
    deposited_today_usd: Decimal,
    /// What may still be withdrawn today, in USD; null when unlimited.
    withdrawal_remaining_today_usd: Option<Decimal>,
    /// What may still be deposited today, in USD; null when unlimited.
    deposit_remaining_today_usd: Option<Decimal>,
    /// Every tier's limits, lowest first, so the panel can show what verifying unlocks.
    tiers: Vec<KycTierLimits>,
}

/// Where a KYC application stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum KycApplicationStatus {
    /// Waiting for the verification provider's result.
    Pending,
    /// Held for a compliance officer (e.g. a possible sanctions or PEP list match).
    InReview,
    /// Approved: the requested tier was granted.
    Approved,
    /// Rejected; a new application may be submitted.
    Rejected,
}

impl From<Status> for KycApplicationStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Pending => KycApplicationStatus::Pending,
            Status::InReview => KycApplicationStatus::InReview,
            Status::Approved => KycApplicationStatus::Approved,
            Status::Rejected => KycApplicationStatus::Rejected,
        }
    }
}

impl From<KycApplicationStatus> for Status {
    fn from(status: KycApplicationStatus) -> Self {
        match status {
            KycApplicationStatus::Pending => Status::Pending,
            KycApplicationStatus::InReview => Status::InReview,
            KycApplicationStatus::Approved => Status::Approved,
            KycApplicationStatus::Rejected => Status::Rejected,
        }
    }
}

/// Who moved an application.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum KycDecisionSource {
    /// The applicant, by submitting.
    Applicant,
    /// Automated screening (sanctions/PEP lists, blocked countries).
    Screening,
    /// The verification provider, through its webhook.
    Provider,
    /// A compliance officer.
    Officer,
}

/// One step in an application's history.
pub struct KycDecision(entity::kyc_decisions::Model);

/// One step in a KYC application's history, oldest first.
#[Object]
impl KycDecision {
    /// The status the application moved to (or stayed in, for a recorded provider
    /// result that changed nothing).
    async fn status(&self) -> KycApplicationStatus {
        Status::from_column(&self.0.status).into()
    }

    /// Who made this step.
    async fn source(&self) -> KycDecisionSource {
        match self.0.source.as_str() {
            "SCREENING" => KycDecisionSource::Screening,
            "PROVIDER" => KycDecisionSource::Provider,
            "OFFICER" => KycDecisionSource::Officer,
            _ => KycDecisionSource::Applicant,
        }
    }

    /// The reason given, if any.
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }

    /// When it was recorded.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

/// A document uploaded with an application.
#[derive(SimpleObject)]
pub struct KycDocument {
    /// Opaque identifier.
    id: ID,
    /// Hex SHA-256 of the file's bytes (the name it is stored under).
    sha256: String,
    /// The type recognised from the file's bytes: `image/png`, `image/jpeg` or
    /// `application/pdf`.
    content_type: String,
    /// Size in bytes.
    size_bytes: i64,
}

/// A sanctions or PEP list entry an applicant's name matched.
#[derive(SimpleObject)]
pub struct KycScreeningHit {
    /// The list entry's name (not the applicant's).
    name: String,
    /// `SANCTIONS` or `PEP`.
    list: String,
    /// Similarity from 0 to 1 (Jaro-Winkler over normalised tokens).
    score: f64,
}

/// The personal data of an application, decrypted for its owner and for compliance
/// officers.
#[derive(SimpleObject)]
pub struct KycPersonalData {
    /// Given name(s).
    first_name: String,
    /// Family name(s).
    last_name: String,
    /// `YYYY-MM-DD`.
    date_of_birth: String,
    /// Street address.
    address_line: String,
    /// City.
    city: String,
    /// Postal code.
    postal_code: String,
}

/// A KYC application.
pub struct KycApplication(kyc::Application);

/// A KYC application: the tier asked for, its status and history. Visible to its
/// applicant and to compliance officers.
#[Object]
impl KycApplication {
    /// Opaque identifier.
    async fn id(&self) -> ID {
        ID(self.0.row.id.to_string())
    }

    /// The applicant's user id.
    async fn user_id(&self) -> ID {
        ID(self.0.row.user_id.to_string())
    }

    /// Where the application stands.
    async fn status(&self) -> KycApplicationStatus {
        self.0.status().into()
    }

    /// The tier applied for.
    async fn requested_tier(&self) -> KycTier {
        Tier::from_column(&self.0.row.requested_tier).into()
    }

    /// ISO 3166-1 alpha-2 country of residence.
    async fn country(&self) -> &str {
        &self.0.row.country
    }

    /// The personal data given, decrypted. `INTERNAL` if the encryption key changed.
    async fn personal_data(&self, ctx: &Context<'_>) -> async_graphql::Result<KycPersonalData> {
        let data = kyc::personal_data(&ctx.state().config.kyc, &self.0)?;
        Ok(KycPersonalData {
            first_name: data.first_name,
            last_name: data.last_name,
            date_of_birth: data.date_of_birth.to_string(),
            address_line: data.address_line,
            city: data.city,
            postal_code: data.postal_code,
        })
    }

    /// Sanctions and PEP list entries the applicant's name matched; a match holds the
    /// application for review. Empty when none; `INTERNAL` if the encryption key changed.
    async fn screening_hits(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<KycScreeningHit>> {
        Ok(self
            .0
            .screening_hits(&ctx.state().config.kyc)?
            .into_iter()
            .map(|h| KycScreeningHit {
                name: h.name,
                list: h.list,
                score: h.score,
            })
            .collect())
    }

    /// The documents uploaded, in upload order.
    async fn documents(&self) -> Vec<KycDocument> {
        self.0
            .documents
            .iter()
            .map(|d| KycDocument {
                id: ID(d.id.to_string()),
                sha256: d.sha256.clone(),
                content_type: d.content_type.clone(),
                size_bytes: d.size_bytes,
            })
            .collect()
    }

    /// Every status change and recorded result, oldest first.
    async fn decisions(&self) -> Vec<KycDecision> {
        self.0.decisions.iter().cloned().map(KycDecision).collect()
    }

    /// When it was submitted.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.row.created_at)
    }

    /// When it last changed.
    async fn updated_at(&self) -> DateTime {
        DateTime(self.0.row.updated_at)
    }
}

/// A KYC application: personal data, country, the tier wanted and the documents.
#[derive(InputObject)]
pub struct SubmitKycInput {
    /// Given name(s), 1 to 200 characters.
    first_name: String,
    /// Family name(s), 1 to 200 characters.
    last_name: String,
    /// `YYYY-MM-DD`; applicants must be 18 or older.
    date_of_birth: String,
    /// Street address, 1 to 200 characters.
    address_line: String,
    /// City, 1 to 200 characters.
    city: String,
    /// Postal code, 1 to 200 characters.
    postal_code: String,
    /// ISO 3166-1 alpha-2 country of residence, e.g. `DE`.
    country: String,
    /// The tier applied for; by default the one above the viewer's current tier.
    requested_tier: Option<KycTier>,
    /// Identity, address and source-of-funds documents (PNG, JPEG or PDF), sent with
    /// the GraphQL multipart request spec. INTERMEDIATE needs at least one, ADVANCED
    /// at least two.
    documents: Option<Vec<Upload>>,
}

/// An officer's verdict on an application.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum KycReviewDecision {
    /// Grant the requested tier.
    Approve,
    /// Refuse it (a note saying why is required).
    Reject,
}

/// A transaction-monitoring rule.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum MonitoringRule {
    /// One deposit or withdrawal at or above the large-amount threshold.
    LargeAmount,
    /// A withdrawal taking out most of what was deposited shortly before.
    RapidInOut,
    /// Several amounts just under the large-amount threshold within a window.
    Structuring,
}

/// Where a compliance alert stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ComplianceAlertStatus {
    /// Waiting for an officer.
    Open,
    /// Closed as a false positive; no longer counts in the risk score.
    Dismissed,
    /// Closed as suspicious, for a report; keeps counting in the risk score.
    Escalated,
}

impl ComplianceAlertStatus {
    fn as_str(self) -> &'static str {
        match self {
            ComplianceAlertStatus::Open => monitoring::OPEN,
            ComplianceAlertStatus::Dismissed => monitoring::DISMISSED,
            ComplianceAlertStatus::Escalated => monitoring::ESCALATED,
        }
    }
}

/// A monitoring rule hit, queued for compliance officers.
pub struct ComplianceAlert(entity::compliance_alerts::Model);

/// A transaction-monitoring rule hit on a deposit or withdrawal, with its evidence.
#[Object]
impl ComplianceAlert {
    /// Opaque identifier.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The user whose transfer fired the rule.
    async fn user_id(&self) -> ID {
        ID(self.0.user_id.to_string())
    }

    /// The rule that fired.
    async fn rule(&self) -> MonitoringRule {
        match self.0.rule.as_str() {
            "RAPID_IN_OUT" => MonitoringRule::RapidInOut,
            "STRUCTURING" => MonitoringRule::Structuring,
            _ => MonitoringRule::LargeAmount,
        }
    }

    /// What this alert adds to the user's risk score.
    async fn score(&self) -> i32 {
        self.0.score
    }

    /// The amounts, times, transfer ids and thresholds that made the rule fire.
    async fn evidence(&self) -> Json<serde_json::Value> {
        Json(serde_json::from_str(&self.0.evidence).unwrap_or(serde_json::Value::Null))
    }

    /// Where the alert stands.
    async fn status(&self) -> ComplianceAlertStatus {
        match self.0.status.as_str() {
            monitoring::DISMISSED => ComplianceAlertStatus::Dismissed,
            monitoring::ESCALATED => ComplianceAlertStatus::Escalated,
            _ => ComplianceAlertStatus::Open,
        }
    }

    /// `ledger_entry` (a deposit) or `withdrawal`.
    async fn subject_type(&self) -> &str {
        &self.0.subject_type
    }

    /// The deposit's ledger entry id or the withdrawal id.
    async fn subject_id(&self) -> &str {
        &self.0.subject_id
    }

    /// The officer's note when closed; null while open.
    async fn resolution_note(&self) -> Option<&str> {
        self.0.resolution_note.as_deref()
    }

    /// When the rule fired.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// When an officer closed it; null while open.
    async fn resolved_at(&self) -> Option<DateTime> {
        self.0.resolved_at.map(DateTime)
    }
}

fn parse_id(field: &str, id: &ID) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id.as_str()).map_err(|_| ApiError::bad_input(field, "not a valid id"))
}

#[derive(Default)]
pub struct KycQuery;

#[Object]
impl KycQuery {
    /// The viewer's KYC tier, its limits and what was used today (UTC day).
    /// `UNAUTHENTICATED` without a viewer.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn kyc_limits(&self, ctx: &Context<'_>) -> async_graphql::Result<KycLimits> {
        let viewer = ctx.viewer()?;
        let state = ctx.state();
        let view = kyc::limits(state, viewer).await?;
        let remaining = |limit: Option<rust_decimal::Decimal>, used: rust_decimal::Decimal| {
            limit.map(|l| Decimal((l - used).max(rust_decimal::Decimal::ZERO)))
        };
        let table = &state.config.kyc.tier_limits;
        Ok(KycLimits {
            tier: view.tier.into(),
            withdrawal_remaining_today_usd: remaining(
                view.limits.daily_withdrawal_usd,
                view.withdrawals_today_usd,
            ),
            deposit_remaining_today_usd: remaining(
                view.limits.daily_deposit_usd,
                view.deposits_today_usd,
            ),
            limits: KycTierLimits::new(view.tier, &view.limits),
            withdrawn_today_usd: Decimal(view.withdrawals_today_usd),
            deposited_today_usd: Decimal(view.deposits_today_usd),
            tiers: Tier::ALL
                .into_iter()
                .map(|t| KycTierLimits::new(t, table.for_tier(t)))
                .collect(),
        })
    }

    /// The viewer's latest KYC application with its history; null when they never
    /// applied.
    async fn kyc_application(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<KycApplication>> {
        let viewer = ctx.viewer()?;
        Ok(kyc::my_application(ctx.state(), viewer)
            .await?
            .map(KycApplication))
    }

    /// Applications for compliance officers, oldest first: by default the open ones
    /// (PENDING and IN_REVIEW). COMPLIANCE_OFFICER only (`FORBIDDEN` otherwise);
    /// `first` is at most 200.
    async fn kyc_review_queue(
        &self,
        ctx: &Context<'_>,
        status: Option<KycApplicationStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, KycApplication>> {
        let viewer = ctx.viewer()?;
        let page = pagination::page(first, after, None, None)?;
        let mut rows = kyc::review_queue(
            ctx.state(),
            viewer,
            status.map(Into::into),
            page.after,
            page.limit + 1,
        )
        .await?;
        let has_next = rows.len() as u64 > page.limit;
        rows.truncate(page.limit as usize);
        let mut connection = Connection::new(page.after.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter()
                .map(|app| Edge::new(pagination::encode_cursor(app.row.id), KycApplication(app))),
        );
        Ok(connection)
    }

    /// Transaction-monitoring alerts, oldest first: by default the OPEN ones, optionally
    /// one user's. COMPLIANCE_OFFICER only (`FORBIDDEN` otherwise); `first` is at most
    /// 200.
    async fn compliance_alerts(
        &self,
        ctx: &Context<'_>,
        status: Option<ComplianceAlertStatus>,
        user_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, ComplianceAlert>> {
        let viewer = ctx.viewer()?;
        let page = pagination::page(first, after, None, None)?;
        let user_id = user_id.map(|id| parse_id("userId", &id)).transpose()?;
        let mut rows = monitoring::alerts(
            ctx.state(),
            viewer,
            status.map(|s| s.as_str()),
            user_id,
            page.after,
            page.limit + 1,
        )
        .await?;
        let has_next = rows.len() as u64 > page.limit;
        rows.truncate(page.limit as usize);
        let mut connection = Connection::new(page.after.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter()
                .map(|row| Edge::new(pagination::encode_cursor(row.id), ComplianceAlert(row))),
        );
        Ok(connection)
    }

    /// A user's transaction-monitoring risk score, 0 to 100: the scores of their open
    /// and escalated alerts of the last 90 days, capped. COMPLIANCE_OFFICER only.
    async fn user_risk_score(&self, ctx: &Context<'_>, user_id: ID) -> async_graphql::Result<i32> {
        ctx.viewer_with_role(entity::Role::ComplianceOfficer)?;
        let user_id = parse_id("userId", &user_id)?;
        Ok(monitoring::risk_score(ctx.state().db.conn(), user_id).await? as i32)
    }
}

#[derive(Default)]
pub struct KycMutation;

#[Object]
impl KycMutation {
    /// Applies for a higher KYC tier. Send it as a GraphQL multipart request
    /// (`multipart/form-data` with `operations`, `map` and the files) with a
    /// `GraphQL-Preflight: 1` header; at most `KYC_MAX_UPLOAD_FILES` files of
    /// `KYC_MAX_UPLOAD_BYTES` each, PNG, JPEG or PDF by content. A name matching the
    /// sanctions/PEP list holds it IN_REVIEW; a blocked country rejects it.
    /// `BAD_USER_INPUT` (naming the field) for invalid data or files, `CONFLICT` while
    /// another application is open.
    async fn submit_kyc(
        &self,
        ctx: &Context<'_>,
        input: SubmitKycInput,
    ) -> async_graphql::Result<KycApplication> {
        let viewer = ctx.viewer()?;
        let current = Tier::from_column(&viewer.user.kyc_tier);
        let requested_tier = match input.requested_tier {
            Some(tier) => tier.into(),
            None => match current {
                Tier::Unverified => Tier::Basic,
                Tier::Basic => Tier::Intermediate,
                Tier::Intermediate | Tier::Advanced => Tier::Advanced,
            },
        };
        let date_of_birth =
            chrono::NaiveDate::parse_from_str(input.date_of_birth.trim(), "%Y-%m-%d")
                .map_err(|_| ApiError::bad_input("input.dateOfBirth", "a date as YYYY-MM-DD"))?;
        let mut documents = Vec::new();
        for (i, upload) in input.documents.unwrap_or_default().iter().enumerate() {
            let value = upload.value(ctx).map_err(|_| {
                ApiError::bad_input(
                    format!("input.documents.{i}"),
                    "not an uploaded file of this request",
                )
            })?;
            documents.push(value.content);
        }
        let application = kyc::submit(
            ctx.state(),
            viewer,
            kyc::SubmitInput {
                personal: kyc::PersonalData {
                    first_name: input.first_name,
                    last_name: input.last_name,
                    date_of_birth,
                    address_line: input.address_line,
                    city: input.city,
                    postal_code: input.postal_code,
                },
                country: input.country,
                requested_tier,
                documents,
            },
        )
        .await?;
        Ok(KycApplication(application))
    }

    /// A compliance officer approves (granting the requested tier) or rejects (a note
    /// is required) an open application. COMPLIANCE_OFFICER only (`FORBIDDEN`, also on
    /// one's own application); `NOT_FOUND` for an unknown id; `CONFLICT` when already
    /// decided or when the country is blocked.
    async fn review_kyc(
        &self,
        ctx: &Context<'_>,
        id: ID,
        decision: KycReviewDecision,
        note: Option<String>,
    ) -> async_graphql::Result<KycApplication> {
        let viewer = ctx.viewer()?;
        let id = parse_id("id", &id)?;
        let decision = match decision {
            KycReviewDecision::Approve => kyc::Decision::Approve,
            KycReviewDecision::Reject => kyc::Decision::Reject,
        };
        let application = kyc::review(ctx.state(), viewer, id, decision, note).await?;
        Ok(KycApplication(application))
    }

    /// Closes an open monitoring alert as DISMISSED or ESCALATED, with a note.
    /// COMPLIANCE_OFFICER only; `NOT_FOUND` for an unknown id; `CONFLICT` when closed
    /// already; `BAD_USER_INPUT` for OPEN.
    async fn resolve_compliance_alert(
        &self,
        ctx: &Context<'_>,
        id: ID,
        resolution: ComplianceAlertStatus,
        note: String,
    ) -> async_graphql::Result<ComplianceAlert> {
        let viewer = ctx.viewer()?;
        let id = parse_id("id", &id)?;
        if resolution == ComplianceAlertStatus::Open {
            return Err(ApiError::bad_input("resolution", "DISMISSED or ESCALATED").into());
        }
        let alert =
            monitoring::resolve_alert(ctx.state(), viewer, id, resolution.as_str(), note).await?;
        Ok(ComplianceAlert(alert))
    }
}
