//! Hostile and broken input: every answer is a 4xx problem+json (never a 5xx) and changes
//! nothing in the database.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gptimage2_tests::{AppOptions, TestApp, TestUser, spawn_app_with};
use reqwest::{
    Response, StatusCode,
    multipart::{Form, Part},
};
use serde_json::{Value, json};

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        env: vec![("GI2_MAX_IMAGE_PIXELS".into(), "10000000".into())],
        ..Default::default()
    })
    .await
}

/// Asserts a 4xx problem+json with a `code` and returns the body.
async fn problem(res: Response, what: &str) -> Value {
    let status = res.status();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = res.text().await.unwrap_or_default();
    assert!(status.is_client_error(), "{what}: {status} {text}");
    assert_eq!(ctype, "application/problem+json", "{what}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body["code"].is_string(), "{what}: {body}");
    assert_eq!(body["status"], status.as_u16(), "{what}");
    body
}

/// Row counts of the tables a bad request could touch.
async fn counts(app: &TestApp) -> Vec<i64> {
    let client = app.db.client().await;
    let mut out = Vec::new();
    for table in [
        "generations",
        "credit_holds",
        "users",
        "reference_images",
        "sessions",
    ] {
        let row = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap();
        out.push(row.get(0));
    }
    out
}

async fn user(app: &TestApp) -> TestUser {
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;
    user
}

async fn post_raw(
    app: &TestApp,
    token: &str,
    path: &str,
    ctype: &str,
    body: impl Into<reqwest::Body>,
) -> Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_json_bodies_are_refused_without_side_effects() {
    let app = app().await;
    let u = user(&app).await;
    let t = u.access_token.as_str();
    let before = counts(&app).await;

    let res = post_raw(
        &app,
        t,
        "/v1/generations",
        "application/json",
        r#"{"prompt":"#,
    )
    .await;
    problem(res, "truncated JSON").await;

    // Deep nesting must hit the parser's recursion limit, not the stack.
    let deep = format!(
        r#"{{"prompt":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let res = post_raw(&app, t, "/v1/generations", "application/json", deep).await;
    problem(res, "10,000 nested arrays").await;

    let res = post_raw(
        &app,
        t,
        "/v1/generations",
        "text/plain",
        r#"{"prompt":"a fox"}"#,
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    problem(res, "text/plain").await;

    // Raw 0xff 0xfe inside the JSON string: not UTF-8, so not JSON.
    let mut bytes = br#"{"prompt":"a fox "#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(br#"","size":"1024x1024","quality":"low"}"#);
    let res = post_raw(&app, t, "/v1/generations", "application/json", bytes).await;
    let status = res.status();
    problem(res, "invalid UTF-8").await;
    assert!(matches!(status.as_u16(), 400 | 422), "{status}");

    // A raw control character inside a JSON string is invalid JSON; an escaped one is
    // valid JSON, but not a prompt.
    let raw = "{\"prompt\":\"a fox\u{1}\u{7}\",\"size\":\"1024x1024\",\"quality\":\"low\"}";
    let res = post_raw(&app, t, "/v1/generations", "application/json", raw).await;
    let status = res.status();
    problem(res, "raw control characters").await;
    assert!(matches!(status.as_u16(), 400 | 422), "{status}");
    let res = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(t)
        .json(&json!({"prompt": "a fox\u{0}\u{1b}[2J", "size": "1024x1024", "quality": "low"}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    problem(res, "escaped control characters").await;
    assert!(matches!(status.as_u16(), 400 | 422), "{status}");

    assert_eq!(counts(&app).await, before, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_streamed_body_is_cut_off_with_413() {
    let app = app().await;
    let u = user(&app).await;
    let before = counts(&app).await;
    // Also with an Idempotency-Key, whose middleware reads the body before the route does: it
    // must stop at the route's limit too.
    for key in [None, Some("big-body")] {
        let (res, sent) = withheld_100_mb(&app, &u, key).await;
        let res = res.unwrap_or_else(|e| {
            panic!("no answer while the body was withheld past the limit ({key:?}): {e}")
        });
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "{key:?}");
        problem(res, "100 MB body").await;
        assert!(sent <= 3, "{sent} chunks sent: the rest was withheld");
    }
    // A fresh connection: the cut-off one may linger in the client's pool.
    let fresh = reqwest::Client::new()
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    assert_eq!(counts(&app).await, before);
}

/// Streams the head of a 100 MB JSON body (its first 2 MiB, past the 1 MiB limit) and then
/// withholds the rest until the answer arrives. A server that waited for the whole body would
/// never answer: the request times out, however loaded the machine. (This used to pace the
/// rest at 50 ms a MiB and count what was sent by the answer, so a server slowed past 2.5 s
/// by a loaded machine read as one that took 50 MiB.) Returns the answer and the chunks the
/// client had sent when it came.
async fn withheld_100_mb(
    app: &TestApp,
    u: &TestUser,
    key: Option<&str>,
) -> (reqwest::Result<Response>, usize) {
    // 100 chunks of 1 MiB sharing one buffer: the test itself holds 1 MiB, never 100.
    let chunk = Bytes::from(vec![b'a'; 1 << 20]);
    let head = Bytes::from_static(br#"{"prompt":""#);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (answered, answer_seen) = tokio::sync::watch::channel(false);
    let counter = sent.clone();
    let stream = futures::stream::iter(
        std::iter::once(head)
            .chain(std::iter::repeat_n(chunk, 100))
            .enumerate(),
    )
    .then(move |(i, c)| {
        let counter = counter.clone();
        let mut answer_seen = answer_seen.clone();
        async move {
            if i == 3 {
                let _ = answer_seen.wait_for(|seen| *seen).await;
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, std::io::Error>(c)
        }
    });
    let mut req = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(&u.access_token)
        .header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let res = req
        .body(reqwest::Body::wrap_stream(stream))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    let at_answer = sent.load(std::sync::atomic::Ordering::Relaxed);
    // The rest may go now: the server closes the connection rather than read it.
    let _ = answered.send(true);
    (res, at_answer)
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    let mut crc = 0xFFFF_FFFFu32;
    for byte in &body {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&(!crc).to_be_bytes());
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([x as u8, y as u8, (x ^ y) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

async fn upload(app: &TestApp, token: &str, name: &str, bytes: Vec<u8>) -> Response {
    app.client
        .post(app.url("/v1/reference-images"))
        .bearer_auth(token)
        .multipart(Form::new().part("file", Part::bytes(bytes).file_name(name.to_string())))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_polyglot_and_bomb_images_store_nothing() {
    let app = app().await;
    let u = user(&app).await;
    let t = u.access_token.as_str();
    let before = counts(&app).await;

    let whole = png(64, 64);
    let truncated = whole[..whole.len() / 2].to_vec();
    problem(upload(&app, t, "cut.png", truncated).await, "truncated PNG").await;

    // A PNG signature and header, then a ZIP/HTML payload instead of image data.
    let mut polyglot = whole[..33].to_vec();
    polyglot.extend_from_slice(b"PK\x03\x04\x14\0\0\0<html><script>alert(1)</script></html>");
    problem(upload(&app, t, "poly.png", polyglot).await, "polyglot").await;

    // 50000x50000 grey pixels claimed by a tiny file: refused from the header.
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = 50_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    png_chunk(&mut bomb, b"IHDR", &ihdr);
    png_chunk(
        &mut bomb,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01,
        ],
    );
    png_chunk(&mut bomb, b"IEND", &[]);
    let res = upload(&app, t, "bomb.png", bomb).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    problem(res, "bomb").await;

    assert_eq!(counts(&app).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_values_and_injection_strings_are_4xx() {
    let app = app().await;
    let u = user(&app).await;
    let t = u.access_token.as_str();
    let before = counts(&app).await;

    for query in [
        "limit=100000000000000000000",
        "cursor=garbage!!",
        "cursor=%27%20OR%201%3D1%20--",
    ] {
        let res = app.get_auth(&format!("/v1/generations?{query}"), t).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        problem(res, query).await;
    }

    let res = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": "' OR 1=1 --", "password": "' OR 1=1 --"}),
        )
        .await;
    problem(res, "injection as login email").await;

    for path in [
        "/v1/generations/%27%20OR%201%3D1%20--",
        "/v1/reference-images/%27%20OR%201%3D1%20--",
        "/v1/me/exports/1%20OR%201=1",
    ] {
        problem(app.get_auth(path, t).await, path).await;
    }
    let res = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(t)
        .json(&json!({"prompt": "x", "size": "' OR 1=1 --", "quality": "low"}))
        .send()
        .await
        .unwrap();
    problem(res, "injection in a body enum").await;

    assert_eq!(counts(&app).await, before);
}

#[tokio::test]
async fn unsafe_request_ids_are_replaced_with_fresh_uuids() {
    let app = app().await;
    for id in ["x".repeat(200), "two words".to_string()] {
        let res = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", &id)
            .send()
            .await
            .unwrap();
        let echoed = res.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(echoed, id);
        uuid::Uuid::parse_str(echoed).expect("a fresh UUID");
    }
}

#[tokio::test]
async fn oversized_headers_unknown_routes_and_wrong_methods() {
    let app = app().await;
    // A 64 KB cookie is past the API's 16 KiB head limit: 431 problem+json, nothing read.
    let res = app
        .client
        .get(app.url("/v1/me"))
        .header("cookie", format!("gi2_refresh={}", "a".repeat(64 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let body = problem(res, "64 KB cookie").await;
    assert_eq!(body["code"], "headers_too_large");
    // Past the cap: a 431 (actix writes it before any middleware, so no problem body) or a
    // refused connection, and the server lives on.
    // Its own client: the server may reset that connection, which must not poison the pool
    // the rest of the test uses.
    let res = reqwest::Client::new()
        .get(app.url("/healthz"))
        .header("cookie", format!("gi2_refresh={}", "a".repeat(256 * 1024)))
        .send()
        .await;
    match res {
        Ok(res) => assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }
    let fresh = reqwest::Client::new()
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::OK, "the server lives on");

    let res = app.get("/v1/no-such-thing").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    problem(res, "unknown route").await;

    let res = app
        .client
        .put(app.url("/v1/generations"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = res.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    problem(res, "wrong method").await;
}
