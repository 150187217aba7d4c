//! Outgoing generation webhooks: one signed POST per finished generation, retries with
//! backoff, 410 stops them, and private addresses are refused without the test override.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use gptimage2_tests::{AppOptions, TestApp, TestUser, spawn_app_with};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

/// Short retry delays; `allow_private` lets the app post to the local receiver.
async fn app(allow_private: bool, workers: bool) -> TestApp {
    let mut env = vec![("GI2_JOB_BACKOFF_BASE_MS".to_string(), "50".to_string())];
    if allow_private {
        env.push(("GI2_WEBHOOK_ALLOW_PRIVATE".into(), "true".into()));
    }
    spawn_app_with(AppOptions {
        workers,
        smtp: false,
        env,
        ..Default::default()
    })
    .await
}

async fn user_with_credits(app: &TestApp) -> TestUser {
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;
    user
}

/// Submits a cheap generation reporting to `webhook_url`; returns its id.
async fn submit(app: &TestApp, user: &TestUser, webhook_url: Option<&str>) -> String {
    let mut body = json!({"prompt": "a lighthouse at dusk", "size": "1024x1024", "quality": "low"});
    if let Some(url) = webhook_url {
        body["webhook_url"] = json!(url);
    }
    let res = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(&user.access_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let queued: Value = res.json().await.unwrap();
    queued["id"].as_str().unwrap().to_string()
}

async fn generation(app: &TestApp, user: &TestUser, id: &str) -> Value {
    app.get_auth(&format!("/v1/generations/{id}"), &user.access_token)
        .await
        .json()
        .await
        .unwrap()
}

/// Waits until the generation's only delivery has `status`; returns the generation.
async fn delivery_settles(app: &TestApp, user: &TestUser, id: &str, status: &str) -> Value {
    gptimage2_tests::eventually(
        &format!("a {status} delivery of {id}"),
        Duration::from_secs(30),
        || async {
            let g = generation(app, user, id).await;
            (g["webhook_deliveries"][0]["status"] == status).then_some(g)
        },
    )
    .await
}

async fn receiver(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

fn header<'a>(request: &'a wiremock::Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_generation_posts_one_signed_event() {
    let app = app(true, true).await;
    let user = user_with_credits(&app).await;
    let hook = receiver(200).await;
    let id = submit(&app, &user, Some(&format!("{}/hook", hook.uri()))).await;

    let done = delivery_settles(&app, &user, &id, "delivered").await;
    assert_eq!(done["status"], "succeeded");
    let deliveries = done["webhook_deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(
        (
            delivery["attempts"].as_i64(),
            delivery["response_status"].as_i64()
        ),
        (Some(1), Some(200))
    );
    assert!(delivery["last_error"].is_null() && delivery["delivered_at"].is_string());

    // The secret is made once and stays; strangers get none.
    let res = app
        .get_auth("/v1/me/webhook-secret", &user.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let secret = res.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(secret.starts_with("whsec_"));
    let again: Value = app
        .get_auth("/v1/me/webhook-secret", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["secret"], secret);
    assert_eq!(
        app.get("/v1/me/webhook-secret").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Let a (wrong) duplicate arrive if there were one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = hook.received_requests().await.unwrap();
    assert_eq!(received.len(), 1, "exactly one POST");
    let request = &received[0];
    let webhook_id = header(request, "webhook-id");
    assert_eq!(webhook_id, delivery["id"].as_str().unwrap());
    let timestamp = header(request, "webhook-timestamp");
    let sent_at: i64 = timestamp.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{webhook_id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    assert_eq!(header(request, "webhook-signature"), expected);
    assert_eq!(header(request, "content-type"), "application/json");

    let event: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(event["type"], "generation.succeeded");
    assert!(chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().unwrap()).is_ok());
    assert_eq!(event["data"]["id"], id);
    assert_eq!(event["data"]["status"], "succeeded");
    assert_eq!(event["data"]["cost_credits"], done["cost_credits"]);
    assert!(event["data"]["error"].is_null());
    let images = event["data"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["id"], done["images"][0]["id"]);
    assert_eq!(
        (images[0]["width"].as_i64(), images[0]["format"].as_str()),
        (Some(1024), Some("png"))
    );
    assert!(
        images[0].get("url").is_none(),
        "no expiring links in events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_until_it_answers() {
    let app = app(true, true).await;
    let user = user_with_credits(&app).await;
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&hook)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&hook)
        .await;
    let id = submit(&app, &user, Some(&format!("{}/hook", hook.uri()))).await;

    let done = delivery_settles(&app, &user, &id, "delivered").await;
    let delivery = &done["webhook_deliveries"][0];
    assert_eq!(
        (
            delivery["attempts"].as_i64(),
            delivery["response_status"].as_i64()
        ),
        (Some(3), Some(200))
    );
    assert!(delivery["last_error"].is_null());
    let received = hook.received_requests().await.unwrap();
    assert_eq!(received.len(), 3);
    // Retries are the same message: one id, one body.
    for request in &received {
        assert_eq!(
            header(request, "webhook-id"),
            delivery["id"].as_str().unwrap()
        );
        assert_eq!(request.body, received[0].body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_stops_the_deliveries() {
    let app = app(true, true).await;
    let user = user_with_credits(&app).await;
    let hook = receiver(410).await;
    let id = submit(&app, &user, Some(&format!("{}/hook", hook.uri()))).await;

    let done = delivery_settles(&app, &user, &id, "failed").await;
    let delivery = &done["webhook_deliveries"][0];
    assert_eq!(
        (
            delivery["attempts"].as_i64(),
            delivery["response_status"].as_i64()
        ),
        (Some(1), Some(410))
    );
    assert!(delivery["last_error"].as_str().unwrap().contains("410"));
    assert!(delivery["delivered_at"].is_null());
    // With 50 ms backoff a retry would have come by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hook.received_requests().await.unwrap().len(), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = 'deliver_webhook' AND status = 'failed' AND attempts = 1"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_receivers_are_refused_without_the_override() {
    // Development accepts http and IP hosts at submit, so the refusal is the address check's.
    let app = app(false, true).await;
    let user = user_with_credits(&app).await;
    let hook = receiver(200).await;
    let port = hook.address().port();
    let id = submit(&app, &user, Some(&format!("http://127.0.0.1:{port}/hook"))).await;

    let done = delivery_settles(&app, &user, &id, "failed").await;
    assert_eq!(done["status"], "succeeded");
    let delivery = &done["webhook_deliveries"][0];
    let error = delivery["last_error"].as_str().unwrap();
    assert!(
        error.contains("127.0.0.1") && error.contains("loopback"),
        "{error}"
    );
    assert_eq!(delivery["attempts"], 1);
    assert!(delivery["response_status"].is_null());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(hook.received_requests().await.unwrap().is_empty());
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = 'deliver_webhook' AND status = 'failed' AND attempts = 1"
        )
        .await,
        1,
        "refusals are not retried"
    );
}

#[tokio::test]
async fn canceled_generations_notify_and_others_do_not() {
    let app = app(true, false).await;
    let user = user_with_credits(&app).await;
    let with_hook = submit(&app, &user, Some("https://hooks.example.com/gi2")).await;
    let without = submit(&app, &user, None).await;
    for id in [&with_hook, &without] {
        let res = app
            .client
            .post(app.url(&format!("/v1/generations/{id}/cancel")))
            .bearer_auth(&user.access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let canceled = generation(&app, &user, &with_hook).await;
    let deliveries = canceled["webhook_deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        (
            deliveries[0]["status"].as_str(),
            deliveries[0]["attempts"].as_i64()
        ),
        (Some("pending"), Some(0))
    );
    assert_eq!(
        generation(&app, &user, &without).await["webhook_deliveries"],
        json!([])
    );
    let row = app
        .db
        .client()
        .await
        .query_one("SELECT event_type, payload FROM webhook_deliveries", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "generation.canceled");
    let payload: Value = row.get(1);
    assert_eq!(payload["data"]["status"], "canceled");
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = 'deliver_webhook'")
            .await,
        1,
        "queued with the cancel"
    );
}
