//! One-click unsubscribe (RFC 8058) from mails that are not strictly necessary. The link
//! carries the user and the list, signed with the unsubscribe key derived from
//! `GI2_URL_SIGNING_KEY`; it does not expire, because an old notice must still be able to stop
//! the next one (so links signed before keys were derived per purpose still verify).

use uuid::Uuid;

use crate::{config::Config, storage::signing};

/// The only optional mail today: the low-balance notice.
pub const LOW_BALANCE: &str = "low_balance";

/// Signing never expires these links.
const NO_EXPIRY: i64 = i64::MAX;

fn message(user_id: Uuid, list: &str) -> String {
    format!("unsubscribe\n{user_id}\n{list}")
}

/// `{user_id}.{list}.{signature}`
pub fn token(config: &Config, user_id: Uuid, list: &str) -> String {
    let signature = signing::sign(
        &config.url_signing_key,
        signing::Purpose::Unsubscribe,
        &message(user_id, list),
        NO_EXPIRY,
    );
    format!("{user_id}.{list}.{signature}")
}

/// The URL for the `List-Unsubscribe` header; mail clients POST to it.
pub fn url(config: &Config, user_id: Uuid, list: &str) -> String {
    let mut url = config
        .public_url
        .join("/v1/mail/unsubscribe")
        .expect("a fixed path joins any base URL");
    url.query_pairs_mut()
        .append_pair("token", &token(config, user_id, list));
    url.into()
}

/// The user and list of a valid token (signature checked in constant time).
pub fn verify(config: &Config, token: &str) -> Option<(Uuid, &'static str)> {
    let mut parts = token.splitn(3, '.');
    let user_id: Uuid = parts.next()?.parse().ok()?;
    let list = match parts.next()? {
        LOW_BALANCE => LOW_BALANCE,
        _ => return None,
    };
    let signature = parts.next()?;
    let message = message(user_id, list);
    let key = &config.url_signing_key;
    (signing::verify(
        key,
        signing::Purpose::Unsubscribe,
        &message,
        NO_EXPIRY,
        signature,
        0,
    ) || signing::verify_undivided(key, &message, NO_EXPIRY, signature, 0))
    .then_some((user_id, list))
}
