//! Transaction monitoring: every deposit and withdrawal is recorded with its USD value
//! and run through the rules of `domain::monitoring` in the same transaction; hits
//! become alerts in the COMPLIANCE_OFFICER queue, with their evidence, and add to the
//! user's risk score.

use chrono::{Duration, Utc};
use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use crate::auth::Viewer;
use crate::domain::monitoring::{self as rules, Direction, Rules, Transfer};
use crate::error::ApiError;
use crate::state::AppState;
use entity::{compliance_alerts, journal_entries, monitored_transfers, Amount, Role};

/// Runs the rules on a deposit just posted to the ledger, inside its transaction.
pub async fn on_deposit(
    txn: &DatabaseTransaction,
    rules: &Rules,
    entry: &journal_entries::Model,
) -> Result<(), ApiError> {
    let Some(user_id) = entry.user_id else {
        return Ok(());
    };
    let usd = super::kyc::usd_value(txn, &entry.asset, entry.amount.0).await?;
    observe(
        txn,
        rules,
        user_id,
        Direction::Deposit,
        &entry.asset,
        entry.amount.0,
        usd,
        "ledger_entry",
        &entry.id.to_string(),
    )
    .await
}

/// Runs the rules on a withdrawal just requested, inside its transaction: call it after
/// the funds are held. `usd_amount` is its USD value (see `kyc::usd_value`).
pub async fn on_withdrawal(
    txn: &DatabaseTransaction,
    rules: &Rules,
    user_id: Uuid,
    withdrawal_id: Uuid,
    asset: &str,
    amount: Decimal,
    usd_amount: Option<Decimal>,
) -> Result<(), ApiError> {
    observe(
        txn,
        rules,
        user_id,
        Direction::Withdrawal,
        asset,
        amount,
        usd_amount,
        "withdrawal",
        &withdrawal_id.to_string(),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn observe(
    txn: &DatabaseTransaction,
    rules: &Rules,
    user_id: Uuid,
    direction: Direction,
    asset: &str,
    amount: Decimal,
    usd: Option<Decimal>,
    subject_type: &str,
    subject_id: &str,
) -> Result<(), ApiError> {
    let now = Utc::now();
    let lookback = rules.rapid_window.max(rules.structuring_window);
    let history: Vec<Transfer> = monitored_transfers::Entity::find()
        .filter(monitored_transfers::Column::UserId.eq(user_id))
        .filter(monitored_transfers::Column::CreatedAt.gte(now - lookback))
        .order_by_desc(monitored_transfers::Column::CreatedAt)
        // Enough for every rule; a flood beyond this is already alerting.
        .limit(1000)
        .all(txn)
        .await?
        .into_iter()
        .map(|t| Transfer {
            id: t.subject_id,
            direction: Direction::from_column(&t.direction),
            asset: t.asset,
            amount: t.amount.0,
            usd: t.usd_value.map(|u| u.0),
            at: t.created_at,
        })
        .collect();
    let current = Transfer {
        id: subject_id.to_owned(),
        direction,
        asset: asset.to_owned(),
        amount,
        usd,
        at: now,
    };
    monitored_transfers::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        direction: Set(direction.as_str().to_owned()),
        asset: Set(asset.to_owned()),
        amount: Set(Amount(amount)),
        usd_value: Set(usd.map(Amount)),
        subject_id: Set(subject_id.to_owned()),
        created_at: Set(now),
    }
    .insert(txn)
    .await?;
    for hit in rules::evaluate(rules, &current, &history) {
        let id = Uuid::now_v7();
        compliance_alerts::ActiveModel {
            id: Set(id),
            user_id: Set(user_id),
            rule: Set(hit.rule.as_str().to_owned()),
            score: Set(hit.rule.score() as i32),
            evidence: Set(hit.evidence.to_string()),
            status: Set(OPEN.to_owned()),
            subject_type: Set(subject_type.to_owned()),
            subject_id: Set(subject_id.to_owned()),
            resolved_by: Set(None),
            resolution_note: Set(None),
            created_at: Set(now),
            resolved_at: Set(None),
        }
        .insert(txn)
        .await?;
        audit::record(
            txn,
            AuditEntry::new("compliance_alert.raised", "compliance_alert", id)
                .owner(user_id)
                .details(serde_json::json!({
                    "rule": hit.rule.as_str(),
                    "subjectType": subject_type,
                    "subjectId": subject_id,
                })),
        )
        .await?;
    }
    Ok(())
}

pub const OPEN: &str = "OPEN";
pub const DISMISSED: &str = "DISMISSED";
pub const ESCALATED: &str = "ESCALATED";

fn require_officer(viewer: &Viewer) -> Result<(), ApiError> {
    if viewer.has_role(Role::ComplianceOfficer) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this needs the COMPLIANCE_OFFICER role".into(),
        ))
    }
}

/// Alerts with `status` (default OPEN), optionally one user's, oldest first, strictly
/// after `after_id`. COMPLIANCE_OFFICER only.
pub async fn alerts(
    state: &AppState,
    viewer: &Viewer,
    status: Option<&str>,
    user_id: Option<Uuid>,
    after_id: Option<Uuid>,
    limit: u64,
) -> Result<Vec<compliance_alerts::Model>, ApiError> {
    require_officer(viewer)?;
    let mut query = compliance_alerts::Entity::find()
        .filter(compliance_alerts::Column::Status.eq(status.unwrap_or(OPEN)));
    if let Some(user_id) = user_id {
        query = query.filter(compliance_alerts::Column::UserId.eq(user_id));
    }
    if let Some(after) = after_id {
        query = query.filter(compliance_alerts::Column::Id.gt(after));
    }
    Ok(query
        .order_by_asc(compliance_alerts::Column::Id)
        .limit(limit)
        .all(state.db.conn())
        .await?)
}

/// An officer closes an open alert as DISMISSED (a false positive, no longer counted in
/// the risk score) or ESCALATED (kept in the score, for a report).
pub async fn resolve_alert(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
    status: &'static str,
    note: String,
) -> Result<compliance_alerts::Model, ApiError> {
    require_officer(viewer)?;
    let note = note.trim().to_owned();
    if note.is_empty() || note.chars().count() > 2000 {
        return Err(ApiError::bad_input("note", "must be 1 to 2000 characters"));
    }
    let officer = viewer.user_id();
    state
        .db
        .write(|txn| {
            let note = note.clone();
            Box::pin(async move {
                let alert = compliance_alerts::Entity::find_by_id(id)
                    .one(txn)
                    .await?
                    .ok_or(ApiError::NotFound("alert"))?;
                if alert.status != OPEN {
                    return Err(ApiError::Conflict(format!(
                        "the alert is already {}",
                        alert.status
                    )));
                }
                let user_id = alert.user_id;
                let mut active: compliance_alerts::ActiveModel = alert.into();
                active.status = Set(status.to_owned());
                active.resolved_by = Set(Some(officer));
                active.resolution_note = Set(Some(note));
                active.resolved_at = Set(Some(Utc::now()));
                let updated = active.update(txn).await?;
                audit::record(
                    txn,
                    AuditEntry::new(
                        if status == DISMISSED {
                            "compliance_alert.dismissed"
                        } else {
                            "compliance_alert.escalated"
                        },
                        "compliance_alert",
                        id,
                    )
                    .actor(officer)
                    .owner(user_id)
                    .details(serde_json::json!({ "rule": updated.rule })),
                )
                .await?;
                Ok(updated)
            })
        })
        .await
}

/// A user's risk score (0..100): open and escalated alerts of the last 90 days.
pub async fn risk_score<C: ConnectionTrait>(conn: &C, user_id: Uuid) -> Result<u32, ApiError> {
    let now = Utc::now();
    let alerts = compliance_alerts::Entity::find()
        .filter(compliance_alerts::Column::UserId.eq(user_id))
        .filter(compliance_alerts::Column::Status.ne(DISMISSED))
        .filter(compliance_alerts::Column::CreatedAt.gte(now - Duration::days(90)))
        .all(conn)
        .await?;
    let scored: Vec<(u32, chrono::DateTime<Utc>)> = alerts
        .iter()
        .map(|a| (a.score.max(0) as u32, a.created_at))
        .collect();
    Ok(rules::risk_score(&scored, now))
}

/// The hooks the withdrawal flow calls, on a real (SQLite) database: the tier's daily
/// withdrawal limit through `kyc::check_withdrawal`, and the rapid in-and-out rule
/// through `on_withdrawal`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::db::Db;
    use crate::metrics::Metrics;
    use crate::service::kyc;
    use entity::users;
    use sea_orm::TransactionTrait;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap_or_default()
    }

    async fn database() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::connect(&url, 2, &Metrics::new())
            .await
            .expect("connects");
        db.migrate().await.expect("migrates");
        (dir, db)
    }

    async fn user(db: &Db, tier: &str) -> Uuid {
        let now = Utc::now();
        let id = Uuid::now_v7();
        users::ActiveModel {
            id: Set(id),
            email: Set(format!("{id}@example.com")),
            display_name: Set("T".into()),
            password_hash: Set("x".into()),
            roles: Set(String::new()),
            two_factor_enabled: Set(false),
            kyc_tier: Set(tier.into()),
            anti_phishing_code: Set(None),
            deleted_at: Set(None),
            rate_limit_tier: Set(None),
            password_changed_at: Set(now),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(db.conn())
        .await
        .expect("user");
        id
    }

    async fn deposit_entry(db: &Db, user_id: Uuid, usd: &str) -> journal_entries::Model {
        journal_entries::ActiveModel {
            id: Set(Uuid::now_v7()),
            kind: Set(crate::service::funds::DEPOSIT.into()),
            reference: Set(Some(Uuid::new_v4().to_string())),
            user_id: Set(Some(user_id)),
            asset: Set("USD".into()),
            amount: Set(Amount(dec(usd))),
            description: Set("test".into()),
            created_at: Set(Utc::now()),
        }
        .insert(db.conn())
        .await
        .expect("entry")
    }

    #[tokio::test]
    async fn each_tier_is_held_to_its_daily_withdrawal_limit() {
        let (_dir, db) = database().await;
        let config = Config::from_vars(Default::default()).expect("config");
        let limits = &config.kyc.tier_limits;
        for tier in crate::domain::kyc::Tier::ALL {
            let user_id = user(&db, tier.as_str()).await;
            let txn = db.conn().begin().await.expect("txn");
            match limits.for_tier(tier).daily_withdrawal_usd {
                Some(limit) => {
                    kyc::check_withdrawal(&txn, &config.kyc, user_id, limit)
                        .await
                        .expect("up to the limit");
                    let over =
                        kyc::check_withdrawal(&txn, &config.kyc, user_id, limit + dec("0.01"))
                            .await
                            .expect_err("over the limit");
                    assert!(matches!(over, ApiError::Forbidden(_)), "{tier}: {over:?}");
                }
                None => kyc::check_withdrawal(&txn, &config.kyc, user_id, dec("1e15"))
                    .await
                    .expect("unlimited"),
            }
        }
        // UNVERIFIED may not withdraw at all by default.
        let user_id = user(&db, "UNVERIFIED").await;
        let txn = db.conn().begin().await.expect("txn");
        let refused = kyc::check_withdrawal(&txn, &config.kyc, user_id, dec("0.01")).await;
        assert!(matches!(refused, Err(ApiError::Forbidden(m)) if m.contains("UNVERIFIED")));
    }

    #[tokio::test]
    async fn deposits_count_against_the_daily_deposit_limit() {
        let (_dir, db) = database().await;
        let config = Config::from_vars(Default::default()).expect("config");
        let user_id = user(&db, "BASIC").await;
        deposit_entry(&db, user_id, "19000").await;
        assert_eq!(
            kyc::deposits_used_today(db.conn(), user_id)
                .await
                .expect("sum"),
            dec("19000")
        );
        let txn = db.conn().begin().await.expect("txn");
        kyc::check_deposit(&txn, &config.kyc, user_id, dec("1000"))
            .await
            .expect("exactly the BASIC limit");
        let over = kyc::check_deposit(&txn, &config.kyc, user_id, dec("1000.01")).await;
        assert!(matches!(over, Err(ApiError::Forbidden(m)) if m.contains("1000 USD remains")));
    }

    #[tokio::test]
    async fn withdrawing_a_fresh_deposit_raises_a_rapid_in_out_alert() {
        let (_dir, db) = database().await;
        let rules = Rules::default();
        let user_id = user(&db, "BASIC").await;
        let entry = deposit_entry(&db, user_id, "1000").await;
        let txn = db.conn().begin().await.expect("txn");
        on_deposit(&txn, &rules, &entry).await.expect("monitored");
        let withdrawal = Uuid::now_v7();
        on_withdrawal(
            &txn,
            &rules,
            user_id,
            withdrawal,
            "USD",
            dec("900"),
            Some(dec("900")),
        )
        .await
        .expect("monitored");
        let alerts = compliance_alerts::Entity::find()
            .filter(compliance_alerts::Column::UserId.eq(user_id))
            .all(&txn)
            .await
            .expect("alerts");
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].rule, "RAPID_IN_OUT");
        assert_eq!(alerts[0].subject_id, withdrawal.to_string());
        assert!(alerts[0].evidence.contains(&entry.id.to_string()));
        assert_eq!(risk_score(&txn, user_id).await.expect("score"), 35);
        // A small withdrawal afterwards does not fire again on its own.
        let small = on_withdrawal(
            &txn,
            &rules,
            user_id,
            Uuid::now_v7(),
            "USD",
            dec("10"),
            Some(dec("10")),
        )
        .await;
        assert!(small.is_ok());
        let count = compliance_alerts::Entity::find()
            .filter(compliance_alerts::Column::UserId.eq(user_id))
            .all(&txn)
            .await
            .expect("alerts")
            .len();
        assert_eq!(count, 1);
        txn.commit().await.expect("commit");
    }
}
