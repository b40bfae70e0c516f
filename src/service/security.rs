//! Account security around the other use cases: the withdrawal lock after a security
//! change, security e-mails, and noticing sign-ins from a new device or address.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter,
};
use serde_json::json;

use super::audit::{self, AuditEntry};
use super::sessions::describe_device;
use super::{email, ClientInfo};
use crate::error::ApiError;
use crate::state::AppState;
use entity::{sessions, user_security, users};

/// Records a security change (a new password, 2FA turned off, a passkey added or
/// removed): withdrawals stay locked for the configured period, since whoever made the
/// change may have taken the account over, and the owner is told by e-mail.
pub async fn security_changed(
    state: &AppState,
    txn: &DatabaseTransaction,
    user: &users::Model,
    what: &str,
) -> Result<DateTime<Utc>, ApiError> {
    let now = Utc::now();
    let lock =
        chrono::Duration::from_std(state.config.security.withdrawal_lock_after_security_change)
            .unwrap_or_else(|_| chrono::Duration::days(1));
    let until = now + lock;
    let row = user_security::ActiveModel {
        user_id: sea_orm::ActiveValue::Set(user.id),
        withdrawals_locked_until: sea_orm::ActiveValue::Set(Some(until)),
        updated_at: sea_orm::ActiveValue::Set(now),
    };
    user_security::Entity::insert(row)
        .on_conflict(
            OnConflict::column(user_security::Column::UserId)
                .update_columns([
                    user_security::Column::WithdrawalsLockedUntil,
                    user_security::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    let body = if lock.num_seconds() > 0 {
        format!(
            "A security change was made to your account: {what}.\n\nFor your protection, \
             withdrawals are paused until {} UTC.",
            until.format("%Y-%m-%d %H:%M")
        )
    } else {
        format!("A security change was made to your account: {what}.")
    };
    email::enqueue(
        txn,
        user,
        "Security change on your tradegraph account",
        &body,
    )
    .await?;
    Ok(until)
}

/// Until when the user's withdrawals are locked, if they are now.
pub async fn withdrawals_locked_until<C: ConnectionTrait>(
    conn: &C,
    user_id: uuid::Uuid,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let row = user_security::Entity::find_by_id(user_id).one(conn).await?;
    Ok(row
        .and_then(|r| r.withdrawals_locked_until)
        .filter(|until| *until > Utc::now()))
}

/// How a user signed in, for the audit log.
#[derive(Clone, Copy, Debug)]
pub enum LoginMethod {
    Password,
    Passkey,
}

impl LoginMethod {
    fn as_str(self) -> &'static str {
        match self {
            LoginMethod::Password => "password",
            LoginMethod::Passkey => "passkey",
        }
    }
}

/// Audits a successful sign-in and, when it comes from a device or an IP address the
/// account has not signed in from before, e-mails the owner. Call it in the sign-in's
/// transaction before the new session is stored.
/// The `kind` of the notification a sign-in from a new device or location leaves.
pub const SECURITY_NOTIFICATION: &str = "SECURITY";

pub async fn note_login(
    txn: &DatabaseTransaction,
    user: &users::Model,
    client: &ClientInfo,
    method: LoginMethod,
) -> Result<(), ApiError> {
    let device = describe_device(&client.user_agent);
    let ip: String = client.ip.chars().take(64).collect();
    let of_user = || sessions::Entity::find().filter(sessions::Column::UserId.eq(user.id));
    let any_before = of_user().count(txn).await? > 0;
    let known_device = of_user()
        .filter(sessions::Column::Device.eq(device.as_str()))
        .count(txn)
        .await?
        > 0;
    let known_ip = of_user()
        .filter(sessions::Column::Ip.eq(ip.as_str()))
        .count(txn)
        .await?
        > 0;
    let new_device = any_before && !(known_device && known_ip);
    if new_device {
        email::enqueue(
            txn,
            user,
            "New sign-in to your tradegraph account",
            &format!(
                "Your account was signed in to from a new device or location:\n\n  \
                 Device: {device}\n  IP address: {ip}\n  Time: {} UTC\n\nIf this was you, \
                 there is nothing to do. If not, revoke the session under Sessions.",
                Utc::now().format("%Y-%m-%d %H:%M")
            ),
        )
        .await?;
        // The same news in the panel's notifications, in the same transaction.
        entity::notifications::ActiveModel::from(entity::notifications::Model {
            id: uuid::Uuid::now_v7(),
            user_id: user.id,
            kind: SECURITY_NOTIFICATION.to_owned(),
            title: "New sign-in".to_owned(),
            body: format!("Signed in from a new device or location: {device}."),
            alert_id: None,
            market: None,
            price: None,
            created_at: Utc::now(),
            read_at: None,
        })
        .reset_all()
        .insert(txn)
        .await?;
    }
    audit::record(
        txn,
        AuditEntry::new("login", "user", user.id)
            .actor(user.id)
            .owner(user.id)
            .details(json!({ "method": method.as_str(), "newDevice": new_device })),
    )
    .await
}

/// Audits a refused sign-in in its own transaction (the sign-in itself wrote nothing).
pub async fn note_login_failure(
    state: &AppState,
    user_id: Option<uuid::Uuid>,
    reason: &'static str,
) -> Result<(), ApiError> {
    state
        .db
        .write(|txn| {
            Box::pin(async move {
                let subject = user_id.map_or_else(|| "unknown".to_owned(), |id| id.to_string());
                let mut entry = AuditEntry::new("login.failed", "user", subject)
                    .details(json!({ "reason": reason }));
                if let Some(id) = user_id {
                    entry = entry.owner(id);
                }
                audit::record(txn, entry).await
            })
        })
        .await
}
