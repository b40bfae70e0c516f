//! `POST /graphql` as `multipart/form-data`: the GraphQL multipart request spec
//! (<https://github.com/jaydenseric/graphql-multipart-request-spec>), for file uploads.
//!
//! Parts come in the spec's order: `operations` (the JSON request), `map` (which file
//! goes to which variable), then the files. Limits: `operations` and `map` within
//! `MAX_BODY_BYTES`, at most `KYC_MAX_UPLOAD_FILES` files of `KYC_MAX_UPLOAD_BYTES`
//! each. Files are spooled to anonymous temporary files that vanish when dropped.
//!
//! CSRF: unlike a JSON POST, a multipart POST is a "simple" request that any web page's
//! form may send cross-site with no CORS preflight. So a multipart request must carry
//! a header no form can set: `GraphQL-Preflight: 1` (or `Apollo-Require-Preflight`
//! or `X-Requested-With`), which forces browsers to ask first and CORS to decide.

use std::collections::HashMap;
use std::io::{Seek, Write};
use std::net::SocketAddr;

use async_graphql::{BatchRequest, UploadValue};
use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

use super::graphql::{bad_request, error_response, execute, MediaType};
use super::HttpState;
use crate::error::ApiError;

/// Headers a cross-site HTML form cannot send; one of them must be present.
pub const PREFLIGHT_HEADERS: [&str; 3] = [
    "graphql-preflight",
    "apollo-require-preflight",
    "x-requested-with",
];

pub fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("multipart/form-data"))
}

fn has_preflight_header(headers: &HeaderMap) -> bool {
    PREFLIGHT_HEADERS.iter().any(|name| {
        headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty())
    })
}

struct Spooled {
    name: String,
    filename: String,
    content_type: Option<String>,
    file: std::fs::File,
}

fn too_large(media: MediaType, field: &str, message: String) -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        media,
        ApiError::bad_input(field, message),
    )
}

/// Parses a multipart request and executes it.
pub async fn post(
    state: HttpState,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Body,
    media: MediaType,
) -> Response {
    if !has_preflight_header(&headers) {
        return bad_request(
            media,
            Some("GraphQL-Preflight"),
            "multipart requests must carry a `GraphQL-Preflight: 1` header (CSRF protection)",
        );
    }
    let boundary = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(multer::parse_boundary)
    {
        Some(Ok(boundary)) => boundary,
        _ => return bad_request(media, Some("Content-Type"), "multipart without a boundary"),
    };
    let config = &state.app.config;
    let max_json = config.limits.max_body_bytes;
    let max_file = config.kyc.max_upload_bytes;
    let max_files = config.kyc.max_upload_files;
    // Room for every allowed file plus the JSON parts and the framing around them.
    let whole = (max_json as u64)
        .saturating_mul(2)
        .saturating_add((max_file as u64).saturating_mul(max_files as u64 + 1))
        .saturating_add(64 * 1024);
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(whole)
            .for_field("operations", max_json as u64)
            .for_field("map", max_json as u64)
            .per_field(max_file as u64),
    );
    let mut multipart =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);

    let mut operations: Option<BatchRequest> = None;
    let mut map: Option<HashMap<String, Vec<String>>> = None;
    let mut files: Vec<Spooled> = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => return multipart_error(media, error, max_file),
        };
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "operations" => {
                let bytes = match field.bytes().await {
                    Ok(bytes) => bytes,
                    Err(error) => return multipart_error(media, error, max_file),
                };
                match serde_json::from_slice::<BatchRequest>(&bytes) {
                    Ok(parsed) => operations = Some(parsed),
                    Err(_) => {
                        return bad_request(
                            media,
                            Some("operations"),
                            "`operations` must be a GraphQL request object in JSON",
                        )
                    }
                }
            }
            "map" => {
                let bytes = match field.bytes().await {
                    Ok(bytes) => bytes,
                    Err(error) => return multipart_error(media, error, max_file),
                };
                match serde_json::from_slice(&bytes) {
                    Ok(parsed) => map = Some(parsed),
                    Err(_) => {
                        return bad_request(
                            media,
                            Some("map"),
                            "`map` must be a JSON object of file field names to variable paths",
                        )
                    }
                }
            }
            _ => {
                if operations.is_none() || map.is_none() {
                    return bad_request(
                        media,
                        Some("operations"),
                        "`operations` and `map` must come before the files",
                    );
                }
                if files.len() >= max_files {
                    return too_large(
                        media,
                        "map",
                        format!("at most {max_files} files per request"),
                    );
                }
                let filename = field.file_name().unwrap_or_default().to_owned();
                let content_type = field.content_type().map(|m| m.to_string());
                let mut field = field;
                let mut bytes = Vec::new();
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            if bytes.len() + chunk.len() > max_file {
                                return too_large(
                                    media,
                                    &name,
                                    format!("a file may hold at most {max_file} bytes"),
                                );
                            }
                            bytes.extend_from_slice(&chunk);
                        }
                        Ok(None) => break,
                        Err(error) => return multipart_error(media, error, max_file),
                    }
                }
                let spooled = tokio::task::spawn_blocking(move || {
                    let mut file = tempfile::tempfile()?;
                    file.write_all(&bytes)?;
                    file.rewind()?;
                    Ok::<_, std::io::Error>(file)
                })
                .await;
                let file = match spooled {
                    Ok(Ok(file)) => file,
                    Ok(Err(error)) => {
                        let error = ApiError::internal(anyhow::Error::new(error));
                        return error_response(StatusCode::INTERNAL_SERVER_ERROR, media, error);
                    }
                    Err(error) => {
                        let error = ApiError::internal(anyhow::Error::new(error));
                        return error_response(StatusCode::INTERNAL_SERVER_ERROR, media, error);
                    }
                };
                files.push(Spooled {
                    name,
                    filename,
                    content_type,
                    file,
                });
            }
        }
    }

    let Some(operations) = operations else {
        return bad_request(media, Some("operations"), "missing the `operations` part");
    };
    let Some(map) = map else {
        return bad_request(media, Some("map"), "missing the `map` part");
    };
    let mut request = match operations {
        BatchRequest::Single(request) => request,
        BatchRequest::Batch(_) => {
            return bad_request(
                media,
                Some("operations"),
                "send one operation per multipart request",
            )
        }
    };
    for (name, paths) in map {
        let Some(spooled) = files.iter().find(|f| f.name == name) else {
            return bad_request(media, Some("map"), format!("no file part named `{name}`"));
        };
        for path in paths {
            let file = match spooled.file.try_clone() {
                Ok(file) => file,
                Err(error) => {
                    let error = ApiError::internal(anyhow::Error::new(error));
                    return error_response(StatusCode::INTERNAL_SERVER_ERROR, media, error);
                }
            };
            request.set_upload(
                &path,
                UploadValue {
                    filename: spooled.filename.clone(),
                    content_type: spooled.content_type.clone(),
                    content: file,
                },
            );
        }
    }
    // The body was streamed to disk, not kept, so a signing API key's signature over it
    // cannot be checked: signed over an empty body, it never verifies. No multipart
    // field (`submitKyc`) is open to API keys anyway.
    let signed = super::client::signed_parts(&headers, "POST", "/graphql", &[]);
    execute(&state, &headers, peer, media, vec![request], false, signed).await
}

fn multipart_error(media: MediaType, error: multer::Error, max_file: usize) -> Response {
    match error {
        multer::Error::FieldSizeExceeded { field_name, .. } => {
            let field = field_name.unwrap_or_else(|| "body".to_owned());
            too_large(
                media,
                &field,
                format!("a part is larger than allowed (files: {max_file} bytes)"),
            )
        }
        multer::Error::StreamSizeExceeded { .. } => {
            too_large(media, "body", "the request body is too large".to_owned())
        }
        _ => bad_request(media, Some("body"), "the multipart body is malformed"),
    }
}
