//! The low-balance mail: sent once when the available balance drops below the threshold,
//! and armed again when it recovers.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::{
    config::Config,
    db::schema::{credit_accounts, users},
    mail::{self, unsubscribe},
};

/// Call after a change to the user's balance, in the same transaction; true when a mail was
/// queued. Users who turned the notice off (`low_balance_emails`) are only re-armed.
pub async fn check(
    conn: &mut AsyncPgConnection,
    config: &Config,
    user_id: Uuid,
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
    check_account(conn, config, user_id, available, notified).await
}

/// [`check`] with the account row this transaction already holds locked (after a hold).
pub async fn check_account(
    conn: &mut AsyncPgConnection,
    config: &Config,
    user_id: Uuid,
    available: i64,
    notified: bool,
) -> anyhow::Result<bool> {
    let low = available < config.billing.low_balance_threshold;
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
    let (email, name, wanted): (String, String, bool) = users::table
        .find(user_id)
        .select((users::email, users::name, users::low_balance_emails))
        .first(conn)
        .await?;
    if !wanted {
        return Ok(false);
    }
    let settings_url = config
        .auth
        .spa_url
        .join("settings/notifications")
        .map(String::from)
        .unwrap_or_else(|_| config.auth.spa_url.to_string());
    mail::queue(
        conn,
        &email,
        "low_balance",
        serde_json::json!({
            "name": name,
            "available": available,
            "settings_url": settings_url,
            "unsubscribe_url": unsubscribe::url(config, user_id, unsubscribe::LOW_BALANCE),
        }),
    )
    .await?;
    Ok(true)
}
