//! Credentials: password hashing, access tokens (JWT), opaque refresh tokens, and the
//! authenticated viewer a request carries.

pub mod api_keys;
pub mod jwt;
pub mod password;
pub mod replay;
pub mod tokens;
pub mod viewer;

pub use viewer::Viewer;
