//! Story helpers: `app.register_user()`, `app.login(...)`, reading mailed tokens.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::TestApp;

/// A signed-up user and what the API handed out.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub name: String,
    pub access_token: String,
    /// The `gi2_refresh` cookie value (web clients).
    pub refresh_cookie: Option<String>,
}

pub const PASSWORD: &str = "correct horse battery staple";

/// The value of the `gi2_refresh` cookie set by a response, if any.
pub fn refresh_cookie(res: &Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            let value = c
                .strip_prefix("gi2_refresh=")?
                .split(';')
                .next()?
                .to_string();
            (!value.is_empty()).then_some(value)
        })
}

/// The raw `Set-Cookie` header for `gi2_refresh`.
pub fn refresh_set_cookie(res: &Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("gi2_refresh="))
        .map(str::to_owned)
}

impl TestApp {
    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// Registers a fresh user (unique email) with a verified address and returns it signed in
    /// (web client). API keys, webhooks and checkouts need a verified address; for an
    /// account as registration leaves it (unverified), use [`TestApp::register_with`].
    pub async fn register_user(&self) -> TestUser {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let user = self.register_with(&email, PASSWORD, "Test User").await;
        self.mark_verified(&user.id).await;
        user
    }

    /// Marks the address of `user_id` verified in the database, as following the mailed link
    /// does, but keeping the user's sessions (the link ends them: see `accounts::ownership`).
    pub async fn mark_verified(&self, user_id: &str) {
        let changed = self
            .db
            .client()
            .await
            .execute(
                "UPDATE users SET email_verified_at = now() WHERE id = $1::text::uuid AND email_verified_at IS NULL",
                &[&user_id],
            )
            .await
            .unwrap();
        assert_eq!(changed, 1, "user {user_id} exists and was unverified");
    }

    /// Registers the account as the API leaves it: signed in, its address not yet verified.
    pub async fn register_with(&self, email: &str, password: &str, name: &str) -> TestUser {
        let res = self
            .post_json(
                "/v1/auth/register",
                &json!({ "email": email, "password": password, "name": name }),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "register failed");
        let cookie = refresh_cookie(&res);
        let body: Value = res.json().await.unwrap();
        TestUser {
            id: body["user"]["id"].as_str().unwrap().to_string(),
            email: email.to_string(),
            password: password.to_string(),
            name: name.to_string(),
            access_token: body["access_token"].as_str().unwrap().to_string(),
            refresh_cookie: cookie,
        }
    }

    /// Signs in as a mobile client: returns (access token, refresh token).
    pub async fn login_mobile(&self, email: &str, password: &str) -> (String, String) {
        let res = self
            .post_json(
                "/v1/auth/login",
                &json!({ "email": email, "password": password, "client": "mobile" }),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK, "mobile login failed");
        let body: Value = res.json().await.unwrap();
        (
            body["access_token"].as_str().unwrap().to_string(),
            body["refresh_token"].as_str().unwrap().to_string(),
        )
    }

    /// The token in the newest mail to `to` whose link contains `path` (e.g. `/verify-email`).
    pub async fn mailed_token(&self, to: &str, path: &str) -> String {
        let smtp = self.smtp.as_ref().expect("the app has an SMTP listener");
        crate::eventually(
            &format!("a mail to {to} with a {path} link"),
            Duration::from_secs(10),
            || async {
                smtp.received()
                    .iter()
                    .rev()
                    .filter(|m| m.to.iter().any(|t| t == to))
                    .find_map(|m| token_in(&m.text_body(), path))
            },
        )
        .await
    }
}

/// The `token` query parameter of the first link to `path` in `text`.
pub fn token_in(text: &str, path: &str) -> Option<String> {
    let start = text.find(&format!("{path}?token="))? + path.len() + "?token=".len();
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!token.is_empty()).then_some(token)
}

impl TestApp {
    /// Creates an API key through the API with a session token: returns (id, secret key).
    pub async fn issue_api_key(&self, access_token: &str, name: &str) -> (String, String) {
        let res = self
            .client
            .post(self.url("/v1/me/api-keys"))
            .bearer_auth(access_token)
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status(), StatusCode::CREATED, "API key creation failed");
        let body: Value = res.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_string(),
            body["key"].as_str().unwrap().to_string(),
        )
    }
}

impl TestApp {
    /// Grants `amount` credits to `user` through the ledger (as an operator would).
    pub async fn grant_credits(&self, user_id: &str, amount: i64) -> uuid::Uuid {
        let mut conn = self.state.pool.get().await.unwrap();
        gptimage2::credits::ledger::grant(
            &mut conn,
            gptimage2::credits::ledger::NewGrant {
                user_id: user_id.parse().unwrap(),
                amount,
                source: gptimage2::credits::GrantSource::Promotion,
                expires_at: None,
                reference: None,
                description: "test grant",
            },
        )
        .await
        .unwrap()
    }

    /// Panics when any balance disagrees with the ledger, grants or holds.
    pub async fn assert_ledger_invariants(&self) {
        let mut conn = self.state.pool.get().await.unwrap();
        let problems = gptimage2::credits::ledger::check_invariants(&mut conn)
            .await
            .unwrap();
        assert!(
            problems.is_empty(),
            "ledger invariants broken: {problems:#?}"
        );
    }
}
