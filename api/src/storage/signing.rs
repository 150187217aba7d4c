//! HMAC-SHA256 signatures for the local store's download URLs, checked in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &Secret, object_key: &str, expires: i64) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(key.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(object_key.as_bytes());
    mac.update(b"\n");
    mac.update(expires.to_string().as_bytes());
    mac
}

/// Hex signature of `object_key` valid until `expires` (Unix seconds).
pub fn sign(key: &Secret, object_key: &str, expires: i64) -> String {
    hex::encode(mac(key, object_key, expires).finalize().into_bytes())
}

/// True when `signature` is valid for the key and has not expired at `now`.
pub fn verify(key: &Secret, object_key: &str, expires: i64, signature: &str, now: i64) -> bool {
    let Ok(raw) = hex::decode(signature) else {
        return false;
    };
    // verify_slice compares in constant time.
    now <= expires && mac(key, object_key, expires).verify_slice(&raw).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_key_and_expiry() {
        let key = Secret::new("k".repeat(32));
        let sig = sign(&key, "a/b.png", 100);
        assert!(verify(&key, "a/b.png", 100, &sig, 99));
        assert!(!verify(&key, "a/b.png", 100, &sig, 101), "expired");
        assert!(!verify(&key, "a/c.png", 100, &sig, 99), "other object");
        assert!(!verify(&key, "a/b.png", 101, &sig, 99), "extended expiry");
        assert!(
            !verify(&Secret::new("x".repeat(32)), "a/b.png", 100, &sig, 99),
            "other key"
        );
        assert!(!verify(&key, "a/b.png", 100, "zz", 99));
    }
}
