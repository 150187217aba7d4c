//! The authorization matrix: user A owns one object of every kind, and user B, calling every
//! id-taking route of the generated OpenAPI spec with A's ids, gets a 404 each time (never a
//! 403, which would confirm the id exists). Routes come from the spec, so a new route is
//! covered automatically; a new id-taking route without a mapping below fails the test.

use std::{collections::BTreeMap, time::Duration};

use gptimage2_tests::{AppOptions, TestApp, TestUser, eventually, spawn_app_with};
use reqwest::{
    Method, StatusCode,
    multipart::{Form, Part},
};
use serde_json::{Value, json};

/// Id-taking routes this matrix does not call, and why. Asserted to match the spec exactly.
const SKIPPED: &[(&str, &str)] = &[
    (
        "/files/{key}",
        "signed links: access is the signature, not the caller",
    ),
    (
        "/v1/auth/oauth/{provider}/authorize",
        "public sign-in start, owns nothing",
    ),
    (
        "/v1/auth/oauth/{provider}/callback",
        "public sign-in return, owns nothing",
    ),
];

/// A's objects by kind.
struct Owned {
    ids: BTreeMap<&'static str, String>,
}

impl Owned {
    /// The id to put into `template`, or `None` when no mapping exists (a test failure).
    fn id_for(&self, template: &str) -> Option<&str> {
        let kind = [
            ("/v1/generations/{id}", "generation"),
            ("/v1/images/{id}", "image"),
            ("/v1/reference-images/{id}", "reference"),
            ("/v1/me/exports/{id}", "export"),
            ("/v1/me/sessions/{id}", "session"),
            ("/v1/me/api-keys/{id}", "api_key"),
            ("/v1/me/identities/{provider}", "identity"),
        ]
        .iter()
        .find(|(prefix, _)| template.starts_with(prefix))?
        .1;
        self.ids.get(kind).map(String::as_str)
    }
}

async fn wait_status(app: &TestApp, token: &str, path: &str, status: &str) -> Value {
    eventually(
        &format!("{path} {status}"),
        Duration::from_secs(30),
        || async {
            let v: Value = app.get_auth(path, token).await.json().await.unwrap();
            assert_ne!(v["status"], "failed", "{path} failed: {v}");
            (v["status"] == status).then_some(v)
        },
    )
    .await
}

fn tiny_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 9, y as u8 * 9, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// Creates one object of every kind as `a`, through HTTP only.
async fn create_everything(app: &TestApp, a: &TestUser) -> Owned {
    let token = a.access_token.as_str();
    let mut ids = BTreeMap::new();

    app.grant_credits(&a.id, 100).await;
    let res = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(token)
        .json(&json!({"prompt": "a red fox", "size": "1024x1024", "quality": "low"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let generation = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = wait_status(
        app,
        token,
        &format!("/v1/generations/{generation}"),
        "succeeded",
    )
    .await;
    ids.insert(
        "image",
        done["images"][0]["id"].as_str().unwrap().to_string(),
    );
    ids.insert("generation", generation);

    let res = app
        .client
        .post(app.url("/v1/reference-images"))
        .bearer_auth(token)
        .multipart(Form::new().part("file", Part::bytes(tiny_png()).file_name("ref.png")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    ids.insert(
        "reference",
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .into(),
    );

    let res = app
        .client
        .post(app.url("/v1/me/exports"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "export: {}", res.status());
    let export = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_status(app, token, &format!("/v1/me/exports/{export}"), "succeeded").await;
    ids.insert("export", export);

    app.login_mobile(&a.email, &a.password).await;
    let sessions: Value = app
        .get_auth("/v1/me/sessions", token)
        .await
        .json()
        .await
        .unwrap();
    let phone = sessions["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["client"] == "mobile")
        .expect("the mobile session is listed");
    ids.insert("session", phone["id"].as_str().unwrap().into());

    ids.insert("api_key", app.issue_api_key(token, "matrix").await.0);

    let res = app
        .client
        .post(app.url("/v1/support/requests"))
        .bearer_auth(token)
        .json(&json!({"subject": "Matrix", "message": "Checking who can see this."}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    ids.insert(
        "support",
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .into(),
    );

    // A has no linked identity: deleting one must be a 404 for A and B alike.
    ids.insert("identity", "google".into());
    ids.insert("user", a.id.clone());
    Owned { ids }
}

fn spec_paths() -> serde_json::Map<String, Value> {
    let spec = serde_json::to_value(gptimage2::openapi::build()).unwrap();
    spec["paths"].as_object().unwrap().clone()
}

async fn call(app: &TestApp, method: &str, path: &str, token: &str) -> reqwest::Response {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = app
        .client
        .request(method.clone(), app.url(path))
        .bearer_auth(token);
    // Bodies stay minimal: every id route here checks ownership before reading a body.
    if method == Method::POST || method == Method::PUT || method == Method::PATCH {
        req = req.json(&json!({}));
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_get_404_on_every_id_route_and_see_nothing_in_lists() {
    let app = spawn_app_with(AppOptions::default()).await;
    let a = app.register_user().await;
    let b = app.register_user().await;
    let owned = create_everything(&app, &a).await;
    let paths = spec_paths();

    let mut skipped = Vec::new();
    let mut unmapped = Vec::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (template, item) in &paths {
        if !template.contains('{') {
            continue;
        }
        if SKIPPED.iter().any(|(p, _)| p == template) {
            skipped.push(template.as_str());
            continue;
        }
        let Some(id) = owned.id_for(template) else {
            unmapped.push(template.as_str());
            continue;
        };
        let start = template.find('{').unwrap();
        let end = template.find('}').unwrap();
        let path = format!("{}{id}{}", &template[..start], &template[end + 1..]);
        for method in item.as_object().unwrap().keys() {
            let res = call(&app, method, &path, &b.access_token).await;
            let status = res.status();
            let ctype = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if status != StatusCode::NOT_FOUND || ctype != "application/problem+json" {
                let body = res.text().await.unwrap_or_default();
                failures.push(format!("{method} {path}: {status} {ctype} {body}"));
            }
            checked += 1;
        }
    }
    assert!(
        unmapped.is_empty(),
        "id routes without a mapping: {unmapped:?}"
    );
    let mut expected: Vec<&str> = SKIPPED.iter().map(|(p, _)| *p).collect();
    expected.sort_unstable();
    skipped.sort_unstable();
    assert_eq!(skipped, expected, "the known skips changed");
    assert!(
        failures.is_empty(),
        "B reached A's objects:\n{}",
        failures.join("\n")
    );
    assert!(checked >= 11, "only {checked} calls made");

    // The identity A never linked is a 404 for A too.
    let res = call(&app, "delete", "/v1/me/identities/google", &a.access_token).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // A's objects survived B's deletes and cancels.
    let token = a.access_token.as_str();
    for path in [
        format!("/v1/generations/{}", owned.ids["generation"]),
        format!("/v1/reference-images/{}", owned.ids["reference"]),
        format!("/v1/me/exports/{}", owned.ids["export"]),
    ] {
        let res = app.get_auth(&path, token).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let generation: Value = app
        .get_auth(
            &format!("/v1/generations/{}", owned.ids["generation"]),
            token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(generation["status"], "succeeded");
    let res = app
        .get_auth(&format!("/v1/images/{}/content", owned.ids["image"]), token)
        .await;
    assert_eq!(res.status(), StatusCode::FOUND);
    for (list, kind) in [
        ("/v1/me/sessions", "session"),
        ("/v1/me/api-keys", "api_key"),
        ("/v1/support/requests", "support"),
    ] {
        let text = app.get_auth(list, token).await.text().await.unwrap();
        assert!(text.contains(&owned.ids[kind]), "{list} lost A's {kind}");
    }

    // Every parameterless GET under /v1/ as B: none of A's ids may appear.
    let mut lists = 0;
    for (template, item) in &paths {
        if template.contains('{') || !template.starts_with("/v1/") || item.get("get").is_none() {
            continue;
        }
        let res = app.get_auth(template, &b.access_token).await;
        assert!(
            !res.status().is_server_error(),
            "GET {template}: {}",
            res.status()
        );
        let text = res.text().await.unwrap();
        for (kind, id) in &owned.ids {
            if *kind == "identity" {
                continue;
            }
            assert!(
                !text.contains(id.as_str()),
                "GET {template} shows A's {kind}: {text}"
            );
        }
        lists += 1;
    }
    assert!(lists >= 8, "only {lists} list routes");
}
