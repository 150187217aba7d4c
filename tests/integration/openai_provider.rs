//! Generations through the OpenAI provider, end to end over HTTP against a fake of the
//! Images API: the request it receives, the images stored and served, credits captured on
//! success and released on every failure, retries of transient errors, and the edits
//! endpoint for reference images. Ledger invariants are checked after each.

use std::{io::Cursor, time::Duration};

use gptimage2::{
    config::{OpenAiConfig, Secret},
    generations::{
        openai::{OpenAiProvider, PARTIAL_IMAGES},
        provider::{ImageProvider, ProviderError, ProviderRequest},
    },
};
use gptimage2_tests::{
    AppOptions, TestApp, TestUser,
    openai_fake::{Mode, OpenAiFake},
    spawn_app_with,
};
use image::{DynamicImage, ImageFormat, RgbImage};
use reqwest::{
    StatusCode,
    multipart::{Form, Part},
};
use serde_json::{Value, json};

const GRANT: i64 = 1_000;
const TIMEOUT_SECS: u64 = 1;

async fn app(fake: &OpenAiFake) -> TestApp {
    let mut env = fake.app_env(TIMEOUT_SECS);
    // Quick polls and retries, so the retrying tests take seconds rather than minutes.
    env.push(("GI2_JOB_POLL_MS".into(), "50".into()));
    env.push(("GI2_JOB_BACKOFF_BASE_MS".into(), "100".into()));
    spawn_app_with(AppOptions {
        smtp: false,
        env,
        ..Default::default()
    })
    .await
}

async fn funded_user(app: &TestApp) -> TestUser {
    let user = app.register_user().await;
    app.grant_credits(&user.id, GRANT).await;
    user
}

/// Submits a generation and asserts 202; returns its body.
async fn submit(app: &TestApp, user: &TestUser, body: Value) -> Value {
    let res = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(&user.access_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["provider"], "openai");
    body
}

/// Polls until the generation leaves `queued`/`running`.
async fn finished(app: &TestApp, user: &TestUser, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let res = app
            .get_auth(&format!("/v1/generations/{id}"), &user.access_token)
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        let status = body["status"].as_str().unwrap().to_string();
        if status != "queued" && status != "running" {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "generation still {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn credits(app: &TestApp, user: &TestUser) -> Value {
    let res = app.get_auth("/v1/credits", &user.access_token).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// Nothing charged and nothing held any more.
async fn assert_refunded(app: &TestApp, user: &TestUser) {
    let c = credits(app, user).await;
    assert_eq!(c["available"], GRANT, "{c}");
    assert_eq!(c["balance"], GRANT, "{c}");
    assert_eq!(c["held"], 0, "{c}");
}

fn small_request() -> Value {
    json!({ "prompt": "a lighthouse at dusk", "size": "64x64", "n": 1, "output_format": "png" })
}

#[tokio::test]
async fn generation_succeeds_with_the_providers_images_and_charges_the_cost() {
    let fake = OpenAiFake::start().await;
    let app = app(&fake).await;
    let user = funded_user(&app).await;
    let created = submit(
        &app,
        &user,
        json!({
            "prompt": "a watercolor fox reading a map",
            "size": "64x64",
            "n": 2,
            "quality": "low",
            "output_format": "png",
        }),
    )
    .await;
    let cost = created["cost_credits"].as_i64().unwrap();
    assert!(cost > 0);

    let done = finished(&app, &user, created["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["provider"], "openai");
    assert!(done["error"].is_null());
    let images = done["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);

    // The stored images are exactly the provider's, in order.
    let returned = fake.returned_images();
    assert_eq!(returned.len(), 2);
    for (image, sent) in images.iter().zip(&returned) {
        assert_eq!(image["width"], 64);
        assert_eq!(image["height"], 64);
        assert_eq!(image["format"], "png");
        assert_eq!(image["bytes"], sent.len());
        let res = app
            .client
            .get(image["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.bytes().await.unwrap().as_ref(), sent.as_slice());
    }

    // One call to the generations endpoint, with the key and the parameters.
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.path, "/v1/images/generations");
    assert_eq!(
        sent.authorization.as_deref(),
        Some(format!("Bearer {}", fake.api_key).as_str())
    );
    let body = sent.json.as_ref().unwrap();
    assert_eq!(body["model"], "gpt-image-2");
    assert_eq!(body["prompt"], "a watercolor fox reading a map");
    assert_eq!(body["n"], 2);
    assert_eq!(body["size"], "64x64");
    assert_eq!(body["quality"], "low");
    assert_eq!(body["output_format"], "png");
    assert_eq!(body["background"], "auto");
    assert_eq!(body["moderation"], "auto");
    // Only sent when asked for.
    assert!(body.get("output_compression").is_none(), "{body}");

    let c = credits(&app, &user).await;
    assert_eq!(c["balance"], GRANT - cost, "{c}");
    assert_eq!(c["available"], GRANT - cost, "{c}");
    assert_eq!(c["held"], 0, "{c}");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn content_policy_refusal_fails_the_generation_and_releases_the_hold() {
    let fake = OpenAiFake::start().await;
    fake.set_mode(Mode::ContentPolicy);
    let app = app(&fake).await;
    let user = funded_user(&app).await;
    let created = submit(&app, &user, small_request()).await;

    let done = finished(&app, &user, created["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "content_policy_violation");
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("safety system")
    );
    assert!(done["images"].as_array().unwrap().is_empty());
    // A refusal is final: asked once, never retried.
    assert_eq!(fake.requests().len(), 1);
    assert_refunded(&app, &user).await;
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn server_errors_are_retried_until_the_generation_succeeds() {
    let fake = OpenAiFake::start().await;
    fake.set_mode(Mode::ServerErrors(2));
    let app = app(&fake).await;
    let user = funded_user(&app).await;
    let created = submit(&app, &user, small_request()).await;
    let cost = created["cost_credits"].as_i64().unwrap();

    let done = finished(&app, &user, created["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["images"].as_array().unwrap().len(), 1);
    assert_eq!(fake.requests().len(), 3);
    let c = credits(&app, &user).await;
    assert_eq!(c["balance"], GRANT - cost, "{c}");
    assert_eq!(c["held"], 0, "{c}");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn persistent_rate_limits_fail_as_provider_unavailable_and_release_credits() {
    let fake = OpenAiFake::start().await;
    fake.set_mode(Mode::RateLimited);
    let app = app(&fake).await;
    let user = funded_user(&app).await;
    let created = submit(&app, &user, small_request()).await;

    let done = finished(&app, &user, created["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "provider_unavailable");
    // Every attempt asked once, and the message never leaks the key.
    assert_eq!(
        fake.requests().len(),
        gptimage2::generations::job::MAX_ATTEMPTS as usize
    );
    assert!(!done.to_string().contains(&fake.api_key));
    assert_refunded(&app, &user).await;
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn responses_slower_than_the_timeout_are_retried_then_fail() {
    let fake = OpenAiFake::start().await;
    fake.set_mode(Mode::Slow(Duration::from_secs(TIMEOUT_SECS + 2)));
    let app = app(&fake).await;
    let user = funded_user(&app).await;
    let created = submit(&app, &user, small_request()).await;

    let done = finished(&app, &user, created["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "provider_unavailable");
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{done}"
    );
    assert_eq!(
        fake.requests().len(),
        gptimage2::generations::job::MAX_ATTEMPTS as usize
    );
    assert_refunded(&app, &user).await;
    app.assert_ledger_invariants().await;
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(image)
        .write_to(&mut out, ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

async fn upload_reference(app: &TestApp, user: &TestUser, bytes: Vec<u8>) -> String {
    let form = Form::new().part("file", Part::bytes(bytes).file_name("ref.png"));
    let res = app
        .client
        .post(app.url("/v1/reference-images"))
        .bearer_auth(&user.access_token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn reference_images_go_to_the_edits_endpoint_as_image_parts() {
    let fake = OpenAiFake::start().await;
    let app = app(&fake).await;
    let user = funded_user(&app).await;
    let first = upload_reference(&app, &user, png(40, 24)).await;
    let second = upload_reference(&app, &user, png(16, 16)).await;
    let created = submit(
        &app,
        &user,
        json!({
            "prompt": "put the two together",
            "size": "128x128",
            "n": 1,
            "output_format": "jpeg",
            "output_compression": 80,
            "reference_image_ids": [first, second],
        }),
    )
    .await;

    let done = finished(&app, &user, created["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let image = &done["images"][0];
    assert_eq!(
        (&image["width"], &image["height"], &image["format"]),
        (&json!(128), &json!(128), &json!("jpeg"))
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.path, "/v1/images/edits");
    assert_eq!(
        sent.authorization.as_deref(),
        Some(format!("Bearer {}", fake.api_key).as_str())
    );
    assert_eq!(sent.param("model").as_deref(), Some("gpt-image-2"));
    assert_eq!(
        sent.param("prompt").as_deref(),
        Some("put the two together")
    );
    assert_eq!(sent.param("n").as_deref(), Some("1"));
    assert_eq!(sent.param("size").as_deref(), Some("128x128"));
    assert_eq!(sent.param("output_format").as_deref(), Some("jpeg"));
    assert_eq!(sent.param("output_compression").as_deref(), Some("80"));
    // Both references, in order, as real images with a type and a file name.
    let parts: Vec<_> = sent.files.iter().filter(|f| f.name == "image[]").collect();
    assert_eq!(parts.len(), 2);
    for (part, size) in parts.iter().zip([(40, 24), (16, 16)]) {
        assert!(part.filename.is_some());
        let content_type = part.content_type.as_deref().unwrap();
        assert!(content_type.starts_with("image/"), "{content_type}");
        let decoded = image::load_from_memory(&part.bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), size);
    }
    assert!(sent.files.iter().all(|f| f.name != "mask"));
    app.assert_ledger_invariants().await;
}

fn provider(fake: &OpenAiFake) -> OpenAiProvider {
    OpenAiProvider::new(OpenAiConfig {
        base_url: fake.uri().parse().unwrap(),
        api_key: Secret::new(fake.api_key.clone()),
        model: "gpt-image-2".into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn provider_request(n: u32, references: Vec<(bytes::Bytes, String)>) -> ProviderRequest {
    ProviderRequest {
        prompt: "a paper boat".into(),
        size: Some((64, 64)),
        quality: "low".into(),
        n,
        background: "auto".into(),
        output_format: "webp".into(),
        output_compression: None,
        moderation: "auto".into(),
        references,
        mask: None,
    }
}

// The generate job does not take partial images yet, so the streamed variant is exercised
// on the provider directly.
#[tokio::test]
async fn streamed_answers_forward_partial_images_and_return_the_final_ones() {
    let fake = OpenAiFake::start().await;
    let provider = provider(&fake);
    for references in [
        Vec::new(),
        vec![(bytes::Bytes::from(png(32, 32)), "image/png".to_string())],
    ] {
        let edits = !references.is_empty();
        let before = fake.returned_images().len();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let images = provider
            .generate(&provider_request(2, references), Some(tx))
            .await
            .unwrap();

        let returned = fake.returned_images()[before..].to_vec();
        assert_eq!(images.len(), 2);
        for (image, sent) in images.iter().zip(&returned) {
            assert_eq!((image.width, image.height), (64, 64));
            assert_eq!(image.format, "webp");
            assert_eq!(image.bytes.as_ref(), sent.as_slice());
        }
        let mut partials = Vec::new();
        while let Ok(partial) = rx.try_recv() {
            partials.push(partial);
        }
        assert_eq!(partials.len(), 2 * PARTIAL_IMAGES as usize);
        for (i, (index, bytes)) in partials.iter().enumerate() {
            assert_eq!(*index, i as u32 % PARTIAL_IMAGES);
            assert_eq!(image::load_from_memory(bytes).unwrap().width(), 64);
        }

        let sent = fake.requests().pop().unwrap();
        let path = if edits {
            "/v1/images/edits"
        } else {
            "/v1/images/generations"
        };
        assert_eq!(sent.path, path);
        assert_eq!(sent.param("stream").as_deref(), Some("true"));
        assert_eq!(
            sent.param("partial_images"),
            Some(PARTIAL_IMAGES.to_string())
        );
    }

    // Without a sink, the plain JSON answer: no `stream` asked for.
    let images = provider
        .generate(&provider_request(1, Vec::new()), None)
        .await
        .unwrap();
    assert_eq!(images.len(), 1);
    let sent = fake.requests().pop().unwrap();
    assert!(sent.json.unwrap().get("stream").is_none());
}

#[tokio::test]
async fn a_wrong_key_is_a_permanent_auth_failure() {
    let fake = OpenAiFake::start().await;
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: fake.uri().parse().unwrap(),
        api_key: Secret::new("sk-wrong"),
        model: "gpt-image-2".into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let error = provider
        .generate(&provider_request(1, Vec::new()), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProviderError::Permanent { code, .. } if code == "provider_auth_failed"),
        "{error}"
    );
    assert!(!error.to_string().contains("sk-wrong"));
}

/// A worker dies (its task is dropped, heartbeat and all) while the model is drawing; after
/// its lease expires another worker finishes the generation, charged exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_generation_never_charges_twice() {
    let fake = OpenAiFake::start().await;
    let mut env = fake.app_env(30);
    env.push(("GI2_JOB_POLL_MS".into(), "50".into()));
    let app = spawn_app_with(AppOptions {
        smtp: false,
        workers: false,
        env,
        ..Default::default()
    })
    .await;
    let user = funded_user(&app).await;
    fake.set_mode(Mode::Slow(Duration::from_secs(20)));
    let g = submit(
        &app,
        &user,
        json!({"prompt": "a slow fox", "size": "64x64", "quality": "low"}),
    )
    .await;
    let id = g["id"].as_str().unwrap().to_string();
    let cost = g["cost_credits"].as_i64().unwrap();

    let worker = |lease_secs: u64| {
        let state = app.state.clone();
        let options = gptimage2::jobs::WorkerOptions {
            lease: Duration::from_secs(lease_secs),
            ..gptimage2::app::worker_options(&state.config)
        };
        let registry = gptimage2::app::job_registry(&state).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let url = state.config.database_url.expose().to_string();
        (
            tokio::spawn(gptimage2::jobs::run_workers(
                state.pool.clone(),
                url,
                registry,
                options,
                stop.clone(),
            )),
            stop,
        )
    };
    let (first, _keep) = worker(1);
    gptimage2_tests::eventually(
        "the first worker calling the model",
        Duration::from_secs(10),
        || async { (!fake.requests().is_empty()).then_some(()) },
    )
    .await;
    first.abort();
    let _ = first.await;
    assert_eq!(
        app.get_auth("/v1/credits", &user.access_token)
            .await
            .json::<Value>()
            .await
            .unwrap()["held"],
        cost,
        "still reserved, not charged"
    );

    fake.set_mode(Mode::Succeed);
    let (second, stop) = worker(5);
    let done = gptimage2_tests::eventually(
        "the generation finished by the second worker",
        Duration::from_secs(20),
        || async {
            let g: Value = app
                .get_auth(&format!("/v1/generations/{id}"), &user.access_token)
                .await
                .json()
                .await
                .unwrap();
            (g["status"] == "succeeded").then_some(g)
        },
    )
    .await;
    assert_eq!(done["images"].as_array().unwrap().len(), 1);
    let credits: Value = app
        .get_auth("/v1/credits", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (credits["available"].as_i64(), credits["held"].as_i64()),
        (Some(GRANT - cost), Some(0)),
        "charged once"
    );
    let captures: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM ledger_entries WHERE kind = 'capture'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(captures, 1);
    stop.cancel();
    let _ = second.await;
    app.assert_ledger_invariants().await;
}

/// A streaming model's partial images reach the events stream before the final result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_images_are_streamed_to_the_events_endpoint() {
    let fake = OpenAiFake::start().await;
    let app = app(&fake).await;
    let user = funded_user(&app).await;
    let g = submit(
        &app,
        &user,
        json!({"prompt": "a fox, bit by bit", "size": "64x64", "quality": "low"}),
    )
    .await;
    let id = g["id"].as_str().unwrap();
    let res = app
        .get_auth(&format!("/v1/generations/{id}/events"), &user.access_token)
        .await;
    let text = tokio::time::timeout(Duration::from_secs(20), res.text())
        .await
        .unwrap()
        .unwrap();
    let partials: Vec<Value> = text
        .split("event: partial_image\ndata: ")
        .skip(1)
        .map(|chunk| serde_json::from_str(chunk.lines().next().unwrap()).unwrap())
        .collect();
    assert!(!partials.is_empty(), "{text}");
    let first = reqwest::get(partials[0]["url"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(
        text.find("event: partial_image").unwrap() < text.find("event: completed").unwrap(),
        "{text}"
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.param("stream").as_deref() == Some("true")),
        "the model was asked to stream"
    );
    app.assert_ledger_invariants().await;
}

/// An app on the fake with a long client timeout and `extra` variables, a funded user, and
/// one generation submitted while the model answers only after `slow`.
async fn slow_generation(
    fake: &OpenAiFake,
    extra: &[(&str, &str)],
    slow: Duration,
) -> (TestApp, TestUser, String) {
    let mut env = fake.app_env(30);
    env.push(("GI2_JOB_POLL_MS".into(), "50".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let app = spawn_app_with(AppOptions {
        smtp: false,
        env,
        ..Default::default()
    })
    .await;
    let user = funded_user(&app).await;
    fake.set_mode(Mode::Slow(slow));
    let g = submit(
        &app,
        &user,
        json!({"prompt": "a slow fox", "size": "64x64", "quality": "low"}),
    )
    .await;
    let id = g["id"].as_str().unwrap().to_string();
    (app, user, id)
}

/// Every credit granted is available again and nothing is reserved.
async fn assert_nothing_charged(app: &TestApp, user: &TestUser) {
    let credits: Value = app
        .get_auth("/v1/credits", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (credits["available"].as_i64(), credits["held"].as_i64()),
        (Some(GRANT), Some(0))
    );
}

/// A generation still drawing when its deadline passes fails as `deadline_exceeded` and
/// gives its credits back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generation_deadline_fails_long_runs_and_releases_credits() {
    let fake = OpenAiFake::start().await;
    let (app, user, id) = slow_generation(
        &fake,
        &[("GI2_GENERATION_DEADLINE_SECS", "1")],
        Duration::from_secs(10),
    )
    .await;
    let failed = gptimage2_tests::eventually(
        "the deadline to fail the generation",
        Duration::from_secs(10),
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
    assert_eq!(failed["error"]["code"], "deadline_exceeded");
    assert_nothing_charged(&app, &user).await;
    app.assert_ledger_invariants().await;
}

/// Canceling while the model draws stops the job, releases the credits at once, and the
/// images that arrive later are neither stored nor charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_running_generation_releases_credits_and_keeps_nothing() {
    let fake = OpenAiFake::start().await;
    let (app, user, id) = slow_generation(&fake, &[], Duration::from_secs(3)).await;
    gptimage2_tests::eventually(
        "the model to be called",
        Duration::from_secs(10),
        || async { (!fake.requests().is_empty()).then_some(()) },
    )
    .await;
    let res = app
        .client
        .post(app.url(&format!("/v1/generations/{id}/cancel")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "canceled");
    assert_nothing_charged(&app, &user).await;
    // Well past the slow answer: still canceled, nothing stored, nothing captured.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after: Value = app
        .get_auth(&format!("/v1/generations/{id}"), &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after["status"], "canceled");
    assert!(after["images"].as_array().unwrap().is_empty());
    let prefix = format!("users/{}/generations/{id}/", user.id);
    assert!(
        app.state
            .store
            .list(&prefix)
            .await
            .unwrap()
            .iter()
            .all(|k| k.contains("partial-")),
        "no final image kept"
    );
    let captures: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM ledger_entries WHERE kind = 'capture'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(captures, 0);
    app.assert_ledger_invariants().await;
}
