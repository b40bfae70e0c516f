//! PLACEHOLDER for the lead's audit log core (replaced wholesale by main's version at
//! merge): the same interface, recording nothing yet.

use uuid::Uuid;

use crate::error::ApiError;

pub struct AuditEntry {
    pub action: String,
    pub actor_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub subject_type: String,
    pub subject_id: String,
    pub details: serde_json::Value,
}

impl AuditEntry {
    pub fn new(
        action: impl Into<String>,
        subject_type: impl Into<String>,
        subject_id: impl ToString,
    ) -> Self {
        AuditEntry {
            action: action.into(),
            actor_id: None,
            owner_id: None,
            subject_type: subject_type.into(),
            subject_id: subject_id.to_string(),
            details: serde_json::Value::Null,
        }
    }

    pub fn actor(mut self, id: Uuid) -> Self {
        self.actor_id = Some(id);
        self
    }

    pub fn owner(mut self, id: Uuid) -> Self {
        self.owner_id = Some(id);
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

pub async fn record(
    _txn: &sea_orm::DatabaseTransaction,
    entry: AuditEntry,
) -> Result<(), ApiError> {
    tracing::debug!(action = %entry.action, subject = %entry.subject_type, "audit (placeholder)");
    let _ = (
        entry.actor_id,
        entry.owner_id,
        entry.subject_id,
        entry.details,
    );
    Ok(())
}
