//! The one error type of the API and its stable codes (see API.md).
//!
//! Services return [`ApiError`]; resolvers pass it up with `?`. async-graphql keeps the
//! original value as the error's source, and [`shape_server_error`] (run on every
//! response) turns it into the message and `extensions.code` clients see. Internal errors
//! are logged there with their full chain and shown only as a generic message.

use std::fmt;

use async_graphql::{ErrorExtensionValues, ServerError, Value};

/// The codes of API.md, the only values `extensions.code` ever takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    BadUserInput,
    NotFound,
    Conflict,
    InsufficientFunds,
    TwoFactorRequired,
    RateLimited,
    QueryTooComplex,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::BadUserInput => "BAD_USER_INPUT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::InsufficientFunds => "INSUFFICIENT_FUNDS",
            ErrorCode::TwoFactorRequired => "TWO_FACTOR_REQUIRED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::QueryTooComplex => "QUERY_TOO_COMPLEX",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// What went wrong, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadInput {
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InsufficientFunds(String),
    #[error("a second factor is required")]
    TwoFactorRequired,
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    QueryTooComplex(String),
    /// Anything the client cannot fix. The inner error is logged, never shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadInput {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(error.into())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadInput { .. } => ErrorCode::BadUserInput,
            ApiError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::InsufficientFunds(_) => ErrorCode::InsufficientFunds,
            ApiError::TwoFactorRequired => ErrorCode::TwoFactorRequired,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::QueryTooComplex(_) => ErrorCode::QueryTooComplex,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The extensions a client sees for this error.
    pub fn extensions(&self) -> ErrorExtensionValues {
        let mut ext = ErrorExtensionValues::default();
        ext.set("code", self.code().as_str());
        match self {
            ApiError::BadInput {
                field: Some(field), ..
            } => ext.set("field", field.as_str()),
            ApiError::RateLimited { retry_after_secs } => {
                ext.set("retryAfterSeconds", *retry_after_secs)
            }
            _ => {}
        }
        ext
    }

    /// A standalone server error, for failures outside resolvers (HTTP and WebSocket
    /// framing, limits).
    pub fn into_server_error(self) -> ServerError {
        let mut error = ServerError::new(self.to_string(), None);
        error.extensions = Some(self.extensions());
        error
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(error: sea_orm::DbErr) -> Self {
        ApiError::Internal(error.into())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        ApiError::Internal(error)
    }
}

/// Gives every error in a response a code from API.md and strips internals.
///
/// Errors raised by our own code carry an [`ApiError`] source. The rest come from
/// async-graphql itself: parse and validation failures and argument coercion, which are
/// all the client's input, so they become `BAD_USER_INPUT` (naming the argument when the
/// message does); anything else is unexpected and becomes `INTERNAL`.
pub fn shape_server_error(error: &mut ServerError) {
    if let Some(api) = error.source::<ApiError>() {
        if let ApiError::Internal(inner) = api {
            tracing::error!(error = ?inner, path = ?error.path, "internal error");
        }
        let message = api.to_string();
        let extensions = api.extensions();
        error.message = message;
        error.extensions = Some(extensions);
        return;
    }
    if has_code(error) {
        return;
    }
    let mut ext = error.extensions.take().unwrap_or_default();
    let from_input = error.path.is_empty()
        || error.message.starts_with("Failed to parse")
        || error.message.starts_with("Invalid value for argument")
        || error.message.contains("is not a valid")
        || error.message.starts_with("Invalid value");
    if from_input {
        ext.set("code", ErrorCode::BadUserInput.as_str());
        if let Some(field) = quoted_argument(&error.message) {
            ext.set("field", field);
        }
    } else {
        tracing::error!(message = %error.message, path = ?error.path, "unclassified resolver error");
        error.message = "internal error".to_owned();
        ext.set("code", ErrorCode::Internal.as_str());
    }
    error.extensions = Some(ext);
}

fn has_code(error: &ServerError) -> bool {
    error
        .extensions
        .as_ref()
        .is_some_and(|ext| matches!(ext.get("code"), Some(Value::String(_))))
}

/// `Invalid value for argument "input.email", expected ...` names the argument.
fn quoted_argument(message: &str) -> Option<String> {
    let rest = message.strip_prefix("Invalid value for argument \"")?;
    let end = rest.find('"')?;
    let path = &rest[..end];
    // Variables appear as `$name`-free paths already; drop list indices for clarity.
    Some(path.to_owned())
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{PathSegment, Pos};

    fn from_resolver(error: ApiError) -> ServerError {
        let mut server = async_graphql::Error::from(error).into_server_error(Pos::default());
        server.path = vec![PathSegment::Field("x".into())];
        shape_server_error(&mut server);
        server
    }

    fn code(error: &ServerError) -> Option<Value> {
        error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code").cloned())
    }

    #[test]
    fn every_api_error_maps_to_its_code() {
        let cases: Vec<(ApiError, &str)> = vec![
            (ApiError::bad_input("email", "bad"), "BAD_USER_INPUT"),
            (ApiError::Unauthenticated("x".into()), "UNAUTHENTICATED"),
            (ApiError::Forbidden("x".into()), "FORBIDDEN"),
            (ApiError::NotFound("session"), "NOT_FOUND"),
            (ApiError::Conflict("x".into()), "CONFLICT"),
            (
                ApiError::InsufficientFunds("x".into()),
                "INSUFFICIENT_FUNDS",
            ),
            (ApiError::TwoFactorRequired, "TWO_FACTOR_REQUIRED"),
            (
                ApiError::RateLimited {
                    retry_after_secs: 3,
                },
                "RATE_LIMITED",
            ),
            (ApiError::QueryTooComplex("x".into()), "QUERY_TOO_COMPLEX"),
            (ApiError::internal(anyhow::anyhow!("boom")), "INTERNAL"),
        ];
        for (error, expected) in cases {
            let shaped = from_resolver(error);
            assert_eq!(code(&shaped), Some(Value::from(expected)));
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let shaped = from_resolver(ApiError::internal(anyhow::anyhow!(
            "connection to postgres://admin:pw@db failed: relation \"users\""
        )));
        assert_eq!(shaped.message, "internal error");
        let json = serde_json::to_string(&shaped).expect("json");
        assert!(
            !json.contains("postgres") && !json.contains("users"),
            "{json}"
        );
    }

    #[test]
    fn bad_input_names_the_field_and_rate_limits_say_when() {
        let shaped = from_resolver(ApiError::bad_input("input.email", "not an e-mail"));
        let ext = shaped.extensions.expect("extensions");
        assert_eq!(ext.get("field"), Some(&Value::from("input.email")));
        let shaped = from_resolver(ApiError::RateLimited {
            retry_after_secs: 7,
        });
        let ext = shaped.extensions.expect("extensions");
        assert_eq!(ext.get("retryAfterSeconds"), Some(&Value::from(7)));
    }

    #[test]
    fn library_errors_are_classified() {
        let mut validation = ServerError::new("Unknown field \"nope\" on type \"Query\".", None);
        shape_server_error(&mut validation);
        assert_eq!(code(&validation), Some(Value::from("BAD_USER_INPUT")));

        let mut argument = ServerError::new(
            "Invalid value for argument \"input.amount\", expected type \"Decimal\"",
            None,
        );
        shape_server_error(&mut argument);
        let ext = argument.extensions.expect("extensions");
        assert_eq!(ext.get("field"), Some(&Value::from("input.amount")));

        let mut odd = ServerError::new("something odd with secret detail", None);
        odd.path = vec![PathSegment::Field("me".into())];
        shape_server_error(&mut odd);
        assert_eq!(code(&odd), Some(Value::from("INTERNAL")));
        assert_eq!(odd.message, "internal error");
    }
}
