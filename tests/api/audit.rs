//! The audit log: who sees what, and that tampering with stored rows is found.

use sea_orm::{ConnectionTrait, Database, DatabaseBackend};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{code, email, Auth, Backend, TestApp};

both_backends!(
    money_and_order_actions_land_in_the_owners_security_log,
    only_officers_read_the_full_log,
    tampering_with_a_stored_event_is_found,
    orders_placed_together_chain_their_audit_entries,
);

const DEPOSIT: &str = "mutation($i: CreditDepositInput!) { creditDeposit(input: $i) { id } }";
const PLACE: &str = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }";
const SECURITY_LOG: &str = "{ securityLog(first: 50) { edges { node { id action actorId ownerId subjectType subjectId details chain chainSequence hash previousHash } } } }";
const VERIFY: &str = "{ verifyAuditChain { valid checkedEvents firstBrokenEventId } }";

async fn fund(app: &TestApp, admin: &Auth, user: &Auth, asset: &str, amount: &str) {
    let variables = json!({"i": {"userId": user.user_id, "asset": asset, "amount": amount, "reference": uuid::Uuid::new_v4().to_string()}});
    let body = app.gql(DEPOSIT, variables, Some(&admin.access)).await;
    assert!(body["data"]["creditDeposit"].is_object(), "{body}");
}

async fn place_and_cancel(app: &TestApp, user: &Auth) -> String {
    let body = app
        .gql(
            PLACE,
            json!({"i": {"market": "BTC-USD", "side": "BUY", "type": "LIMIT", "price": "100", "quantity": "0.5"}}),
            Some(&user.access),
        )
        .await;
    let id = body["data"]["placeOrder"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let cancelled = app
        .gql(
            "mutation($id: ID!) { cancelOrder(id: $id) { status } }",
            json!({"id": id}),
            Some(&user.access),
        )
        .await;
    assert_eq!(
        cancelled["data"]["cancelOrder"]["status"], "CANCELLED",
        "{cancelled}"
    );
    id
}

fn events(body: &Value, connection: &str) -> Vec<Value> {
    body["data"][connection]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|edge| edge["node"].clone())
        .collect()
}

fn actions(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["action"].as_str()).collect()
}

async fn money_and_order_actions_land_in_the_owners_security_log(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let alice = app.register(&email("alice")).await;
    let bob = app.register(&email("bob")).await;
    fund(&app, &admin, &alice, "USD", "1000").await;
    let order_id = place_and_cancel(&app, &alice).await;

    let log = events(
        &app.gql(SECURITY_LOG, json!({}), Some(&alice.access)).await,
        "securityLog",
    );
    let seen = actions(&log);
    for wanted in ["deposit.credited", "order.placed", "order.cancelled"] {
        assert!(seen.contains(&wanted), "{wanted} missing from {seen:?}");
    }
    // Newest first.
    assert_eq!(seen.first(), Some(&"order.cancelled"), "{seen:?}");
    let placed = log
        .iter()
        .find(|e| e["action"] == "order.placed")
        .expect("placed");
    assert_eq!(placed["subjectType"], "order");
    assert_eq!(placed["subjectId"], order_id.as_str());
    assert_eq!(placed["actorId"], alice.user_id.as_str());
    assert_eq!(placed["ownerId"], alice.user_id.as_str());
    assert_eq!(placed["chain"], "market:BTC-USD");
    assert_eq!(placed["details"]["price"], "100");
    let cancelled = log
        .iter()
        .find(|e| e["action"] == "order.cancelled")
        .expect("cancelled");
    assert_eq!(
        cancelled["previousHash"], placed["hash"],
        "one chain, linked"
    );
    assert_eq!(
        cancelled["chainSequence"].as_i64(),
        placed["chainSequence"].as_i64().map(|n| n + 1)
    );
    let deposit = log
        .iter()
        .find(|e| e["action"] == "deposit.credited")
        .expect("deposit");
    assert_eq!(deposit["actorId"], admin.user_id.as_str());
    assert_eq!(deposit["details"]["amount"], "1000");
    // Nothing personal is in the log.
    let text = serde_json::to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("@"),
        "an e-mail address leaked into the audit log: {text}"
    );

    let bobs = events(
        &app.gql(SECURITY_LOG, json!({}), Some(&bob.access)).await,
        "securityLog",
    );
    assert!(
        bobs.iter().all(|e| e["ownerId"] == bob.user_id.as_str()),
        "bob sees only his own events: {bobs:?}"
    );
    assert!(!actions(&bobs).contains(&"order.placed"));
    let anonymous = app.gql(SECURITY_LOG, json!({}), None).await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
}

async fn only_officers_read_the_full_log(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let alice = app.register(&email("alice")).await;
    fund(&app, &admin, &alice, "USD", "1000").await;
    place_and_cancel(&app, &alice).await;

    let query = "query($f: AuditLogFilter) { auditLog(filter: $f, first: 50) { edges { node { action actorId } } } }";
    let refused = app.gql(query, json!({}), Some(&alice.access)).await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    assert_eq!(
        code(&app.gql(VERIFY, json!({}), Some(&alice.access)).await),
        "FORBIDDEN"
    );

    let all = events(
        &app.gql(query, json!({}), Some(&admin.access)).await,
        "auditLog",
    );
    let seen = actions(&all);
    assert!(
        seen.contains(&"order.placed") && seen.contains(&"deposit.credited"),
        "{seen:?}"
    );
    let only = events(
        &app.gql(
            query,
            json!({"f": {"action": "order.cancelled", "actorId": alice.user_id}}),
            Some(&admin.access),
        )
        .await,
        "auditLog",
    );
    assert_eq!(actions(&only), ["order.cancelled"]);

    // A compliance officer reads the log too, but cannot run the chain check.
    let officer = app.register(&email("officer")).await;
    let grant = app
        .gql(
            "mutation($u: ID!) { grantRole(userId: $u, role: COMPLIANCE_OFFICER) { id } }",
            json!({"u": officer.user_id}),
            Some(&admin.access),
        )
        .await;
    assert!(grant["data"]["grantRole"].is_object(), "{grant}");
    let officer = app
        .login(
            &officer_email(&app, &officer).await,
            crate::helpers::PASSWORD,
        )
        .await;
    let officer = crate::helpers::Auth::from_payload(&officer["data"]["login"]).expect("login");
    assert!(!events(
        &app.gql(query, json!({}), Some(&officer.access)).await,
        "auditLog"
    )
    .is_empty());
    assert_eq!(
        code(&app.gql(VERIFY, json!({}), Some(&officer.access)).await),
        "FORBIDDEN"
    );
}

async fn officer_email(app: &TestApp, who: &Auth) -> String {
    let me = app
        .gql("{ me { email } }", json!({}), Some(&who.access))
        .await;
    me["data"]["me"]["email"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn tampering_with_a_stored_event_is_found(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let alice = app.register(&email("alice")).await;
    fund(&app, &admin, &alice, "USD", "1000").await;
    for _ in 0..3 {
        place_and_cancel(&app, &alice).await;
    }
    let status = app.gql(VERIFY, json!({}), Some(&admin.access)).await;
    assert_eq!(
        status["data"]["verifyAuditChain"]["valid"], true,
        "{status}"
    );
    let checked = status["data"]["verifyAuditChain"]["checkedEvents"]
        .as_u64()
        .unwrap_or(0);
    assert!(checked >= 7, "{status}");

    let log = events(
        &app.gql(SECURITY_LOG, json!({}), Some(&alice.access)).await,
        "securityLog",
    );
    let victim = log
        .iter()
        .filter(|e| e["action"] == "order.placed")
        .nth(1)
        .expect("a placement in the middle")["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let db = Database::connect(app.database_url.clone())
        .await
        .expect("db");
    // The application's own connection cannot rewrite the log.
    let refused = db
        .execute_unprepared("UPDATE audit_events SET details = '{}'")
        .await;
    assert!(
        refused.is_err(),
        "an UPDATE of audit_events must be refused"
    );
    // Someone with the power to drop the guard can; the chain still shows it.
    let (disable, enable) = match db.get_database_backend() {
        DatabaseBackend::Postgres => (
            "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
            "ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only",
        ),
        _ => ("DROP TRIGGER audit_events_no_update", "SELECT 1"),
    };
    db.execute_unprepared(disable).await.expect("disable guard");
    let victim_cond = if db.get_database_backend() == DatabaseBackend::Postgres {
        format!("id = '{victim}'")
    } else {
        // SQLite may hold a uuid as text or as 16 bytes, depending on the driver.
        format!("(id = '{victim}' OR hex(id) = upper(replace('{victim}', '-', '')))")
    };
    let changed = db
        .execute_unprepared(&format!(
            "UPDATE audit_events SET details = '{{\"price\":\"1\"}}' WHERE {victim_cond}"
        ))
        .await
        .expect("tamper");
    assert_eq!(changed.rows_affected(), 1, "the row to alter was found");
    db.execute_unprepared(enable).await.expect("enable guard");

    let status = app.gql(VERIFY, json!({}), Some(&admin.access)).await;
    assert_eq!(
        status["data"]["verifyAuditChain"]["valid"], false,
        "{status}"
    );
    assert_eq!(
        status["data"]["verifyAuditChain"]["firstBrokenEventId"],
        victim.as_str(),
        "{status}"
    );
}

/// Orders placed together in one transaction (group commit) append their audit entries
/// to the market's chain together: every placement is there once, numbered without a
/// gap, and the chain verifies.
async fn orders_placed_together_chain_their_audit_entries(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let app = std::sync::Arc::new(app);
    let mut traders = Vec::new();
    for side in ["BUY", "SELL"].into_iter().cycle().take(12) {
        let trader = app.register(&email("trader")).await;
        let (asset, amount) = if side == "BUY" {
            ("USD", "100000")
        } else {
            ("BTC", "10")
        };
        fund(&app, &admin, &trader, asset, amount).await;
        traders.push((trader, side));
    }
    let committed = r#"tradegraph_order_batches_total{outcome="committed"}"#;
    let mut placed = 0;
    for round in 0..8 {
        if round > 0 && app.metric(committed).await > 0.0 {
            break;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (trader, side) in &traders {
            let (app, access, side) = (app.clone(), trader.access.clone(), *side);
            tasks.spawn(async move {
                // Sells at the buys' price: some rest, some trade with resting buys.
                let input = json!({"market": "BTC-USD", "side": side, "type": "LIMIT", "price": "30000", "quantity": "0.01"});
                app.gql(PLACE, json!({"i": input}), Some(&access)).await
            });
        }
        while let Some(body) = tasks.join_next().await {
            let body = body.expect("order task");
            assert!(body["data"]["placeOrder"]["id"].is_string(), "{body}");
            placed += 1;
        }
    }
    assert!(
        app.metric(committed).await > 0.0,
        "no batch of simultaneous orders was committed"
    );

    let query = "query($f: AuditLogFilter) { auditLog(filter: $f, first: 200) { edges { node { chain chainSequence } } } }";
    let log = events(
        &app.gql(
            query,
            json!({"f": {"action": "order.placed"}}),
            Some(&admin.access),
        )
        .await,
        "auditLog",
    );
    let mut numbers: Vec<i64> = log
        .iter()
        .inspect(|e| assert_eq!(e["chain"], "market:BTC-USD", "{e}"))
        .filter_map(|e| e["chainSequence"].as_i64())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=placed).collect::<Vec<i64>>());
    let status = app.gql(VERIFY, json!({}), Some(&admin.access)).await;
    assert_eq!(
        status["data"]["verifyAuditChain"]["valid"], true,
        "{status}"
    );
}
