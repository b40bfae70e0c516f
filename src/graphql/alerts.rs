//! Price alerts and notifications.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, Object, ID};

use super::access::api_key;
use super::accounts::parse_id;
use super::api_keys::ApiScope;
use super::context::ContextExt;
use super::pagination;
use super::scalars::{DateTime, Decimal};
use crate::domain::alert_book;
use crate::error::ApiError;
use crate::service::alerts as service;

/// Which way the price must cross an alert's threshold.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum AlertCondition {
    /// Fires when a trade moves the last price from below the threshold to it or above.
    Above,
    /// Fires when a trade moves the last price from above the threshold to it or below.
    Below,
}

impl From<AlertCondition> for alert_book::Condition {
    fn from(condition: AlertCondition) -> Self {
        match condition {
            AlertCondition::Above => alert_book::Condition::Above,
            AlertCondition::Below => alert_book::Condition::Below,
        }
    }
}

/// A price alert of the signed-in user.
pub struct PriceAlert(pub entity::price_alerts::Model);

/// A price alert of the signed-in user.
#[Object]
impl PriceAlert {
    /// Opaque identifier.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The market symbol watched, e.g. `BTC-USD`.
    async fn market(&self) -> &str {
        &self.0.market
    }

    /// Which way the price must cross `price`.
    async fn condition(&self) -> AlertCondition {
        if self.0.condition == "BELOW" {
            AlertCondition::Below
        } else {
            AlertCondition::Above
        }
    }

    /// The threshold. A price between two ticks fires at the first tick price that
    /// reaches it.
    async fn price(&self) -> Decimal {
        Decimal(self.0.price.0)
    }

    /// Whether the alert fires on every crossing (after its cool-down) rather than once.
    async fn recurring(&self) -> bool {
        self.0.recurring
    }

    /// Seconds a recurring alert stays quiet after firing; 0 for a one-shot alert.
    async fn cooldown_seconds(&self) -> i32 {
        self.0.cooldown_seconds
    }

    /// Whether the alert can still fire. A one-shot alert disarms when it fires.
    async fn active(&self) -> bool {
        self.0.armed
    }

    /// Until when a recurring alert that fired stays quiet; null when it is not
    /// cooling down.
    async fn cooldown_until(&self) -> Option<DateTime> {
        self.0
            .cooldown_until
            .filter(|until| *until > chrono::Utc::now())
            .map(DateTime)
    }

    /// When it last fired; null if it never did.
    async fn last_triggered_at(&self) -> Option<DateTime> {
        self.0.last_triggered_at.map(DateTime)
    }

    /// How many times it fired.
    async fn trigger_count(&self) -> i32 {
        self.0.trigger_count
    }

    /// When it was created.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

/// A new price alert.
#[derive(InputObject)]
pub struct CreatePriceAlertInput {
    /// Market symbol, e.g. `BTC-USD`.
    market: String,
    /// Which way the price must cross.
    condition: AlertCondition,
    /// The threshold, a positive decimal.
    price: Decimal,
    /// Fire on every crossing (after the cool-down) instead of once. Default false.
    #[graphql(default = false)]
    recurring: bool,
    /// For a recurring alert: seconds to stay quiet after firing (0 to 604800,
    /// default 300). Refused for a one-shot alert.
    cooldown_seconds: Option<i32>,
}

/// Something the signed-in user should see, such as a price alert that fired.
pub struct Notification(pub entity::notifications::Model);

/// Something the signed-in user should see, such as a price alert that fired.
#[Object]
impl Notification {
    /// Opaque identifier.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// What kind of notification it is: `PRICE_ALERT`, or `SECURITY` (a sign-in from a new
    /// device or location).
    async fn kind(&self) -> &str {
        &self.0.kind
    }

    /// A one-line summary.
    async fn title(&self) -> &str {
        &self.0.title
    }

    /// The full text.
    async fn body(&self) -> &str {
        &self.0.body
    }

    /// The alert that fired, for `PRICE_ALERT`; null otherwise or once the alert has
    /// been deleted.
    async fn alert(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<PriceAlert>> {
        let Some(id) = self.0.alert_id else {
            return Ok(None);
        };
        Ok(service::find(ctx.state(), id)
            .await?
            .filter(|a| a.user_id == self.0.user_id)
            .map(PriceAlert))
    }

    /// The market concerned; null when none is.
    async fn market(&self) -> Option<&str> {
        self.0.market.as_deref()
    }

    /// The trade price that fired a price alert; null for other kinds.
    async fn price(&self) -> Option<Decimal> {
        self.0.price.map(|p| Decimal(p.0))
    }

    /// Whether it has been marked read.
    async fn read(&self) -> bool {
        self.0.read_at.is_some()
    }

    /// When it was marked read; null while unread.
    async fn read_at(&self) -> Option<DateTime> {
        self.0.read_at.map(DateTime)
    }

    /// When it was created.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

#[derive(Default)]
pub struct AlertQuery;

#[Object]
impl AlertQuery {
    /// The signed-in user's price alerts, newest first, fired one-shot alerts included
    /// (`active: false`).
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn price_alerts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<PriceAlert>> {
        let viewer = ctx.viewer()?;
        let alerts = service::list(ctx.state(), viewer).await?;
        Ok(alerts.into_iter().map(PriceAlert).collect())
    }

    /// The signed-in user's notifications, newest first; only unread ones with
    /// `unreadOnly: true`. `first` is at most 200.
    #[graphql(directive = api_key::apply(Some(ApiScope::Read)))]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        unread_only: Option<bool>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Connection<String, Notification>> {
        let viewer = ctx.viewer()?;
        let page = pagination::page(first, after, last, before)?;
        let mut rows = service::notifications(
            ctx.state(),
            viewer,
            unread_only.unwrap_or(false),
            page.after,
            page.limit + 1,
        )
        .await?;
        let has_next = rows.len() as u64 > page.limit;
        rows.truncate(page.limit as usize);
        let mut connection = Connection::new(page.after.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter()
                .map(|n| Edge::new(pagination::encode_cursor(n.id), Notification(n))),
        );
        Ok(connection)
    }
}

#[derive(Default)]
pub struct AlertMutation;

#[Object]
impl AlertMutation {
    /// Creates a price alert on a market. It fires when a trade moves the last price
    /// across `price` in its direction (a price already beyond it must come back
    /// first), stores a notification and pushes `priceAlertTriggered`.
    /// `BAD_USER_INPUT` for an unknown market, a price that is not positive, or a
    /// cool-down on a one-shot alert; `CONFLICT` beyond 200 alerts per user.
    async fn create_price_alert(
        &self,
        ctx: &Context<'_>,
        input: CreatePriceAlertInput,
    ) -> async_graphql::Result<PriceAlert> {
        let viewer = ctx.viewer()?;
        let alert = service::create(
            ctx.state(),
            viewer,
            service::NewAlert {
                market: input.market,
                condition: input.condition.into(),
                price: input.price.0,
                recurring: input.recurring,
                cooldown_seconds: input.cooldown_seconds,
            },
        )
        .await?;
        Ok(PriceAlert(alert))
    }

    /// Deletes one of the signed-in user's price alerts; true when deleted.
    /// `NOT_FOUND` for an unknown id or another user's alert.
    async fn delete_price_alert(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&id, "price alert")?;
        Ok(service::delete(ctx.state(), viewer, id).await?)
    }

    /// Marks notifications of the signed-in user read; returns how many were unread.
    /// Unknown ids and other users' notifications are ignored. At most 500 ids.
    async fn mark_notifications_read(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
    ) -> async_graphql::Result<i32> {
        let viewer = ctx.viewer()?;
        let ids: Vec<uuid::Uuid> = ids
            .iter()
            .filter_map(|id| uuid::Uuid::parse_str(id.as_str()).ok())
            .collect();
        if ids.len() > 500 {
            return Err(ApiError::bad_input("ids", "at most 500 ids at once").into());
        }
        let marked = service::mark_read(ctx.state(), viewer, &ids).await?;
        Ok(i32::try_from(marked).unwrap_or(i32::MAX))
    }
}
