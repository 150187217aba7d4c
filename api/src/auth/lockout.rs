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
    pair: String,
    account: String,
}

impl PasswordAttempts {
    pub fn new(email: &str, client: &ClientInfo) -> Self {
        let email = users::normalize_email(email);
        Self {
            pair: format!("login_fail:{email}:{}", client.ip_key()),
            account: format!("login_fail:{email}"),
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
