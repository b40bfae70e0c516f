//! GraphQL over HTTP: media types, status codes, methods, bodies, batches, probes.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{code, Backend, TestApp};

both_backends!(
    responses_negotiate_media_types,
    request_errors_are_4xx_and_field_errors_200,
    get_runs_queries_but_never_mutations,
    bodies_must_be_json_and_bounded,
    batches_are_capped,
    probes_and_metrics_answer,
    request_ids_are_echoed,
    production_hides_the_schema,
);

async fn responses_negotiate_media_types(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let send = |accept: Option<&'static str>| {
        let mut request = app
            .http
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(r#"{"query":"{ serverTime }"}"#);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.send()
    };
    let content_type = |r: &reqwest::Response| {
        r.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_owned()
    };
    let r = send(Some(
        "application/graphql-response+json, application/json;q=0.9",
    ))
    .await
    .expect("sent");
    assert_eq!(r.status().as_u16(), 200);
    assert!(content_type(&r).starts_with("application/graphql-response+json"));
    let body: Value = r.json().await.expect("json");
    assert!(body["data"]["serverTime"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(
        body["extensions"]["cost"]["complexity"].as_u64().is_some(),
        "{body}"
    );

    let r = send(None).await.expect("sent");
    assert!(content_type(&r).starts_with("application/json"));
    let r = send(Some("application/json")).await.expect("sent");
    assert!(content_type(&r).starts_with("application/json"));
    let r = send(Some("text/html")).await.expect("sent");
    assert_eq!(r.status().as_u16(), 406);
}

async fn request_errors_are_4xx_and_field_errors_200(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (status, body) = app.post(json!({"query": "{ nope }"}), None).await;
    assert_eq!((status, code(&body)), (400, "BAD_USER_INPUT"), "{body}");
    assert!(body.get("data").is_none() || body["data"].is_null());
    let (status, body) = app.post(json!({"query": "{ serverTime "}), None).await;
    assert_eq!(
        (status, code(&body)),
        (400, "BAD_USER_INPUT"),
        "syntax error: {body}"
    );
    let (status, body) = app.post(json!({"variables": {}}), None).await;
    assert_eq!(
        (status, code(&body)),
        (400, "BAD_USER_INPUT"),
        "missing query: {body}"
    );
    // An execution error (no token for `me`) still answers 200 with data: null.
    let (status, body) = app.post(json!({"query": "{ me { id } }"}), None).await;
    assert_eq!((status, code(&body)), (200, "UNAUTHENTICATED"), "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["me"]));
    // Every error carries a code; nothing leaks internals.
    let (_, body) = app
        .post(
            json!({"query": "query($x: Int!) { serverTime }", "variables": {"x": "nan"}}),
            None,
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
}

async fn get_runs_queries_but_never_mutations(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let r = app
        .http
        .get(app.url("/graphql"))
        .query(&[
            ("query", "query Now { serverTime }"),
            ("operationName", "Now"),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert!(body["data"]["serverTime"].is_string(), "{body}");

    let r = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "mutation { logout }")])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = app
        .http
        .get(app.url("/graphql"))
        .query(&[
            ("query", "query A { serverTime } mutation B { logout }"),
            ("operationName", "B"),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 405, "the selected operation decides");

    let r = app
        .http
        .get(app.url("/graphql"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 400);
    let r = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "{ serverTime }"), ("variables", "[1]")])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 400);
}

async fn bodies_must_be_json_and_bounded(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("MAX_BODY_BYTES", "4096")]).await else {
        return;
    };
    let post = |content_type: &'static str, body: String| {
        app.http
            .post(app.url("/graphql"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let form = post(
        "application/x-www-form-urlencoded",
        "query=mutation%20%7B%20logout%20%7D".into(),
    )
    .await
    .expect("sent");
    assert_eq!(
        form.status().as_u16(),
        415,
        "a cross-site form post is refused"
    );
    let text = post("text/plain", r#"{"query":"{ serverTime }"}"#.into())
        .await
        .expect("sent");
    assert_eq!(text.status().as_u16(), 415);
    let body: Value = text.json().await.expect("json");
    assert_eq!(code(&body), "BAD_USER_INPUT");

    let malformed = post("application/json", r#"{"query": "{ serverTime }""#.into())
        .await
        .expect("sent");
    assert_eq!(malformed.status().as_u16(), 400);
    let body: Value = malformed.json().await.expect("json");
    assert_eq!(body["errors"][0]["extensions"]["field"], "body", "{body}");
    let wrong_shape = post("application/json", "42".into()).await.expect("sent");
    assert_eq!(wrong_shape.status().as_u16(), 400);

    let huge = format!(
        r#"{{"query":"{{ serverTime }}","variables":{{"pad":"{}"}}}}"#,
        "x".repeat(10_000)
    );
    let too_big = post("application/json", huge).await.expect("sent");
    assert_eq!(too_big.status().as_u16(), 413);
    // Still serving after all of that.
    let (status, _) = app.post(json!({"query": "{ serverTime }"}), None).await;
    assert_eq!(status, 200);
}

async fn batches_are_capped(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("MAX_BATCH_SIZE", "3")]).await else {
        return;
    };
    let op = json!({"query": "{ serverTime }"});
    let (status, body) = app
        .post(json!([op, {"query": "{ me { id } }"}]), None)
        .await;
    assert_eq!(status, 200);
    let items = body.as_array().expect("a list of responses");
    assert_eq!(items.len(), 2);
    assert!(items[0]["data"]["serverTime"].is_string());
    assert_eq!(code(&items[1]), "UNAUTHENTICATED");
    let (status, body) = app.post(json!([op, op, op, op]), None).await;
    assert_eq!((status, code(&body)), (400, "QUERY_TOO_COMPLEX"), "{body}");
    let (status, body) = app.post(json!([]), None).await;
    assert_eq!((status, code(&body)), (400, "BAD_USER_INPUT"));
}

async fn probes_and_metrics_answer(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let health: Value = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    let r = app.http.get(app.url("/readyz")).send().await.expect("sent");
    assert_eq!(r.status().as_u16(), 200);
    let ready: Value = r.json().await.expect("json");
    assert_eq!(ready["checks"]["database"], "ok");
    let expected_redis = if backend == Backend::Postgres && crate::helpers::redis_url().is_some() {
        "ok"
    } else {
        "not_configured"
    };
    assert_eq!(ready["checks"]["redis"], expected_redis, "{ready}");

    app.post(
        json!({"query": "query Clock { serverTime }", "operationName": "Clock"}),
        None,
    )
    .await;
    app.post(json!({"query": "{ nope }"}), None).await;
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"tradegraph_graphql_requests_total{operation="Clock",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"outcome="rejected""#));
    assert!(metrics.contains("tradegraph_http_request_duration_seconds_bucket"));
    let statements = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tradegraph_sql_statements_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("sql statement counter");
    assert!(statements > 0);
    assert!(metrics.contains("tradegraph_websocket_connections"));
    assert!(metrics.contains("tradegraph_subscriptions_active"));
}

async fn request_ids_are_echoed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let r = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.headers()["x-request-id"], "client-chosen-42");
    let r = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "bad id\twith tab")
        .send()
        .await
        .expect("sent");
    let generated = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        generated.len(),
        36,
        "a fresh UUID replaces an unsafe id: {generated}"
    );
    let r = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({"query": "{ serverTime }"}))
        .send()
        .await
        .expect("sent");
    assert!(r.headers().contains_key("x-request-id"));
}

async fn production_hides_the_schema(backend: Backend) {
    let introspect = json!({"query": "{ __schema { queryType { name } } }"});
    let Some(app) = TestApp::spawn_with(backend, &[("APP_ENV", "production")]).await else {
        return;
    };
    let (_, body) = app.post(introspect.clone(), None).await;
    assert!(
        body["data"]["__schema"].is_null(),
        "introspection is off: {body}"
    );
    let (_, body) = app.post(json!({"query": "{ serverTim }"}), None).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains("Did you mean"),
        "no suggestions: {message}"
    );
    drop(app);

    let Some(app) = TestApp::spawn_with(
        backend,
        &[("APP_ENV", "production"), ("ENABLE_INTROSPECTION", "true")],
    )
    .await
    else {
        return;
    };
    let (_, body) = app.post(introspect, None).await;
    assert_eq!(
        body["data"]["__schema"]["queryType"]["name"], "Query",
        "{body}"
    );
}

both_backends!(requests_are_rate_limited_per_user_and_ip);

async fn requests_are_rate_limited_per_user_and_ip(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("RATE_LIMIT_PER_MINUTE", "5")]).await else {
        return;
    };
    let auth = app.register(&crate::helpers::email("limited")).await;
    let send = |token: Option<String>| {
        let mut request = app
            .http
            .post(app.url("/graphql"))
            .json(&json!({"query": "{ serverTime }"}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let response = send(Some(auth.access.clone())).await.expect("sent");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "5");
        remaining.push(
            response.headers()["ratelimit-remaining"]
                .to_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["4", "3", "2", "1", "0"]);
    let refused = send(Some(auth.access.clone())).await.expect("sent");
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap_or_default()
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(code(&body), "RATE_LIMITED");
    assert_eq!(
        body["errors"][0]["extensions"]["retryAfterSeconds"],
        retry_after
    );
    // Anonymous requests are counted per IP, apart from the user's budget (the
    // registration above used one of them).
    let anonymous = send(None).await.expect("sent");
    assert_eq!(anonymous.status().as_u16(), 200);
    assert_eq!(anonymous.headers()["ratelimit-remaining"], "3");
}

both_backends!(cors_allows_only_configured_origins);

async fn cors_allows_only_configured_origins(backend: Backend) {
    let Some(app) =
        TestApp::spawn_with(backend, &[("CORS_ORIGINS", "https://dash.example.com")]).await
    else {
        return;
    };
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://dash.example.com").await.expect("sent");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://dash.example.com"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let other = preflight("https://evil.example.net").await.expect("sent");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
