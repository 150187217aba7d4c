//! Who owns an account: whoever proves its mailbox.
//!
//! Anyone can register any address, so until the address is verified the account may belong
//! to someone else than the address's owner: an attacker registers the victim's address first
//! ("pre-hijacking"), keeps a session, mints credentials, and waits for the victim to land in
//! the same account by signing in with Google or by resetting the password. Two rules close it:
//!
//! 1. An unverified account mints nothing that outlives its sessions or reaches outside: no API
//!    key, no webhook (neither its secret nor a `webhook_url`), no checkout
//!    ([`require_verified`], 403 `email_unverified`).
//! 2. The moment the mailbox is proven (the verification link, a provider sign-in with a
//!    verified email linking into the account, a password reset), every credential that
//!    existed before ends: sessions (and with them their refresh-token families), API keys; the
//!    webhook secret is replaced; the security log says so (`credentials_revoked`)
//!    ([`prove`]). A password reset does this every time, verified address or not: it is how an
//!    account is recovered, and whoever only had the old password must lose what it opened.
//!
//! The revocations are plain row updates, so the change triggers tell every process's read
//! cache on commit; callers answering without a signed-in request (no write guard) also drop
//! the user's cached checks themselves.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::User;
use crate::{
    auth::{ClientInfo, activity, sessions},
    db::schema::{api_keys, users},
    generations::webhooks,
};

/// The account's address is not verified yet.
#[derive(Debug, thiserror::Error)]
#[error("verify the account's email address first (follow the link mailed at sign-up)")]
pub struct EmailUnverified;

/// Rule 1: refuses while the address of `user` is unverified.
pub fn require_verified(user: &User) -> Result<(), EmailUnverified> {
    match user.email_verified_at {
        Some(_) => Ok(()),
        None => Err(EmailUnverified),
    }
}

/// How the owner proved the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Followed the verification link.
    VerificationLink,
    /// Signed in with a provider that vouches for the address, linking into the account.
    ProviderSignIn,
    /// Set a password with the mailed reset link.
    PasswordReset,
}

impl Proof {
    /// As recorded: the sessions' `revoked_reason` and the log entry's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::VerificationLink => "email_verified",
            Self::ProviderSignIn => "identity_linked",
            Self::PasswordReset => "password_reset",
        }
    }
}

/// What a proof changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Proven {
    /// The address was not verified before.
    pub newly_verified: bool,
    /// Credentials ended (rule 2); `None` when none had to be (an already verified address
    /// proven again by a link or a provider).
    pub revoked: Option<Revoked>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revoked {
    pub sessions: usize,
    pub api_keys: usize,
    pub webhook_secret_rotated: bool,
}

/// Rule 2: marks the address of `user_id` verified and ends what existed before the proof.
/// Call inside the transaction that consumes the proof; sessions started after it in the same
/// transaction (a provider sign-in's) are untouched.
pub async fn prove(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    proof: Proof,
    client: &ClientInfo,
) -> QueryResult<Proven> {
    let newly_verified = diesel::update(
        users::table
            .find(user_id)
            .filter(users::email_verified_at.is_null()),
    )
    .set((
        users::email_verified_at.eq(diesel::dsl::now),
        users::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)
    .await?
        > 0;
    if !newly_verified && proof != Proof::PasswordReset {
        return Ok(Proven {
            newly_verified,
            revoked: None,
        });
    }
    let revoked = Revoked {
        sessions: sessions::revoke_all(conn, user_id, proof.reason(), None).await?,
        api_keys: diesel::update(
            api_keys::table
                .filter(api_keys::user_id.eq(user_id))
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::revoked_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?,
        webhook_secret_rotated: webhooks::rotate_secret(conn, user_id).await?,
    };
    activity::record(
        conn,
        user_id,
        activity::ActivityKind::CredentialsRevoked,
        client,
        serde_json::json!({
            "reason": proof.reason(),
            "sessions": revoked.sessions,
            "api_keys": revoked.api_keys,
            "webhook_secret_rotated": revoked.webhook_secret_rotated,
        }),
    )
    .await?;
    Ok(Proven {
        newly_verified,
        revoked: Some(revoked),
    })
}
