//! `Idempotency-Key`: the first answer is replayed, a different body or a running first
//! request is refused, keys are per user, 4xx are replayed, and without the header nothing
//! changes.

use gptimage2_tests::{AppOptions, TestApp, TestUser, spawn_app_with};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await
}

async fn post(app: &TestApp, path: &str, token: &str, key: Option<&str>, body: &Value) -> Response {
    let mut req = app.client.post(app.url(path)).bearer_auth(token).json(body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    req.send().await.unwrap()
}

async fn generate(app: &TestApp, user: &TestUser, key: Option<&str>, prompt: &str) -> Response {
    post(
        app,
        "/v1/generations",
        &user.access_token,
        key,
        &json!({"prompt": prompt, "size": "1024x1024", "quality": "low"}),
    )
    .await
}

async fn generations_of(app: &TestApp, user: &TestUser) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM generations WHERE user_id = '{}'",
        user.id
    ))
    .await
}

async fn holds_of(app: &TestApp, user: &TestUser) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM credit_holds WHERE user_id = '{}'",
        user.id
    ))
    .await
}

fn replayed(res: &Response) -> bool {
    res.headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

async fn problem_code(res: Response) -> String {
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "errors are problem+json"
    );
    let body: Value = res.json().await.unwrap();
    body["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_generation_is_replayed_and_charged_once() {
    let app = app().await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;

    let first = generate(&app, &user, Some("gen-1"), "a red fox").await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(!replayed(&first));
    let location = first.headers()["location"].clone();
    let first_request_id = first.headers()["x-request-id"].clone();
    let first: Value = first.json().await.unwrap();

    let again = generate(&app, &user, Some("gen-1"), "a red fox").await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert!(replayed(&again), "the replay says so");
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.headers()["content-type"], "application/json");
    assert_ne!(
        again.headers()["x-request-id"],
        first_request_id,
        "a replay carries its own request id"
    );
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "the same body, so the same generation id");

    assert_eq!(generations_of(&app, &user).await, 1);
    assert_eq!(holds_of(&app, &user).await, 1, "credits are held once");
    let credits: Value = app
        .get_auth("/v1/credits", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(credits["held"], first["cost_credits"]);
    app.assert_ledger_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_a_different_body_is_refused() {
    let app = app().await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;
    assert_eq!(
        generate(&app, &user, Some("k"), "a red fox").await.status(),
        StatusCode::ACCEPTED
    );
    let other = generate(&app, &user, Some("k"), "a blue fox").await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(other.headers().contains_key("x-request-id"));
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["code"], "idempotency_key_reused");
    assert_eq!(body["status"], 422);
    assert!(body["request_id"].is_string());
    assert_eq!(generations_of(&app, &user).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_create_one_generation() {
    let app = app().await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;
    let (a, b) = tokio::join!(
        generate(&app, &user, Some("race"), "a red fox"),
        generate(&app, &user, Some("race"), "a red fox"),
    );
    let mut fresh = 0;
    for res in [a, b] {
        match res.status() {
            StatusCode::ACCEPTED if !replayed(&res) => fresh += 1,
            StatusCode::ACCEPTED => {}
            StatusCode::CONFLICT => {
                assert_eq!(res.headers()["retry-after"], "1");
                assert_eq!(problem_code(res).await, "idempotency_key_in_use");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(fresh, 1, "exactly one request ran the handler");
    assert_eq!(generations_of(&app, &user).await, 1);
    assert_eq!(holds_of(&app, &user).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_per_user() {
    let app = app().await;
    let alice = app.register_user().await;
    let bob = app.register_user().await;
    app.grant_credits(&alice.id, 100).await;
    app.grant_credits(&bob.id, 100).await;
    let a = generate(&app, &alice, Some("shared"), "a red fox").await;
    let b = generate(&app, &bob, Some("shared"), "a red fox").await;
    assert_eq!(
        (a.status(), b.status()),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert!(!replayed(&a) && !replayed(&b));
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_ne!(a["id"], b["id"]);
    assert_eq!(generations_of(&app, &alice).await, 1);
    assert_eq!(generations_of(&app, &bob).await, 1);

    // The scope is the user, not the token: a retry with a newer access token still matches.
    let (other_token, _) = app.login_mobile(&alice.email, &alice.password).await;
    let retry = post(
        &app,
        "/v1/generations",
        &other_token,
        Some("shared"),
        &json!({"prompt": "a red fox", "size": "1024x1024", "quality": "low"}),
    )
    .await;
    assert_eq!(retry.status(), StatusCode::ACCEPTED);
    assert!(replayed(&retry));
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], a["id"]);

    // An API key is its own scope: the same key there is a new request.
    let (_, api_key) = app.issue_api_key(&alice.access_token, "ci").await;
    let res = post(
        &app,
        "/v1/generations",
        &api_key,
        Some("shared"),
        &json!({"prompt": "a red fox", "size": "1024x1024", "quality": "low"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert!(!replayed(&res));
    assert_eq!(generations_of(&app, &alice).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_stored_and_replayed() {
    let app = app().await;
    let user = app.register_user().await;
    let broke = generate(&app, &user, Some("poor"), "a red fox").await;
    assert_eq!(broke.status(), StatusCode::PAYMENT_REQUIRED);
    let first: Value = broke.json().await.unwrap();
    assert_eq!(first["code"], "insufficient_credits");

    // Even once credits arrive, the key keeps answering what it first answered.
    app.grant_credits(&user.id, 100).await;
    let again = generate(&app, &user, Some("poor"), "a red fox").await;
    assert_eq!(again.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(replayed(&again));
    assert_eq!(again.headers()["content-type"], "application/problem+json");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(generations_of(&app, &user).await, 0);

    // A new key is a new request.
    let fresh = generate(&app, &user, Some("rich"), "a red fox").await;
    assert_eq!(fresh.status(), StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_keys_are_refused_and_auth_routes_ignore_the_header() {
    let app = app().await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;
    let too_long = "k".repeat(300);
    for key in ["", too_long.as_str(), "has space"] {
        let res = generate(&app, &user, Some(key), "a red fox").await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "key {key:?}");
        assert_eq!(problem_code(res).await, "invalid_idempotency_key");
    }
    let longest = "k".repeat(255);
    assert_eq!(
        generate(&app, &user, Some(&longest), "a red fox")
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(generations_of(&app, &user).await, 1);

    // Sign-in is outside the mechanism: the header is not even checked.
    let res = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("Idempotency-Key", "")
        .json(&json!({"email": user.email, "password": user.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_creation_is_never_stored_for_replay() {
    // Its answer carries the only copy of the secret; storing it for a replay would keep the
    // key in plain text, so the header is ignored there and no response is stored.
    let app = app().await;
    let user = app.register_user().await;
    let body = json!({"name": "ci"});
    for _ in 0..2 {
        let res = post(
            &app,
            "/v1/me/api-keys",
            &user.access_token,
            Some("key-1"),
            &body,
        )
        .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        assert!(!replayed(&res));
    }
    let stored = app.count("SELECT count(*) FROM idempotency_keys").await;
    assert_eq!(stored, 0, "no response holding a secret is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_header_every_request_counts() {
    let app = app().await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;
    for _ in 0..2 {
        let res = generate(&app, &user, None, "a red fox").await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        assert!(!replayed(&res));
    }
    assert_eq!(generations_of(&app, &user).await, 2);
    assert_eq!(holds_of(&app, &user).await, 2);
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_upload_is_replayed_even_when_streamed_in_chunks() {
    let app = app().await;
    let user = app.register_user().await;
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        64,
        48,
        image::Rgb([9, 99, 199]),
    ))
    .write_to(&mut png, image::ImageFormat::Png)
    .unwrap();
    // A fixed boundary: a retry must resend the same bytes.
    let boundary = "gi2-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(png.get_ref());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let send = |body: reqwest::Body| {
        app.client
            .post(app.url("/v1/reference-images"))
            .bearer_auth(&user.access_token)
            .header("Idempotency-Key", "upload-1")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
    };
    let first = send(reqwest::Body::from(body.clone())).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!replayed(&first));
    let first: Value = first.json().await.unwrap();

    // The same bytes, chunked (no Content-Length): buffered whole, then matched.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(100).map(|c| Ok(c.to_vec())).collect();
    let again = send(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert!(replayed(&again));
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let stored = app
        .count(&format!(
            "SELECT count(*) FROM reference_images WHERE user_id = '{}'",
            user.id
        ))
        .await;
    assert_eq!(stored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_calls_get_their_401_and_store_nothing() {
    // Found by the schemathesis pass (scripts/fuzz, `ignored_auth`): a 401 was stored under the
    // key, so the next unauthenticated call with that key and another body answered 422
    // `idempotency_key_reused` instead of 401, and anonymous callers could fill the table.
    let app = app().await;
    for authorization in [None, Some("Bearer not-a-token")] {
        for prompt in ["a red fox", "a blue fox", "a red fox"] {
            let mut req = app
                .client
                .post(app.url("/v1/generations"))
                .header("Idempotency-Key", "k")
                .json(&json!({"prompt": prompt, "size": "1024x1024", "quality": "low"}));
            if let Some(value) = authorization {
                req = req.header("Authorization", value);
            }
            let res = req.send().await.unwrap();
            assert_eq!(
                res.status(),
                StatusCode::UNAUTHORIZED,
                "{authorization:?}, {prompt}"
            );
            assert!(!replayed(&res));
            let code = problem_code(res).await;
            assert!(
                ["unauthorized", "invalid_token"].contains(&code.as_str()),
                "{code}"
            );
        }
    }
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 0);
}
