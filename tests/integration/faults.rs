//! Failures of what the service depends on, while it works.

use std::time::Duration;

use gptimage2_tests::{AppOptions, spawn_app_with};
use serde_json::{Value, json};

/// The object store goes away while a generation is being stored: the job retries, then the
/// generation fails and its credits are released; nothing is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_outage_during_a_generation_releases_the_hold() {
    let mut server = gptimage2_tests::s3::PrivateServer::start().await;
    let mut env = server.app_env("faults-bucket");
    env.push(("GI2_JOB_BACKOFF_BASE_MS".into(), "50".into()));
    env.push(("GI2_JOB_POLL_MS".into(), "50".into()));
    let app = spawn_app_with(AppOptions {
        smtp: false,
        env,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 10).await;

    server.stop();
    let res = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(&user.access_token)
        .json(&json!({"prompt": "a fox", "size": "256x256", "quality": "low"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = gptimage2_tests::eventually(
        "the generation to fail",
        Duration::from_secs(60),
        || async {
            let g: Value = app
                .get_auth(&format!("/v1/generations/{id}"), &user.access_token)
                .await
                .json()
                .await
                .unwrap();
            (g["status"] == "failed").then_some(g)
        },
    )
    .await;
    assert_eq!(failed["error"]["code"], "internal_error");
    let attempts: i32 = app
        .db
        .client()
        .await
        .query_one("SELECT attempts FROM jobs WHERE kind = 'generate'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(attempts > 1, "the job was retried before giving up");
    let credits: Value = app
        .get_auth("/v1/credits", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (credits["available"].as_i64(), credits["held"].as_i64()),
        (Some(10), Some(0)),
        "nothing charged"
    );
    app.assert_ledger_invariants().await;
}
