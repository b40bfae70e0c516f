//! Request rate tiers of users (see [`crate::ratelimit`]).

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use crate::auth::Viewer;
use crate::error::ApiError;
use crate::ratelimit::Tier;
use crate::state::AppState;
use entity::{users, Role};

/// Sets a user's tier. ADMIN only, through a session.
pub async fn set_tier(
    state: &AppState,
    viewer: &Viewer,
    user_id: Uuid,
    tier: Tier,
) -> Result<users::Model, ApiError> {
    if !viewer.has_role(Role::Admin) || !viewer.is_session() {
        return Err(ApiError::Forbidden(
            "only an ADMIN can change rate limit tiers".into(),
        ));
    }
    let actor = viewer.user_id();
    state
        .db
        .write(|txn| {
            Box::pin(async move {
                let user = users::Entity::find_by_id(user_id)
                    .filter(users::Column::DeletedAt.is_null())
                    .one(txn)
                    .await?
                    .ok_or(ApiError::NotFound("user"))?;
                let now = Utc::now();
                users::Entity::update_many()
                    .col_expr(users::Column::RateLimitTier, Expr::value(tier.as_str()))
                    .col_expr(users::Column::UpdatedAt, Expr::value(now))
                    .filter(users::Column::Id.eq(user_id))
                    .exec(txn)
                    .await?;
                audit::record(
                    txn,
                    AuditEntry::new("user.rate_limit_tier_changed", "user", user_id)
                        .actor(actor)
                        .owner(user_id)
                        .details(serde_json::json!({
                            "from": user.rate_limit_tier,
                            "to": tier.as_str(),
                        })),
                )
                .await?;
                Ok(users::Model {
                    rate_limit_tier: Some(tier.as_str().to_owned()),
                    updated_at: now,
                    ..user
                })
            })
        })
        .await
}
