//! "New sign-in from a new device" mail: a sign-in whose (IP, user agent) pair none of the
//! user's earlier sessions had is announced to the account's address, so a stolen password
//! does not go unnoticed.

use chrono::Utc;
use diesel::{PgExpressionMethods, prelude::*};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::{accounts::User, auth::ClientInfo, db::schema::sessions, error::ApiError, mail};

/// Queues `new_sign_in` for `user` when `client` is a device new to the account. Call it in
/// the sign-in's transaction right after `sessions::start`: the session just started is
/// counted, so "seen before" means a second session with the same pair. The account's very
/// first session (registration, or an OAuth sign-up) is never announced.
pub async fn notify_if_new_device(
    conn: &mut AsyncPgConnection,
    user: &User,
    client: &ClientInfo,
    method: &str,
) -> Result<bool, ApiError> {
    // Revoked and expired sessions count too: a device seen once stays known.
    let total: i64 = sessions::table
        .filter(sessions::user_id.eq(user.id))
        .count()
        .get_result(conn)
        .await?;
    if total <= 1 {
        return Ok(false);
    }
    let same_device: i64 = sessions::table
        .filter(sessions::user_id.eq(user.id))
        .filter(sessions::ip.is_not_distinct_from(client.ip.as_deref()))
        .filter(sessions::user_agent.is_not_distinct_from(client.user_agent.as_deref()))
        .count()
        .get_result(conn)
        .await?;
    if same_device > 1 {
        return Ok(false);
    }
    mail::queue(
        conn,
        &user.email,
        "new_sign_in",
        serde_json::json!({
            "name": user.name,
            "time": Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            "ip": client.ip_key(),
            "user_agent": client.user_agent.as_deref().unwrap_or("unknown"),
            "method": method,
        }),
    )
    .await?;
    Ok(true)
}
