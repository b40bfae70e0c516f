//! The HTTP surface: `/graphql` (POST, GET, WebSocket), `/playground`, `/healthz`,
//! `/readyz`, `/metrics`, and the middleware every request passes: request id, tracing
//! span, latency metric, CORS and panic catching.

pub mod client;
pub mod graphql;
pub mod health;
pub mod multipart;
pub mod playground;
pub mod shared_streams;
pub mod webhooks;
pub mod ws;

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::graphql::AppSchema;
use crate::state::AppState;

/// State of the HTTP layer: the application state and the schema that serves it.
///
/// axum clones the state for every request (and for each middleware), so the
/// application state sits behind one `Arc`: a clone is a reference-count increment.
#[derive(Clone)]
pub struct HttpState {
    pub app: std::sync::Arc<AppState>,
    pub schema: AppSchema,
    /// Subscriptions executed once for all their subscribers (tickers).
    pub shared: std::sync::Arc<shared_streams::SharedStreams>,
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the router with every route and middleware.
pub fn router(state: HttpState) -> Router {
    let cors = cors_layer(&state.app.config.cors_origins);
    Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/webhooks/kyc", axum::routing::post(webhooks::kyc))
        .merge(playground::router())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                // Only method, path and id: never headers or query strings, which carry
                // tokens.
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %request_id,
                    operation = tracing::field::Empty,
                )
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .layer(middleware::from_fn(sanitize_request_id))
        .layer(cors)
        .layer(CatchPanicLayer::custom(|_panic| {
            tracing::error!("request handler panicked");
            graphql::error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                graphql::MediaType::Json,
                ApiError::internal(anyhow::anyhow!("panic")),
            )
        }))
        .with_state(state)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "not found"})),
    )
        .into_response()
}

/// Records latency per route and logs each request's outcome.
async fn observe(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    state
        .app
        .metrics
        .http_duration
        .with_label_values(&[route.as_str()])
        .observe(elapsed.as_secs_f64());
    if route != "/healthz" && route != "/readyz" && route != "/metrics" {
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request finished"
        );
    }
    response
}

/// A client may pass its own `X-Request-Id` to correlate logs, but only a short, plain
/// one: anything else is replaced, so ids cannot smuggle text into logs.
async fn sanitize_request_id(mut request: Request, next: Next) -> Response {
    let valid = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    if !valid {
        request.headers_mut().remove(&REQUEST_ID);
    }
    next.run(request).await
}

/// Cross-origin access for the configured dashboard origins only. Credentials travel in
/// headers, not cookies, so no `Allow-Credentials` is needed.
fn cors_layer(origins: &[String]) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-timestamp"),
            HeaderName::from_static("x-signature"),
            // CSRF guards of multipart uploads (see `multipart`).
            HeaderName::from_static("graphql-preflight"),
            HeaderName::from_static("apollo-require-preflight"),
            HeaderName::from_static("x-requested-with"),
            REQUEST_ID.clone(),
        ])
        .expose_headers([
            REQUEST_ID.clone(),
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
            header::RETRY_AFTER,
        ])
        .max_age(std::time::Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        return base.allow_origin(AllowOrigin::any());
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    base.allow_origin(AllowOrigin::list(list))
}
