//! Access tokens: short-lived HS256 JWTs naming the user (`sub`) and session (`sid`).
//!
//! The algorithm is pinned: a token whose header asks for anything else (including
//! `none`) is refused before its signature is looked at. A valid signature is not enough
//! on its own either: the session named by `sid` must still be active (checked by the
//! caller), so revoking a session ends its access tokens at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const ISSUER: &str = "tradegraph";
const AUDIENCE: &str = "tradegraph-api";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

/// Signs and checks access tokens with the server's secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        // Clocks of replicas drift a little; a minute would keep a token alive too long.
        validation.leeway = 5;
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// Issues a token for a session; returns it with its expiry.
    pub fn issue(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(String, DateTime<Utc>)> {
        let expires_at = now + self.ttl;
        let claims = Claims {
            sub: user_id,
            sid: session_id,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, expires_at))
    }

    /// Checks signature, algorithm, issuer, audience and expiry. The reason for a refusal
    /// is only for logs: callers answer every failure the same way.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn keys() -> JwtKeys {
        JwtKeys::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(900),
        )
    }

    #[test]
    fn issued_tokens_verify() {
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let (token, exp) = keys().issue(user, session, Utc::now()).expect("issue");
        let claims = keys().verify(&token).expect("valid");
        assert_eq!(
            (claims.sub, claims.sid, claims.exp),
            (user, session, exp.timestamp())
        );
    }

    #[test]
    fn expired_wrong_key_and_tampered_tokens_are_refused() {
        let keys = keys();
        let old = Utc::now() - chrono::Duration::hours(1);
        let (expired, _) = keys
            .issue(Uuid::new_v4(), Uuid::new_v4(), old)
            .expect("issue");
        assert!(keys.verify(&expired).is_err());

        let other = JwtKeys::new(
            b"another-secret-another-secret-xx",
            Duration::from_secs(900),
        );
        let (foreign, _) = other
            .issue(Uuid::new_v4(), Uuid::new_v4(), Utc::now())
            .expect("issue");
        assert!(keys.verify(&foreign).is_err());

        let (token, _) = keys
            .issue(Uuid::new_v4(), Uuid::new_v4(), Utc::now())
            .expect("issue");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64")).expect("json");
        claims["sub"] = serde_json::json!(Uuid::new_v4());
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert!(keys.verify(&parts.join(".")).is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        let keys = keys();
        let (token, _) = keys
            .issue(Uuid::new_v4(), Uuid::new_v4(), Utc::now())
            .expect("issue");
        let payload = token.split('.').nth(1).expect("payload");
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(keys.verify(&format!("{header}.{payload}.")).is_err());
        let hs512 = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS512","typ":"JWT"}"#);
        assert!(keys.verify(&format!("{hs512}.{payload}.x")).is_err());
    }
}
