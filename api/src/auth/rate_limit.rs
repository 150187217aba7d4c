//! Fixed-window counters in PostgreSQL, shared by every API process.
//!
//! A window is named by a [`Key`]: what is limited (a fixed scope such as `login_fail`), whose
//! (one exact identifier: a normalized address, a user id or an IP) and, for per-client
//! windows, from which IP. Rows keep only SHA-256 hashes: `key` of the whole name, `subject`
//! of the identifier alone. So the table names nobody, and erasing an account deletes exactly
//! the windows of its own identifiers ([`forget`]), never those of an address that merely
//! contains its address (deleting `lice@x` once cleared the lockout of `alice@x`).

use std::time::Duration;

use diesel::{
    QueryableByName,
    sql_types::{Array, Double, Integer, Text},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The name of one window, hashed; see the module notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    hash: String,
    subject: String,
}

impl Key {
    /// The window of `scope` for `subject` (an address already normalized, a user id, an IP).
    pub fn new(scope: &str, subject: &str) -> Self {
        Self::from_parts(scope, subject, None)
    }

    /// The window of `scope` for `subject` seen from the client address `ip`; erased with
    /// `subject`'s other windows.
    pub fn with_ip(scope: &str, subject: &str, ip: &str) -> Self {
        Self::from_parts(scope, subject, Some(ip))
    }

    fn from_parts(scope: &str, subject: &str, ip: Option<&str>) -> Self {
        // Each part with its length first: no two different names hash the same input
        // (`a@x` from `1.2.3.4` is not the address `a@x:1.2.3.4`).
        let mut hasher = Sha256::new();
        for part in [Some(scope), Some(subject), ip].into_iter().flatten() {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        Self {
            hash: hex::encode(hasher.finalize()),
            subject: subject_hash(subject),
        }
    }
}

/// `"scope:subject"`, the textual form keys had before they were hashed: the scope is the
/// text before the first `:`, the subject everything after it.
impl From<&str> for Key {
    fn from(text: &str) -> Self {
        let (scope, subject) = text.split_once(':').unwrap_or(("", text));
        Self::new(scope, subject)
    }
}

impl From<&String> for Key {
    fn from(text: &String) -> Self {
        Self::from(text.as_str())
    }
}

impl From<&Key> for Key {
    fn from(key: &Key) -> Self {
        key.clone()
    }
}

fn subject_hash(subject: &str) -> String {
    hex::encode(Sha256::digest(subject.as_bytes()))
}

#[derive(QueryableByName)]
struct Window {
    #[diesel(sql_type = Integer)]
    count: i32,
    #[diesel(sql_type = Double)]
    remaining_secs: f64,
}

/// Counts one hit on `key`; past `limit` hits in `window`, a 429 with `Retry-After`.
pub async fn hit(
    conn: &mut AsyncPgConnection,
    key: impl Into<Key>,
    limit: i32,
    window: Duration,
) -> Result<(), ApiError> {
    let w = count(conn, &key.into(), window, 1).await?;
    if w.count > limit {
        return Err(too_many(w.remaining_secs));
    }
    Ok(())
}

/// Fails with 429 when `key` already has `limit` hits in its window (without counting one).
pub async fn check(
    conn: &mut AsyncPgConnection,
    key: impl Into<Key>,
    limit: i32,
    window: Duration,
) -> Result<(), ApiError> {
    let w = count(conn, &key.into(), window, 0).await?;
    if w.count >= limit {
        return Err(too_many(w.remaining_secs));
    }
    Ok(())
}

pub async fn clear(conn: &mut AsyncPgConnection, key: impl Into<Key>) -> Result<(), ApiError> {
    diesel::sql_query("DELETE FROM rate_limits WHERE key = $1")
        .bind::<Text, _>(key.into().hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes every window of exactly these identifiers (an erased account's address and id),
/// whatever their scope or client IP.
pub async fn forget(
    conn: &mut AsyncPgConnection,
    subjects: &[&str],
) -> Result<usize, diesel::result::Error> {
    let hashes: Vec<String> = subjects.iter().map(|s| subject_hash(s)).collect();
    diesel::sql_query("DELETE FROM rate_limits WHERE subject = ANY($1)")
        .bind::<Array<Text>, _>(hashes)
        .execute(conn)
        .await
}

fn too_many(remaining_secs: f64) -> ApiError {
    ApiError::TooManyRequests {
        retry_after_secs: remaining_secs.ceil().max(1.0) as u64,
    }
}

async fn count(
    conn: &mut AsyncPgConnection,
    key: &Key,
    window: Duration,
    add: i32,
) -> Result<Window, ApiError> {
    // One statement: starts a new window when the old one is over, else adds to it.
    let window = diesel::sql_query(
        "INSERT INTO rate_limits AS r (key, subject, window_start, count) VALUES ($1, $4, now(), $3)
         ON CONFLICT (key) DO UPDATE SET
           count = CASE WHEN r.window_start + make_interval(secs => $2) <= now() THEN $3 ELSE r.count + $3 END,
           window_start = CASE WHEN r.window_start + make_interval(secs => $2) <= now() THEN now() ELSE r.window_start END
         RETURNING count, EXTRACT(EPOCH FROM (window_start + make_interval(secs => $2) - now()))::float8 AS remaining_secs",
    )
    .bind::<Text, _>(&key.hash)
    .bind::<Double, _>(window.as_secs_f64())
    .bind::<Integer, _>(add)
    .bind::<Text, _>(&key.subject)
    .get_result::<Window>(conn)
    .await?;
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differ_when_their_parts_do_even_if_their_text_joins_the_same() {
        assert_ne!(
            Key::with_ip("login_fail", "a@x", "1.2.3.4"),
            Key::new("login_fail", "a@x:1.2.3.4")
        );
        assert_ne!(
            Key::new("login_fail", "alice@x"),
            Key::new("login_fail", "lice@x")
        );
        assert_ne!(Key::new("forgot", "a@x"), Key::new("login_fail", "a@x"));
    }

    #[test]
    fn a_window_from_an_ip_belongs_to_its_subject() {
        let pair = Key::with_ip("login_fail", "a@x", "1.2.3.4");
        assert_eq!(pair.subject, Key::new("forgot", "a@x").subject);
        assert_eq!(pair.subject, subject_hash("a@x"));
    }

    #[test]
    fn the_textual_form_names_the_same_window_as_its_parts() {
        let id = "0192e4a0-0000-7000-8000-000000000000";
        assert_eq!(
            Key::from(format!("password_fail:{id}").as_str()),
            Key::new("password_fail", id)
        );
    }

    #[test]
    fn no_part_is_stored_in_plain_text() {
        let key = Key::with_ip("login_fail", "alice@example.com", "203.0.113.7");
        for text in [&key.hash, &key.subject] {
            assert_eq!(text.len(), 64);
            assert!(!text.contains("alice") && !text.contains("203.0"));
        }
    }
}
