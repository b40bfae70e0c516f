//! Who is calling: client address, user agent and credentials from request headers.

use std::net::SocketAddr;

use axum::http::HeaderMap;

use crate::auth::Viewer;
use crate::error::ApiError;
use crate::service::api_keys::SignedParts;
use crate::service::{self, ClientInfo};
use crate::state::AppState;

/// The client's address and agent. `X-Forwarded-For` is believed only behind a proxy
/// the operator vouches for (`TRUST_PROXY_HEADERS`), or anyone could pick an address
/// and dodge per-IP throttling.
pub fn client_info(state: &AppState, headers: &HeaderMap, peer: Option<SocketAddr>) -> ClientInfo {
    let forwarded = state
        .config
        .trust_proxy_headers
        .then(|| headers.get("x-forwarded-for"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(|ip| ip.trim().to_owned())
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
    let ip = forwarded
        .or_else(|| peer.map(|p| p.ip().to_string()))
        .unwrap_or_else(|| "unknown".to_owned());
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ClientInfo { ip, user_agent }
}

/// Credentials as presented, before they are checked.
pub enum Credential<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
}

/// Reads the credential from the `Authorization` or `X-API-Key` header.
pub fn credential(headers: &HeaderMap) -> Result<Option<Credential<'_>>, ApiError> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::Unauthenticated("malformed Authorization header".into()))?;
        return bearer(value).map(Some);
    }
    if let Some(value) = headers.get("x-api-key") {
        let value = value
            .to_str()
            .map_err(|_| ApiError::Unauthenticated("malformed X-API-Key header".into()))?;
        return Ok(Some(Credential::ApiKey(value)));
    }
    Ok(None)
}

/// Parses `Bearer <token>` (scheme case-insensitive, per RFC 7235).
pub fn bearer(value: &str) -> Result<Credential<'_>, ApiError> {
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthenticated(
            "the Authorization header must be `Bearer <accessToken>`".into(),
        ));
    }
    Ok(Credential::Bearer(token.trim()))
}

/// What a signed API-key request signed, from its headers and the request itself.
pub fn signed_parts<'a>(
    headers: &'a HeaderMap,
    method: &'a str,
    path: &'a str,
    body: &'a [u8],
) -> SignedParts<'a> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    SignedParts {
        timestamp: header("x-timestamp"),
        signature: header("x-signature"),
        method,
        path,
        body,
    }
}

/// Checks a credential and returns the viewer it stands for. `signed` and `client`
/// matter to API keys only (signature, IP allowlist).
pub async fn authenticate(
    state: &AppState,
    credential: Credential<'_>,
    signed: SignedParts<'_>,
    client: &ClientInfo,
) -> Result<Viewer, ApiError> {
    match credential {
        Credential::Bearer(token) => service::auth::authenticate(state, token).await,
        Credential::ApiKey(key) => {
            service::api_keys::authenticate(state, key, signed, &client.ip).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert!(matches!(
            bearer("Bearer abc"),
            Ok(Credential::Bearer("abc"))
        ));
        assert!(matches!(
            bearer("bearer  abc "),
            Ok(Credential::Bearer("abc"))
        ));
        assert!(bearer("Basic abc").is_err());
        assert!(bearer("Bearer").is_err());
        assert!(bearer("abc").is_err());
    }
}
