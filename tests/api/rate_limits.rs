//! Rate limits attacked: by tier, per API key and user, on order placement and
//! sign-in, shared across replicas through Redis, and falling back to per-process
//! limits when Redis is down.

use serde_json::json;

use crate::api_keys::{create_key, with_key};
use crate::both_backends;
use crate::helpers::{code, email, redis_url, Backend, TestApp, JWT_SECRET, PASSWORD};
use crate::process::Server;

async fn get_limit(app: &TestApp, token: &str) -> (u16, String, String) {
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": "{ serverTime }"}))
        .send()
        .await
        .expect("sent");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    (
        response.status().as_u16(),
        header("ratelimit-limit"),
        header("ratelimit-remaining"),
    )
}

both_backends!(tiers_set_each_users_budget_and_keys_share_it);

async fn tiers_set_each_users_budget_and_keys_share_it(backend: Backend) {
    let Some((app, admin)) = TestApp::spawn_with_admin_and(
        backend,
        &[
            ("RATE_LIMIT_BASIC_PER_MINUTE", "3"),
            ("RATE_LIMIT_STANDARD_PER_MINUTE", "6"),
            ("RATE_LIMIT_PRO_PER_MINUTE", "50"),
            ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "50"),
        ],
    )
    .await
    else {
        return;
    };
    let user = app.register(&email("tiered")).await;
    let (_, limit, _) = get_limit(&app, &user.access).await;
    assert_eq!(limit, "6", "new accounts are STANDARD");

    let set = "mutation($id: ID!, $tier: RateLimitTier!) { setRateLimitTier(userId: $id, tier: $tier) { rateLimitTier } }";
    let body = app
        .gql(
            set,
            json!({"id": user.user_id, "tier": "PRO"}),
            Some(&user.access),
        )
        .await;
    assert_eq!(
        code(&body),
        "FORBIDDEN",
        "users cannot raise their own tier"
    );
    let body = app
        .gql(
            set,
            json!({"id": user.user_id, "tier": "BASIC"}),
            Some(&admin.access),
        )
        .await;
    assert_eq!(
        body["data"]["setRateLimitTier"]["rateLimitTier"], "BASIC",
        "{body}"
    );

    // BASIC: 3 a minute for the user, whether through the session or an API key
    // (the key has its own bucket too, but the user's is shared): creating the key
    // with the session spent one.
    let other = app.register(&email("keyholder")).await;
    let body = app
        .gql(
            set,
            json!({"id": other.user_id, "tier": "BASIC"}),
            Some(&admin.access),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let (secret, _) = create_key(&app, &other, json!({"label": "k", "scopes": ["READ"]})).await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let (status, _) = with_key(&app, &secret, "{ serverTime }", json!({}), &[]).await;
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200]);
    let (status, body) = with_key(&app, &secret, "{ serverTime }", json!({}), &[]).await;
    assert_eq!((status, code(&body)), (429, "RATE_LIMITED"), "{body}");
    assert!(body["errors"][0]["extensions"]["retryAfterSeconds"]
        .as_u64()
        .is_some());
    let (status, _, _) = get_limit(&app, &other.access).await;
    assert_eq!(status, 429, "the session shares the user's budget");
    let (status, _, _) = get_limit(&app, &user.access).await;
    assert_eq!(status, 200, "other users are unaffected");
}

both_backends!(order_placement_and_sign_in_have_tighter_limits);

async fn order_placement_and_sign_in_have_tighter_limits(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        &[
            ("RATE_LIMIT_ORDERS_PER_MINUTE", "2"),
            ("RATE_LIMIT_LOGIN_PER_MINUTE", "3"),
        ],
    )
    .await
    else {
        return;
    };
    let address = email("orders");
    let auth = app.register(&address).await;
    let place = "mutation { placeOrder(input: {market: \"BTC-USD\", side: BUY, type: LIMIT, quantity: \"0.01\", price: \"100\"}) { id } }";
    for _ in 0..2 {
        let body = app.gql(place, json!({}), Some(&auth.access)).await;
        assert_eq!(code(&body), "INSUFFICIENT_FUNDS", "{body}");
    }
    let (status, body) = app.post(json!({"query": place}), Some(&auth.access)).await;
    assert_eq!((status, code(&body)), (429, "RATE_LIMITED"), "{body}");
    assert!(body["errors"][0]["extensions"]["retryAfterSeconds"].as_u64() >= Some(1));
    let body = app
        .gql("{ balances { total } }", json!({}), Some(&auth.access))
        .await;
    assert!(
        body["errors"].is_null(),
        "other requests still pass: {body}"
    );

    // Aliases cannot multiply placements within one request.
    let fresh = app.register(&email("aliases")).await;
    let aliased = "mutation { a: placeOrder(input: {market: \"BTC-USD\", side: BUY, type: LIMIT, quantity: \"0.01\", price: \"100\"}) { id } b: placeOrder(input: {market: \"BTC-USD\", side: BUY, type: LIMIT, quantity: \"0.01\", price: \"100\"}) { id } c: placeOrder(input: {market: \"BTC-USD\", side: BUY, type: LIMIT, quantity: \"0.01\", price: \"100\"}) { id } }";
    let (status, body) = app
        .post(json!({"query": aliased}), Some(&fresh.access))
        .await;
    assert_eq!((status, code(&body)), (429, "RATE_LIMITED"), "{body}");

    // Sign-in: 3 attempts a minute per IP, even with the right password.
    for _ in 0..3 {
        let body = app.login(&address, PASSWORD).await;
        assert!(body["data"]["login"].is_object(), "{body}");
    }
    let body = app.login(&address, PASSWORD).await;
    assert_eq!(code(&body), "RATE_LIMITED", "{body}");
}

both_backends!(limits_fall_back_to_the_process_when_redis_is_down);

/// Redis at a port nobody listens on: requests are served, and limited per process.
async fn limits_fall_back_to_the_process_when_redis_is_down(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        &[
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("RATE_LIMIT_PER_MINUTE", "4"),
        ],
    )
    .await
    else {
        return;
    };
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, _) = app.post(json!({"query": "{ serverTime }"}), None).await;
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429]);
}

/// Two replicas sharing Redis share each budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_limits_through_redis() {
    let Some(redis) = redis_url() else {
        eprintln!("!!! SKIPPED: needs TEST_REDIS_URL");
        return;
    };
    let namespace = format!("tradegraph:test:{}:", uuid::Uuid::new_v4().simple());
    let vars = [
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", namespace.as_str()),
        ("RATE_LIMIT_PER_MINUTE", "4"),
    ];
    let Some(app) = TestApp::spawn_with(Backend::Postgres, &vars).await else {
        return;
    };
    let mut replica_vars = vars.to_vec();
    replica_vars.push(("DATABASE_URL", app.database_url.as_str()));
    replica_vars.push(("JWT_SECRET", JWT_SECRET));
    let replica = Server::start(&replica_vars);
    let auth = app.register(&email("shared")).await;
    let send = |address: String| {
        let http = app.http.clone();
        let token = auth.access.clone();
        async move {
            http.post(format!("http://{address}/graphql"))
                .bearer_auth(token)
                .json(&json!({"query": "{ serverTime }"}))
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }
    };
    let mut statuses = Vec::new();
    for address in [
        &app.address,
        &replica.address,
        &app.address,
        &replica.address,
    ] {
        statuses.push(send(address.clone()).await);
    }
    assert_eq!(statuses, [200, 200, 200, 200]);
    assert_eq!(send(replica.address.clone()).await, 429);
    assert_eq!(send(app.address.clone()).await, 429);
}

both_backends!(websocket_subscribes_spend_the_same_budget);

async fn websocket_subscribes_spend_the_same_budget(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("RATE_LIMIT_PER_MINUTE", "2")]).await else {
        return;
    };
    let mut ws = app.websocket("graphql-transport-ws").await;
    ws.init(json!({})).await;
    let subscribe = |id: &str| json!({"id": id, "type": "subscribe", "payload": {"query": "subscription { serverTime(intervalSeconds: 60) }"}});
    for id in ["1", "2"] {
        ws.send(subscribe(id)).await;
        let message = ws.next_json().await;
        assert_eq!(message["type"], "next", "{message}");
    }
    ws.send(subscribe("3")).await;
    let refused = ws.next_json().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "3");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"], "RATE_LIMITED",
        "{refused}"
    );
}
