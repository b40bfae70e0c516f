//! tradegraph's integration tests: each starts the real server on `127.0.0.1:0` with its
//! own database and talks HTTP and WebSocket to it. Tests written with
//! `both_backends!` run on SQLite and on PostgreSQL (plus Redis when configured).

mod helpers;

mod accounts;
mod api_keys;
mod attacks;
mod audit;
mod content;
mod demo;
mod events;
mod funds;
mod http_protocol;
mod kyc;
mod limits;
mod live;
mod mail;
mod orders;
mod passkeys;
mod portfolio;
mod privacy;
mod process;
mod rate_limits;
mod schema_files;
mod two_factor;
mod websocket;
mod withdrawals;
