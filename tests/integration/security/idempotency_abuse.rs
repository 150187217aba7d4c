//! Attacks: see `security.rs`. Here: `Idempotency-Key` abused to keep credentials (a
//! percent-encoded path slipping past the exclusions, a replay after the credential that
//! created the answer was revoked), to make the server buffer anonymous bodies and fill its
//! table, and stored answers outliving the account they belong to.

use std::time::Duration;

use gptimage2_tests::{AppOptions, Served, TestApp, TestUser, eventually, spawn_app_with};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await
}

fn replayed(res: &Response) -> bool {
    res.headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

async fn stored_answers(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM idempotency_keys").await
}

/// A user whose address is verified (set directly: API keys need a verified address, and
/// proving it through the link would end the sessions this test holds).
async fn verified_user(app: &TestApp) -> TestUser {
    let user = app.register_user().await;
    app.db
        .client()
        .await
        .execute(
            &format!(
                "UPDATE users SET email_verified_at = now() WHERE id = '{}'",
                user.id
            ),
            &[],
        )
        .await
        .unwrap();
    user
}

async fn post_with_key(
    app: &TestApp,
    path: &str,
    token: &str,
    key: &str,
    body: &Value,
) -> Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn sign_out(app: &TestApp, token: &str) {
    let res = app
        .client
        .post(app.url("/v1/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get_auth("/v1/me", token).await.status(),
        StatusCode::UNAUTHORIZED,
        "the session has ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacker_keeps_an_api_key_copy_through_a_percent_encoded_path() {
    let app = app().await;
    let user = verified_user(&app).await;
    let body = json!({"name": "ci"});
    let first = post_with_key(&app, "/v1/me/api%2Dkeys", &user.access_token, "k1", &body).await;
    assert_eq!(
        first.status(),
        StatusCode::CREATED,
        "the encoded path is routed"
    );
    let first: Value = first.json().await.unwrap();

    let again = post_with_key(&app, "/v1/me/api%2Dkeys", &user.access_token, "k1", &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert!(
        !replayed(&again),
        "the answer carrying the key's only copy was stored and replayed"
    );
    let again: Value = again.json().await.unwrap();
    assert_ne!(again["key"], first["key"], "a new key, not a stored one");
    assert_eq!(
        stored_answers(&app).await,
        0,
        "no answer holding a secret is kept"
    );

    // Even once the session that created it ended, nothing hands the secret out again.
    sign_out(&app, &user.access_token).await;
    let after = post_with_key(&app, "/v1/me/api%2Dkeys", &user.access_token, "k1", &body).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    assert!(!replayed(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacker_replays_sign_in_tokens_through_a_percent_encoded_path() {
    let app = app().await;
    let user = app.register_user().await;
    let body = json!({"email": user.email, "password": user.password, "client": "mobile"});
    let login = || async {
        app.client
            .post(app.url("/v1/%61uth/login"))
            .header("Idempotency-Key", "login-1")
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    let first = login().await;
    assert_eq!(first.status(), StatusCode::OK, "the encoded path is routed");
    let first: Value = first.json().await.unwrap();
    let token = first["access_token"].as_str().unwrap().to_string();
    sign_out(&app, &token).await;

    let again = login().await;
    assert_eq!(again.status(), StatusCode::OK);
    assert!(
        !replayed(&again),
        "the sign-in answer (tokens of a session since ended) was stored and replayed"
    );
    let again: Value = again.json().await.unwrap();
    assert_ne!(again["refresh_token"], first["refresh_token"]);
    assert_eq!(stored_answers(&app).await, 0, "no sign-in answer is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacker_replays_an_answer_after_its_credential_was_revoked() {
    let app = app().await;
    let user = verified_user(&app).await;
    app.grant_credits(&user.id, 100).await;
    let body = json!({"prompt": "a red fox", "size": "1024x1024", "quality": "low"});

    // A session token, then signed out: the key's answer is not handed to it any more.
    let (token, _) = app.login_mobile(&user.email, &user.password).await;
    let first = post_with_key(&app, "/v1/generations", &token, "g1", &body).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    sign_out(&app, &token).await;
    let replay = post_with_key(&app, "/v1/generations", &token, "g1", &body).await;
    assert_eq!(
        replay.status(),
        StatusCode::UNAUTHORIZED,
        "a signed-out session token got the stored answer"
    );
    assert!(!replayed(&replay));

    // The same for an API key, once revoked.
    let (key_id, api_key) = app.issue_api_key(&user.access_token, "ci").await;
    let first = post_with_key(&app, "/v1/generations", &api_key, "g2", &body).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let revoked = app
        .client
        .delete(app.url(&format!("/v1/me/api-keys/{key_id}")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let replay = post_with_key(&app, "/v1/generations", &api_key, "g2", &body).await;
    assert_eq!(
        replay.status(),
        StatusCode::UNAUTHORIZED,
        "a revoked API key got the stored answer"
    );
    assert!(!replayed(&replay));

    // The user's own live session still gets its retry answered.
    let retry = post_with_key(&app, "/v1/generations", &user.access_token, "g1", &body).await;
    assert_eq!(retry.status(), StatusCode::ACCEPTED);
    assert!(
        replayed(&retry),
        "a live session of the same user is the same principal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_caller_fills_the_table_with_unknown_paths() {
    let app = app().await;
    for i in 0..20 {
        let res = app
            .client
            .post(app.url(&format!("/v1/nowhere-{i}")))
            .header("Idempotency-Key", format!("k{i}"))
            .json(&json!({"junk": i}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(stored_answers(&app).await, 0, "anonymous 404s were stored");

    // Signed in, an unknown path is not a route either: nothing to replay, nothing kept.
    let user = app.register_user().await;
    let res = post_with_key(&app, "/v1/nowhere", &user.access_token, "k", &json!({})).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(stored_answers(&app).await, 0, "a 404 was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_request_answer_outlives_account_erasure() {
    let app = spawn_app_with(AppOptions {
        env: vec![("GI2_JOB_BACKOFF_BASE_MS".into(), "100".into())],
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    let res = post_with_key(
        &app,
        "/v1/support/requests",
        &user.access_token,
        "support-1",
        &json!({"subject": "Private matter", "message": "My neighbour's name is Jane Roe."}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(stored_answers(&app).await, 1);

    let res = app
        .client
        .delete(app.url("/v1/me"))
        .bearer_auth(&user.access_token)
        .json(&json!({"password": user.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    eventually("the account erased", Duration::from_secs(30), || async {
        let left = app
            .count(&format!(
                "SELECT count(*) FROM users WHERE id = '{}'",
                user.id
            ))
            .await;
        (left == 0).then_some(())
    })
    .await;
    let left = app
        .count("SELECT count(*) FROM idempotency_keys WHERE convert_from(response_body, 'UTF8') LIKE '%Jane Roe%'")
        .await;
    assert_eq!(
        left, 0,
        "the erased account's support request is still stored"
    );
}

// ---- memory: a separate server process, measured from outside ---------------------------

const BODY: usize = 25 * 1024 * 1024;

/// Where the bodies go: a multipart upload (its form head first, then file bytes) or JSON.
#[derive(Clone, Copy)]
enum Target {
    Upload,
    Json(&'static str),
}

impl Target {
    fn request(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Upload => (
                "/v1/reference-images",
                "multipart/form-data; boundary=x",
                "--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
                 Content-Type: image/png\r\n\r\n",
            ),
            Self::Json(path) => (path, "application/json", "{\"prompt\":\""),
        }
    }
}

/// Opens a request declaring a 25 MiB body and sends all of it but the last byte, as long as
/// the server keeps reading; returns the connection (kept open) and the bytes sent.
async fn unfinished_body(
    address: String,
    target: Target,
    authorization: Option<String>,
    key: String,
) -> (tokio::net::TcpStream, usize) {
    let (path, content_type, preamble) = target.request();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {BODY}\r\nIdempotency-Key: {key}\r\n{auth}\r\n{preamble}"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'a'; 256 * 1024];
    let mut sent = preamble.len();
    while sent < BODY - 1 {
        let n = chunk.len().min(BODY - 1 - sent);
        match tokio::time::timeout(Duration::from_secs(2), stream.write_all(&chunk[..n])).await {
            Ok(Ok(())) => sent += n,
            // The server stopped reading (or answered and closed): that is its right.
            _ => break,
        }
    }
    (stream, sent)
}

/// RSS growth (MiB) while 8 unfinished 25 MiB bodies to `targets` (in turn) are held open
/// against `server`, and the MiB sent.
async fn growth_under_eight_bodies(
    server: &Served,
    targets: &[Target],
    authorization: Option<String>,
    round: &str,
) -> (u64, usize) {
    let before = server.kib("VmRSS");
    let bodies = (0..8).map(|i| {
        tokio::spawn(unfinished_body(
            server.address().to_string(),
            targets[i % targets.len()],
            authorization.clone(),
            format!("{round}-{i}"),
        ))
    });
    let connections: Vec<_> = futures::future::join_all(bodies)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let sent: usize = connections.iter().map(|(_, n)| n).sum();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = server.kib("VmRSS");
    drop(connections);
    (during.saturating_sub(before) / 1024, sent >> 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_caller_makes_the_server_buffer_unfinished_bodies() {
    let server = Served::fresh(&["serve", "--no-workers"], &[("GI2_LOG", "error")]).await;
    // Warm up what every request allocates once (pools, thread-locals, the route table).
    let client = reqwest::Client::new();
    for _ in 0..4 {
        client
            .post(format!("{}/v1/generations", server.base))
            .header("Idempotency-Key", "warm-up")
            .json(&json!({"prompt": "x"}))
            .send()
            .await
            .unwrap();
    }
    let targets = [Target::Upload, Target::Json("/v1/generations")];
    let (growth, sent) = growth_under_eight_bodies(&server, &targets, None, "anonymous").await;
    assert!(
        growth < 32,
        "8 anonymous unfinished 25 MiB bodies grew the server by {growth} MiB ({sent} MiB sent)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_caller_makes_the_server_buffer_past_the_route_limit() {
    let server = Served::fresh(&["serve", "--no-workers"], &[("GI2_LOG", "error")]).await;
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/v1/auth/register", server.base))
        .json(&json!({
            "email": format!("big-{}@example.com", uuid::Uuid::new_v4().simple()),
            "password": gptimage2_tests::users::PASSWORD,
            "name": "Big Bodies",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let token = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..4 {
        client
            .post(format!("{}/v1/generations", server.base))
            .bearer_auth(&token)
            .header("Idempotency-Key", "warm-up")
            .json(&json!({"prompt": "x"}))
            .send()
            .await
            .unwrap();
    }
    // A JSON route takes 1 MiB at most: a body past that is refused, so holding more of it
    // is never needed. (An upload route legitimately reads up to its own 20 MiB.)
    let targets = [
        Target::Json("/v1/generations"),
        Target::Json("/v1/support/requests"),
    ];
    let authorization = Some(format!("Bearer {token}"));
    let (growth, sent) =
        growth_under_eight_bodies(&server, &targets, authorization, "signed-in").await;
    assert!(
        growth < 32,
        "8 signed-in unfinished 25 MiB JSON bodies grew the server by {growth} MiB ({sent} MiB sent)"
    );
}
