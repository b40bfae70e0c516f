//! STUB until the lead's audit log lands on main (then replaced by `git merge main`):
//! the interface of the brief, recording nothing.

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
    _entry: AuditEntry,
) -> Result<(), ApiError> {
    Ok(())
}
