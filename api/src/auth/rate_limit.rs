//! Fixed-window counters in PostgreSQL, shared by every API process.

use std::time::Duration;

use diesel::{
    QueryableByName,
    sql_types::{Double, Integer, Text},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::error::ApiError;

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
    key: &str,
    limit: i32,
    window: Duration,
) -> Result<(), ApiError> {
    let w = count(conn, key, window, 1).await?;
    if w.count > limit {
        return Err(too_many(w.remaining_secs));
    }
    Ok(())
}

/// Fails with 429 when `key` already has `limit` hits in its window (without counting one).
pub async fn check(
    conn: &mut AsyncPgConnection,
    key: &str,
    limit: i32,
    window: Duration,
) -> Result<(), ApiError> {
    let w = count(conn, key, window, 0).await?;
    if w.count >= limit {
        return Err(too_many(w.remaining_secs));
    }
    Ok(())
}

pub async fn clear(conn: &mut AsyncPgConnection, key: &str) -> Result<(), ApiError> {
    diesel::sql_query("DELETE FROM rate_limits WHERE key = $1")
        .bind::<Text, _>(key)
        .execute(conn)
        .await?;
    Ok(())
}

fn too_many(remaining_secs: f64) -> ApiError {
    ApiError::TooManyRequests {
        retry_after_secs: remaining_secs.ceil().max(1.0) as u64,
    }
}

async fn count(
    conn: &mut AsyncPgConnection,
    key: &str,
    window: Duration,
    add: i32,
) -> Result<Window, ApiError> {
    // One statement: starts a new window when the old one is over, else adds to it.
    let window = diesel::sql_query(
        "INSERT INTO rate_limits AS r (key, window_start, count) VALUES ($1, now(), $3)
         ON CONFLICT (key) DO UPDATE SET
           count = CASE WHEN r.window_start + make_interval(secs => $2) <= now() THEN $3 ELSE r.count + $3 END,
           window_start = CASE WHEN r.window_start + make_interval(secs => $2) <= now() THEN now() ELSE r.window_start END
         RETURNING count, EXTRACT(EPOCH FROM (window_start + make_interval(secs => $2) - now()))::float8 AS remaining_secs",
    )
    .bind::<Text, _>(key)
    .bind::<Double, _>(window.as_secs_f64())
    .bind::<Integer, _>(add)
    .get_result::<Window>(conn)
    .await?;
    Ok(window)
}
