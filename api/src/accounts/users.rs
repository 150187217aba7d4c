//! The account row, lookups, and the profile view clients see.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{db::schema::users, error::FieldError};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub avatar_url: Option<String>,
    pub password_hash: Option<String>,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub low_balance_emails: bool,
}

/// The caller's credit balance, as part of the profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsSummary {
    /// All unspent credits, including those reserved by running generations.
    #[schema(example = 120)]
    pub balance: i64,
    /// Credits free to spend now.
    #[schema(example = 100)]
    pub available: i64,
}

/// A user's profile.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
    "email": "ada@example.com",
    "email_verified": true,
    "name": "Ada Lovelace",
    "avatar_url": "https://images.example.com/ada.png",
    "has_password": true,
    "low_balance_emails": true,
    "created_at": "2026-11-29T10:00:00Z",
    "credits": { "balance": 120, "available": 100 },
    "plan": "starter"
}))]
pub struct UserView {
    pub id: Uuid,
    #[schema(example = "ada@example.com")]
    pub email: String,
    pub email_verified: bool,
    #[schema(example = "Ada Lovelace")]
    pub name: String,
    #[schema(example = "https://images.example.com/ada.png")]
    pub avatar_url: Option<String>,
    /// Whether the account can sign in with a password (false for Google/GitHub-only accounts).
    pub has_password: bool,
    /// Whether a mail goes out when the available balance runs low (optional: the mail's
    /// one-click unsubscribe link turns it off).
    pub low_balance_emails: bool,
    pub created_at: DateTime<Utc>,
    pub credits: CreditsSummary,
    /// The current subscription plan's id, if any.
    pub plan: Option<String>,
}

impl UserView {
    pub fn of(user: &User) -> Self {
        Self {
            id: user.id,
            email: user.email.clone(),
            email_verified: user.email_verified_at.is_some(),
            name: user.name.clone(),
            avatar_url: user.avatar_url.clone(),
            has_password: user.password_hash.is_some(),
            low_balance_emails: user.low_balance_emails,
            created_at: user.created_at,
            credits: CreditsSummary {
                balance: 0,
                available: 0,
            },
            plan: None,
        }
    }
}

impl UserView {
    /// The view with the user's current balances.
    pub async fn load(conn: &mut AsyncPgConnection, user: &User) -> QueryResult<Self> {
        let summary = crate::credits::ledger::summary(conn, user.id).await?;
        let mut view = Self::of(user);
        view.credits = CreditsSummary {
            balance: summary.balance(),
            available: summary.available,
        };
        Ok(view)
    }
}

pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<User> {
    users::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .await
}

pub async fn find_by_email(conn: &mut AsyncPgConnection, email: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(users::email_normalized.eq(normalize_email(email)))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()
}

/// Trimmed and lower-cased: the form uniqueness is checked in.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A deliberately plain check: one `@`, a dotted domain, no spaces, at most 254 characters.
pub fn validate_email(field: &str, email: &str) -> Option<FieldError> {
    let email = email.trim();
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.len() <= 64
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
            }
            None => false,
        };
    (!ok).then(|| FieldError::new(field, "must be a valid email address"))
}

/// 1–100 characters, no control characters.
pub fn validate_name(field: &str, name: &str) -> Option<FieldError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Some(FieldError::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > 100 {
        return Some(FieldError::new(field, "must be at most 100 characters"));
    }
    trimmed
        .chars()
        .any(char::is_control)
        .then(|| FieldError::new(field, "must not contain control characters"))
}

/// An avatar must be an https URL on a public host name, at most 2048 characters.
pub fn validate_avatar_url(field: &str, raw: &str) -> Option<FieldError> {
    if raw.len() > 2048 {
        return Some(FieldError::new(field, "must be at most 2048 characters"));
    }
    let Ok(url) = url::Url::parse(raw) else {
        return Some(FieldError::new(field, "must be a valid URL"));
    };
    if url.scheme() != "https" {
        return Some(FieldError::new(field, "must use https"));
    }
    match url.host() {
        Some(url::Host::Domain(host))
            if host.contains('.')
                && host != "localhost"
                && !host.ends_with(".local")
                && !host.ends_with(".internal") =>
        {
            None
        }
        Some(url::Host::Domain(_)) | None => {
            Some(FieldError::new(field, "must point at a public host"))
        }
        Some(_) => Some(FieldError::new(
            field,
            "must use a host name, not an IP address",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_avatars_are_checked() {
        assert!(validate_email("email", " Ada@Example.com ").is_none());
        for bad in [
            "",
            "ada",
            "ada@",
            "@x.com",
            "a b@x.com",
            "ada@x",
            "ada@x..com",
            "a@b@c.com",
        ] {
            assert!(validate_email("email", bad).is_some(), "{bad}");
        }
        assert_eq!(normalize_email(" Ada@Example.COM "), "ada@example.com");
        assert!(validate_avatar_url("avatar_url", "https://cdn.example.com/a.png").is_none());
        for bad in [
            "http://cdn.example.com/a.png",
            "https://127.0.0.1/a.png",
            "https://localhost/a",
            "https://[::1]/a",
            "nope",
        ] {
            assert!(validate_avatar_url("avatar_url", bad).is_some(), "{bad}");
        }
    }
}
