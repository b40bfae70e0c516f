//! Funds: deposits credited by operators, balances, the ledger statement.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::{ledger, markets};
use crate::auth::Viewer;
use crate::domain::ledger::{AccountKind, AccountRef, Leg};
use crate::error::ApiError;
use crate::state::AppState;
use entity::{journal_entries, users, Role};
use sea_orm::EntityTrait;

pub const DEPOSIT: &str = "DEPOSIT";

pub struct DepositInput {
    pub user_id: Uuid,
    pub asset: String,
    pub amount: Decimal,
    pub reference: String,
}

/// Credits a deposit that arrived outside the exchange (ADMIN only). Idempotent by
/// `reference`: repeating a deposit returns the first entry and changes nothing; the
/// same reference with different details is a `CONFLICT`.
#[tracing::instrument(skip_all, fields(user = %input.user_id, asset = %input.asset))]
pub async fn credit_deposit(
    state: &AppState,
    viewer: &Viewer,
    input: DepositInput,
) -> Result<journal_entries::Model, ApiError> {
    if !viewer.has_role(Role::Admin) {
        return Err(ApiError::Forbidden("this needs the ADMIN role".into()));
    }
    credit(state, Some(viewer.user_id()), input).await
}

/// Credits a deposit on behalf of `actor` (an admin), or of the system itself when
/// `None` (the demo bot's play money). Callers have checked who may do this.
pub async fn credit(
    state: &AppState,
    actor: Option<Uuid>,
    input: DepositInput,
) -> Result<journal_entries::Model, ApiError> {
    let reference = input.reference.trim().to_owned();
    if reference.is_empty() || reference.chars().count() > 128 {
        return Err(ApiError::bad_input(
            "input.reference",
            "must be 1 to 128 characters",
        ));
    }
    let asset_symbol = input.asset.trim().to_uppercase();
    let asset = markets::find_asset(state.db.conn(), &asset_symbol)
        .await?
        .ok_or_else(|| ApiError::bad_input("input.asset", "unknown asset"))?;
    if input.amount <= Decimal::ZERO {
        return Err(ApiError::bad_input("input.amount", "must be positive"));
    }
    if !crate::domain::ledger::fits_precision(input.amount, asset.precision as u32) {
        return Err(ApiError::bad_input(
            "input.amount",
            format!(
                "{} allows at most {} decimal places",
                asset.symbol, asset.precision
            ),
        ));
    }
    users::Entity::find_by_id(input.user_id)
        .one(state.db.conn())
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let amount = input.amount.normalize();
    let user_id = input.user_id;
    let same_deposit = |existing: journal_entries::Model| {
        if existing.user_id == Some(user_id)
            && existing.asset == asset.symbol
            && existing.amount.0 == amount
        {
            Ok(existing)
        } else {
            Err(ApiError::Conflict(
                "this reference was already used for a different deposit".into(),
            ))
        }
    };
    let result = state
        .db
        .write(|txn| {
            let (reference, asset) = (reference.clone(), asset.symbol.clone());
            let monitoring_rules = state.config.kyc.monitoring.clone();
            Box::pin(async move {
                if let Some(existing) = ledger::find_by_reference(txn, DEPOSIT, &reference).await? {
                    return Ok(Err(existing));
                }
                let entry = ledger::post(
                    txn,
                    ledger::Draft {
                        kind: DEPOSIT,
                        reference: Some(reference),
                        user_id: Some(user_id),
                        asset: asset.clone(),
                        amount,
                        description: format!("Deposit of {amount} {asset}"),
                        legs: vec![
                            Leg {
                                account: AccountRef::user(user_id, &asset, AccountKind::Available),
                                amount,
                            },
                            Leg {
                                account: AccountRef::system(&asset, AccountKind::External),
                                amount: -amount,
                            },
                        ],
                    },
                )
                .await?;
                // PORTFOLIO HOOK: the deposit is an acquisition at this moment's price.
                super::portfolio::on_deposit(txn, user_id, &asset, amount, entry.created_at)
                    .await?;
                // Transaction monitoring: alerts commit (or roll back) with the deposit.
                // The system's own play-money deposits (the demo bot) are not monitored.
                if actor.is_some() {
                    super::monitoring::on_deposit(txn, &monitoring_rules, &entry).await?;
                }
                let mut audit_entry = AuditEntry::new("deposit.credited", "ledger_entry", entry.id)
                    .owner(user_id)
                    .details(serde_json::json!({
                        "asset": entry.asset,
                        "amount": entry.amount.0.to_string(),
                        "reference": entry.reference,
                    }));
                if let Some(actor) = actor {
                    audit_entry = audit_entry.actor(actor);
                }
                audit::record(txn, audit_entry).await?;
                Ok(Ok(entry))
            })
        })
        .await;
    match result {
        Ok(Ok(created)) => {
            // Live portfolio values follow balance changes.
            let changed = crate::events::Event::BalanceChanged { user_id };
            state.events.publish(vec![changed]).await;
            Ok(created)
        }
        Ok(Err(existing)) => same_deposit(existing),
        // A concurrent request with the same reference committed first.
        Err(ApiError::Internal(error)) if is_unique_violation(&error) => {
            match ledger::find_by_reference(state.db.conn(), DEPOSIT, &reference).await? {
                Some(existing) => same_deposit(existing),
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
