//! Attacks: see `security.rs`.
//!
//! Login CSRF through the OAuth callback (issue #13, point 2), mail abuse (point 10), one key
//! for every signature (extra), and a production server that mails into its log (extra).

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use gptimage2_tests::{
    AppOptions, Served, Storage, TestApp, TestUser, base_env, eventually,
    oauth_fake::{FakeProvider, FakeUser, state_cookie, state_set_cookie},
    spawn_app_with,
    users::{PASSWORD, refresh_cookie},
};
use hmac::{Hmac, Mac};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use url::Url;

const SPA: &str = "http://spa.test";

/// A browser of its own: no cookies unless a test hands them over.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(res: &Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

async fn authorize(app: &TestApp, client: &reqwest::Client, provider: &str) -> Response {
    let url = Url::parse_with_params(
        &app.url(&format!("/v1/auth/oauth/{provider}/authorize")),
        &[("redirect_to", format!("{SPA}/welcome"))],
    )
    .unwrap();
    let res = client.get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND, "authorize");
    res
}

/// The attacker signs in at the provider with their own account but stops before the
/// callback: the URL they will hand to the victim (a link, an `<img>`, a redirect).
async fn attackers_callback(app: &TestApp, google: &FakeProvider) -> String {
    let attacker = browser();
    let started = authorize(app, &attacker, "google").await;
    google.authorize(&location(&started)).await
}

#[tokio::test]
async fn attacker_hands_a_victim_the_callback_of_their_own_google_sign_in() {
    let google = FakeProvider::google(FakeUser::new("mallory@example.com")).await;
    let app = spawn_app_with(AppOptions {
        env: google.env(),
        ..Default::default()
    })
    .await;

    // The victim's browser has never started a sign-in.
    let callback = attackers_callback(&app, &google).await;
    let victim = browser();
    let landing = victim.get(&callback).send().await.unwrap();
    assert!(
        refresh_cookie(&landing).is_none(),
        "the victim's browser was signed in as the attacker ({})",
        location(&landing)
    );
    assert_eq!(landing.status(), StatusCode::FOUND);
    assert_eq!(
        location(&landing),
        format!("{SPA}/welcome?error=oauth_state_mismatch")
    );
    assert_eq!(app.count("SELECT count(*) FROM sessions").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM users").await, 0);
    // Used up: the attacker cannot hand the same URL to a second victim either.
    assert_eq!(app.count("SELECT count(*) FROM oauth_states").await, 0);

    // The victim started a sign-in of their own, so their browser holds a state cookie; it
    // is for the victim's sign-in, not the attacker's.
    let started = authorize(&app, &victim, "google").await;
    let cookie = state_cookie(&started).expect("authorize sets the state cookie");
    let callback = attackers_callback(&app, &google).await;
    let landing = victim
        .get(&callback)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(
        refresh_cookie(&landing).is_none(),
        "signed in with another sign-in's cookie"
    );
    assert_eq!(
        location(&landing),
        format!("{SPA}/welcome?error=oauth_state_mismatch")
    );
    assert_eq!(app.count("SELECT count(*) FROM sessions").await, 0);

    // The cookie: strictly necessary, short-lived, only for the callback, and cleared there.
    let set = state_set_cookie(&started).unwrap();
    let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
    for needed in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/v1/auth/oauth/google/callback",
        "Max-Age=600",
    ] {
        assert!(attributes.contains(&needed), "{needed} missing in {set}");
    }
    let cleared = state_set_cookie(&landing).expect("the callback clears the cookie");
    assert!(cleared.starts_with("gi2_oauth_state=;"), "{cleared}");

    // The browser that started a sign-in finishes it.
    let started = authorize(&app, &victim, "google").await;
    let cookie = state_cookie(&started).unwrap();
    google.set_user(FakeUser::new("victim@example.com"));
    let callback = google.authorize(&location(&started)).await;
    let landing = victim
        .get(&callback)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(location(&landing), format!("{SPA}/welcome?signed_in=1"));
    assert!(refresh_cookie(&landing).is_some());
}

async fn verify_email(app: &TestApp, user: &TestUser) {
    let token = app.mailed_token(&user.email, "/verify-email").await;
    let res = app
        .post_json("/v1/auth/verify-email", &json!({ "token": token }))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

async fn support_request(app: &TestApp, token: &str, subject: &str, message: &str) {
    let res = app
        .client
        .post(app.url("/v1/support/requests"))
        .bearer_auth(token)
        .json(&json!({ "subject": subject, "message": message }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn attacker_relays_phishing_through_the_support_copy_to_an_address_they_do_not_own() {
    let app = spawn_app_with(AppOptions::default()).await;
    // Anyone's address, registered by the attacker; never verified.
    let victim = "ceo@example.com";
    let attacker = app.register_with(victim, PASSWORD, "IT Helpdesk").await;
    let phishing = "Your mailbox is full. Sign in at http://evil.example/login to keep it.";
    support_request(&app, &attacker.access_token, "Mailbox notice", phishing).await;

    let copies = app
        .count("SELECT count(*) FROM outbox_mails WHERE template = 'support_copy'")
        .await;
    assert_eq!(
        copies, 0,
        "a copy of the attacker's text was queued to the unverified address"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox_mails WHERE template = 'support_request'")
            .await,
        1,
        "the request itself still reaches support"
    );

    // Once the address is proven, its owner gets copies again.
    // (Verifying ends every earlier session: the owner signs in again.)
    verify_email(&app, &attacker).await;
    let (owner, _) = app.login_mobile(victim, PASSWORD).await;
    support_request(&app, &owner, "A real question", "Hello").await;
    assert_eq!(
        app.count(
            "SELECT count(*) FROM outbox_mails
             WHERE template = 'support_copy' AND to_address = 'ceo@example.com'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacker_forges_log_lines_through_a_mail_written_to_the_log() {
    // No GI2_SMTP_URL: mail goes to the log.
    let served = Served::fresh(
        &["serve"],
        &[
            ("GI2_LOG", "info"),
            ("GI2_LOG_FORMAT", "text"),
            ("NO_COLOR", "1"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{}/v1/auth/register", served.base))
        .json(&json!({ "email": "forger@example.com", "password": PASSWORD, "name": "F" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap();
    let forged = "2026-12-04T00:00:00Z  INFO forged: admin signed in from 10.0.0.1";
    let res = client
        .post(format!("{}/v1/support/requests", served.base))
        .bearer_auth(token)
        .json(&json!({ "subject": "Log test", "message": format!("hello\n{forged}\nbye") }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    let out = eventually(
        "the support request is written to the log",
        Duration::from_secs(20),
        || {
            let out = served.output();
            async move { out.contains("forged: admin").then_some(out) }
        },
    )
    .await;
    let forged_lines: Vec<&str> = out.lines().filter(|l| l.starts_with(forged)).collect();
    assert!(
        forged_lines.is_empty(),
        "the mail's text forged a log line: {forged_lines:?}"
    );
    // Still one record per mail, with the text escaped inside it.
    assert!(
        out.lines()
            .any(|l| l.contains("support_request") && l.contains("\\nbye")),
        "{out}"
    );
}

#[tokio::test]
async fn attacker_replays_an_unsubscribe_signature_as_a_download_signature() {
    let app = spawn_app_with(AppOptions {
        storage: Storage::Local,
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    let user_id: uuid::Uuid = user.id.parse().unwrap();
    // What every low-balance notice carries in its List-Unsubscribe link.
    let token = gptimage2::mail::unsubscribe::token(
        &app.state.config,
        user_id,
        gptimage2::mail::unsubscribe::LOW_BALANCE,
    );
    let signature = token.rsplit('.').next().unwrap();
    // Signed as "unsubscribe\n{user}\nlow_balance" + "\n" + i64::MAX: the same bytes a
    // download signature covers for that key and expiry.
    let url = format!(
        "/files/unsubscribe%0A{user_id}%0Alow_balance?expires={}&signature={signature}",
        i64::MAX
    );
    let res = app.get(&url).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the unsubscribe signature was accepted as a download signature: {body}"
    );
    assert_eq!(body["detail"], "This download link is invalid.", "{body}");
}

#[tokio::test]
async fn attacker_with_the_url_signing_key_recomputes_analytics_pseudonyms() {
    let app = spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    crate::analytics::set_analytics(&app, &user, true).await;
    let res = app
        .post_json(
            "/v1/auth/login",
            &json!({ "email": user.email, "password": PASSWORD }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let subjects: Vec<String> = app
        .db
        .client()
        .await
        .query("SELECT subject::text FROM analytics_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!subjects.is_empty(), "the sign-in was recorded");

    // The pseudonym as it was: HMAC(GI2_URL_SIGNING_KEY, domain || user id), cut to a UUID.
    let key = base_env(&app.db)["GI2_URL_SIGNING_KEY"].clone();
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(b"gi2-analytics-subject:v1:");
    mac.update(uuid::Uuid::parse_str(&user.id).unwrap().as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let shared_key_pseudonym = uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string();
    assert!(
        !subjects.contains(&shared_key_pseudonym),
        "the analytics pseudonym is the URL signing key's HMAC of the user id"
    );
    // Still one stable pseudonym per user.
    app.post_json(
        "/v1/auth/login",
        &json!({ "email": user.email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(
        app.count("SELECT count(DISTINCT subject) FROM analytics_events")
            .await,
        1
    );
}

#[tokio::test]
async fn production_without_smtp_refuses_to_start_instead_of_logging_reset_tokens() {
    let mut child = Command::new(gptimage2_tests::served::binary())
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GI2_ENV", "production")
        .env(
            "GI2_URL_SIGNING_KEY",
            "prod-url-signing-key-0123456789abcdef",
        )
        .env("GI2_JWT_SECRET", "prod-jwt-secret-0123456789abcdef01234")
        // Nothing listens here: if the server gets past its configuration, it stops anyway.
        .env("GI2_DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("GI2_BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a production server without GI2_SMTP_URL kept running");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("GI2_SMTP_URL"),
        "a production server without GI2_SMTP_URL got past its configuration \
         (exit {:?}): {stderr}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
