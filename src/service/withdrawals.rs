//! Withdrawals and the withdrawal address book.
//!
//! Defences, in the order a request meets them: the idempotency key (a retried request
//! returns the first withdrawal), the second factor when the user has one, the lock
//! after a security change, the address's cooling-off period, and the KYC tier's
//! rolling 24-hour limit in USD. Funds are held (available -> locked) when requested and
//! released on cancel or failure; an ADMIN completes a withdrawal (locked -> external
//! clearing). Every step is a journal entry and an audit event in one transaction.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend,
    DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::json;
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::two_factor::{self, Presented};
use super::{email, ledger, markets, security};
use crate::auth::Viewer;
use crate::domain::ledger::{AccountKind, AccountRef, Leg};
use crate::domain::withdrawal_rules::{self as rules, status, LimitRefusal};
use crate::error::ApiError;
use crate::state::AppState;
use entity::{markets as market_rows, users, withdrawal_addresses, withdrawals, Amount, Role};

/// Journal entry kinds of withdrawals.
pub mod kind {
    pub const HOLD: &str = "WITHDRAWAL_HOLD";
    pub const RELEASE: &str = "WITHDRAWAL_RELEASE";
    pub const WITHDRAWAL: &str = "WITHDRAWAL";
}

/// Address-book entries one user may keep.
const MAX_ADDRESSES: u64 = 100;

pub struct NewAddress {
    pub asset: String,
    pub address: String,
    pub label: String,
    pub totp_code: Option<String>,
}

/// Adds an address to the viewer's book. It becomes usable after the cooling-off
/// period, so someone who takes over an account cannot empty it at once; the owner is
/// e-mailed and has that long to react.
#[tracing::instrument(skip_all)]
pub async fn add_address(
    state: &AppState,
    viewer: &Viewer,
    input: NewAddress,
) -> Result<withdrawal_addresses::Model, ApiError> {
    let asset = markets::find_asset(state.db.conn(), &input.asset.trim().to_uppercase())
        .await?
        .ok_or_else(|| ApiError::bad_input("input.asset", "unknown asset"))?;
    let address = rules::check_address(&input.address)
        .map_err(|m| ApiError::bad_input("input.address", m))?;
    let label =
        rules::check_label(&input.label).map_err(|m| ApiError::bad_input("input.label", m))?;
    let presented = Presented::totp(input.totp_code);
    let user = viewer.user.clone();
    let cooling = chrono::Duration::from_std(state.config.security.withdrawal_address_cooling_off)
        .unwrap_or_else(|_| chrono::Duration::days(2));
    state
        .db
        .write(|txn| {
            let (state, user, presented) = (state.clone(), user.clone(), presented.clone());
            let (asset, address, label) = (asset.symbol.clone(), address.clone(), label.clone());
            Box::pin(async move {
                two_factor::require(&state, txn, &user, &presented).await?;
                let count = withdrawal_addresses::Entity::find()
                    .filter(withdrawal_addresses::Column::UserId.eq(user.id))
                    .filter(withdrawal_addresses::Column::RemovedAt.is_null())
                    .count(txn)
                    .await?;
                if count >= MAX_ADDRESSES {
                    return Err(ApiError::Conflict(format!(
                        "at most {MAX_ADDRESSES} withdrawal addresses; remove one first"
                    )));
                }
                let now = Utc::now();
                let entry = withdrawal_addresses::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    user_id: Set(user.id),
                    asset: Set(asset.clone()),
                    address: Set(address.clone()),
                    label: Set(label.clone()),
                    activates_at: Set(now + cooling),
                    created_at: Set(now),
                    removed_at: Set(None),
                }
                .insert(txn)
                .await?;
                audit::record(
                    txn,
                    AuditEntry::new("withdrawal_address.added", "withdrawal_address", entry.id)
                        .actor(user.id)
                        .owner(user.id)
                        .details(json!({
                            "asset": asset,
                            "activatesAt": entry.activates_at.to_rfc3339(),
                        })),
                )
                .await?;
                email::enqueue(
                    txn,
                    &user,
                    "New withdrawal address added",
                    &format!(
                        "A {asset} withdrawal address labelled \"{label}\" was added to your \
                         account:\n\n  {address}\n\nIt can be used from {} UTC. If you did \
                         not add it, remove it and change your password now.",
                        entry.activates_at.format("%Y-%m-%d %H:%M")
                    ),
                )
                .await?;
                Ok(entry)
            })
        })
        .await
}

/// The viewer's address book (removed entries left out), newest first.
pub async fn list_addresses(
    state: &AppState,
    viewer: &Viewer,
) -> Result<Vec<withdrawal_addresses::Model>, ApiError> {
    Ok(withdrawal_addresses::Entity::find()
        .filter(withdrawal_addresses::Column::UserId.eq(viewer.user_id()))
        .filter(withdrawal_addresses::Column::RemovedAt.is_null())
        .order_by_desc(withdrawal_addresses::Column::CreatedAt)
        .all(state.db.conn())
        .await?)
}

/// Removes an address from the book. `NOT_FOUND` for an unknown, removed or another
/// user's address. Withdrawals already requested to it go on.
pub async fn remove_address(state: &AppState, viewer: &Viewer, id: Uuid) -> Result<bool, ApiError> {
    let user_id = viewer.user_id();
    state
        .db
        .write(|txn| {
            Box::pin(async move {
                let removed = withdrawal_addresses::Entity::update_many()
                    .col_expr(
                        withdrawal_addresses::Column::RemovedAt,
                        Expr::value(Utc::now()),
                    )
                    .filter(withdrawal_addresses::Column::Id.eq(id))
                    .filter(withdrawal_addresses::Column::UserId.eq(user_id))
                    .filter(withdrawal_addresses::Column::RemovedAt.is_null())
                    .exec(txn)
                    .await?;
                if removed.rows_affected == 0 {
                    return Err(ApiError::NotFound("withdrawal address"));
                }
                audit::record(
                    txn,
                    AuditEntry::new("withdrawal_address.removed", "withdrawal_address", id)
                        .actor(user_id)
                        .owner(user_id),
                )
                .await?;
                Ok(true)
            })
        })
        .await
}

pub struct WithdrawalRequest {
    pub asset: String,
    pub amount: Decimal,
    pub address_id: Uuid,
    pub totp_code: Option<String>,
    pub idempotency_key: String,
}

/// The value of `amount` of `asset` in USD: USD itself, or at the last trade price of
/// the asset's USD market. An asset without one cannot be checked against the limit and
/// so cannot be withdrawn.
async fn usd_value<C: ConnectionTrait>(
    conn: &C,
    asset: &str,
    amount: Decimal,
) -> Result<Decimal, ApiError> {
    if asset == "USD" {
        return Ok(amount);
    }
    let price = market_rows::Entity::find_by_id(format!("{asset}-USD"))
        .one(conn)
        .await?
        .and_then(|m| m.last_price)
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "{asset} has no USD price yet, so a withdrawal cannot be checked against \
                 the daily limit; try again once it trades"
            ))
        })?;
    amount
        .checked_mul(price.0)
        .ok_or_else(|| ApiError::bad_input("input.amount", "the amount is out of range"))
}

/// USD withdrawn or on the way out in the last 24 hours. Summed here, in exact
/// decimals, because SQLite would sum the text columns as floats.
/// Each tier's withdrawal limit from the KYC tier table; unlimited tiers get the
/// largest decimal.
fn daily_limits(
    table: &crate::domain::kyc::TierLimitTable,
) -> std::collections::BTreeMap<String, Decimal> {
    crate::domain::kyc::Tier::ALL
        .into_iter()
        .map(|tier| {
            let limit = table.for_tier(tier).daily_withdrawal_usd;
            (tier.as_str().to_owned(), limit.unwrap_or(Decimal::MAX))
        })
        .collect()
}

pub async fn used_today<C: ConnectionTrait>(conn: &C, user_id: Uuid) -> Result<Decimal, ApiError> {
    let since = Utc::now() - chrono::Duration::hours(24);
    let rows = withdrawals::Entity::find()
        .filter(withdrawals::Column::UserId.eq(user_id))
        .filter(withdrawals::Column::CreatedAt.gte(since))
        .filter(withdrawals::Column::Status.is_in(status::COUNTED))
        .all(conn)
        .await?;
    Ok(rows.iter().map(|w| w.usd_value.0).sum())
}

fn same_request(
    existing: withdrawals::Model,
    request: &WithdrawalRequest,
    asset: &str,
) -> Result<withdrawals::Model, ApiError> {
    if existing.asset == asset
        && existing.amount.0 == request.amount.normalize()
        && existing.address_id == request.address_id
    {
        Ok(existing)
    } else {
        Err(ApiError::Conflict(
            "this idempotency key was already used for a different withdrawal".into(),
        ))
    }
}

async fn find_by_key<C: ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    key: &str,
) -> Result<Option<withdrawals::Model>, ApiError> {
    Ok(withdrawals::Entity::find()
        .filter(withdrawals::Column::UserId.eq(user_id))
        .filter(withdrawals::Column::IdempotencyKey.eq(key))
        .one(conn)
        .await?)
}

/// Requests a withdrawal and holds its funds.
///
/// Refusals: `FORBIDDEN` while the address cools off, while withdrawals are locked after
/// a security change, or when the KYC tier may not withdraw; `BAD_USER_INPUT`
/// (`input.amount`) above the daily limit; `TWO_FACTOR_REQUIRED` without a valid code
/// when the user has 2FA; `INSUFFICIENT_FUNDS`; `NOT_FOUND` for an address that is not
/// the viewer's. A repeated `idempotencyKey` returns the first withdrawal.
#[tracing::instrument(skip_all, fields(asset = %request.asset))]
pub async fn request(
    state: &AppState,
    viewer: &Viewer,
    request: WithdrawalRequest,
) -> Result<withdrawals::Model, ApiError> {
    // An API key reaches this only with the WITHDRAW scope: `requestWithdrawal` carries
    // `@apiKey(scope: WITHDRAW)` and the access gate checks it before execution.
    let key = request.idempotency_key.trim().to_owned();
    if key.is_empty() || key.chars().count() > 128 {
        return Err(ApiError::bad_input(
            "input.idempotencyKey",
            "must be 1 to 128 characters",
        ));
    }
    let asset = markets::find_asset(state.db.conn(), &request.asset.trim().to_uppercase())
        .await?
        .ok_or_else(|| ApiError::bad_input("input.asset", "unknown asset"))?;
    if request.amount <= Decimal::ZERO {
        return Err(ApiError::bad_input("input.amount", "must be positive"));
    }
    if !crate::domain::ledger::fits_precision(request.amount, asset.precision as u32) {
        return Err(ApiError::bad_input(
            "input.amount",
            format!(
                "{} allows at most {} decimal places",
                asset.symbol, asset.precision
            ),
        ));
    }
    let amount = request.amount.normalize();
    let user = viewer.user.clone();
    let presented = Presented::totp(request.totp_code.clone());
    let result = state
        .db
        .write(|txn| {
            let (state, user, presented) = (state.clone(), user.clone(), presented.clone());
            let (key, asset) = (key.clone(), asset.symbol.clone());
            let address_id = request.address_id;
            Box::pin(async move {
                if let Some(existing) = find_by_key(txn, user.id, &key).await? {
                    return Ok(Err(existing));
                }
                // One writer per user from here: the daily-limit sum must see every
                // withdrawal committed before this one (SQLite has one writer anyway).
                let mut user_row = users::Entity::find_by_id(user.id);
                if txn.get_database_backend() == DatabaseBackend::Postgres {
                    user_row = user_row.lock_exclusive();
                }
                let user = user_row.one(txn).await?.ok_or(ApiError::NotFound("user"))?;
                two_factor::require(&state, txn, &user, &presented).await?;
                if let Some(until) = security::withdrawals_locked_until(txn, user.id).await? {
                    return Err(ApiError::Forbidden(format!(
                        "withdrawals are locked after a recent security change until {}",
                        until.to_rfc3339()
                    )));
                }
                let address = withdrawal_addresses::Entity::find_by_id(address_id)
                    .filter(withdrawal_addresses::Column::UserId.eq(user.id))
                    .filter(withdrawal_addresses::Column::RemovedAt.is_null())
                    .one(txn)
                    .await?
                    .ok_or(ApiError::NotFound("withdrawal address"))?;
                if address.asset != asset {
                    return Err(ApiError::bad_input(
                        "input.addressId",
                        format!("this address is for {}, not {asset}", address.asset),
                    ));
                }
                let now = Utc::now();
                if address.activates_at > now {
                    return Err(ApiError::Forbidden(format!(
                        "this address is new and cooling off: usable from {}",
                        address.activates_at.to_rfc3339()
                    )));
                }
                let value = usd_value(txn, &asset, amount).await?;
                let used = used_today(txn, user.id).await?;
                // The KYC tier table (`KYC_TIER_LIMITS`) sets each tier's limit.
                let limits = daily_limits(&state.config.kyc.tier_limits);
                match rules::check_daily_limit(&limits, &user.kyc_tier, used, value) {
                    Ok(()) => {}
                    Err(LimitRefusal::NotAllowed) => {
                        return Err(ApiError::Forbidden(format!(
                            "your verification tier ({}) may not withdraw; complete KYC first",
                            user.kyc_tier
                        )))
                    }
                    Err(LimitRefusal::Exceeded { remaining }) => {
                        return Err(ApiError::bad_input(
                            "input.amount",
                            format!(
                            "above your daily withdrawal limit: {} USD left in the last 24 hours",
                            remaining.round_dp(2).normalize()
                        ),
                        ))
                    }
                }
                let withdrawal = withdrawals::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    user_id: Set(user.id),
                    asset: Set(asset.clone()),
                    amount: Set(Amount(amount)),
                    usd_value: Set(Amount(value)),
                    address_id: Set(address.id),
                    address: Set(address.address.clone()),
                    status: Set(status::PENDING.to_owned()),
                    idempotency_key: Set(key),
                    txid: Set(None),
                    failure_reason: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(txn)
                .await?;
                move_funds(txn, &withdrawal, kind::HOLD).await?;
                // Transaction monitoring sees every withdrawal request, in its transaction.
                super::monitoring::on_withdrawal(
                    txn,
                    &state.config.kyc.monitoring,
                    user.id,
                    withdrawal.id,
                    &asset,
                    amount,
                    Some(value),
                )
                .await?;
                audit::record(
                    txn,
                    AuditEntry::new("withdrawal.requested", "withdrawal", withdrawal.id)
                        .actor(user.id)
                        .owner(user.id)
                        .details(json!({
                            "asset": asset,
                            "amount": amount.to_string(),
                            "usdValue": value.to_string(),
                            "addressId": address.id,
                        })),
                )
                .await?;
                email::enqueue(
                    txn,
                    &user,
                    "Withdrawal requested",
                    &format!(
                        "A withdrawal of {amount} {asset} to {} (\"{}\") was requested. The \
                         funds are held until it is sent.",
                        address.address, address.label
                    ),
                )
                .await?;
                Ok(Ok(withdrawal))
            })
        })
        .await;
    match result {
        Ok(Ok(created)) => Ok(created),
        Ok(Err(existing)) => same_request(existing, &request, &asset.symbol),
        // A concurrent request with the same key committed first.
        Err(ApiError::Internal(error)) if is_unique_violation(&error) => {
            match find_by_key(state.db.conn(), user.id, &key).await? {
                Some(existing) => same_request(existing, &request, &asset.symbol),
                None => Err(ApiError::Internal(error)),
            }
        }
        Err(error) => Err(error),
    }
}

fn is_unique_violation(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<sea_orm::DbErr>()
        .and_then(|e| e.sql_err())
        .is_some_and(|e| matches!(e, sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

/// Posts the journal entry of one step of a withdrawal.
async fn move_funds(
    txn: &DatabaseTransaction,
    withdrawal: &withdrawals::Model,
    entry_kind: &'static str,
) -> Result<(), ApiError> {
    let (user, asset, amount) = (
        withdrawal.user_id,
        withdrawal.asset.as_str(),
        withdrawal.amount.0,
    );
    let available = AccountRef::user(user, asset, AccountKind::Available);
    let locked = AccountRef::user(user, asset, AccountKind::Locked);
    let external = AccountRef::system(asset, AccountKind::External);
    let (legs, signed, what) = match entry_kind {
        kind::HOLD => ([(available, -amount), (locked, amount)], -amount, "Held"),
        kind::RELEASE => ([(locked, -amount), (available, amount)], amount, "Released"),
        _ => ([(locked, -amount), (external, amount)], -amount, "Withdrew"),
    };
    ledger::post(
        txn,
        ledger::Draft {
            kind: entry_kind,
            reference: Some(withdrawal.id.to_string()),
            user_id: Some(user),
            asset: asset.to_owned(),
            amount: signed,
            description: format!("{what} {amount} {asset} for withdrawal {}", withdrawal.id),
            legs: legs
                .into_iter()
                .map(|(account, amount)| Leg { account, amount })
                .collect(),
        },
    )
    .await?;
    Ok(())
}

/// Moves a withdrawal to `target` if its status allows, with a conditional update so
/// that concurrent steps (a user cancelling while an operator completes) cannot both
/// win. Returns the updated row, or `CONFLICT` naming the current status.
async fn transition(
    txn: &DatabaseTransaction,
    withdrawal: withdrawals::Model,
    target: &'static str,
    txid: Option<String>,
    reason: Option<String>,
) -> Result<withdrawals::Model, ApiError> {
    let now = Utc::now();
    let mut update = withdrawals::Entity::update_many()
        .col_expr(withdrawals::Column::Status, Expr::value(target))
        .col_expr(withdrawals::Column::UpdatedAt, Expr::value(now))
        .filter(withdrawals::Column::Id.eq(withdrawal.id))
        .filter(withdrawals::Column::Status.is_in(rules::allowed_from(target).iter().copied()));
    if let Some(txid) = &txid {
        update = update.col_expr(withdrawals::Column::Txid, Expr::value(txid.clone()));
    }
    if let Some(reason) = &reason {
        update = update.col_expr(
            withdrawals::Column::FailureReason,
            Expr::value(reason.clone()),
        );
    }
    if update.exec(txn).await?.rows_affected == 0 {
        return Err(ApiError::Conflict(format!(
            "the withdrawal is {} and cannot become {target}",
            withdrawal.status
        )));
    }
    Ok(withdrawals::Model {
        status: target.to_owned(),
        updated_at: now,
        txid: txid.or(withdrawal.txid),
        failure_reason: reason.or(withdrawal.failure_reason),
        ..withdrawal
    })
}

/// The steps after a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The owner withdraws the request while it is PENDING; funds return.
    Cancel,
    /// An operator picks it up (PENDING -> PROCESSING); the owner can no longer cancel.
    Process,
    /// An operator confirms it was sent; funds leave the exchange.
    Complete { txid: String },
    /// An operator gives up on it; funds return.
    Fail { reason: String },
}

/// Applies a step. Only the owner may cancel (`NOT_FOUND` for anyone else's); only an
/// ADMIN may process, complete or fail (`FORBIDDEN`).
#[tracing::instrument(skip_all, fields(withdrawal = %id))]
pub async fn advance(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
    step: Step,
) -> Result<withdrawals::Model, ApiError> {
    let operator = !matches!(step, Step::Cancel);
    if operator && !viewer.has_role(Role::Admin) {
        return Err(ApiError::Forbidden("this needs the ADMIN role".into()));
    }
    let text = |field: &str, value: &str, max: usize| {
        let value = value.trim();
        if value.is_empty() || value.chars().count() > max {
            Err(ApiError::bad_input(
                field,
                format!("must be 1 to {max} characters"),
            ))
        } else {
            Ok(value.to_owned())
        }
    };
    let step = match step {
        Step::Complete { txid } => Step::Complete {
            txid: text("txid", &txid, 128)?,
        },
        Step::Fail { reason } => Step::Fail {
            reason: text("reason", &reason, 256)?,
        },
        other => other,
    };
    let actor = viewer.user_id();
    state
        .db
        .write(|txn| {
            let step = step.clone();
            Box::pin(async move {
                let mut query = withdrawals::Entity::find_by_id(id);
                if !operator {
                    query = query.filter(withdrawals::Column::UserId.eq(actor));
                }
                let withdrawal = query
                    .one(txn)
                    .await?
                    .ok_or(ApiError::NotFound("withdrawal"))?;
                let owner = users::Entity::find_by_id(withdrawal.user_id)
                    .one(txn)
                    .await?
                    .ok_or(ApiError::NotFound("withdrawal"))?;
                let (action, done) = match step {
                    Step::Cancel => {
                        let w = transition(txn, withdrawal, status::CANCELLED, None, None).await?;
                        move_funds(txn, &w, kind::RELEASE).await?;
                        ("withdrawal.cancelled", w)
                    }
                    Step::Process => {
                        let w = transition(txn, withdrawal, status::PROCESSING, None, None).await?;
                        ("withdrawal.processing", w)
                    }
                    Step::Complete { txid } => {
                        let w = transition(txn, withdrawal, status::COMPLETED, Some(txid), None)
                            .await?;
                        move_funds(txn, &w, kind::WITHDRAWAL).await?;
                        // The funds leave the exchange: for cost basis the withdrawn
                        // quantity is a disposal of lots, in this same transaction.
                        super::portfolio::asset_left_account(
                            txn,
                            w.user_id,
                            &w.asset,
                            w.amount.0,
                            Decimal::ZERO,
                            Utc::now(),
                        )
                        .await?;
                        email::enqueue(
                            txn,
                            &owner,
                            "Withdrawal sent",
                            &format!(
                                "Your withdrawal of {} {} to {} was sent. Transaction: {}",
                                w.amount,
                                w.asset,
                                w.address,
                                w.txid.as_deref().unwrap_or("")
                            ),
                        )
                        .await?;
                        ("withdrawal.completed", w)
                    }
                    Step::Fail { reason } => {
                        let w =
                            transition(txn, withdrawal, status::FAILED, None, Some(reason)).await?;
                        move_funds(txn, &w, kind::RELEASE).await?;
                        email::enqueue(
                            txn,
                            &owner,
                            "Withdrawal failed",
                            &format!(
                                "Your withdrawal of {} {} could not be sent and the funds are \
                                 back in your balance. Reason: {}",
                                w.amount,
                                w.asset,
                                w.failure_reason.as_deref().unwrap_or("")
                            ),
                        )
                        .await?;
                        ("withdrawal.failed", w)
                    }
                };
                audit::record(
                    txn,
                    AuditEntry::new(action, "withdrawal", done.id)
                        .actor(actor)
                        .owner(done.user_id)
                        .details(json!({
                            "asset": done.asset,
                            "amount": done.amount.0.to_string(),
                            "status": done.status,
                        })),
                )
                .await?;
                Ok(done)
            })
        })
        .await
}

/// Filters for the viewer's withdrawals.
#[derive(Default)]
pub struct WithdrawalFilter {
    pub status: Option<&'static str>,
    pub asset: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// One page of the viewer's withdrawals, newest first, after the keyset cursor
/// `before_id` (ids are time-ordered).
pub async fn list(
    state: &AppState,
    viewer: &Viewer,
    filter: &WithdrawalFilter,
    before_id: Option<Uuid>,
    limit: u64,
) -> Result<Vec<withdrawals::Model>, ApiError> {
    let mut query =
        withdrawals::Entity::find().filter(withdrawals::Column::UserId.eq(viewer.user_id()));
    if let Some(status) = filter.status {
        query = query.filter(withdrawals::Column::Status.eq(status));
    }
    if let Some(asset) = &filter.asset {
        query = query.filter(withdrawals::Column::Asset.eq(asset.as_str()));
    }
    if let Some(from) = filter.from {
        query = query.filter(withdrawals::Column::CreatedAt.gte(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(withdrawals::Column::CreatedAt.lt(to));
    }
    if let Some(before) = before_id {
        query = query.filter(withdrawals::Column::Id.lt(before));
    }
    Ok(query
        .order_by_desc(withdrawals::Column::Id)
        .limit(limit)
        .all(state.db.conn())
        .await?)
}

/// One of the viewer's withdrawals; `None` for an unknown id or another user's.
pub async fn find(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
) -> Result<Option<withdrawals::Model>, ApiError> {
    Ok(withdrawals::Entity::find_by_id(id)
        .filter(withdrawals::Column::UserId.eq(viewer.user_id()))
        .one(state.db.conn())
        .await?)
}
