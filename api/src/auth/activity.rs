//! The security log a user sees at `/v1/me/activity`.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::client::ClientInfo;
use crate::{db::schema::activity_events, wire_enum};

wire_enum! {
    /// Kinds of security event, as stored and shown.
    #[schema(example = "signed_in")]
    pub enum ActivityKind {
        SignedUp = "signed_up",
        SignedIn = "signed_in",
        SignInFailed = "sign_in_failed",
        SignedOut = "signed_out",
        EmailVerified = "email_verified",
        PasswordChanged = "password_changed",
        PasswordReset = "password_reset",
        PasswordResetRequested = "password_reset_requested",
        SessionRevoked = "session_revoked",
        RefreshTokenReused = "refresh_token_reused",
        ProfileUpdated = "profile_updated",
        ConsentChanged = "consent_changed",
        ApiKeyCreated = "api_key_created",
        ApiKeyRevoked = "api_key_revoked",
        IdentityLinked = "identity_linked",
        IdentityUnlinked = "identity_unlinked",
        AccountDeletionRequested = "account_deletion_requested",
        /// The mailbox was proven (`details.reason`): every earlier session and API key ended and
        /// the webhook secret was replaced (`details` counts them).
        CredentialsRevoked = "credentials_revoked",
    }
}

pub async fn record(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    kind: ActivityKind,
    client: &ClientInfo,
    details: serde_json::Value,
) -> QueryResult<()> {
    diesel::insert_into(activity_events::table)
        .values((
            activity_events::id.eq(Uuid::now_v7()),
            activity_events::user_id.eq(user_id),
            activity_events::kind.eq(kind.as_str()),
            activity_events::ip.eq(&client.ip),
            activity_events::user_agent.eq(&client.user_agent),
            activity_events::details.eq(details),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
