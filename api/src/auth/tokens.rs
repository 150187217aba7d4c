//! Access JWTs (HS256 with a `kid`, so keys rotate without signing everyone out) and opaque
//! random tokens that are stored only as SHA-256 hashes.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{Config, Secret};

const ISSUER: &str = "gptimage2";
const AUDIENCE: &str = "gptimage2-api";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    /// The session this token belongs to; checked on every request, so revocation is immediate.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub jti: Uuid,
}

pub struct JwtKeys {
    kid: String,
    encoding: EncodingKey,
    /// The current key first, then earlier ones still accepted.
    decoding: Vec<(String, DecodingKey)>,
}

fn kid_of(secret: &Secret) -> String {
    hex::encode(&Sha256::digest(secret.expose().as_bytes())[..6])
}

impl JwtKeys {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let current = &config.jwt_secret;
        let encoding = EncodingKey::from_secret(current.expose().as_bytes())?;
        let mut decoding = vec![(
            kid_of(current),
            DecodingKey::from_secret(current.expose().as_bytes())?,
        )];
        for old in &config.jwt_previous_secrets {
            decoding.push((
                kid_of(old),
                DecodingKey::from_secret(old.expose().as_bytes())?,
            ));
        }
        Ok(Self {
            kid: kid_of(current),
            encoding,
            decoding,
        })
    }

    /// A signed access token and its lifetime in seconds.
    pub fn issue(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        ttl: std::time::Duration,
    ) -> anyhow::Result<(String, i64)> {
        let now = chrono::Utc::now().timestamp();
        let ttl = ttl.as_secs() as i64;
        let claims = Claims {
            sub: user_id,
            sid: session_id,
            iat: now,
            exp: now + ttl,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            jti: Uuid::now_v7(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        Ok((jsonwebtoken::encode(&header, &claims, &self.encoding)?, ttl))
    }

    /// The claims of a valid token: a known `kid`, HS256 only (so `alg: none` and key
    /// confusion fail), our issuer and audience, not expired.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::HS256 {
            return None;
        }
        let kid = header.kid?;
        let (_, key) = self.decoding.iter().find(|(k, _)| *k == kid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .ok()
            .map(|data| data.claims)
    }
}

/// A fresh 256-bit random token, URL-safe, with an optional recognisable prefix.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// What is stored instead of a token: high-entropy tokens need no slow hash.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use super::*;

    fn keys(secret: &str, previous: &str) -> JwtKeys {
        let mut vars = HashMap::new();
        vars.insert("GI2_JWT_SECRET".to_string(), secret.to_string());
        if !previous.is_empty() {
            vars.insert("GI2_JWT_PREVIOUS_SECRETS".to_string(), previous.to_string());
        }
        JwtKeys::from_config(&Config::from_vars(vars).unwrap()).unwrap()
    }

    #[test]
    fn tokens_round_trip_and_rotate() {
        let old = keys(&"a".repeat(32), "");
        let (token, ttl) = old
            .issue(Uuid::nil(), Uuid::max(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(ttl, 60);
        assert_eq!(old.verify(&token).unwrap().sid, Uuid::max());
        // After rotation the old key still verifies; a stranger's key does not.
        assert!(
            keys(&"b".repeat(32), &"a".repeat(32))
                .verify(&token)
                .is_some()
        );
        assert!(keys(&"b".repeat(32), "").verify(&token).is_none());
    }

    #[test]
    fn forged_tokens_fail() {
        let keys = keys(&"a".repeat(32), "");
        let (token, _) = keys
            .issue(Uuid::nil(), Uuid::nil(), Duration::from_secs(60))
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        // alg: none, no signature.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(
            keys.verify(&format!("{none_header}.{}.", parts[1]))
                .is_none()
        );
        // Tampered payload.
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"00000000-0000-0000-0000-000000000001"}"#);
        assert!(
            keys.verify(&format!("{}.{payload}.{}", parts[0], parts[2]))
                .is_none()
        );
        // Expired a minute ago (beyond the 5 s leeway), correctly signed.
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: Uuid::nil(),
            sid: Uuid::nil(),
            iat: now - 120,
            exp: now - 60,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            jti: Uuid::nil(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(keys.kid.clone());
        let expired = jsonwebtoken::encode(&header, &claims, &keys.encoding).unwrap();
        assert!(keys.verify(&expired).is_none());
        // Another audience.
        let claims = Claims {
            aud: "someone-else".into(),
            exp: now + 60,
            ..claims
        };
        assert!(
            keys.verify(&jsonwebtoken::encode(&header, &claims, &keys.encoding).unwrap())
                .is_none()
        );
        assert!(keys.verify("garbage").is_none());
    }

    #[test]
    fn opaque_tokens_are_random_and_hashed() {
        let a = random_token("gi2_");
        assert!(a.starts_with("gi2_") && a.len() > 40);
        assert_ne!(a, random_token("gi2_"));
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_eq!(hash_token(&a).len(), 32);
    }
}
