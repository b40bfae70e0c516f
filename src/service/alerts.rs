//! Price alerts and notifications.
//!
//! Alerts are evaluated inside the transaction that moves a market's last price
//! ([`on_trades`], called once from `service::orders` under the market's row lock), so
//! each crossing fires each alert exactly once however many replicas run: the alert's
//! new state and its notification commit with the trades, and the push to
//! `priceAlertTriggered` is published after that commit like every other event.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::markets;
use crate::auth::Viewer;
use crate::domain::alert_book::{self, Condition as AlertCondition};
use crate::domain::order_rules;
use crate::error::ApiError;
use crate::events::{Collector, Event};
use crate::state::AppState;
use entity::{markets as market_rows, notifications, price_alerts, Amount};

/// Alerts one user may keep at once: the alert book stays small and cheap to scan.
pub const MAX_ALERTS_PER_USER: u64 = 200;
/// A recurring alert's default quiet time after it fires.
pub const DEFAULT_COOLDOWN_SECONDS: i32 = 300;
/// The longest cool-down accepted (a week).
pub const MAX_COOLDOWN_SECONDS: i32 = 7 * 24 * 3600;

/// Notification kinds as stored.
pub mod kind {
    pub const PRICE_ALERT: &str = "PRICE_ALERT";
}

/// A new alert, as the API receives it.
pub struct NewAlert {
    pub market: String,
    pub condition: AlertCondition,
    pub price: Decimal,
    pub recurring: bool,
    pub cooldown_seconds: Option<i32>,
}

/// Creates an alert. It fires when a trade moves the last price across `price` in its
/// direction: a price already beyond it must first come back.
pub async fn create(
    state: &AppState,
    viewer: &Viewer,
    input: NewAlert,
) -> Result<price_alerts::Model, ApiError> {
    let market = markets::find_market(state.db.conn(), &input.market)
        .await?
        .ok_or_else(|| ApiError::bad_input("input.market", "unknown market"))?;
    if input.price <= Decimal::ZERO {
        return Err(ApiError::bad_input("input.price", "must be positive"));
    }
    let threshold = alert_book::threshold_ticks(input.condition, input.price, market.tick_size.0)
        .filter(|t| *t > 0)
        .ok_or_else(|| {
            ApiError::bad_input("input.price", "must be at least one tick and in range")
        })?;
    let cooldown = match (input.recurring, input.cooldown_seconds) {
        (_, Some(seconds)) if !(0..=MAX_COOLDOWN_SECONDS).contains(&seconds) => {
            return Err(ApiError::bad_input(
                "input.cooldownSeconds",
                format!("must be between 0 and {MAX_COOLDOWN_SECONDS}"),
            ))
        }
        (false, Some(_)) => {
            return Err(ApiError::bad_input(
                "input.cooldownSeconds",
                "only a recurring alert has a cool-down",
            ))
        }
        (true, seconds) => seconds.unwrap_or(DEFAULT_COOLDOWN_SECONDS),
        (false, None) => 0,
    };
    let user_id = viewer.user_id();
    let count = price_alerts::Entity::find()
        .filter(price_alerts::Column::UserId.eq(user_id))
        .count(state.db.conn())
        .await?;
    if count >= MAX_ALERTS_PER_USER {
        return Err(ApiError::Conflict(format!(
            "at most {MAX_ALERTS_PER_USER} price alerts per user; delete some first"
        )));
    }
    let alert = price_alerts::Model {
        id: Uuid::now_v7(),
        user_id,
        market: market.symbol,
        condition: input.condition.as_str().to_owned(),
        price: Amount(input.price.normalize()),
        threshold_ticks: threshold,
        recurring: input.recurring,
        cooldown_seconds: cooldown,
        armed: true,
        cooldown_until: None,
        last_triggered_at: None,
        trigger_count: 0,
        created_at: Utc::now(),
    };
    price_alerts::ActiveModel::from(alert.clone())
        .reset_all()
        .insert(state.db.conn())
        .await?;
    Ok(alert)
}

/// The viewer's alerts, newest first (fired one-shot alerts included, disarmed).
pub async fn list(state: &AppState, viewer: &Viewer) -> Result<Vec<price_alerts::Model>, ApiError> {
    Ok(price_alerts::Entity::find()
        .filter(price_alerts::Column::UserId.eq(viewer.user_id()))
        .order_by_desc(price_alerts::Column::Id)
        .all(state.db.conn())
        .await?)
}

/// Deletes one of the viewer's alerts; another user's alert is `NOT_FOUND`.
pub async fn delete(state: &AppState, viewer: &Viewer, id: Uuid) -> Result<bool, ApiError> {
    let deleted = price_alerts::Entity::delete_many()
        .filter(price_alerts::Column::Id.eq(id))
        .filter(price_alerts::Column::UserId.eq(viewer.user_id()))
        .exec(state.db.conn())
        .await?;
    if deleted.rows_affected == 0 {
        return Err(ApiError::NotFound("price alert"));
    }
    Ok(true)
}

/// Loads alerts by id (for `PriceAlertEvent.alert`), whoever owns them: callers check.
pub async fn find(state: &AppState, id: Uuid) -> Result<Option<price_alerts::Model>, ApiError> {
    Ok(price_alerts::Entity::find_by_id(id)
        .one(state.db.conn())
        .await?)
}

/// Fires the alerts a market's trades crossed. Called once per batch of trades, inside
/// the transaction that wrote them and holds the market's row lock, with the market
/// row as it was before the trades (its `last_price` is the move's starting point) and
/// the trade prices in the order they happened. Reads only the crossed alerts, through
/// the alert book index, never the ones that stay quiet.
pub async fn on_trades(
    txn: &DatabaseTransaction,
    events: &Collector,
    market: &market_rows::Model,
    prices: impl IntoIterator<Item = Decimal>,
) -> Result<(), ApiError> {
    let prices: Vec<Decimal> = prices.into_iter().collect();
    on_trades_in(txn, events, &[(market, prices)]).await
}

/// [`on_trades`] of several markets, each with its row as before its trades and its
/// trade prices, in one read of the alert book.
pub async fn on_trades_in(
    txn: &DatabaseTransaction,
    events: &Collector,
    markets: &[(&market_rows::Model, Vec<Decimal>)],
) -> Result<(), ApiError> {
    struct Move<'a> {
        prices: &'a [Decimal],
        previous: Option<i64>,
        path: Vec<i64>,
    }
    let mut moves = std::collections::HashMap::new();
    // One index range scan per crossed range (a move has at most a few).
    let mut ranges = sea_orm::Condition::any();
    for (market, prices) in markets {
        let tick = market.tick_size.0;
        let to_ticks = |price: Decimal| order_rules::price_ticks(price, tick);
        let path: Vec<i64> = prices.iter().filter_map(|p| to_ticks(*p)).collect();
        if path.len() != prices.len() {
            return Err(ApiError::internal(anyhow::anyhow!(
                "a trade price is not a tick multiple"
            )));
        }
        let previous = market.last_price.and_then(|p| to_ticks(p.0));
        let crossed = alert_book::crossed_ranges(previous, &path);
        if crossed.is_empty() {
            continue;
        }
        for c in &crossed {
            ranges = ranges.add(
                sea_orm::Condition::all()
                    .add(price_alerts::Column::Market.eq(market.symbol.as_str()))
                    .add(price_alerts::Column::Condition.eq(c.condition.as_str()))
                    .add(price_alerts::Column::ThresholdTicks.between(c.from, c.to)),
            );
        }
        let prices = prices.as_slice();
        moves.insert(
            market.symbol.as_str(),
            Move {
                prices,
                previous,
                path,
            },
        );
    }
    if moves.is_empty() {
        return Ok(());
    }
    let mut candidates = price_alerts::Entity::find()
        .filter(price_alerts::Column::Armed.eq(true))
        .filter(ranges)
        .all(txn)
        .await?;
    // A fixed order, so concurrent writers of the same rows never wait in a cycle.
    candidates.sort_by_key(|a| a.id);
    let now = Utc::now();
    for alert in candidates {
        if !alert_book::ready(alert.cooldown_until, now) {
            continue;
        }
        let Some(condition) = AlertCondition::parse(&alert.condition) else {
            continue;
        };
        let Some(moved) = moves.get(alert.market.as_str()) else {
            continue;
        };
        let firing = alert_book::firing_trade(
            condition,
            alert.threshold_ticks,
            moved.previous,
            &moved.path,
        );
        let Some(at) = firing else {
            continue;
        };
        fire(txn, events, &alert, moved.prices[at], now).await?;
    }
    Ok(())
}

async fn fire(
    txn: &DatabaseTransaction,
    events: &Collector,
    alert: &price_alerts::Model,
    price: Decimal,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let next = alert_book::after_firing(alert.recurring, alert.cooldown_seconds, now);
    let mut active: price_alerts::ActiveModel = alert.clone().into();
    active.armed = Set(next.armed);
    active.cooldown_until = Set(next.cooldown_until);
    active.last_triggered_at = Set(Some(now));
    active.trigger_count = Set(alert.trigger_count.saturating_add(1));
    active.update(txn).await?;
    let (direction, verb) = match alert.condition.as_str() {
        "ABOVE" => ("above", "rose to"),
        _ => ("below", "fell to"),
    };
    let notification = notifications::Model {
        id: Uuid::now_v7(),
        user_id: alert.user_id,
        kind: kind::PRICE_ALERT.to_owned(),
        title: format!("{} {direction} {}", alert.market, alert.price),
        body: format!(
            "{} {verb} {} (alert: {direction} {}).",
            alert.market,
            price.normalize(),
            alert.price
        ),
        alert_id: Some(alert.id),
        market: Some(alert.market.clone()),
        price: Some(Amount(price.normalize())),
        created_at: now,
        read_at: None,
    };
    notifications::ActiveModel::from(notification.clone())
        .reset_all()
        .insert(txn)
        .await?;
    events.push(Event::PriceAlertTriggered {
        user_id: alert.user_id,
        alert_id: alert.id,
        notification_id: notification.id,
        market: alert.market.clone(),
        price: price.normalize(),
        triggered_at: now,
    });
    Ok(())
}

/// A page of the viewer's notifications, newest first, after the keyset cursor.
pub async fn notifications(
    state: &AppState,
    viewer: &Viewer,
    unread_only: bool,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<notifications::Model>, ApiError> {
    let mut query =
        notifications::Entity::find().filter(notifications::Column::UserId.eq(viewer.user_id()));
    if unread_only {
        query = query.filter(notifications::Column::ReadAt.is_null());
    }
    if let Some(after) = after {
        query = query.filter(notifications::Column::Id.lt(after));
    }
    Ok(query
        .order_by_desc(notifications::Column::Id)
        .limit(limit)
        .all(state.db.conn())
        .await?)
}

/// Marks the viewer's notifications read; returns how many were unread before. Ids of
/// other users' notifications are ignored (they change nothing and reveal nothing).
pub async fn mark_read(state: &AppState, viewer: &Viewer, ids: &[Uuid]) -> Result<u64, ApiError> {
    if ids.len() > 500 {
        return Err(ApiError::bad_input("ids", "at most 500 ids at once"));
    }
    if ids.is_empty() {
        return Ok(0);
    }
    let updated = notifications::Entity::update_many()
        .col_expr(
            notifications::Column::ReadAt,
            sea_orm::sea_query::Expr::value(Utc::now()),
        )
        .filter(notifications::Column::UserId.eq(viewer.user_id()))
        .filter(notifications::Column::Id.is_in(ids.iter().copied()))
        .filter(notifications::Column::ReadAt.is_null())
        .exec(state.db.conn())
        .await?;
    Ok(updated.rows_affected)
}
