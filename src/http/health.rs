//! Probes for orchestrators and the Prometheus endpoint.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::HttpState;

/// `/healthz`: the process is up and serving HTTP. Never touches dependencies, so a
/// database outage does not get healthy replicas restarted.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `/readyz`: whether this replica should receive traffic: the database answers and,
/// when configured, Redis does. 503 with the failing parts otherwise.
pub async fn readyz(State(state): State<HttpState>) -> Response {
    let app = &state.app;
    let database =
        match tokio::time::timeout(std::time::Duration::from_secs(2), app.db.ping()).await {
            Ok(Ok(())) => "ok",
            Ok(Err(error)) => {
                tracing::warn!(%error, "readiness: database unreachable");
                "unavailable"
            }
            Err(_) => "timeout",
        };
    let redis = match &app.redis {
        None => "not_configured",
        Some(redis) => match redis.ping().await {
            Ok(()) => "ok",
            Err(error) => {
                tracing::warn!(error = %error, "readiness: Redis unreachable");
                "unavailable"
            }
        },
    };
    // Whether other replicas' events are arriving: reported, not a readiness condition
    // of its own (the relay resubscribes by itself once Redis answers again).
    let relay = match app.events.relay_subscribed() {
        None => "not_configured",
        Some(true) => "subscribed",
        Some(false) => "reconnecting",
    };
    let ready = database == "ok" && matches!(redis, "ok" | "not_configured");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {"database": database, "redis": redis, "eventRelay": relay},
    });
    (status, Json(body)).into_response()
}

/// `/metrics` in the Prometheus text format.
pub async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.app.metrics.render(),
    )
        .into_response()
}
