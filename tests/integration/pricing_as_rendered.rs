//! Issue #14 points 8 and 4: what a generation is charged.
//!
//! - `auto` size or quality holds the highest price it can resolve to and, once the model
//!   answers, captures the price of what it rendered (the Images API's `size` and `quality`,
//!   sent on each streamed `image_generation.completed` event), releasing the rest.
//! - A generation canceled after its partial images arrived is charged nothing, and from
//!   the moment of the cancel its partial images are no longer served.
//!
//! Balances, the generation's hold, capture and release rows and the ledger invariants are
//! checked after each.

use std::time::Duration;

use gptimage2_tests::{
    AppOptions, TestApp, TestUser,
    openai_fake::{OpenAiFake, encode_image},
    spawn_app_with,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const GRANT: i64 = 1_000;

async fn app_on(fake: &OpenAiFake) -> TestApp {
    let mut env = fake.app_env(30);
    env.push(("GI2_JOB_POLL_MS".into(), "50".into()));
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

/// Submits and asserts 202; returns the answer.
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
    body
}

async fn generation(app: &TestApp, user: &TestUser, id: &str) -> Value {
    let res = app
        .get_auth(&format!("/v1/generations/{id}"), &user.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// Polls until the generation leaves `queued`/`running`.
async fn finished(app: &TestApp, user: &TestUser, id: &str) -> Value {
    gptimage2_tests::eventually(
        "the generation to finish",
        Duration::from_secs(60),
        || async {
            let g = generation(app, user, id).await;
            (g["status"] != "queued" && g["status"] != "running").then_some(g)
        },
    )
    .await
}

async fn credits(app: &TestApp, user: &TestUser) -> Value {
    let res = app.get_auth("/v1/credits", &user.access_token).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// The generation's hold amount and status.
async fn hold_of(app: &TestApp, id: &str) -> (i64, String) {
    let id: uuid::Uuid = id.parse().unwrap();
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT h.amount, h.status FROM credit_holds h JOIN generations g ON g.hold_id = h.id WHERE g.id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The generation's ledger entries as (kind, available_delta, held_delta), in kind order
/// (hold, capture, release).
async fn ledger_of(app: &TestApp, id: &str) -> Vec<(String, i64, i64)> {
    let id: uuid::Uuid = id.parse().unwrap();
    let rows = app
        .db
        .client()
        .await
        .query(
            "SELECT e.kind, e.available_delta, e.held_delta FROM ledger_entries e
             JOIN generations g ON g.hold_id = e.hold_id WHERE g.id = $1
             ORDER BY array_position(ARRAY['hold','capture','release'], e.kind)",
            &[&id],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn entry(kind: &str, available: i64, held: i64) -> (String, i64, i64) {
    (kind.to_string(), available, held)
}

/// Submits `body` to a model that resolves `auto` to `rendered` (size, quality); checks the
/// hold, then what was charged, the ledger and the balances.
async fn charged_as_rendered(body: Value, rendered: (&str, &str), held: i64, charged: i64) {
    let fake = OpenAiFake::start().await;
    fake.resolve_auto(rendered.0, rendered.1);
    let app = app_on(&fake).await;
    let user = funded_user(&app).await;
    let created = submit(&app, &user, body.clone()).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        created["cost_credits"], held,
        "`auto` is held at its highest price: {created}"
    );
    assert_eq!(hold_of(&app, id).await.0, held, "the hold");

    let done = finished(&app, &user, id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // The model draws an explicit size as asked, `auto` as it resolves it.
    let drawn = match body["size"].as_str() {
        Some("auto") | None => rendered.0.to_string(),
        Some(size) => size.to_string(),
    };
    let (w, h) = drawn.split_once('x').unwrap();
    assert_eq!(done["images"][0]["width"].to_string(), w, "{done}");
    assert_eq!(done["images"][0]["height"].to_string(), h, "{done}");
    assert_eq!(
        done["cost_credits"], charged,
        "charged as rendered {rendered:?}: {done}"
    );
    let mut expected = vec![entry("hold", -held, held), entry("capture", 0, -charged)];
    if held > charged {
        expected.push(entry("release", held - charged, -(held - charged)));
    }
    assert_eq!(
        ledger_of(&app, id).await,
        expected,
        "hold, capture, release"
    );
    assert_eq!(hold_of(&app, id).await.1, "captured");
    let c = credits(&app, &user).await;
    assert_eq!(c["available"], GRANT - charged, "{c}");
    assert_eq!(c["balance"], GRANT - charged, "{c}");
    assert_eq!(c["held"], 0, "{c}");
    app.assert_ledger_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rendered_low_1024_square_holds_the_maximum_and_is_charged_low() {
    // Held: 1536x1024 high (24); rendered 1024x1024 low (1); 23 released.
    charged_as_rendered(
        json!({"prompt": "a paper boat", "size": "auto", "quality": "auto", "output_format": "png"}),
        ("1024x1024", "low"),
        24,
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rendered_high_1536x1024_is_charged_that() {
    charged_as_rendered(
        json!({"prompt": "a paper boat", "size": "auto", "quality": "auto", "output_format": "png"}),
        ("1536x1024", "high"),
        24,
        24,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_size_with_explicit_quality_is_charged_for_the_size_rendered() {
    // Medium at the largest auto size (1536x1024: 6) held; 1024x1024 medium (4) charged.
    charged_as_rendered(
        json!({"prompt": "a paper boat", "size": "auto", "quality": "medium", "n": 2, "output_format": "png"}),
        ("1024x1024", "medium"),
        12,
        8,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_size_and_quality_are_charged_as_asked() {
    // Did not fail before the fix: explicit requests keep their price.
    charged_as_rendered(
        json!({"prompt": "a paper boat", "size": "1024x1024", "quality": "low", "output_format": "png"}),
        ("1536x1024", "high"),
        1,
        1,
    )
    .await;
}

#[tokio::test]
async fn pricing_table_shows_auto_at_what_it_holds() {
    let app = spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let table: Value = app.get("/v1/pricing").await.json().await.unwrap();
    let row = |size: &str| {
        table["sizes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["size"] == size)
            .cloned()
            .unwrap_or_else(|| panic!("no {size} row: {table}"))
    };
    assert_eq!(
        row("auto"),
        json!({"size": "auto", "low": 2, "medium": 6, "high": 24, "auto": 24}),
        "`auto` size is held at its largest size"
    );
    assert_eq!(
        row("1024x1024"),
        json!({"size": "1024x1024", "low": 1, "medium": 4, "high": 16, "auto": 16}),
        "`auto` quality is held at high"
    );
}

// ---- point 4: cancel after the previews ---------------------------------------------

/// Reads an event stream until it ends (or 15 s pass).
async fn read_stream(app: &TestApp, token: &str, id: &str) -> String {
    let mut res = app
        .get_auth(&format!("/v1/generations/{id}/events"), token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut seen = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(Some(chunk)) = res.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: canceled") || seen.contains("event: completed") {
                break;
            }
        }
    })
    .await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_partials_charges_nothing_and_serves_no_partial_images_afterwards() {
    // No workers: the generation's job and its purge never run, so what is served after the
    // cancel is the API's doing alone (the purge job may run any time later).
    let app = spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let user = funded_user(&app).await;
    let created = submit(
        &app,
        &user,
        json!({"prompt": "a paper boat", "size": "64x64", "quality": "low", "output_format": "png"}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let cost = created["cost_credits"].as_i64().unwrap();
    // What the running job does when a streaming model sends two partial images.
    let gid: uuid::Uuid = id.parse().unwrap();
    let db = app.db.client().await;
    db.execute(
        "UPDATE generations SET status = 'running', started_at = now() WHERE id = $1",
        &[&gid],
    )
    .await
    .unwrap();
    for k in 0..2i32 {
        let key = format!("users/{}/generations/{id}/partial-{k}.png", user.id);
        app.state
            .store
            .put(
                &key,
                "image/png",
                gptimage2::storage::bytes_stream(encode_image(64, 64, "png", 100 + k as u32)),
            )
            .await
            .unwrap();
        db.execute(
            "INSERT INTO generation_partials (generation_id, idx, object_key) VALUES ($1, $2, $3)",
            &[&gid, &k, &key],
        )
        .await
        .unwrap();
    }
    // While it runs, the previews are streamed.
    let mut res = app
        .get_auth(&format!("/v1/generations/{id}/events"), &user.access_token)
        .await;
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while seen.matches("event: partial_image").count() < 2 {
            let chunk = res.chunk().await.unwrap().expect("the stream ended early");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no partial images streamed: {seen}"));
    drop(res);
    let urls: Vec<String> = seen
        .split("event: partial_image\ndata: ")
        .skip(1)
        .map(|rest| {
            let data: Value = serde_json::from_str(rest.lines().next().unwrap()).unwrap();
            data["url"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(urls.len(), 2, "{seen}");
    let preview = app.client.get(&urls[0]).send().await.unwrap();
    assert_eq!(preview.status(), StatusCode::OK, "served while running");

    let res = app
        .client
        .post(app.url(&format!("/v1/generations/{id}/cancel")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // From the cancel on: nothing of the previews is served.
    let after = read_stream(&app, &user.access_token, id).await;
    assert!(after.contains("event: canceled"), "{after}");
    assert!(
        !after.contains("partial_image") && !after.contains("partial-"),
        "the stream still serves partial images after the cancel: {after}"
    );
    for url in &urls {
        let res = app.client.get(url).send().await.unwrap();
        assert_ne!(
            res.status(),
            StatusCode::OK,
            "a partial image handed out before the cancel is still served: {url}"
        );
    }
    let g = generation(&app, &user, id).await;
    assert_eq!(g["status"], "canceled");
    assert_eq!(g["images"], json!([]), "{g}");
    assert!(!g.to_string().contains("partial-"), "{g}");
    let list: Value = app
        .get_auth("/v1/generations", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert!(!list.to_string().contains("partial-"), "{list}");
    let objects = app
        .state
        .store
        .list(&format!("users/{}/generations/{id}/", user.id))
        .await
        .unwrap();
    assert!(
        objects.is_empty(),
        "objects left after the cancel: {objects:?}"
    );

    // Charged nothing: the whole hold is released.
    assert_eq!(
        ledger_of(&app, id).await,
        vec![entry("hold", -cost, cost), entry("release", cost, -cost)]
    );
    let c = credits(&app, &user).await;
    assert_eq!(c["available"], GRANT, "{c}");
    assert_eq!(c["held"], 0, "{c}");
    app.assert_ledger_invariants().await;
}
