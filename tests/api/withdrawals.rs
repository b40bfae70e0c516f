//! Withdrawals: held funds, operator steps, the connection, and every defence attacked
//! (cooling-off, security lock, KYC limits, second factor, other users).

use serde_json::{json, Value};
use tradegraph::domain::totp;

use crate::both_backends;
use crate::helpers::{code, email, Auth, Backend, TestApp, PASSWORD};

both_backends!(
    withdrawals_hold_return_and_complete_funds,
    withdrawal_defences_refuse_attacks,
    concurrent_withdrawals_never_pass_the_daily_limit,
);

const ADD: &str = "mutation($i: AddWithdrawalAddressInput!) { addWithdrawalAddress(input: $i) { id asset address label activatesAt active } }";
const REQUEST: &str = "mutation($i: RequestWithdrawalInput!) { requestWithdrawal(input: $i) { id status amount usdValue address txid failureReason asset { symbol } } }";
const BALANCES: &str = "{ balances { asset { symbol } available locked } }";

async fn fund(app: &TestApp, admin: &Auth, user: &Auth, amount: &str) {
    let body = app
        .gql(
            "mutation($i: CreditDepositInput!) { creditDeposit(input: $i) { id } }",
            json!({"i": {"userId": user.user_id, "asset": "USD", "amount": amount, "reference": uuid::Uuid::new_v4().to_string()}}),
            Some(&admin.access),
        )
        .await;
    assert!(body["data"]["creditDeposit"]["id"].is_string(), "{body}");
}

async fn usd(app: &TestApp, user: &Auth) -> (String, String) {
    let body = app.gql(BALANCES, json!({}), Some(&user.access)).await;
    let row = body["data"]["balances"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["asset"]["symbol"] == "USD"))
        .unwrap_or_else(|| panic!("no USD: {body}"))
        .clone();
    (
        row["available"].as_str().unwrap_or_default().to_owned(),
        row["locked"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn add_address(app: &TestApp, user: &Auth, totp_code: Option<&str>) -> Value {
    app.gql(
        ADD,
        json!({"i": {"asset": "USD", "address": "US00-BANK-0001-2345", "label": "my bank", "totpCode": totp_code}}),
        Some(&user.access),
    )
    .await
}

async fn request(app: &TestApp, user: &Auth, address: &Value, amount: &str, key: &str) -> Value {
    app.gql(
        REQUEST,
        json!({"i": {"asset": "USD", "amount": amount, "addressId": address, "idempotencyKey": key}}),
        Some(&user.access),
    )
    .await
}

fn status(body: &Value) -> &str {
    body["data"]
        .as_object()
        .and_then(|d| d.values().next())
        .and_then(|w| w["status"].as_str())
        .unwrap_or("<none>")
}

async fn withdrawals_hold_return_and_complete_funds(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin_and(
        backend,
        &[
            ("WITHDRAWAL_ADDRESS_COOLING_OFF_SECS", "0"),
            ("KYC_TIER_LIMITS", "UNVERIFIED:trade:10000:unlimited,BASIC:trade:10000:unlimited,INTERMEDIATE:trade:50000:unlimited,ADVANCED:trade:1000000:unlimited"),
        ],
    )
    .await
    else {
        return;
    };
    let user = app.register(&email("wd")).await;
    fund(&app, &admin, &user, "5000").await;
    let added = add_address(&app, &user, None).await;
    assert_eq!(
        added["data"]["addWithdrawalAddress"]["active"], true,
        "{added}"
    );
    let address = added["data"]["addWithdrawalAddress"]["id"].clone();

    // Requesting holds the funds; the same key returns the same withdrawal.
    let first = request(&app, &user, &address, "100", "k1").await;
    assert_eq!(status(&first), "PENDING", "{first}");
    let id = first["data"]["requestWithdrawal"]["id"].clone();
    assert_eq!(first["data"]["requestWithdrawal"]["usdValue"], "100");
    assert_eq!(usd(&app, &user).await, ("4900".into(), "100".into()));
    let repeat = request(&app, &user, &address, "100", "k1").await;
    assert_eq!(repeat["data"]["requestWithdrawal"]["id"], id, "{repeat}");
    assert_eq!(usd(&app, &user).await, ("4900".into(), "100".into()));
    let reused = request(&app, &user, &address, "101", "k1").await;
    assert_eq!(code(&reused), "CONFLICT", "{reused}");

    // Cancelling returns them, once.
    const CANCEL: &str = "mutation($id: ID!) { cancelWithdrawal(id: $id) { id status } }";
    let other = app.register(&email("other")).await;
    let foreign = app
        .gql(CANCEL, json!({"id": id}), Some(&other.access))
        .await;
    assert_eq!(code(&foreign), "NOT_FOUND", "{foreign}");
    let peek = app
        .gql(
            "query($id: ID!) { withdrawal(id: $id) { id } }",
            json!({"id": id}),
            Some(&other.access),
        )
        .await;
    assert!(peek["data"]["withdrawal"].is_null(), "{peek}");
    let cancelled = app.gql(CANCEL, json!({"id": id}), Some(&user.access)).await;
    assert_eq!(status(&cancelled), "CANCELLED", "{cancelled}");
    assert_eq!(usd(&app, &user).await, ("5000".into(), "0".into()));
    let twice = app.gql(CANCEL, json!({"id": id}), Some(&user.access)).await;
    assert_eq!(code(&twice), "CONFLICT", "{twice}");

    // An operator processes and completes one: the funds leave.
    let second = request(&app, &user, &address, "200", "k2").await;
    let id2 = second["data"]["requestWithdrawal"]["id"].clone();
    const PROCESS: &str = "mutation($id: ID!) { processWithdrawal(id: $id) { status } }";
    const COMPLETE: &str =
        "mutation($id: ID!, $t: String!) { completeWithdrawal(id: $id, txid: $t) { status txid } }";
    let not_admin = app
        .gql(
            COMPLETE,
            json!({"id": id2, "t": "0xabc"}),
            Some(&user.access),
        )
        .await;
    assert_eq!(code(&not_admin), "FORBIDDEN", "{not_admin}");
    let processing = app
        .gql(PROCESS, json!({"id": id2}), Some(&admin.access))
        .await;
    assert_eq!(status(&processing), "PROCESSING", "{processing}");
    let late = app
        .gql(CANCEL, json!({"id": id2}), Some(&user.access))
        .await;
    assert_eq!(code(&late), "CONFLICT", "{late}");
    let done = app
        .gql(
            COMPLETE,
            json!({"id": id2, "t": "0xabc"}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(status(&done), "COMPLETED", "{done}");
    assert_eq!(done["data"]["completeWithdrawal"]["txid"], "0xabc");
    assert_eq!(usd(&app, &user).await, ("4800".into(), "0".into()));
    let again = app
        .gql(
            COMPLETE,
            json!({"id": id2, "t": "0xdef"}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(code(&again), "CONFLICT", "{again}");

    // A failed one returns its funds.
    let third = request(&app, &user, &address, "50", "k3").await;
    let id3 = third["data"]["requestWithdrawal"]["id"].clone();
    let failed = app
        .gql(
            "mutation($id: ID!) { failWithdrawal(id: $id, reason: \"chain congested\") { status failureReason } }",
            json!({"id": id3}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(status(&failed), "FAILED", "{failed}");
    assert_eq!(usd(&app, &user).await, ("4800".into(), "0".into()));

    // The connection: newest first, filters, keyset cursors.
    const LIST: &str = "query($f: WithdrawalFilter, $after: String) { withdrawals(filter: $f, first: 2, after: $after) { edges { cursor node { id status } } pageInfo { hasNextPage endCursor } } }";
    let page = app.gql(LIST, json!({}), Some(&user.access)).await;
    let edges = page["data"]["withdrawals"]["edges"]
        .as_array()
        .expect("edges")
        .clone();
    assert_eq!(edges.len(), 2, "{page}");
    assert_eq!(edges[0]["node"]["id"], id3);
    assert_eq!(edges[1]["node"]["id"], id2);
    assert_eq!(page["data"]["withdrawals"]["pageInfo"]["hasNextPage"], true);
    let cursor = page["data"]["withdrawals"]["pageInfo"]["endCursor"].clone();
    let rest = app
        .gql(LIST, json!({"after": cursor}), Some(&user.access))
        .await;
    assert_eq!(
        rest["data"]["withdrawals"]["edges"][0]["node"]["id"], id,
        "{rest}"
    );
    let completed = app
        .gql(
            LIST,
            json!({"f": {"status": "COMPLETED", "asset": "usd"}}),
            Some(&user.access),
        )
        .await;
    let only: Vec<&Value> = completed["data"]["withdrawals"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| &e["node"]["id"])
        .collect();
    assert_eq!(only, [&id2]);
    let theirs = app.gql(LIST, json!({}), Some(&other.access)).await;
    assert_eq!(
        theirs["data"]["withdrawals"]["edges"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    // Every step is a journal entry, and the books still balance.
    let ledger = app
        .gql(
            "{ ledger(first: 20) { edges { node { kind amount } } } }",
            json!({}),
            Some(&user.access),
        )
        .await;
    let kinds: Vec<&str> = ledger["data"]["ledger"]["edges"]
        .as_array()
        .expect("ledger")
        .iter()
        .filter_map(|e| e["node"]["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "WITHDRAWAL_RELEASE",
            "WITHDRAWAL_HOLD",
            "WITHDRAWAL",
            "WITHDRAWAL_HOLD",
            "WITHDRAWAL_RELEASE",
            "WITHDRAWAL_HOLD",
            "DEPOSIT"
        ],
        "{ledger}"
    );
    let check = app
        .gql(
            "{ ledgerCheck { ok problems } }",
            json!({}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(check["data"]["ledgerCheck"]["ok"], true, "{check}");

    // Removing an address: only the owner's, and it can no longer be used.
    const REMOVE: &str = "mutation($id: ID!) { removeWithdrawalAddress(id: $id) }";
    let foreign = app
        .gql(REMOVE, json!({"id": address}), Some(&other.access))
        .await;
    assert_eq!(code(&foreign), "NOT_FOUND", "{foreign}");
    let removed = app
        .gql(REMOVE, json!({"id": address}), Some(&user.access))
        .await;
    assert_eq!(
        removed["data"]["removeWithdrawalAddress"], true,
        "{removed}"
    );
    let gone = request(&app, &user, &address, "10", "k4").await;
    assert_eq!(code(&gone), "NOT_FOUND", "{gone}");

    // Every step is an audit event in the owner's log, and the chain is intact.
    let actions = crate::two_factor::security_actions(&app, &user.access).await;
    for expected in [
        "withdrawal_address.added",
        "withdrawal.requested",
        "withdrawal.cancelled",
        "withdrawal.processing",
        "withdrawal.completed",
        "withdrawal.failed",
        "withdrawal_address.removed",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing: {actions:?}"
        );
    }
    let chain = app
        .gql(
            "{ verifyAuditChain { valid } }",
            json!({}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(chain["data"]["verifyAuditChain"]["valid"], true, "{chain}");
}

fn current_code(secret: &[u8], offset: i64) -> String {
    let step = (totp::step_at(chrono::Utc::now().timestamp() as u64) as i64 + offset) as u64;
    totp::code_for_step(secret, step, totp::DIGITS)
}

async fn withdrawal_defences_refuse_attacks(backend: Backend) {
    // Defaults: 48 h cooling-off, UNVERIFIED may not withdraw.
    let Some((strict, strict_admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let user = strict.register(&email("cool")).await;
    fund(&strict, &strict_admin, &user, "1000").await;
    let added = add_address(&strict, &user, None).await;
    assert_eq!(
        added["data"]["addWithdrawalAddress"]["active"], false,
        "{added}"
    );
    let address = added["data"]["addWithdrawalAddress"]["id"].clone();
    let cooling = request(&strict, &user, &address, "10", "c1").await;
    assert_eq!(code(&cooling), "FORBIDDEN", "{cooling}");
    let message = cooling["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("cooling off"), "{message}");
    assert_eq!(usd(&strict, &user).await, ("1000".into(), "0".into()));
    drop(strict);

    let Some((app, admin)) = TestApp::spawn_with_admin_and(
        backend,
        &[
            ("WITHDRAWAL_ADDRESS_COOLING_OFF_SECS", "0"),
            ("KYC_TIER_LIMITS", "UNVERIFIED:trade:1000:unlimited,BASIC:trade:2000:unlimited,INTERMEDIATE:trade:50000:unlimited,ADVANCED:trade:1000000:unlimited"),
        ],
    )
    .await
    else {
        return;
    };

    // The daily limit counts what is pending and sent, not what was cancelled.
    let user = app.register(&email("limit")).await;
    fund(&app, &admin, &user, "5000").await;
    let address =
        add_address(&app, &user, None).await["data"]["addWithdrawalAddress"]["id"].clone();
    let first = request(&app, &user, &address, "600", "l1").await;
    assert_eq!(status(&first), "PENDING", "{first}");
    let over = request(&app, &user, &address, "400.01", "l2").await;
    assert_eq!(code(&over), "BAD_USER_INPUT", "{over}");
    assert_eq!(over["errors"][0]["extensions"]["field"], "input.amount");
    assert!(
        over["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("400 USD left"),
        "{over}"
    );
    let exact = request(&app, &user, &address, "400", "l3").await;
    assert_eq!(status(&exact), "PENDING", "{exact}");
    let poor = request(&app, &user, &address, "0.01", "l4").await;
    assert_eq!(code(&poor), "BAD_USER_INPUT", "{poor}");

    // Not more than one holds.
    let broke = app.register(&email("broke")).await;
    fund(&app, &admin, &broke, "5").await;
    let broke_address =
        add_address(&app, &broke, None).await["data"]["addWithdrawalAddress"]["id"].clone();
    let short = request(&app, &broke, &broke_address, "6", "b1").await;
    assert_eq!(code(&short), "INSUFFICIENT_FUNDS", "{short}");
    // Another user's address is not found.
    let foreign = request(&app, &broke, &address, "1", "b2").await;
    assert_eq!(code(&foreign), "NOT_FOUND", "{foreign}");
    let negative = request(&app, &broke, &broke_address, "-1", "b3").await;
    assert_eq!(code(&negative), "BAD_USER_INPUT", "{negative}");

    // With 2FA on, a code is required for new addresses and for withdrawals.
    let guarded = app.register(&email("2fa")).await;
    fund(&app, &admin, &guarded, "100").await;
    let setup = app
        .gql(
            "mutation { enableTotp { secret } }",
            json!({}),
            Some(&guarded.access),
        )
        .await;
    let secret = totp::base32_decode(
        setup["data"]["enableTotp"]["secret"]
            .as_str()
            .unwrap_or_default(),
    )
    .expect("secret");
    let confirmed = app
        .gql(
            "mutation($c: String!) { confirmTotp(code: $c) }",
            json!({"c": current_code(&secret, -1)}),
            Some(&guarded.access),
        )
        .await;
    assert!(confirmed["data"]["confirmTotp"].is_array(), "{confirmed}");
    let bare = add_address(&app, &guarded, None).await;
    assert_eq!(code(&bare), "TWO_FACTOR_REQUIRED", "{bare}");
    let with_code = add_address(&app, &guarded, Some(&current_code(&secret, 0))).await;
    let guarded_address = with_code["data"]["addWithdrawalAddress"]["id"].clone();
    assert!(guarded_address.is_string(), "{with_code}");
    let no_code = request(&app, &guarded, &guarded_address, "10", "g1").await;
    assert_eq!(code(&no_code), "TWO_FACTOR_REQUIRED", "{no_code}");
    let coded = app
        .gql(
            REQUEST,
            json!({"i": {"asset": "USD", "amount": "10", "addressId": guarded_address, "idempotencyKey": "g2", "totpCode": current_code(&secret, 1)}}),
            Some(&guarded.access),
        )
        .await;
    assert_eq!(status(&coded), "PENDING", "{coded}");
    assert_eq!(usd(&app, &guarded).await, ("90".into(), "10".into()));

    // After a password change, withdrawals are locked.
    let changed = app
        .gql(
            "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }",
            json!({"c": PASSWORD, "n": "another long passphrase 31"}),
            Some(&user.access),
        )
        .await;
    assert_eq!(changed["data"]["changePassword"], true, "{changed}");
    let locked = request(&app, &user, &address, "1", "l5").await;
    assert_eq!(code(&locked), "FORBIDDEN", "{locked}");
    assert!(
        locked["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("locked"),
        "{locked}"
    );
}

/// Racing requests (distinct keys, and one key sent many times) cannot together pass the
/// daily limit, double-spend a key, or unbalance the books.
async fn concurrent_withdrawals_never_pass_the_daily_limit(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin_and(
        backend,
        &[
            ("WITHDRAWAL_ADDRESS_COOLING_OFF_SECS", "0"),
            ("KYC_TIER_LIMITS", "UNVERIFIED:trade:1000:unlimited,BASIC:trade:2000:unlimited,INTERMEDIATE:trade:50000:unlimited,ADVANCED:trade:1000000:unlimited"),
            ("RATE_LIMIT_PER_MINUTE", "0"),
        ],
    )
    .await
    else {
        return;
    };
    let user = app.register(&email("race")).await;
    fund(&app, &admin, &user, "5000").await;
    let address =
        add_address(&app, &user, None).await["data"]["addWithdrawalAddress"]["id"].clone();
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (app, user, address) = (app.clone(), user.clone(), address.clone());
        tasks.push(tokio::spawn(async move {
            request(&app, &user, &address, "150", &format!("race-{i}")).await
        }));
    }
    for _ in 0..5 {
        let (app, user, address) = (app.clone(), user.clone(), address.clone());
        tasks.push(tokio::spawn(async move {
            request(&app, &user, &address, "10", "same-key").await
        }));
    }
    let mut accepted = 0;
    let mut same_key_ids = std::collections::BTreeSet::new();
    for task in tasks {
        let body = task.await.expect("task");
        if let Some(w) = body["data"]["requestWithdrawal"].as_object() {
            if w["amount"] == "150" {
                accepted += 1;
            } else {
                same_key_ids.insert(w["id"].to_string());
            }
        } else {
            assert!(
                ["BAD_USER_INPUT", "CONFLICT"].contains(&code(&body)),
                "unexpected refusal: {body}"
            );
        }
    }
    // 1000 USD a day: the 10 USD request plus at most six of 150.
    assert!(
        accepted <= 6,
        "{accepted} withdrawals of 150 passed a 1000 limit"
    );
    assert_eq!(
        same_key_ids.len(),
        1,
        "one key, one withdrawal: {same_key_ids:?}"
    );
    let held = rust_decimal::Decimal::from(150 * accepted + 10);
    let (available, locked) = usd(&app, &user).await;
    assert_eq!(locked.parse::<rust_decimal::Decimal>().ok(), Some(held));
    assert_eq!(
        available.parse::<rust_decimal::Decimal>().ok(),
        Some(rust_decimal::Decimal::from(5000) - held)
    );
    let check = app
        .gql(
            "{ ledgerCheck { ok problems } }",
            json!({}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(check["data"]["ledgerCheck"]["ok"], true, "{check}");
}
