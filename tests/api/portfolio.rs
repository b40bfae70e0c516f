//! Portfolio end to end: positions and P&L under the four methods from real trades,
//! cross rates and unpriced assets, tax report, performance, fill history, the number
//! of SQL statements of nested history queries, and the live portfolio value.

use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{code, email, Auth, Backend, Frame, TestApp};

both_backends!(
    portfolio_pnl_is_exact_under_every_method,
    cross_rates_unpriced_assets_and_deposit_costs,
    fills_history_pages_and_filters,
    nested_history_queries_do_not_grow_with_page_size,
    portfolio_value_is_pushed_when_prices_move,
    random_concurrent_trading_keeps_pnl_state_consistent,
    trades_are_folded_in_after_commit_without_a_read,
    a_deposit_folds_in_earlier_trades_before_itself,
    another_replica_sweeps_up_trades_left_behind,
);

/// PostgreSQL holds a placement's P&L changes and works them out for all of its trades
/// at once, from lots read a page at a time; SQLite writes them trade by trade. The
/// same trades must leave the same state: here a trader builds up more lots than one
/// read holds, then sells through them in an order that trades with several makers, so
/// the held state has to read further part-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pnl_state_is_the_same_when_worked_out_trade_by_trade_or_together() {
    let Some(on_postgres) = trade_through_many_lots(Backend::Postgres).await else {
        return;
    };
    let on_sqlite = trade_through_many_lots(Backend::Sqlite)
        .await
        .expect("SQLite is always there");
    assert_eq!(on_postgres.len(), on_sqlite.len());
    for ((what, pg), (_, lite)) in on_postgres.iter().zip(&on_sqlite) {
        assert_eq!(pg, lite, "{what}: PostgreSQL {pg} against SQLite {lite}");
    }
}

/// Plays the script and returns, per method, the buyer's and sellers' portfolios and
/// the buyer's tax report figures.
async fn trade_through_many_lots(backend: Backend) -> Option<Vec<(String, Value)>> {
    let desk = Desk::new(backend).await?;
    let (a, s) = (desk.user().await, desk.user().await);
    desk.deposit(&a, "USD", "1000000").await;
    desk.deposit(&s, "BTC", "100").await;
    desk.deposit(&s, "USD", "1000000").await;
    // 40 lots at scattered prices, half bought as maker and half as taker (different
    // fees), so FIFO, LIFO and HIFO each consume them in another order.
    for i in 0..40 {
        let price = (20_000 + (i * 37 % 23) * 10).to_string();
        if i % 2 == 0 {
            desk.trade(&s, &a, "BTC-USD", "SELL", "0.01", &price).await;
        } else {
            desk.trade(&a, &s, "BTC-USD", "BUY", "0.01", &price).await;
        }
    }
    // One sell through three makers: about 35 lots, more than the first read of 32.
    desk.limit(&s, "BTC-USD", "BUY", "0.1", "21000").await;
    desk.limit(&s, "BTC-USD", "BUY", "0.1", "20990").await;
    desk.limit(&s, "BTC-USD", "BUY", "0.15", "20980").await;
    desk.limit(&a, "BTC-USD", "SELL", "0.35", "20980").await;
    desk.trade(&a, &s, "BTC-USD", "SELL", "0.04", "21500").await;

    let mut seen = Vec::new();
    for method in ["FIFO", "LIFO", "HIFO", "AVERAGE_COST"] {
        for (who, auth) in [("buyer", &a), ("seller", &s)] {
            let p = desk.portfolio(auth, "USD", method).await;
            seen.push((format!("{method} {who}"), p));
        }
        let report = desk
            .app
            .gql(
                "query($m: CostBasisMethod!, $y: Int!) { taxReport(method: $m, year: $y) { totalGain totalCostBasis lots { quantity proceeds costBasis gain } } }",
                json!({"m": method, "y": chrono::Utc::now().format("%Y").to_string().parse::<i32>().unwrap_or(2026)}),
                Some(&a.access),
            )
            .await;
        assert!(report["errors"].is_null(), "{report}");
        let lots = report["data"]["taxReport"]["lots"]
            .as_array()
            .map_or(0, Vec::len);
        if method != "AVERAGE_COST" {
            assert!(
                lots > 32,
                "{method}: the sale went past one read of lots: {report}"
            );
        }
        seen.push((format!("{method} tax report"), report["data"].clone()));
    }
    Some(seen)
}

const DEPOSIT: &str = "mutation($i: CreditDepositInput!) { creditDeposit(input: $i) { id } }";
const PLACE: &str =
    "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status fills { fee } } }";
const PORTFOLIO: &str = "query($q: String!, $m: CostBasisMethod!) { portfolio(quoteAsset: $q, method: $m) { quoteAsset totalValue totalCost unrealizedPnl realizedPnl fullyPriced positions { asset { symbol } quantity available locked priced price value allocation costBasis averageCost unrealizedPnl realizedPnl unknownCostQuantity } } }";

fn d(s: &str) -> Decimal {
    s.parse().unwrap_or_else(|_| panic!("not a decimal: {s:?}"))
}

fn dv(v: &Value) -> Decimal {
    d(v.as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}")))
}

struct Desk {
    app: TestApp,
    admin: Auth,
}

impl Desk {
    async fn new(backend: Backend) -> Option<Desk> {
        Self::with(backend, &[]).await
    }

    async fn with(backend: Backend, extra: &[(&str, &str)]) -> Option<Desk> {
        let (app, admin) = TestApp::spawn_with_admin_and(backend, extra).await?;
        Some(Desk { app, admin })
    }

    /// A seller and a buyer, funded, and 0.5 BTC sold at 20,000 (the buyer's cost
    /// basis is then exactly 10,000). Returns (seller, buyer).
    async fn half_a_bitcoin_changes_hands(&self) -> (Auth, Auth) {
        let (s, b) = (self.user().await, self.user().await);
        self.deposit(&s, "BTC", "1").await;
        self.deposit(&b, "USD", "100000").await;
        self.trade(&s, &b, "BTC-USD", "SELL", "0.5", "20000").await;
        (s, b)
    }

    /// How far `who`'s P&L state has followed their order events, and the last event,
    /// read from the database itself (not through a read that would catch them up).
    async fn followed(&self, who: &Auth) -> (i64, i64) {
        use sea_orm::EntityTrait;
        let db = sea_orm::Database::connect(self.app.database_url.clone())
            .await
            .expect("database");
        let user: uuid::Uuid = who.user_id.parse().expect("user id");
        let cursor = entity::portfolio_cursors::Entity::find_by_id(user)
            .one(&db)
            .await
            .expect("cursor")
            .map_or(0, |c| c.last_sequence);
        let last = entity::user_sequences::Entity::find_by_id(user)
            .one(&db)
            .await
            .expect("sequence")
            .map_or(0, |s| s.last_sequence);
        db.close().await.expect("closed");
        (cursor, last)
    }

    /// Waits (up to `secs`) until `who`'s P&L state has followed all their events.
    async fn wait_followed(&self, who: &Auth, secs: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let (cursor, last) = self.followed(who).await;
            if cursor == last {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "P&L still at event {cursor} of {last} after {secs} s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn user(&self) -> Auth {
        self.app.register(&email("pf")).await
    }

    async fn deposit(&self, who: &Auth, asset: &str, amount: &str) {
        let variables = json!({"i": {"userId": who.user_id, "asset": asset, "amount": amount, "reference": uuid::Uuid::new_v4().to_string()}});
        let body = self
            .app
            .gql(DEPOSIT, variables, Some(&self.admin.access))
            .await;
        assert!(body["data"]["creditDeposit"].is_object(), "{body}");
    }

    async fn limit(&self, who: &Auth, market: &str, side: &str, quantity: &str, price: &str) {
        let input = json!({"market": market, "side": side, "type": "LIMIT", "quantity": quantity, "price": price});
        let body = self
            .app
            .gql(PLACE, json!({"i": input}), Some(&who.access))
            .await;
        assert!(body["data"]["placeOrder"]["id"].is_string(), "{body}");
    }

    /// `who` sells to `buyer` at `price`: `who` rests, `buyer` takes.
    async fn trade(
        &self,
        maker: &Auth,
        taker: &Auth,
        market: &str,
        maker_side: &str,
        quantity: &str,
        price: &str,
    ) {
        let taker_side = if maker_side == "SELL" { "BUY" } else { "SELL" };
        self.limit(maker, market, maker_side, quantity, price).await;
        self.limit(taker, market, taker_side, quantity, price).await;
    }

    async fn portfolio(&self, who: &Auth, quote: &str, method: &str) -> Value {
        let body = self
            .app
            .gql(
                PORTFOLIO,
                json!({"q": quote, "m": method}),
                Some(&who.access),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["portfolio"].clone()
    }
}

fn position<'a>(portfolio: &'a Value, asset: &str) -> &'a Value {
    portfolio["positions"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["asset"]["symbol"] == asset))
        .unwrap_or_else(|| panic!("no {asset} position in {portfolio}"))
}

/// A buys 1 BTC at 20,000 and 1 at 30,000 as taker (fee 0.2 % in BTC: 0.998 arrive
/// each time), then sells 1.5 at 40,000 as maker (fee 0.1 % in USD: proceeds 59,940).
/// Worked by hand:
/// - FIFO: the 20,000 lot (0.998) and 0.502 of the 30,000 lot (15,090.18036...):
///   realized 24,849.82, left 0.496 costing 14,909.82, unrealized 4,930.18.
/// - LIFO = HIFO here: the 30,000 lot and 0.502 of the 20,000 lot (10,060.12...):
///   realized 19,879.88, cost left 9,939.88, unrealized 9,900.12.
/// - AVERAGE_COST: 50,000 / 1.996 a unit; 1.5 cost 37,575.15: realized 22,364.85,
///   cost left 12,424.85, unrealized 7,415.15.
///
/// Realized + unrealized is 29,780 under each (= 59,940 + 0.496 × 40,000 − 50,000).
async fn portfolio_pnl_is_exact_under_every_method(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let (a, s) = (desk.user().await, desk.user().await);
    desk.deposit(&a, "USD", "100000").await;
    desk.deposit(&s, "BTC", "10").await;
    desk.deposit(&s, "USD", "20000").await;
    desk.trade(&s, &a, "BTC-USD", "SELL", "1", "20000").await;
    desk.trade(&s, &a, "BTC-USD", "SELL", "1", "30000").await;
    desk.trade(&a, &s, "BTC-USD", "SELL", "1.5", "40000").await;

    let expected = [
        ("FIFO", "24849.82", "14909.82", "4930.18"),
        ("LIFO", "19879.88", "9939.88", "9900.12"),
        ("HIFO", "19879.88", "9939.88", "9900.12"),
        ("AVERAGE_COST", "22364.85", "12424.85", "7415.15"),
    ];
    for (method, realized, cost, unrealized) in expected {
        let p = desk.portfolio(&a, "USD", method).await;
        let btc = position(&p, "BTC");
        assert_eq!(dv(&btc["quantity"]), d("0.496"), "{p}");
        assert_eq!(dv(&btc["price"]), d("40000"));
        assert_eq!(dv(&btc["value"]), d("19840.00"));
        assert_eq!(dv(&btc["realizedPnl"]), d(realized), "{method}: {p}");
        assert_eq!(dv(&btc["costBasis"]), d(cost), "{method}: {p}");
        assert_eq!(dv(&btc["unrealizedPnl"]), d(unrealized), "{method}: {p}");
        assert_eq!(dv(&btc["unknownCostQuantity"]), Decimal::ZERO);
        let total = dv(&btc["realizedPnl"]) + dv(&btc["unrealizedPnl"]);
        assert_eq!(total, d("29780.00"), "{method}");
        let usd = position(&p, "USD");
        assert_eq!(dv(&usd["quantity"]), d("109940"));
        assert_eq!(dv(&usd["unrealizedPnl"]), d("0"));
        assert_eq!(dv(&p["totalValue"]), d("129780.00"));
        assert_eq!(dv(&p["realizedPnl"]), d(realized));
        let allocation = dv(&btc["allocation"]) + dv(&usd["allocation"]);
        assert!((allocation - Decimal::ONE).abs() <= d("0.000001"), "{p}");
        assert_eq!(p["fullyPriced"], true);
    }

    // The tax report of this year: the realized pieces sum to the realized P&L.
    let year = chrono::Datelike::year(&chrono::Utc::now());
    let tax = "query($y: Int!, $m: CostBasisMethod!) { taxReport(year: $y, method: $m) { year method quoteAsset totalProceeds totalCostBasis totalGain shortTermGain longTermGain lots { asset quantity acquiredAt disposedAt proceeds costBasis gain longTerm } csv } }";
    for (method, realized, _, _) in expected {
        let body = desk
            .app
            .gql(tax, json!({"y": year, "m": method}), Some(&a.access))
            .await;
        let report = &body["data"]["taxReport"];
        assert_eq!(dv(&report["totalGain"]), d(realized), "{method}: {body}");
        assert_eq!(dv(&report["totalProceeds"]), d("59940.00"), "{method}");
        assert_eq!(dv(&report["shortTermGain"]), d(realized));
        let lots = report["lots"].as_array().cloned().unwrap_or_default();
        let quantity: Decimal = lots.iter().map(|l| dv(&l["quantity"])).sum();
        assert_eq!(quantity, d("1.5"), "{method}: {body}");
        assert!(lots
            .iter()
            .all(|l| l["asset"] == "BTC" && l["longTerm"] == false));
        let csv = report["csv"].as_str().unwrap_or_default();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("asset,quantity,acquired_at,disposed_at,proceeds,cost_basis,gain,long_term")
        );
        assert_eq!(lines.count(), lots.len());
    }
    let none = desk
        .app
        .gql(tax, json!({"y": year - 1, "m": "FIFO"}), Some(&a.access))
        .await;
    assert_eq!(
        dv(&none["data"]["taxReport"]["totalGain"]),
        d("0"),
        "{none}"
    );

    // Performance: the deposit is the only flow; every trade since then is growth.
    let perf = "{ portfolio { performance(interval: DAY) { points { at value } timeWeightedReturn moneyWeightedReturn netDeposits } } }";
    let body = desk.app.gql(perf, json!({}), Some(&a.access)).await;
    let performance = &body["data"]["portfolio"]["performance"];
    assert_eq!(dv(&performance["netDeposits"]), d("100000.00"), "{body}");
    let points = performance["points"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(points.len(), 31, "{body}");
    assert_eq!(dv(&points[0]["value"]), d("0"));
    assert_eq!(dv(&points[30]["value"]), d("129780.00"), "{body}");
    assert_eq!(
        dv(&performance["timeWeightedReturn"]),
        d("0.2978"),
        "{body}"
    );
    let bad = desk
        .app
        .gql("{ portfolio { performance(interval: HOUR, from: \"2000-01-01T00:00:00Z\") { netDeposits } } }", json!({}), Some(&a.access))
        .await;
    assert_eq!(code(&bad), "BAD_USER_INPUT", "{bad}");

    // The seller's 10 BTC were deposited before BTC had a price: unknown cost, not
    // zero. It sold 2 of them (gain unknown, so nothing realized) and bought 1.5 back
    // (1.497 after the fee) for 60,000: that part has a known cost.
    let p = desk.portfolio(&s, "USD", "FIFO").await;
    let btc = position(&p, "BTC");
    assert_eq!(dv(&btc["quantity"]), d("9.497"), "{p}");
    assert_eq!(dv(&btc["unknownCostQuantity"]), d("8"), "{p}");
    assert_eq!(dv(&btc["costBasis"]), d("60000.00"), "{p}");
    assert_eq!(dv(&btc["realizedPnl"]), d("0"), "{p}");
    // Unrealized P&L covers the known-cost part only: 1.497 × 40,000 − 60,000.
    assert_eq!(dv(&btc["unrealizedPnl"]), d("-120.00"), "{p}");
}

/// ETH is priced through ETH-BTC × BTC-USD; SOL has no market with a price and is
/// marked unpriced, not valued at zero; a deposit made once BTC has a price costs its
/// value at that moment; a trade in ETH-BTC costs the BTC spent, in USD.
/// The replica that placed a trade folds both traders' fills into P&L state right
/// after commit, with nobody reading their portfolio.
async fn trades_are_folded_in_after_commit_without_a_read(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let (s, b) = desk.half_a_bitcoin_changes_hands().await;
    for who in [&s, &b] {
        desk.wait_followed(who, 10).await;
        let (cursor, _) = desk.followed(who).await;
        assert!(
            cursor >= 2,
            "an order event and a fill event at least: {cursor}"
        );
    }
    let b_portfolio = desk.portfolio(&b, "USD", "FIFO").await;
    assert_eq!(dv(&position(&b_portfolio, "BTC")["costBasis"]), d("10000"));
}

/// A deposit is folded in after the trades before it: here a sale that emptied the
/// holding, then a deposit at a higher price. With no follower on this server the
/// sale is still pending when the deposit arrives, so only the deposit's own
/// catching up puts it first; the other way round, LIFO would sell the later lot.
async fn a_deposit_folds_in_earlier_trades_before_itself(backend: Backend) {
    let Some(desk) = Desk::with(backend, &[("PNL_FOLLOWER", "false")]).await else {
        return;
    };
    let (x, y, a, s) = (
        desk.user().await,
        desk.user().await,
        desk.user().await,
        desk.user().await,
    );
    desk.deposit(&x, "BTC", "1").await;
    desk.deposit(&y, "USD", "100000").await;
    desk.deposit(&s, "USD", "100000").await;
    desk.trade(&x, &y, "BTC-USD", "SELL", "0.01", "20000").await;
    desk.deposit(&a, "BTC", "1").await; // at 20000
    desk.trade(&a, &s, "BTC-USD", "SELL", "1", "20000").await;
    desk.trade(&x, &y, "BTC-USD", "SELL", "0.01", "30000").await;
    let (cursor, last) = desk.followed(&a).await;
    assert!(
        cursor < last,
        "the sale is not folded in yet: {cursor} of {last}"
    );
    desk.deposit(&a, "BTC", "1").await; // at 30000
    let (cursor, last) = desk.followed(&a).await;
    assert_eq!(cursor, last, "the deposit folded in the sale first");
    let lifo = desk.portfolio(&a, "USD", "LIFO").await;
    let btc = position(&lifo, "BTC");
    assert_eq!(dv(&btc["quantity"]), d("1"), "{lifo}");
    assert_eq!(dv(&btc["costBasis"]), d("30000"), "{lifo}");
    // The sale realized its fee only (bought and sold at 20000), not 10000 less.
    let realized = dv(&btc["realizedPnl"]);
    assert!(realized <= Decimal::ZERO && realized > d("-100"), "{lifo}");
}

/// A replica that stopped between commit and fold leaves its traders behind; any
/// other replica's sweep folds them in. Here the server that takes the orders folds
/// nothing itself, and a second one on the same database never hears of the trades.
async fn another_replica_sweeps_up_trades_left_behind(backend: Backend) {
    let Some(desk) = Desk::with(backend, &[("PNL_FOLLOWER", "false")]).await else {
        return;
    };
    let (s, b) = desk.half_a_bitcoin_changes_hands().await;
    let (cursor, last) = desk.followed(&b).await;
    assert!(
        cursor < last,
        "nothing folds on the first server: {cursor} of {last}"
    );
    let sweeper = TestApp::spawn_with(
        backend,
        &[
            ("DATABASE_URL", desk.app.database_url.as_str()),
            (
                "REDIS_EVENTS_CHANNEL",
                "tradegraph:test:sweeper-hears-nothing",
            ),
        ],
    )
    .await
    .expect("second server");
    for who in [&s, &b] {
        desk.wait_followed(who, 15).await;
    }
    drop(sweeper);
    let b_portfolio = desk.portfolio(&b, "USD", "FIFO").await;
    assert_eq!(dv(&position(&b_portfolio, "BTC")["costBasis"]), d("10000"));
}

async fn cross_rates_unpriced_assets_and_deposit_costs(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let (a, s, c, dd) = (
        desk.user().await,
        desk.user().await,
        desk.user().await,
        desk.user().await,
    );
    desk.deposit(&a, "USD", "100000").await;
    desk.deposit(&s, "BTC", "5").await;
    desk.deposit(&s, "ETH", "10").await;
    desk.deposit(&c, "ETH", "1").await;
    desk.deposit(&c, "SOL", "3").await;
    desk.trade(&s, &a, "BTC-USD", "SELL", "1", "40000").await;
    // D's BTC arrives once BTC has a price: it costs 40,000.
    desk.deposit(&dd, "BTC", "1").await;
    desk.trade(&s, &dd, "ETH-BTC", "SELL", "1", "0.05").await;

    let p = desk.portfolio(&c, "USD", "FIFO").await;
    let eth = position(&p, "ETH");
    assert_eq!(dv(&eth["price"]), d("2000"), "{p}");
    assert_eq!(dv(&eth["value"]), d("2000.00"));
    assert_eq!(dv(&eth["unknownCostQuantity"]), d("1"));
    let sol = position(&p, "SOL");
    assert_eq!(sol["priced"], false, "{p}");
    assert!(sol["price"].is_null() && sol["value"].is_null() && sol["allocation"].is_null());
    assert!(sol["unrealizedPnl"].is_null(), "{p}");
    assert_eq!(dv(&p["totalValue"]), d("2000.00"));
    assert_eq!(p["fullyPriced"], false);

    // In BTC: ETH at 0.05 directly; the cost currency converts at today's rate.
    let p = desk.portfolio(&c, "BTC", "FIFO").await;
    assert_eq!(dv(&position(&p, "ETH")["price"]), d("0.05"), "{p}");
    assert_eq!(p["quoteAsset"], "BTC");

    for method in ["FIFO", "LIFO", "HIFO", "AVERAGE_COST"] {
        let p = desk.portfolio(&dd, "USD", method).await;
        // 1 ETH less the 0.2 % taker fee, for the 0.05 BTC (2,000 USD) paid.
        let eth = position(&p, "ETH");
        assert_eq!(dv(&eth["quantity"]), d("0.998"), "{p}");
        assert_eq!(dv(&eth["costBasis"]), d("2000.00"), "{method}: {p}");
        // The BTC spent was worth what it cost: nothing realized.
        let btc = position(&p, "BTC");
        assert_eq!(dv(&btc["quantity"]), d("0.95"));
        assert_eq!(dv(&btc["costBasis"]), d("38000.00"), "{method}: {p}");
        assert_eq!(dv(&btc["realizedPnl"]), d("0"), "{method}: {p}");
    }

    let unknown = desk
        .app
        .gql(
            "{ portfolio(quoteAsset: \"XYZ\") { totalValue } }",
            json!({}),
            Some(&c.access),
        )
        .await;
    assert_eq!(code(&unknown), "BAD_USER_INPUT", "{unknown}");
    assert_eq!(unknown["errors"][0]["extensions"]["field"], "quoteAsset");
    let anonymous = desk
        .app
        .gql("{ portfolio { totalValue } }", json!({}), None)
        .await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
}

/// Sets up a maker with `n` orders, each filled once by one sweeping buy.
async fn maker_with_filled_orders(desk: &Desk, n: usize) -> Auth {
    let (maker, taker) = (desk.user().await, desk.user().await);
    desk.deposit(&maker, "ETH", "1000").await;
    desk.deposit(&taker, "USD", "10000000").await;
    for i in 0..n {
        let price = format!("{}", 1000 + i);
        desk.limit(&maker, "ETH-USD", "SELL", "0.1", &price).await;
    }
    let input = json!({"market": "ETH-USD", "side": "BUY", "type": "MARKET", "quantity": format!("{}", n as f64 / 10.0)});
    let body = desk
        .app
        .gql(PLACE, json!({"i": input}), Some(&taker.access))
        .await;
    assert_eq!(body["data"]["placeOrder"]["status"], "FILLED", "{body}");
    // Both traders' P&L state catches up with these trades now (a read does that), so
    // callers that count statements do not count the follower's work in the background.
    for who in [&maker, &taker] {
        let body = desk
            .app
            .gql("{ portfolio { totalValue } }", json!({}), Some(&who.access))
            .await;
        assert!(body["errors"].is_null(), "{body}");
    }
    maker
}

async fn fills_history_pages_and_filters(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let maker = maker_with_filled_orders(&desk, 25).await;
    let page = "query($f: FillFilter, $a: String, $n: Int) { fills(filter: $f, first: $n, after: $a) { edges { cursor node { id side price market { symbol } order { id } } } pageInfo { hasNextPage endCursor } } }";
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let body = desk
            .app
            .gql(page, json!({"n": 10, "a": after}), Some(&maker.access))
            .await;
        let fills = &body["data"]["fills"];
        for edge in fills["edges"].as_array().cloned().unwrap_or_default() {
            seen.push(edge["node"]["id"].as_str().unwrap_or_default().to_owned());
            assert_eq!(edge["node"]["side"], "SELL");
        }
        if fills["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = fills["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen.len(), 25);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 25, "no fill repeated");
    // Newest first: ids are time-ordered.
    let mut newest_first = seen.clone();
    newest_first.sort_by(|x, y| y.cmp(x));
    assert_eq!(seen, newest_first);

    let count = |body: &Value| {
        body["data"]["fills"]["edges"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let buys = desk
        .app
        .gql(
            page,
            json!({"n": 100, "f": {"side": "BUY"}}),
            Some(&maker.access),
        )
        .await;
    assert_eq!(count(&buys), 0, "{buys}");
    let other = desk
        .app
        .gql(
            page,
            json!({"n": 100, "f": {"market": "BTC-USD"}}),
            Some(&maker.access),
        )
        .await;
    assert_eq!(count(&other), 0);
    let future = desk
        .app
        .gql(
            page,
            json!({"n": 100, "f": {"from": "2100-01-01T00:00:00Z"}}),
            Some(&maker.access),
        )
        .await;
    assert_eq!(count(&future), 0);
    let past = desk
        .app
        .gql(
            page,
            json!({"n": 100, "f": {"to": "2100-01-01T00:00:00Z", "market": "eth-usd"}}),
            Some(&maker.access),
        )
        .await;
    assert_eq!(count(&past), 25);
    let too_many = desk
        .app
        .gql(page, json!({"n": 201}), Some(&maker.access))
        .await;
    assert_eq!(code(&too_many), "BAD_USER_INPUT");
    // Another user sees none of them.
    let stranger = desk.user().await;
    let theirs = desk
        .app
        .gql(page, json!({"n": 100}), Some(&stranger.access))
        .await;
    assert_eq!(count(&theirs), 0);
}

async fn sql_statements(app: &TestApp) -> u64 {
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
        .find_map(|l| l.strip_prefix("tradegraph_sql_statements_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no sql_statements_total in {text}"))
}

/// The statements one query costs: the least of up to `runs` runs (stopping early at
/// `enough`), so neither a background worker's statement landing in between nor a
/// batch split by a starved scheduler on a loaded machine counts.
async fn statements_of(
    app: &TestApp,
    query: &str,
    n: usize,
    who: &Auth,
    runs: usize,
    enough: u64,
) -> u64 {
    let mut least = u64::MAX;
    for _ in 0..runs {
        let before = sql_statements(app).await;
        let body = app.gql(query, json!({"n": n}), Some(&who.access)).await;
        let after = sql_statements(app).await;
        let edges = body["data"]["orders"]["edges"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(edges, n, "{body}");
        for edge in body["data"]["orders"]["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            assert_eq!(edge["node"]["fills"].as_array().map_or(0, Vec::len), 1);
            assert_eq!(edge["node"]["market"]["baseAsset"]["symbol"], "ETH");
        }
        least = least.min(after - before);
        if least <= enough {
            break;
        }
    }
    least
}

/// Order → market → base asset and order → fills are batched by DataLoaders: the
/// number of SQL statements does not follow the number of orders. A loader gathers keys
/// for a few milliseconds, so on a starved machine a level's keys may come in two or
/// three batches; one statement per order would be ten times as many at N=100.
async fn nested_history_queries_do_not_grow_with_page_size(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let maker = maker_with_filled_orders(&desk, 100).await;
    let query = "query($n: Int) { orders(first: $n) { edges { node { market { symbol baseAsset { symbol } } fills { id price order { id } } } } } }";
    let at_10 = statements_of(&desk.app, query, 10, &maker, 10, 0).await;
    assert!(at_10 <= 12, "{at_10} statements at N=10");
    // A count that grew with N would never come down near N=10's, however many runs.
    let at_100 = statements_of(&desk.app, query, 100, &maker, 20, at_10).await;
    assert!(
        at_100 < 3 * at_10,
        "statements at N=10: {at_10}, at N=100: {at_100}"
    );
    // Positions' assets are batched too. The first read may fold the maker's last
    // trades into P&L state; the second has nothing left to fold.
    let portfolio = "{ portfolio { positions { asset { symbol name precision } } } }";
    let first = desk
        .app
        .gql(portfolio, json!({}), Some(&maker.access))
        .await;
    assert!(first["errors"].is_null(), "{first}");
    // The least of three runs, as above: the P&L follower may still be looking at the
    // maker's last events in the background.
    let mut least = u64::MAX;
    for _ in 0..3 {
        let before = sql_statements(&desk.app).await;
        let body = desk
            .app
            .gql(portfolio, json!({}), Some(&maker.access))
            .await;
        let after = sql_statements(&desk.app).await;
        assert!(body["errors"].is_null(), "{body}");
        least = least.min(after - before);
    }
    assert!(least <= 10, "{least} statements");
}

/// The subscriber gets its value at once, then again when a trade moves a price of
/// something it holds.
async fn portfolio_value_is_pushed_when_prices_move(backend: Backend) {
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let (a, s, b) = (desk.user().await, desk.user().await, desk.user().await);
    desk.deposit(&a, "USD", "1000").await;
    desk.deposit(&s, "BTC", "3").await;
    desk.deposit(&b, "USD", "100000").await;
    desk.trade(&s, &a, "BTC-USD", "SELL", "0.01", "20000").await;

    let mut ws = desk.app.websocket("graphql-transport-ws").await;
    ws.init(json!({"authorization": format!("Bearer {}", a.access)}))
        .await;
    ws.send(json!({"id": "v", "type": "subscribe", "payload": {"query": "subscription { portfolioValue(quoteAsset: \"USD\") { at value } }"}}))
        .await;
    let first = next_value(&mut ws).await;
    // 800 USD + 0.00998 BTC at 20,000.
    assert_eq!(first, d("999.60"));
    // Someone else trades BTC higher: A's BTC is worth more.
    desk.trade(&s, &b, "BTC-USD", "SELL", "0.01", "30000").await;
    let second = next_value(&mut ws).await;
    assert_eq!(second, d("1099.40"));
    // A trade in a market A has nothing to do with pushes nothing: the next push is
    // the one after A's own deposit.
    desk.deposit(&s, "SOL", "5").await;
    desk.deposit(&a, "USD", "100").await;
    let third = next_value(&mut ws).await;
    assert_eq!(third, d("1199.40"));
}

async fn next_value(ws: &mut crate::helpers::Ws) -> Decimal {
    match ws.next_within(15).await {
        Frame::Json(message) => {
            assert_eq!(message["type"], "next", "{message}");
            dv(&message["payload"]["data"]["portfolioValue"]["value"])
        }
        other => panic!("expected a value, got {other:?}"),
    }
}

/// Traders trade at random, concurrently, in three markets (one of them a cross market),
/// after every asset has a price. Then for each trader: every unit held has a known cost
/// (the state the hooks kept covers the whole balance), and realized + unrealized P&L
/// is the same under all four methods (up to display rounding).
async fn random_concurrent_trading_keeps_pnl_state_consistent(backend: Backend) {
    use rand::{Rng, SeedableRng};
    let Some(desk) = Desk::new(backend).await else {
        return;
    };
    let (s, h) = (desk.user().await, desk.user().await);
    desk.deposit(&s, "BTC", "10").await;
    desk.deposit(&s, "ETH", "100").await;
    desk.deposit(&h, "USD", "1000000").await;
    desk.trade(&s, &h, "BTC-USD", "SELL", "1", "20000").await;
    desk.trade(&s, &h, "ETH-USD", "SELL", "1", "1000").await;
    desk.trade(&s, &h, "ETH-BTC", "SELL", "1", "0.05").await;
    let mut traders = Vec::new();
    for _ in 0..3 {
        let t = desk.user().await;
        desk.deposit(&t, "USD", "1000000").await;
        desk.deposit(&t, "BTC", "5").await;
        desk.deposit(&t, "ETH", "50").await;
        traders.push(t);
    }
    let desk = std::sync::Arc::new(desk);
    let mut tasks = Vec::new();
    for (n, trader) in traders.iter().cloned().enumerate() {
        let desk = desk.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64 + 1);
            for _ in 0..15 {
                let (market, mid, tick, lot): (&str, i64, u32, u32) = match rng.gen_range(0..3) {
                    0 => ("BTC-USD", 2_000_000, 2, 3),
                    1 => ("ETH-USD", 100_000, 2, 2),
                    _ => ("ETH-BTC", 5_000, 5, 2),
                };
                let price = Decimal::new(mid + rng.gen_range(-mid / 50..=mid / 50), tick);
                let quantity = Decimal::new(rng.gen_range(1..=50), lot);
                let side = if rng.gen_bool(0.5) { "BUY" } else { "SELL" };
                let input = json!({"market": market, "side": side, "type": "LIMIT", "quantity": quantity.to_string(), "price": price.to_string()});
                let body = desk
                    .app
                    .gql(PLACE, json!({"i": input}), Some(&trader.access))
                    .await;
                assert!(body["data"]["placeOrder"]["id"].is_string(), "{body}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("trader task");
    }
    for trader in &traders {
        let mut totals = Vec::new();
        let mut positions = 0;
        for method in ["FIFO", "LIFO", "HIFO", "AVERAGE_COST"] {
            let p = desk.portfolio(trader, "USD", method).await;
            for position in p["positions"].as_array().cloned().unwrap_or_default() {
                assert_eq!(
                    dv(&position["unknownCostQuantity"]),
                    Decimal::ZERO,
                    "{method}: {p}"
                );
                assert_eq!(position["priced"], true, "{p}");
            }
            positions = p["positions"].as_array().map_or(0, Vec::len);
            totals.push((method, dv(&p["realizedPnl"]) + dv(&p["unrealizedPnl"])));
        }
        // Each position's two P&L figures are rounded to the cent on their own.
        let tolerance = Decimal::new(1, 2) * Decimal::from(positions as u64 * 2);
        for (method, total) in &totals {
            assert!(
                (*total - totals[0].1).abs() <= tolerance,
                "{method}: {totals:?}"
            );
        }
    }
}
