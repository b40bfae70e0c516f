//! SeaORM entities for tradegraph's tables, with the string-valued enums they store.
//!
//! Each module is one table. Enums are stored as their upper-case GraphQL names so that
//! a row read by hand in `psql` means the same as it does on the API.

/// Roles a user can hold, and the set stored on the user row.
pub mod role;
/// Refresh tokens: one row per token ever issued, so a replayed one can be recognised.
pub mod refresh_tokens;
/// Sessions: one per login on a device; revoking one ends its tokens at once.
pub mod sessions;
/// User accounts.
pub mod users;

pub use role::{Role, RoleSet};
