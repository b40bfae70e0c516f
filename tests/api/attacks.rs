//! Cross-user and cross-site attacks on the whole schema.
//!
//! `every_object_id_field_refuses_other_users` walks the served schema: every query and
//! mutation that takes an object id (an `ID` argument, or an `ID` inside an input
//! object) must have an entry in its table, saying how user B attacks user A's object
//! and what B must get (`NOT_FOUND`, or `FORBIDDEN` for admin-only fields). A new field
//! without an entry fails the test, so none can be forgotten.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::api_keys::create_key;
use crate::both_backends;
use crate::helpers::{code, email, Auth, Backend, TestApp};

const INTROSPECT: &str = r#"
query {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types {
      name
      kind
      fields { name args { name type { ...T } } }
      inputFields { name type { ...T } }
    }
  }
}
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }
"#;

fn named(ty: &Value) -> String {
    let mut ty = ty;
    while ty["name"].is_null() && !ty["ofType"].is_null() {
        ty = &ty["ofType"];
    }
    ty["name"].as_str().unwrap_or_default().to_owned()
}

/// Whether a value of `type_name` carries an `ID` (directly or in an input object).
fn carries_id(
    types: &HashMap<String, Value>,
    type_name: &str,
    seen: &mut BTreeSet<String>,
) -> bool {
    if type_name == "ID" {
        return true;
    }
    if !seen.insert(type_name.to_owned()) {
        return false;
    }
    types
        .get(type_name)
        .and_then(|t| t["inputFields"].as_array())
        .is_some_and(|fields| {
            fields
                .iter()
                .any(|f| carries_id(types, &named(&f["type"]), seen))
        })
}

/// Root fields (as `Query.x`, `Mutation.y`, `Subscription.z`) that take an object id.
async fn id_taking_fields(app: &TestApp) -> BTreeSet<String> {
    let (status, body) = app.post(json!({"query": INTROSPECT}), None).await;
    assert_eq!(status, 200, "{body}");
    let schema = &body["data"]["__schema"];
    let types: HashMap<String, Value> = schema["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| (t["name"].as_str().unwrap_or_default().to_owned(), t.clone()))
        .collect();
    let mut found = BTreeSet::new();
    for (root, label) in [
        ("queryType", "Query"),
        ("mutationType", "Mutation"),
        ("subscriptionType", "Subscription"),
    ] {
        let Some(name) = schema[root]["name"].as_str() else {
            continue;
        };
        for field in types[name]["fields"].as_array().into_iter().flatten() {
            let takes_id = field["args"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|arg| carries_id(&types, &named(&arg["type"]), &mut BTreeSet::new()));
            if takes_id {
                found.insert(format!(
                    "{label}.{}",
                    field["name"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    found
}

/// User A's objects, for B to attack.
struct Victim {
    auth: Auth,
    order_id: String,
    session_id: String,
    api_key_id: String,
    withdrawal_id: String,
    address_id: String,
    passkey_id: String,
    content_id: String,
    alert_id: String,
}

enum Expect {
    /// Another user's object: `NOT_FOUND` (or, where API.md says so, null data).
    NotFound,
    NullOrNotFound,
    /// Admin only: a plain user is `FORBIDDEN` whatever the id.
    Forbidden,
    /// A filter by another user's id: an empty connection, never their rows.
    Empty,
    /// A bulk change given another user's ids: nothing changed (a count of 0).
    Zero,
}

/// How B attacks each id-taking field: the document and its variables.
fn attack(field: &str, a: &Victim) -> Option<(Expect, &'static str, Value)> {
    use Expect::*;
    Some(match field {
        "Query.order" => (
            NullOrNotFound,
            "query($id: ID!) { order(id: $id) { id status } }",
            json!({"id": a.order_id}),
        ),
        "Mutation.amendOrder" => (
            NotFound,
            "mutation($id: ID!) { amendOrder(id: $id, input: {quantity: \"0.005\"}) { id } }",
            json!({"id": a.order_id}),
        ),
        "Mutation.cancelOrder" => (
            NotFound,
            "mutation($id: ID!) { cancelOrder(id: $id) { id } }",
            json!({"id": a.order_id}),
        ),
        "Mutation.revokeSession" => (
            NotFound,
            "mutation($id: ID!) { revokeSession(id: $id) }",
            json!({"id": a.session_id}),
        ),
        "Mutation.revokeApiKey" => (
            NotFound,
            "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
            json!({"id": a.api_key_id}),
        ),
        "Mutation.grantRole" => (
            Forbidden,
            "mutation($id: ID!) { grantRole(userId: $id, role: ADMIN) { id } }",
            json!({"id": a.auth.user_id}),
        ),
        "Mutation.revokeRole" => (
            Forbidden,
            "mutation($id: ID!) { revokeRole(userId: $id, role: ADVISOR) { id } }",
            json!({"id": a.auth.user_id}),
        ),
        "Mutation.setRateLimitTier" => (
            Forbidden,
            "mutation($id: ID!) { setRateLimitTier(userId: $id, tier: BASIC) { id } }",
            json!({"id": a.auth.user_id}),
        ),
        "Mutation.creditDeposit" => (
            Forbidden,
            "mutation($id: ID!) { creditDeposit(input: {userId: $id, asset: \"USD\", amount: \"1\", reference: \"attack\"}) { id } }",
            json!({"id": a.auth.user_id}),
        ),
        "Query.withdrawal" => (
            NullOrNotFound,
            "query($id: ID!) { withdrawal(id: $id) { id status } }",
            json!({"id": a.withdrawal_id}),
        ),
        "Mutation.cancelWithdrawal" => (
            NotFound,
            "mutation($id: ID!) { cancelWithdrawal(id: $id) { id } }",
            json!({"id": a.withdrawal_id}),
        ),
        "Mutation.requestWithdrawal" => (
            NotFound,
            "mutation($id: ID!) { requestWithdrawal(input: {asset: \"USD\", amount: \"1\", addressId: $id, idempotencyKey: \"attack\"}) { id } }",
            json!({"id": a.address_id}),
        ),
        "Mutation.removeWithdrawalAddress" => (
            NotFound,
            "mutation($id: ID!) { removeWithdrawalAddress(id: $id) }",
            json!({"id": a.address_id}),
        ),
        "Mutation.removePasskey" => (
            NotFound,
            "mutation($id: ID!) { removePasskey(id: $id) }",
            json!({"id": a.passkey_id}),
        ),
        "Mutation.processWithdrawal" => (
            Forbidden,
            "mutation($id: ID!) { processWithdrawal(id: $id) { id } }",
            json!({"id": a.withdrawal_id}),
        ),
        "Mutation.completeWithdrawal" => (
            Forbidden,
            "mutation($id: ID!) { completeWithdrawal(id: $id, txid: \"attack\") { id } }",
            json!({"id": a.withdrawal_id}),
        ),
        "Mutation.failWithdrawal" => (
            Forbidden,
            "mutation($id: ID!) { failWithdrawal(id: $id, reason: \"attack\") { id } }",
            json!({"id": a.withdrawal_id}),
        ),
        "Query.content" => (
            NullOrNotFound,
            "query($id: ID!) { content(id: $id) { id title } }",
            json!({"id": a.content_id}),
        ),
        "Query.contents" => (
            Empty,
            "query($id: ID!) { contents(filter: {authorId: $id}) { edges { node { id } } } }",
            json!({"id": a.auth.user_id}),
        ),
        "Mutation.updateContent" => (
            NotFound,
            "mutation($id: ID!) { updateContent(id: $id, input: {title: \"defaced\"}) { id } }",
            json!({"id": a.content_id}),
        ),
        "Mutation.submitContent" => (
            NotFound,
            "mutation($id: ID!) { submitContent(id: $id) { id } }",
            json!({"id": a.content_id}),
        ),
        "Mutation.reviseContent" => (
            NotFound,
            "mutation($id: ID!) { reviseContent(id: $id) { id } }",
            json!({"id": a.content_id}),
        ),
        "Mutation.publishContent" => (
            NotFound,
            "mutation($id: ID!) { publishContent(id: $id) { id } }",
            json!({"id": a.content_id}),
        ),
        "Mutation.archiveContent" => (
            NotFound,
            "mutation($id: ID!) { archiveContent(id: $id) { id } }",
            json!({"id": a.content_id}),
        ),
        "Mutation.approveContent" => (
            NotFound,
            "mutation($id: ID!) { approveContent(id: $id) { id } }",
            json!({"id": a.content_id}),
        ),
        "Mutation.rejectContent" => (
            NotFound,
            "mutation($id: ID!) { rejectContent(id: $id, reason: \"attack\") { id } }",
            json!({"id": a.content_id}),
        ),
        "Mutation.requestContentChanges" => (
            NotFound,
            "mutation($id: ID!) { requestContentChanges(id: $id, note: \"attack\") { id } }",
            json!({"id": a.content_id}),
        ),
        "Mutation.reviewKyc" => (
            Forbidden,
            "mutation($id: ID!) { reviewKyc(id: $id, decision: APPROVE) { id } }",
            json!({"id": a.auth.user_id}),
        ),
        "Mutation.resolveComplianceAlert" => (
            Forbidden,
            "mutation($id: ID!) { resolveComplianceAlert(id: $id, note: \"attack\", resolution: DISMISSED) { id } }",
            json!({"id": a.auth.user_id}),
        ),
        "Query.complianceAlerts" => (
            Forbidden,
            "query($id: ID!) { complianceAlerts(userId: $id) { edges { node { id } } } }",
            json!({"id": a.auth.user_id}),
        ),
        "Query.userRiskScore" => (
            Forbidden,
            "query($id: ID!) { userRiskScore(userId: $id) }",
            json!({"id": a.auth.user_id}),
        ),
        "Mutation.deletePriceAlert" => (
            NotFound,
            "mutation($id: ID!) { deletePriceAlert(id: $id) }",
            json!({"id": a.alert_id}),
        ),
        "Mutation.markNotificationsRead" => (
            Zero,
            "mutation($id: ID!) { markNotificationsRead(ids: [$id]) }",
            json!({"id": a.alert_id}),
        ),
        "Query.auditLog" => (
            Forbidden,
            "query($id: ID!) { auditLog(filter: {actorId: $id}) { edges { node { id } } } }",
            json!({"id": a.auth.user_id}),
        ),
        _ => return None,
    })
}

both_backends!(every_object_id_field_refuses_other_users);

async fn every_object_id_field_refuses_other_users(backend: Backend) {
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
    let a = app.register(&email("victim")).await;
    let b = app.register(&email("attacker")).await;
    let body = app
        .gql(
            "mutation($input: CreditDepositInput!) { creditDeposit(input: $input) { id } }",
            json!({"input": {"userId": a.user_id, "asset": "USD", "amount": "1000", "reference": "victim-funds"}}),
            Some(&admin.access),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let body = app
        .gql(
            "mutation { placeOrder(input: {market: \"BTC-USD\", side: BUY, type: LIMIT, quantity: \"0.01\", price: \"100\"}) { id status } }",
            json!({}),
            Some(&a.access),
        )
        .await;
    let order_id = body["data"]["placeOrder"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let sessions = app
        .gql("{ sessions { id } }", json!({}), Some(&a.access))
        .await;
    let session_id = sessions["data"]["sessions"][0]["id"]
        .as_str()
        .expect("session")
        .to_owned();
    let (_, key) = create_key(&app, &a, json!({"label": "victim", "scopes": ["READ"]})).await;
    let added = app
        .gql(
            "mutation { addWithdrawalAddress(input: {asset: \"USD\", address: \"US00-BANK-0001-2345\", label: \"victim\"}) { id } }",
            json!({}),
            Some(&a.access),
        )
        .await;
    let address_id = added["data"]["addWithdrawalAddress"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{added}"))
        .to_owned();
    let requested = app
        .gql(
            "mutation($id: ID!) { requestWithdrawal(input: {asset: \"USD\", amount: \"10\", addressId: $id, idempotencyKey: \"victim\"}) { id status } }",
            json!({"id": address_id}),
            Some(&a.access),
        )
        .await;
    let withdrawal_id = requested["data"]["requestWithdrawal"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{requested}"))
        .to_owned();
    let mut device = crate::passkeys::authenticator();
    let passkey = crate::passkeys::register(&app, &a.access, &mut device, "victim key").await;
    let passkey_id = passkey["data"]["finishPasskeyRegistration"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{passkey}"))
        .to_owned();
    // Both are advisors, so content fields are attacked by a peer, not refused by role.
    for user in [&a, &b] {
        let granted = app
            .gql(
                "mutation($id: ID!) { grantRole(userId: $id, role: ADVISOR) { id } }",
                json!({"id": user.user_id}),
                Some(&admin.access),
            )
            .await;
        assert!(granted["errors"].is_null(), "{granted}");
    }
    let created = app
        .gql(
            "mutation { createContent(input: {title: \"Victim's notes\", body: \"Markets moved.\", topic: \"markets\"}) { id } }",
            json!({}),
            Some(&a.access),
        )
        .await;
    let content_id = created["data"]["createContent"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let alert = app
        .gql(
            "mutation { createPriceAlert(input: {market: \"BTC-USD\", condition: ABOVE, price: \"1000000\"}) { id } }",
            json!({}),
            Some(&a.access),
        )
        .await;
    let alert_id = alert["data"]["createPriceAlert"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{alert}"))
        .to_owned();
    let victim = Victim {
        alert_id,
        content_id,
        auth: a.clone(),
        order_id,
        session_id,
        api_key_id: key["id"].as_str().expect("id").to_owned(),
        withdrawal_id,
        address_id,
        passkey_id,
    };

    let fields = id_taking_fields(&app).await;
    assert!(
        fields.contains("Mutation.cancelOrder"),
        "the walk finds id fields: {fields:?}"
    );
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| attack(f, &victim).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "fields taking an object id without an entry in the attack table: {missing:?}"
    );
    for field in &fields {
        let Some((expect, query, variables)) = attack(field, &victim) else {
            continue;
        };
        let body = app.gql(query, variables, Some(&b.access)).await;
        match expect {
            Expect::NotFound => assert_eq!(code(&body), "NOT_FOUND", "{field}: {body}"),
            Expect::Forbidden => assert_eq!(code(&body), "FORBIDDEN", "{field}: {body}"),
            Expect::Zero => {
                let count = body["data"]
                    .as_object()
                    .and_then(|d| d.values().next().cloned());
                assert_eq!(count, Some(json!(0)), "{field}: {body}");
            }
            Expect::Empty => {
                let connection = body["data"]
                    .as_object()
                    .and_then(|d| d.values().next().cloned())
                    .unwrap_or_default();
                assert_eq!(connection["edges"], json!([]), "{field}: {body}");
            }
            Expect::NullOrNotFound => {
                let data = body["data"]
                    .as_object()
                    .and_then(|d| d.values().next().cloned());
                assert!(
                    code(&body) == "NOT_FOUND"
                        || (body["errors"].is_null() && data == Some(Value::Null)),
                    "{field}: {body}"
                );
            }
        }
        // Malformed and unknown ids are NOT_FOUND too, never an internal error.
        if matches!(expect, Expect::NotFound) {
            let mut bogus = json!({});
            bogus["id"] = json!("not-a-uuid");
            let body = app.gql(query, bogus, Some(&b.access)).await;
            assert_eq!(
                code(&body),
                "NOT_FOUND",
                "{field} with a malformed id: {body}"
            );
        }
    }

    // A's objects came through untouched.
    let body = app
        .gql(
            "query($id: ID!, $w: ID!) { order(id: $id) { status quantity } sessions { id } apiKeys { revokedAt } me { roles } withdrawal(id: $w) { status } withdrawalAddresses { id } passkeys { id } }",
            json!({"id": victim.order_id, "w": victim.withdrawal_id}),
            Some(&a.access),
        )
        .await;
    assert_eq!(body["data"]["order"]["status"], "OPEN", "{body}");
    assert_eq!(body["data"]["order"]["quantity"], "0.01");
    assert_eq!(body["data"]["sessions"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["data"]["apiKeys"][0]["revokedAt"], Value::Null);
    assert_eq!(body["data"]["me"]["roles"], json!(["USER", "ADVISOR"]));
    assert_eq!(body["data"]["withdrawal"]["status"], "PENDING", "{body}");
    assert_eq!(
        body["data"]["withdrawalAddresses"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(body["data"]["passkeys"].as_array().map(Vec::len), Some(1));
    let content = app
        .gql(
            "query($id: ID!) { content(id: $id) { title status } }",
            json!({"id": victim.content_id}),
            Some(&a.access),
        )
        .await;
    assert_eq!(
        content["data"]["content"]["title"], "Victim's notes",
        "{content}"
    );
    assert_eq!(content["data"]["content"]["status"], "DRAFT", "{content}");
    let alerts = app
        .gql("{ priceAlerts { id } }", json!({}), Some(&a.access))
        .await;
    assert_eq!(
        alerts["data"]["priceAlerts"][0]["id"],
        victim.alert_id.as_str(),
        "{alerts}"
    );
}

both_backends!(no_state_changes_over_get_or_a_simple_form_post);

/// CSRF: a browser on another site can send GET and "simple" POSTs (form-encoded,
/// multipart, plain text) without a preflight. None of them may change anything, even
/// carrying valid credentials (which a browser would not add, as tradegraph uses no
/// cookies).
async fn no_state_changes_over_get_or_a_simple_form_post(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let auth = app.register(&email("csrf")).await;
    let mutation = "mutation { setAntiPhishingCode(code: \"pwned-by-csrf\") { id } }";
    let json_body = json!({"query": mutation}).to_string();
    let form_body = format!("query={}", urlencode(mutation));
    for (content_type, body) in [
        ("text/plain", json_body.clone()),
        ("application/x-www-form-urlencoded", form_body.clone()),
        ("multipart/form-data; boundary=x", format!("--x\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n{mutation}\r\n--x--\r\n")),
    ] {
        let response = app
            .http
            .post(app.url("/graphql"))
            .header("content-type", content_type)
            .bearer_auth(&auth.access)
            .body(body)
            .send()
            .await
            .expect("sent");
        // Multipart is accepted only with a preflight-forcing header (uploads), so a
        // form's multipart POST is a 400; the others are not JSON at all: 415.
        let refused = if content_type.starts_with("multipart/") {
            400
        } else {
            415
        };
        assert_eq!(response.status().as_u16(), refused, "{content_type}");
    }
    let response = app
        .http
        .get(app.url(&format!("/graphql?query={}", urlencode(mutation))))
        .bearer_auth(&auth.access)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 405);
    let me = app
        .gql("{ me { antiPhishingCode } }", json!({}), Some(&auth.access))
        .await;
    assert_eq!(me["data"]["me"]["antiPhishingCode"], Value::Null, "{me}");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
