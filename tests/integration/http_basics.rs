//! Request ids, CORS, health, readiness (and its failures), metrics, 404/405 bodies.

use std::time::Duration;

use gptimage2_tests::{AppOptions, Storage, TestApp, spawn_app_with};

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await
}

fn assert_problem(
    res_headers: &reqwest::header::HeaderMap,
    body: &serde_json::Value,
    status: u16,
    code: &str,
) {
    assert_eq!(res_headers["content-type"], "application/problem+json");
    assert_eq!(body["status"], status);
    assert_eq!(body["code"], code);
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    assert_eq!(
        body["request_id"].as_str(),
        res_headers["x-request-id"].to_str().ok(),
        "the body quotes the request id"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = app().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(
        uuid::Uuid::parse_str(&generated).unwrap().get_version_num(),
        7
    );

    let res = app
        .client
        .get(app.url("/nope"))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["x-request-id"],
        "client-chosen-42",
        "a sane client id is kept"
    );
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(
        res.headers()["x-request-id"],
        "bad id with spaces",
        "an unsafe id is replaced"
    );
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let app = app().await;
    let res = app.get("/v1/nothing-here").await;
    assert_eq!(res.status(), 404);
    let headers = res.headers().clone();
    assert_problem(&headers, &res.json().await.unwrap(), 404, "not_found");

    let res = app.client.delete(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
    let headers = res.headers().clone();
    assert_problem(
        &headers,
        &res.json().await.unwrap(),
        405,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn cors_allows_only_the_spa_origin_with_credentials() {
    let app = app().await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/healthz"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("http://spa.test").await.unwrap();
    assert!(ok.status().is_success());
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://spa.test"
    );
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");

    let denied = preflight("http://evil.test").await.unwrap();
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert!(
        denied.status().is_client_error(),
        "a foreign preflight is refused"
    );
    assert_eq!(denied.headers()["content-type"], "application/problem+json");

    let simple = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert!(
        simple
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn health_and_readiness_with_everything_up() {
    let app = app().await;
    let res = app.get("/healthz").await;
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        body["checks"],
        serde_json::json!({"database": "ok", "object_store": "ok"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_a_lost_database_and_recovers() {
    let app = app().await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let admin = gptimage2_tests::db::admin_client().await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            app.db.name
        ))
        .await
        .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&app.db.name],
        )
        .await
        .unwrap();

    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let headers = res.headers().clone();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_problem(&headers, &body, 503, "not_ready");
    assert!(
        body["detail"].as_str().unwrap().contains("database"),
        "{body}"
    );
    assert!(
        !body["detail"].as_str().unwrap().contains("object_store"),
        "the store is fine: {body}"
    );

    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            app.db.name
        ))
        .await
        .unwrap();
    gptimage2_tests::eventually(
        "readiness after the database returns",
        Duration::from_secs(10),
        || async { (app.get("/readyz").await.status() == 200).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn readiness_names_a_lost_object_store() {
    // Local directory store: remove the directory.
    let app = spawn_app_with(AppOptions {
        storage: Storage::Local,
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    std::fs::remove_dir_all(&app.storage_dir.as_ref().unwrap().0).unwrap();
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("object_store"),
        "{body}"
    );
    assert!(
        !body["detail"].as_str().unwrap().contains("database"),
        "{body}"
    );
}

#[tokio::test]
async fn readiness_names_a_lost_s3_server() {
    // A private S3 server for this test alone, stopped while the app runs.
    let mut server = gptimage2_tests::s3::PrivateServer::start().await;
    let env = server.app_env("readyz-bucket");
    let app = spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        env,
        ..Default::default()
    })
    .await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    server.stop();
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("object_store"),
        "{body}"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let app = app().await;
    for _ in 0..3 {
        app.get("/healthz").await;
    }
    app.get("/v1/missing").await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    assert!(
        text.contains(
            r#"gptimage2_http_requests_total{method="GET",route="/healthz",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"route="unmatched",status="404""#),
        "unknown paths share one label"
    );
    assert!(text.contains("gptimage2_http_request_duration_seconds_bucket"));
    assert!(text.contains("gptimage2_db_pool_connections"));
    assert!(
        !text.contains("/v1/missing"),
        "raw paths never become labels"
    );
}

#[tokio::test]
async fn metrics_show_the_job_queue_depth() {
    let app = app().await;
    let mut conn = app.state.pool.get().await.unwrap();
    for _ in 0..2 {
        gptimage2::jobs::enqueue(
            &mut conn,
            gptimage2::jobs::NewJob::new("send_mail", serde_json::json!({})),
        )
        .await
        .unwrap();
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(r#"gptimage2_job_queue_depth{kind="send_mail",status="queued"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn stops_gracefully() {
    let app = app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let address = app.address.clone();
    tokio::time::timeout(Duration::from_secs(15), app.stop())
        .await
        .expect("stops within the grace period");
    assert!(
        reqwest::get(format!("{address}/healthz")).await.is_err(),
        "the port is closed after stop"
    );
}
