//! Password hashing with argon2id.
//!
//! Hashing is deliberately slow (tens of milliseconds), so it runs on the blocking pool
//! and never stalls the async workers that serve other requests.

use std::sync::LazyLock;

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// A hash of a random password, verified against when the account does not exist so that
/// a login for an unknown e-mail takes as long as one for a known e-mail.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_blocking(&crate::auth::tokens::random_token(16)).unwrap_or_default());

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Hashes a password into an argon2id PHC string.
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .context("password hashing task failed")?
}

/// Checks a password against a stored hash; `None` checks against a dummy hash and
/// always fails, costing the same time.
pub async fn verify(password: String, hash: Option<String>) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || match hash {
        Some(hash) => verify_blocking(&password, &hash),
        None => {
            verify_blocking(&password, &DUMMY_HASH);
            false
        }
    })
    .await
    .context("password verification task failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_the_right_password() {
        let hash = hash("correct horse battery".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify("correct horse battery".into(), Some(hash.clone()))
            .await
            .expect("verify"));
        assert!(!verify("correct horse batterY".into(), Some(hash))
            .await
            .expect("verify"));
        assert!(!verify("anything".into(), None).await.expect("verify"));
        assert!(!verify("anything".into(), Some("not-a-hash".into()))
            .await
            .expect("verify"));
    }
}
