//! tradegraph: the GraphQL API server behind a crypto exchange's user panel.
//!
//! Data flows down the layers and never back up:
//! `http` → `graphql` → `service` → `domain`, with `db`, `auth` and the `entity` and
//! `migration` crates underneath. See the README's architecture section for the map.

/// Serving a request allocates and frees many small buffers on several threads (JSON,
/// GraphQL documents, rows, statements); the system allocator spent a fifth of the
/// server's time on that under load (`BENCHMARKS.md`). Declared here, it is the
/// allocator of every binary built on this crate: the server, its tests and benchmarks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Credentials: password hashing, access tokens (JWT), refresh tokens, the viewer.
pub mod auth;
/// Environment configuration, typed and validated at start.
pub mod config;
/// The database pool, migrations and the retrying write-transaction helper.
pub mod db;
/// `TCP_NODELAY` on the database connections, which sqlx 0.9.0 leaves off.
pub mod db_nodelay;
/// The demo bot: market making and trading on the demo markets, only when asked for.
pub mod demo;
/// Pure rules with no I/O (input validation and, later, matching, P&L, compliance).
pub mod domain;
/// The API error type and its stable codes.
pub mod error;
/// The event bus: committed events, in process and across replicas through Redis.
pub mod events;
/// The GraphQL schema: resolvers per area, scalars, guardrails.
pub mod graphql;
/// HTTP and WebSocket transport: `/graphql`, `/playground`, probes, metrics.
pub mod http;
/// Prometheus metrics of one running server.
pub mod metrics;
/// Request rate limiting per user and per client IP.
pub mod ratelimit;
/// Redis for state shared by replicas, with per-process fallback while it fails.
pub mod redis_fallback;
/// The optional Redis connection.
pub mod redis_link;
/// Use cases: transactions, ownership, business rules that need the database.
pub mod service;
/// Building and running the server, graceful shutdown.
pub mod startup;
/// State shared by handlers and resolvers.
pub mod state;
/// Logging setup.
pub mod telemetry;
/// Throttling of failed logins.
pub mod throttle;
/// Background workers (expiry of good-till-date orders, the e-mail outbox relay), stopped
/// on shutdown.
pub mod workers;

pub use config::Config;
pub use startup::App;
