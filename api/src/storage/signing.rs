//! HMAC-SHA256 signatures of this API's own links (local-store downloads, unsubscribe links),
//! each with its own key derived from `GI2_URL_SIGNING_KEY`, checked in constant time.
//!
//! `GI2_URL_SIGNING_KEY` is never used as a key itself: HKDF-SHA256 (RFC 5869) derives one
//! key per [`Purpose`], so a signature made for one purpose never verifies for another (an
//! unsubscribe link's signature is no download signature), and the analytics pseudonyms are
//! keyed with a key of their own.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// What a derived key is for; its HKDF `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `/files/{key}?expires=&signature=` of the local store.
    DownloadUrl,
    /// `/v1/mail/unsubscribe?token=`.
    Unsubscribe,
    /// The pseudonym of a user in `analytics_events.subject`.
    AnalyticsSubject,
}

impl Purpose {
    fn info(self) -> &'static [u8] {
        match self {
            Self::DownloadUrl => b"gptimage2 download-url v1",
            Self::Unsubscribe => b"gptimage2 unsubscribe v1",
            Self::AnalyticsSubject => b"gptimage2 analytics-subject v1",
        }
    }
}

/// The key for `purpose`: HKDF-SHA256 of the configured key (no salt; `info` names the
/// purpose).
pub fn derive(key: &Secret, purpose: Purpose) -> [u8; 32] {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(None, key.expose().as_bytes())
        .expand(purpose.info(), &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    okm
}

fn mac(key: &[u8], message: &str, expires: i64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac.update(b"\n");
    mac.update(expires.to_string().as_bytes());
    mac
}

/// Hex signature of `message` for `purpose`, valid until `expires` (Unix seconds).
pub fn sign(key: &Secret, purpose: Purpose, message: &str, expires: i64) -> String {
    hex::encode(
        mac(&derive(key, purpose), message, expires)
            .finalize()
            .into_bytes(),
    )
}

/// True when `signature` is valid for the key and purpose and has not expired at `now`.
pub fn verify(
    key: &Secret,
    purpose: Purpose,
    message: &str,
    expires: i64,
    signature: &str,
    now: i64,
) -> bool {
    verify_with(&derive(key, purpose), message, expires, signature, now)
}

/// [`verify`] for a signature made, before keys were derived per purpose, with the
/// configured key itself. Only links that must outlive a key change (unsubscribe links
/// never expire) may accept it; nothing is signed this way any more.
pub fn verify_undivided(
    key: &Secret,
    message: &str,
    expires: i64,
    signature: &str,
    now: i64,
) -> bool {
    verify_with(key.expose().as_bytes(), message, expires, signature, now)
}

fn verify_with(key: &[u8], message: &str, expires: i64, signature: &str, now: i64) -> bool {
    let Ok(raw) = hex::decode(signature) else {
        return false;
    };
    // verify_slice compares in constant time.
    now <= expires && mac(key, message, expires).verify_slice(&raw).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DL: Purpose = Purpose::DownloadUrl;

    #[test]
    fn signatures_bind_key_and_expiry() {
        let key = Secret::new("k".repeat(32));
        let sig = sign(&key, DL, "a/b.png", 100);
        assert!(verify(&key, DL, "a/b.png", 100, &sig, 99));
        assert!(!verify(&key, DL, "a/b.png", 100, &sig, 101), "expired");
        assert!(!verify(&key, DL, "a/c.png", 100, &sig, 99), "other object");
        assert!(
            !verify(&key, DL, "a/b.png", 101, &sig, 99),
            "extended expiry"
        );
        assert!(
            !verify(&Secret::new("x".repeat(32)), DL, "a/b.png", 100, &sig, 99),
            "other key"
        );
        assert!(!verify(&key, DL, "a/b.png", 100, "zz", 99));
    }

    #[test]
    fn each_purpose_has_its_own_key() {
        let key = Secret::new("k".repeat(32));
        let purposes = [
            Purpose::DownloadUrl,
            Purpose::Unsubscribe,
            Purpose::AnalyticsSubject,
        ];
        for a in purposes {
            assert_ne!(derive(&key, a).as_slice(), key.expose().as_bytes());
            let sig = sign(&key, a, "m", 100);
            for b in purposes {
                assert_eq!(verify(&key, b, "m", 100, &sig, 0), a == b, "{a:?} as {b:?}");
            }
            assert!(!verify_undivided(&key, "m", 100, &sig, 0));
        }
        let undivided = hex::encode(
            mac(key.expose().as_bytes(), "m", 100)
                .finalize()
                .into_bytes(),
        );
        assert!(verify_undivided(&key, "m", 100, &undivided, 0));
        assert!(!verify(&key, DL, "m", 100, &undivided, 0));
    }
}
