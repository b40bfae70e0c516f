//! Request rate tiers.

use async_graphql::{Context, Enum, Object, ID};
use entity::Role;

use super::accounts::{parse_id, User};
use super::context::ContextExt;
use crate::ratelimit::Tier;
use crate::service::rate_limits as service;

/// How many requests a minute a user (and each of their API keys) may make; the
/// numbers are set by the operator (`RATE_LIMIT_*_PER_MINUTE`, by default 100, 300 and
/// 1000). Every response reports the state in `RateLimit-*` headers.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum RateLimitTier {
    /// The lowest budget.
    Basic,
    /// The default for new accounts unless the operator chose otherwise.
    Standard,
    /// For heavy API users.
    Pro,
}

impl From<Tier> for RateLimitTier {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Basic => RateLimitTier::Basic,
            Tier::Standard => RateLimitTier::Standard,
            Tier::Pro => RateLimitTier::Pro,
        }
    }
}

impl From<RateLimitTier> for Tier {
    fn from(tier: RateLimitTier) -> Self {
        match tier {
            RateLimitTier::Basic => Tier::Basic,
            RateLimitTier::Standard => Tier::Standard,
            RateLimitTier::Pro => Tier::Pro,
        }
    }
}

#[derive(Default)]
pub struct RateLimitMutation;

#[Object]
impl RateLimitMutation {
    /// Sets a user's rate limit tier. ADMIN only, with a session (`FORBIDDEN`
    /// otherwise); `NOT_FOUND` for an unknown or deleted user.
    async fn set_rate_limit_tier(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        tier: RateLimitTier,
    ) -> async_graphql::Result<User> {
        let viewer = ctx.viewer_with_role(Role::Admin)?;
        let user_id = parse_id(&user_id, "user")?;
        let user = service::set_tier(ctx.state(), viewer, user_id, tier.into()).await?;
        Ok(User(user))
    }
}
