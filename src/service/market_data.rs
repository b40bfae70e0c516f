//! Public market data: the aggregated order book, recent trades and 24-hour statistics.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::error::ApiError;
use entity::{fills, orders};

/// Orders fetched per read while aggregating book levels.
const BOOK_READ: u64 = 500;

/// One price level of the book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    pub price: Decimal,
    pub quantity: Decimal,
    pub orders: u32,
}

/// The best `depth` levels of one side, best first. Reads only the orders on those
/// levels, through the book index.
pub async fn side_levels<C: ConnectionTrait>(
    conn: &C,
    market: &str,
    side: &str,
    depth: usize,
) -> Result<Vec<Level>, ApiError> {
    let mut levels: BTreeMap<i64, Level> = BTreeMap::new();
    let mut offset = 0;
    loop {
        let mut query = orders::Entity::find()
            .filter(orders::Column::Market.eq(market))
            .filter(super::orders::in_open_book(side));
        query = if side == "BUY" {
            query.order_by_desc(orders::Column::PriceTicks)
        } else {
            query.order_by_asc(orders::Column::PriceTicks)
        };
        let rows = query
            .order_by_asc(orders::Column::Sequence)
            .offset(offset)
            .limit(BOOK_READ)
            .all(conn)
            .await?;
        let exhausted = (rows.len() as u64) < BOOK_READ;
        offset += rows.len() as u64;
        for row in rows {
            let ticks = row.price_ticks.unwrap_or_default();
            if !levels.contains_key(&ticks) && levels.len() >= depth {
                return Ok(ordered(levels, side));
            }
            let remaining = row.quantity.map(|q| q.0).unwrap_or_default() - row.filled_quantity.0;
            let level = levels.entry(ticks).or_insert(Level {
                price: row.price.map(|p| p.0).unwrap_or_default(),
                quantity: Decimal::ZERO,
                orders: 0,
            });
            level.quantity += remaining;
            level.orders += 1;
        }
        if exhausted {
            return Ok(ordered(levels, side));
        }
    }
}

fn ordered(levels: BTreeMap<i64, Level>, side: &str) -> Vec<Level> {
    if side == "BUY" {
        levels.into_values().rev().collect()
    } else {
        levels.into_values().collect()
    }
}

/// The market's latest trades (their taker fills), newest first.
pub async fn recent_trades<C: ConnectionTrait>(
    conn: &C,
    market: &str,
    limit: u64,
) -> Result<Vec<fills::Model>, ApiError> {
    Ok(fills::Entity::find()
        .filter(fills::Column::Market.eq(market))
        .filter(fills::Column::Liquidity.eq("TAKER"))
        .order_by_desc(fills::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Trading over the last 24 hours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayStats {
    /// Base volume traded.
    pub volume: Decimal,
    /// Relative change from the first to the last trade price in the window.
    pub change: Option<Decimal>,
}

/// 24-hour volume and price change. Sums the window's trades in exact decimals here
/// (SQLite cannot sum decimal text exactly).
pub async fn day_stats<C: ConnectionTrait>(conn: &C, market: &str) -> Result<DayStats, ApiError> {
    let since = Utc::now() - Duration::hours(24);
    let trades = fills::Entity::find()
        .filter(fills::Column::Market.eq(market))
        .filter(fills::Column::Liquidity.eq("TAKER"))
        .filter(fills::Column::CreatedAt.gte(since))
        .order_by_asc(fills::Column::Id)
        .all(conn)
        .await?;
    let volume = trades.iter().map(|t| t.quantity.0).sum();
    let change = match (trades.first(), trades.last()) {
        (Some(first), Some(last)) if !first.price.0.is_zero() => {
            (last.price.0 - first.price.0).checked_div(first.price.0)
        }
        _ => None,
    };
    Ok(DayStats { volume, change })
}
