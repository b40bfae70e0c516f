//! The demo bot (`tradegraph serve --demo`): a market maker and a taker trading the
//! listed markets through the same service layer the API uses, so a newcomer's
//! dashboard has a moving book, trades, tickers and firing price alerts.
//!
//! It runs only when asked for, with two accounts of its own that cannot sign in, funded
//! with play money deposited by the system (recorded in the ledger and the audit log
//! like any deposit), and it stops with the server.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::auth::Viewer;
use crate::domain::demo_quotes::{self, Grid};
use crate::domain::matching::{SelfTradePrevention, Side, TimeInForce};
use crate::domain::order_rules::OrderType;
use crate::error::ApiError;
use crate::service::{funds, ledger, markets, orders};
use crate::state::AppState;
use entity::users;

const MAKER_EMAIL: &str = "market-maker@demo.tradegraph.invalid";
const TAKER_EMAIL: &str = "taker@demo.tradegraph.invalid";
/// Price levels quoted on each side.
const LEVELS: u32 = 5;
/// A stored hash no password verifies against: the bot's accounts cannot sign in.
const NO_PASSWORD: &str = "!demo-account";

/// Where a market's mid starts when it has never traded.
fn reference_mid(symbol: &str) -> Option<Decimal> {
    let mid = match symbol {
        "BTC-USD" => "50000",
        "ETH-USD" => "3000",
        "SOL-USD" => "150",
        "ETH-BTC" => "0.06",
        _ => return None,
    };
    Decimal::from_str_exact(mid).ok()
}

/// Play money each bot account is topped up to, per asset.
fn float_of(asset: &str) -> Decimal {
    match asset {
        "BTC" => Decimal::from(50),
        "ETH" => Decimal::from(500),
        "SOL" => Decimal::from(20_000),
        _ => Decimal::from(5_000_000),
    }
}

/// Runs until shutdown: every `interval`, each market gets a fresh ladder from the
/// maker and, now and then, a market order from the taker.
pub async fn run(state: AppState, interval: Duration) {
    // A zero period would make the timer panic; a few rounds a second is plenty.
    let interval = interval.max(Duration::from_millis(50));
    let mut shutdown = state.shutdown.clone();
    let accounts = loop {
        match (
            account(&state, MAKER_EMAIL, "Demo market maker").await,
            account(&state, TAKER_EMAIL, "Demo taker").await,
        ) {
            (Ok(maker), Ok(taker)) => break (maker, taker),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(error = ?error, "demo bot cannot set up its accounts yet");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    };
    let (maker, taker) = accounts;
    tracing::info!("demo bot trading");
    let mut rng = StdRng::from_entropy();
    let mut mids: HashMap<String, Decimal> = HashMap::new();
    let mut quotes = Quotes::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let book = (&mut mids, &mut quotes);
        if let Err(error) = round(&state, &maker, &taker, book, &mut rng).await {
            // A database hiccup must not end the demo: try again next round.
            tracing::warn!(error = ?error, "demo bot round failed");
        }
    }
}

/// The maker's resting quotes per market, as this bot placed them: (order id, side).
type Quotes = HashMap<String, Vec<(Uuid, Side)>>;

async fn round(
    state: &AppState,
    maker: &Viewer,
    taker: &Viewer,
    (mids, quotes): (&mut HashMap<String, Decimal>, &mut Quotes),
    rng: &mut StdRng,
) -> Result<(), ApiError> {
    let listed = markets::list_markets(state.db.conn()).await?;
    for viewer in [maker, taker] {
        top_up(state, viewer.user_id(), &listed).await?;
    }
    for market in listed.iter().filter(|m| m.status == markets::TRADING) {
        let grid = Grid {
            tick: market.tick_size.0,
            lot: market.lot_size.0,
            min_notional: market.min_notional.0,
        };
        let Some(start) = mids
            .get(&market.symbol)
            .copied()
            .or(market.last_price.map(|p| p.0))
            .or_else(|| reference_mid(&market.symbol))
        else {
            continue;
        };
        let mid = demo_quotes::next_mid(start, grid, rng);
        mids.insert(market.symbol.clone(), mid);
        let ladder = demo_quotes::ladder(mid, grid, LEVELS, rng);
        let old = match quotes.remove(&market.symbol) {
            Some(old) => old,
            // What an earlier run of the bot left, unknown to this one.
            None => {
                orders::cancel_all(state, maker, Some(market.symbol.clone())).await?;
                Vec::new()
            }
        };
        let placed = requote(state, maker, &market.symbol, (start, mid), ladder, old).await?;
        quotes.insert(market.symbol.clone(), placed);
        if rng.gen_bool(0.6) {
            let side = if rng.gen_bool(0.5) {
                Side::Buy
            } else {
                Side::Sell
            };
            let quantity = demo_quotes::taker_quantity(mid, grid, rng);
            let mut order = limit(&market.symbol, side, mid, quantity);
            order.order_type = OrderType::Market;
            order.price = None;
            order.time_in_force = TimeInForce::Ioc;
            quietly(orders::place(state, taker, order).await)?;
        }
    }
    Ok(())
}

/// Replaces the maker's `old` quotes in `market` by `ladder`, one side at a time, so
/// that the book is never left without bids or without asks (a taker arriving
/// mid-requote still finds a price), and the new quotes never meet the old ones.
///
/// The side the mid moves towards goes first: when it rises, the new asks (above the
/// new mid, so above every old bid) are placed and then the old asks cancelled; only
/// then the new bids, which may sit above an old ask after a jump, and then the old
/// bids. A fall mirrors it. Returns the quotes now resting.
async fn requote(
    state: &AppState,
    maker: &Viewer,
    market: &str,
    (from, to): (Decimal, Decimal),
    ladder: Vec<demo_quotes::Quote>,
    old: Vec<(Uuid, Side)>,
) -> Result<Vec<(Uuid, Side)>, ApiError> {
    let first = if to >= from { Side::Sell } else { Side::Buy };
    let mut placed = Vec::with_capacity(ladder.len());
    for side in [first, first.opposite()] {
        for quote in ladder.iter().filter(|q| q.buy == (side == Side::Buy)) {
            let order = limit(market, side, quote.price, quote.quantity);
            if let Some(done) = quietly(orders::place(state, maker, order).await)? {
                if done.order.is_open {
                    placed.push((done.order.id, side));
                }
            }
        }
        for (id, _) in old.iter().filter(|(_, s)| *s == side) {
            match orders::cancel(state, maker, *id).await {
                // Filled or cancelled meanwhile: nothing left to take away.
                Ok(_) | Err(ApiError::NotFound(_) | ApiError::Conflict(_)) => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(placed)
}

fn limit(market: &str, side: Side, price: Decimal, quantity: Decimal) -> orders::NewOrder {
    orders::NewOrder {
        market: market.to_owned(),
        side,
        order_type: OrderType::Limit,
        quantity: Some(quantity),
        price: Some(price),
        quote_quantity: None,
        trigger_price: None,
        time_in_force: TimeInForce::Gtc,
        expire_at: None,
        post_only: false,
        self_trade_prevention: SelfTradePrevention::ExpireTaker,
        client_order_id: None,
    }
}

/// An order the exchange refuses (funds short after a run of fills, a market halted
/// meanwhile) is part of trading, not a failure of the round.
fn quietly(result: Result<orders::Placed, ApiError>) -> Result<Option<orders::Placed>, ApiError> {
    match result {
        Ok(placed) => Ok(Some(placed)),
        Err(ApiError::Internal(error)) => Err(ApiError::Internal(error)),
        Err(refused) => {
            tracing::debug!(error = %refused, "demo order refused");
            Ok(None)
        }
    }
}

/// Deposits play money when an account runs below half its float of an asset.
async fn top_up(
    state: &AppState,
    user_id: Uuid,
    listed: &[entity::markets::Model],
) -> Result<(), ApiError> {
    let holdings = ledger::holdings(state.db.conn(), user_id).await?;
    let mut assets: Vec<&str> = listed
        .iter()
        .flat_map(|m| [m.base_asset.as_str(), m.quote_asset.as_str()])
        .collect();
    assets.sort_unstable();
    assets.dedup();
    for asset in assets {
        let held = holdings
            .get(asset)
            .map(|h| h.available + h.locked)
            .unwrap_or_default();
        let float = float_of(asset);
        if held * Decimal::TWO < float {
            funds::credit(
                state,
                None,
                funds::DepositInput {
                    user_id,
                    asset: asset.to_owned(),
                    amount: float - held,
                    reference: format!("demo-{}", Uuid::now_v7()),
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// The bot's account for `email`, created on first use.
async fn account(state: &AppState, email: &str, name: &str) -> Result<Viewer, ApiError> {
    let existing = users::Entity::find()
        .filter(users::Column::Email.eq(email))
        .one(state.db.conn())
        .await?;
    let user = match existing {
        Some(user) => user,
        None => {
            let now = Utc::now();
            users::ActiveModel::from(users::Model {
                id: Uuid::now_v7(),
                email: email.to_owned(),
                display_name: name.to_owned(),
                password_hash: NO_PASSWORD.to_owned(),
                roles: String::new(),
                two_factor_enabled: false,
                kyc_tier: "UNVERIFIED".to_owned(),
                anti_phishing_code: None,
                password_changed_at: now,
                created_at: now,
                updated_at: now,
                deleted_at: None,
                rate_limit_tier: None,
            })
            .insert(state.db.conn())
            .await?
        }
    };
    // The bot acts through the service layer directly, with no session behind it.
    Ok(Viewer::new(user, Uuid::nil()))
}
