//! Product analytics: recorded only under the current analytics consent, pseudonymous,
//! aggregated by `gptimage2 admin analytics`; the refresh cookie is the only cookie set.

use gptimage2_tests::{AppOptions, TestApp, TestUser, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::run;

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await
}

pub(crate) async fn submit(app: &TestApp, user: &TestUser) {
    let res = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(&user.access_token)
        .json(&json!({"prompt": "a secret red fox", "size": "1024x1024", "quality": "low", "n": 1, "output_format": "webp"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

pub(crate) async fn set_analytics(app: &TestApp, user: &TestUser, on: bool) {
    let res = app
        .client
        .put(app.url("/v1/me/consents"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "analytics": on, "marketing": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// (event, properties, the whole row as text), oldest first.
pub(crate) async fn events(app: &TestApp) -> Vec<(String, Value, String)> {
    app.db
        .client()
        .await
        .query(
            "SELECT event, properties, t::text FROM analytics_events t ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_the_current_consent_and_carry_no_identifier() {
    let app = app().await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;

    submit(&app, &user).await;
    app.login_mobile(&user.email, &user.password).await;
    assert!(
        events(&app).await.is_empty(),
        "consent is off by default: nothing is recorded, sign-up included"
    );

    set_analytics(&app, &user, true).await;
    submit(&app, &user).await;
    app.login_mobile(&user.email, &user.password).await;
    let recorded = events(&app).await;
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert_eq!(recorded[0].0, "generation_submitted");
    assert_eq!(
        recorded[0].1,
        json!({"size": "1024x1024", "quality": "low", "n": 1, "output_format": "webp"})
    );
    assert_eq!(recorded[1].0, "signed_in");
    assert_eq!(recorded[1].1, json!({ "method": "password" }));
    for (_, _, row) in &recorded {
        for private in [
            user.id.as_str(),
            user.email.as_str(),
            "127.0.0.1",
            "red fox",
        ] {
            assert!(!row.contains(private), "{private} leaked into {row}");
        }
    }
    let subjects: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(DISTINCT subject) FROM analytics_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(subjects, 1, "one stable pseudonym per user");

    set_analytics(&app, &user, false).await;
    submit(&app, &user).await;
    app.login_mobile(&user.email, &user.password).await;
    assert_eq!(
        events(&app).await.len(),
        2,
        "withdrawal applies from the very next request"
    );
}

#[tokio::test]
async fn sign_in_sets_no_cookie_but_the_refresh_cookie() {
    let app = app().await;
    let email = format!("cookies-{}@example.com", uuid::Uuid::new_v4().simple());
    let register = app
        .post_json(
            "/v1/auth/register",
            &json!({ "email": email, "password": gptimage2_tests::users::PASSWORD, "name": "Cookie Test" }),
        )
        .await;
    assert_eq!(register.status(), StatusCode::CREATED);
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({ "email": email, "password": gptimage2_tests::users::PASSWORD }),
        )
        .await;
    assert_eq!(login.status(), StatusCode::OK);
    for res in [&register, &login] {
        let cookies: Vec<&str> = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        assert!(cookies[0].starts_with("gi2_refresh="), "{cookies:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_analytics_prints_counts_per_day_and_event() {
    let app = app().await;
    let (fan, other) = (app.register_user().await, app.register_user().await);
    for user in [&fan, &other] {
        app.grant_credits(&user.id, 100).await;
        set_analytics(&app, user, true).await;
    }
    submit(&app, &fan).await;
    submit(&app, &fan).await;
    submit(&app, &other).await;

    let dir = gptimage2_tests::tempfile_dir::TempDir::new();
    let storage_dir = dir.0.display().to_string();
    let env = [
        ("GI2_DATABASE_URL", app.db.url.as_str()),
        ("GI2_STORAGE_DIR", storage_dir.as_str()),
        ("GI2_LOG", "warn"),
    ];
    let out = run(&["admin", "analytics", "--days", "7"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let today = chrono::Utc::now().date_naive().to_string();
    let line = stdout
        .lines()
        .find(|l| l.contains("generation_submitted"))
        .unwrap_or_else(|| panic!("no generation_submitted line in {stdout}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields, [today.as_str(), "generation_submitted", "3", "2"]);
    assert!(stdout.contains("distinct subjects: 2"), "{stdout}");
    assert!(!stdout.contains(&fan.email) && !stdout.contains(&fan.id));

    assert!(
        !run(&["admin", "analytics", "--days", "0"], &env)
            .status
            .success()
    );
}
