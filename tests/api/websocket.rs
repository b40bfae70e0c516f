//! GraphQL over WebSocket: `graphql-transport-ws` to the letter of its protocol, and the
//! legacy `graphql-ws` protocol.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{email, Backend, Frame, TestApp};

const CLOCK: &str = "subscription { serverTime(intervalSeconds: 1) }";

both_backends!(
    transport_ws_subscribes_pings_and_completes,
    transport_ws_closes_on_protocol_violations,
    transport_ws_authenticates_in_connection_init,
    legacy_protocol_streams_data,
);

async fn transport_ws_subscribes_pings_and_completes(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut ws = app.websocket("graphql-transport-ws").await;
    assert_eq!(ws.selected.as_deref(), Some("graphql-transport-ws"));
    ws.init(json!({})).await;

    ws.send(json!({"type": "ping", "payload": {"n": 1}})).await;
    assert_eq!(
        ws.next_json().await,
        json!({"type": "pong", "payload": {"n": 1}})
    );

    ws.send(json!({"id": "c1", "type": "subscribe", "payload": {"query": CLOCK}}))
        .await;
    for _ in 0..2 {
        let next = ws.next_json().await;
        assert_eq!(
            (next["id"].as_str(), next["type"].as_str()),
            (Some("c1"), Some("next")),
            "{next}"
        );
        assert!(next["payload"]["data"]["serverTime"].is_string());
    }
    ws.send(json!({"id": "c1", "type": "complete"})).await;

    // A query runs once and completes.
    ws.send(json!({"id": "q1", "type": "subscribe", "payload": {"query": "{ serverTime }"}}))
        .await;
    let mut saw_result = false;
    loop {
        let message = ws.next_json().await;
        if message["id"] == "c1" {
            continue; // a tick already in flight when the client completed
        }
        match message["type"].as_str() {
            Some("next") => saw_result = message["payload"]["data"]["serverTime"].is_string(),
            Some("complete") => break,
            other => panic!("unexpected {other:?}: {message}"),
        }
    }
    assert!(saw_result);

    // Invalid operations answer `error` and leave the connection open.
    ws.send(
        json!({"id": "bad", "type": "subscribe", "payload": {"query": "subscription { nope }"}}),
    )
    .await;
    let error = ws.next_json().await;
    assert_eq!(
        (error["id"].as_str(), error["type"].as_str()),
        (Some("bad"), Some("error")),
        "{error}"
    );
    assert_eq!(error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next_json().await["type"], "pong");
}

async fn transport_ws_closes_on_protocol_violations(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("WS_INIT_TIMEOUT_SECS", "1")]).await else {
        return;
    };
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": CLOCK}});

    let mut ws = app.websocket("graphql-transport-ws").await;
    ws.send(subscribe.clone()).await;
    ws.expect_close(4401).await;

    let mut ws = app.websocket("graphql-transport-ws").await;
    ws.init(json!({})).await;
    ws.send(json!({"type": "connection_init"})).await;
    ws.expect_close(4429).await;

    let mut ws = app.websocket("graphql-transport-ws").await;
    ws.init(json!(null)).await;
    ws.send(subscribe.clone()).await;
    ws.send(subscribe.clone()).await;
    loop {
        match ws.next().await {
            Frame::Json(message) => assert_eq!(message["type"], "next"),
            Frame::Close(code, reason) => {
                assert_eq!(code, 4409);
                assert_eq!(reason, "Subscriber for 1 already exists");
                break;
            }
            Frame::Ended => panic!("closed without a close frame"),
        }
    }

    let mut ws = app.websocket("graphql-transport-ws").await;
    ws.send_raw("{not json").await;
    ws.expect_close(4400).await;

    let mut ws = app.websocket("graphql-transport-ws").await;
    ws.send(json!({"type": "nonsense"})).await;
    ws.expect_close(4400).await;

    let mut ws = app.websocket("graphql-transport-ws").await;
    ws.expect_close(4408).await;

    // No common subprotocol: the server selects none and closes with 4406; a strict
    // client may already refuse the handshake for want of a selected protocol.
    match TestApp::try_connect_websocket(&app.address, "some-other-protocol").await {
        Ok(mut ws) => {
            assert_eq!(ws.selected, None);
            ws.expect_close(4406).await;
        }
        Err(error) => assert!(error.to_string().contains("rotocol"), "{error}"),
    }
}

async fn transport_ws_authenticates_in_connection_init(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let auth = app.register(&email("ws")).await;
    let me = json!({"id": "m", "type": "subscribe", "payload": {"query": "{ me { id } }"}});

    let mut ws = app.websocket("graphql-transport-ws").await;
    ws.init(json!({"authorization": format!("Bearer {}", auth.access)}))
        .await;
    ws.send(me.clone()).await;
    let next = ws.next_json().await;
    assert_eq!(
        next["payload"]["data"]["me"]["id"],
        auth.user_id.as_str(),
        "{next}"
    );

    let mut anonymous = app.websocket("graphql-transport-ws").await;
    anonymous.init(json!({})).await;
    anonymous.send(me).await;
    let next = anonymous.next_json().await;
    assert_eq!(
        next["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{next}"
    );

    let mut forged = app.websocket("graphql-transport-ws").await;
    forged.send(json!({"type": "connection_init", "payload": {"authorization": "Bearer forged.token.here"}})).await;
    forged.expect_close(4403).await;
}

async fn legacy_protocol_streams_data(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut ws = app.websocket("graphql-ws").await;
    assert_eq!(ws.selected.as_deref(), Some("graphql-ws"));
    ws.init(json!({})).await;
    assert_eq!(ws.next_json().await["type"], "ka");
    ws.send(json!({"id": "1", "type": "start", "payload": {"query": CLOCK}}))
        .await;
    let data = ws.next_json().await;
    assert_eq!(
        (data["id"].as_str(), data["type"].as_str()),
        (Some("1"), Some("data")),
        "{data}"
    );
    assert!(data["payload"]["data"]["serverTime"].is_string());
    ws.send(json!({"id": "1", "type": "stop"})).await;
    ws.send(json!({"id": "2", "type": "start", "payload": {"query": "{ nope }"}}))
        .await;
    loop {
        let message = ws.next_json().await;
        if message["id"] == "2" {
            assert_eq!(message["type"], "error", "{message}");
            break;
        }
    }
    let complete = ws.next_json().await;
    assert_eq!(
        (complete["id"].as_str(), complete["type"].as_str()),
        (Some("2"), Some("complete"))
    );
    ws.send(json!({"type": "connection_terminate"})).await;
    ws.expect_close(1000).await;
}
