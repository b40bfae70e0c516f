//! Orders end to end: holds, matching, fees, cancellation, idempotency, validation, and
//! randomized concurrent trading across two server processes with the books checked.

use std::collections::HashMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{code, email, Auth, Backend, TestApp, JWT_SECRET};
use crate::process::Server;

const PLACE: &str = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status price quantity filledQuantity remainingQuantity averageFillPrice fee rejectReason clientOrderId fills { price quantity fee feeAsset liquidity } } }";
const DEPOSIT: &str = "mutation($i: CreditDepositInput!) { creditDeposit(input: $i) { id } }";
const BALANCES: &str = "{ balances { asset { symbol } available locked } }";

both_backends!(
    orders_match_at_maker_prices_with_fees,
    funds_are_held_and_released,
    order_flags_behave,
    orders_are_private_idempotent_and_validated,
    random_concurrent_trading_keeps_every_invariant,
    orders_arriving_together_commit_together_and_fail_alone,
    markets_sharing_a_trader_never_spend_the_same_funds_twice,
    orders_of_several_markets_waiting_together_share_one_transaction,
    halted_markets_refuse_orders_until_resumed,
);

fn d(s: &str) -> Decimal {
    s.parse().unwrap_or_else(|_| panic!("not a decimal: {s:?}"))
}

fn dv(v: &Value) -> Decimal {
    d(v.as_str().unwrap_or("0"))
}

struct Desk {
    app: TestApp,
    admin: Auth,
}

impl Desk {
    async fn new(backend: Backend) -> Option<Desk> {
        let (app, admin) = TestApp::spawn_with_admin(backend).await?;
        Some(Desk { app, admin })
    }

    async fn trader(&self, funds: &[(&str, &str)]) -> Auth {
        let user = self.app.register(&email("trader")).await;
        for (asset, amount) in funds {
            let variables = json!({"i": {"userId": user.user_id, "asset": asset, "amount": amount, "reference": uuid::Uuid::new_v4().to_string()}});
            let body = self
                .app
                .gql(DEPOSIT, variables, Some(&self.admin.access))
                .await;
            assert!(body["data"]["creditDeposit"].is_object(), "{body}");
        }
        user
    }

    async fn place(&self, who: &Auth, input: Value) -> Value {
        self.app
            .gql(PLACE, json!({"i": input}), Some(&who.access))
            .await
    }

    async fn balance(&self, who: &Auth, asset: &str) -> (Decimal, Decimal) {
        let body = self.app.gql(BALANCES, json!({}), Some(&who.access)).await;
        let row = body["data"]["balances"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["asset"]["symbol"] == asset))
            .cloned()
            .unwrap_or_else(|| panic!("{body}"));
        (dv(&row["available"]), dv(&row["locked"]))
    }

    /// The ledger agrees with its journal and every audit chain verifies.
    async fn ledger_ok(&self) {
        let check = self
            .app
            .gql(
                "{ ledgerCheck { ok problems } }",
                json!({}),
                Some(&self.admin.access),
            )
            .await;
        assert_eq!(check["data"]["ledgerCheck"]["ok"], true, "{check}");
        let audit = self
            .app
            .gql(
                "{ verifyAuditChain { valid } }",
                json!({}),
                Some(&self.admin.access),
            )
            .await;
        assert_eq!(audit["data"]["verifyAuditChain"]["valid"], true, "{audit}");
    }
}

fn limit(side: &str, price: &str, quantity: &str) -> Value {
    json!({"market": "BTC-USD", "side": side, "type": "LIMIT", "price": price, "quantity": quantity})
}

async fn orders_match_at_maker_prices_with_fees(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let seller = desk.trader(&[("BTC", "2")]).await;
    let buyer = desk.trader(&[("USD", "100000")]).await;
    desk.place(&seller, limit("SELL", "50000", "0.5")).await;
    desk.place(&seller, limit("SELL", "50100", "0.5")).await;

    let body = desk.place(&buyer, limit("BUY", "50100", "0.7")).await;
    let order = &body["data"]["placeOrder"];
    assert_eq!(order["status"], "FILLED", "{body}");
    let prices: Vec<&str> = order["fills"]
        .as_array()
        .expect("fills")
        .iter()
        .filter_map(|f| f["price"].as_str())
        .collect();
    assert_eq!(
        prices,
        ["50000", "50100"],
        "price-time priority at the makers' prices"
    );
    // (0.5 × 50000 + 0.2 × 50100) / 0.7, exactly.
    assert_eq!(dv(&order["averageFillPrice"]), d("35020") / d("0.7"));
    assert_eq!(
        order["fee"], "0.0014",
        "taker fee 20 bps of the BTC received"
    );

    assert_eq!(desk.balance(&buyer, "BTC").await, (d("0.6986"), d("0")));
    assert_eq!(
        desk.balance(&buyer, "USD").await,
        (d("64980"), d("0")),
        "the better price freed the excess hold"
    );
    // Seller: maker fee 10 bps of the USD received; 0.3 BTC still on the book.
    assert_eq!(desk.balance(&seller, "USD").await, (d("34984.98"), d("0")));
    assert_eq!(desk.balance(&seller, "BTC").await, (d("1"), d("0.3")));
    let market = desk
        .app
        .gql(
            "{ market(symbol: \"BTC-USD\") { lastPrice } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(market["data"]["market"]["lastPrice"], "50100");
    desk.ledger_ok().await;
}

async fn funds_are_held_and_released(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let buyer = desk.trader(&[("USD", "1000")]).await;
    let too_big = desk.place(&buyer, limit("BUY", "50000", "0.1")).await;
    assert_eq!(code(&too_big), "INSUFFICIENT_FUNDS", "{too_big}");
    let orders = desk
        .app
        .gql(
            "{ orders { edges { node { id } } } }",
            json!({}),
            Some(&buyer.access),
        )
        .await;
    assert_eq!(
        orders["data"]["orders"]["edges"],
        json!([]),
        "nothing written"
    );

    let body = desk.place(&buyer, limit("BUY", "40000", "0.02")).await;
    let id = body["data"]["placeOrder"]["id"]
        .as_str()
        .expect("placed")
        .to_owned();
    assert_eq!(desk.balance(&buyer, "USD").await, (d("200"), d("800")));
    let cancel = "mutation($id: ID!) { cancelOrder(id: $id) { status remainingQuantity } }";
    let cancelled = desk
        .app
        .gql(cancel, json!({"id": id}), Some(&buyer.access))
        .await;
    assert_eq!(
        cancelled["data"]["cancelOrder"]["status"], "CANCELLED",
        "{cancelled}"
    );
    assert_eq!(desk.balance(&buyer, "USD").await, (d("1000"), d("0")));
    let again = desk
        .app
        .gql(cancel, json!({"id": id}), Some(&buyer.access))
        .await;
    assert_eq!(code(&again), "CONFLICT", "{again}");
    assert!(again["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("CANCELLED"));

    for price in ["30000", "31000"] {
        desk.place(&buyer, limit("BUY", price, "0.01")).await;
    }
    let all = desk
        .app
        .gql(
            "mutation { cancelAllOrders(market: \"btc-usd\") { status } }",
            json!({}),
            Some(&buyer.access),
        )
        .await;
    assert_eq!(
        all["data"]["cancelAllOrders"].as_array().map(Vec::len),
        Some(2),
        "{all}"
    );
    assert_eq!(desk.balance(&buyer, "USD").await, (d("1000"), d("0")));
    desk.ledger_ok().await;
}

async fn order_flags_behave(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let maker = desk.trader(&[("BTC", "1"), ("USD", "100000")]).await;
    let taker = desk.trader(&[("USD", "100000"), ("BTC", "1")]).await;
    desk.place(&maker, limit("SELL", "50000", "0.1")).await;

    let mut post_only = limit("BUY", "50000", "0.1");
    post_only["postOnly"] = json!(true);
    let body = desk.place(&taker, post_only).await;
    assert_eq!(body["data"]["placeOrder"]["status"], "REJECTED", "{body}");
    assert!(body["data"]["placeOrder"]["rejectReason"]
        .as_str()
        .is_some());

    let mut fok = limit("BUY", "50000", "0.2");
    fok["timeInForce"] = json!("FOK");
    assert_eq!(
        desk.place(&taker, fok).await["data"]["placeOrder"]["status"],
        "REJECTED"
    );

    let mut ioc = limit("BUY", "50000", "0.15");
    ioc["timeInForce"] = json!("IOC");
    let body = desk.place(&taker, ioc).await;
    let order = &body["data"]["placeOrder"];
    assert_eq!(
        (order["status"].as_str(), order["filledQuantity"].as_str()),
        (Some("EXPIRED"), Some("0.1")),
        "{body}"
    );
    assert_eq!(
        desk.balance(&taker, "USD").await.1,
        d("0"),
        "nothing stays held"
    );

    // Self-trade prevention: the default expires the incoming order.
    desk.place(&maker, limit("SELL", "51000", "0.1")).await;
    let body = desk.place(&maker, limit("BUY", "51000", "0.1")).await;
    assert_eq!(body["data"]["placeOrder"]["status"], "EXPIRED", "{body}");
    assert_eq!(body["data"]["placeOrder"]["fills"], json!([]));

    let market_buy =
        json!({"market": "BTC-USD", "side": "BUY", "type": "MARKET", "quoteQuantity": "1020"});
    let body = desk.place(&taker, market_buy).await;
    assert_eq!(
        body["data"]["placeOrder"]["filledQuantity"], "0.02",
        "{body}"
    );
    assert_eq!(desk.balance(&taker, "USD").await.1, d("0"));

    let mut gtd = limit("BUY", "1000", "0.01");
    gtd["timeInForce"] = json!("GTD");
    let body = desk.place(&taker, gtd.clone()).await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "input.expireAt",
        "{body}"
    );
    gtd["expireAt"] = json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
    assert_eq!(
        desk.place(&taker, gtd).await["data"]["placeOrder"]["status"],
        "OPEN"
    );

    let stop = json!({"market": "BTC-USD", "side": "SELL", "type": "STOP_LIMIT", "price": "40000", "triggerPrice": "45000", "quantity": "0.1"});
    let body = desk.place(&taker, stop).await;
    assert_eq!(
        body["data"]["placeOrder"]["status"], "UNTRIGGERED",
        "{body}"
    );
    desk.ledger_ok().await;
}

async fn orders_are_private_idempotent_and_validated(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let alice = desk.trader(&[("USD", "10000")]).await;
    let mallory = desk.trader(&[("USD", "10000")]).await;
    let mut order = limit("BUY", "30000", "0.01");
    order["clientOrderId"] = json!("my-order-1");
    let first = desk.place(&alice, order.clone()).await;
    let second = desk.place(&alice, order.clone()).await;
    assert_eq!(
        first["data"]["placeOrder"]["id"], second["data"]["placeOrder"]["id"],
        "{second}"
    );
    assert_eq!(desk.balance(&alice, "USD").await.1, d("300"), "held once");
    let theirs = desk.place(&mallory, order).await;
    assert_ne!(
        theirs["data"]["placeOrder"]["id"], first["data"]["placeOrder"]["id"],
        "ids are per user"
    );

    let id = first["data"]["placeOrder"]["id"].as_str().expect("id");
    let peek = desk
        .app
        .gql(
            "query($id: ID!) { order(id: $id) { id } }",
            json!({"id": id}),
            Some(&mallory.access),
        )
        .await;
    assert_eq!(peek["data"]["order"], Value::Null, "{peek}");
    let cancel = desk
        .app
        .gql(
            "mutation($id: ID!) { cancelOrder(id: $id) { id } }",
            json!({"id": id}),
            Some(&mallory.access),
        )
        .await;
    assert_eq!(code(&cancel), "NOT_FOUND");
    let own = desk.app.gql("query($id: ID!) { order(id: $id) { id status market { symbol baseAsset { symbol } } } }", json!({"id": id}), Some(&alice.access)).await;
    assert_eq!(
        own["data"]["order"]["market"]["baseAsset"]["symbol"], "BTC",
        "{own}"
    );

    let cases = [
        (
            json!({"market": "NOPE-USD", "side": "BUY", "type": "LIMIT", "price": "1", "quantity": "1"}),
            "input.market",
        ),
        (limit("BUY", "30000.001", "0.01"), "input.price"),
        (limit("BUY", "30000", "0.000001"), "input.quantity"),
        (limit("BUY", "1", "0.01"), "input.quantity"),
        (
            limit("BUY", "1000000000000000000000000000", "1"),
            "input.price",
        ),
        (
            json!({"market": "BTC-USD", "side": "BUY", "type": "MARKET", "price": "1", "quantity": "1"}),
            "input.price",
        ),
        (
            json!({"market": "BTC-USD", "side": "BUY", "type": "LIMIT", "quantity": "1"}),
            "input.price",
        ),
        (
            json!({"market": "BTC-USD", "side": "BUY", "type": "LIMIT", "price": 30000, "quantity": "1"}),
            "input.price",
        ),
    ];
    for (input, field) in cases {
        let body = desk.place(&alice, input.clone()).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{input}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["field"], field,
            "{input}: {body}"
        );
    }
    let anonymous = desk
        .app
        .gql(PLACE, json!({"i": limit("BUY", "1", "1")}), None)
        .await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    desk.ledger_ok().await;
}

/// Many users place, cancel and sweep random orders at once, half through a second
/// server process on the same database. Afterwards: the ledger agrees with itself,
/// every asset's user totals plus fees equal the deposits, no balance is negative,
/// locked funds equal what open orders need, each trade's two fills agree, no order is
/// over-filled, and the book is not crossed.
async fn random_concurrent_trading_keeps_every_invariant(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let replica = Server::start(&[
        ("DATABASE_URL", desk.app.database_url.as_str()),
        ("JWT_SECRET", JWT_SECRET),
    ]);
    let addresses = Arc::new([desk.app.address.clone(), replica.address.clone()]);
    let deposits = [("SOL", "1000"), ("USD", "100000")];
    let mut traders = Vec::new();
    for _ in 0..4 {
        traders.push(desk.trader(&deposits).await);
    }
    let seed: u64 = rand::random();
    let http = desk.app.http.clone();
    let tasks = traders.iter().cloned().enumerate().map(|(n, trader)| {
        let (http, addresses) = (http.clone(), addresses.clone());
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ n as u64);
            let mut mine: Vec<String> = Vec::new();
            for step in 0..30 {
                let address = &addresses[step % 2];
                let call = |query: &'static str, variables: Value| {
                    let http = http.clone();
                    let url = format!("http://{address}/graphql");
                    let token = trader.access.clone();
                    async move {
                        let response = http.post(url).bearer_auth(token).json(&json!({"query": query, "variables": variables})).send().await;
                        response.expect("sent").json::<Value>().await.expect("json")
                    }
                };
                let roll = rng.gen_range(0..10);
                let side = if rng.gen_bool(0.5) { "BUY" } else { "SELL" };
                let quantity = Decimal::new(rng.gen_range(2..500), 2); // 0.02 .. 4.99 SOL, above the minimum value
                let place = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }";
                let price = Decimal::new(rng.gen_range(9_500..10_500), 2); // 95.00 .. 104.99
                let body = if roll < 5 {
                    let tif = ["GTC", "GTC", "IOC", "FOK"][rng.gen_range(0..4)];
                    let stp = ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "NONE"][rng.gen_range(0..4)];
                    let input = json!({"market": "SOL-USD", "side": side, "type": "LIMIT", "price": price.to_string(), "quantity": quantity.to_string(), "timeInForce": tif, "selfTradePrevention": stp, "postOnly": tif == "GTC" && rng.gen_bool(0.2)});
                    call(place, json!({"i": input})).await
                } else if roll < 6 {
                    let trigger = Decimal::new(rng.gen_range(9_500..10_500), 2);
                    let input = json!({"market": "SOL-USD", "side": side, "type": "STOP_LIMIT", "price": price.to_string(), "triggerPrice": trigger.to_string(), "quantity": quantity.to_string()});
                    call(place, json!({"i": input})).await
                } else if roll < 8 {
                    let input = if side == "BUY" && rng.gen_bool(0.5) {
                        json!({"market": "SOL-USD", "side": "BUY", "type": "MARKET", "quoteQuantity": Decimal::new(rng.gen_range(100..5000), 1).to_string()})
                    } else {
                        json!({"market": "SOL-USD", "side": side, "type": "MARKET", "quantity": quantity.to_string()})
                    };
                    call(place, json!({"i": input})).await
                } else if !mine.is_empty() && roll == 8 {
                    let id = mine[rng.gen_range(0..mine.len())].clone();
                    let change = if rng.gen_bool(0.5) { json!({"price": price.to_string()}) } else { json!({"quantity": quantity.to_string()}) };
                    let amend = "mutation($id: ID!, $i: AmendOrderInput!) { amendOrder(id: $id, input: $i) { id } }";
                    call(amend, json!({"id": id, "i": change})).await
                } else if !mine.is_empty() {
                    let id = mine.swap_remove(rng.gen_range(0..mine.len()));
                    call("mutation($id: ID!) { cancelOrder(id: $id) { id } }", json!({"id": id})).await
                } else {
                    continue;
                };
                if let Some(id) = body["data"]["placeOrder"]["id"].as_str() {
                    mine.push(id.to_owned());
                }
                let allowed = ["INSUFFICIENT_FUNDS", "CONFLICT", "<none>"];
                // An amendment to an order that has filled meanwhile may fall below the filled quantity.
                let allowed_input = body["errors"][0]["extensions"]["field"] == "input.quantity" && roll == 8;
                if allowed_input {
                    continue;
                }
                assert!(allowed.contains(&code(&body)), "seed {seed}: {body}");
            }
        }
    });
    futures_util::future::join_all(tasks).await;
    drop(replica);

    desk.ledger_ok().await;
    let query = "{ balances { asset { symbol } available locked } orders(first: 200) { edges { node { id side status price quantity filledQuantity remainingQuantity fills { tradeId side price quantity fee feeAsset liquidity } } } pageInfo { hasNextPage } } }";
    let mut totals: HashMap<String, Decimal> = HashMap::new();
    let mut trades: HashMap<String, Vec<Value>> = HashMap::new();
    let (mut best_bid, mut best_ask) = (Decimal::MIN, Decimal::MAX);
    for trader in &traders {
        let body = desk.app.gql(query, json!({}), Some(&trader.access)).await;
        assert_eq!(
            body["data"]["orders"]["pageInfo"]["hasNextPage"], false,
            "all orders fit one page"
        );
        let mut locked_needed: HashMap<&str, Decimal> = HashMap::new();
        for edge in body["data"]["orders"]["edges"].as_array().expect("orders") {
            let order = &edge["node"];
            if let (Some(quantity), filled) =
                (order["quantity"].as_str(), dv(&order["filledQuantity"]))
            {
                assert!(filled <= d(quantity), "seed {seed}: over-filled {order}");
            }
            if order["status"] == "UNTRIGGERED" {
                let (price, remaining) = (dv(&order["price"]), dv(&order["remainingQuantity"]));
                let (asset, amount) = if order["side"] == "BUY" {
                    ("USD", price * remaining)
                } else {
                    ("SOL", remaining)
                };
                *locked_needed.entry(asset).or_default() += amount;
            }
            let open = matches!(order["status"].as_str(), Some("OPEN" | "PARTIALLY_FILLED"));
            if open {
                let (price, remaining) = (dv(&order["price"]), dv(&order["remainingQuantity"]));
                if order["side"] == "BUY" {
                    *locked_needed.entry("USD").or_default() += price * remaining;
                    best_bid = best_bid.max(price);
                } else {
                    *locked_needed.entry("SOL").or_default() += remaining;
                    best_ask = best_ask.min(price);
                }
            }
            for fill in order["fills"].as_array().expect("fills") {
                *totals
                    .entry(fill["feeAsset"].as_str().unwrap_or_default().to_owned())
                    .or_default() += dv(&fill["fee"]);
                trades
                    .entry(fill["tradeId"].as_str().unwrap_or_default().to_owned())
                    .or_default()
                    .push(fill.clone());
            }
        }
        for row in body["data"]["balances"].as_array().expect("balances") {
            let asset = row["asset"]["symbol"].as_str().unwrap_or_default();
            let (available, locked) = (dv(&row["available"]), dv(&row["locked"]));
            assert!(
                available >= Decimal::ZERO && locked >= Decimal::ZERO,
                "seed {seed}: negative {row}"
            );
            assert_eq!(
                locked,
                locked_needed.get(asset).copied().unwrap_or_default(),
                "seed {seed}: held {asset} vs open orders"
            );
            *totals.entry(asset.to_owned()).or_default() += available + locked;
        }
    }
    for (asset, amount) in deposits {
        assert_eq!(
            totals[asset],
            d(amount) * Decimal::from(traders.len()),
            "seed {seed}: {asset} created or destroyed"
        );
    }
    assert!(
        best_bid < best_ask,
        "seed {seed}: crossed book {best_bid} >= {best_ask}"
    );
    for (trade, fills) in trades {
        assert_eq!(
            fills.len(),
            2,
            "seed {seed}: trade {trade} has {} fills",
            fills.len()
        );
        let (a, b) = (&fills[0], &fills[1]);
        assert_eq!(
            (&a["price"], &a["quantity"]),
            (&b["price"], &b["quantity"]),
            "seed {seed}"
        );
        assert_ne!(a["side"], b["side"], "seed {seed}");
        assert_ne!(a["liquidity"], b["liquidity"], "seed {seed}");
    }
    pnl_counts_every_fill_once(&desk, &traders, seed).await;
}

/// Both servers folded fills into P&L state after commit, each skipping users the
/// other held, and the replica stopped with some perhaps not yet folded: once a read
/// has caught each trader up, every method's quantity of each asset is exactly what
/// the ledger holds (a fill folded twice, or never, would show).
async fn pnl_counts_every_fill_once(desk: &Desk, traders: &[Auth], seed: u64) {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    for trader in traders {
        let body = desk
            .app
            .gql(
                "{ portfolio { totalValue } }",
                json!({}),
                Some(&trader.access),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
    }
    let db = sea_orm::Database::connect(desk.app.database_url.clone())
        .await
        .expect("database");
    for trader in traders {
        let user: uuid::Uuid = trader.user_id.parse().expect("user id");
        let mut held: HashMap<String, Decimal> = HashMap::new();
        for account in entity::ledger_accounts::Entity::find()
            .filter(entity::ledger_accounts::Column::OwnerId.eq(user))
            .all(&db)
            .await
            .expect("accounts")
        {
            *held.entry(account.asset).or_default() += account.balance.0;
        }
        let positions = entity::portfolio_positions::Entity::find()
            .filter(entity::portfolio_positions::Column::UserId.eq(user))
            .all(&db)
            .await
            .expect("positions");
        assert_eq!(positions.len(), 4 * 2, "seed {seed}: {positions:?}");
        for position in positions {
            assert_eq!(
                position.quantity.0,
                held.get(&position.asset).copied().unwrap_or_default(),
                "seed {seed}: {} {} P&L quantity against the ledger",
                position.method,
                position.asset
            );
        }
    }
}

both_backends!(
    amendments_keep_or_lose_priority,
    stops_trigger_on_the_last_price,
    stops_trigger_inside_a_batch,
    a_batch_trades_past_the_book_it_read_first,
    good_till_date_orders_expire,
    market_data_shows_book_trades_and_stats,
);

async fn order_ids(desk: &Desk, who: &Auth, input: Value) -> String {
    let body = desk.place(who, input).await;
    body["data"]["placeOrder"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

async fn amendments_keep_or_lose_priority(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let first = desk.trader(&[("BTC", "1")]).await;
    let second = desk.trader(&[("BTC", "1")]).await;
    let buyer = desk.trader(&[("USD", "100000")]).await;
    let amend = "mutation($id: ID!, $i: AmendOrderInput!) { amendOrder(id: $id, input: $i) { status price quantity remainingQuantity } }";
    let a = order_ids(&desk, &first, limit("SELL", "50000", "0.3")).await;
    let b = order_ids(&desk, &second, limit("SELL", "50000", "0.3")).await;

    // Lowering the quantity keeps the first order first in the queue.
    let body = desk
        .app
        .gql(
            amend,
            json!({"id": a, "i": {"quantity": "0.2"}}),
            Some(&first.access),
        )
        .await;
    assert_eq!(body["data"]["amendOrder"]["quantity"], "0.2", "{body}");
    assert_eq!(
        desk.balance(&first, "BTC").await,
        (d("0.8"), d("0.2")),
        "the freed quantity is released"
    );
    desk.place(&buyer, limit("BUY", "50000", "0.1")).await;
    let filled = |who: &Auth, id: &str| {
        let (app, token, id) = (&desk.app, who.access.clone(), id.to_owned());
        async move {
            let body = app
                .gql(
                    "query($id: ID!) { order(id: $id) { filledQuantity } }",
                    json!({"id": id}),
                    Some(&token),
                )
                .await;
            dv(&body["data"]["order"]["filledQuantity"])
        }
    };
    assert_eq!(filled(&first, &a).await, d("0.1"), "kept priority");

    // Raising the quantity sends it to the back of the queue.
    desk.app
        .gql(
            amend,
            json!({"id": a, "i": {"quantity": "0.3"}}),
            Some(&first.access),
        )
        .await;
    desk.place(&buyer, limit("BUY", "50000", "0.1")).await;
    assert_eq!(
        filled(&second, &b).await,
        d("0.1"),
        "the other order is now first"
    );

    // A new price that crosses trades at once.
    let bid = order_ids(&desk, &buyer, limit("BUY", "49000", "0.05")).await;
    let body = desk
        .app
        .gql(
            amend,
            json!({"id": a, "i": {"price": "49000"}}),
            Some(&first.access),
        )
        .await;
    assert_eq!(
        body["data"]["amendOrder"]["status"], "PARTIALLY_FILLED",
        "{body}"
    );
    assert_eq!(filled(&buyer, &bid).await, d("0.05"));

    let stranger = desk
        .app
        .gql(
            amend,
            json!({"id": b, "i": {"quantity": "0.25"}}),
            Some(&first.access),
        )
        .await;
    assert_eq!(code(&stranger), "NOT_FOUND");
    let below = desk
        .app
        .gql(
            amend,
            json!({"id": a, "i": {"quantity": "0.1"}}),
            Some(&first.access),
        )
        .await;
    assert_eq!(
        below["errors"][0]["extensions"]["field"], "input.quantity",
        "{below}"
    );
    desk.ledger_ok().await;
}

/// A holder of 1 BTC with a stop sell of 0.1 BTC waiting (trigger 45000, limit 44000),
/// a bidder with USD and a seller with BTC; and the stop's id.
async fn waiting_stop(desk: &Desk) -> (Auth, Auth, Auth, String) {
    let holder = desk.trader(&[("BTC", "1")]).await;
    let bidder = desk.trader(&[("USD", "100000")]).await;
    let seller = desk.trader(&[("BTC", "1")]).await;
    let stop = json!({"market": "BTC-USD", "side": "SELL", "type": "STOP_LIMIT", "price": "44000", "triggerPrice": "45000", "quantity": "0.1"});
    let id = order_ids(desk, &holder, stop).await;
    (holder, bidder, seller, id)
}

/// The stop of [`waiting_stop`] triggered and sold all it held, and the ledger agrees.
async fn stop_filled(desk: &Desk, holder: &Auth, id: &str) {
    let status = "query($id: ID!) { order(id: $id) { status } }";
    let body = desk
        .app
        .gql(status, json!({"id": id}), Some(&holder.access))
        .await;
    assert_eq!(body["data"]["order"]["status"], "FILLED", "{body}");
    assert_eq!(desk.balance(holder, "BTC").await, (d("0.9"), d("0")));
    desk.ledger_ok().await;
}

async fn stops_trigger_on_the_last_price(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let (holder, bidder, seller, id) = waiting_stop(&desk).await;
    assert_eq!(
        desk.balance(&holder, "BTC").await,
        (d("0.9"), d("0.1")),
        "held while waiting"
    );
    desk.place(&bidder, limit("BUY", "46000", "0.01")).await;
    desk.place(&bidder, limit("BUY", "44500", "0.5")).await;
    // A trade at 46000 does not reach a sell stop at 45000.
    desk.place(&seller, limit("SELL", "46000", "0.01")).await;
    let status = "query($id: ID!) { order(id: $id) { status filledQuantity } }";
    let body = desk
        .app
        .gql(status, json!({"id": id}), Some(&holder.access))
        .await;
    assert_eq!(body["data"]["order"]["status"], "UNTRIGGERED", "{body}");
    // A trade at 44500 does: the stop becomes a limit sell at 44000 and takes the bid.
    desk.place(&seller, limit("SELL", "44500", "0.01")).await;
    stop_filled(&desk, &holder, &id).await;
}

/// A trade placed together with other orders (one transaction for the batch) triggers
/// a waiting stop as one placed alone would: the batch learns the market's stop
/// bounds before its first order, not at its first trade.
async fn stops_trigger_inside_a_batch(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let desk = Arc::new(desk);
    let (holder, bidder, seller, id) = waiting_stop(&desk).await;
    desk.place(&bidder, limit("BUY", "44500", "0.5")).await;
    // The first of the two sells trades at 44500, which reaches the stop at 45000.
    let queued = [
        (seller.clone(), limit("SELL", "44500", "0.01")),
        (seller.clone(), limit("SELL", "50000", "0.01")),
    ];
    let placed = in_one_batch(&desk, &bidder, queued).await;
    for (body, expected) in placed.iter().zip(["FILLED", "OPEN"]) {
        assert_eq!(body["data"]["placeOrder"]["status"], expected, "{body}");
    }
    stop_filled(&desk, &holder, &id).await;
}

/// A batch reads the book before its first order only as deep as its takers' quantities
/// reach. A taker that passes over more resting orders than that (its own, expired by
/// self-trade prevention) reads on, and the next taker of the batch trades with what
/// lies beyond, in price-time priority.
async fn a_batch_trades_past_the_book_it_read_first(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let desk = Arc::new(desk);
    let trader = desk.trader(&[("BTC", "1"), ("USD", "100000")]).await;
    let buyer = desk.trader(&[("USD", "100000")]).await;
    let bidder = desk.trader(&[("USD", "100000")]).await;
    // Resting asks in priority order, each with its owner and the status it must end in.
    let mut asks = Vec::new();
    for _ in 0..3 {
        let id = order_ids(&desk, &trader, limit("SELL", "50000", "0.01")).await;
        asks.push((trader.clone(), id, "EXPIRED"));
    }
    for (price, quantity, end) in [
        ("50000", "0.01", "FILLED"),
        ("50000", "0.01", "FILLED"),
        ("50000", "0.02", "FILLED"),
        ("50100", "0.01", "OPEN"),
    ] {
        let maker = desk.trader(&[("BTC", "1")]).await;
        let id = order_ids(&desk, &maker, limit("SELL", price, quantity)).await;
        asks.push((maker, id, end));
    }
    // The two buys want 0.04 BTC together: the batch's first read covers the trader's
    // own three asks and one more.
    let mut passing = limit("BUY", "50100", "0.02");
    passing["selfTradePrevention"] = json!("EXPIRE_MAKER");
    let queued = [
        (trader.clone(), passing),
        (buyer.clone(), limit("BUY", "50100", "0.02")),
    ];
    let bodies = in_one_batch(&desk, &bidder, queued).await;
    for body in &bodies {
        let order = &body["data"]["placeOrder"];
        assert_eq!(order["status"], "FILLED", "{body}");
        let fills = order["fills"].as_array().cloned().unwrap_or_default();
        assert!(fills.iter().all(|f| f["price"] == "50000"), "{body}");
    }
    let status = "query($id: ID!) { order(id: $id) { status } }";
    for (owner, id, expected) in &asks {
        let body = desk
            .app
            .gql(status, json!({"id": id}), Some(&owner.access))
            .await;
        assert_eq!(body["data"]["order"]["status"], *expected, "{id}: {body}");
    }
    // Buyers pay their fee in the base asset they receive.
    let fee = |at: usize| dv(&bodies[at]["data"]["placeOrder"]["fee"]);
    let expected = (d("1.02") - fee(0), d("0"));
    assert_eq!(desk.balance(&trader, "BTC").await, expected);
    let expected = (d("0.02") - fee(1), d("0"));
    assert_eq!(desk.balance(&buyer, "BTC").await, expected);
    desk.ledger_ok().await;
}

/// Places `queued` (BTC-USD orders) as one batch, in the order given, and returns their
/// answers. A lone bid from `bidder`, far from the book, first takes the placement task
/// and waits for the held market, so the others queue behind it; then the market is let
/// go. Fails unless exactly one batch of several orders was committed.
async fn in_one_batch<const N: usize>(
    desk: &Arc<Desk>,
    bidder: &Auth,
    queued: [(Auth, Value); N],
) -> Vec<Value> {
    let committed = r#"tradegraph_order_batches_total{outcome="committed"} "#;
    let before = metric(&desk.app, committed).await;
    let (_outside, held) = hold_market(desk, "BTC-USD").await;
    let place = |who: Auth, input: Value| {
        let desk = desk.clone();
        tokio::spawn(async move { desk.place(&who, input).await })
    };
    let first = place(bidder.clone(), limit("BUY", "40000", "0.01"));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut placed = Vec::new();
    for (who, input) in queued {
        // Apart enough to reach the placement task in this order.
        if !placed.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        placed.push(place(who, input));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    held.rollback().await.expect("BTC-USD let go");
    let body = first.await.expect("order task");
    assert_eq!(body["data"]["placeOrder"]["status"], "OPEN", "{body}");
    let mut bodies = Vec::new();
    for order in placed {
        bodies.push(order.await.expect("order task"));
    }
    assert_eq!(
        metric(&desk.app, committed).await - before,
        1,
        "the queued orders went as one batch"
    );
    bodies
}

/// An outside transaction holding `market`'s row, so that placements in it wait (and
/// queue) until it is rolled back. The connection must outlive the transaction.
async fn hold_market(
    desk: &Desk,
    market: &str,
) -> (sea_orm::DatabaseConnection, sea_orm::DatabaseTransaction) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let outside = sea_orm::Database::connect(desk.app.database_url.clone())
        .await
        .expect("a connection of the test's own");
    let held = outside.begin().await.expect("an outside transaction");
    held.execute_unprepared(&format!(
        "UPDATE markets SET updated_at = updated_at WHERE symbol = '{market}'"
    ))
    .await
    .expect("the market held");
    (outside, held)
}

async fn good_till_date_orders_expire(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let buyer = desk.trader(&[("USD", "1000")]).await;
    let mut gtd = limit("BUY", "40000", "0.01");
    gtd["timeInForce"] = json!("GTD");
    gtd["expireAt"] =
        json!((chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339());
    let id = order_ids(&desk, &buyer, gtd).await;
    assert_eq!(desk.balance(&buyer, "USD").await, (d("600"), d("400")));
    let status = "query($id: ID!) { order(id: $id) { status } }";
    let mut last = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        last = desk
            .app
            .gql(status, json!({"id": id}), Some(&buyer.access))
            .await;
        if last["data"]["order"]["status"] == "EXPIRED" {
            break;
        }
    }
    assert_eq!(last["data"]["order"]["status"], "EXPIRED", "{last}");
    assert_eq!(desk.balance(&buyer, "USD").await, (d("1000"), d("0")));
    desk.ledger_ok().await;
}

async fn market_data_shows_book_trades_and_stats(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let maker = desk.trader(&[("BTC", "2"), ("USD", "100000")]).await;
    let taker = desk.trader(&[("USD", "100000")]).await;
    for (side, price, quantity) in [
        ("SELL", "50100", "0.2"),
        ("SELL", "50100", "0.3"),
        ("SELL", "50200", "0.1"),
        ("BUY", "49900", "0.4"),
        ("BUY", "49800", "0.1"),
    ] {
        desk.place(&maker, limit(side, price, quantity)).await;
    }
    desk.place(&taker, limit("BUY", "50100", "0.1")).await;
    let query = "{ market(symbol: \"BTC-USD\") { lastPrice volume24h change24h orderBook(depth: 1) { bids { price quantity orders } asks { price quantity orders } } recentTrades(limit: 5) { price quantity takerSide } } }";
    let body = desk.app.gql(query, json!({}), None).await;
    let market = &body["data"]["market"];
    assert_eq!(
        market["orderBook"]["asks"],
        json!([{"price": "50100", "quantity": "0.4", "orders": 2}]),
        "{body}"
    );
    assert_eq!(
        market["orderBook"]["bids"],
        json!([{"price": "49900", "quantity": "0.4", "orders": 1}])
    );
    assert_eq!(
        market["recentTrades"],
        json!([{"price": "50100", "quantity": "0.1", "takerSide": "BUY"}])
    );
    assert_eq!(
        (market["lastPrice"].as_str(), market["volume24h"].as_str()),
        (Some("50100"), Some("0.1"))
    );
    assert_eq!(market["change24h"], "0");
    let full = desk
        .app
        .gql(
            "{ market(symbol: \"BTC-USD\") { orderBook { asks { price } } } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(
        full["data"]["market"]["orderBook"]["asks"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let bad = desk
        .app
        .gql(
            "{ market(symbol: \"BTC-USD\") { orderBook(depth: 0) { asks { price } } } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(bad["errors"][0]["extensions"]["field"], "depth");
}

both_backends!(fees_fall_with_thirty_day_volume);

async fn fees_fall_with_thirty_day_volume(backend: Backend) {
    let Some((app, admin)) =
        TestApp::spawn_with_admin_and(backend, &[("FEE_TIERS", "4000:50")]).await
    else {
        return;
    };
    let desk = Desk { app, admin };
    let seller = desk.trader(&[("BTC", "1")]).await;
    let buyer = desk.trader(&[("USD", "100000")]).await;
    let fees_of = |body: Value| {
        body["data"]["placeOrder"]["fills"][0]["fee"]
            .as_str()
            .map(str::to_owned)
    };
    // First trade at full fees: taker 20 bps of 0.1 BTC, maker 10 bps of 5000 USD.
    desk.place(&seller, limit("SELL", "50000", "0.1")).await;
    let first = desk.place(&buyer, limit("BUY", "50000", "0.1")).await;
    assert_eq!(fees_of(first.clone()).as_deref(), Some("0.0002"), "{first}");
    assert_eq!(desk.balance(&seller, "USD").await.0, d("4995"));
    // Both now traded 5000 USD this month: half fees from here on.
    desk.place(&seller, limit("SELL", "50000", "0.1")).await;
    let second = desk.place(&buyer, limit("BUY", "50000", "0.1")).await;
    assert_eq!(
        fees_of(second.clone()).as_deref(),
        Some("0.0001"),
        "{second}"
    );
    assert_eq!(
        desk.balance(&seller, "USD").await.0,
        d("4995") + d("4997.5")
    );
    desk.ledger_ok().await;
}

/// A count from the server's `/metrics`, 0 when the series has not appeared yet.
async fn metric(app: &TestApp, series: &str) -> u64 {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Orders that reach one market at the same time are placed in shared transactions
/// (group commit); one that fails inside such a batch gets its own error while the
/// others are placed as if alone, and nothing of the failed one is written. Each round's
/// orders queue behind an outside transaction holding the market, so that they do
/// reach it at the same time however busy the machine.
async fn orders_arriving_together_commit_together_and_fail_alone(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let desk = Arc::new(desk);
    let mut buyers = Vec::new();
    let mut sellers = Vec::new();
    let mut broke = Vec::new();
    for _ in 0..6 {
        buyers.push(desk.trader(&[("USD", "100000")]).await);
        sellers.push(desk.trader(&[("BTC", "10")]).await);
        broke.push(desk.trader(&[]).await);
    }
    let committed = r#"tradegraph_order_batches_total{outcome="committed"} "#;
    let split = r#"tradegraph_order_batches_total{outcome="split"} "#;
    let mut rounds = 0;
    while rounds < 8
        && (metric(&desk.app, committed).await == 0 || metric(&desk.app, split).await == 0)
    {
        rounds += 1;
        let (_outside, held) = hold_market(&desk, "BTC-USD").await;
        let mut tasks = tokio::task::JoinSet::new();
        let everyone = buyers
            .iter()
            .map(|u| (u.clone(), "BUY", "30000"))
            .chain(sellers.iter().map(|u| (u.clone(), "SELL", "31000")))
            // Every other round without the traders who cannot pay, so that some
            // batches have nothing to fail.
            .chain(
                broke
                    .iter()
                    .filter(|_| rounds % 2 == 0)
                    .map(|u| (u.clone(), "BUY", "30000")),
            );
        for (who, side, price) in everyone {
            let desk = desk.clone();
            tasks.spawn(async move {
                let body = desk.place(&who, limit(side, price, "0.01")).await;
                (who, body)
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        held.rollback().await.expect("BTC-USD let go");
        while let Some(joined) = tasks.join_next().await {
            let (who, body) = joined.expect("order task");
            if broke.iter().any(|b| b.user_id == who.user_id) {
                assert_eq!(code(&body), "INSUFFICIENT_FUNDS", "{body}");
            } else {
                assert_eq!(body["data"]["placeOrder"]["status"], "OPEN", "{body}");
            }
        }
    }
    let (batches, splits) = (
        metric(&desk.app, committed).await,
        metric(&desk.app, split).await,
    );
    assert!(
        batches > 0 && splits > 0,
        "after {rounds} rounds of simultaneous orders: {batches} batches committed, {splits} split"
    );
    let rounds = Decimal::from(rounds);
    for buyer in &buyers {
        let held = d("300") * rounds;
        assert_eq!(desk.balance(buyer, "USD").await, (d("100000") - held, held));
    }
    for seller in &sellers {
        let held = d("0.01") * rounds;
        assert_eq!(desk.balance(seller, "BTC").await, (d("10") - held, held));
    }
    for user in &broke {
        let body = desk
            .app
            .gql(
                "{ orders(first: 10) { edges { node { id } } } }",
                json!({}),
                Some(&user.access),
            )
            .await;
        assert_eq!(body["data"]["orders"]["edges"], json!([]), "{body}");
    }
    desk.ledger_ok().await;
}

/// Buys worth 100 USD each in three markets at once, by a trader who can pay for only
/// some of them. One server places orders of every market that arrive together in one
/// transaction; on PostgreSQL a second server on the same database takes half of the
/// orders, so two transactions spend the trader's USD side by side. Each reads it
/// without locking it and locks it just before writing, carrying over what the other
/// spent meanwhile, or running again with its locks up front when that would have left
/// too little. Either way exactly as many buys are placed as the money covers, the rest
/// are refused, and each order update is published under the number it is stored with.
/// Whether two servers' transactions overlap in those rounds is up to chance, so both
/// ways through the lock are then forced: see [`forced_overlap`].
async fn markets_sharing_a_trader_never_spend_the_same_funds_twice(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let postgres = backend != Backend::Sqlite;
    let desk = Arc::new(desk);
    let replica = match postgres {
        true => Some(Arc::new(
            TestApp::spawn_with(backend, &[("DATABASE_URL", desk.app.database_url.as_str())])
                .await
                .expect("second server"),
        )),
        false => None,
    };
    let servers: Vec<&TestApp> = std::iter::once(&desk.app)
        .chain(replica.as_deref())
        .collect();
    // Four buys per market, worth 100 USD each, and money for `covered` of them: all
    // of them every other round.
    let buys = [
        ("BTC-USD", "10000", "0.01"),
        ("ETH-USD", "1000", "0.1"),
        ("SOL-USD", "100", "1"),
    ];
    let per_market = 4;
    for round in 1..=4 {
        let covered = if round % 2 == 0 { 3 * per_market } else { 5 };
        let funds = (100 * covered).to_string();
        let spender = desk.trader(&[("USD", funds.as_str())]).await;
        let mut published: Vec<_> = servers.iter().map(|s| s.events.published_here()).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for wave in 0..per_market {
            for (n, (market, price, quantity)) in buys.into_iter().enumerate() {
                let (desk, replica, spender) = (desk.clone(), replica.clone(), spender.clone());
                tasks.spawn(async move {
                    let server = match (&replica, (wave + n) % 2) {
                        (Some(replica), 1) => &**replica,
                        _ => &desk.app,
                    };
                    let input = json!({"market": market, "side": "BUY", "type": "LIMIT", "price": price, "quantity": quantity});
                    server
                        .gql(PLACE, json!({"i": input}), Some(&spender.access))
                        .await
                });
            }
        }
        let (mut placed, mut refused) = (0, 0);
        while let Some(joined) = tasks.join_next().await {
            let body = joined.expect("order task");
            match body["data"]["placeOrder"]["status"].as_str() {
                Some("OPEN") => placed += 1,
                _ => {
                    assert_eq!(code(&body), "INSUFFICIENT_FUNDS", "{body}");
                    refused += 1;
                }
            }
        }
        assert_eq!((placed, refused), (covered, 3 * per_market - covered));
        assert_eq!(desk.balance(&spender, "USD").await, (d("0"), d(&funds)));
        // Every update went out (from the server that placed it) under the number it
        // was stored with: 1, 2, 3, ….
        let mut sent = Vec::new();
        for events in &mut published {
            while let Ok(event) = events.try_recv() {
                if let tradegraph::events::Event::OrderUpdate {
                    user_id,
                    sequence,
                    order_id,
                    ..
                } = &*event
                {
                    if user_id.to_string() == spender.user_id {
                        sent.push((*sequence, order_id.to_string()));
                    }
                }
            }
        }
        sent.sort();
        let kept = stored_updates(&desk, &spender, covered).await;
        assert_eq!(sent, kept);
        let numbers: Vec<i64> = kept.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, (1..=covered as i64).collect::<Vec<_>>());
    }
    if let Some(replica) = &replica {
        // Money for both buys: the second to lock carries over what the first spent.
        let (placed, overtaken, carried_over) = forced_overlap(&desk, replica, 2).await;
        assert_eq!((placed, overtaken, carried_over), (2, 0, 1));
        // Money for one: the second to lock finds too little left, runs again with its
        // locks up front, and is refused.
        let (placed, overtaken, carried_over) = forced_overlap(&desk, replica, 1).await;
        assert_eq!((placed, overtaken, carried_over), (1, 1, 0));
    }
    desk.ledger_ok().await;
}

/// The first `count` order updates stored for `who`, replayed from the start:
/// (sequence, order id).
async fn stored_updates(desk: &Desk, who: &Auth, count: usize) -> Vec<(i64, String)> {
    let mut replay = crate::live::connect(&desk.app.address, Some(who)).await;
    let stored = "subscription { orderUpdates(afterSequence: 0) { sequence order { id } } }";
    crate::live::subscribe(&mut replay, "u", stored, json!({})).await;
    let mut kept = Vec::new();
    while kept.len() < count {
        let (_, data) = crate::live::next_data(&mut replay).await;
        let update = &data["orderUpdates"];
        let id = update["order"]["id"]
            .as_str()
            .expect("an order id")
            .to_owned();
        kept.push((update["sequence"].as_i64().expect("a number"), id));
    }
    kept
}

/// Two transactions, one per server, that read a trader's USD before either locks
/// it (PostgreSQL). The trader has money for `covered` of two 100 USD buys, one in
/// BTC-USD on the first server and one in ETH-USD on the second (different markets, so
/// neither waits for the other's market). An outside transaction holds the trader's
/// USD row until both placements wait for it, then lets go: the two lock it one after
/// the other, and the second finds what the first spent. Returns how many buys were
/// placed (the rest must be refused for want of funds) and by how much the servers'
/// `overtaken` and `carried_over` batch counts moved. The trader's other rows exist
/// before, as they would for any trader who has placed an order, so that creating
/// them does not order the two transactions first.
async fn forced_overlap(desk: &Desk, replica: &TestApp, covered: usize) -> (usize, u64, u64) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let buys = [
        (&desk.app, "BTC-USD", "10000", "0.01"),
        (replica, "ETH-USD", "1000", "0.1"),
    ];
    let funds = (100 * covered).to_string();
    let trader = desk.trader(&[("USD", funds.as_str())]).await;
    for (_, market, price, quantity) in buys {
        let input = json!({"market": market, "side": "BUY", "type": "LIMIT", "price": price, "quantity": quantity});
        let body = desk.place(&trader, input).await;
        let id = body["data"]["placeOrder"]["id"].clone();
        assert!(id.is_string(), "{body}");
        let cancel = "mutation($id: ID!) { cancelOrder(id: $id) { status } }";
        let body = desk
            .app
            .gql(cancel, json!({"id": id}), Some(&trader.access))
            .await;
        assert_eq!(body["data"]["cancelOrder"]["status"], "CANCELLED", "{body}");
    }
    let counts = || async {
        let mut counts = (0, 0);
        for server in [&desk.app, replica] {
            counts.0 += metric(
                server,
                r#"tradegraph_order_batches_total{outcome="overtaken"} "#,
            )
            .await;
            counts.1 += metric(
                server,
                r#"tradegraph_order_batches_total{outcome="carried_over"} "#,
            )
            .await;
        }
        counts
    };
    let before = counts().await;

    let outside = sea_orm::Database::connect(desk.app.database_url.clone())
        .await
        .expect("a connection of the test's own");
    let held = outside.begin().await.expect("an outside transaction");
    held.execute_unprepared(&format!(
        "SELECT id FROM ledger_accounts WHERE owner_id = '{}' AND asset = 'USD' \
         AND kind = 'AVAILABLE' FOR UPDATE",
        trader.user_id
    ))
    .await
    .expect("the trader's USD held");
    let [first, second] = buys.map(|(server, market, price, quantity)| {
        let input = json!({"market": market, "side": "BUY", "type": "LIMIT", "price": price, "quantity": quantity});
        server.gql(PLACE, json!({"i": input}), Some(trader.access.as_str()))
    });
    // Lets go once both placements are in: each has read the row and waits to lock it.
    let release = async {
        let waiting = "SELECT count(*) AS n FROM pg_stat_activity \
                       WHERE datname = current_database() AND wait_event_type = 'Lock'";
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let row = outside
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DatabaseBackend::Postgres,
                    waiting,
                ))
                .await
                .expect("waiting sessions")
                .expect("a count");
            let n: i64 = row.try_get("", "n").expect("a number");
            if n >= 2 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "both placements wait for the trader's row ({n} waiting)"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        held.rollback().await.expect("the trader's USD let go");
    };
    let (first, second, ()) = tokio::join!(first, second, release);
    let mut placed = 0;
    for body in [first, second] {
        match body["data"]["placeOrder"]["status"].as_str() {
            Some("OPEN") => placed += 1,
            _ => assert_eq!(code(&body), "INSUFFICIENT_FUNDS", "{body}"),
        }
    }
    assert_eq!(desk.balance(&trader, "USD").await, (d("0"), d(&funds)));
    let after = counts().await;
    (placed, after.0 - before.0, after.1 - before.1)
}

/// Orders of several markets that wait together are placed in one transaction, each
/// as if placed alone: its market's trades at its market's prices, its market's last
/// price, volume and audit chain, and the price alerts its market's move crossed (and
/// no other market's). The placement task is held up by an outside
/// transaction holding BTC-USD's row while orders of three markets queue behind it;
/// once it lets go they go through as one batch spanning the three markets
/// (`tradegraph_order_batch_markets`).
async fn orders_of_several_markets_waiting_together_share_one_transaction(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let desk = Arc::new(desk);
    // (market, base, price, quantity, trades): each buy takes one resting sell whole;
    // BTC-USD gets two, the one that holds up the placement task and one more.
    let markets = [
        ("BTC-USD", "BTC", "20000", "0.01", 2),
        ("ETH-USD", "ETH", "2000", "0.1", 1),
        ("SOL-USD", "SOL", "200", "1", 1),
    ];
    let maker = desk
        .trader(&[("BTC", "1"), ("ETH", "1"), ("SOL", "10")])
        .await;
    // A first trade in each market at half the price, so that the batch's trades are
    // a move up from there; and an alert in each market above a price it has not
    // reached. Only ETH-USD's move (1000 to 2000) crosses its alert's 1500; SOL-USD's
    // alert is at 1500 too, but SOL-USD moves from 100 to 200.
    let watcher = desk.trader(&[("USD", "1000")]).await;
    for (market, _, price, quantity, _) in markets {
        let half = (d(price) / d("2")).to_string();
        let sell = json!({"market": market, "side": "SELL", "type": "LIMIT", "price": half, "quantity": quantity});
        let body = desk.place(&maker, sell).await;
        assert_eq!(body["data"]["placeOrder"]["status"], "OPEN", "{body}");
        let buy = json!({"market": market, "side": "BUY", "type": "LIMIT", "price": half, "quantity": quantity});
        let body = desk.place(&watcher, buy).await;
        assert_eq!(body["data"]["placeOrder"]["status"], "FILLED", "{body}");
        let above = if market == "BTC-USD" { "25000" } else { "1500" };
        let alert = json!({"market": market, "condition": "ABOVE", "price": above});
        let body = desk
            .app
            .gql(
                "mutation($i: CreatePriceAlertInput!) { createPriceAlert(input: $i) { id } }",
                json!({"i": alert}),
                Some(&watcher.access),
            )
            .await;
        assert!(body["data"]["createPriceAlert"]["id"].is_string(), "{body}");
    }
    for (market, _, price, quantity, trades) in markets {
        for _ in 0..trades {
            let sell = json!({"market": market, "side": "SELL", "type": "LIMIT", "price": price, "quantity": quantity});
            let body = desk.place(&maker, sell).await;
            assert_eq!(body["data"]["placeOrder"]["status"], "OPEN", "{body}");
        }
    }
    let taker = desk.trader(&[("USD", "10000")]).await;
    let batches = r#"tradegraph_order_batches_total{outcome="committed"} "#;
    let spans = "tradegraph_order_batch_markets_sum ";
    let (batches_before, spans_before) = (
        metric(&desk.app, batches).await,
        metric(&desk.app, spans).await,
    );

    let (_outside, held) = hold_market(&desk, "BTC-USD").await;
    let buy = |market: &str, price: &str, quantity: &str| {
        let (desk, taker) = (desk.clone(), taker.clone());
        let input = json!({"market": market, "side": "BUY", "type": "LIMIT", "price": price, "quantity": quantity});
        tokio::spawn(async move { desk.place(&taker, input).await })
    };
    // The first buy takes the placement task and waits for BTC-USD; the others queue.
    let first = buy("BTC-USD", "20000", "0.01");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut queued = Vec::new();
    for (market, _, price, quantity, _) in markets {
        queued.push(buy(market, price, quantity));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    held.rollback().await.expect("BTC-USD let go");

    // What the taker paid in fees, by asset received.
    let mut fees: HashMap<String, Decimal> = HashMap::new();
    for placed in std::iter::once(first).chain(queued) {
        let body = placed.await.expect("order task");
        let order = &body["data"]["placeOrder"];
        assert_eq!(order["status"], "FILLED", "{body}");
        for fill in order["fills"].as_array().expect("fills") {
            let asset = fill["feeAsset"].as_str().expect("a fee asset").to_owned();
            *fees.entry(asset).or_default() += dv(&fill["fee"]);
        }
    }
    assert_eq!(
        metric(&desk.app, batches).await - batches_before,
        1,
        "the queued orders are placed in one transaction"
    );
    assert_eq!(
        metric(&desk.app, spans).await - spans_before,
        3,
        "that transaction spans the three markets"
    );
    // Each market traded at its own price, every sell of its book taken.
    for (market, base, price, quantity, trades) in markets {
        let body = desk
            .app
            .gql(
                "query($s: String!) { market(symbol: $s) { lastPrice volume24h orderBook(depth: 5) { asks { price } } recentTrades { price } } }",
                json!({"s": market}),
                None,
            )
            .await;
        let row = &body["data"]["market"];
        let bought = d(quantity) * Decimal::from(trades);
        assert_eq!(dv(&row["lastPrice"]), d(price), "{body}");
        assert_eq!(dv(&row["volume24h"]), bought + d(quantity), "{body}");
        assert_eq!(row["orderBook"]["asks"], json!([]), "{body}");
        let prices: Vec<Decimal> = row["recentTrades"]
            .as_array()
            .expect("trades")
            .iter()
            .map(|trade| dv(&trade["price"]))
            .collect();
        let half = d(price) / d("2");
        let mut expected = vec![d(price); trades];
        expected.push(half);
        assert_eq!(prices, expected, "{body}");
        let fee = fees.get(base).copied().unwrap_or_default();
        assert!(fee > Decimal::ZERO, "a taker fee in {base}");
        assert_eq!(desk.balance(&taker, base).await, (bought - fee, d("0")));
    }
    let spent: Decimal = markets
        .iter()
        .map(|(_, _, price, quantity, trades)| d(price) * d(quantity) * Decimal::from(*trades))
        .sum();
    assert_eq!(
        desk.balance(&taker, "USD").await,
        (d("10000") - spent, d("0"))
    );
    let alerts = desk
        .app
        .gql(
            "{ priceAlerts { market lastTriggeredAt } }",
            json!({}),
            Some(&watcher.access),
        )
        .await;
    let mut fired: Vec<&str> = alerts["data"]["priceAlerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| !a["lastTriggeredAt"].is_null())
        .filter_map(|a| a["market"].as_str())
        .collect();
    fired.sort_unstable();
    assert_eq!(fired, ["ETH-USD"], "{alerts}");
    desk.ledger_ok().await;
}

/// A market's rules are kept in process once an order has used them, its trading status
/// is not: halting a market refuses the next orders (placed, previewed or amended; an
/// invalid one is refused for the halt before its input is judged, as an unknown market
/// is refused before anything else), and resuming it accepts them again.
async fn halted_markets_refuse_orders_until_resumed(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    const PREVIEW: &str = "mutation($i: PlaceOrderInput!) { previewOrder(input: $i) { accepted } }";
    const AMEND: &str =
        "mutation($id: ID!, $i: AmendOrderInput!) { amendOrder(id: $id, input: $i) { price } }";
    let trader = desk.trader(&[("USD", "100000")]).await;
    let first = desk.place(&trader, limit("BUY", "30000", "0.01")).await;
    assert_eq!(first["data"]["placeOrder"]["status"], "OPEN", "{first}");
    let resting = first["data"]["placeOrder"]["id"].clone();
    let set_halted = |halted: bool| {
        let desk = &desk;
        async move {
            let field = if halted { "haltMarket" } else { "resumeMarket" };
            let body = desk
                .app
                .gql(
                    &format!("mutation {{ {field}(symbol: \"BTC-USD\") {{ status }} }}"),
                    json!({}),
                    Some(&desk.admin.access),
                )
                .await;
            let status = if halted { "HALTED" } else { "TRADING" };
            assert_eq!(body["data"][field]["status"], status, "{body}");
        }
    };

    set_halted(true).await;
    let off_tick = limit("BUY", "30000.001", "0.01");
    for input in [limit("BUY", "30000", "0.01"), off_tick.clone()] {
        let body = desk.place(&trader, input.clone()).await;
        assert_eq!(code(&body), "CONFLICT", "{body}");
        assert_eq!(
            body["errors"][0]["message"], "market BTC-USD is halted",
            "{body}"
        );
        let preview = desk
            .app
            .gql(PREVIEW, json!({"i": input}), Some(&trader.access))
            .await;
        assert_eq!(code(&preview), "CONFLICT", "{preview}");
    }
    let amend = desk
        .app
        .gql(
            AMEND,
            json!({"id": resting, "i": {"price": "29000"}}),
            Some(&trader.access),
        )
        .await;
    assert_eq!(code(&amend), "CONFLICT", "{amend}");
    let unknown = json!({"market": "NOPE-USD", "side": "BUY", "type": "LIMIT", "price": "1", "quantity": "1"});
    let body = desk.place(&trader, unknown).await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "input.market",
        "{body}"
    );

    set_halted(false).await;
    let body = desk.place(&trader, limit("BUY", "30000", "0.01")).await;
    assert_eq!(body["data"]["placeOrder"]["status"], "OPEN", "{body}");
    let body = desk.place(&trader, off_tick.clone()).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    let preview = desk
        .app
        .gql(
            PREVIEW,
            json!({"i": limit("BUY", "30000", "0.01")}),
            Some(&trader.access),
        )
        .await;
    assert_eq!(
        preview["data"]["previewOrder"]["accepted"], true,
        "{preview}"
    );
    let amend = desk
        .app
        .gql(
            AMEND,
            json!({"id": resting, "i": {"price": "29000"}}),
            Some(&trader.access),
        )
        .await;
    assert_eq!(amend["data"]["amendOrder"]["price"], "29000", "{amend}");
    let (available, locked) = desk.balance(&trader, "USD").await;
    assert_eq!((available, locked), (d("100000") - d("590"), d("590")));
    desk.ledger_ok().await;
}
