//! Personal-data exports: the job streams a ZIP with every JSON section and image into the
//! store, the manifest matches the files, no secret leaks, the link is mailed, one export at a
//! time, owners only, and expired exports are purged.

use std::{collections::HashMap, io::Cursor, io::Read, time::Duration};

use gptimage2::storage::{self, StorageError};
use gptimage2_tests::{AppOptions, Storage, TestApp, TestUser, eventually, spawn_app_with};
use reqwest::{
    StatusCode,
    multipart::{Form, Part},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub(crate) async fn post_export(app: &TestApp, user: &TestUser) -> reqwest::Response {
    app.client
        .post(app.url("/v1/me/exports"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn wait_succeeded(app: &TestApp, user: &TestUser, id: &str) -> Value {
    eventually(
        &format!("export {id} succeeded"),
        Duration::from_secs(30),
        || async {
            let e: Value = app
                .get_auth(&format!("/v1/me/exports/{id}"), &user.access_token)
                .await
                .json()
                .await
                .unwrap();
            assert_ne!(e["status"], "failed", "the export failed: {e}");
            (e["status"] == "succeeded").then_some(e)
        },
    )
    .await
}

fn small_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 12, |x, y| image::Rgb([x as u8 * 9, y as u8 * 11, 77]));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

pub(crate) fn unzip(bytes: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("a valid ZIP");
    let mut files = HashMap::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        files.insert(f.name().unwrap().to_string(), data);
    }
    files
}

pub(crate) fn json_file(files: &HashMap<String, Vec<u8>>, name: &str) -> Value {
    serde_json::from_slice(
        files
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing")),
    )
    .unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

/// The first `http…` link in `text` that points at the export's ZIP.
fn zip_link(text: &str, export_id: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with("http") && w.contains(&format!("{export_id}.zip")))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_every_section_and_image_and_is_mailed() {
    let app = spawn_app_with(AppOptions::default()).await;
    let user = app.register_user().await;
    let other = app.register_user().await;
    app.grant_credits(&user.id, 100).await;
    let res = app
        .client
        .put(app.url("/v1/me/consents"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "analytics": true, "marketing": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .client
        .post(app.url("/v1/reference-images"))
        .bearer_auth(&user.access_token)
        .multipart(Form::new().part("file", Part::bytes(small_png()).file_name("ref.png")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let reference: Value = res.json().await.unwrap();
    let res = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(&user.access_token)
        .json(&json!({"prompt": "a lighthouse at dusk", "size": "1024x1024", "quality": "low", "n": 2, "output_format": "png"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let generation: Value = res.json().await.unwrap();
    let gid = generation["id"].as_str().unwrap().to_string();
    eventually("the generation", Duration::from_secs(30), || async {
        let g: Value = app
            .get_auth(&format!("/v1/generations/{gid}"), &user.access_token)
            .await
            .json()
            .await
            .unwrap();
        (g["status"] == "succeeded").then_some(())
    })
    .await;

    let res = app
        .client
        .post(app.url("/v1/support/requests"))
        .bearer_auth(&user.access_token)
        .json(&json!({"subject": "Where is my fox?", "message": "It was here a minute ago."}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    let res = post_export(&app, &user).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["status"], "queued");
    assert_eq!(created["progress"], 0);
    assert!(created["download_url"].is_null() && created["expires_at"].is_null());
    let id = created["id"].as_str().unwrap().to_string();

    // Only the owner sees it.
    let res = app
        .get_auth(&format!("/v1/me/exports/{id}"), &other.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let done = wait_succeeded(&app, &user, &id).await;
    assert_eq!(done["progress"], 100);
    let expires_at: chrono::DateTime<chrono::Utc> =
        done["expires_at"].as_str().unwrap().parse().unwrap();
    let days = (expires_at - chrono::Utc::now()).num_hours();
    assert!(
        (166..=168).contains(&days),
        "valid for 7 days, got {days} h"
    );
    let list: Value = app
        .get_auth("/v1/me/exports", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["id"], id.as_str());
    let other_list: Value = app
        .get_auth("/v1/me/exports", &other.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(other_list["data"], json!([]));

    let bytes = reqwest::get(done["download_url"].as_str().unwrap())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.len() as i64, done["bytes"].as_i64().unwrap());
    let files = unzip(&bytes);

    // The manifest lists every other file with its true hash and size.
    let manifest = json_file(&files, "manifest.json");
    assert_eq!(manifest["schema_version"], 1);
    assert_eq!(manifest["user_id"], user.id.as_str());
    assert!(manifest["generated_at"].is_string());
    let listed = manifest["files"].as_array().unwrap();
    assert_eq!(listed.len(), files.len() - 1, "every file but the manifest");
    for entry in listed {
        let path = entry["path"].as_str().unwrap();
        let data = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} listed, absent"));
        assert_eq!(
            entry["bytes"].as_u64().unwrap(),
            data.len() as u64,
            "{path}"
        );
        assert_eq!(
            entry["sha256"].as_str().unwrap(),
            hex::encode(Sha256::digest(data)),
            "{path}"
        );
    }
    for name in [
        "profile.json",
        "identities.json",
        "sessions.json",
        "activity.json",
        "consents.json",
        "generations.json",
        "reference_images.json",
        "credits_ledger.json",
        "billing_transactions.json",
        "subscription.json",
        "support_requests.json",
    ] {
        // Sections are streamed row by row, yet read as one pretty-printed document.
        let value = json_file(&files, name);
        assert_eq!(
            String::from_utf8_lossy(&files[name]),
            serde_json::to_string_pretty(&value).unwrap(),
            "{name}"
        );
    }

    assert_eq!(
        json_file(&files, "profile.json")["email"],
        user.email.as_str()
    );
    assert!(
        !json_file(&files, "sessions.json")
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        !json_file(&files, "activity.json")
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Oldest first: the choice just made is the last one.
    let consents = json_file(&files, "consents.json");
    assert_eq!(
        consents.as_array().unwrap().last().unwrap()["analytics"],
        true
    );
    let ledger = json_file(&files, "credits_ledger.json");
    assert!(!ledger["entries"].as_array().unwrap().is_empty());
    assert_eq!(
        json_file(&files, "support_requests.json")[0]["subject"],
        "Where is my fox?"
    );
    let generations = json_file(&files, "generations.json");
    let g = &generations[0];
    assert_eq!(g["id"], gid.as_str());
    assert_eq!(g["prompt"], "a lighthouse at dusk");
    assert_eq!(g["params"]["size"], "1024x1024");
    assert_eq!(g["params"]["n"], 2);
    assert_eq!(g["images"].as_array().unwrap().len(), 2);

    // Images are the stored objects, byte for byte.
    let rows = app
        .db
        .client()
        .await
        .query(
            "SELECT object_key, 'images/generations/' || generation_id || '/' || position || '.png'
             FROM generation_images WHERE user_id = $1::text::uuid
             UNION ALL
             SELECT object_key, 'images/references/' || id || '.png'
             FROM reference_images WHERE user_id = $1::text::uuid",
            &[&user.id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "two generated images and one reference");
    for row in rows {
        let (key, path): (String, String) = (row.get(0), row.get(1));
        let stored = storage::collect(app.state.store.get(&key).await.unwrap().body)
            .await
            .unwrap();
        assert_eq!(
            files.get(&path).map(Vec::as_slice),
            Some(&stored[..]),
            "{path}"
        );
    }
    assert_eq!(
        json_file(&files, "reference_images.json")[0]["id"],
        reference["id"]
    );

    // No secret of any kind.
    for (name, data) in &files {
        let text = String::from_utf8_lossy(data);
        for secret in [
            "argon2",
            "$argon2id",
            "password_hash",
            "token_hash",
            "key_hash",
            "whsec_",
        ] {
            assert!(!text.contains(secret), "{name} contains {secret}");
        }
    }

    // The mail carries a working link to the same archive.
    let smtp = app.smtp.as_ref().unwrap();
    let link = eventually("the export_ready mail", Duration::from_secs(10), || async {
        smtp.received()
            .iter()
            .filter(|m| m.to.iter().any(|t| t == &user.email))
            .find_map(|m| zip_link(&m.text_body(), &id))
    })
    .await;
    let mailed = reqwest::get(&link).await.unwrap();
    assert_eq!(mailed.status(), StatusCode::OK);
    assert_eq!(mailed.bytes().await.unwrap(), bytes);

    // Once expired, the archive is deleted; the row stays (without a link) until retention.
    let key = format!("users/{}/exports/{id}.zip", user.id);
    app.state.store.head(&key).await.unwrap();
    app.db
        .client()
        .await
        .execute(
            "UPDATE exports SET expires_at = now() - interval '1 minute' WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    let expired: Value = app
        .get_auth(&format!("/v1/me/exports/{id}"), &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert!(expired["download_url"].is_null(), "no link once expired");
    let purged = gptimage2::accounts::export::purge_expired(&app.state)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(matches!(
        app.state.store.head(&key).await,
        Err(StorageError::NotFound)
    ));
    let res = app
        .get_auth(&format!("/v1/me/exports/{id}"), &user.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let row: Value = res.json().await.unwrap();
    assert!(row["download_url"].is_null());
    assert_eq!(
        gptimage2::accounts::export::purge_expired(&app.state)
            .await
            .unwrap(),
        0,
        "an archive is deleted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_export_at_a_time_for_its_owner_only() {
    // No workers: the first export stays queued.
    let app = spawn_app_with(AppOptions {
        storage: Storage::Local,
        workers: false,
        smtp: false,
        env: Vec::new(),
    })
    .await;
    let user = app.register_user().await;
    let other = app.register_user().await;
    let res = post_export(&app, &user).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/v1/me/exports/")
    );
    let first: Value = res.json().await.unwrap();
    let res = post_export(&app, &user).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "export_in_progress");
    // An export whose job was lost stops blocking new ones after a day.
    app.db
        .client()
        .await
        .execute(
            "UPDATE exports SET created_at = now() - interval '25 hours' WHERE id = $1::text::uuid",
            &[&first["id"].as_str().unwrap()],
        )
        .await
        .unwrap();
    gptimage2::accounts::export::purge_expired(&app.state)
        .await
        .unwrap();
    let stuck: Value = app
        .get_auth(
            &format!("/v1/me/exports/{}", first["id"].as_str().unwrap()),
            &user.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stuck["status"], "failed");
    assert!(stuck["error"].is_string());
    assert_eq!(
        post_export(&app, &user).await.status(),
        StatusCode::ACCEPTED
    );
    // Someone else's export does not block theirs, nor is it visible to them.
    assert_eq!(
        post_export(&app, &other).await.status(),
        StatusCode::ACCEPTED
    );
    let res = app
        .get_auth(
            &format!("/v1/me/exports/{}", first["id"].as_str().unwrap()),
            &other.access_token,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // API keys cannot start exports.
    let (_, key) = app.issue_api_key(&user.access_token, "ci").await;
    let res = app
        .client
        .post(app.url("/v1/me/exports"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_store_serves_the_export_through_its_signed_link() {
    let app = spawn_app_with(AppOptions {
        storage: Storage::Local,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    let created: Value = post_export(&app, &user).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let done = wait_succeeded(&app, &user, &id).await;
    let url = done["download_url"].as_str().unwrap();
    assert!(url.starts_with(&app.address), "served by the API: {url}");
    let bytes = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    let files = unzip(&bytes);
    assert_eq!(json_file(&files, "profile.json")["id"], user.id.as_str());
    assert_eq!(json_file(&files, "generations.json"), json!([]));
    // A second export is allowed once the first finished.
    assert_eq!(
        post_export(&app, &user).await.status(),
        StatusCode::ACCEPTED
    );
}
