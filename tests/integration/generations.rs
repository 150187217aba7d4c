//! Generations with the built-in renderer: validation, pricing, the one-transaction submit,
//! the worker's result, cancel, delete, ownership, and no overspending under concurrency.

use std::time::Duration;

use gptimage2_tests::{AppOptions, TestApp, TestUser, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub(crate) async fn app(workers: bool) -> TestApp {
    spawn_app_with(AppOptions {
        workers,
        smtp: false,
        ..Default::default()
    })
    .await
}

pub(crate) async fn submit(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/generations"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn wait_for(app: &TestApp, user: &TestUser, id: &str, status: &str) -> Value {
    gptimage2_tests::eventually(
        &format!("generation {id} {status}"),
        Duration::from_secs(20),
        || async {
            let g: Value = app
                .get_auth(&format!("/v1/generations/{id}"), &user.access_token)
                .await
                .json()
                .await
                .unwrap();
            (g["status"] == status).then_some(g)
        },
    )
    .await
}

async fn credits(app: &TestApp, user: &TestUser) -> Value {
    app.get_auth("/v1/credits", &user.access_token)
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_renderer_draws_what_was_asked_and_charges_once() {
    let app = app(true).await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;
    let res = submit(&app, &user.access_token, json!({"prompt": "a red fox", "size": "1536x1024", "quality": "low", "n": 2, "output_format": "webp"})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/v1/generations/")
    );
    let queued: Value = res.json().await.unwrap();
    assert_eq!(queued["status"], "queued");
    assert_eq!(
        queued["cost_credits"], 4,
        "1536x1024 low = 2 credits per image, × 2"
    );
    assert_eq!(queued["provider"], "builtin");
    assert_eq!(credits(&app, &user).await["held"], 4);

    let done = wait_for(&app, &user, queued["id"].as_str().unwrap(), "succeeded").await;
    let images = done["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for image in images {
        assert_eq!(
            (
                image["width"].as_i64(),
                image["height"].as_i64(),
                image["format"].as_str()
            ),
            (Some(1536), Some(1024), Some("webp"))
        );
        let bytes = reqwest::get(image["url"].as_str().unwrap())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len() as i64, image["bytes"].as_i64().unwrap());
        let decoded =
            image::load_from_memory_with_format(&bytes, image::ImageFormat::WebP).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (1536, 1024));
        // The content route redirects to a fresh signed link.
        let res = app
            .get_auth(
                &format!("/v1/images/{}/content", image["id"].as_str().unwrap()),
                &user.access_token,
            )
            .await;
        assert_eq!(res.status(), StatusCode::FOUND);
    }
    let after = credits(&app, &user).await;
    assert_eq!(
        (after["available"].as_i64(), after["held"].as_i64()),
        (Some(96), Some(0))
    );
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn invalid_requests_are_named_and_change_nothing() {
    let app = app(false).await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;
    let cases = [
        (json!({"prompt": ""}), "prompt"),
        (json!({"prompt": "x".repeat(32_001)}), "prompt"),
        (json!({"prompt": "a", "size": "1000x1000"}), "size"),
        (json!({"prompt": "a", "size": "3072x1008"}), "size"),
        (json!({"prompt": "a", "size": "4096x2160"}), "size"),
        (json!({"prompt": "a", "quality": "ultra"}), "quality"),
        (json!({"prompt": "a", "n": 11}), "n"),
        (json!({"prompt": "a", "n": 0}), "n"),
        (
            json!({"prompt": "a", "background": "striped"}),
            "background",
        ),
        (
            json!({"prompt": "a", "output_format": "gif"}),
            "output_format",
        ),
        (
            json!({"prompt": "a", "output_compression": 50}),
            "output_compression",
        ),
        (
            json!({"prompt": "a", "output_format": "jpeg", "output_compression": 101}),
            "output_compression",
        ),
        (json!({"prompt": "a", "moderation": "none"}), "moderation"),
        (
            json!({"prompt": "a", "mask_image_id": uuid::Uuid::now_v7()}),
            "mask_image_id",
        ),
        (
            json!({"prompt": "a", "reference_image_ids": [uuid::Uuid::now_v7()]}),
            "reference_image_ids",
        ),
        (
            json!({"prompt": "a", "webhook_url": "not a url"}),
            "webhook_url",
        ),
        (json!({"prompt": "a\u{0}b"}), "prompt"),
    ];
    for (body, field) in cases {
        let res = submit(&app, &user.access_token, body.clone()).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let problem: Value = res.json().await.unwrap();
        assert!(
            problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{field} not named for {body}: {problem}"
        );
    }
    let res = submit(
        &app,
        &user.access_token,
        json!({"prompt": "a", "surprise": true}),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused"
    );
    assert_eq!(app.count("SELECT count(*) FROM generations").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM credit_holds").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = 'generate'")
            .await,
        0
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn insufficient_credits_is_402_and_changes_nothing() {
    let app = app(false).await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 3).await;
    let res = submit(
        &app,
        &user.access_token,
        json!({"prompt": "a", "size": "1024x1024", "quality": "medium"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PAYMENT_REQUIRED);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "insufficient_credits");
    assert!(problem["detail"].as_str().unwrap().contains("4 credits"));
    assert_eq!(app.count("SELECT count(*) FROM generations").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = 'generate'")
            .await,
        0
    );
    assert_eq!(credits(&app, &user).await["available"], 3);
    app.assert_ledger_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_submits_never_overspend() {
    let app = app(false).await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 10).await;
    let submits = (0..50).map(|_| {
        submit(
            &app,
            &user.access_token,
            json!({"prompt": "a", "size": "1024x1024", "quality": "low"}),
        )
    });
    let statuses: Vec<StatusCode> = futures::future::join_all(submits)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::PAYMENT_REQUIRED)
            .count(),
        40
    );
    assert_eq!(app.count("SELECT count(*) FROM generations").await, 10);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = 'generate'")
            .await,
        10
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn cancel_of_a_queued_generation_is_immediate_and_frees_credits() {
    let app = app(false).await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 10).await;
    let g: Value = submit(
        &app,
        &user.access_token,
        json!({"prompt": "a", "quality": "low", "size": "1024x1024"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = g["id"].as_str().unwrap();
    assert_eq!(credits(&app, &user).await["available"], 9);
    let res = app
        .client
        .post(app.url(&format!("/v1/generations/{id}/cancel")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "canceled");
    assert_eq!(credits(&app, &user).await["available"], 10);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = 'generate' AND status = 'queued'")
            .await,
        0,
        "its job will not run"
    );
    let again = app
        .client
        .post(app.url(&format!("/v1/generations/{id}/cancel")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK, "cancel is idempotent");
    app.assert_ledger_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_generation_is_404_everywhere_and_delete_removes_images() {
    let app = app(true).await;
    let owner = app.register_user().await;
    let other = app.register_user().await;
    app.grant_credits(&owner.id, 10).await;
    let g: Value = submit(
        &app,
        &owner.access_token,
        json!({"prompt": "a", "quality": "low", "size": "256x256"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = g["id"].as_str().unwrap().to_string();
    let done = wait_for(&app, &owner, &id, "succeeded").await;
    let image_id = done["images"][0]["id"].as_str().unwrap().to_string();

    assert_eq!(
        app.get_auth(&format!("/v1/generations/{id}"), &other.access_token)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get_auth(
            &format!("/v1/images/{image_id}/content"),
            &other.access_token
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
    let cancel = app
        .client
        .post(app.url(&format!("/v1/generations/{id}/cancel")))
        .bearer_auth(&other.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::NOT_FOUND);
    let delete = app
        .client
        .delete(app.url(&format!("/v1/generations/{id}")))
        .bearer_auth(&other.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NOT_FOUND);
    let theirs: Value = app
        .get_auth("/v1/generations", &other.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        theirs["data"].as_array().unwrap().is_empty(),
        "no list leaks another user's rows"
    );

    let prefix = format!("users/{}/generations/{id}/", owner.id);
    assert_eq!(app.state.store.list(&prefix).await.unwrap().len(), 1);
    let delete = app
        .client
        .delete(app.url(&format!("/v1/generations/{id}")))
        .bearer_auth(&owner.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    assert!(
        app.state.store.list(&prefix).await.unwrap().is_empty(),
        "stored images are gone"
    );
    assert_eq!(
        app.get_auth(&format!("/v1/generations/{id}"), &owner.access_token)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn lists_filter_by_status_and_paginate() {
    let app = app(false).await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 10).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let g: Value = submit(
            &app,
            &user.access_token,
            json!({"prompt": "a", "quality": "low", "size": "1024x1024"}),
        )
        .await
        .json()
        .await
        .unwrap();
        ids.push(g["id"].as_str().unwrap().to_string());
    }
    app.client
        .post(app.url(&format!("/v1/generations/{}/cancel", ids[0])))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    let page: Value = app
        .get_auth("/v1/generations?limit=2", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    let first: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, [ids[2].as_str(), ids[1].as_str()], "newest first");
    let next: Value = app
        .get_auth(
            &format!(
                "/v1/generations?limit=2&cursor={}",
                page["next_cursor"].as_str().unwrap()
            ),
            &user.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(next["data"][0]["id"], ids[0].as_str());
    assert!(next["next_cursor"].is_null());
    let canceled: Value = app
        .get_auth("/v1/generations?status=canceled", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(canceled["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.get_auth("/v1/generations?status=weird", &user.access_token)
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn api_key_daily_limit_is_enforced_at_submit() {
    let app = app(false).await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;
    let res = app
        .client
        .post(app.url("/v1/me/api-keys"))
        .bearer_auth(&user.access_token)
        .json(&json!({"name": "ci", "daily_credit_limit": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let key = res.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({"prompt": "a", "quality": "low", "size": "1024x1024"});
    assert_eq!(
        submit(&app, &key, body.clone()).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        submit(&app, &key, body.clone()).await.status(),
        StatusCode::ACCEPTED
    );
    let third = submit(&app, &key, body.clone()).await;
    assert_eq!(third.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        third.json::<Value>().await.unwrap()["code"],
        "daily_credit_limit_exceeded"
    );
    assert_eq!(
        submit(&app, &user.access_token, body).await.status(),
        StatusCode::ACCEPTED,
        "the limit is the key's, not the account's"
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn pricing_is_public_and_matches_the_charge() {
    let app = app(false).await;
    let table: Value = app.get("/v1/pricing").await.json().await.unwrap();
    let row = table["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["size"] == "1024x1024")
        .unwrap()
        .clone();
    assert_eq!(
        (
            row["low"].as_i64(),
            row["medium"].as_i64(),
            row["high"].as_i64()
        ),
        (Some(1), Some(4), Some(16))
    );
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;
    let g: Value = submit(
        &app,
        &user.access_token,
        json!({"prompt": "a", "quality": "high", "size": "1024x1024", "n": 3}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(g["cost_credits"], 48);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_follows_the_generation_to_its_end() {
    let app = app(true).await;
    let user = app.register_user().await;
    let other = app.register_user().await;
    app.grant_credits(&user.id, 10).await;
    let g: Value = submit(
        &app,
        &user.access_token,
        json!({"prompt": "a", "quality": "low", "size": "256x256"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = g["id"].as_str().unwrap();
    assert_eq!(
        app.get_auth(&format!("/v1/generations/{id}/events"), &other.access_token)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let res = app
        .get_auth(&format!("/v1/generations/{id}/events"), &user.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(Duration::from_secs(20), res.text())
        .await
        .expect("the stream ends after the last event")
        .unwrap();
    assert!(
        text.contains("event: status\ndata: {\"status\":\"succeeded\"}"),
        "{text}"
    );
    let completed = text
        .split("event: completed\ndata: ")
        .nth(1)
        .expect("a completed event")
        .lines()
        .next()
        .unwrap();
    let view: Value = serde_json::from_str(completed).unwrap();
    assert_eq!(view["images"].as_array().unwrap().len(), 1);
}
