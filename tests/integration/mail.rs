//! Mail goes through the outbox and a job to a real SMTP listener; an outage only delays it.

use std::time::Duration;

use gptimage2_tests::{AppOptions, spawn_app_with};

async fn outbox_row(
    app: &gptimage2_tests::TestApp,
    id: uuid::Uuid,
) -> (String, i32, Option<String>) {
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT status, attempts, last_error FROM outbox_mails WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mail_arrives_over_smtp_with_text_and_html() {
    let app = spawn_app_with(AppOptions::default()).await;
    let mut conn = app.state.pool.get().await.unwrap();
    let id = gptimage2::mail::queue(
        &mut conn,
        "ada@example.com",
        "operator_test",
        serde_json::json!({"sent_at": "now"}),
    )
    .await
    .unwrap();
    let smtp = app.smtp.as_ref().unwrap();
    let mails = smtp.wait_for(1, Duration::from_secs(10)).await;
    let mail = &mails[0];
    assert_eq!(mail.to, vec!["ada@example.com"]);
    assert_eq!(mail.from, "no-reply@localhost");
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("GPT Image 2 mail check")
    );
    assert!(
        mail.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative")
    );
    assert!(mail.data.contains("text/plain") && mail.data.contains("text/html"));
    gptimage2_tests::eventually(
        "the outbox row marked sent",
        Duration::from_secs(5),
        || async { (outbox_row(&app, id).await.0 == "sent").then_some(()) },
    )
    .await;
    assert_eq!(smtp.received().len(), 1, "sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_outage_delays_mail_but_never_loses_it() {
    let app = spawn_app_with(AppOptions::default()).await;
    let smtp = app.smtp.clone().unwrap();
    smtp.set_down(true);
    let mut conn = app.state.pool.get().await.unwrap();
    let id = gptimage2::mail::queue(
        &mut conn,
        "bob@example.com",
        "operator_test",
        serde_json::json!({"sent_at": "now"}),
    )
    .await
    .unwrap();
    let (status, attempts, error) = gptimage2_tests::eventually(
        "a failed delivery attempt",
        Duration::from_secs(10),
        || async {
            let row = outbox_row(&app, id).await;
            (row.1 >= 1).then_some(row)
        },
    )
    .await;
    assert_eq!(status, "pending", "a failed attempt keeps the mail");
    assert!(error.unwrap().contains("SMTP"), "the cause is kept");
    assert!(attempts >= 1);
    assert!(smtp.received().is_empty());

    smtp.set_down(false);
    let mails = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails[0].to, vec!["bob@example.com"]);
    gptimage2_tests::eventually(
        "the outbox row marked sent",
        Duration::from_secs(5),
        || async { (outbox_row(&app, id).await.0 == "sent").then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn queueing_an_unknown_template_fails_and_writes_nothing() {
    let app = spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let mut conn = app.state.pool.get().await.unwrap();
    assert!(
        gptimage2::mail::queue(
            &mut conn,
            "x@example.com",
            "no_such_template",
            serde_json::json!({})
        )
        .await
        .is_err()
    );
    let count: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM outbox_mails", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}
