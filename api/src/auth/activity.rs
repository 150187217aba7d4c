//! The security log a user sees at `/v1/me/activity`.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::client::ClientInfo;
use crate::db::schema::activity_events;

/// Kinds of security event, as stored and shown.
pub mod kind {
    pub const SIGNED_UP: &str = "signed_up";
    pub const SIGNED_IN: &str = "signed_in";
    pub const SIGN_IN_FAILED: &str = "sign_in_failed";
    pub const SIGNED_OUT: &str = "signed_out";
    pub const EMAIL_VERIFIED: &str = "email_verified";
    pub const PASSWORD_CHANGED: &str = "password_changed";
    pub const PASSWORD_RESET: &str = "password_reset";
    pub const PASSWORD_RESET_REQUESTED: &str = "password_reset_requested";
    pub const SESSION_REVOKED: &str = "session_revoked";
    pub const REFRESH_TOKEN_REUSED: &str = "refresh_token_reused";
    pub const PROFILE_UPDATED: &str = "profile_updated";
    pub const CONSENT_CHANGED: &str = "consent_changed";
    pub const API_KEY_CREATED: &str = "api_key_created";
    pub const API_KEY_REVOKED: &str = "api_key_revoked";
    pub const IDENTITY_LINKED: &str = "identity_linked";
    pub const IDENTITY_UNLINKED: &str = "identity_unlinked";
}

pub async fn record(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    kind: &str,
    client: &ClientInfo,
    details: serde_json::Value,
) -> QueryResult<()> {
    diesel::insert_into(activity_events::table)
        .values((
            activity_events::id.eq(Uuid::now_v7()),
            activity_events::user_id.eq(user_id),
            activity_events::kind.eq(kind),
            activity_events::ip.eq(&client.ip),
            activity_events::user_agent.eq(&client.user_agent),
            activity_events::details.eq(details),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
