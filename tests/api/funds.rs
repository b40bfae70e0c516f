//! Assets, markets, deposits, balances, the ledger statement and its consistency.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{code, email, Auth, Backend, TestApp};

const DEPOSIT: &str = "mutation($i: CreditDepositInput!) { creditDeposit(input: $i) { id kind amount reference asset { symbol } } }";
const BALANCES: &str = "{ balances { asset { symbol } available locked total } }";

both_backends!(
    demo_markets_are_seeded_and_public,
    admins_manage_assets_and_markets,
    deposits_are_idempotent_and_exact,
    decimals_must_be_strings_within_precision,
    ledger_statement_pages_newest_first,
    concurrent_random_deposits_keep_the_books_balanced,
    the_ledger_check_follows_each_account_s_running_balance,
);

async fn admin_app(backend: Backend) -> Option<(TestApp, Auth)> {
    TestApp::spawn_with_admin(backend).await
}

fn balance_of(body: &Value, asset: &str) -> (String, String) {
    let row = body["data"]["balances"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["asset"]["symbol"] == asset))
        .unwrap_or_else(|| panic!("no {asset} balance: {body}"));
    (
        row["available"].as_str().unwrap_or_default().to_owned(),
        row["total"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn demo_markets_are_seeded_and_public(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = app.gql("{ assets { symbol precision } markets { symbol baseAsset { symbol } quoteAsset { symbol } tickSize lotSize status lastPrice } }", json!({}), None).await;
    let symbols: Vec<&str> = body["data"]["markets"]
        .as_array()
        .expect("markets")
        .iter()
        .filter_map(|m| m["symbol"].as_str())
        .collect();
    assert_eq!(
        symbols,
        ["BTC-USD", "ETH-BTC", "ETH-USD", "SOL-USD"],
        "{body}"
    );
    let assets: Vec<&str> = body["data"]["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .filter_map(|a| a["symbol"].as_str())
        .collect();
    assert_eq!(assets, ["BTC", "ETH", "SOL", "USD", "USDT"]);
    let one = app.gql("{ market(symbol: \"eth-btc\") { symbol baseAsset { symbol } quoteAsset { symbol } tickSize } }", json!({}), None).await;
    assert_eq!(
        one["data"]["market"]["quoteAsset"]["symbol"], "BTC",
        "{one}"
    );
    assert_eq!(one["data"]["market"]["tickSize"], "0.00001");
    let none = app
        .gql(
            "{ market(symbol: \"NOPE-USD\") { symbol } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(none["data"]["market"], Value::Null);
}

async fn admins_manage_assets_and_markets(backend: Backend) {
    let Some((app, admin)) = admin_app(backend).await else {
        return;
    };
    let user = app.register(&email("user")).await;
    let create_asset =
        "mutation($i: CreateAssetInput!) { createAsset(input: $i) { symbol name precision } }";
    let create_market = "mutation($i: CreateMarketInput!) { createMarket(input: $i) { symbol status makerFeeBps tickSize } }";

    let denied = app
        .gql(
            create_asset,
            json!({"i": {"symbol": "DOGE", "name": "Doge", "precision": 4}}),
            Some(&user.access),
        )
        .await;
    assert_eq!(code(&denied), "FORBIDDEN");
    let made = app
        .gql(
            create_asset,
            json!({"i": {"symbol": "doge", "name": "Doge", "precision": 4}}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(made["data"]["createAsset"]["symbol"], "DOGE", "{made}");
    let again = app
        .gql(
            create_asset,
            json!({"i": {"symbol": "DOGE", "name": "Doge", "precision": 4}}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(code(&again), "CONFLICT");
    let bad = app
        .gql(
            create_asset,
            json!({"i": {"symbol": "D", "name": "Doge", "precision": 40}}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(
        bad["errors"][0]["extensions"]["field"], "input.symbol",
        "{bad}"
    );

    let market = json!({"i": {"baseAsset": "DOGE", "quoteAsset": "USD", "tickSize": "0.0001", "lotSize": "1", "minNotional": "1"}});
    let too_fine = app
        .gql(create_market, market.clone(), Some(&admin.access))
        .await;
    assert_eq!(
        too_fine["errors"][0]["extensions"]["field"], "input.tickSize",
        "USD has 2 decimals: {too_fine}"
    );
    let market = json!({"i": {"baseAsset": "DOGE", "quoteAsset": "USD", "tickSize": "0.01", "lotSize": "1", "minNotional": "1"}});
    let made = app
        .gql(create_market, market.clone(), Some(&admin.access))
        .await;
    assert_eq!(made["data"]["createMarket"]["symbol"], "DOGE-USD", "{made}");
    assert_eq!(made["data"]["createMarket"]["makerFeeBps"], 10);
    assert_eq!(
        code(&app.gql(create_market, market, Some(&admin.access)).await),
        "CONFLICT"
    );
    let unknown = json!({"i": {"baseAsset": "NOPE", "quoteAsset": "USD", "tickSize": "0.01", "lotSize": "1", "minNotional": "1"}});
    let body = app.gql(create_market, unknown, Some(&admin.access)).await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "input.baseAsset");

    let halt = app
        .gql(
            "mutation { haltMarket(symbol: \"doge-usd\") { status } }",
            json!({}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(halt["data"]["haltMarket"]["status"], "HALTED", "{halt}");
    let resume = app
        .gql(
            "mutation { resumeMarket(symbol: \"DOGE-USD\") { status } }",
            json!({}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(resume["data"]["resumeMarket"]["status"], "TRADING");
    let missing = app
        .gql(
            "mutation { haltMarket(symbol: \"NOPE-USD\") { status } }",
            json!({}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(code(&missing), "NOT_FOUND");
    let denied = app
        .gql(
            "mutation { haltMarket(symbol: \"BTC-USD\") { status } }",
            json!({}),
            Some(&user.access),
        )
        .await;
    assert_eq!(code(&denied), "FORBIDDEN");
}

async fn deposits_are_idempotent_and_exact(backend: Backend) {
    let Some((app, admin)) = admin_app(backend).await else {
        return;
    };
    let user = app.register(&email("depositor")).await;
    let deposit = |amount: &str, reference: &str| json!({"i": {"userId": user.user_id, "asset": "btc", "amount": amount, "reference": reference}});

    let first = app
        .gql(
            DEPOSIT,
            deposit("0.10000000", "chain-tx-1"),
            Some(&admin.access),
        )
        .await;
    assert_eq!(first["data"]["creditDeposit"]["amount"], "0.1", "{first}");
    assert_eq!(first["data"]["creditDeposit"]["kind"], "DEPOSIT");
    let repeat = app
        .gql(DEPOSIT, deposit("0.1", "chain-tx-1"), Some(&admin.access))
        .await;
    assert_eq!(
        repeat["data"]["creditDeposit"]["id"], first["data"]["creditDeposit"]["id"],
        "idempotent: {repeat}"
    );
    let clash = app
        .gql(DEPOSIT, deposit("0.2", "chain-tx-1"), Some(&admin.access))
        .await;
    assert_eq!(code(&clash), "CONFLICT");
    app.gql(DEPOSIT, deposit("0.2", "chain-tx-2"), Some(&admin.access))
        .await;

    // 0.1 + 0.2 is exactly 0.3 here, as money must be.
    let balances = app.gql(BALANCES, json!({}), Some(&user.access)).await;
    assert_eq!(balance_of(&balances, "BTC"), ("0.3".into(), "0.3".into()));
    assert_eq!(balance_of(&balances, "USD"), ("0".into(), "0".into()));

    let denied = app
        .gql(DEPOSIT, deposit("1", "chain-tx-3"), Some(&user.access))
        .await;
    assert_eq!(code(&denied), "FORBIDDEN");
    let nobody = json!({"i": {"userId": uuid::Uuid::new_v4(), "asset": "BTC", "amount": "1", "reference": "x"}});
    assert_eq!(
        code(&app.gql(DEPOSIT, nobody, Some(&admin.access)).await),
        "NOT_FOUND"
    );
    let check = app
        .gql(
            "{ ledgerCheck { ok accountsChecked entriesChecked problems } }",
            json!({}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(check["data"]["ledgerCheck"]["ok"], true, "{check}");
    assert_eq!(check["data"]["ledgerCheck"]["entriesChecked"], 2);
    assert_eq!(
        code(
            &app.gql("{ ledgerCheck { ok } }", json!({}), Some(&user.access))
                .await
        ),
        "FORBIDDEN"
    );
}

async fn decimals_must_be_strings_within_precision(backend: Backend) {
    let Some((app, admin)) = admin_app(backend).await else {
        return;
    };
    let user = app.register(&email("decimals")).await;
    let with_amount = |amount: Value, asset: &str| json!({"i": {"userId": user.user_id, "asset": asset, "amount": amount, "reference": uuid::Uuid::new_v4().to_string()}});
    let cases = [
        (json!(0.1), "BTC", "a JSON number"),
        (json!(1), "BTC", "a JSON integer"),
        (json!("1e3"), "BTC", "an exponent"),
        (json!("1000000000000000000000000000000"), "BTC", "1e30"),
        (
            json!(format!("0.{}1", "0".repeat(39))),
            "BTC",
            "40 decimal places",
        ),
        (json!("0.001"), "USD", "more places than USD allows"),
        (json!("-5"), "BTC", "a negative amount"),
        (json!("0"), "BTC", "zero"),
        (json!("abc"), "BTC", "not a number"),
    ];
    for (amount, asset, why) in cases {
        let (status, body) = app
            .post(
                json!({"query": DEPOSIT, "variables": with_amount(amount, asset)}),
                Some(&admin.access),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{why}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["field"], "input.amount",
            "{why}: {body}"
        );
        assert!(status == 200 || status == 400, "{why}: {status}");
    }
    // A number written in the query text itself is refused too.
    let inline = format!(
        "mutation {{ creditDeposit(input: {{userId: \"{}\", asset: \"BTC\", amount: 0.5, reference: \"inline\"}}) {{ id }} }}",
        user.user_id
    );
    let body = app.gql(&inline, json!({}), Some(&admin.access)).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    let balances = app.gql(BALANCES, json!({}), Some(&user.access)).await;
    assert_eq!(balance_of(&balances, "BTC").1, "0", "nothing was written");
}

async fn ledger_statement_pages_newest_first(backend: Backend) {
    let Some((app, admin)) = admin_app(backend).await else {
        return;
    };
    let user = app.register(&email("statement")).await;
    let other = app.register(&email("other")).await;
    for i in 1..=5 {
        let variables = json!({"i": {"userId": user.user_id, "asset": "ETH", "amount": format!("{i}"), "reference": format!("eth-{i}")}});
        app.gql(DEPOSIT, variables, Some(&admin.access)).await;
    }
    app.gql(DEPOSIT, json!({"i": {"userId": user.user_id, "asset": "USD", "amount": "10.25", "reference": "usd-1"}}), Some(&admin.access)).await;
    let page = "query($after: String, $asset: String) { ledger(first: 2, after: $after, filter: {asset: $asset}) { edges { cursor node { amount reference } } pageInfo { hasNextPage endCursor } } }";

    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let body = app
            .gql(
                page,
                json!({"after": after, "asset": "ETH"}),
                Some(&user.access),
            )
            .await;
        let ledger = &body["data"]["ledger"];
        for edge in ledger["edges"].as_array().expect("edges") {
            seen.push(
                edge["node"]["reference"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        if ledger["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = ledger["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, ["eth-5", "eth-4", "eth-3", "eth-2", "eth-1"]);
    let others = app
        .gql(
            "{ ledger { edges { node { id } } } }",
            json!({}),
            Some(&other.access),
        )
        .await;
    assert_eq!(
        others["data"]["ledger"]["edges"],
        json!([]),
        "another user's entries stay private"
    );
    let too_many = app
        .gql(
            "{ ledger(first: 201) { edges { cursor } } }",
            json!({}),
            Some(&user.access),
        )
        .await;
    assert_eq!(
        (
            code(&too_many),
            too_many["errors"][0]["extensions"]["field"].as_str()
        ),
        ("BAD_USER_INPUT", Some("first"))
    );
    let bad_cursor = app
        .gql(
            "{ ledger(after: \"garbage\") { edges { cursor } } }",
            json!({}),
            Some(&user.access),
        )
        .await;
    assert_eq!(code(&bad_cursor), "BAD_USER_INPUT");
}

/// Random deposits from many concurrent requests, some repeating references: every
/// balance is exactly the sum of the distinct deposits, and the ledger check agrees.
async fn concurrent_random_deposits_keep_the_books_balanced(backend: Backend) {
    use rand::{Rng, SeedableRng};
    let Some((app, admin)) = admin_app(backend).await else {
        return;
    };
    let app = Arc::new(app);
    let users: Vec<Auth> = futures_util::future::join_all((0..3).map(|i| {
        let app = app.clone();
        async move { app.register(&email(&format!("random{i}"))).await }
    }))
    .await;
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut expected = vec![Decimal::ZERO; users.len()];
    let mut requests = Vec::new();
    for n in 0..40 {
        let who = rng.gen_range(0..users.len());
        let amount = Decimal::new(rng.gen_range(1..10_000_000_000i64), rng.gen_range(0..=8));
        expected[who] += amount;
        let variables = json!({"i": {"userId": users[who].user_id, "asset": "BTC", "amount": amount.to_string(), "reference": format!("r-{seed}-{n}")}});
        requests.push(variables.clone());
        if rng.gen_bool(0.3) {
            requests.push(variables);
        }
    }
    let tasks = requests.into_iter().map(|variables| {
        let (app, token) = (app.clone(), admin.access.clone());
        async move { app.gql(DEPOSIT, variables, Some(&token)).await }
    });
    for body in futures_util::future::join_all(tasks).await {
        assert!(
            body["data"]["creditDeposit"].is_object(),
            "seed {seed}: {body}"
        );
    }
    for (user, expected) in users.iter().zip(expected) {
        let balances = app.gql(BALANCES, json!({}), Some(&user.access)).await;
        let total: Decimal = balance_of(&balances, "BTC").1.parse().expect("decimal");
        assert_eq!(total, expected, "seed {seed}");
    }
    let check = app
        .gql(
            "{ ledgerCheck { ok problems } }",
            json!({}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(
        check["data"]["ledgerCheck"]["ok"], true,
        "seed {seed}: {check}"
    );
}

/// `ledgerCheck` holds each posting's stored balance after it to the account's other
/// postings: the balances before the postings and the account's balance now must be
/// the balances after them and the opening zero. A posting whose balance after was
/// changed breaks that, though every sum still agrees.
async fn the_ledger_check_follows_each_account_s_running_balance(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let Some((app, admin)) = admin_app(backend).await else {
        return;
    };
    let user = app.register(&email("running")).await;
    for (amount, reference) in [("1.5", "run-1"), ("2.25", "run-2")] {
        let variables = json!({"i": {"userId": user.user_id, "asset": "BTC", "amount": amount, "reference": reference}});
        let body = app.gql(DEPOSIT, variables, Some(&admin.access)).await;
        assert!(body["data"]["creditDeposit"].is_object(), "{body}");
    }
    let check = || async {
        app.gql(
            "{ ledgerCheck { ok problems } }",
            json!({}),
            Some(&admin.access),
        )
        .await["data"]["ledgerCheck"]
            .clone()
    };
    assert_eq!(check().await["ok"], true);
    let db = sea_orm::Database::connect(app.database_url.clone())
        .await
        .expect("db");
    db.execute_unprepared("UPDATE postings SET balance_after = '1.75' WHERE amount = '1.5'")
        .await
        .expect("a posting changed");
    let report = check().await;
    assert_eq!(report["ok"], false, "{report}");
    let problems = report["problems"].to_string();
    assert!(problems.contains("do not chain from zero"), "{problems}");
}
