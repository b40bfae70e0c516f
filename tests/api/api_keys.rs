//! API keys attacked: secrets shown once, scopes on every field, keys that are revoked,
//! expired or used from the wrong address, and signed requests replayed, stale or
//! tampered with.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::both_backends;
use crate::helpers::{code, email, redis_url, Auth, Backend, TestApp, JWT_SECRET};
use crate::process::Server;

pub const CREATE: &str = "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id label prefix scopes allowedIps requireSignature expiresAt lastUsedAt revokedAt } } }";

/// Creates a key with a session; returns (secret, apiKey).
pub async fn create_key(app: &TestApp, auth: &Auth, input: Value) -> (String, Value) {
    let body = app
        .gql(CREATE, json!({ "input": input }), Some(&auth.access))
        .await;
    let created = &body["data"]["createApiKey"];
    let secret = created["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("createApiKey: {body}"))
        .to_owned();
    (secret, created["apiKey"].clone())
}

/// POSTs a GraphQL request authenticated by `X-API-Key` plus extra headers.
pub async fn with_key(
    app: &TestApp,
    key: &str,
    query: &str,
    variables: Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = app
        .http
        .post(app.url("/graphql"))
        .header("x-api-key", key)
        .json(&json!({"query": query, "variables": variables}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Hex HMAC-SHA256, computed here independently of the server's code.
pub fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A signed POST: returns (status, body) and the exact headers, to replay them.
async fn signed_post(
    address: &str,
    http: &reqwest::Client,
    prefix: &str,
    secret: &str,
    body: &str,
    timestamp: i64,
) -> (u16, Value) {
    let ts = timestamp.to_string();
    let signature = hmac_hex(secret, &format!("{ts}POST/graphql{body}"));
    send_signed(address, http, prefix, &ts, &signature, body).await
}

async fn send_signed(
    address: &str,
    http: &reqwest::Client,
    prefix: &str,
    ts: &str,
    signature: &str,
    body: &str,
) -> (u16, Value) {
    let response = http
        .post(format!("http://{address}/graphql"))
        .header("content-type", "application/json")
        .header("x-api-key", prefix)
        .header("x-timestamp", ts)
        .header("x-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

both_backends!(a_key_secret_is_shown_once_and_authenticates);

async fn a_key_secret_is_shown_once_and_authenticates(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let auth = app.register(&email("keys")).await;
    let (secret, key) = create_key(&app, &auth, json!({"label": "bot", "scopes": ["READ"]})).await;
    let prefix = key["prefix"].as_str().expect("prefix");
    assert!(prefix.starts_with("tgk_"), "{key}");
    assert!(secret.starts_with(&format!("{prefix}_")), "{secret}");
    assert!(secret.len() > prefix.len() + 40);

    // Listing shows the key but never the secret again.
    let listed = app
        .gql(
            "{ apiKeys { id prefix scopes lastUsedAt } }",
            json!({}),
            Some(&auth.access),
        )
        .await;
    assert_eq!(listed["data"]["apiKeys"][0]["id"], key["id"], "{listed}");
    assert!(!listed.to_string().contains(&secret[prefix.len() + 1..]));

    let (status, body) = with_key(
        &app,
        &secret,
        "{ me { id } currentApiKey { id prefix scopes } }",
        json!({}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["id"], auth.user_id.as_str());
    assert_eq!(body["data"]["currentApiKey"]["id"], key["id"]);
    assert_eq!(body["data"]["currentApiKey"]["scopes"], json!(["READ"]));
    let with_session = app
        .gql("{ currentApiKey { id } }", json!({}), Some(&auth.access))
        .await;
    assert_eq!(with_session["data"]["currentApiKey"], Value::Null);

    // A guessed secret with a real prefix, and rubbish, are refused alike.
    for wrong in [
        format!("{prefix}_{}", "A".repeat(43)),
        "nonsense".to_owned(),
    ] {
        let (status, body) = with_key(&app, &wrong, "{ me { id } }", json!({}), &[]).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(code(&body), "UNAUTHENTICATED");
        assert_eq!(body["errors"][0]["message"], "invalid API key");
    }

    // lastUsedAt is written off the request path: wait for it to land.
    let mut last_used = Value::Null;
    for _ in 0..50 {
        let listed = app
            .gql("{ apiKeys { lastUsedAt } }", json!({}), Some(&auth.access))
            .await;
        last_used = listed["data"]["apiKeys"][0]["lastUsedAt"].clone();
        if !last_used.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(last_used.is_string(), "lastUsedAt recorded");
}

both_backends!(scopes_are_enforced_and_no_key_manages_credentials);

async fn scopes_are_enforced_and_no_key_manages_credentials(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let auth = app.register(&email("scopes")).await;
    let (read, _) = create_key(&app, &auth, json!({"label": "r", "scopes": ["READ"]})).await;
    let (trade, _) = create_key(&app, &auth, json!({"label": "t", "scopes": ["TRADE"]})).await;
    let (all, all_key) = create_key(
        &app,
        &auth,
        json!({"label": "all", "scopes": ["READ", "TRADE", "WITHDRAW"]}),
    )
    .await;
    let place = "mutation { placeOrder(input: {market: \"BTC-USD\", side: BUY, type: LIMIT, quantity: \"0.01\", price: \"100\"}) { id } }";

    let (_, body) = with_key(&app, &read, "{ balances { total } }", json!({}), &[]).await;
    assert!(body["errors"].is_null(), "READ may read: {body}");
    let (_, body) = with_key(&app, &read, place, json!({}), &[]).await;
    assert_eq!(code(&body), "FORBIDDEN", "READ cannot trade: {body}");
    let (_, body) = with_key(&app, &trade, "{ balances { total } }", json!({}), &[]).await;
    assert_eq!(code(&body), "FORBIDDEN", "TRADE alone cannot read: {body}");
    let (_, body) = with_key(&app, &trade, place, json!({}), &[]).await;
    assert_eq!(
        code(&body),
        "INSUFFICIENT_FUNDS",
        "TRADE passes the gate and reaches the order rules: {body}"
    );
    let (_, body) = with_key(
        &app,
        &trade,
        "{ serverTime markets { symbol } }",
        json!({}),
        &[],
    )
    .await;
    assert!(
        body["errors"].is_null(),
        "public fields take any key: {body}"
    );

    // No key, whatever its scopes, manages keys, sessions, passwords or the account.
    let key_id = all_key["id"].as_str().expect("id");
    let closed = [
        "{ apiKeys { id } }".to_owned(),
        "{ sessions { id } }".to_owned(),
        "{ exportMyData }".to_owned(),
        "mutation { createApiKey(input: {label: \"x\", scopes: [READ, TRADE, WITHDRAW]}) { secret } }".to_owned(),
        format!("mutation {{ revokeApiKey(id: \"{key_id}\") {{ id }} }}"),
        "mutation { logout }".to_owned(),
        format!("mutation {{ revokeSession(id: \"{key_id}\") }}"),
        "mutation { changePassword(currentPassword: \"a\", newPassword: \"b\") }".to_owned(),
        "mutation { setAntiPhishingCode(code: \"phish\") { id } }".to_owned(),
        "mutation { deleteMyAccount(password: \"x\") }".to_owned(),
        "{ ledgerCheck { ok } }".to_owned(),
        // Hiding a closed field behind fragments or next to an allowed one changes nothing.
        "query { ...F } fragment F on Query { ... on Query { apiKeys { id } } }".to_owned(),
        "mutation { placeOrder(input: {market: \"BTC-USD\", side: BUY, type: LIMIT, quantity: \"0.01\", price: \"100\"}) { id } createApiKey(input: {label: \"y\", scopes: [READ]}) { secret } }".to_owned(),
    ];
    for query in &closed {
        let (_, body) = with_key(&app, &all, query, json!({}), &[]).await;
        assert_eq!(code(&body), "FORBIDDEN", "{query}: {body}");
        assert!(body["data"].is_null(), "nothing ran: {body}");
    }
    let listed = app
        .gql("{ apiKeys { id } }", json!({}), Some(&auth.access))
        .await;
    assert_eq!(
        listed["data"]["apiKeys"].as_array().map(Vec::len),
        Some(3),
        "no key was minted by a key: {listed}"
    );
}

both_backends!(revoked_expired_and_misplaced_keys_are_refused);

async fn revoked_expired_and_misplaced_keys_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("TRUST_PROXY_HEADERS", "true")]).await else {
        return;
    };
    let auth = app.register(&email("refused")).await;
    let me = "{ me { id } }";

    // IP allowlist, IPv4 and IPv6 ranges; the client IP comes from X-Forwarded-For
    // only because TRUST_PROXY_HEADERS is on here.
    let (fenced, key) = create_key(
        &app,
        &auth,
        json!({"label": "fenced", "scopes": ["READ"], "allowedIps": ["203.0.113.0/24", "2001:db8::/32"]}),
    )
    .await;
    assert_eq!(
        key["allowedIps"],
        json!(["203.0.113.0/24", "2001:db8::/32"])
    );
    for (ip, allowed) in [
        ("203.0.113.9", true),
        ("203.0.114.9", false),
        ("2001:db8:1::5", true),
        ("2001:db9::1", false),
        ("10.0.0.1, 203.0.113.7", true),
        ("203.0.113.7, 10.0.0.1", false),
    ] {
        let (status, body) =
            with_key(&app, &fenced, me, json!({}), &[("x-forwarded-for", ip)]).await;
        if allowed {
            assert_eq!(status, 200, "{ip}: {body}");
        } else {
            assert_eq!(
                (status, code(&body)),
                (401, "UNAUTHENTICATED"),
                "{ip}: {body}"
            );
        }
    }
    let (status, _) = with_key(&app, &fenced, me, json!({}), &[]).await;
    assert_eq!(status, 401, "127.0.0.1 is outside the allowlist");

    // Bad allowlist entries and other bad input name their field.
    for (input, field) in [
        (
            json!({"label": "x", "scopes": ["READ"], "allowedIps": ["10.0.0.1/8"]}),
            "input.allowedIps",
        ),
        (
            json!({"label": "x", "scopes": ["READ"], "allowedIps": ["example.com"]}),
            "input.allowedIps",
        ),
        (json!({"label": "x", "scopes": []}), "input.scopes"),
        (json!({"label": " ", "scopes": ["READ"]}), "input.label"),
        (
            json!({"label": "x", "scopes": ["READ"], "expiresAt": "2000-01-01T00:00:00Z"}),
            "input.expiresAt",
        ),
        (
            json!({"label": "x", "scopes": ["READ"], "requireSignature": true, "signatureWindowSeconds": 0}),
            "input.signatureWindowSeconds",
        ),
    ] {
        let body = app
            .gql(CREATE, json!({"input": input}), Some(&auth.access))
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }

    // Revoked: refused at once; revoking twice is harmless; another user's key is
    // NOT_FOUND.
    let (revoked, key) = create_key(&app, &auth, json!({"label": "old", "scopes": ["READ"]})).await;
    let revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }";
    let other = app.register(&email("other")).await;
    let body = app
        .gql(revoke, json!({"id": key["id"]}), Some(&other.access))
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    let (status, _) = with_key(&app, &revoked, me, json!({}), &[]).await;
    assert_eq!(status, 200, "still usable after the other user's attempt");
    let body = app
        .gql(revoke, json!({"id": key["id"]}), Some(&auth.access))
        .await;
    let revoked_at = body["data"]["revokeApiKey"]["revokedAt"].clone();
    assert!(revoked_at.is_string(), "{body}");
    let again = app
        .gql(revoke, json!({"id": key["id"]}), Some(&auth.access))
        .await;
    assert_eq!(again["data"]["revokeApiKey"]["revokedAt"], revoked_at);
    let (status, body) = with_key(&app, &revoked, me, json!({}), &[]).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"), "{body}");

    // Expired.
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let (expiring, _) = create_key(
        &app,
        &auth,
        json!({"label": "brief", "scopes": ["READ"], "expiresAt": soon}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let (status, body) = with_key(&app, &expiring, me, json!({}), &[]).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"), "{body}");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("expired"));
}

both_backends!(signed_requests_are_accepted_once_within_their_window);

async fn signed_requests_are_accepted_once_within_their_window(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let auth = app.register(&email("signed")).await;
    let (secret, key) = create_key(
        &app,
        &auth,
        json!({"label": "signer", "scopes": ["READ"], "requireSignature": true}),
    )
    .await;
    assert_eq!(key["requireSignature"], true);
    let prefix = key["prefix"].as_str().expect("prefix");
    let body = json!({"query": "{ me { id } }"}).to_string();

    // The secret of a signing key never travels: sending it is refused.
    let (status, _) = with_key(&app, &secret, "{ me { id } }", json!({}), &[]).await;
    assert_eq!(status, 401);
    let (status, _) = with_key(&app, prefix, "{ me { id } }", json!({}), &[]).await;
    assert_eq!(status, 401, "a prefix without a signature");

    let ts = now_ms();
    let (status, answer) = signed_post(&app.address, &app.http, prefix, &secret, &body, ts).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["me"]["id"], auth.user_id.as_str());

    // Replayed byte for byte.
    let (status, answer) = signed_post(&app.address, &app.http, prefix, &secret, &body, ts).await;
    assert_eq!(
        (status, code(&answer)),
        (401, "UNAUTHENTICATED"),
        "{answer}"
    );
    assert!(answer["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("already used"));

    // Stale and future timestamps outside the 5 s window, correctly signed.
    for skew in [-6_000, 6_000, -60_000] {
        let (status, answer) = signed_post(
            &app.address,
            &app.http,
            prefix,
            &secret,
            &body,
            now_ms() + skew,
        )
        .await;
        assert_eq!(status, 401, "skew {skew}: {answer}");
    }

    // A signature over one body does not cover another, nor another path or key.
    let ts = now_ms().to_string();
    let signature = hmac_hex(&secret, &format!("{ts}POST/graphql{body}"));
    let other_body = json!({"query": "{ balances { total } }"}).to_string();
    let (status, _) = send_signed(
        &app.address,
        &app.http,
        prefix,
        &ts,
        &signature,
        &other_body,
    )
    .await;
    assert_eq!(status, 401, "tampered body");
    let wrong_path = hmac_hex(&secret, &format!("{ts}POST/graphql?x=1{body}"));
    let (status, _) = send_signed(&app.address, &app.http, prefix, &ts, &wrong_path, &body).await;
    assert_eq!(status, 401, "signed for another path");
    let wrong_key = hmac_hex("not-the-secret", &format!("{ts}POST/graphql{body}"));
    let (status, _) = send_signed(&app.address, &app.http, prefix, &ts, &wrong_key, &body).await;
    assert_eq!(status, 401, "signed with another key");
    // The untampered request with that timestamp still works once.
    let (status, _) = send_signed(&app.address, &app.http, prefix, &ts, &signature, &body).await;
    assert_eq!(status, 200);

    // GET signs the path with its query string and an empty body.
    let query = "/graphql?query=%7B%20me%20%7B%20id%20%7D%20%7D";
    let ts = now_ms().to_string();
    let signature = hmac_hex(&secret, &format!("{ts}GET{query}"));
    let response = app
        .http
        .get(app.url(query))
        .header("x-api-key", prefix)
        .header("x-timestamp", &ts)
        .header("x-signature", &signature)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);

    // WebSocket: connection_init carries prefix, timestamp and signature.
    let ts = now_ms().to_string();
    let init = json!({
        "apiKey": prefix,
        "timestamp": ts,
        "signature": hmac_hex(&secret, &format!("{ts}GET/graphql")),
    });
    let mut ws = app.websocket("graphql-transport-ws").await;
    ws.init(init.clone()).await;
    ws.send(json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { serverTime }"}}))
        .await;
    let next = ws.next_json().await;
    assert_eq!(next["type"], "next", "{next}");
    let mut replayed = app.websocket("graphql-transport-ws").await;
    replayed
        .send(json!({"type": "connection_init", "payload": init}))
        .await;
    replayed.expect_close(4403).await;
}

both_backends!(plain_keys_work_in_connection_init_and_bad_ones_are_closed);

async fn plain_keys_work_in_connection_init_and_bad_ones_are_closed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let auth = app.register(&email("wskey")).await;
    let (secret, _) = create_key(&app, &auth, json!({"label": "ws", "scopes": ["READ"]})).await;
    let mut ws = app.websocket("graphql-transport-ws").await;
    ws.init(json!({"apiKey": secret})).await;
    ws.send(json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { serverTime }"}}))
        .await;
    assert_eq!(ws.next_json().await["type"], "next");
    let mut bad = app.websocket("graphql-transport-ws").await;
    bad.send(json!({"type": "connection_init", "payload": {"apiKey": format!("{secret}x")}}))
        .await;
    bad.expect_close(4403).await;
}

both_backends!(revoking_a_key_closes_the_connections_it_opened);

/// Revoking a key closes the WebSockets it opened (4403, naming the key), and only
/// those: the owner's other key and session keep serving.
async fn revoking_a_key_closes_the_connections_it_opened(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let auth = app.register(&email("wsrevoke")).await;
    let (secret, key) = create_key(&app, &auth, json!({"label": "gone", "scopes": ["READ"]})).await;
    let (other, _) = create_key(&app, &auth, json!({"label": "kept", "scopes": ["READ"]})).await;
    let mut revoked = app.websocket("graphql-transport-ws").await;
    revoked.init(json!({"apiKey": secret})).await;
    let mut kept = app.websocket("graphql-transport-ws").await;
    kept.init(json!({"apiKey": other})).await;
    let mut session = app.websocket("graphql-transport-ws").await;
    session
        .init(json!({"authorization": format!("Bearer {}", auth.access)}))
        .await;

    let key_id = key["id"].as_str().expect("id");
    let revoke = format!("mutation {{ revokeApiKey(id: \"{key_id}\") {{ id revokedAt }} }}");
    let body = app.gql(&revoke, json!({}), Some(&auth.access)).await;
    assert!(
        body["data"]["revokeApiKey"]["revokedAt"].is_string(),
        "{body}"
    );
    let reason = revoked.expect_close(4403).await;
    assert!(reason.contains("API key"), "{reason}");
    for ws in [&mut kept, &mut session] {
        ws.send(json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { serverTime }"}}))
            .await;
        assert_eq!(ws.next_json().await["type"], "next");
    }
}

/// Two replicas sharing PostgreSQL and Redis: a signature used on one is refused by the
/// other. (Without Redis each replica remembers only what it saw itself.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_used_on_one_replica_is_refused_by_another() {
    let Some(redis) = redis_url() else {
        eprintln!("!!! SKIPPED: needs TEST_REDIS_URL");
        return;
    };
    let prefix_ns = format!("tradegraph:test:{}:", uuid::Uuid::new_v4().simple());
    let Some(app) = TestApp::spawn_with(
        Backend::Postgres,
        &[
            ("REDIS_URL", redis.as_str()),
            ("REDIS_KEY_PREFIX", prefix_ns.as_str()),
        ],
    )
    .await
    else {
        return;
    };
    let replica = Server::start(&[
        ("DATABASE_URL", app.database_url.as_str()),
        ("JWT_SECRET", JWT_SECRET),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", prefix_ns.as_str()),
    ]);
    let auth = app.register(&email("replicas")).await;
    let (secret, key) = create_key(
        &app,
        &auth,
        json!({"label": "signer", "scopes": ["READ"], "requireSignature": true}),
    )
    .await;
    let prefix = key["prefix"].as_str().expect("prefix");
    let body = json!({"query": "{ me { id } }"}).to_string();
    let ts = now_ms();
    let (status, _) = signed_post(&app.address, &app.http, prefix, &secret, &body, ts).await;
    assert_eq!(status, 200);
    let (status, answer) =
        signed_post(&replica.address, &app.http, prefix, &secret, &body, ts).await;
    assert_eq!(status, 401, "replayed against the other replica: {answer}");
    // A fresh signature works on the replica: the key itself is fine there.
    let (status, _) = signed_post(
        &replica.address,
        &app.http,
        prefix,
        &secret,
        &body,
        now_ms() + 1,
    )
    .await;
    assert_eq!(status, 200);
}

both_backends!(guessing_keys_is_rate_limited_and_scope_refusals_are_403);

async fn guessing_keys_is_rate_limited_and_scope_refusals_are_403(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "3")]).await
    else {
        return;
    };
    let mut statuses = Vec::new();
    for n in 0..4 {
        let guess = format!("tgk_AAAAAAAAAAA{n}_{}", "B".repeat(43));
        let (status, _) = with_key(&app, &guess, "{ me { id } }", json!({}), &[]).await;
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 429],
        "refused credentials spend the IP's budget"
    );

    let other = TestApp::spawn(backend).await.expect("second server");
    let auth = other.register(&email("forbidden")).await;
    let (read, _) = create_key(&other, &auth, json!({"label": "r", "scopes": ["READ"]})).await;
    let (status, body) = with_key(&other, &read, "mutation { logout }", json!({}), &[]).await;
    assert_eq!((status, code(&body)), (403, "FORBIDDEN"), "{body}");
}
