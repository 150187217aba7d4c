//! Error bodies: signed-download failures and bad query strings come out as problem+json.

use gptimage2_tests::{AppOptions, Storage, spawn_app_with};

#[tokio::test]
async fn bad_query_parameters_are_validation_problems() {
    let app = spawn_app_with(AppOptions {
        storage: Storage::Local,
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let res = app
        .get("/files/a/b.png?expires=tomorrow&signature=00")
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed");
    assert!(
        body["errors"].as_array().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}
