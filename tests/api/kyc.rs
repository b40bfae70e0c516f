//! KYC end to end: tier limits on trading and what `kycLimits` shows, document uploads
//! through the GraphQL multipart spec, the provider webhook, screening holds and the
//! officers' review, blocked countries, and transaction-monitoring alerts.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::both_backends;
use crate::helpers::{code, email, Auth, Backend, TestApp, KYC_WEBHOOK_SECRET};

both_backends!(
    tier_limits_gate_trading_and_kyc_limits_shows_usage,
    uploads_are_limited_sniffed_and_stored_encrypted,
    webhook_checks_signature_time_replay_and_order,
    screening_hits_are_held_for_officer_review,
    blocked_countries_cannot_pass_basic,
    monitoring_raises_alerts_with_evidence,
);

const SUBMIT: &str = "mutation($i: SubmitKycInput!) { submitKyc(input: $i) { id status requestedTier country personalData { firstName lastName } screeningHits { name list score } documents { sha256 contentType sizeBytes } decisions { status source note } } }";
const APPLICATION: &str = "{ kycApplication { id status decisions { status source } } }";
const LIMITS: &str = "{ kycLimits { tier limits { canTrade dailyWithdrawalUsd dailyDepositUsd } depositedTodayUsd withdrawnTodayUsd depositRemainingTodayUsd withdrawalRemainingTodayUsd tiers { tier canTrade } } }";
const ME: &str = "{ me { kycTier } }";
const DEPOSIT: &str = "mutation($i: CreditDepositInput!) { creditDeposit(input: $i) { id } }";
const PLACE: &str = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }";
const REVIEW: &str = "mutation($id: ID!, $d: KycReviewDecision!, $n: String) { reviewKyc(id: $id, decision: $d, note: $n) { id status decisions { status source note } } }";
const QUEUE: &str =
    "{ kycReviewQueue { edges { node { id status userId screeningHits { name } } } } }";
const GRANT: &str = "mutation($u: ID!, $r: Role!) { grantRole(userId: $u, role: $r) { id } }";

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR fake image body";
const PDF: &[u8] = b"%PDF-1.7\n1 0 obj << >> endobj\n%%EOF\n";
const GIF: &[u8] = b"GIF89a not accepted";

fn personal(first: &str, last: &str, country: &str) -> Value {
    json!({
        "firstName": first,
        "lastName": last,
        "dateOfBirth": "1985-04-12",
        "addressLine": "1 Example Street",
        "city": "Sampletown",
        "postalCode": "12345",
        "country": country,
    })
}

async fn deposit(app: &TestApp, admin: &Auth, user: &Auth, asset: &str, amount: &str) {
    let variables = json!({"i": {"userId": user.user_id, "asset": asset, "amount": amount, "reference": uuid::Uuid::new_v4().to_string()}});
    let body = app.gql(DEPOSIT, variables, Some(&admin.access)).await;
    assert!(body["data"]["creditDeposit"].is_object(), "{body}");
}

async fn officer(app: &TestApp, admin: &Auth) -> Auth {
    let officer = app.register(&email("officer")).await;
    let body = app
        .gql(
            GRANT,
            json!({"u": officer.user_id, "r": "COMPLIANCE_OFFICER"}),
            Some(&admin.access),
        )
        .await;
    assert!(body["data"]["grantRole"].is_object(), "{body}");
    officer
}

/// Sends a GraphQL multipart request; returns (status, body).
async fn multipart(
    app: &TestApp,
    token: &str,
    operations: Value,
    files: &[(&str, &[u8])],
    preflight: bool,
) -> (u16, Value) {
    let boundary = "----tradegraph-test-boundary-7d1f";
    let mut map = serde_json::Map::new();
    for (i, _) in files.iter().enumerate() {
        map.insert(i.to_string(), json!([format!("variables.i.documents.{i}")]));
    }
    let mut body: Vec<u8> = Vec::new();
    let mut part = |headers: String, content: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    };
    part(
        "Content-Disposition: form-data; name=\"operations\"".into(),
        operations.to_string().as_bytes(),
    );
    part(
        "Content-Disposition: form-data; name=\"map\"".into(),
        Value::Object(map).to_string().as_bytes(),
    );
    for (i, (name, bytes)) in files.iter().enumerate() {
        part(
            format!(
                "Content-Disposition: form-data; name=\"{i}\"; filename=\"{name}\"\r\nContent-Type: image/png"
            ),
            bytes,
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut request = app
        .http
        .post(app.url("/graphql"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .bearer_auth(token)
        .body(body);
    if preflight {
        request = request.header("GraphQL-Preflight", "1");
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn submit_operations(input: Value, files: usize) -> Value {
    let mut input = input;
    input["documents"] = Value::Array(vec![Value::Null; files]);
    json!({"query": SUBMIT, "variables": {"i": input}})
}

fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Delivers a webhook; returns (status, body).
async fn webhook(app: &TestApp, body: &Value, timestamp: i64, secret: &str) -> (u16, Value) {
    let text = body.to_string();
    let timestamp = timestamp.to_string();
    let signature = sign(secret, &timestamp, &text);
    let response = app
        .http
        .post(app.url("/webhooks/kyc"))
        .header("content-type", "application/json")
        .header("x-kyc-timestamp", &timestamp)
        .header("x-kyc-signature", format!("sha256={signature}"))
        .body(text)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn event(id: &str, application: &str, result: &str, occurred_at: &str) -> Value {
    json!({"eventId": id, "applicationId": application, "result": result, "occurredAt": occurred_at})
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn tier_limits_gate_trading_and_kyc_limits_shows_usage(backend: Backend) {
    let strict = "UNVERIFIED:notrade:0:1000,BASIC:trade:2000:20000,\
                  INTERMEDIATE:trade:50000:250000,ADVANCED:trade:unlimited:unlimited";
    let Some((app, admin)) =
        TestApp::spawn_with_admin_and(backend, &[("KYC_TIER_LIMITS", strict)]).await
    else {
        return;
    };
    let user = app.register(&email("kyc-trader")).await;
    deposit(&app, &admin, &user, "USD", "250").await;
    let order = json!({"market": "BTC-USD", "side": "BUY", "type": "LIMIT", "price": "100", "quantity": "0.1"});

    let body = app.gql(LIMITS, json!({}), Some(&user.access)).await;
    let limits = &body["data"]["kycLimits"];
    assert_eq!(limits["tier"], "UNVERIFIED", "{body}");
    assert_eq!(limits["limits"]["canTrade"], false);
    assert_eq!(limits["limits"]["dailyWithdrawalUsd"], "0");
    assert_eq!(limits["depositedTodayUsd"], "250");
    assert_eq!(limits["depositRemainingTodayUsd"], "750");
    assert_eq!(limits["withdrawnTodayUsd"], "0");
    assert_eq!(limits["withdrawalRemainingTodayUsd"], "0");
    assert_eq!(limits["tiers"][3]["tier"], "ADVANCED");

    let refused = app
        .gql(PLACE, json!({"i": order.clone()}), Some(&user.access))
        .await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    let message = refused["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("KYC tier UNVERIFIED"), "{message}");

    // BASIC through an application the provider verifies.
    let body = app
        .gql(
            SUBMIT,
            json!({"i": personal("Ada", "Example", "DE")}),
            Some(&user.access),
        )
        .await;
    let application = &body["data"]["submitKyc"];
    assert_eq!(application["status"], "PENDING", "{body}");
    assert_eq!(application["requestedTier"], "BASIC");
    assert_eq!(application["personalData"]["firstName"], "Ada");
    let id = application["id"].as_str().expect("id").to_owned();
    let (status, _) = webhook(
        &app,
        &event(
            "evt-trade-1",
            &id,
            "VERIFIED",
            &chrono::Utc::now().to_rfc3339(),
        ),
        now(),
        KYC_WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(status, 200);

    // The tier shows on a fresh request (the viewer is read per request).
    let body = app.gql(ME, json!({}), Some(&user.access)).await;
    assert_eq!(body["data"]["me"]["kycTier"], "BASIC", "{body}");
    let placed = app
        .gql(PLACE, json!({"i": order.clone()}), Some(&user.access))
        .await;
    assert_eq!(placed["data"]["placeOrder"]["status"], "OPEN", "{placed}");
    let body = app.gql(LIMITS, json!({}), Some(&user.access)).await;
    assert_eq!(
        body["data"]["kycLimits"]["limits"]["dailyWithdrawalUsd"],
        "2000"
    );
    assert_eq!(
        body["data"]["kycLimits"]["withdrawalRemainingTodayUsd"],
        "2000"
    );

    // The default configuration lets an UNVERIFIED user trade.
    drop(app);
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let user = app.register(&email("kyc-open")).await;
    deposit(&app, &admin, &user, "USD", "250").await;
    let placed = app
        .gql(PLACE, json!({"i": order.clone()}), Some(&user.access))
        .await;
    assert_eq!(placed["data"]["placeOrder"]["status"], "OPEN", "{placed}");
}

async fn uploads_are_limited_sniffed_and_stored_encrypted(backend: Backend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let upload_dir = dir.path().to_string_lossy().to_string();
    let Some(app) = TestApp::spawn_with(
        backend,
        &[
            ("KYC_UPLOAD_DIR", upload_dir.as_str()),
            ("KYC_MAX_UPLOAD_BYTES", "1024"),
            ("KYC_MAX_UPLOAD_FILES", "3"),
        ],
    )
    .await
    else {
        return;
    };
    let user = app.register(&email("kyc-upload")).await;
    let mut input = personal("Grace", "Sample", "NL");
    input["requestedTier"] = json!("INTERMEDIATE");

    // CSRF: no preflight header, no upload.
    let (status, body) = multipart(
        &app,
        &user.access,
        submit_operations(input.clone(), 1),
        &[("id.png", PNG)],
        false,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["field"],
        "GraphQL-Preflight"
    );

    // Wrong magic bytes, whatever the name and declared type say.
    let (status, body) = multipart(
        &app,
        &user.access,
        submit_operations(input.clone(), 2),
        &[("id.png", PNG), ("address.png", GIF)],
        true,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["field"],
        "input.documents.1"
    );

    // Too big.
    let big = [PNG, &[0u8; 1100][..]].concat();
    let (status, body) = multipart(
        &app,
        &user.access,
        submit_operations(input.clone(), 1),
        &[("big.png", &big)],
        true,
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(code(&body), "BAD_USER_INPUT");

    // Too many.
    let (status, body) = multipart(
        &app,
        &user.access,
        submit_operations(input.clone(), 4),
        &[
            ("a.png", PNG),
            ("b.png", PNG),
            ("c.png", PNG),
            ("d.png", PNG),
        ],
        true,
    )
    .await;
    assert_eq!(status, 413, "{body}");

    // INTERMEDIATE needs a document.
    let body = app
        .gql(SUBMIT, json!({"i": input.clone()}), Some(&user.access))
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "input.documents");

    // Nothing was stored by the refused requests.
    let count = walk(dir.path()).len();
    assert_eq!(count, 0, "refused uploads leave no file");

    let (status, body) = multipart(
        &app,
        &user.access,
        submit_operations(input.clone(), 2),
        &[("passport.png", PNG), ("bill.pdf", PDF)],
        true,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let application = &body["data"]["submitKyc"];
    assert_eq!(application["status"], "PENDING", "{body}");
    let documents = application["documents"].as_array().expect("documents");
    assert_eq!(documents.len(), 2);
    assert_eq!(documents[0]["contentType"], "image/png");
    assert_eq!(documents[1]["contentType"], "application/pdf");
    assert_eq!(documents[1]["sizeBytes"], PDF.len());
    let sha = {
        use sha2::Digest;
        hex::encode(Sha256::digest(PNG))
    };
    assert_eq!(documents[0]["sha256"], sha.as_str());
    let stored = dir.path().join(&sha[..2]).join(&sha);
    let on_disk = std::fs::read(&stored).expect("stored under its hash");
    assert!(
        !on_disk.windows(4).any(|w| w == b"IHDR"),
        "documents are encrypted at rest"
    );
    assert_eq!(walk(dir.path()).len(), 2);

    // One open application at a time.
    let (_, body) = multipart(
        &app,
        &user.access,
        submit_operations(input, 1),
        &[("passport.png", PNG)],
        true,
    )
    .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

async fn webhook_checks_signature_time_replay_and_order(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.register(&email("kyc-hook")).await;
    let body = app
        .gql(
            SUBMIT,
            json!({"i": personal("Linus", "Example", "FI")}),
            Some(&user.access),
        )
        .await;
    let id = body["data"]["submitKyc"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let t1 = chrono::Utc::now();
    let earlier = (t1 - chrono::Duration::minutes(5)).to_rfc3339();
    let verified = event("evt-1", &id, "VERIFIED", &t1.to_rfc3339());

    let (status, _) = webhook(&app, &verified, now(), "not-the-secret-at-all").await;
    assert_eq!(status, 401, "bad signature");
    let (status, _) = webhook(&app, &verified, now() - 3600, KYC_WEBHOOK_SECRET).await;
    assert_eq!(status, 401, "stale timestamp");
    // A signature over a different body.
    let response = app
        .http
        .post(app.url("/webhooks/kyc"))
        .header("x-kyc-timestamp", now().to_string())
        .header(
            "x-kyc-signature",
            sign(KYC_WEBHOOK_SECRET, &now().to_string(), "{}"),
        )
        .body(verified.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 401);
    let body = app.gql(ME, json!({}), Some(&user.access)).await;
    assert_eq!(body["data"]["me"]["kycTier"], "UNVERIFIED");

    let (status, body) = webhook(&app, &verified, now(), KYC_WEBHOOK_SECRET).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("APPLIED")));
    let body = app.gql(ME, json!({}), Some(&user.access)).await;
    assert_eq!(body["data"]["me"]["kycTier"], "BASIC");

    // Replayed: nothing happens twice.
    let (status, body) = webhook(&app, &verified, now(), KYC_WEBHOOK_SECRET).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("DUPLICATE")));

    // An older rejection arriving late does not override the newer verification.
    let late = event("evt-0", &id, "REJECTED", &earlier);
    let (status, body) = webhook(&app, &late, now(), KYC_WEBHOOK_SECRET).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("STALE")));
    let body = app.gql(APPLICATION, json!({}), Some(&user.access)).await;
    let application = &body["data"]["kycApplication"];
    assert_eq!(application["status"], "APPROVED", "{body}");
    let sources: Vec<&str> = application["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter_map(|d| d["source"].as_str())
        .collect();
    assert_eq!(sources, vec!["APPLICANT", "PROVIDER"]);
    let body = app.gql(ME, json!({}), Some(&user.access)).await;
    assert_eq!(body["data"]["me"]["kycTier"], "BASIC");

    // Unknown application; malformed body (signed correctly).
    let unknown = event(
        "evt-x",
        &uuid::Uuid::new_v4().to_string(),
        "VERIFIED",
        &earlier,
    );
    let (status, _) = webhook(&app, &unknown, now(), KYC_WEBHOOK_SECRET).await;
    assert_eq!(status, 404);
    let (status, _) = webhook(&app, &json!({"nope": 1}), now(), KYC_WEBHOOK_SECRET).await;
    assert_eq!(status, 400);

    // The submission, decision and tier change are in the user's security log.
    let body = app
        .gql(
            "{ securityLog { edges { node { action } } } }",
            json!({}),
            Some(&user.access),
        )
        .await;
    let actions: Vec<&str> = body["data"]["securityLog"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter_map(|e| e["node"]["action"].as_str())
        .collect();
    for action in ["kyc.submitted", "kyc.approved", "user.kyc_tier_changed"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}

async fn screening_hits_are_held_for_officer_review(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let officer = officer(&app, &admin).await;
    let user = app.register(&email("kyc-held")).await;
    let body = app
        .gql(
            SUBMIT,
            json!({"i": personal("VEXMOOR", "Zoltán", "AT")}),
            Some(&user.access),
        )
        .await;
    let application = &body["data"]["submitKyc"];
    assert_eq!(application["status"], "IN_REVIEW", "{body}");
    assert_eq!(application["screeningHits"][0]["name"], "Zoltan Vexmoor");
    assert_eq!(application["screeningHits"][0]["list"], "SANCTIONS");
    let id = application["id"].as_str().expect("id").to_owned();

    // The provider's verification does not release a held application.
    let (status, body) = webhook(
        &app,
        &event(
            "evt-held",
            &id,
            "VERIFIED",
            &chrono::Utc::now().to_rfc3339(),
        ),
        now(),
        KYC_WEBHOOK_SECRET,
    )
    .await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("UNCHANGED")));
    let body = app.gql(ME, json!({}), Some(&user.access)).await;
    assert_eq!(body["data"]["me"]["kycTier"], "UNVERIFIED");

    // Only officers see the queue and decide.
    let body = app.gql(QUEUE, json!({}), Some(&user.access)).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let denied = app
        .gql(
            REVIEW,
            json!({"id": id, "d": "APPROVE"}),
            Some(&user.access),
        )
        .await;
    assert_eq!(code(&denied), "FORBIDDEN", "{denied}");
    let body = app.gql(QUEUE, json!({}), Some(&officer.access)).await;
    let queued: Vec<&Value> = body["data"]["kycReviewQueue"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| &e["node"])
        .collect();
    assert!(
        queued
            .iter()
            .any(|n| n["id"] == id.as_str() && n["status"] == "IN_REVIEW"),
        "{body}"
    );
    let body = app
        .gql(
            REVIEW,
            json!({"id": id, "d": "REJECT"}),
            Some(&officer.access),
        )
        .await;
    assert_eq!(
        code(&body),
        "BAD_USER_INPUT",
        "a rejection needs a note: {body}"
    );
    let body = app
        .gql(
            REVIEW,
            json!({"id": id, "d": "APPROVE", "n": "different person: date of birth differs"}),
            Some(&officer.access),
        )
        .await;
    let reviewed = &body["data"]["reviewKyc"];
    assert_eq!(reviewed["status"], "APPROVED", "{body}");
    let last = reviewed["decisions"]
        .as_array()
        .and_then(|d| d.last())
        .cloned()
        .expect("a decision");
    assert_eq!(last["source"], "OFFICER");
    let body = app.gql(ME, json!({}), Some(&user.access)).await;
    assert_eq!(body["data"]["me"]["kycTier"], "BASIC");
    let again = app
        .gql(
            REVIEW,
            json!({"id": id, "d": "REJECT", "n": "late"}),
            Some(&officer.access),
        )
        .await;
    assert_eq!(code(&again), "CONFLICT", "{again}");
    let missing = app
        .gql(
            REVIEW,
            json!({"id": uuid::Uuid::new_v4().to_string(), "d": "APPROVE"}),
            Some(&officer.access),
        )
        .await;
    assert_eq!(code(&missing), "NOT_FOUND", "{missing}");
}

async fn blocked_countries_cannot_pass_basic(backend: Backend) {
    let Some((app, admin)) =
        TestApp::spawn_with_admin_and(backend, &[("KYC_BLOCKED_COUNTRIES", "KP,XX")]).await
    else {
        return;
    };
    let officer = officer(&app, &admin).await;
    let user = app.register(&email("kyc-blocked")).await;
    let body = app
        .gql(
            SUBMIT,
            json!({"i": personal("Erin", "Example", "xx")}),
            Some(&user.access),
        )
        .await;
    let application = &body["data"]["submitKyc"];
    assert_eq!(application["status"], "REJECTED", "{body}");
    assert_eq!(application["country"], "XX");
    let id = application["id"].as_str().expect("id").to_owned();
    let (status, body) = webhook(
        &app,
        &event(
            "evt-blocked",
            &id,
            "VERIFIED",
            &chrono::Utc::now().to_rfc3339(),
        ),
        now(),
        KYC_WEBHOOK_SECRET,
    )
    .await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("UNCHANGED")));
    let body = app
        .gql(
            REVIEW,
            json!({"id": id, "d": "APPROVE"}),
            Some(&officer.access),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    let body = app.gql(ME, json!({}), Some(&user.access)).await;
    assert_eq!(body["data"]["me"]["kycTier"], "UNVERIFIED");

    // A rejected application does not block a new one; a bad country code is input.
    let body = app
        .gql(
            SUBMIT,
            json!({"i": personal("Erin", "Example", "Germany")}),
            Some(&user.access),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "input.country",
        "{body}"
    );
    let body = app
        .gql(
            SUBMIT,
            json!({"i": personal("Erin", "Example", "DE")}),
            Some(&user.access),
        )
        .await;
    assert_eq!(body["data"]["submitKyc"]["status"], "PENDING", "{body}");
}

async fn monitoring_raises_alerts_with_evidence(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin(backend).await else {
        return;
    };
    let officer = officer(&app, &admin).await;
    let user = app.register(&email("kyc-monitored")).await;
    let quiet = app.register(&email("kyc-quiet")).await;
    deposit(&app, &admin, &quiet, "USD", "500").await;
    deposit(&app, &admin, &user, "USD", "12000").await;
    for _ in 0..3 {
        deposit(&app, &admin, &user, "USD", "9500").await;
    }
    let alerts = "query($u: ID, $s: ComplianceAlertStatus) { complianceAlerts(userId: $u, status: $s) { edges { node { id rule score status subjectType evidence } } } }";
    let body = app
        .gql(alerts, json!({"u": user.user_id}), Some(&user.access))
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let body = app
        .gql(alerts, json!({"u": user.user_id}), Some(&officer.access))
        .await;
    let nodes: Vec<Value> = body["data"]["complianceAlerts"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    let rules: Vec<&str> = nodes.iter().filter_map(|n| n["rule"].as_str()).collect();
    assert_eq!(rules, vec!["LARGE_AMOUNT", "STRUCTURING"], "{body}");
    assert_eq!(nodes[0]["evidence"]["usd"], "12000");
    assert_eq!(nodes[0]["subjectType"], "ledger_entry");
    assert_eq!(
        nodes[1]["evidence"]["transfers"].as_array().map(Vec::len),
        Some(3)
    );
    let body = app
        .gql(alerts, json!({"u": quiet.user_id}), Some(&officer.access))
        .await;
    assert_eq!(
        body["data"]["complianceAlerts"]["edges"],
        json!([]),
        "{body}"
    );

    let score = "query($u: ID!) { userRiskScore(userId: $u) }";
    let body = app
        .gql(score, json!({"u": user.user_id}), Some(&officer.access))
        .await;
    assert_eq!(body["data"]["userRiskScore"], 65, "{body}");

    let resolve = "mutation($id: ID!, $r: ComplianceAlertStatus!, $n: String!) { resolveComplianceAlert(id: $id, resolution: $r, note: $n) { status resolutionNote } }";
    let body = app
        .gql(
            resolve,
            json!({"id": nodes[0]["id"], "r": "DISMISSED", "n": "salary from a known employer"}),
            Some(&officer.access),
        )
        .await;
    assert_eq!(
        body["data"]["resolveComplianceAlert"]["status"], "DISMISSED",
        "{body}"
    );
    let body = app
        .gql(score, json!({"u": user.user_id}), Some(&officer.access))
        .await;
    assert_eq!(body["data"]["userRiskScore"], 45, "{body}");
    let body = app
        .gql(
            resolve,
            json!({"id": nodes[0]["id"], "r": "ESCALATED", "n": "again"}),
            Some(&officer.access),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
}
