//! Wrong-password lockout, shared by every route that checks a password against the account:
//! sign-in, and password change (where a stolen access token would otherwise make the current
//! password guessable without limit).
//!
//! Failures count per (account, client address) and, with a bar ten times higher, per account
//! across addresses, so a victim elsewhere can still sign in. Past either bar the route answers
//! 429 with `Retry-After` until the window ends, right password or not. A password reset lifts
//! both counts.

use diesel_async::AsyncPgConnection;

use super::{ClientInfo, rate_limit};
use crate::{accounts::users, config::AuthConfig, error::ApiError};

/// The counters of one account as seen from one client address.
pub struct PasswordAttempts {
    pair: rate_limit::Key,
    account: rate_limit::Key,
}

impl PasswordAttempts {
    pub fn new(email: &str, client: &ClientInfo) -> Self {
        let email = users::normalize_email(email);
        Self {
            pair: rate_limit::Key::with_ip("login_fail", &email, client.ip_key()),
            account: rate_limit::Key::new("login_fail", &email),
        }
    }

    /// 429 while either count is at its bar; call before checking the password.
    pub async fn check(
        &self,
        conn: &mut AsyncPgConnection,
        config: &AuthConfig,
    ) -> Result<(), ApiError> {
        rate_limit::check(conn, &self.pair, config.max_failed_logins, config.lockout).await?;
        rate_limit::check(
            conn,
            &self.account,
            config.max_failed_logins * 10,
            config.lockout,
        )
        .await
    }

    /// Counts a wrong password. Best effort: failing to count never turns a refusal into a 500.
    pub async fn failed(&self, conn: &mut AsyncPgConnection, config: &AuthConfig) {
        for key in [&self.pair, &self.account] {
            if let Err(e) = rate_limit::hit(conn, key, i32::MAX, config.lockout).await {
                tracing::warn!(error = %e, "counting a wrong password failed");
            }
        }
    }

    /// The right password clears this address's count (the account-wide one runs out).
    pub async fn succeeded(&self, conn: &mut AsyncPgConnection) -> Result<(), ApiError> {
        rate_limit::clear(conn, &self.pair).await
    }
}

/// A password reset proves the mailbox: the account's wrong-password windows end, from every
/// address. Windows are stored hashed, so this ends every window of the address as subject
/// (the forgot-password cap too, which the reset has just made moot).
pub async fn lift(conn: &mut AsyncPgConnection, email: &str) -> Result<(), diesel::result::Error> {
    rate_limit::forget(conn, &[&users::normalize_email(email)])
        .await
        .map(drop)
}
