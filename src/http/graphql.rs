//! `/graphql` over HTTP, following the GraphQL-over-HTTP specification.
//!
//! The handler is our own rather than the library's so that every rule of the spec and
//! of API.md holds: content negotiation between `application/graphql-response+json`
//! and `application/json`; 4xx for request errors; 405 for a mutation over GET; 415 for
//! a POST that is neither JSON nor a multipart upload carrying a preflight header (which
//! also stops cross-site form posts, see `multipart`); capped batches and
//! body size; a timeout; and credentials checked before anything executes.

use std::net::SocketAddr;
use std::time::Instant;

use async_graphql::parser::types::OperationType;
use async_graphql::{BatchRequest, BatchResponse, Response as GqlResponse, Value};
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::{client, ws, HttpState};
use crate::error::ApiError;
use crate::graphql::context::RequestContext;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// The media type of the response body, chosen from the request's `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    GraphqlResponseJson,
    Json,
}

impl MediaType {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        })
    }
}

/// Picks the response media type. No `Accept` means `application/json`, as the spec
/// asks for compatibility with older clients; `None` means nothing acceptable (406).
pub fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(MediaType::Json);
    };
    let mut best: Option<MediaType> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused {
            continue;
        }
        match media.as_str() {
            GRAPHQL_RESPONSE_JSON => return Some(MediaType::GraphqlResponseJson),
            JSON | "application/*" | "*/*" => best = best.or(Some(MediaType::Json)),
            _ => {}
        }
    }
    best
}

/// An error response outside GraphQL execution, in the GraphQL response shape.
pub fn error_response(status: StatusCode, media: MediaType, error: ApiError) -> Response {
    let body = GqlResponse::from_errors(vec![error.into_server_error()]);
    json_response(status, media, &body)
}

fn json_response<T: serde::Serialize>(status: StatusCode, media: MediaType, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = (status, Bytes::from(bytes)).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, media.content_type());
            response
        }
        Err(error) => {
            tracing::error!(%error, "response serialization failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

pub(super) fn bad_request(
    media: MediaType,
    field: Option<&str>,
    message: impl Into<String>,
) -> Response {
    let error = ApiError::BadInput {
        field: field.map(str::to_owned),
        message: message.into(),
    };
    error_response(StatusCode::BAD_REQUEST, media, error)
}

/// `POST /graphql` with a JSON body: a single request or a batch.
pub async fn post(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    if super::multipart::is_multipart(&headers) {
        return super::multipart::post(state, peer, headers, body, media).await;
    }
    if !is_json_content_type(&headers) {
        let error = ApiError::bad_input(
            "Content-Type",
            "send the request as JSON with `Content-Type: application/json`",
        );
        return error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, media, error);
    }
    let limit = state.app.config.limits.max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let error = ApiError::bad_input(
                "body",
                format!("the request body is larger than {limit} bytes"),
            );
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, media, error);
        }
    };
    let batch: BatchRequest = match serde_json::from_slice(&bytes) {
        Ok(batch) => batch,
        Err(error) => {
            let message = if error.is_data() {
                "the body must be a GraphQL request object {\"query\": ...} or a list of them"
                    .to_owned()
            } else {
                format!(
                    "the body is not valid JSON (line {}, column {})",
                    error.line(),
                    error.column()
                )
            };
            return bad_request(media, Some("body"), message);
        }
    };
    let requests = match batch {
        BatchRequest::Single(request) => vec![request],
        BatchRequest::Batch(requests) => {
            if requests.is_empty() {
                return bad_request(media, Some("body"), "an empty batch has nothing to execute");
            }
            let max = state.app.config.limits.max_batch_size;
            if requests.len() > max {
                let error = ApiError::QueryTooComplex(format!(
                    "the batch holds {} operations; the limit is {max}",
                    requests.len()
                ));
                return error_response(StatusCode::BAD_REQUEST, media, error);
            }
            let signed = client::signed_parts(&headers, "POST", target(&uri), &bytes);
            return execute(&state, &headers, peer, media, requests, true, signed).await;
        }
    };
    let signed = client::signed_parts(&headers, "POST", target(&uri), &bytes);
    execute(&state, &headers, peer, media, requests, false, signed).await
}

/// The request target a signature covers: the path and query string as received.
fn target(uri: &axum::http::Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// `GET /graphql`: a WebSocket upgrade for subscriptions, or a query in the URL.
pub async fn get(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    if is_websocket_upgrade(&parts.headers) {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(upgrade) => ws::upgrade(state, upgrade, &parts.headers, peer, target(&parts.uri)),
            Err(rejection) => rejection.into_response(),
        };
    }
    let headers = parts.headers;
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let query = parts.uri.query().unwrap_or_default();
    let params: GetParams = match serde_urlencoded::from_str(query) {
        Ok(params) => params,
        Err(_) => return bad_request(media, None, "the URL query string is malformed"),
    };
    let Some(query_text) = params.query.filter(|q| !q.trim().is_empty()) else {
        let wants_html = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        if wants_html {
            return Redirect::temporary("/playground").into_response();
        }
        return bad_request(media, Some("query"), "missing the `query` parameter");
    };
    let mut request = async_graphql::Request::new(query_text);
    request.operation_name = params.operation_name;
    for (field, raw) in [
        ("variables", &params.variables),
        ("extensions", &params.extensions),
    ] {
        let Some(raw) = raw else { continue };
        match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Object(map)) => {
                if field == "variables" {
                    request.variables =
                        async_graphql::Variables::from_json(serde_json::Value::Object(map));
                } else {
                    request.extensions = async_graphql::Extensions(
                        map.into_iter()
                            .filter_map(|(k, v)| Value::from_json(v).ok().map(|v| (k, v)))
                            .collect(),
                    );
                }
            }
            Ok(serde_json::Value::Null) => {}
            _ => {
                return bad_request(
                    media,
                    Some(field),
                    format!("`{field}` must be a JSON object"),
                )
            }
        }
    }
    let signed = client::signed_parts(&headers, "GET", target(&parts.uri), &[]);
    execute(&state, &headers, peer, media, vec![request], false, signed).await
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

fn not_acceptable() -> Response {
    error_response(
        StatusCode::NOT_ACCEPTABLE,
        MediaType::Json,
        ApiError::bad_input(
            "Accept",
            "accept application/graphql-response+json or application/json",
        ),
    )
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == JSON || v == GRAPHQL_RESPONSE_JSON)
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// How deeply brackets nest in a query, ignoring strings and comments. Checked before
/// parsing: the parser recurses per level, and a query of a million `{` must be turned
/// away before it can exhaust a worker's stack.
pub fn nesting_depth(query: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
            }
            '{' | '(' | '[' => {
                depth += 1;
                max = max.max(depth);
            }
            '}' | ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The operation a request will run, if its query parses.
fn operation_type(request: &async_graphql::Request) -> Option<OperationType> {
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    let operation = match &request.operation_name {
        Some(name) => document
            .operations
            .iter()
            .find(|(n, _)| n.map(|n| n.as_str()) == Some(name.as_str()))?,
        None => document.operations.iter().next()?,
    };
    Some(operation.1.node.ty)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn execute(
    state: &HttpState,
    headers: &HeaderMap,
    peer: SocketAddr,
    media: MediaType,
    requests: Vec<async_graphql::Request>,
    batched: bool,
    signed: crate::service::api_keys::SignedParts<'_>,
) -> Response {
    let app = &state.app;
    let method = if signed.method == "GET" {
        Method::GET
    } else {
        Method::POST
    };
    let nesting_limit = (app.config.limits.max_depth * 3).max(64);
    for request in &requests {
        if nesting_depth(&request.query) > nesting_limit {
            let error = ApiError::QueryTooComplex(format!(
                "the query nests brackets more than {nesting_limit} levels deep"
            ));
            return error_response(StatusCode::BAD_REQUEST, media, error);
        }
        if method == Method::GET {
            match operation_type(request) {
                Some(OperationType::Mutation) | Some(OperationType::Subscription) => {
                    let mut response = error_response(
                        StatusCode::METHOD_NOT_ALLOWED,
                        media,
                        ApiError::bad_input(
                            "query",
                            "mutations and subscriptions cannot be sent with GET; use POST \
                             (or a WebSocket for subscriptions)",
                        ),
                    );
                    response
                        .headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("POST"));
                    return response;
                }
                _ => {}
            }
        }
    }

    let client = client::client_info(app, headers, Some(peer));
    let viewer = match client::credential(headers) {
        Ok(None) => None,
        Ok(Some(credential)) => {
            match client::authenticate(app, credential, signed, &client).await {
                Ok(viewer) => Some(viewer),
                Err(error) => return refused_credentials(app, media, &client, error).await,
            }
        }
        Err(error) => return refused_credentials(app, media, &client, error).await,
    };
    let buckets =
        crate::ratelimit::request_buckets(&app.config.rate_limits, viewer.as_ref(), &client.ip);
    let rate = app.rate_limiter.check(&buckets).await;
    if let Some(retry_after_secs) = rate.and_then(|r| r.retry_after_secs) {
        app.metrics.record_operation(None, "rate_limited");
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            media,
            ApiError::RateLimited { retry_after_secs },
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        add_rate_headers(&mut response, rate);
        return response;
    }
    let context = RequestContext { viewer, client };
    let names: Vec<Option<String>> = requests.iter().map(|r| r.operation_name.clone()).collect();
    if let Some(Some(name)) = names.first() {
        tracing::Span::current().record("operation", name.as_str());
    }
    let batch = if batched {
        BatchRequest::Batch(
            requests
                .into_iter()
                .map(|r| r.data(context.clone()))
                .collect(),
        )
    } else {
        let request = requests.into_iter().next().map(|r| r.data(context));
        match request {
            Some(request) => BatchRequest::Single(request),
            None => return bad_request(media, Some("body"), "no operation to execute"),
        }
    };

    let started = Instant::now();
    let run = state.schema.execute_batch(batch);
    let response = match tokio::time::timeout(app.config.limits.request_timeout, run).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "request timed out"
            );
            let error = ApiError::internal(anyhow::anyhow!("request timed out"));
            return error_response(StatusCode::SERVICE_UNAVAILABLE, media, error);
        }
    };

    let mut http = match response {
        BatchResponse::Single(response) => {
            let outcome = outcome(&response);
            app.metrics
                .record_operation(names.first().and_then(|n| n.as_deref()), outcome);
            let status = status_of(&response);
            let retry_after = retry_after(&response);
            let extra_headers = response.http_headers.clone();
            let mut http = json_response(status, media, &response);
            http.headers_mut().extend(extra_headers);
            if let Some(seconds) = retry_after.filter(|_| status == StatusCode::TOO_MANY_REQUESTS) {
                http.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            http
        }
        BatchResponse::Batch(responses) => {
            for (response, name) in responses.iter().zip(&names) {
                app.metrics
                    .record_operation(name.as_deref(), outcome(response));
            }
            json_response(StatusCode::OK, media, &responses)
        }
    };
    add_rate_headers(&mut http, rate);
    http
}

/// The IETF `RateLimit-*` fields, so clients can pace themselves before a 429.
fn add_rate_headers(response: &mut Response, rate: Option<crate::ratelimit::Decision>) {
    let Some(rate) = rate else { return };
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(rate.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(rate.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(rate.reset_secs));
}

/// A refused credential costs the client IP's anonymous budget, so guessing keys,
/// signatures or tokens is rate limited like any anonymous traffic.
async fn refused_credentials(
    app: &crate::state::AppState,
    media: MediaType,
    client: &crate::service::ClientInfo,
    error: ApiError,
) -> Response {
    let buckets = crate::ratelimit::request_buckets(&app.config.rate_limits, None, &client.ip);
    let rate = app.rate_limiter.check(&buckets).await;
    if let Some(retry_after_secs) = rate.and_then(|r| r.retry_after_secs) {
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            media,
            ApiError::RateLimited { retry_after_secs },
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        add_rate_headers(&mut response, rate);
        return response;
    }
    let mut response = unauthenticated(media, error);
    add_rate_headers(&mut response, rate);
    response
}

fn unauthenticated(media: MediaType, error: ApiError) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, media, error);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

/// A request error: nothing was executed (parse, validation or limit failure).
pub fn is_request_error(response: &GqlResponse) -> bool {
    response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

fn outcome(response: &GqlResponse) -> &'static str {
    if is_request_error(response) {
        "rejected"
    } else if response.errors.is_empty() {
        "ok"
    } else {
        "error"
    }
}

fn error_code(error: &async_graphql::ServerError) -> Option<&str> {
    match error.extensions.as_ref()?.get("code")? {
        Value::String(code) => Some(code.as_str()),
        _ => None,
    }
}

fn retry_after(response: &GqlResponse) -> Option<u64> {
    response.errors.iter().find_map(|e| {
        (error_code(e) == Some("RATE_LIMITED"))
            .then(|| e.extensions.as_ref()?.get("retryAfterSeconds").cloned())
            .flatten()
            .and_then(|v| match v {
                Value::Number(n) => n.as_u64(),
                _ => None,
            })
    })
}

fn status_of(response: &GqlResponse) -> StatusCode {
    if response.data == Value::Null && retry_after(response).is_some() {
        return StatusCode::TOO_MANY_REQUESTS;
    }
    if is_request_error(response) {
        // An API key calling a field outside its scopes: refused before execution.
        if response
            .errors
            .iter()
            .any(|e| error_code(e) == Some("FORBIDDEN"))
        {
            return StatusCode::FORBIDDEN;
        }
        return StatusCode::BAD_REQUEST;
    }
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn negotiation_prefers_the_graphql_media_type() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(MediaType::Json));
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(MediaType::GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(&accept("application/json")),
            Some(MediaType::Json)
        );
        assert_eq!(negotiate(&accept("*/*")), Some(MediaType::Json));
        assert_eq!(negotiate(&accept("text/html")), None);
        assert_eq!(negotiate(&accept("application/json;q=0")), None);
    }

    #[test]
    fn nesting_ignores_strings_and_comments() {
        assert_eq!(nesting_depth("{ me { id } }"), 2);
        assert_eq!(nesting_depth(r#"{ a(x: "{{{{\"{{") }"#), 2);
        assert_eq!(nesting_depth("# {{{{{\n{ a }"), 1);
        assert_eq!(nesting_depth(&"{".repeat(100_000)), 100_000);
    }

    #[test]
    fn operation_types_are_found_by_name() {
        let request =
            async_graphql::Request::new("query A { a } mutation B { b }").operation_name("B");
        assert_eq!(operation_type(&request), Some(OperationType::Mutation));
        let request = async_graphql::Request::new("{ a }");
        assert_eq!(operation_type(&request), Some(OperationType::Query));
    }
}
