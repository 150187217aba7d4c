//! Support requests, the new-device sign-in mail, and the policy-change notice command.

use std::{process::Command, time::Duration};

use gptimage2_tests::{AppOptions, ReceivedMail, TestApp, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SUPPORT: &str = "help@support.test";

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        env: vec![("GI2_SUPPORT_EMAIL".into(), SUPPORT.into())],
        ..Default::default()
    })
    .await
}

async fn send(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/support/requests"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// (to, template) of every queued mail, oldest first.
async fn outbox(app: &TestApp) -> Vec<(String, String)> {
    app.db
        .client()
        .await
        .query(
            "SELECT to_address, template FROM outbox_mails ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn count_templates(app: &TestApp, template: &str) -> usize {
    outbox(app)
        .await
        .iter()
        .filter(|(_, t)| t == template)
        .count()
}

/// The delivered mails to `to` whose subject contains `subject`.
pub(crate) async fn delivered(app: &TestApp, to: &str, subject: &str) -> Vec<ReceivedMail> {
    let smtp = app.smtp.as_ref().expect("smtp");
    gptimage2_tests::eventually(
        &format!("a mail to {to} about '{subject}'"),
        Duration::from_secs(15),
        || async {
            let found: Vec<ReceivedMail> = smtp
                .received()
                .into_iter()
                .filter(|m| m.to.iter().any(|t| t == to))
                // Long subjects are folded, and unfolding drops the fold's space.
                .filter(|m| {
                    m.header("Subject")
                        .is_some_and(|s| s.replace(' ', "").contains(&subject.replace(' ', "")))
                })
                .collect();
            (!found.is_empty()).then_some(found)
        },
    )
    .await
}

#[tokio::test]
async fn a_support_request_is_stored_mailed_to_support_and_copied_to_the_user() {
    let app = app().await;
    let user = app.register_user().await;
    // Copies go only to a verified address (else anyone could mail text to anyone).
    let token = app.mailed_token(&user.email, "/verify-email").await;
    let res = app
        .post_json("/v1/auth/verify-email", &json!({ "token": token }))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let message = "My generation failed.\n\tIt still used 4 credits.";
    let res = send(
        &app,
        &user.access_token,
        &json!({ "subject": "  Credits used by a failed generation ", "message": message }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["subject"], "Credits used by a failed generation");
    assert_eq!(created["message"], message);
    let id = created["id"].as_str().unwrap().to_string();

    let to_support = delivered(&app, SUPPORT, "Credits used by a failed generation").await;
    assert_eq!(to_support.len(), 1);
    let text = to_support[0].text_body();
    assert!(text.contains("It still used 4 credits."), "{text}");
    assert!(
        text.contains(&user.id) && text.contains(&user.email),
        "{text}"
    );
    // Support answers by replying: the reply goes to the user, not to the no-reply sender.
    assert_eq!(
        to_support[0].header("Reply-To").as_deref(),
        Some(user.email.as_str())
    );
    let copy = delivered(&app, &user.email, "We received your support request").await;
    assert!(copy[0].text_body().contains("It still used 4 credits."));
    assert!(copy[0].header("Reply-To").is_none());

    let list: Value = app
        .get_auth("/v1/support/requests", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(list["next_cursor"], Value::Null);

    // API keys may write too; pages are newest first.
    let (_, key) = app.issue_api_key(&user.access_token, "ci").await;
    let res = send(&app, &key, &json!({ "subject": "Second", "message": "Hi" })).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let page: Value = app
        .get_auth("/v1/support/requests?limit=1", &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"][0]["subject"], "Second");
    let cursor = page["next_cursor"].as_str().unwrap();
    let next: Value = app
        .get_auth(
            &format!("/v1/support/requests?limit=1&cursor={cursor}"),
            &key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(next["data"][0]["id"], id.as_str());

    // Nobody else sees them.
    let other = app.register_user().await;
    let theirs: Value = app
        .get_auth("/v1/support/requests", &other.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["data"], json!([]));
    let anonymous = app
        .client
        .post(app.url("/v1/support/requests"))
        .json(&json!({ "subject": "x", "message": "y" }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn invalid_support_requests_are_refused_naming_the_field_and_nothing_is_stored() {
    let app = app().await;
    let user = app.register_user().await;
    let long_message = "x".repeat(10_001);
    let long_subject = "s".repeat(201);
    for (body, field) in [
        (json!({ "subject": "", "message": "hi" }), "subject"),
        (json!({ "subject": "   ", "message": "hi" }), "subject"),
        (
            json!({ "subject": long_subject, "message": "hi" }),
            "subject",
        ),
        (
            json!({ "subject": "two\nlines", "message": "hi" }),
            "subject",
        ),
        (json!({ "subject": "hi", "message": "" }), "message"),
        (
            json!({ "subject": "hi", "message": long_message }),
            "message",
        ),
        (
            json!({ "subject": "hi", "message": "bell\u{7}" }),
            "message",
        ),
        (json!({ "subject": "hi", "message": "nul\u{0}" }), "message"),
    ] {
        let res = send(&app, &user.access_token, &body).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed");
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    let res = send(
        &app,
        &user.access_token,
        &json!({ "subject": "hi", "message": "x".repeat(10_000) }),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "the limits are inclusive"
    );
    let stored: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM support_requests", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
    assert_eq!(count_templates(&app, "support_request").await, 1);
}

#[tokio::test]
async fn support_requests_are_rate_limited_per_user() {
    let app = app().await;
    let user = app.register_user().await;
    let body = json!({ "subject": "again", "message": "and again" });
    for _ in 0..10 {
        let res = send(&app, &user.access_token, &body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let res = send(&app, &user.access_token, &body).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    // Another user is not affected.
    let other = app.register_user().await;
    let res = send(&app, &other.access_token, &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(count_templates(&app, "support_request").await, 11);
}

async fn login_with_agent(app: &TestApp, email: &str, password: &str, agent: Option<&str>) {
    let mut req = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({ "email": email, "password": password }));
    if let Some(agent) = agent {
        req = req.header("User-Agent", agent);
    }
    let res = req.send().await.expect("request sent");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_sign_in_from_a_new_device_is_mailed_once() {
    let app = app().await;
    let user = app.register_user().await;
    assert_eq!(
        count_templates(&app, "new_sign_in").await,
        0,
        "registering is the first device"
    );
    login_with_agent(&app, &user.email, &user.password, None).await;
    assert_eq!(
        count_templates(&app, "new_sign_in").await,
        0,
        "same address and user agent"
    );

    let agent = "Gi2Phone/3.1 (new device)";
    login_with_agent(&app, &user.email, &user.password, Some(agent)).await;
    assert_eq!(count_templates(&app, "new_sign_in").await, 1);
    let mail = delivered(&app, &user.email, "New sign-in").await;
    let text = mail[0].text_body();
    assert!(text.contains(agent), "{text}");
    assert!(
        text.contains("127.0.0.1") && text.contains("password"),
        "{text}"
    );

    login_with_agent(&app, &user.email, &user.password, Some(agent)).await;
    assert_eq!(
        count_templates(&app, "new_sign_in").await,
        1,
        "a device seen before is not announced again"
    );
}

fn notify(app: &TestApp, storage_dir: &str, version: &str) -> String {
    let out = Command::new(crate::cli::binary())
        .args([
            "admin",
            "notify-policy-change",
            "--version",
            version,
            "--summary",
            "Shorter retention of prompts",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GI2_DATABASE_URL", &app.db.url)
        .env("GI2_STORAGE_DIR", storage_dir)
        .env("GI2_LOG", "warn")
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// How many `policy_changed` mails each address has queued.
async fn notices_to(app: &TestApp, email: &str) -> usize {
    outbox(app)
        .await
        .iter()
        .filter(|(to, t)| to == email && t == "policy_changed")
        .count()
}

#[tokio::test]
async fn the_policy_notice_reaches_every_user_once_per_version() {
    let app = app().await;
    let ada = app.register_user().await;
    let bob = app.register_user().await;
    let dir = gptimage2_tests::tempfile_dir::TempDir::new();
    let storage = dir.0.display().to_string();

    let out = notify(&app, &storage, "2027-01");
    assert!(out.contains("queued 2 "), "{out}");
    assert_eq!(notices_to(&app, &ada.email).await, 1);
    assert_eq!(notices_to(&app, &bob.email).await, 1);
    let mail = delivered(&app, &ada.email, "2027-01").await;
    let text = mail[0].text_body();
    assert!(text.contains("Shorter retention of prompts"), "{text}");
    assert!(
        mail[0].header("List-Unsubscribe").is_none(),
        "essential mail"
    );

    let out = notify(&app, &storage, "2027-01");
    assert!(out.contains("queued 0 "), "{out}");
    assert_eq!(count_templates(&app, "policy_changed").await, 2);

    let cid = app.register_user().await;
    let out = notify(&app, &storage, "2027-01");
    assert!(out.contains("queued 1 "), "{out}");
    assert_eq!(notices_to(&app, &cid.email).await, 1);
    assert_eq!(notices_to(&app, &ada.email).await, 1);

    // A new version is a new notice for everyone.
    let out = notify(&app, &storage, "2027-06");
    assert!(out.contains("queued 3 "), "{out}");
}

#[tokio::test]
async fn an_oauth_sign_in_from_a_new_device_is_mailed_but_the_sign_up_is_not() {
    use gptimage2_tests::oauth_fake::{FakeProvider, FakeUser, state_cookie};

    let google = FakeProvider::google(FakeUser::new("lin@example.com")).await;
    let app = spawn_app_with(AppOptions {
        env: google.env(),
        ..Default::default()
    })
    .await;
    let sign_in = |agent: &'static str| {
        let (app, google) = (&app, &google);
        async move {
            let redirect_to = "http://spa.test/welcome";
            let start = reqwest::Url::parse_with_params(
                &app.url("/v1/auth/oauth/google/authorize"),
                &[("redirect_to", redirect_to)],
            )
            .unwrap();
            let res = app.client.get(start).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::FOUND);
            let location = res.headers()["location"].to_str().unwrap().to_string();
            let cookie = state_cookie(&res).expect("authorize sets the state cookie");
            let callback = google.authorize(&location).await;
            let res = app
                .client
                .get(callback)
                .header("cookie", cookie)
                .header("User-Agent", agent)
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.headers()["location"].to_str().unwrap(),
                format!("{redirect_to}?signed_in=1")
            );
        }
    };
    sign_in("Laptop/1.0").await;
    assert_eq!(
        count_templates(&app, "new_sign_in").await,
        0,
        "the sign-up is the first device"
    );
    sign_in("Laptop/1.0").await;
    assert_eq!(count_templates(&app, "new_sign_in").await, 0);
    sign_in("Tablet/2.0").await;
    assert_eq!(count_templates(&app, "new_sign_in").await, 1);
    let mail = delivered(&app, "lin@example.com", "New sign-in").await;
    let text = mail[0].text_body();
    assert!(
        text.contains("Tablet/2.0") && text.contains("google"),
        "{text}"
    );
}

#[tokio::test]
async fn the_low_balance_notice_has_a_one_click_unsubscribe_that_stops_it() {
    let app = spawn_app_with(AppOptions {
        env: vec![("GI2_LOW_BALANCE_THRESHOLD".into(), "1000".into())],
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 1000).await;
    let me: Value = app
        .get_auth("/v1/me", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["low_balance_emails"], true, "on by default");
    let submit = async || {
        let res = app
            .client
            .post(app.url("/v1/generations"))
            .bearer_auth(&user.access_token)
            .json(&json!({ "prompt": "a lighthouse", "size": "1024x1024", "quality": "low" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    };
    submit().await;
    let notice = delivered(&app, &user.email, "credits are running low").await;
    // Optional mail: RFC 8058 one-click headers, and the body says how to turn it off.
    assert_eq!(
        notice[0].header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let header = notice[0].header("List-Unsubscribe").unwrap();
    let link = header
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    assert!(link.starts_with(&app.address), "{link}");
    let text: String = app
        .db
        .client()
        .await
        .query_one(
            "SELECT text_body FROM outbox_mails WHERE template = 'low_balance'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        text.contains("http://spa.test/settings/notifications"),
        "{text}"
    );
    // Essential mails carry no unsubscribe header.
    let verify = delivered(&app, &user.email, "Confirm").await;
    assert!(verify[0].header("List-Unsubscribe").is_none());

    // A forged or altered token changes nothing.
    let forged = link.replace("token=", "token=0");
    let res = app
        .client
        .post(&forged)
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    // The mail client's one-click POST, without any sign-in, turns the notice off.
    for _ in 0..2 {
        let res = app
            .client
            .post(&link)
            .form(&[("List-Unsubscribe", "One-Click")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }
    let me: Value = app
        .get_auth("/v1/me", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["low_balance_emails"], false);

    // The next crossing re-arms silently: no second notice is queued.
    let db = app.db.client().await;
    db.execute(
        "UPDATE credit_accounts SET low_balance_notified = false WHERE user_id = $1::text::uuid",
        &[&user.id],
    )
    .await
    .unwrap();
    submit().await;
    assert_eq!(count_templates(&app, "low_balance").await, 1);
    let armed: bool = db
        .query_one(
            "SELECT low_balance_notified FROM credit_accounts WHERE user_id = $1::text::uuid",
            &[&user.id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(armed);

    // Turned back on from the profile, the next crossing mails again.
    let res = app
        .client
        .patch(app.url("/v1/me"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "low_balance_emails": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    db.execute(
        "UPDATE credit_accounts SET low_balance_notified = false WHERE user_id = $1::text::uuid",
        &[&user.id],
    )
    .await
    .unwrap();
    submit().await;
    assert_eq!(count_templates(&app, "low_balance").await, 2);
}
