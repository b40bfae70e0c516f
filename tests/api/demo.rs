//! The demo bot: it trades only when asked for, through the same rules as everyone.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    the_demo_bot_keeps_the_markets_moving,
    the_demo_bot_never_runs_unless_asked
);

const MARKET: &str = "{ market(symbol: \"BTC-USD\") { lastPrice recentTrades(limit: 50) { price quantity } orderBook(depth: 10) { bids { price quantity } asks { price quantity } } } }";

fn list(body: &Value, path: &[&str]) -> Vec<Value> {
    let mut node = &body["data"]["market"];
    for key in path {
        node = &node[*key];
    }
    node.as_array().cloned().unwrap_or_default()
}

async fn the_demo_bot_keeps_the_markets_moving(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin_and(
        backend,
        &[
            ("DEMO_BOT", "true"),
            ("DEMO_BOT_INTERVAL_MS", "100"),
            // The book is read back to back below.
            ("RATE_LIMIT_PER_MINUTE", "0"),
        ],
    )
    .await
    else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut prices = std::collections::BTreeSet::new();
    let body = loop {
        let body = app.gql(MARKET, json!({}), None).await;
        for trade in list(&body, &["recentTrades"]) {
            prices.insert(trade["price"].as_str().unwrap_or_default().to_owned());
        }
        let book_sides = !list(&body, &["orderBook", "bids"]).is_empty()
            && !list(&body, &["orderBook", "asks"]).is_empty();
        if prices.len() >= 2 && book_sides {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no moving market after 60 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The bot's book is a real, uncrossed book, and it stays one while the bot
    // requotes every 100 ms: at no moment is a side empty, so a market order always
    // finds a price.
    let best = |body: &Value, side: &str| -> rust_decimal::Decimal {
        list(body, &["orderBook", side])
            .first()
            .and_then(|l| l["price"].as_str())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no {side} in {body}"))
    };
    assert!(
        best(&body, "bids") < best(&body, "asks"),
        "crossed book: {body}"
    );
    let watch = Instant::now() + Duration::from_secs(3);
    let mut looks = 0;
    while Instant::now() < watch {
        let body = app.gql(MARKET, json!({}), None).await;
        assert!(
            best(&body, "bids") < best(&body, "asks"),
            "crossed book: {body}"
        );
        looks += 1;
    }
    assert!(looks > 30, "the book was read only {looks} times");
    // Everything it did went through the ledger and balances.
    let check = app
        .gql(
            "{ ledgerCheck { ok problems } }",
            json!({}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(check["data"]["ledgerCheck"]["ok"], true, "{check}");
}

async fn the_demo_bot_never_runs_unless_asked(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let body = app.gql(MARKET, json!({}), None).await;
    assert!(list(&body, &["recentTrades"]).is_empty(), "{body}");
    assert!(list(&body, &["orderBook", "bids"]).is_empty(), "{body}");
    assert_eq!(body["data"]["market"]["lastPrice"], Value::Null);
}
