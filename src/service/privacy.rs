//! Privacy: a user's export of everything held about them, and erasure of their
//! personal data.
//!
//! Erasure keeps what the exchange must keep (orders, fills, ledger entries, the audit
//! log) under a pseudonym: the account id, which after erasure no longer leads to a
//! person, because every personal column of the account row is overwritten and every
//! row that only describes the person (sessions with their IPs and devices, API keys
//! with their allowlists) is deleted. Each area that stores personal data of its own
//! adds it to [`export`] and [`erase_personal_rows`].

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde_json::{json, Value};

use super::audit::{self, AuditEntry};
use crate::auth::{password, Viewer};
use crate::error::ApiError;
use crate::state::AppState;
use entity::{
    api_keys, email_outbox, fills, journal_entries, notifications, orders, passkeys,
    password_reset_tokens, price_alerts, recovery_codes, sessions, totp_credentials, users,
    webauthn_challenges, withdrawal_addresses, withdrawals, Role,
};

fn session_only(viewer: &Viewer, what: &str) -> Result<(), ApiError> {
    if viewer.is_session() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "API keys cannot {what}; sign in with a session"
        )))
    }
}

/// Everything held about the viewer, as one JSON document. Recorded in the audit log
/// (`data.exported`).
#[tracing::instrument(skip_all)]
pub async fn export(state: &AppState, viewer: &Viewer) -> Result<Value, ApiError> {
    session_only(viewer, "export account data")?;
    let conn = state.db.conn();
    let user_id = viewer.user_id();
    let user = users::Entity::find_by_id(user_id)
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let sessions = sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(user_id))
        .order_by_asc(sessions::Column::CreatedAt)
        .all(conn)
        .await?;
    let keys = api_keys::Entity::find()
        .filter(api_keys::Column::UserId.eq(user_id))
        .order_by_asc(api_keys::Column::CreatedAt)
        .all(conn)
        .await?;
    let holdings = super::ledger::holdings(conn, user_id).await?;
    let entries = journal_entries::Entity::find()
        .filter(journal_entries::Column::UserId.eq(user_id))
        .order_by_asc(journal_entries::Column::Id)
        .all(conn)
        .await?;
    let orders = orders::Entity::find()
        .filter(orders::Column::UserId.eq(user_id))
        .order_by_asc(orders::Column::Id)
        .all(conn)
        .await?;
    let fills = fills::Entity::find()
        .filter(fills::Column::UserId.eq(user_id))
        .order_by_asc(fills::Column::Id)
        .all(conn)
        .await?;
    let passkeys = passkeys::Entity::find()
        .filter(passkeys::Column::UserId.eq(user_id))
        .all(conn)
        .await?;
    let addresses = withdrawal_addresses::Entity::find()
        .filter(withdrawal_addresses::Column::UserId.eq(user_id))
        .all(conn)
        .await?;
    let withdrawals = withdrawals::Entity::find()
        .filter(withdrawals::Column::UserId.eq(user_id))
        .order_by_asc(withdrawals::Column::Id)
        .all(conn)
        .await?;
    let alerts = price_alerts::Entity::find()
        .filter(price_alerts::Column::UserId.eq(user_id))
        .all(conn)
        .await?;
    let notes = notifications::Entity::find()
        .filter(notifications::Column::UserId.eq(user_id))
        .order_by_asc(notifications::Column::Id)
        .all(conn)
        .await?;
    let emails = email_outbox::Entity::find()
        .filter(email_outbox::Column::UserId.eq(user_id))
        .order_by_asc(email_outbox::Column::Id)
        .all(conn)
        .await?;
    let document = json!({
        "format": "tradegraph-export-v1",
        "exportedAt": Utc::now(),
        "account": {
            "id": user.id,
            "email": user.email,
            "displayName": user.display_name,
            "roles": user.role_set().to_vec().iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "kycTier": user.kyc_tier,
            "twoFactorEnabled": user.two_factor_enabled,
            "antiPhishingCode": user.anti_phishing_code,
            "rateLimitTier": crate::ratelimit::tier_of(&state.config.rate_limits, &user).as_str(),
            "passwordChangedAt": user.password_changed_at,
            "createdAt": user.created_at,
            "updatedAt": user.updated_at,
        },
        "sessions": sessions.iter().map(|s| json!({
            "id": s.id,
            "device": s.device,
            "userAgent": s.user_agent,
            "ip": s.ip,
            "createdAt": s.created_at,
            "lastSeenAt": s.last_seen_at,
            "expiresAt": s.expires_at,
            "revokedAt": s.revoked_at,
            "revokedReason": s.revoked_reason,
        })).collect::<Vec<_>>(),
        "apiKeys": keys.iter().map(|k| json!({
            "id": k.id,
            "label": k.label,
            "prefix": k.prefix,
            "scopes": k.scope_set().to_vec().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "allowedIps": k.allowed_ip_list(),
            "requireSignature": k.require_signature,
            "createdAt": k.created_at,
            "expiresAt": k.expires_at,
            "lastUsedAt": k.last_used_at,
            "revokedAt": k.revoked_at,
        })).collect::<Vec<_>>(),
        "balances": holdings.iter().map(|(asset, h)| json!({
            "asset": asset,
            "available": h.available.to_string(),
            "locked": h.locked.to_string(),
        })).collect::<Vec<_>>(),
        "ledgerEntries": entries.iter().map(|e| json!({
            "id": e.id,
            "kind": e.kind,
            "reference": e.reference,
            "asset": e.asset,
            "amount": e.amount.0.to_string(),
            "description": e.description,
            "createdAt": e.created_at,
        })).collect::<Vec<_>>(),
        "orders": orders.iter().map(|o| json!({
            "id": o.id,
            "market": o.market,
            "side": o.side,
            "type": o.order_type,
            "status": o.status,
            "price": o.price.as_ref().map(|p| p.0.to_string()),
            "triggerPrice": o.trigger_price.as_ref().map(|p| p.0.to_string()),
            "quantity": o.quantity.as_ref().map(|q| q.0.to_string()),
            "quoteQuantity": o.quote_quantity.as_ref().map(|q| q.0.to_string()),
            "filledQuantity": o.filled_quantity.0.to_string(),
            "fee": o.fee.0.to_string(),
            "timeInForce": o.time_in_force,
            "clientOrderId": o.client_order_id,
            "createdAt": o.created_at,
            "updatedAt": o.updated_at,
        })).collect::<Vec<_>>(),
        "fills": fills.iter().map(|f| json!({
            "id": f.id,
            "orderId": f.order_id,
            "market": f.market,
            "side": f.side,
            "price": f.price.0.to_string(),
            "quantity": f.quantity.0.to_string(),
            "fee": f.fee.0.to_string(),
            "feeAsset": f.fee_asset,
            "liquidity": f.liquidity,
            "createdAt": f.created_at,
        })).collect::<Vec<_>>(),
        // Second factors: that they exist and when, never their secrets.
        "passkeys": passkeys.iter().map(|k| json!({
            "id": k.id,
            "name": k.name,
            "createdAt": k.created_at,
            "lastUsedAt": k.last_used_at,
        })).collect::<Vec<_>>(),
        "withdrawalAddresses": addresses.iter().map(|a| json!({
            "id": a.id,
            "asset": a.asset,
            "address": a.address,
            "label": a.label,
            "activatesAt": a.activates_at,
            "createdAt": a.created_at,
            "removedAt": a.removed_at,
        })).collect::<Vec<_>>(),
        "withdrawals": withdrawals.iter().map(|w| json!({
            "id": w.id,
            "asset": w.asset,
            "amount": w.amount.0.to_string(),
            "address": w.address,
            "status": w.status,
            "txid": w.txid,
            "createdAt": w.created_at,
            "updatedAt": w.updated_at,
        })).collect::<Vec<_>>(),
        "priceAlerts": alerts.iter().map(|a| json!({
            "id": a.id,
            "market": a.market,
            "condition": a.condition,
            "price": a.price.0.to_string(),
            "recurring": a.recurring,
            "createdAt": a.created_at,
        })).collect::<Vec<_>>(),
        "notifications": notes.iter().map(|n| json!({
            "id": n.id,
            "kind": n.kind,
            "title": n.title,
            "body": n.body,
            "createdAt": n.created_at,
            "readAt": n.read_at,
        })).collect::<Vec<_>>(),
        "emails": emails.iter().map(|e| json!({
            "id": e.id,
            "to": e.to_address,
            "subject": e.subject,
            "createdAt": e.created_at,
            "sentAt": e.sent_at,
        })).collect::<Vec<_>>(),
    });
    state
        .db
        .write(|txn| {
            Box::pin(async move {
                audit::record(
                    txn,
                    AuditEntry::new("data.exported", "user", user_id)
                        .actor(user_id)
                        .owner(user_id),
                )
                .await
            })
        })
        .await?;
    Ok(document)
}

/// Erases the viewer's personal data after checking their password. Refused while the
/// account holds funds or open orders (they must be withdrawn or cancelled first: an
/// erased account can no longer sign in to do it), and for an ADMIN (who must give up
/// the role first, so the exchange is never left without one).
#[tracing::instrument(skip_all)]
pub async fn delete_account(
    state: &AppState,
    viewer: &Viewer,
    password_plain: String,
) -> Result<bool, ApiError> {
    session_only(viewer, "delete the account")?;
    let user = &viewer.user;
    if !password::verify(password_plain, Some(user.password_hash.clone())).await? {
        return Err(ApiError::bad_input("password", "the password is wrong"));
    }
    if viewer.has_role(Role::Admin) {
        return Err(ApiError::Conflict(
            "an ADMIN cannot delete their account; give up the role first".into(),
        ));
    }
    let user_id = user.id;
    state
        .db
        .write(|txn| {
            Box::pin(async move {
                let open = orders::Entity::find()
                    .filter(orders::Column::UserId.eq(user_id))
                    .filter(
                        sea_orm::Condition::any()
                            .add(orders::Column::IsOpen.eq(true))
                            .add(orders::Column::Status.eq("UNTRIGGERED")),
                    )
                    .count(txn)
                    .await?;
                if open > 0 {
                    return Err(ApiError::Conflict(
                        "cancel your open orders before deleting the account".into(),
                    ));
                }
                let holdings = super::ledger::holdings(txn, user_id).await?;
                if holdings
                    .values()
                    .any(|h| !h.available.is_zero() || !h.locked.is_zero())
                {
                    return Err(ApiError::Conflict(
                        "withdraw your balances before deleting the account".into(),
                    ));
                }
                let now = Utc::now();
                users::Entity::update_many()
                    .col_expr(
                        users::Column::Email,
                        Expr::value(format!("deleted-{}@deleted.invalid", user_id.simple())),
                    )
                    .col_expr(users::Column::DisplayName, Expr::value("Deleted user"))
                    // Not a PHC string: no password can ever verify against it.
                    .col_expr(users::Column::PasswordHash, Expr::value("!erased"))
                    .col_expr(
                        users::Column::AntiPhishingCode,
                        Expr::value(Option::<String>::None),
                    )
                    .col_expr(users::Column::TwoFactorEnabled, Expr::value(false))
                    .col_expr(users::Column::Roles, Expr::value(""))
                    .col_expr(users::Column::DeletedAt, Expr::value(now))
                    .col_expr(users::Column::UpdatedAt, Expr::value(now))
                    .filter(users::Column::Id.eq(user_id))
                    .exec(txn)
                    .await?;
                erase_personal_rows(txn, user_id).await?;
                audit::record(
                    txn,
                    AuditEntry::new("account.deleted", "user", user_id)
                        .actor(user_id)
                        .owner(user_id),
                )
                .await?;
                Ok(true)
            })
        })
        .await?;
    // Its open sockets close on every replica.
    super::live::sessions_revoked(state, user_id, None, None).await;
    Ok(true)
}

/// Deletes the rows that only describe the person: their sessions (devices, IPs; the
/// refresh tokens go with them) and API keys (labels, allowlists).
async fn erase_personal_rows<C: ConnectionTrait>(
    conn: &C,
    user_id: uuid::Uuid,
) -> Result<(), ApiError> {
    api_keys::Entity::delete_many()
        .filter(api_keys::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    sessions::Entity::delete_many()
        .filter(sessions::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    // Credentials and what only describes the person: second factors, pending
    // ceremonies and resets, the address book, alerts, notifications and e-mails (which
    // carry the address). Withdrawals and KYC records stay: they are financial and
    // anti-money-laundering records the exchange must keep.
    macro_rules! erase {
        ($($table:ident),* $(,)?) => {$(
            $table::Entity::delete_many()
                .filter($table::Column::UserId.eq(user_id))
                .exec(conn)
                .await?;
        )*};
    }
    erase!(
        passkeys,
        recovery_codes,
        totp_credentials,
        webauthn_challenges,
        password_reset_tokens,
        withdrawal_addresses,
        price_alerts,
        notifications,
        email_outbox,
    );
    Ok(())
}
