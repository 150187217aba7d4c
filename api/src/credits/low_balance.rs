//! The low-balance mail: sent once when the available balance drops below the threshold,
//! and armed again when it recovers.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::{accounts::users, db::schema::credit_accounts, mail};

/// Call after a change to the user's balance, in the same transaction; true when a mail was queued.
pub async fn check(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    threshold: i64,
) -> anyhow::Result<bool> {
    let Some((available, notified)): Option<(i64, bool)> = credit_accounts::table
        .find(user_id)
        .select((
            credit_accounts::available,
            credit_accounts::low_balance_notified,
        ))
        .for_update()
        .first(conn)
        .await
        .optional()?
    else {
        return Ok(false);
    };
    let low = available < threshold;
    if low == notified {
        return Ok(false);
    }
    diesel::update(credit_accounts::table.find(user_id))
        .set(credit_accounts::low_balance_notified.eq(low))
        .execute(conn)
        .await?;
    if !low {
        return Ok(false);
    }
    let user = users::find(conn, user_id).await?;
    mail::queue(
        conn,
        &user.email,
        "low_balance",
        serde_json::json!({ "name": user.name, "available": available }),
    )
    .await?;
    Ok(true)
}
