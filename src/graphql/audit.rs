//! The audit log on the API: the full log for ADMIN and COMPLIANCE_OFFICER, a user's
//! own security log, and the chain check.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, InputObject, Json, Object, SimpleObject, ID};
use uuid::Uuid;

use super::context::ContextExt;
use super::pagination;
use super::scalars::DateTime;
use crate::error::ApiError;
use crate::service::audit;
use entity::Role;

/// One recorded action.
pub struct AuditEvent(pub entity::audit_events::Model);

impl From<entity::audit_events::Model> for AuditEvent {
    fn from(model: entity::audit_events::Model) -> Self {
        AuditEvent(model)
    }
}

/// One security or money action, as recorded in the append-only audit log.
#[Object]
impl AuditEvent {
    /// Opaque identifier.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// What happened, dotted and past tense: `order.placed`, `login.failed`, ...
    async fn action(&self) -> &str {
        &self.0.action
    }

    /// The user who acted; null for the system or an anonymous caller.
    async fn actor_id(&self) -> Option<ID> {
        self.0.actor_id.map(|id| ID(id.to_string()))
    }

    /// The user the action concerns (whose security log shows it); null for none.
    async fn owner_id(&self) -> Option<ID> {
        self.0.owner_id.map(|id| ID(id.to_string()))
    }

    /// The kind of object acted on: `order`, `api_key`, `content`, `user`, ...
    async fn subject_type(&self) -> &str {
        &self.0.subject_type
    }

    /// The id of the object acted on.
    async fn subject_id(&self) -> &str {
        &self.0.subject_id
    }

    /// Ids, amounts, states and reasons of the action (never personal data).
    async fn details(&self) -> Json<serde_json::Value> {
        Json(serde_json::from_str(&self.0.details).unwrap_or(serde_json::Value::Null))
    }

    /// When it was recorded.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// The chain this event belongs to (`user:<id>`, `market:<symbol>`, `system`, ...).
    async fn chain(&self) -> &str {
        &self.0.chain
    }

    /// The event's position in its chain, from 1 without gaps.
    async fn chain_sequence(&self) -> i64 {
        self.0.chain_seq
    }

    /// Hex SHA-256 over this event and `previousHash`.
    async fn hash(&self) -> &str {
        &self.0.hash
    }

    /// The hash of the event before it in its chain (64 zeros for the first).
    async fn previous_hash(&self) -> &str {
        &self.0.prev_hash
    }
}

/// Filters for `auditLog`.
#[derive(InputObject, Default)]
pub struct AuditLogFilter {
    /// Only events by this user.
    actor_id: Option<ID>,
    /// Only events with this action, e.g. `login.failed`.
    action: Option<String>,
    /// Only events about this kind of object.
    subject_type: Option<String>,
    /// Only events about this object.
    subject_id: Option<String>,
    /// Only events at or after this instant.
    from: Option<DateTime>,
    /// Only events before this instant.
    to: Option<DateTime>,
}

/// Filters for `securityLog`.
#[derive(InputObject, Default)]
pub struct SecurityLogFilter {
    /// Only events with this action, e.g. `login.failed`.
    action: Option<String>,
    /// Only events at or after this instant.
    from: Option<DateTime>,
    /// Only events before this instant.
    to: Option<DateTime>,
}

/// What a check of every audit chain found.
#[derive(SimpleObject)]
pub struct AuditChainStatus {
    /// True when every event's hash and link checks out.
    valid: bool,
    /// How many events were checked.
    checked_events: u64,
    /// The earliest event at which a chain breaks (altered, or following a removed
    /// event); null when valid, or when a chain lost all of its events.
    first_broken_event_id: Option<ID>,
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// Every audit event, newest first. ADMIN and COMPLIANCE_OFFICER only (`FORBIDDEN`
    /// otherwise). `first` is at most 200.
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditLogFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Connection<String, AuditEvent>> {
        let viewer = ctx.viewer()?;
        if !(viewer.has_role(Role::Admin) || viewer.has_role(Role::ComplianceOfficer)) {
            return Err(ApiError::Forbidden(
                "this needs the ADMIN or COMPLIANCE_OFFICER role".into(),
            )
            .into());
        }
        let page = pagination::page(first, after, last, before)?;
        let filter = filter.unwrap_or_default();
        let actor_id = filter
            .actor_id
            .map(|id| {
                Uuid::parse_str(id.as_str())
                    .map_err(|_| ApiError::bad_input("filter.actorId", "not a user id"))
            })
            .transpose()?;
        let filter = audit::EventFilter {
            actor_id,
            owner_id: None,
            action: filter.action,
            subject_type: filter.subject_type,
            subject_id: filter.subject_id,
            from: filter.from.map(|d| d.0),
            to: filter.to.map(|d| d.0),
        };
        page_of(ctx, &filter, page).await
    }

    /// The signed-in user's own security and money events (logins, key and 2FA
    /// changes, orders, withdrawals), newest first. `first` is at most 200.
    async fn security_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<SecurityLogFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Connection<String, AuditEvent>> {
        let viewer = ctx.viewer()?;
        let page = pagination::page(first, after, last, before)?;
        let filter = filter.unwrap_or_default();
        let filter = audit::EventFilter {
            owner_id: Some(viewer.user_id()),
            action: filter.action,
            from: filter.from.map(|d| d.0),
            to: filter.to.map(|d| d.0),
            ..Default::default()
        };
        page_of(ctx, &filter, page).await
    }

    /// Recomputes every hash of every audit chain and reports the first broken link.
    /// ADMIN only. Reads the whole log.
    async fn verify_audit_chain(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<AuditChainStatus> {
        ctx.viewer_with_role(Role::Admin)?;
        let status = audit::verify(ctx.state().db.conn()).await?;
        Ok(AuditChainStatus {
            valid: status.valid,
            checked_events: status.checked_events,
            first_broken_event_id: status.first_broken_event_id.map(|id| ID(id.to_string())),
        })
    }
}

async fn page_of(
    ctx: &Context<'_>,
    filter: &audit::EventFilter,
    page: pagination::Page,
) -> async_graphql::Result<Connection<String, AuditEvent>> {
    let mut rows = audit::events(ctx.state().db.conn(), filter, page.after, page.limit + 1).await?;
    let has_next = rows.len() as u64 > page.limit;
    rows.truncate(page.limit as usize);
    let mut connection = Connection::new(page.after.is_some(), has_next);
    connection.edges.extend(
        rows.into_iter()
            .map(|row| Edge::new(pagination::encode_cursor(row.id), AuditEvent(row))),
    );
    Ok(connection)
}
