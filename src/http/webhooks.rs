//! `POST /webhooks/kyc`: verification results from the KYC provider.
//!
//! The provider signs each delivery: `X-Kyc-Timestamp` (unix seconds) and
//! `X-Kyc-Signature` = hex HMAC-SHA256, keyed with `KYC_WEBHOOK_SECRET`, over
//! `timestamp + "." + body`. A bad signature or a timestamp outside
//! `KYC_WEBHOOK_TOLERANCE_SECS` is refused with 401 before the body is parsed. Each event
//! id is applied once (a redelivery answers 200 `DUPLICATE`), and an event older than
//! the application's newest decision is recorded without effect (`STALE`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::HttpState;
use crate::domain::kyc as rules;
use crate::error::ApiError;
use crate::service::kyc::{self, ProviderEvent};

/// The most a webhook body may hold.
const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

pub async fn kyc(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let config = &state.app.config.kyc;
    if body.len() > MAX_WEBHOOK_BYTES {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "body too large"}),
        );
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (timestamp, signature) = (header("x-kyc-timestamp"), header("x-kyc-signature"));
    if !rules::verify_webhook_signature(
        config.webhook_secret.expose().as_bytes(),
        &timestamp,
        &body,
        &signature,
    ) {
        tracing::warn!("KYC webhook with a bad signature refused");
        return answer(StatusCode::UNAUTHORIZED, json!({"error": "bad signature"}));
    }
    if !rules::timestamp_is_fresh(
        chrono::Utc::now(),
        &timestamp,
        config.webhook_tolerance.as_secs(),
    ) {
        tracing::warn!("KYC webhook with a stale timestamp refused");
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "timestamp outside the accepted window"}),
        );
    }
    let event: ProviderEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(_) => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": "expected {eventId, applicationId, result, occurredAt, reason?}"}),
            )
        }
    };
    match kyc::apply_provider_event(&state.app, event).await {
        Ok(outcome) => answer(StatusCode::OK, json!({"outcome": outcome.as_str()})),
        Err(ApiError::NotFound(_)) => answer(
            StatusCode::NOT_FOUND,
            json!({"error": "unknown application"}),
        ),
        Err(ApiError::BadInput { message, .. }) => {
            answer(StatusCode::BAD_REQUEST, json!({"error": message}))
        }
        Err(error) => {
            if let ApiError::Internal(inner) = &error {
                tracing::error!(error = ?inner, "KYC webhook failed");
            }
            // The provider retries on 5xx, and a retry is safe: events are idempotent.
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal error"}),
            )
        }
    }
}
