//! tradegraph's integration tests: each starts the real server on `127.0.0.1:0` with its
//! own database and talks HTTP and WebSocket to it. Tests written with
//! `both_backends!` run on SQLite and on PostgreSQL (plus Redis when configured).

mod helpers;

mod accounts;
mod events;
mod funds;
mod http_protocol;
mod limits;
mod orders;
mod portfolio;
mod process;
mod schema_files;
mod websocket;
