//! Consent-gated product analytics: an event stream (generation submitted, checkout
//! started, ...) written only while the user's current analytics consent is on.
//!
//! Events carry no direct identifier: `subject` is a keyed pseudonym of the user id, and
//! properties never hold an IP, email, user agent or prompt. The table has no foreign key to
//! `users`, so deleting an account leaves its events behind; they stay unlinkable
//! aggregates, because the only way back from a pseudonym is recomputing it from a user id
//! that no longer exists anywhere in the database.

use chrono::NaiveDate;
use diesel::{
    QueryableByName,
    sql_types::{BigInt, Date, Integer, Jsonb, Text},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::{config::Secret, storage::signing};

/// Event names; operators aggregate by them.
pub mod event {
    pub const SIGNED_UP: &str = "signed_up";
    pub const SIGNED_IN: &str = "signed_in";
    pub const GENERATION_SUBMITTED: &str = "generation_submitted";
    pub const CHECKOUT_STARTED: &str = "checkout_started";
}

/// HMAC-SHA256(the analytics key derived from `key`, user id) cut to a UUID: stable per user
/// (distinct-user counts work) but not reversible without the key, and unrelated to any
/// signature this API hands out. Rotating the key starts new pseudonyms.
pub fn subject(key: &Secret, user_id: Uuid) -> Uuid {
    let key = signing::derive(key, signing::Purpose::AnalyticsSubject);
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(user_id.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Records `event` when the user's newest consent row grants analytics; `Ok(false)` when it
/// does not (or there is none). One statement, so a withdrawal committed before this request
/// is always seen.
pub async fn record(
    conn: &mut AsyncPgConnection,
    key: &Secret,
    user_id: Uuid,
    event: &str,
    properties: serde_json::Value,
) -> diesel::QueryResult<bool> {
    let inserted = diesel::sql_query(
        "INSERT INTO analytics_events (id, subject, event, properties)
         SELECT $2, $3, $4, $5
         WHERE coalesce((SELECT analytics FROM consents WHERE user_id = $1
                         ORDER BY created_at DESC, id DESC LIMIT 1), false)",
    )
    .bind::<diesel::sql_types::Uuid, _>(user_id)
    .bind::<diesel::sql_types::Uuid, _>(Uuid::now_v7())
    .bind::<diesel::sql_types::Uuid, _>(subject(key, user_id))
    .bind::<Text, _>(event)
    .bind::<Jsonb, _>(properties)
    .execute(conn)
    .await?;
    Ok(inserted == 1)
}

/// [`record`] for request handlers: analytics never fails a request, so errors become a
/// warning. Call it after the request's own transaction has committed.
pub async fn track(
    conn: &mut AsyncPgConnection,
    key: &Secret,
    user_id: Uuid,
    event: &str,
    properties: serde_json::Value,
) {
    if let Err(err) = record(conn, key, user_id, event, properties).await {
        tracing::warn!(event, error = %err, "analytics event not recorded");
    }
}

/// [`track`] on a connection of its own, for handlers that hold none at that point.
pub async fn track_pooled(
    state: &crate::state::AppState,
    user_id: Uuid,
    event: &str,
    properties: serde_json::Value,
) {
    match state.pool.get().await {
        Ok(mut conn) => {
            track(
                &mut conn,
                &state.config.url_signing_key,
                user_id,
                event,
                properties,
            )
            .await
        }
        Err(err) => tracing::warn!(event, error = %err, "analytics event not recorded"),
    }
}

/// Events of one kind on one UTC day.
#[derive(Debug, QueryableByName)]
pub struct DailyCount {
    #[diesel(sql_type = Date)]
    pub day: NaiveDate,
    #[diesel(sql_type = Text)]
    pub event: String,
    #[diesel(sql_type = BigInt)]
    pub events: i64,
    #[diesel(sql_type = BigInt)]
    pub subjects: i64,
}

/// Counts per UTC day and event over the last `days` days (today included), oldest first.
pub async fn daily_counts(
    conn: &mut AsyncPgConnection,
    days: i32,
) -> diesel::QueryResult<Vec<DailyCount>> {
    diesel::sql_query(
        "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, event,
                count(*)::bigint AS events, count(DISTINCT subject)::bigint AS subjects
         FROM analytics_events
         WHERE created_at >= ((now() AT TIME ZONE 'UTC')::date - ($1 - 1))::timestamp AT TIME ZONE 'UTC'
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind::<Integer, _>(days)
    .load(conn)
    .await
}

#[derive(QueryableByName)]
struct Distinct {
    #[diesel(sql_type = BigInt)]
    subjects: i64,
}

/// Distinct pseudonymous users over the same window as [`daily_counts`].
pub async fn distinct_subjects(
    conn: &mut AsyncPgConnection,
    days: i32,
) -> diesel::QueryResult<i64> {
    diesel::sql_query(
        "SELECT count(DISTINCT subject)::bigint AS subjects FROM analytics_events
         WHERE created_at >= ((now() AT TIME ZONE 'UTC')::date - ($1 - 1))::timestamp AT TIME ZONE 'UTC'",
    )
    .bind::<Integer, _>(days)
    .get_result::<Distinct>(conn)
    .await
    .map(|d| d.subjects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_stable_per_user_and_key_and_hide_the_user_id() {
        let (key, other_key) = (Secret::new("k1"), Secret::new("k2"));
        let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(subject(&key, ada), subject(&key, ada));
        assert_ne!(subject(&key, ada), subject(&key, bob));
        assert_ne!(subject(&key, ada), subject(&other_key, ada));
        assert_ne!(subject(&key, ada), ada);
    }
}
