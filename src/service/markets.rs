//! Assets and markets: listing, admin changes, and the demo data seeded on first start.

use chrono::Utc;
use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, EntityTrait, PaginatorTrait, QueryOrder,
    SqlErr,
};

use super::audit::{self, AuditEntry};
use crate::auth::Viewer;
use crate::domain::order_rules::MarketRules;
use crate::error::ApiError;
use crate::state::AppState;
use entity::{assets, markets, Amount, Role};

pub const TRADING: &str = "TRADING";
pub const HALTED: &str = "HALTED";

pub async fn list_assets<C: ConnectionTrait>(conn: &C) -> Result<Vec<assets::Model>, ApiError> {
    Ok(assets::Entity::find()
        .order_by_asc(assets::Column::Symbol)
        .all(conn)
        .await?)
}

pub async fn find_asset<C: ConnectionTrait>(
    conn: &C,
    symbol: &str,
) -> Result<Option<assets::Model>, ApiError> {
    Ok(assets::Entity::find_by_id(symbol.to_owned())
        .one(conn)
        .await?)
}

pub async fn list_markets<C: ConnectionTrait>(conn: &C) -> Result<Vec<markets::Model>, ApiError> {
    Ok(markets::Entity::find()
        .order_by_asc(markets::Column::Symbol)
        .all(conn)
        .await?)
}

pub async fn find_market<C: ConnectionTrait>(
    conn: &C,
    symbol: &str,
) -> Result<Option<markets::Model>, ApiError> {
    Ok(markets::Entity::find_by_id(symbol.trim().to_uppercase())
        .one(conn)
        .await?)
}

/// The rules of the markets this process has placed orders in. A market's tick and lot
/// size, minimum notional and its assets' precisions never change once it is created,
/// so placing an order need not read them again. Whether a market trades is not kept
/// here: halts come and go (on any replica), and placement reads the status under the
/// market's lock.
#[derive(Debug, Default)]
pub struct RulesCache(std::sync::RwLock<std::collections::HashMap<String, MarketRules>>);

impl RulesCache {
    fn get(&self, symbol: &str) -> Option<MarketRules> {
        let rules = self.0.read().unwrap_or_else(|p| p.into_inner());
        rules.get(symbol).cloned()
    }

    fn insert(&self, symbol: &str, market_rules: MarketRules) {
        let mut rules = self.0.write().unwrap_or_else(|p| p.into_inner());
        rules.insert(symbol.to_owned(), market_rules);
    }
}

/// A market's symbol as stored and its rules: from the cache, or the first time from
/// its row and its assets' rows. `None` for an unknown market (not remembered: it may
/// be created later).
pub async fn rules(
    state: &AppState,
    symbol: &str,
) -> Result<Option<(String, MarketRules)>, ApiError> {
    let symbol = symbol.trim().to_uppercase();
    if let Some(rules) = state.market_rules.get(&symbol) {
        return Ok(Some((symbol, rules)));
    }
    let conn = state.db.conn();
    let Some(market) = find_market(conn, &symbol).await? else {
        return Ok(None);
    };
    let rules = MarketRules {
        tick_size: market.tick_size.0,
        lot_size: market.lot_size.0,
        min_notional: market.min_notional.0,
        base_precision: asset_precision(conn, &market.base_asset).await?,
        quote_precision: asset_precision(conn, &market.quote_asset).await?,
    };
    state.market_rules.insert(&market.symbol, rules.clone());
    Ok(Some((market.symbol, rules)))
}

async fn asset_precision<C: ConnectionTrait>(conn: &C, symbol: &str) -> Result<u32, ApiError> {
    let asset = find_asset(conn, symbol)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("market asset {symbol} is missing")))?;
    Ok(asset.precision as u32)
}

pub struct NewAsset {
    pub symbol: String,
    pub name: String,
    pub precision: i32,
}

fn require_admin(viewer: &Viewer) -> Result<(), ApiError> {
    if viewer.has_role(Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("this needs the ADMIN role".into()))
    }
}

/// Symbols are 2 to 16 upper-case letters or digits.
fn check_symbol(field: &str, symbol: &str) -> Result<String, ApiError> {
    let symbol = symbol.trim().to_uppercase();
    let ok = (2..=16).contains(&symbol.len()) && symbol.chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(symbol)
    } else {
        Err(ApiError::bad_input(
            field,
            "must be 2 to 16 letters or digits",
        ))
    }
}

pub async fn create_asset(
    state: &AppState,
    viewer: &Viewer,
    input: NewAsset,
) -> Result<assets::Model, ApiError> {
    require_admin(viewer)?;
    let symbol = check_symbol("input.symbol", &input.symbol)?;
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(ApiError::bad_input(
            "input.name",
            "must be 1 to 64 characters",
        ));
    }
    if !(0..=18).contains(&input.precision) {
        return Err(ApiError::bad_input(
            "input.precision",
            "must be between 0 and 18",
        ));
    }
    let row = assets::ActiveModel {
        symbol: Set(symbol),
        name: Set(name),
        precision: Set(input.precision as i16),
        created_at: Set(Utc::now()),
    };
    let admin = viewer.user_id();
    let inserted = state
        .db
        .write(|txn| {
            let row = row.clone();
            Box::pin(async move {
                let asset = row.insert(txn).await?;
                audit::record(
                    txn,
                    AuditEntry::new("asset.created", "asset", &asset.symbol)
                        .actor(admin)
                        .details(serde_json::json!({ "precision": asset.precision })),
                )
                .await?;
                Ok(asset)
            })
        })
        .await;
    match inserted {
        Err(ApiError::Internal(e)) if is_unique_violation(&e) => Err(ApiError::Conflict(
            "an asset with this symbol exists".into(),
        )),
        other => other,
    }
}

pub struct NewMarket {
    pub base_asset: String,
    pub quote_asset: String,
    pub tick_size: Decimal,
    pub lot_size: Decimal,
    pub min_notional: Decimal,
    pub maker_fee_bps: i32,
    pub taker_fee_bps: i32,
}

pub async fn create_market(
    state: &AppState,
    viewer: &Viewer,
    input: NewMarket,
) -> Result<markets::Model, ApiError> {
    require_admin(viewer)?;
    let conn = state.db.conn();
    let base = check_symbol("input.baseAsset", &input.base_asset)?;
    let quote = check_symbol("input.quoteAsset", &input.quote_asset)?;
    if base == quote {
        return Err(ApiError::bad_input(
            "input.quoteAsset",
            "must differ from the base asset",
        ));
    }
    let base_asset = find_asset(conn, &base)
        .await?
        .ok_or_else(|| ApiError::bad_input("input.baseAsset", "unknown asset"))?;
    let quote_asset = find_asset(conn, &quote)
        .await?
        .ok_or_else(|| ApiError::bad_input("input.quoteAsset", "unknown asset"))?;
    for (field, value, precision) in [
        ("input.tickSize", input.tick_size, quote_asset.precision),
        ("input.lotSize", input.lot_size, base_asset.precision),
        (
            "input.minNotional",
            input.min_notional,
            quote_asset.precision,
        ),
    ] {
        if value <= Decimal::ZERO && field != "input.minNotional" {
            return Err(ApiError::bad_input(field, "must be positive"));
        }
        if value.is_sign_negative() {
            return Err(ApiError::bad_input(field, "must not be negative"));
        }
        if !crate::domain::ledger::fits_precision(value, precision as u32) {
            return Err(ApiError::bad_input(
                field,
                format!("has more than {precision} decimal places"),
            ));
        }
    }
    for (field, bps) in [
        ("input.makerFeeBps", input.maker_fee_bps),
        ("input.takerFeeBps", input.taker_fee_bps),
    ] {
        if !(0..=1000).contains(&bps) {
            return Err(ApiError::bad_input(
                field,
                "must be between 0 and 1000 basis points",
            ));
        }
    }
    let now = Utc::now();
    let row = markets::ActiveModel {
        symbol: Set(format!("{base}-{quote}")),
        base_asset: Set(base),
        quote_asset: Set(quote),
        tick_size: Set(Amount(input.tick_size.normalize())),
        lot_size: Set(Amount(input.lot_size.normalize())),
        min_notional: Set(Amount(input.min_notional.normalize())),
        maker_fee_bps: Set(input.maker_fee_bps),
        taker_fee_bps: Set(input.taker_fee_bps),
        status: Set(TRADING.to_owned()),
        last_price: Set(None),
        next_sequence: Set(1),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let admin = viewer.user_id();
    let inserted = state
        .db
        .write(|txn| {
            let row = row.clone();
            Box::pin(async move {
                let market = row.insert(txn).await?;
                audit::record(
                    txn,
                    AuditEntry::new("market.created", "market", &market.symbol)
                        .actor(admin)
                        .details(serde_json::json!({
                            "tickSize": market.tick_size.0.to_string(),
                            "lotSize": market.lot_size.0.to_string(),
                            "minNotional": market.min_notional.0.to_string(),
                            "makerFeeBps": market.maker_fee_bps,
                            "takerFeeBps": market.taker_fee_bps,
                        })),
                )
                .await?;
                Ok(market)
            })
        })
        .await;
    match inserted {
        Err(ApiError::Internal(e)) if is_unique_violation(&e) => {
            Err(ApiError::Conflict("this market exists".into()))
        }
        other => other,
    }
}

/// Halts (`halted = true`) or resumes trading in a market.
pub async fn set_halted(
    state: &AppState,
    viewer: &Viewer,
    symbol: &str,
    halted: bool,
) -> Result<markets::Model, ApiError> {
    require_admin(viewer)?;
    let market = find_market(state.db.conn(), symbol)
        .await?
        .ok_or(ApiError::NotFound("market"))?;
    let admin = viewer.user_id();
    state
        .db
        .write(|txn| {
            let mut active: markets::ActiveModel = market.clone().into();
            active.status = Set(if halted { HALTED } else { TRADING }.to_owned());
            active.updated_at = Set(Utc::now());
            Box::pin(async move {
                let market = active.update(txn).await?;
                let action = if halted {
                    "market.halted"
                } else {
                    "market.resumed"
                };
                audit::record(
                    txn,
                    AuditEntry::new(action, "market", &market.symbol)
                        .actor(admin)
                        .in_chain(format!("market:{}", market.symbol)),
                )
                .await?;
                Ok(market)
            })
        })
        .await
}

fn is_unique_violation(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<sea_orm::DbErr>()
        .and_then(|e| e.sql_err())
        .is_some_and(|e| matches!(e, SqlErr::UniqueConstraintViolation(_)))
}

/// Seeds the demo assets and markets into an empty database, so a newcomer's first
/// `cargo run` has something to trade. Does nothing once any asset exists.
pub async fn seed_demo<C: ConnectionTrait>(conn: &C) -> anyhow::Result<bool> {
    if assets::Entity::find().count(conn).await? > 0 {
        return Ok(false);
    }
    let now = Utc::now();
    let d = |s: &str| Decimal::from_str_exact(s).unwrap_or_default();
    for (symbol, name, precision) in [
        ("USD", "US Dollar", 2),
        ("USDT", "Tether USD", 6),
        ("BTC", "Bitcoin", 8),
        ("ETH", "Ether", 8),
        ("SOL", "Solana", 6),
    ] {
        assets::ActiveModel {
            symbol: Set(symbol.to_owned()),
            name: Set(name.to_owned()),
            precision: Set(precision),
            created_at: Set(now),
        }
        .insert(conn)
        .await?;
    }
    for (base, quote, tick, lot, min_notional) in [
        ("BTC", "USD", "0.01", "0.00001", "1"),
        ("ETH", "USD", "0.01", "0.0001", "1"),
        ("SOL", "USD", "0.01", "0.01", "1"),
        ("ETH", "BTC", "0.00001", "0.001", "0.0001"),
    ] {
        markets::ActiveModel {
            symbol: Set(format!("{base}-{quote}")),
            base_asset: Set(base.to_owned()),
            quote_asset: Set(quote.to_owned()),
            tick_size: Set(Amount(d(tick))),
            lot_size: Set(Amount(d(lot))),
            min_notional: Set(Amount(d(min_notional))),
            maker_fee_bps: Set(10),
            taker_fee_bps: Set(20),
            status: Set(TRADING.to_owned()),
            last_price: Set(None),
            next_sequence: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(conn)
        .await?;
    }
    Ok(true)
}
