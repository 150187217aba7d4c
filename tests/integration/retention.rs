//! Retention: activity logs, finished jobs (and their delivered mails), idempotency records
//! and expired exports are deleted by the scheduled sweep once older than configured, and
//! nothing younger is touched.

use std::time::Duration;

use gptimage2_tests::{AppOptions, TestApp, TestUser, eventually, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        env: vec![
            ("GI2_RETENTION_ACTIVITY_DAYS".into(), "30".into()),
            ("GI2_RETENTION_JOBS_DAYS".into(), "7".into()),
            ("GI2_RETENTION_IDEMPOTENCY_HOURS".into(), "2".into()),
            ("GI2_RETENTION_EXPIRED_EXPORTS_DAYS".into(), "3".into()),
        ],
        ..Default::default()
    })
    .await
}

async fn exec(app: &TestApp, sql: &str) {
    app.db.client().await.execute(sql, &[]).await.unwrap();
}

/// A finished export of `user`, with its archive in the store.
async fn finished_export(app: &TestApp, user: &TestUser) -> String {
    let res = app
        .client
        .post(app.url("/v1/me/exports"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the export succeeded", Duration::from_secs(30), || async {
        let view: Value = app
            .get_auth(&format!("/v1/me/exports/{id}"), &user.access_token)
            .await
            .json()
            .await
            .unwrap();
        (view["status"] == "succeeded").then_some(())
    })
    .await;
    id
}

async fn support_request(app: &TestApp, user: &TestUser, key: &str, subject: &str) -> StatusCode {
    app.client
        .post(app.url("/v1/support/requests"))
        .bearer_auth(&user.access_token)
        .header("Idempotency-Key", key)
        .json(&json!({ "subject": subject, "message": "hello" }))
        .send()
        .await
        .unwrap()
        .status()
}

/// The id (as text) of the row `select` finds, after setting its `column` to `age` ago.
async fn backdate(app: &TestApp, table: &str, column: &str, age: &str, select: &str) -> String {
    app.db
        .client()
        .await
        .query_one(
            &format!(
                "UPDATE {table} SET {column} = now() - interval '{age}'
                 WHERE id = ({select}) RETURNING id::text"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn exists(app: &TestApp, table: &str, id: &str) -> bool {
    app.count(&format!("SELECT count(*) FROM {table} WHERE id = '{id}'"))
        .await
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_only_what_is_past_its_retention() {
    let app = app().await;
    let user = app.register_user().await;
    let other = app.register_user().await;

    // Activity: one entry past 30 days, one just inside.
    let old_activity = backdate(
        &app,
        "activity_events",
        "created_at",
        "31 days",
        "SELECT id FROM activity_events ORDER BY id ASC LIMIT 1",
    )
    .await;
    let kept_activity = backdate(
        &app,
        "activity_events",
        "created_at",
        "29 days",
        "SELECT id FROM activity_events ORDER BY id DESC LIMIT 1",
    )
    .await;

    // Finished jobs and delivered mails (the two verification mails): one of each past
    // 7 days, one inside.
    eventually(
        "verification mails delivered",
        Duration::from_secs(15),
        || async {
            (app.count(
                "SELECT count(*) FROM jobs WHERE kind = 'send_mail' AND status = 'succeeded'",
            )
            .await
                >= 2)
                .then_some(())
        },
    )
    .await;
    let old_job = backdate(&app, "jobs", "finished_at", "8 days",
        "SELECT id FROM jobs WHERE kind = 'send_mail' AND status = 'succeeded' ORDER BY id ASC LIMIT 1").await;
    let kept_job = backdate(&app, "jobs", "finished_at", "6 days",
        "SELECT id FROM jobs WHERE kind = 'send_mail' AND status = 'succeeded' ORDER BY id DESC LIMIT 1").await;
    let old_mail = backdate(
        &app,
        "outbox_mails",
        "created_at",
        "8 days",
        "SELECT id FROM outbox_mails WHERE status = 'sent' ORDER BY id ASC LIMIT 1",
    )
    .await;
    let kept_mail = backdate(
        &app,
        "outbox_mails",
        "created_at",
        "6 days",
        "SELECT id FROM outbox_mails WHERE status = 'sent' ORDER BY id DESC LIMIT 1",
    )
    .await;

    // Idempotency: a record 3 h old (past 2 h) and a fresh one.
    assert_eq!(
        support_request(&app, &user, "old-key", "First").await,
        StatusCode::CREATED
    );
    assert_eq!(
        support_request(&app, &user, "new-key", "Second").await,
        StatusCode::CREATED
    );
    exec(
        &app,
        "UPDATE idempotency_keys SET created_at = now() - interval '3 hours'
                WHERE key = 'old-key'",
    )
    .await;
    // Past retention a key is free again even before the sweep (the middleware reads the
    // same setting): a different body is a new request, not a 422.
    assert_eq!(
        support_request(&app, &user, "old-key", "Third").await,
        StatusCode::CREATED
    );
    exec(
        &app,
        "UPDATE idempotency_keys SET created_at = now() - interval '3 hours'
                WHERE key = 'old-key'",
    )
    .await;
    assert_eq!(
        support_request(&app, &user, "new-key", "Changed").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a key inside retention still refuses a different body"
    );

    // Exports: both expired, one 4 days ago (past 3), one 2 days ago. At expiry the archive
    // goes at once; the row stays, without a link, until retention.
    let old_export = finished_export(&app, &user).await;
    let kept_export = finished_export(&app, &other).await;
    exec(
        &app,
        &format!(
            "UPDATE exports SET expires_at = now() - interval '4 days' WHERE id = '{old_export}'"
        ),
    )
    .await;
    exec(
        &app,
        &format!(
            "UPDATE exports SET expires_at = now() - interval '2 days' WHERE id = '{kept_export}'"
        ),
    )
    .await;
    assert_eq!(
        gptimage2::accounts::export::purge_expired(&app.state)
            .await
            .unwrap(),
        2
    );
    for id in [&old_export, &kept_export] {
        let key = app
            .count(&format!(
                "SELECT count(*) FROM exports WHERE id = '{id}' AND object_key IS NULL"
            ))
            .await;
        assert_eq!(key, 1, "the archive of {id} is deleted at expiry");
    }

    // The sweep is a job: the maintenance loop scheduled one at start-up, and none again
    // within the interval. Forget it to sweep now.
    let sweeps =
        "SELECT count(*) FROM jobs WHERE kind = 'retention_sweep' AND status = 'succeeded'";
    eventually(
        "the start-up sweep ran",
        Duration::from_secs(20),
        || async { (app.count(sweeps).await == 1).then_some(()) },
    )
    .await;
    let mut conn = app.state.pool.get().await.unwrap();
    let every = Duration::from_secs(3600);
    let schedule = gptimage2::retention::schedule;
    assert!(
        !schedule(&mut conn, every).await.unwrap(),
        "not again within the interval"
    );
    exec(&app, "DELETE FROM jobs WHERE kind = 'retention_sweep'").await;
    assert!(schedule(&mut conn, every).await.unwrap());
    assert!(
        !schedule(&mut conn, every).await.unwrap(),
        "one sweep at a time"
    );
    eventually("the sweep ran", Duration::from_secs(20), || async {
        (app.count(sweeps).await == 1).then_some(())
    })
    .await;

    for (table, gone, kept) in [
        ("activity_events", &old_activity, &kept_activity),
        ("jobs", &old_job, &kept_job),
        ("outbox_mails", &old_mail, &kept_mail),
        ("exports", &old_export, &kept_export),
    ] {
        assert!(
            !exists(&app, table, gone).await,
            "{table} {gone} is past retention"
        );
        assert!(exists(&app, table, kept).await, "{table} {kept} is not");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM idempotency_keys WHERE key = 'old-key'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM idempotency_keys WHERE key = 'new-key'")
            .await,
        1
    );
    // The user still sees the expired export, without a link, until it is swept.
    let kept: Value = app
        .get_auth(
            &format!("/v1/me/exports/{kept_export}"),
            &other.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(kept["download_url"].is_null());
    let gone = app
        .get_auth(&format!("/v1/me/exports/{old_export}"), &user.access_token)
        .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}
