//! API key secrets: how they look, how they are stored and how signed requests are
//! checked.
//!
//! A secret is `tgk_<id>_<secret>`: `tgk_<id>` is the key's public prefix (it finds the
//! row and may appear in logs and UIs), the rest is 256 bits of randomness. Only the
//! SHA-256 of the whole secret is stored, as for refresh tokens.
//!
//! A key created with `requireSignature` never travels: the client signs each request
//! with HMAC-SHA256 keyed by the secret. To check such a signature the server needs the
//! secret itself, which it must not store. So the secret of a signing key is not random
//! but *derived*: `HMAC-SHA256(API_KEY_SECRET, "tradegraph api-key v1" ‖ key id ‖ salt)`,
//! with a random 256-bit salt stored on the row. The server recomputes it per request.
//! A stolen database alone reveals no secret (nor does a stolen `API_KEY_SECRET`
//! alone); both together reveal the signing keys' secrets, exactly as both together
//! would with encrypted secrets, but with nothing to decrypt, no ciphertext format, and
//! no extra dependency. Changing `API_KEY_SECRET` invalidates every signing key (their
//! stored hashes no longer match the derivation, which is checked); plain keys, whose
//! secrets are purely random, are unaffected.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use super::tokens::{hash_token, random_token};

const PREFIX_TAG: &str = "tgk_";
const DERIVATION_LABEL: &[u8] = b"tradegraph api-key v1";

type HmacSha256 = Hmac<Sha256>;

/// A whole secret, as shown once to its owner. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> String {
        hash_token(&self.0)
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(***)")
    }
}

/// A new public prefix: `tgk_` and 12 characters of `[A-Za-z0-9]` (71 bits).
pub fn new_prefix() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!(
        "{PREFIX_TAG}{}",
        Alphanumeric.sample_string(&mut rand::rngs::OsRng, 12)
    )
}

/// A random secret for a key that sends it whole.
pub fn random_secret(prefix: &str) -> ApiKeySecret {
    ApiKeySecret(format!("{prefix}_{}", random_token(32)))
}

/// A new random salt for a signing key.
pub fn new_salt() -> String {
    random_token(32)
}

/// The secret of a signing key, recomputed from the server key, key id and salt.
pub fn derived_secret(server_key: &[u8], key_id: Uuid, prefix: &str, salt: &str) -> ApiKeySecret {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(server_key).unwrap_or_else(|_| unreachable_hmac());
    mac.update(DERIVATION_LABEL);
    mac.update(key_id.as_bytes());
    mac.update(salt.as_bytes());
    use base64::Engine;
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    ApiKeySecret(format!("{prefix}_{body}"))
}

/// HMAC accepts keys of any length, so this cannot happen; it keeps `expect` off the
/// request path all the same.
fn unreachable_hmac() -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(b"x").unwrap_or_else(|_| unreachable!())
}

/// What `X-API-Key` carried: a whole secret, or only a prefix (a signed request).
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    Secret { prefix: &'a str, secret: &'a str },
    Prefix(&'a str),
}

/// Splits a presented key; `None` when it cannot be one of ours.
pub fn parse_presented(value: &str) -> Option<Presented<'_>> {
    let value = value.trim();
    let rest = value.strip_prefix(PREFIX_TAG)?;
    let (id, secret) = match rest.split_once('_') {
        Some((id, secret)) => (id, Some(secret)),
        None => (rest, None),
    };
    if id.is_empty() || id.len() > 24 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let prefix = &value[..PREFIX_TAG.len() + id.len()];
    match secret {
        None => Some(Presented::Prefix(prefix)),
        Some(s) if !s.is_empty() && value.len() <= 128 => Some(Presented::Secret {
            prefix,
            secret: value,
        }),
        Some(_) => None,
    }
}

/// The stored form of a presented secret.
pub fn hash_secret(secret: &str) -> String {
    hash_token(secret)
}

/// Compares two strings in time that depends only on their length.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The string a client signs: `timestamp + method + path + body`, with the method in
/// upper case and the path as sent (including any `?query`).
pub fn signing_payload(timestamp: &str, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(timestamp.len() + method.len() + path.len() + body.len());
    payload.extend_from_slice(timestamp.as_bytes());
    payload.extend_from_slice(method.to_ascii_uppercase().as_bytes());
    payload.extend_from_slice(path.as_bytes());
    payload.extend_from_slice(body);
    payload
}

/// Hex HMAC-SHA256 of `payload` keyed with `secret`, as a client computes it.
pub fn sign(secret: &str, payload: &[u8]) -> String {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable_hmac());
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a hex signature in constant time. Upper- or lower-case hex is accepted.
pub fn verify_signature(secret: &str, payload: &[u8], signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable_hmac());
    mac.update(payload);
    mac.verify_slice(&signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_their_prefix_and_never_print() {
        let prefix = new_prefix();
        assert!(prefix.starts_with("tgk_") && prefix.len() == 16);
        let secret = random_secret(&prefix);
        assert!(secret.expose().starts_with(&format!("{prefix}_")));
        assert_eq!(format!("{secret:?}"), "ApiKeySecret(***)");
        assert_eq!(
            parse_presented(secret.expose()),
            Some(Presented::Secret {
                prefix: &prefix,
                secret: secret.expose()
            })
        );
        assert_eq!(parse_presented(&prefix), Some(Presented::Prefix(&prefix)));
        for bad in ["", "tgk_", "abc_def", "tgk_a-b_c", "tgk_abc_", "Bearer x"] {
            assert_eq!(parse_presented(bad), None, "{bad}");
        }
    }

    #[test]
    fn derived_secrets_depend_on_server_key_id_and_salt() {
        let id = Uuid::new_v4();
        let a = derived_secret(b"server-key-one", id, "tgk_x", "salt");
        assert_eq!(a, derived_secret(b"server-key-one", id, "tgk_x", "salt"));
        assert_ne!(a, derived_secret(b"server-key-two", id, "tgk_x", "salt"));
        assert_ne!(a, derived_secret(b"server-key-one", id, "tgk_x", "salt2"));
        assert_ne!(
            a,
            derived_secret(b"server-key-one", Uuid::new_v4(), "tgk_x", "salt")
        );
        assert!(a.expose().starts_with("tgk_x_"));
    }

    #[test]
    fn signatures_verify_only_for_the_exact_request() {
        let payload = signing_payload(
            "1700000000000",
            "post",
            "/graphql",
            b"{\"query\":\"{me{id}}\"}",
        );
        assert!(payload.starts_with(b"1700000000000POST/graphql{"));
        let signature = sign("s3cret", &payload);
        assert!(verify_signature("s3cret", &payload, &signature));
        assert!(verify_signature(
            "s3cret",
            &payload,
            &signature.to_uppercase()
        ));
        assert!(!verify_signature("other", &payload, &signature));
        let tampered = signing_payload("1700000000000", "POST", "/graphql", b"{}");
        assert!(!verify_signature("s3cret", &tampered, &signature));
        assert!(!verify_signature("s3cret", &payload, "zz"));
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
