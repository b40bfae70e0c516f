//! Live data over WebSocket: private order updates and fills (each user sees only
//! theirs), resumable without loss or repeats, tickers, price alerts and their
//! notifications, and sockets of revoked sessions closing.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use tradegraph::events::Topic;

use crate::both_backends;
use crate::helpers::{code, email, Auth, Backend, Frame, TestApp, Ws, PASSWORD};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

both_backends!(
    each_user_receives_only_their_own_order_updates_and_fills,
    a_client_that_reconnects_with_after_sequence_misses_nothing,
    tickers_push_the_latest_trade,
    a_ticker_document_runs_once_for_all_its_subscribers,
    price_alerts_fire_once_per_crossing_and_become_notifications,
    sockets_of_revoked_sessions_close,
);

const UPDATES: &str = "subscription($m: String, $after: Int) { orderUpdates(market: $m, afterSequence: $after) { sequence kind order { id side status } fill { price quantity } } }";
const FILLS: &str = "subscription($after: Int) { fills(afterSequence: $after) { side price quantity order { id } } }";

pub async fn fund(app: &TestApp, admin: &Auth, user: &Auth, asset: &str, amount: &str) {
    let body = app
        .gql(
            "mutation($i: CreditDepositInput!) { creditDeposit(input: $i) { id } }",
            json!({"i": {"userId": user.user_id, "asset": asset, "amount": amount, "reference": uuid::Uuid::new_v4().to_string()}}),
            Some(&admin.access),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
}

/// Places a limit order on ETH-USD; returns its id.
pub async fn place(app: &TestApp, user: &Auth, side: &str, price: &str, quantity: &str) -> String {
    let body = app
        .gql(
            "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }",
            json!({"i": {"market": "ETH-USD", "side": side, "type": "LIMIT", "price": price, "quantity": quantity}}),
            Some(&user.access),
        )
        .await;
    body["data"]["placeOrder"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("order placed: {body}"))
        .to_owned()
}

/// A signed-in `graphql-transport-ws` connection.
pub async fn connect(address: &str, user: Option<&Auth>) -> Ws {
    let mut ws = TestApp::connect_websocket(address, "graphql-transport-ws").await;
    let payload = match user {
        Some(user) => json!({"authorization": format!("Bearer {}", user.access)}),
        None => json!({}),
    };
    ws.init(payload).await;
    ws
}

pub async fn subscribe(ws: &mut Ws, id: &str, query: &str, variables: Value) {
    ws.send(
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}),
    )
    .await;
}

/// The next `next`/`data` payload's data for any subscription, skipping keep-alives.
pub async fn next_data(ws: &mut Ws) -> (String, Value) {
    loop {
        let message = match ws.next_within(20).await {
            Frame::Json(message) => message,
            other => panic!("expected a message, got {other:?}"),
        };
        match message["type"].as_str() {
            Some("next") | Some("data") => {
                let payload = &message["payload"];
                assert!(payload["errors"].is_null(), "{message}");
                return (
                    message["id"].as_str().unwrap_or_default().to_owned(),
                    payload["data"].clone(),
                );
            }
            Some("ka") => continue,
            _ => panic!("unexpected message: {message}"),
        }
    }
}

/// The error code that refused a subscription, whether it came as an `error` message
/// or as a `next` result with errors (a resolver refusing to start the stream).
pub async fn refusal(ws: &mut Ws) -> String {
    let message = ws.next_json().await;
    let error = match message["type"].as_str() {
        Some("error") => &message["payload"][0],
        Some("next") => &message["payload"]["errors"][0],
        _ => panic!("expected a refusal: {message}"),
    };
    error["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code: {message}"))
        .to_owned()
}

/// Reads until each subscription id has its count of messages; returns them per id.
pub async fn collect(ws: &mut Ws, wanted: &[(&str, usize)]) -> HashMap<String, Vec<Value>> {
    let mut got: HashMap<String, Vec<Value>> = HashMap::new();
    while wanted
        .iter()
        .any(|(id, n)| got.get(*id).map_or(0, Vec::len) < *n)
    {
        let (id, data) = next_data(ws).await;
        got.entry(id).or_default().push(data);
    }
    got
}

/// Waits until this server has `count` live subscribers of `topic`, so a test never
/// acts before a live-only subscription is listening.
pub async fn wait_for_subscribers(app: &TestApp, topic: Topic, count: usize) {
    for _ in 0..200 {
        if app.events.subscribers_of(&topic) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no subscriber of {topic:?} appeared");
}

fn uid(user: &Auth) -> uuid::Uuid {
    user.user_id.parse().expect("user id")
}

async fn traders(app: &TestApp, admin: &Auth) -> (Auth, Auth) {
    let seller = app.register(&email("seller")).await;
    let buyer = app.register(&email("buyer")).await;
    fund(app, admin, &seller, "ETH", "100").await;
    fund(app, admin, &buyer, "USD", "1000000").await;
    (seller, buyer)
}

async fn each_user_receives_only_their_own_order_updates_and_fills(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let (seller, buyer) = traders(&app, &admin).await;
    let mut seller_ws = connect(&app.address, Some(&seller)).await;
    subscribe(&mut seller_ws, "u", UPDATES, json!({"after": 0})).await;
    subscribe(&mut seller_ws, "f", FILLS, json!({"after": 0})).await;
    // The buyer speaks the legacy protocol.
    let mut buyer_ws = app.websocket("graphql-ws").await;
    buyer_ws
        .init(json!({"authorization": format!("Bearer {}", buyer.access)}))
        .await;
    for (id, query) in [("u", UPDATES), ("f", FILLS)] {
        buyer_ws
            .send(json!({"id": id, "type": "start", "payload": {"query": query, "variables": {"after": 0}}}))
            .await;
    }

    let sell = place(&app, &seller, "SELL", "2000", "1").await;
    let buy = place(&app, &buyer, "BUY", "2000", "1").await;
    // One more event for the buyer alone, then one for the seller: the seller's next
    // update must be their own third, never the buyer's.
    let resting = place(&app, &buyer, "BUY", "1500", "1").await;
    let asking = place(&app, &seller, "SELL", "2500", "1").await;

    for (ws, order, side, second) in [
        (&mut seller_ws, &sell, "SELL", &asking),
        (&mut buyer_ws, &buy, "BUY", &resting),
    ] {
        let got = collect(ws, &[("u", 3), ("f", 1)]).await;
        let updates: Vec<(i64, &str, &str)> = got["u"]
            .iter()
            .map(|d| {
                let u = &d["orderUpdates"];
                (
                    u["sequence"].as_i64().unwrap_or(-1),
                    u["kind"].as_str().unwrap_or(""),
                    u["order"]["id"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            updates,
            vec![
                (1, "CREATED", order.as_str()),
                (2, "FILLED", order.as_str()),
                (3, "CREATED", second.as_str())
            ]
        );
        assert_eq!(got["u"][1]["orderUpdates"]["fill"]["price"], "2000");
        let fill = &got["f"][0]["fills"];
        assert_eq!(
            (fill["side"].as_str(), fill["order"]["id"].as_str()),
            (Some(side), Some(order.as_str()))
        );
    }

    // Unauthenticated subscribers get UNAUTHENTICATED, not someone's orders.
    let mut anonymous = connect(&app.address, None).await;
    subscribe(&mut anonymous, "u", UPDATES, json!({})).await;
    assert_eq!(refusal(&mut anonymous).await, "UNAUTHENTICATED");
}

async fn a_client_that_reconnects_with_after_sequence_misses_nothing(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let (seller, buyer) = traders(&app, &admin).await;
    const ROUNDS: usize = 15;
    let mut first = connect(&app.address, Some(&buyer)).await;
    subscribe(&mut first, "u", UPDATES, json!({"after": 0})).await;

    // Orders keep filling while the client comes and goes: each round is the buyer's
    // CREATED and FILLED.
    let trading = {
        let (address, seller, buyer) = (app.address.clone(), seller.clone(), buyer.clone());
        let http = app.http.clone();
        tokio::spawn(async move {
            let place = |user: Auth, side: &'static str| {
                let (http, address) = (http.clone(), address.clone());
                async move {
                    let body: Value = http
                        .post(format!("http://{address}/graphql"))
                        .bearer_auth(&user.access)
                        .json(&json!({"query": "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { status } }",
                            "variables": {"i": {"market": "ETH-USD", "side": side, "type": "LIMIT", "price": "2000", "quantity": "0.01"}}}))
                        .send()
                        .await
                        .expect("sent")
                        .json()
                        .await
                        .expect("json");
                    assert!(body["errors"].is_null(), "{body}");
                }
            };
            for _ in 0..ROUNDS {
                place(seller.clone(), "SELL").await;
                place(buyer.clone(), "BUY").await;
            }
        })
    };

    let mut sequences = Vec::new();
    for _ in 0..5 {
        let (_, data) = next_data(&mut first).await;
        sequences.push(data["orderUpdates"]["sequence"].as_i64().expect("sequence"));
    }
    drop(first);
    let last = *sequences.last().expect("some updates");
    let mut second = connect(&app.address, Some(&buyer)).await;
    subscribe(&mut second, "u", UPDATES, json!({"after": last})).await;
    trading.await.expect("trading finished");
    let marker = place(&app, &buyer, "BUY", "1000", "0.01").await;
    loop {
        let (_, data) = next_data(&mut second).await;
        let update = &data["orderUpdates"];
        sequences.push(update["sequence"].as_i64().expect("sequence"));
        if update["order"]["id"] == marker.as_str() {
            break;
        }
    }
    let expected: Vec<i64> = (1..=(2 * ROUNDS as i64 + 1)).collect();
    assert_eq!(sequences, expected, "every update once, in order");

    // Replays can be filtered by market, and refuse a sequence from the future.
    let mut third = connect(&app.address, Some(&buyer)).await;
    subscribe(
        &mut third,
        "u",
        UPDATES,
        json!({"after": 30, "m": "BTC-USD"}),
    )
    .await;
    subscribe(&mut third, "e", UPDATES, json!({"after": 30})).await;
    let (id, data) = next_data(&mut third).await;
    assert_eq!(id, "e", "no BTC-USD updates: {data}");
    assert_eq!(data["orderUpdates"]["sequence"], 31);
    subscribe(&mut third, "x", UPDATES, json!({"after": 999})).await;
    assert_eq!(refusal(&mut third).await, "BAD_USER_INPUT");
}

async fn tickers_push_the_latest_trade(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let (seller, buyer) = traders(&app, &admin).await;
    place(&app, &seller, "SELL", "2000", "1").await;
    place(&app, &buyer, "BUY", "2000", "1").await;

    // Public: no credentials needed. The current value comes at once.
    let mut ws = connect(&app.address, None).await;
    let query =
        "subscription { ticker(market: \"eth-usd\") { market lastPrice change24h volume24h at } }";
    subscribe(&mut ws, "t", query, json!({})).await;
    let (_, data) = next_data(&mut ws).await;
    let ticker = &data["ticker"];
    assert_eq!(ticker["market"], "ETH-USD");
    assert_eq!(ticker["lastPrice"], "2000");
    assert_eq!(ticker["volume24h"], "1");

    place(&app, &seller, "SELL", "2200", "0.5").await;
    place(&app, &buyer, "BUY", "2200", "0.5").await;
    let (_, data) = next_data(&mut ws).await;
    let ticker = &data["ticker"];
    assert_eq!(ticker["lastPrice"], "2200");
    assert_eq!(ticker["volume24h"], "1.5");
    assert_eq!(ticker["change24h"], "0.1");

    subscribe(
        &mut ws,
        "bad",
        "subscription { ticker(market: \"NOPE-USD\") { market } }",
        json!({}),
    )
    .await;
    assert_eq!(refusal(&mut ws).await, "BAD_USER_INPUT");
}

/// The raw `next`/`data` message of subscription `id`, skipping keep-alives.
async fn next_payload(ws: &mut Ws, id: &str) -> Value {
    loop {
        let message = match ws.next_within(20).await {
            Frame::Json(message) => message,
            other => panic!("expected a message, got {other:?}"),
        };
        match message["type"].as_str() {
            Some("ka") => continue,
            Some("next") | Some("data") if message["id"] == id => {
                return message["payload"].clone()
            }
            _ => panic!("unexpected message: {message}"),
        }
    }
}

async fn a_ticker_document_runs_once_for_all_its_subscribers(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    const EXECUTIONS: &str = "tradegraph_shared_subscription_executions_total";
    let (seller, buyer) = traders(&app, &admin).await;
    place(&app, &seller, "SELL", "2000", "1").await;
    place(&app, &buyer, "BUY", "2000", "1").await;
    let query =
        "subscription($m: String!) { ticker(market: $m) { market lastPrice volume24h at } }";
    let eth = json!({"m": "ETH-USD"});

    // Anonymous, signed in, and on the legacy protocol: one document, one execution.
    let mut anonymous = connect(&app.address, None).await;
    let mut signed_in = connect(&app.address, Some(&buyer)).await;
    let mut legacy = app.websocket("graphql-ws").await;
    legacy
        .init(json!({"authorization": format!("Bearer {}", seller.access)}))
        .await;
    subscribe(&mut anonymous, "a", query, eth.clone()).await;
    subscribe(&mut signed_in, "b", query, eth.clone()).await;
    legacy
        .send(json!({"id": "c", "type": "start", "payload": {"query": query, "variables": eth}}))
        .await;
    let first = next_payload(&mut anonymous, "a").await;
    assert_eq!(first["data"]["ticker"]["lastPrice"], "2000", "{first}");
    assert_eq!(next_payload(&mut signed_in, "b").await, first);
    assert_eq!(next_payload(&mut legacy, "c").await, first);
    assert_eq!(app.metric(EXECUTIONS).await, 1.0);

    // Other variables, or another document, run on their own.
    let mut other = connect(&app.address, None).await;
    subscribe(&mut other, "btc", query, json!({"m": "BTC-USD"})).await;
    let btc = next_payload(&mut other, "btc").await;
    assert_eq!(btc["data"]["ticker"]["market"], "BTC-USD", "{btc}");
    let literal = "subscription { ticker(market: \"ETH-USD\") { market lastPrice volume24h at } }";
    subscribe(&mut other, "lit", literal, json!({})).await;
    assert_eq!(next_payload(&mut other, "lit").await, first);
    assert_eq!(app.metric(EXECUTIONS).await, 3.0);

    // A trade reaches every subscriber of the shared one with the same payload.
    place(&app, &seller, "SELL", "2100", "0.5").await;
    place(&app, &buyer, "BUY", "2100", "0.5").await;
    let second = next_payload(&mut anonymous, "a").await;
    assert_eq!(second["data"]["ticker"]["lastPrice"], "2100", "{second}");
    assert_eq!(second["data"]["ticker"]["volume24h"], "1.5");
    assert_eq!(next_payload(&mut signed_in, "b").await, second);
    assert_eq!(next_payload(&mut legacy, "c").await, second);
    assert_eq!(next_payload(&mut other, "lit").await, second);

    // An unknown market is refused, for the first subscriber and for a later one (the
    // refused execution is over by then, so the later one runs it again).
    for ws in [&mut anonymous, &mut signed_in] {
        subscribe(ws, "bad", query, json!({"m": "NOPE-USD"})).await;
        assert_eq!(refusal(ws).await, "BAD_USER_INPUT");
        let done = ws.next_json().await;
        assert_eq!(
            (done["type"].as_str(), done["id"].as_str()),
            (Some("complete"), Some("bad"))
        );
    }

    // A document refused before it runs gets the protocol's `error` message.
    let invalid = "subscription { ticker(market: \"ETH-USD\") { nope } }";
    subscribe(&mut other, "invalid", invalid, json!({})).await;
    let error = other.next_json().await;
    assert_eq!(
        (error["type"].as_str(), error["id"].as_str()),
        (Some("error"), Some("invalid")),
        "{error}"
    );

    // A subscriber that completes stops following; the others go on.
    const ACTIVE: &str = "tradegraph_subscriptions_active";
    until_metric(&app, ACTIVE, |n| n == 5.0).await;
    signed_in.send(json!({"id": "b", "type": "complete"})).await;
    until_metric(&app, ACTIVE, |n| n == 4.0).await;

    // Once nobody watches, the execution stops and so does the market's ticker.
    drop((anonymous, signed_in, legacy, other));
    for _ in 0..400 {
        if app.events.subscribers_of(&Topic::Market("ETH-USD".into())) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        app.events.subscribers_of(&Topic::Market("ETH-USD".into())),
        0
    );
    let mut again = connect(&app.address, None).await;
    subscribe(&mut again, "a", query, json!({"m": "ETH-USD"})).await;
    let fourth = next_payload(&mut again, "a").await;
    assert_eq!(fourth["data"]["ticker"]["lastPrice"], "2100", "{fourth}");
    assert_eq!(
        app.metric(EXECUTIONS).await,
        7.0,
        "two unknown markets, an invalid document and a restart"
    );
}

async fn price_alerts_fire_once_per_crossing_and_become_notifications(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let (seller, buyer) = traders(&app, &admin).await;
    let watcher = app.register(&email("watcher")).await;
    let other = app.register(&email("other")).await;
    let create = "mutation($i: CreatePriceAlertInput!) { createPriceAlert(input: $i) { id market condition price recurring cooldownSeconds active } }";
    let alert = |condition: &str, price: &str, recurring: bool| {
        let mut input = json!({"market": "ETH-USD", "condition": condition, "price": price, "recurring": recurring});
        if recurring {
            input["cooldownSeconds"] = json!(0);
        }
        json!({"i": input})
    };
    let above = app
        .gql(create, alert("ABOVE", "2100", false), Some(&watcher.access))
        .await;
    let above_id = above["data"]["createPriceAlert"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{above}"))
        .to_owned();
    assert_eq!(above["data"]["createPriceAlert"]["active"], true);
    let below = app
        .gql(create, alert("BELOW", "1900", true), Some(&watcher.access))
        .await;
    let below_id = below["data"]["createPriceAlert"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{below}"))
        .to_owned();
    // Alerts that never fire, and someone else's.
    for price in ["5000", "6000", "7000"] {
        app.gql(create, alert("ABOVE", price, false), Some(&watcher.access))
            .await;
    }
    app.gql(create, alert("ABOVE", "2100", false), Some(&other.access))
        .await;
    let bad = app
        .gql(create, json!({"i": {"market": "ETH-USD", "condition": "ABOVE", "price": "2100", "cooldownSeconds": 60}}), Some(&watcher.access))
        .await;
    assert_eq!(code(&bad), "BAD_USER_INPUT");
    assert_eq!(
        bad["errors"][0]["extensions"]["field"],
        "input.cooldownSeconds"
    );

    let mut ws = connect(&app.address, Some(&watcher)).await;
    subscribe(&mut ws, "a", "subscription { priceAlertTriggered { alert { id active } market price triggeredAt notificationId } }", json!({})).await;
    wait_for_subscribers(&app, Topic::Alerts(uid(&watcher)), 1).await;

    let trade = |price: &'static str| {
        let (app, seller, buyer) = (&app, &seller, &buyer);
        async move {
            place(app, seller, "SELL", price, "0.1").await;
            place(app, buyer, "BUY", price, "0.1").await;
        }
    };
    trade("2000").await; // the first trade: a starting point, crosses nothing
    trade("2150").await; // crosses ABOVE 2100 (twice: the watcher's and the other's)
    trade("2200").await; // still above: nothing new
    trade("2050").await; // back below 2100: the one-shot ABOVE stays quiet
    trade("2120").await; // crosses 2100 again: the one-shot already fired
    trade("1850").await; // crosses BELOW 1900
    trade("1950").await;
    trade("1800").await; // crosses BELOW 1900 again: recurring, no cool-down

    let mut fired = Vec::new();
    for _ in 0..3 {
        let (_, data) = next_data(&mut ws).await;
        fired.push(data["priceAlertTriggered"].clone());
    }
    let summary: Vec<(&str, &str)> = fired
        .iter()
        .map(|f| {
            (
                f["alert"]["id"].as_str().unwrap_or(""),
                f["price"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (above_id.as_str(), "2150"),
            (below_id.as_str(), "1850"),
            (below_id.as_str(), "1800")
        ]
    );
    assert_eq!(
        fired[0]["alert"]["active"], false,
        "a one-shot alert disarms"
    );
    assert_eq!(
        fired[1]["alert"]["active"], true,
        "a recurring alert stays armed"
    );

    let list = app
        .gql(
            "{ priceAlerts { id active triggerCount lastTriggeredAt } }",
            json!({}),
            Some(&watcher.access),
        )
        .await;
    let alerts = list["data"]["priceAlerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 5);
    let counts: HashMap<&str, i64> = alerts
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap_or(""),
                a["triggerCount"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(counts[above_id.as_str()], 1);
    assert_eq!(counts[below_id.as_str()], 2);
    assert_eq!(
        counts.values().sum::<i64>(),
        3,
        "the far alerts never fired"
    );

    // Each firing is a notification; reading marks them.
    let notifications = "query($u: Boolean, $first: Int, $after: String) { notifications(unreadOnly: $u, first: $first, after: $after) { edges { cursor node { id kind title price read alert { id } } } pageInfo { hasNextPage endCursor } } }";
    let page = app
        .gql(
            notifications,
            json!({"u": true, "first": 2}),
            Some(&watcher.access),
        )
        .await;
    let connection = &page["data"]["notifications"];
    assert_eq!(connection["pageInfo"]["hasNextPage"], true, "{page}");
    let newest = &connection["edges"][0]["node"];
    assert_eq!(
        (newest["kind"].as_str(), newest["price"].as_str()),
        (Some("PRICE_ALERT"), Some("1800"))
    );
    assert_eq!(newest["alert"]["id"], below_id.as_str());
    let rest = app
        .gql(
            notifications,
            json!({"u": true, "after": connection["pageInfo"]["endCursor"]}),
            Some(&watcher.access),
        )
        .await;
    let rest = rest["data"]["notifications"]["edges"]
        .as_array()
        .expect("edges")
        .clone();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["node"]["alert"]["id"], above_id.as_str());
    let ids = vec![newest["id"].clone(), rest[0]["node"]["id"].clone()];
    let mark = "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) }";
    // Someone else's ids change nothing.
    let foreign = app
        .gql(mark, json!({"ids": ids}), Some(&other.access))
        .await;
    assert_eq!(foreign["data"]["markNotificationsRead"], 0);
    let marked = app
        .gql(mark, json!({"ids": ids}), Some(&watcher.access))
        .await;
    assert_eq!(marked["data"]["markNotificationsRead"], 2);
    let unread = app
        .gql(notifications, json!({"u": true}), Some(&watcher.access))
        .await;
    assert_eq!(
        unread["data"]["notifications"]["edges"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let all = app
        .gql(notifications, json!({}), Some(&watcher.access))
        .await;
    assert_eq!(
        all["data"]["notifications"]["edges"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // Deleting: one's own only.
    let delete = "mutation($id: ID!) { deletePriceAlert(id: $id) }";
    let theirs = app
        .gql(delete, json!({"id": above_id}), Some(&other.access))
        .await;
    assert_eq!(code(&theirs), "NOT_FOUND");
    let mine = app
        .gql(delete, json!({"id": above_id}), Some(&watcher.access))
        .await;
    assert_eq!(mine["data"]["deletePriceAlert"], true);
    let again = app
        .gql(delete, json!({"id": above_id}), Some(&watcher.access))
        .await;
    assert_eq!(code(&again), "NOT_FOUND");
}

async fn sockets_of_revoked_sessions_close(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let address = email("sessions");
    let first = app.register(&address).await;
    let mut logins = Vec::new();
    for _ in 0..2 {
        let body = app.login(&address, PASSWORD).await;
        logins.push(Auth::from_payload(&body["data"]["login"]).expect("signed in"));
    }
    let (second, third) = (logins[0].clone(), logins[1].clone());
    let user = uid(&first);

    // revokeSession from another session closes that session's socket only.
    let mut revoked = connect(&app.address, Some(&first)).await;
    let mut kept = connect(&app.address, Some(&second)).await;
    wait_for_subscribers(&app, Topic::Sessions(user), 2).await;
    let sessions = app
        .gql(
            "{ sessions { id current } }",
            json!({}),
            Some(&first.access),
        )
        .await;
    let first_session = sessions["data"]["sessions"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["current"] == true))
        .and_then(|s| s["id"].as_str())
        .expect("current session")
        .to_owned();
    let body = app
        .gql(
            "mutation($id: ID!) { revokeSession(id: $id) }",
            json!({"id": first_session}),
            Some(&second.access),
        )
        .await;
    assert_eq!(body["data"]["revokeSession"], true, "{body}");
    revoked.expect_close(4403).await;

    // A password change closes every other session's sockets, not the changer's.
    let mut other = connect(&app.address, Some(&third)).await;
    wait_for_subscribers(&app, Topic::Sessions(user), 2).await;
    let body = app
        .gql(
            "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }",
            json!({"c": PASSWORD, "n": "an entirely new passphrase 9876"}),
            Some(&second.access),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    other.expect_close(4403).await;
    kept.send(json!({"type": "ping"})).await;
    assert_eq!(kept.next_json().await["type"], "pong");

    // Logging out closes the session's own sockets.
    let body = app
        .gql("mutation { logout }", json!({}), Some(&second.access))
        .await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    kept.expect_close(4403).await;
}

/// A Redis server of the test's own, so the test can stop and restart it.
struct RedisServer {
    port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut server = RedisServer { port, child: None };
        server.restart()?;
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts `redis-server` on the same port; `None` when it is not installed.
    fn restart(&mut self) -> Option<()> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn readyz(http: &reqwest::Client, address: &str) -> (u16, Value) {
    let response = http
        .get(format!("http://{address}/readyz"))
        .send()
        .await
        .expect("readyz answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `/readyz` until `check` holds for it.
async fn until_ready(http: &reqwest::Client, address: &str, check: impl Fn(u16, &Value) -> bool) {
    for _ in 0..300 {
        let (status, body) = readyz(http, address).await;
        if check(status, &body) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz of {address} never reached the expected state");
}

/// The buyer's order update sequences a subscription has received, read until it has
/// one beyond `beyond`.
async fn read_until_beyond(ws: &mut Ws, sequences: &mut Vec<i64>, beyond: i64) {
    while sequences.last().is_none_or(|last| *last <= beyond) {
        let (_, data) = next_data(ws).await;
        sequences.push(data["orderUpdates"]["sequence"].as_i64().expect("sequence"));
    }
}

/// Two server processes on one PostgreSQL database and one Redis: order events of one
/// reach subscribers of the other; while Redis is down each keeps serving and its own
/// subscribers keep receiving; when Redis is back, delivery across replicas resumes by
/// itself, the subscriber on the other replica catches up without a gap, and a socket
/// there whose session was revoked during the outage closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_replicas_and_survive_a_redis_restart() {
    let Some(mut redis) = RedisServer::start() else {
        eprintln!("!!! SKIPPED: redis-server is not installed");
        return;
    };
    let url = redis.url();
    let channel = format!("tradegraph:test:{}", uuid::Uuid::new_v4());
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_EVENTS_CHANNEL", channel.as_str()),
    ];
    let Some((app, admin)) = TestApp::spawn_with_admin_and(Backend::Postgres, &vars).await else {
        return;
    };
    let replica = crate::process::Server::start(&[
        ("DATABASE_URL", app.database_url.as_str()),
        ("JWT_SECRET", crate::helpers::JWT_SECRET),
        ("REDIS_URL", url.as_str()),
        ("REDIS_EVENTS_CHANNEL", channel.as_str()),
    ]);
    let http = reqwest::Client::new();
    let relaying =
        |status: u16, body: &Value| status == 200 && body["checks"]["eventRelay"] == "subscribed";
    until_ready(&http, &replica.address, relaying).await;
    until_ready(&http, &app.address, relaying).await;

    let (seller, buyer) = traders(&app, &admin).await;
    place(&app, &buyer, "BUY", "1500", "5").await; // sequence 1, rests
                                                   // Subscribed on the other replica; sequence 1 replays from the database, so the
                                                   // subscription is listening once it arrives.
    let mut remote = connect(&replica.address, Some(&buyer)).await;
    subscribe(&mut remote, "u", UPDATES, json!({"after": 0})).await;
    let mut local = connect(&app.address, Some(&buyer)).await;
    subscribe(&mut local, "u", UPDATES, json!({"after": 0})).await;
    // A session with a socket on the other replica (watching for its revocation from
    // the acknowledgement on), to be revoked on this one while Redis is down.
    let sleeper = app.register(&email("sleeper")).await;
    let mut sleeper_ws = connect(&replica.address, Some(&sleeper)).await;
    let (mut remote_seen, mut local_seen) = (Vec::new(), Vec::new());
    read_until_beyond(&mut remote, &mut remote_seen, 0).await;
    read_until_beyond(&mut local, &mut local_seen, 0).await;

    // Live across replicas: a fill on this process reaches the other one through Redis.
    place(&app, &seller, "SELL", "1500", "0.1").await; // sequence 2
    read_until_beyond(&mut remote, &mut remote_seen, 1).await;
    assert_eq!(remote_seen, vec![1, 2]);

    // Redis goes away: readiness says so, requests and local delivery go on.
    redis.stop();
    until_ready(&http, &app.address, |status, body| {
        status == 503 && body["checks"]["redis"] != "ok"
    })
    .await;
    place(&app, &seller, "SELL", "1500", "0.1").await; // sequence 3
    let me = app
        .gql("{ me { id } }", json!({}), Some(&buyer.access))
        .await;
    assert_eq!(me["data"]["me"]["id"], buyer.user_id.as_str());
    read_until_beyond(&mut local, &mut local_seen, 2).await;
    assert_eq!(local_seen, vec![1, 2, 3]);
    let body = app
        .gql("mutation { logout }", json!({}), Some(&sleeper.access))
        .await;
    assert_eq!(body["data"]["logout"], true, "{body}");

    // Redis returns: delivery across replicas resumes by itself, and the remote
    // subscriber fills the gap of what it missed meanwhile from the database.
    redis.restart().expect("redis restarts");
    until_ready(&http, &app.address, relaying).await;
    until_ready(&http, &replica.address, relaying).await;
    // The revocation never reached the other replica, but its reconnected relay made
    // every socket there re-check its session.
    match sleeper_ws.next_within(30).await {
        Frame::Close(code, reason) => assert_eq!(code, 4403, "{reason}"),
        other => panic!("expected the revoked session's socket to close: {other:?}"),
    }
    // The relay's reconnection may already have sent the remote subscriber back to
    // the database for what it missed; the first envelopes after the restart may still
    // be dropped while the publisher reconnects. Orders go on until the latest one
    // reaches the other replica, which only a live delivery (or the gap a later one
    // shows) can do.
    let mut sequence = 3;
    while remote_seen.last() != Some(&sequence) {
        place(&app, &seller, "SELL", "1500", "0.1").await;
        sequence += 1;
        assert!(sequence < 40, "delivery across replicas never resumed");
        while let Ok(Frame::Json(message)) =
            tokio::time::timeout(Duration::from_secs(2), remote.next()).await
        {
            let n = message["payload"]["data"]["orderUpdates"]["sequence"]
                .as_i64()
                .unwrap_or_else(|| panic!("{message}"));
            remote_seen.push(n);
            if n == sequence {
                break;
            }
        }
    }
    let expected: Vec<i64> = (1..=sequence).collect();
    assert_eq!(
        remote_seen, expected,
        "nothing lost or repeated across the outage"
    );
}

/// Polls `/metrics` until `check` holds for `name`; panics after a generous while.
async fn until_metric(app: &TestApp, name: &str, check: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..600 {
        let value = app.metric(name).await;
        if check(value) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never reached the expected value");
}

/// A client that subscribes to far more than its buffers hold and then reads nothing:
/// the server's writes to it stall, yet another client keeps getting its live events
/// and mutations keep completing; after the write timeout the server cuts the stalled
/// client off, and the client, once it reads, reaches the end of the stream. SQLite
/// only: the behaviour under test is the WebSocket layer's, the same on either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_without_holding_up_others() {
    const OPEN: &str = "tradegraph_websocket_connections";
    const STALLED: &str = "tradegraph_websocket_writes_pending";
    const CUT_OFF: &str = "tradegraph_websocket_write_timeouts_total";
    // Long enough that the checks below finish well inside it even on a loaded
    // machine (they are verified to have), short enough not to slow the suite much.
    let vars = [
        ("WS_OUTBOX_CAPACITY", "4"),
        ("WS_WRITE_TIMEOUT_MS", "10000"),
        ("RATE_LIMIT_PER_MINUTE", "0"),
    ];
    let Some((app, admin)) = TestApp::spawn_with_admin_and(Backend::Sqlite, &vars).await else {
        return;
    };
    let hoarder = app.register(&email("hoarder")).await;
    let watcher = app.register(&email("watcher")).await;
    fund(&app, &admin, &hoarder, "USD", "1000000").await;
    fund(&app, &admin, &watcher, "USD", "1000000").await;
    const ORDERS: usize = 30;
    for _ in 0..ORDERS {
        place(&app, &hoarder, "BUY", "1000", "0.01").await;
    }

    // The normal client follows the watcher's orders live.
    let mut normal = connect(&app.address, Some(&watcher)).await;
    subscribe(&mut normal, "u", UPDATES, json!({})).await;
    wait_for_subscribers(&app, Topic::Orders(uid(&watcher)), 1).await;

    // The slow client: a small receive buffer, then 40 replays of 30 updates of about
    // 15 KB each (25 aliased copies of the order): some 18 MB, far beyond what the
    // socket buffers (at most 4 MB on Linux) and the outbox hold.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    let stream = socket
        .connect(app.address.parse().expect("address"))
        .await
        .expect("connects");
    let mut request = format!("ws://{}/graphql", app.address)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut slow, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("handshake");
    let send = |value: Value| Message::Text(value.to_string().into());
    let init = json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {}", hoarder.access)}});
    slow.send(send(init)).await.expect("init sent");
    match slow.next().await {
        Some(Ok(Message::Text(ack))) => assert!(ack.contains("connection_ack"), "{ack}"),
        other => panic!("expected the ack: {other:?}"),
    }
    let fields = "id clientOrderId createdAt expireAt fee filledQuantity postOnly price \
                  quantity quoteQuantity rejectReason remainingQuantity selfTradePrevention \
                  side status timeInForce triggerPrice type updatedAt averageFillPrice";
    let copies: Vec<String> = (0..25)
        .map(|i| format!("o{i}: order {{ {fields} }}"))
        .collect();
    let big = format!(
        "subscription {{ orderUpdates(afterSequence: 0) {{ sequence {} }} }}",
        copies.join(" ")
    );
    for i in 0..40 {
        let subscribe =
            json!({"id": format!("s{i}"), "type": "subscribe", "payload": {"query": big}});
        slow.send(send(subscribe)).await.expect("subscribe sent");
    }
    // From here on the slow client reads nothing. Wait for the server's write to it to
    // stall (the normal client is idle, so a pending write is the slow one's).
    until_metric(&app, STALLED, |n| n >= 1.0).await;

    // Meanwhile the normal client gets its live events, and mutations complete.
    for round in 0..3 {
        let order = place(&app, &watcher, "BUY", "900", "0.01").await;
        let (_, data) = next_data(&mut normal).await;
        let update = &data["orderUpdates"];
        assert_eq!(
            update["order"]["id"],
            order.as_str(),
            "round {round}: {data}"
        );
        assert_eq!(update["kind"], "CREATED");
    }
    let other = connect(&app.address, Some(&watcher)).await;
    drop(other);
    // All of that happened while the slow client was stuck: it has not been cut off.
    assert_eq!(
        app.metric(CUT_OFF).await,
        0.0,
        "the checks outlasted the write timeout; the machine is too slow for this test"
    );
    assert!(app.metric(STALLED).await >= 1.0);

    // After the write timeout, the server gives up on it.
    until_metric(&app, CUT_OFF, |n| n == 1.0).await;
    until_metric(&app, OPEN, |n| n == 1.0).await;
    assert_eq!(app.metric(STALLED).await, 0.0);
    // What the kernel still held arrives, then the stream ends without a `complete`
    // for every subscription (the server never got that far).
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        let mut completes = 0;
        while let Some(Ok(message)) = slow.next().await {
            if let Message::Text(text) = message {
                completes += usize::from(text.contains("\"type\":\"complete\""));
            }
        }
        completes
    })
    .await
    .expect("the slow client reaches the end of the stream");
    assert!(
        drained < 40,
        "the server stopped before finishing: {drained} completed"
    );

    // The normal client never noticed.
    let order = place(&app, &watcher, "BUY", "900", "0.01").await;
    let (_, data) = next_data(&mut normal).await;
    assert_eq!(data["orderUpdates"]["order"]["id"], order.as_str());
}
