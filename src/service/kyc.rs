//! KYC: applications with encrypted personal data and documents, sanctions screening,
//! the compliance officers' review, the provider's webhook, and the tier limits that
//! trading, deposits and withdrawals are held to.
//!
//! Withdrawals live in another module: it calls [`check_withdrawal`] before holding
//! funds and [`super::monitoring::on_withdrawal`] after, in its own transaction.

use std::io::Read;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use rand::RngCore;
use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use crate::auth::Viewer;
use crate::config::{Config, KycConfig};
use crate::domain::kyc::{self as rules, DocumentType, LimitRefusal, Status, Tier, TierLimits};
use crate::domain::screening;
use crate::error::ApiError;
use crate::state::AppState;
use entity::{
    journal_entries, kyc_applications, kyc_decisions, kyc_documents, kyc_webhook_events, markets,
    users, Role,
};

/// What an applicant tells us about themselves. Stored only encrypted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PersonalData {
    pub first_name: String,
    pub last_name: String,
    pub date_of_birth: NaiveDate,
    pub address_line: String,
    pub city: String,
    pub postal_code: String,
}

impl PersonalData {
    pub fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

pub struct SubmitInput {
    pub personal: PersonalData,
    pub country: String,
    pub requested_tier: Tier,
    /// The uploaded files, in the order given (already within the HTTP layer's size and
    /// count caps).
    pub documents: Vec<std::fs::File>,
}

/// An application with its history and documents.
#[derive(Clone, Debug)]
pub struct Application {
    pub row: kyc_applications::Model,
    pub decisions: Vec<kyc_decisions::Model>,
    pub documents: Vec<kyc_documents::Model>,
}

impl Application {
    pub fn status(&self) -> Status {
        Status::from_column(&self.row.status)
    }

    /// The list entries matched, decrypted: a matched entry's name is usually the
    /// applicant's own, so it is stored encrypted like the rest of their data.
    pub fn screening_hits(&self, config: &KycConfig) -> Result<Vec<ScreeningHit>, ApiError> {
        let plain = open(config.encryption_key.expose(), &self.row.screening_hits)?;
        serde_json::from_slice(&plain).map_err(ApiError::internal)
    }
}

/// A sanctions or PEP list entry an applicant matched (the entry's name, not theirs).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScreeningHit {
    pub name: String,
    pub list: String,
    pub score: f64,
}

// ---------------------------------------------------------------------------------------
// Limits

/// A user's tier, its limits and what was used today (UTC day), in USD.
#[derive(Clone, Debug)]
pub struct LimitsView {
    pub tier: Tier,
    pub limits: TierLimits,
    pub deposits_today_usd: Decimal,
    pub withdrawals_today_usd: Decimal,
}

/// The viewer's tier, limits and usage today.
pub async fn limits(state: &AppState, viewer: &Viewer) -> Result<LimitsView, ApiError> {
    let user = current_user(state.db.conn(), viewer.user_id()).await?;
    let tier = Tier::from_column(&user.kyc_tier);
    Ok(LimitsView {
        tier,
        limits: state.config.kyc.tier_limits.for_tier(tier).clone(),
        deposits_today_usd: deposits_used_today(state.db.conn(), user.id).await?,
        withdrawals_today_usd: withdrawals_used_today(state.db.conn(), user.id).await?,
    })
}

fn limit_error(refusal: LimitRefusal) -> ApiError {
    ApiError::Forbidden(refusal.to_string())
}

/// Whether the viewer's tier may trade. Reads no row: the viewer carries the user row of
/// this request. Called once at the start of order placement.
pub fn check_can_trade(config: &Config, viewer: &Viewer) -> Result<(), ApiError> {
    let limits = &config.kyc.tier_limits;
    if !limits.restricts_trading() {
        return Ok(());
    }
    rules::check_trading(limits, Tier::from_column(&viewer.user.kyc_tier)).map_err(limit_error)
}

/// Refuses (`FORBIDDEN`, with the reason and what remains today) a withdrawal worth
/// `usd_amount` that would take the user past their tier's daily withdrawal limit.
/// Call it inside the withdrawal's transaction, before holding the funds.
pub async fn check_withdrawal(
    txn: &DatabaseTransaction,
    config: &KycConfig,
    user_id: Uuid,
    usd_amount: Decimal,
) -> Result<(), ApiError> {
    let tier = Tier::from_column(&current_user(txn, user_id).await?.kyc_tier);
    let used = withdrawals_used_today(txn, user_id).await?;
    rules::check_daily(
        tier,
        config.tier_limits.for_tier(tier).daily_withdrawal_usd,
        used,
        usd_amount,
    )
    .map_err(limit_error)
}

/// Refuses (`FORBIDDEN`) a deposit worth `usd_amount` above the tier's daily deposit
/// limit. For deposit flows the user starts (deposit addresses, card top-ups); funds that
/// already arrived are credited and monitored instead.
pub async fn check_deposit(
    txn: &DatabaseTransaction,
    config: &KycConfig,
    user_id: Uuid,
    usd_amount: Decimal,
) -> Result<(), ApiError> {
    let tier = Tier::from_column(&current_user(txn, user_id).await?.kyc_tier);
    let used = deposits_used_today(txn, user_id).await?;
    rules::check_daily(
        tier,
        config.tier_limits.for_tier(tier).daily_deposit_usd,
        used,
        usd_amount,
    )
    .map_err(limit_error)
}

fn start_of_today() -> DateTime<Utc> {
    let now = Utc::now();
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|midnight| midnight.and_utc())
        .unwrap_or(now)
}

/// The USD value of today's (UTC) deposits, from the ledger, at current prices.
/// Deposits of assets without a USD price are left out.
pub async fn deposits_used_today<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
) -> Result<Decimal, ApiError> {
    let entries = journal_entries::Entity::find()
        .filter(journal_entries::Column::Kind.eq(super::funds::DEPOSIT))
        .filter(journal_entries::Column::UserId.eq(user_id))
        .filter(journal_entries::Column::CreatedAt.gte(start_of_today()))
        .all(conn)
        .await?;
    let mut total = Decimal::ZERO;
    for entry in entries {
        if let Some(usd) = usd_value(conn, &entry.asset, entry.amount.0).await? {
            total += usd;
        }
    }
    Ok(total)
}

/// The USD value of today's (UTC) withdrawals that count against the limit.
///
/// Withdrawals are built in their own module and table; until that lands this answers
/// zero. It is to sum today's PENDING, PROCESSING and COMPLETED withdrawals (not the
/// cancelled or failed ones) at their USD value when requested.
pub async fn withdrawals_used_today<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
) -> Result<Decimal, ApiError> {
    // The same rolling 24 hours the withdrawal limit is enforced over.
    super::withdrawals::used_today(conn, user_id).await
}

/// The value of `amount` of `asset` in USD at the last trade price of `<asset>-USD`;
/// `None` when there is no such price.
pub async fn usd_value<C: ConnectionTrait>(
    conn: &C,
    asset: &str,
    amount: Decimal,
) -> Result<Option<Decimal>, ApiError> {
    if asset == "USD" {
        return Ok(Some(amount));
    }
    let market = markets::Entity::find_by_id(format!("{asset}-USD"))
        .one(conn)
        .await?;
    Ok(market
        .and_then(|m| m.last_price)
        .and_then(|price| price.0.checked_mul(amount)))
}

async fn current_user<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<users::Model, ApiError> {
    users::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound("user"))
}

// ---------------------------------------------------------------------------------------
// Applications

const MAX_FIELD_CHARS: usize = 200;

fn validate(input: &SubmitInput, current: Tier, config: &KycConfig) -> Result<String, ApiError> {
    let p = &input.personal;
    for (field, value) in [
        ("input.firstName", &p.first_name),
        ("input.lastName", &p.last_name),
        ("input.addressLine", &p.address_line),
        ("input.city", &p.city),
        ("input.postalCode", &p.postal_code),
    ] {
        let trimmed = value.trim();
        if trimmed.is_empty() || trimmed.chars().count() > MAX_FIELD_CHARS {
            return Err(ApiError::bad_input(
                field,
                format!("must be 1 to {MAX_FIELD_CHARS} characters"),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(ApiError::bad_input(
                field,
                "must not hold control characters",
            ));
        }
    }
    let today = Utc::now().date_naive();
    let adult = today
        .checked_sub_months(chrono::Months::new(18 * 12))
        .is_some_and(|limit| p.date_of_birth <= limit);
    let plausible = today
        .checked_sub_months(chrono::Months::new(130 * 12))
        .is_some_and(|limit| p.date_of_birth >= limit);
    if !adult || !plausible {
        return Err(ApiError::bad_input(
            "input.dateOfBirth",
            "applicants must be at least 18 years old",
        ));
    }
    let country = rules::country_code(&input.country).ok_or_else(|| {
        ApiError::bad_input("input.country", "an ISO 3166-1 alpha-2 code, e.g. DE")
    })?;
    if input.requested_tier <= current {
        return Err(ApiError::bad_input(
            "input.requestedTier",
            format!("you already hold {current}; ask for a higher tier"),
        ));
    }
    let needed = input.requested_tier.required_documents();
    if input.documents.len() < needed {
        return Err(ApiError::bad_input(
            "input.documents",
            format!(
                "{} needs at least {needed} document(s)",
                input.requested_tier
            ),
        ));
    }
    if input.documents.len() > config.max_upload_files {
        return Err(ApiError::bad_input(
            "input.documents",
            format!("at most {} documents", config.max_upload_files),
        ));
    }
    Ok(country)
}

/// A document read, checked and ready to store.
struct Checked {
    sha256: String,
    kind: DocumentType,
    bytes: Vec<u8>,
}

/// Reads every upload, refusing one that is too large or is not PNG, JPEG or PDF by its
/// own bytes (whatever name or type the client gave it).
async fn read_documents(
    files: Vec<std::fs::File>,
    max_bytes: usize,
) -> Result<Vec<Checked>, ApiError> {
    let read = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|file| {
                let mut bytes = Vec::new();
                file.take(max_bytes as u64 + 1).read_to_end(&mut bytes)?;
                Ok(bytes)
            })
            .collect::<std::io::Result<Vec<Vec<u8>>>>()
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let mut checked = Vec::with_capacity(read.len());
    for (i, bytes) in read.into_iter().enumerate() {
        let field = format!("input.documents.{i}");
        if bytes.len() > max_bytes {
            return Err(ApiError::bad_input(
                field,
                format!("larger than {max_bytes} bytes"),
            ));
        }
        let kind = rules::sniff(&bytes).ok_or_else(|| {
            ApiError::bad_input(field, "only PNG, JPEG and PDF files are accepted")
        })?;
        checked.push(Checked {
            sha256: hex::encode(Sha256::digest(&bytes)),
            kind,
            bytes,
        });
    }
    Ok(checked)
}

/// Stores a document encrypted under its content hash, once: the same file uploaded
/// twice is one file on disk. Written to a temporary name first, then renamed, so a
/// crash never leaves a half-written document under a valid name.
async fn store_document(dir: &Path, key: &[u8; 32], doc: &Checked) -> Result<(), ApiError> {
    let shard = dir.join(&doc.sha256[..2]);
    let path = shard.join(&doc.sha256);
    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Ok(());
    }
    tokio::fs::create_dir_all(&shard)
        .await
        .map_err(ApiError::internal)?;
    let sealed = seal(key, &doc.bytes)?;
    let temp: PathBuf = shard.join(format!(".{}.{}.tmp", doc.sha256, Uuid::new_v4().simple()));
    tokio::fs::write(&temp, sealed.as_bytes())
        .await
        .map_err(ApiError::internal)?;
    tokio::fs::rename(&temp, &path)
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

/// Encrypts with AES-256-GCM under a fresh random nonce: base64 of nonce || ciphertext.
pub fn seal(key: &[u8; 32], plaintext: &[u8]) -> Result<String, ApiError> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(&Nonce::from(nonce), plaintext)
        .map_err(|_| ApiError::internal(anyhow::anyhow!("encryption failed")))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ciphertext);
    Ok(STANDARD.encode(out))
}

/// Decrypts what [`seal`] produced; fails on a wrong key or altered data.
pub fn open(key: &[u8; 32], sealed: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = STANDARD
        .decode(sealed)
        .map_err(|_| ApiError::internal(anyhow::anyhow!("sealed data is not base64")))?;
    if bytes.len() < 12 {
        return Err(ApiError::internal(anyhow::anyhow!("sealed data too short")));
    }
    let (nonce, ciphertext) = bytes.split_at(12);
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| ApiError::internal(anyhow::anyhow!("sealed data too short")))?;
    Aes256Gcm::new(key.into())
        .decrypt(&Nonce::from(nonce), ciphertext)
        .map_err(|_| ApiError::internal(anyhow::anyhow!("decryption failed (wrong key?)")))
}

/// The personal data of an application, decrypted.
pub fn personal_data(config: &KycConfig, app: &Application) -> Result<PersonalData, ApiError> {
    let plain = open(config.encryption_key.expose(), &app.row.personal_data)?;
    serde_json::from_slice(&plain).map_err(ApiError::internal)
}

async fn load_list(path: &Path) -> Result<Vec<screening::ListEntry>, ApiError> {
    let csv = tokio::fs::read_to_string(path).await.map_err(|e| {
        ApiError::internal(anyhow::anyhow!(
            "cannot read the sanctions list at {}: {e}",
            path.display()
        ))
    })?;
    screening::parse_list(&csv)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("the sanctions list is malformed: {e}")))
}

/// Submits an application: validates, stores the documents, screens the name, and
/// queues the application (PENDING), holds it for review (IN_REVIEW, on a screening
/// hit) or rejects it (a blocked country). One open application per user (`CONFLICT`).
#[tracing::instrument(skip_all, fields(user = %viewer.user_id()))]
pub async fn submit(
    state: &AppState,
    viewer: &Viewer,
    input: SubmitInput,
) -> Result<Application, ApiError> {
    let config = &state.config.kyc;
    let user_id = viewer.user_id();
    let current = Tier::from_column(&current_user(state.db.conn(), user_id).await?.kyc_tier);
    let country = validate(&input, current, config)?;
    if open_application(state.db.conn(), user_id).await?.is_some() {
        return Err(ApiError::Conflict(
            "an application is already under way; wait for its decision".into(),
        ));
    }
    let SubmitInput {
        mut personal,
        requested_tier,
        documents,
        ..
    } = input;
    for value in [
        &mut personal.first_name,
        &mut personal.last_name,
        &mut personal.address_line,
        &mut personal.city,
        &mut personal.postal_code,
    ] {
        *value = value.trim().to_owned();
    }
    let documents = read_documents(documents, config.max_upload_bytes).await?;
    for doc in &documents {
        store_document(&config.upload_dir, config.encryption_key.expose(), doc).await?;
    }
    let list = load_list(&config.sanctions_list_path).await?;
    let hits: Vec<ScreeningHit> =
        screening::screen(&personal.full_name(), &list, config.match_threshold)
            .into_iter()
            .map(|h| ScreeningHit {
                name: h.name,
                list: h.list,
                score: h.score,
            })
            .collect();
    let blocked = config.blocked_countries.contains(&country);
    let status = rules::initial_status(!hits.is_empty(), blocked);
    let sealed = seal(
        config.encryption_key.expose(),
        &serde_json::to_vec(&personal).map_err(ApiError::internal)?,
    )?;
    let hits_json = seal(
        config.encryption_key.expose(),
        &serde_json::to_vec(&hits).map_err(ApiError::internal)?,
    )?;
    let docs: Vec<(String, &'static str, i64)> = documents
        .iter()
        .map(|d| (d.sha256.clone(), d.kind.mime(), d.bytes.len() as i64))
        .collect();
    let id = Uuid::now_v7();
    state
        .db
        .write(|txn| {
            let (country, sealed, hits_json, docs) = (
                country.clone(),
                sealed.clone(),
                hits_json.clone(),
                docs.clone(),
            );
            let (hit_count, doc_count) = (hits.len(), docs.len());
            Box::pin(async move {
                // Under the user's row lock, so two submissions racing each other
                // cannot both find no open application.
                let mut user = users::Entity::find_by_id(user_id);
                if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
                    user = user.lock_exclusive();
                }
                user.one(txn).await?.ok_or(ApiError::NotFound("user"))?;
                if open_application(txn, user_id).await?.is_some() {
                    return Err(ApiError::Conflict(
                        "an application is already under way; wait for its decision".into(),
                    ));
                }
                let now = Utc::now();
                kyc_applications::ActiveModel {
                    id: Set(id),
                    user_id: Set(user_id),
                    status: Set(status.as_str().to_owned()),
                    requested_tier: Set(requested_tier.as_str().to_owned()),
                    country: Set(country),
                    personal_data: Set(sealed),
                    screening_hits: Set(hits_json),
                    last_decision_at: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(txn)
                .await?;
                for (sha256, mime, size) in docs {
                    kyc_documents::ActiveModel {
                        id: Set(Uuid::now_v7()),
                        application_id: Set(id),
                        sha256: Set(sha256),
                        content_type: Set(mime.to_owned()),
                        size_bytes: Set(size),
                        created_at: Set(now),
                    }
                    .insert(txn)
                    .await?;
                }
                add_decision(txn, id, Status::Pending, "APPLICANT", Some(user_id), None).await?;
                if status != Status::Pending {
                    let note = if blocked {
                        "applications from this country are not accepted"
                    } else {
                        "possible sanctions or PEP list match: held for review"
                    };
                    add_decision(txn, id, status, "SCREENING", None, Some(note.to_owned())).await?;
                }
                audit::record(
                    txn,
                    AuditEntry::new("kyc.submitted", "kyc_application", id)
                        .actor(user_id)
                        .owner(user_id)
                        .details(serde_json::json!({
                            "requestedTier": requested_tier.as_str(),
                            "documents": doc_count,
                            "status": status.as_str(),
                            "screeningHits": hit_count,
                            "countryBlocked": blocked,
                        })),
                )
                .await?;
                Ok(())
            })
        })
        .await?;
    application(state.db.conn(), id).await
}

async fn add_decision(
    txn: &DatabaseTransaction,
    application_id: Uuid,
    status: Status,
    source: &str,
    actor_id: Option<Uuid>,
    note: Option<String>,
) -> Result<(), ApiError> {
    kyc_decisions::ActiveModel {
        id: Set(Uuid::now_v7()),
        application_id: Set(application_id),
        status: Set(status.as_str().to_owned()),
        source: Set(source.to_owned()),
        actor_id: Set(actor_id),
        note: Set(note),
        created_at: Set(Utc::now()),
    }
    .insert(txn)
    .await?;
    Ok(())
}

async fn open_application<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
) -> Result<Option<kyc_applications::Model>, ApiError> {
    Ok(kyc_applications::Entity::find()
        .filter(kyc_applications::Column::UserId.eq(user_id))
        .filter(
            kyc_applications::Column::Status
                .is_in([Status::Pending.as_str(), Status::InReview.as_str()]),
        )
        .one(conn)
        .await?)
}

/// One application with its history (oldest first) and documents.
pub async fn application<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Application, ApiError> {
    let row = kyc_applications::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound("KYC application"))?;
    with_history(conn, row).await
}

async fn with_history<C: ConnectionTrait>(
    conn: &C,
    row: kyc_applications::Model,
) -> Result<Application, ApiError> {
    let decisions = kyc_decisions::Entity::find()
        .filter(kyc_decisions::Column::ApplicationId.eq(row.id))
        .order_by_asc(kyc_decisions::Column::Id)
        .all(conn)
        .await?;
    let documents = kyc_documents::Entity::find()
        .filter(kyc_documents::Column::ApplicationId.eq(row.id))
        .order_by_asc(kyc_documents::Column::Id)
        .all(conn)
        .await?;
    Ok(Application {
        row,
        decisions,
        documents,
    })
}

/// The viewer's latest application, if any.
pub async fn my_application(
    state: &AppState,
    viewer: &Viewer,
) -> Result<Option<Application>, ApiError> {
    let row = kyc_applications::Entity::find()
        .filter(kyc_applications::Column::UserId.eq(viewer.user_id()))
        .order_by_desc(kyc_applications::Column::Id)
        .one(state.db.conn())
        .await?;
    match row {
        Some(row) => Ok(Some(with_history(state.db.conn(), row).await?)),
        None => Ok(None),
    }
}

fn require_officer(viewer: &Viewer) -> Result<(), ApiError> {
    if viewer.has_role(Role::ComplianceOfficer) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this needs the COMPLIANCE_OFFICER role".into(),
        ))
    }
}

/// One application for a compliance officer (`FORBIDDEN` for others).
pub async fn application_for_officer(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
) -> Result<Application, ApiError> {
    require_officer(viewer)?;
    application(state.db.conn(), id).await
}

/// Open applications (PENDING and IN_REVIEW, or the one status asked for), oldest first
/// so the queue is worked in order; strictly after `after_id` when given.
pub async fn review_queue(
    state: &AppState,
    viewer: &Viewer,
    status: Option<Status>,
    after_id: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Application>, ApiError> {
    require_officer(viewer)?;
    let statuses: Vec<&str> = match status {
        Some(status) => vec![status.as_str()],
        None => vec![Status::Pending.as_str(), Status::InReview.as_str()],
    };
    let mut query =
        kyc_applications::Entity::find().filter(kyc_applications::Column::Status.is_in(statuses));
    if let Some(after) = after_id {
        query = query.filter(kyc_applications::Column::Id.gt(after));
    }
    let rows = query
        .order_by_asc(kyc_applications::Column::Id)
        .limit(limit)
        .all(state.db.conn())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(with_history(state.db.conn(), row).await?);
    }
    Ok(out)
}

/// An officer's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

/// A compliance officer approves or rejects an open application. Approval moves the
/// applicant's tier up (never down); an application from a blocked country cannot be
/// approved. Officers cannot decide their own application.
#[tracing::instrument(skip_all, fields(officer = %viewer.user_id(), application = %id))]
pub async fn review(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
    decision: Decision,
    note: Option<String>,
) -> Result<Application, ApiError> {
    require_officer(viewer)?;
    let note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 2000) {
        return Err(ApiError::bad_input("note", "at most 2000 characters"));
    }
    if decision == Decision::Reject && note.is_none() {
        return Err(ApiError::bad_input(
            "note",
            "say why the application is rejected",
        ));
    }
    let officer = viewer.user_id();
    let blocked_countries = state.config.kyc.blocked_countries.clone();
    state
        .db
        .write(|txn| {
            let (note, blocked_countries) = (note.clone(), blocked_countries.clone());
            Box::pin(async move {
                let app = lock_application(txn, id).await?;
                if app.user_id == officer {
                    return Err(ApiError::Forbidden(
                        "you cannot decide your own application".into(),
                    ));
                }
                let current = Status::from_column(&app.status);
                if !current.is_open() {
                    return Err(ApiError::Conflict(format!(
                        "the application is already {}",
                        current.as_str()
                    )));
                }
                let blocked = blocked_countries.contains(&app.country);
                let status = match decision {
                    Decision::Approve if blocked => {
                        return Err(ApiError::Conflict(
                            "applications from this country cannot be approved".into(),
                        ))
                    }
                    Decision::Approve => Status::Approved,
                    Decision::Reject => Status::Rejected,
                };
                decide(
                    txn,
                    app,
                    status,
                    "OFFICER",
                    Some(officer),
                    note,
                    Utc::now(),
                    blocked,
                )
                .await
            })
        })
        .await?;
    application(state.db.conn(), id).await
}

async fn lock_application(
    txn: &DatabaseTransaction,
    id: Uuid,
) -> Result<kyc_applications::Model, ApiError> {
    let mut query = kyc_applications::Entity::find_by_id(id);
    if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        query = query.lock_exclusive();
    }
    query
        .one(txn)
        .await?
        .ok_or(ApiError::NotFound("KYC application"))
}

/// Moves an application to `status`, records the decision and, on approval, the tier.
#[allow(clippy::too_many_arguments)]
async fn decide(
    txn: &DatabaseTransaction,
    app: kyc_applications::Model,
    status: Status,
    source: &str,
    actor: Option<Uuid>,
    note: Option<String>,
    effective_at: DateTime<Utc>,
    country_blocked: bool,
) -> Result<(), ApiError> {
    let (id, user_id) = (app.id, app.user_id);
    let requested = Tier::from_column(&app.requested_tier);
    let mut active: kyc_applications::ActiveModel = app.into();
    active.status = Set(status.as_str().to_owned());
    active.last_decision_at = Set(Some(effective_at));
    active.updated_at = Set(Utc::now());
    active.update(txn).await?;
    add_decision(txn, id, status, source, actor, note).await?;
    let action = match status {
        Status::Approved => "kyc.approved",
        Status::Rejected => "kyc.rejected",
        Status::InReview => "kyc.held",
        Status::Pending => "kyc.reopened",
    };
    let mut entry = AuditEntry::new(action, "kyc_application", id)
        .owner(user_id)
        .details(serde_json::json!({ "source": source, "status": status.as_str() }));
    if let Some(actor) = actor {
        entry = entry.actor(actor);
    }
    audit::record(txn, entry).await?;
    if status == Status::Approved {
        let user = current_user(txn, user_id).await?;
        let before = Tier::from_column(&user.kyc_tier);
        let after = rules::tier_after_approval(before, requested, country_blocked);
        if after != before {
            let mut active: users::ActiveModel = user.into();
            active.kyc_tier = Set(after.as_str().to_owned());
            active.updated_at = Set(Utc::now());
            active.update(txn).await?;
            let mut entry = AuditEntry::new("user.kyc_tier_changed", "user", user_id)
                .owner(user_id)
                .details(serde_json::json!({
                    "from": before.as_str(),
                    "to": after.as_str(),
                    "application": id.to_string(),
                }));
            if let Some(actor) = actor {
                entry = entry.actor(actor);
            }
            audit::record(txn, entry).await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Provider webhook

/// A verification result from the KYC provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderEvent {
    pub event_id: String,
    pub application_id: Uuid,
    /// `VERIFIED` or `REJECTED`.
    pub result: String,
    /// When the provider reached the result: orders events that arrive out of order.
    pub occurred_at: DateTime<Utc>,
    pub reason: Option<String>,
}

/// What a webhook delivery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The result moved the application (and, if verified, the tier).
    Applied,
    /// Already processed: this event id was seen before.
    Duplicate,
    /// Older than the application's newest decision: recorded, no effect.
    Stale,
    /// Recorded, no change (e.g. verified while held for a screening hit, or already
    /// decided).
    Unchanged,
}

impl WebhookOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Applied => "APPLIED",
            WebhookOutcome::Duplicate => "DUPLICATE",
            WebhookOutcome::Stale => "STALE",
            WebhookOutcome::Unchanged => "UNCHANGED",
        }
    }
}

/// Applies a provider event whose signature and timestamp the HTTP layer checked.
/// Idempotent by `event_id`; an event older than the application's newest decision
/// never overrides it.
pub async fn apply_provider_event(
    state: &AppState,
    event: ProviderEvent,
) -> Result<WebhookOutcome, ApiError> {
    let event_id = event.event_id.trim().to_owned();
    if event_id.is_empty() || event_id.len() > 128 {
        return Err(ApiError::bad_input(
            "eventId",
            "must be 1 to 128 characters",
        ));
    }
    let verified = match event.result.as_str() {
        "VERIFIED" => true,
        "REJECTED" => false,
        _ => return Err(ApiError::bad_input("result", "VERIFIED or REJECTED")),
    };
    let blocked_countries = state.config.kyc.blocked_countries.clone();
    let result = state
        .db
        .write(|txn| {
            let (event, event_id, blocked_countries) =
                (event.clone(), event_id.clone(), blocked_countries.clone());
            Box::pin(async move {
                if kyc_webhook_events::Entity::find_by_id(event_id.clone())
                    .one(txn)
                    .await?
                    .is_some()
                {
                    return Ok(WebhookOutcome::Duplicate);
                }
                let app = lock_application(txn, event.application_id).await?;
                let current = Status::from_column(&app.status);
                let blocked = blocked_countries.contains(&app.country);
                let outcome = if !rules::is_newer(event.occurred_at, app.last_decision_at) {
                    WebhookOutcome::Stale
                } else {
                    // A blocked country never passes, whatever the provider says.
                    let next = rules::after_provider(current, verified && !blocked);
                    match next {
                        Some(status) => {
                            let note = event
                                .reason
                                .clone()
                                .map(|r| r.chars().take(500).collect::<String>());
                            decide(
                                txn,
                                app.clone(),
                                status,
                                "PROVIDER",
                                None,
                                note,
                                event.occurred_at,
                                blocked,
                            )
                            .await?;
                            WebhookOutcome::Applied
                        }
                        None => {
                            add_decision(
                                txn,
                                app.id,
                                current,
                                "PROVIDER",
                                None,
                                Some(format!(
                                    "provider result {} recorded; status unchanged",
                                    event.result
                                )),
                            )
                            .await?;
                            WebhookOutcome::Unchanged
                        }
                    }
                };
                kyc_webhook_events::ActiveModel {
                    event_id: Set(event_id),
                    application_id: Set(app.id),
                    result: Set(event.result.clone()),
                    outcome: Set(outcome.as_str().to_owned()),
                    occurred_at: Set(event.occurred_at),
                    received_at: Set(Utc::now()),
                }
                .insert(txn)
                .await?;
                Ok(outcome)
            })
        })
        .await;
    match result {
        // Two deliveries of one event raced; the other one committed it.
        Err(ApiError::Internal(error)) if is_unique_violation(&error) => {
            Ok(WebhookOutcome::Duplicate)
        }
        other => other,
    }
}

fn is_unique_violation(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<sea_orm::DbErr>()
        .and_then(|e| e.sql_err())
        .is_some_and(|e| matches!(e, sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_key_and_unaltered() {
        let key = [7u8; 32];
        let sealed = seal(&key, b"Jane Doe, 1 Main St").expect("seals");
        assert!(!sealed.contains("Jane"));
        assert_eq!(open(&key, &sealed).expect("opens"), b"Jane Doe, 1 Main St");
        assert!(open(&[8u8; 32], &sealed).is_err());
        let mut bytes = STANDARD.decode(&sealed).expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(open(&key, &STANDARD.encode(bytes)).is_err());
        // A fresh nonce each time: the same plaintext never seals the same way twice.
        assert_ne!(
            seal(&key, b"x").expect("seals"),
            seal(&key, b"x").expect("seals")
        );
    }
}
