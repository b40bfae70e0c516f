//! The self-hosted GraphiQL playground (`GET /playground`, assets under
//! `GET /playground/assets/{file}`) and the example dashboard (`GET /dashboard`, assets
//! under `GET /dashboard/assets/{file}`).
//!
//! Everything the page loads is embedded in the binary, because the playground
//! must work where the server has no internet access and because loading
//! script from a CDN would hand that CDN the users' tokens. `build.rs` installs
//! the pinned GraphiQL and React from npm and puts the files in
//! `$OUT_DIR/playground/`; when it could not, these are placeholders and the
//! page explains how to build the real thing.
//!
//! Each asset is also served under a name carrying a hash of its content,
//! which the page links to: browsers may then cache the ~1.5 MB of JavaScript
//! and CSS forever, and a new build can never be mixed with stale cached files.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// Routes for the self-hosted GraphiQL playground and the example dashboard.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    // Hash the assets now rather than during the first request.
    let playground = LazyLock::force(&PLAYGROUND);
    let dashboard = LazyLock::force(&DASHBOARD);
    if !playground.assets_built {
        tracing::warn!(
            "the GraphiQL playground assets were not built into this binary; \
             /playground shows how to fix that (install Node.js and npm, then rebuild)"
        );
    }
    Router::new()
        .route("/playground", get(|h: HeaderMap| page(playground, h)))
        .route(
            "/playground/",
            get(|| async { Redirect::permanent("/playground") }),
        )
        .route(
            "/playground/assets/{file}",
            get(|f: Path<String>, h: HeaderMap| asset(playground, f, h)),
        )
        .route("/dashboard", get(|h: HeaderMap| page(dashboard, h)))
        .route(
            "/dashboard/",
            get(|| async { Redirect::permanent("/dashboard") }),
        )
        .route(
            "/dashboard/assets/{file}",
            get(|f: Path<String>, h: HeaderMap| asset(dashboard, f, h)),
        )
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const GRAPHQL: &str = "text/plain; charset=utf-8";

/// Served names whose content may change without the name changing: clients
/// must revalidate (cheap, thanks to the ETag).
const REVALIDATE: &str = "no-cache";
/// Content-hashed names never change content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Prefix of every asset URL in the playground page. The page source uses plain names;
/// [`Site::build`] swaps them for the content-hashed ones.
const ASSET_PREFIX: &str = "/playground/assets/";
/// The same for the dashboard.
const DASHBOARD_PREFIX: &str = "/dashboard/assets/";

/// One file embedded from `$OUT_DIR/playground/`.
struct Embedded {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! embedded {
    ($name:literal, $content_type:expr) => {
        embedded!($name, $name, $content_type)
    };
    ($name:literal, $path:literal, $content_type:expr) => {
        Embedded {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("OUT_DIR"), "/playground/", $path)),
        }
    };
}

/// The files `build.rs` writes, npm's and ours alike (npm's are placeholders
/// when npm could not be run, so this list never depends on the build's luck).
static FILES: [Embedded; 7] = [
    embedded!("react.production.min.js", JAVASCRIPT),
    embedded!("react-dom.production.min.js", JAVASCRIPT),
    embedded!("graphiql.min.js", JAVASCRIPT),
    embedded!("graphiql.min.css", CSS),
    embedded!("examples.js", JAVASCRIPT),
    embedded!("playground.js", JAVASCRIPT),
    embedded!("playground.css", CSS),
];

/// `playground/index.html`, or the placeholder page from `build.rs`.
static INDEX_HTML: &str = include_str!(concat!(env!("OUT_DIR"), "/playground/index.html"));

/// The example dashboard's files: its own, and the graphql-ws client from npm.
static DASHBOARD_FILES: [Embedded; 4] = [
    embedded!("graphql-ws.min.js", JAVASCRIPT),
    embedded!("dashboard.js", "dashboard/dashboard.js", JAVASCRIPT),
    embedded!("dashboard.css", "dashboard/dashboard.css", CSS),
    embedded!("dashboard.graphql", "dashboard/dashboard.graphql", GRAPHQL),
];

static DASHBOARD_HTML: &str =
    include_str!(concat!(env!("OUT_DIR"), "/playground/dashboard/index.html"));

static PLAYGROUND: LazyLock<Site> = LazyLock::new(|| Site::build(INDEX_HTML, &FILES, ASSET_PREFIX));
static DASHBOARD: LazyLock<Site> =
    LazyLock::new(|| Site::build(DASHBOARD_HTML, &DASHBOARD_FILES, DASHBOARD_PREFIX));

struct Asset {
    file: &'static Embedded,
    cache_control: &'static str,
    etag: Option<HeaderValue>,
}

/// The page and assets as served: computed once, since the content is fixed
/// at build time.
struct Site {
    html: String,
    html_etag: Option<HeaderValue>,
    /// Keyed by the name after `/playground/assets/`: both the plain and the
    /// content-hashed name of each file.
    assets: HashMap<String, Asset>,
    /// False when `build.rs` wrote placeholders instead of GraphiQL.
    assets_built: bool,
}

impl Site {
    fn build(index: &str, files: &'static [Embedded], prefix: &str) -> Self {
        let mut html = index.to_owned();
        let mut assets = HashMap::new();
        for file in files {
            let hash = short_hash(file.body);
            let etag = etag(&hash);
            let hashed = hashed_name(file.name, &hash);
            // Quoted, so that no name can match inside a longer one.
            html = html.replace(
                &format!("\"{prefix}{}\"", file.name),
                &format!("\"{prefix}{hashed}\""),
            );
            assets.insert(
                hashed,
                Asset {
                    file,
                    cache_control: IMMUTABLE,
                    etag: etag.clone(),
                },
            );
            assets.insert(
                file.name.to_owned(),
                Asset {
                    file,
                    cache_control: REVALIDATE,
                    etag,
                },
            );
        }
        let html_etag = etag(&short_hash(html.as_bytes()));
        Site {
            html,
            html_etag,
            assets,
            assets_built: option_env!("TRADEGRAPH_PLAYGROUND_ASSETS") == Some("npm"),
        }
    }
}

/// 64 bits of SHA-256 in hex: plenty to tell builds apart, short in URLs.
fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(&digest[..8])
}

fn etag(hash: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{hash}\"")).ok()
}

/// `graphiql.min.js` -> `graphiql.min.<hash>.js`: the extension stays last so
/// that nothing guessing types from names is confused.
fn hashed_name(name: &str, hash: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, extension)) => format!("{stem}.{hash}.{extension}"),
        None => format!("{name}.{hash}"),
    }
}

/// Whether the client's cached copy (If-None-Match) is still current.
fn not_modified(request: &HeaderMap, etag: Option<&HeaderValue>) -> bool {
    let (Some(etag), Some(if_none_match)) = (etag, request.get(header::IF_NONE_MATCH)) else {
        return false;
    };
    let (Ok(etag), Ok(if_none_match)) = (etag.to_str(), if_none_match.to_str()) else {
        return false;
    };
    if_none_match
        .split(',')
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// The page's Content-Security-Policy. No inline script and no other origin:
/// a token pasted into the page cannot be sent elsewhere by injected content.
/// GraphiQL's CSS embeds its fonts and icons as `data:` URLs. The one inline
/// style allowed, by hash, is the scroll lock that GraphiQL's menus and dialogs
/// (Radix) inject; were it ever to differ, the browser would merely skip it,
/// which changes nothing here since the page itself never scrolls.
const POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'sha256-nzTgYzXYDNe6BAHiiI7NNlfK8n/auuOAhh2t92YvuXo='; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// [`POLICY`] for this request. `'self'` covers same-origin `ws:`/`wss:` in
/// current browsers; the origin from `Host` is added for older ones, and only
/// when it is a plain `host[:port]`, so that a forged header cannot add
/// directives.
fn content_security_policy(request: &HeaderMap) -> HeaderValue {
    let host = request
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| is_plain_host(host));
    let Some(host) = host else {
        return HeaderValue::from_static(POLICY);
    };
    let policy = POLICY.replacen(
        "connect-src 'self'",
        &format!("connect-src 'self' ws://{host} wss://{host}"),
        1,
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static(POLICY))
}

fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

async fn page(site: &'static Site, request: HeaderMap) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        content_security_policy(&request),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(etag) = &site.html_etag {
        headers.insert(header::ETAG, etag.clone());
    }
    if not_modified(&request, site.html_etag.as_ref()) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, site.html.clone()).into_response()
}

async fn asset(site: &'static Site, Path(file): Path<String>, request: HeaderMap) -> Response {
    let Some(asset) = site.assets.get(&file) else {
        return (
            StatusCode::NOT_FOUND,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            "no such playground asset\n",
        )
            .into_response();
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.file.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(asset.cache_control),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(etag) = &asset.etag {
        headers.insert(header::ETAG, etag.clone());
    }
    if not_modified(&request, asset.etag.as_ref()) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, asset.file.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use tower::ServiceExt;

    struct Fetched {
        status: StatusCode,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    async fn fetch(uri: &str, extra: &[(&'static str, &str)]) -> Fetched {
        let mut request = Request::get(uri);
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::empty()).expect("request");
        let response = router::<()>().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        Fetched {
            status,
            headers,
            body: body.to_vec(),
        }
    }

    fn header_str(fetched: &Fetched, name: header::HeaderName) -> &str {
        fetched
            .headers
            .get(&name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    /// Every `src="..."` and `href="..."` value in the page.
    fn referenced_urls(html: &str) -> Vec<String> {
        let mut urls = Vec::new();
        for attribute in ["src=\"", "href=\""] {
            for (start, _) in html.match_indices(attribute) {
                let rest = &html[start + attribute.len()..];
                let end = rest.find('"').expect("closing quote");
                urls.push(rest[..end].to_owned());
            }
        }
        urls
    }

    async fn page_html() -> String {
        let fetched = fetch("/playground", &[]).await;
        assert_eq!(fetched.status, StatusCode::OK);
        String::from_utf8(fetched.body).expect("utf-8 page")
    }

    #[tokio::test]
    async fn pages_load_only_embedded_assets_and_each_is_served() {
        for (page, prefix) in [
            ("/playground", ASSET_PREFIX),
            ("/dashboard", DASHBOARD_PREFIX),
        ] {
            let fetched = fetch(page, &[]).await;
            assert_eq!(fetched.status, StatusCode::OK, "{page}");
            let html = String::from_utf8(fetched.body).expect("utf-8 page");
            let urls = referenced_urls(&html);
            assert!(
                urls.iter().any(|url| url.ends_with(".css")),
                "{page} links no stylesheet: {urls:?}"
            );
            for url in urls {
                if url == "data:," {
                    continue; // the empty favicon, which saves a request
                }
                assert!(
                    url.starts_with(prefix),
                    "{page} references {url}, not an embedded asset"
                );
                let fetched = fetch(&url, &[]).await;
                assert_eq!(fetched.status, StatusCode::OK, "{url}");
                assert!(!fetched.body.is_empty(), "{url} is empty");
                let expected = if url.ends_with(".css") {
                    CSS
                } else {
                    JAVASCRIPT
                };
                assert_eq!(
                    header_str(&fetched, header::CONTENT_TYPE),
                    expected,
                    "{url}"
                );
                assert_eq!(
                    header_str(&fetched, header::CACHE_CONTROL),
                    IMMUTABLE,
                    "{url} is not content-hashed"
                );
            }
            for external in ["http://", "https://", "\"//", "'//"] {
                assert!(!html.contains(external), "{page} mentions {external}");
            }
        }
        // The dashboard fetches its operations by their plain name.
        let operations = fetch("/dashboard/assets/dashboard.graphql", &[]).await;
        assert_eq!(operations.status, StatusCode::OK);
        assert!(String::from_utf8_lossy(&operations.body).contains("mutation PlaceOrder("));
    }

    #[tokio::test]
    async fn page_has_strict_security_headers() {
        let fetched = fetch("/playground", &[("host", "localhost:8011")]).await;
        assert_eq!(
            header_str(&fetched, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header_str(&fetched, header::CACHE_CONTROL), "no-cache");
        let csp = header_str(&fetched, header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(
            csp.contains("connect-src 'self' ws://localhost:8011 wss://localhost:8011;"),
            "{csp}"
        );
        assert_eq!(
            header_str(&fetched, header::X_CONTENT_TYPE_OPTIONS),
            "nosniff"
        );
    }

    #[tokio::test]
    async fn a_forged_host_cannot_extend_the_policy() {
        let fetched = fetch("/playground", &[("host", "evil.example; script-src *")]).await;
        let csp = header_str(&fetched, header::CONTENT_SECURITY_POLICY);
        assert!(!csp.contains("evil"), "{csp}");
        assert!(csp.contains("connect-src 'self';"), "{csp}");
    }

    #[tokio::test]
    async fn unknown_assets_are_not_found() {
        for uri in [
            "/playground/assets/nope.js",
            "/playground/assets/..%2F..%2FCargo.toml",
            "/playground/assets/index.html",
            "/playground/assets/",
        ] {
            assert_eq!(fetch(uri, &[]).await.status, StatusCode::NOT_FOUND, "{uri}");
        }
    }

    #[tokio::test]
    async fn plain_asset_names_revalidate_with_etags() {
        let fetched = fetch("/playground/assets/playground.js", &[]).await;
        assert_eq!(fetched.status, StatusCode::OK);
        assert_eq!(header_str(&fetched, header::CACHE_CONTROL), "no-cache");
        let etag = header_str(&fetched, header::ETAG).to_owned();
        assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");

        let again = fetch(
            "/playground/assets/playground.js",
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED);
        assert!(again.body.is_empty());

        let stale = fetch(
            "/playground/assets/playground.js",
            &[("if-none-match", "\"stale\"")],
        )
        .await;
        assert_eq!(stale.status, StatusCode::OK);

        let page = fetch("/playground", &[]).await;
        let page_etag = header_str(&page, header::ETAG).to_owned();
        let page_again = fetch("/playground", &[("if-none-match", &page_etag)]).await;
        assert_eq!(page_again.status, StatusCode::NOT_MODIFIED);
    }

    #[tokio::test]
    async fn trailing_slash_redirects_to_the_page() {
        let fetched = fetch("/playground/", &[]).await;
        assert_eq!(fetched.status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(header_str(&fetched, header::LOCATION), "/playground");
    }

    #[test]
    fn example_operations_are_embedded() {
        let examples = FILES
            .iter()
            .find(|file| file.name == "examples.js")
            .map(|file| String::from_utf8_lossy(file.body).into_owned())
            .expect("examples.js is embedded");
        for operation in [
            "query ServerTime",
            "mutation Register(",
            "mutation Login(",
            "mutation RefreshSession(",
            "query Me",
            "query Sessions",
            "mutation RevokeSession(",
            "mutation Logout",
            "mutation ChangePassword(",
        ] {
            assert!(
                examples.contains(operation),
                "examples.js lacks {operation}"
            );
        }
    }

    /// The real GraphiQL when npm ran, otherwise a page that says how to get it.
    #[tokio::test]
    async fn page_is_graphiql_or_explains_the_missing_build() {
        let html = page_html().await;
        if PLAYGROUND.assets_built {
            assert!(html.contains("graphiql.min."), "{html}");
            let graphiql = FILES
                .iter()
                .find(|file| file.name == "graphiql.min.js")
                .map(|file| String::from_utf8_lossy(file.body).into_owned())
                .unwrap_or_default();
            // The UMD bundle carries the graphql-ws client the subscriptions use.
            assert!(graphiql.contains("createFetcher"));
            assert!(graphiql.contains("graphql-transport-ws"));
        } else {
            assert!(html.contains("not built"), "{html}");
            assert!(html.contains("npm"), "{html}");
        }
    }

    #[test]
    fn hashed_names_keep_the_extension_last() {
        assert_eq!(hashed_name("graphiql.min.js", "abc"), "graphiql.min.abc.js");
        assert_eq!(hashed_name("LICENSE", "abc"), "LICENSE.abc");
    }
}
