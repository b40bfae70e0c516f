//! Relay connection arguments over keyset pagination.
//!
//! Cursors wrap a row's time-ordered id, so a page boundary stays put while new rows
//! arrive (no row skipped or repeated, unlike offsets). They are opaque to clients.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

use crate::error::ApiError;

/// The largest page a client may ask for.
pub const MAX_PAGE: i32 = 200;
const DEFAULT_PAGE: i32 = 50;

/// A validated request for one page, newest first.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub limit: u64,
    pub after: Option<Uuid>,
}

pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(field: &str, cursor: &str) -> Result<Uuid, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::bad_input(field, "not a cursor returned by this connection"))
}

/// Validates `first`/`after`. Backward pagination (`last`/`before`) is refused with a
/// clear error until connections support it.
pub fn page(
    first: Option<i32>,
    after: Option<String>,
    last: Option<i32>,
    before: Option<String>,
) -> Result<Page, ApiError> {
    if last.is_some() || before.is_some() {
        return Err(ApiError::bad_input(
            if last.is_some() { "last" } else { "before" },
            "backward pagination is not supported here; use first/after",
        ));
    }
    let first = first.unwrap_or(DEFAULT_PAGE);
    if !(0..=MAX_PAGE).contains(&first) {
        return Err(ApiError::bad_input(
            "first",
            format!("must be between 0 and {MAX_PAGE}"),
        ));
    }
    let after = after.map(|c| decode_cursor("after", &c)).transpose()?;
    Ok(Page {
        limit: first as u64,
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor("after", &encode_cursor(id)).ok(), Some(id));
        assert!(decode_cursor("after", "nope").is_err());
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page(None, None, None, None).map(|p| p.limit).ok(), Some(50));
        assert_eq!(
            page(Some(200), None, None, None).map(|p| p.limit).ok(),
            Some(200)
        );
        let error = page(Some(201), None, None, None).expect_err("too big");
        assert!(matches!(error, ApiError::BadInput { field: Some(f), .. } if f == "first"));
        assert!(page(Some(-1), None, None, None).is_err());
        assert!(page(None, None, Some(5), None).is_err());
    }
}
