//! Attacks: see `security.rs`. Here: following generations with a credential that was
//! revoked, decode amplification through reference images, partial images that outlive a
//! canceled or failed generation, and webhook addresses that smuggle an IPv4 address
//! inside IPv6.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use gptimage2_tests::{AppOptions, Served, TestApp, TestUser, eventually, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

// ---- an image model the test drives step by step --------------------------------------

/// How far the held model has got with every request it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Answer headers sent, nothing else yet.
    Hold,
    /// Two partial images sent, then nothing more.
    Partials,
    /// The partial images (if not sent yet), then the final image: the generation succeeds.
    Complete,
    /// The partial images (if not sent yet), then an `error` event: the generation fails.
    Fail,
}

/// An OpenAI-compatible image model speaking the streamed (`stream: true`) answer, one step
/// at a time when the test says so; wiremock can only send a whole answer at once.
struct HeldModel {
    port: u16,
    requests: Arc<AtomicUsize>,
    stage: watch::Sender<Stage>,
}

impl HeldModel {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let (stage, _) = watch::channel(Stage::Hold);
        let (count, tx) = (requests.clone(), stage.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, count.clone(), tx.subscribe()));
            }
        });
        Self {
            port,
            requests,
            stage,
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GI2_IMAGE_PROVIDER".into(), "openai".into()),
            ("GI2_OPENAI_API_KEY".into(), "sk-test-held".into()),
            (
                "GI2_OPENAI_BASE_URL".into(),
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("GI2_OPENAI_TIMEOUT_SECS".into(), "60".into()),
            ("GI2_JOB_POLL_MS".into(), "50".into()),
        ]
    }

    fn set(&self, stage: Stage) {
        self.stage.send_replace(stage);
    }

    async fn called(&self) {
        eventually(
            "the model to be called",
            Duration::from_secs(15),
            || async { (self.requests.load(Ordering::SeqCst) > 0).then_some(()) },
        )
        .await;
    }
}

fn sse(kind: &str, data: Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

fn b64_png(index: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(gptimage2_tests::openai_fake::encode_image(
        64, 64, "png", index,
    ))
}

async fn answer(mut socket: TcpStream, count: Arc<AtomicUsize>, mut stage: watch::Receiver<Stage>) {
    // The request: headers, then Content-Length bytes of body.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let headers = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let length: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    count.fetch_add(1, Ordering::SeqCst);
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut partials_sent = false;
    loop {
        let now = *stage.borrow_and_update();
        let mut out = String::new();
        if now != Stage::Hold && !partials_sent {
            partials_sent = true;
            for k in 0..2u32 {
                out.push_str(&sse(
                    "image_generation.partial_image",
                    json!({"type": "image_generation.partial_image", "b64_json": b64_png(100 + k),
                           "partial_image_index": k, "output_format": "png"}),
                ));
            }
        }
        let last = match now {
            Stage::Complete => {
                out.push_str(&sse(
                    "image_generation.completed",
                    json!({"type": "image_generation.completed", "b64_json": b64_png(0),
                           "output_format": "png", "size": "64x64"}),
                ));
                true
            }
            Stage::Fail => {
                out.push_str(&sse(
                    "error",
                    json!({"type": "error", "error": {"code": "content_policy_violation",
                           "message": "Your request was rejected as a result of our safety system."}}),
                ));
                true
            }
            Stage::Hold | Stage::Partials => false,
        };
        if !out.is_empty()
            && (socket.write_all(out.as_bytes()).await.is_err() || socket.flush().await.is_err())
        {
            return;
        }
        if last || stage.changed().await.is_err() {
            return;
        }
    }
}

// ---- shared steps ---------------------------------------------------------------------

/// Marks the user's address verified (as the mailed link would), for the routes that need it.
async fn verify(app: &TestApp, user: &TestUser) {
    let id: uuid::Uuid = user.id.parse().unwrap();
    app.db
        .client()
        .await
        .execute(
            "UPDATE users SET email_verified_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
}

async fn funded_user(app: &TestApp) -> TestUser {
    let user = app.register_user().await;
    verify(app, &user).await;
    app.grant_credits(&user.id, 1_000).await;
    user
}

async fn submit(app: &TestApp, token: &str, body: Value) -> String {
    let res = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

fn small() -> Value {
    json!({"prompt": "a fox, bit by bit", "size": "64x64", "quality": "low", "output_format": "png"})
}

async fn status_of(app: &TestApp, token: &str, id: &str) -> Value {
    app.get_auth(&format!("/v1/generations/{id}"), token)
        .await
        .json()
        .await
        .unwrap()
}

/// Reads the stream until `needle` arrives; panics after 15 s.
async fn read_until(res: &mut reqwest::Response, seen: &mut String, needle: &str) {
    tokio::time::timeout(Duration::from_secs(15), async {
        while !seen.contains(needle) {
            let chunk = res.chunk().await.unwrap().expect("the stream ended early");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} on the stream; got {seen:?}"));
}

/// Everything the stream sends until it ends, or `None` if it is still open after `within`.
async fn rest_of(mut res: reqwest::Response, within: Duration) -> (String, bool) {
    let mut rest = String::new();
    let ended = tokio::time::timeout(within, async {
        while let Ok(Some(chunk)) = res.chunk().await {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .is_ok();
    (rest, ended)
}

/// A generation of `user` held by the model, followed with `follow` (the credential under
/// attack) until its first `status` event.
async fn followed_generation(
    app: &TestApp,
    model: &HeldModel,
    submitter: &str,
    follow: &str,
) -> (String, reqwest::Response) {
    let id = submit(app, submitter, small()).await;
    model.called().await;
    let mut res = app
        .get_auth(&format!("/v1/generations/{id}/events"), follow)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut seen = String::new();
    read_until(&mut res, &mut seen, "event: status").await;
    (id, res)
}

/// The generation goes on after the credential was revoked: the stream must end, and must
/// not hand out links to the images drawn after.
async fn assert_stream_stops(
    app: &TestApp,
    model: &HeldModel,
    res: reqwest::Response,
    id: &str,
    watcher: &str,
) {
    model.set(Stage::Complete);
    eventually(
        "the generation to succeed",
        Duration::from_secs(15),
        || async { (status_of(app, watcher, id).await["status"] == "succeeded").then_some(()) },
    )
    .await;
    let (rest, ended) = rest_of(res, Duration::from_secs(10)).await;
    assert!(
        !rest.contains("partial_image") && !rest.contains("completed") && !rest.contains("url"),
        "the revoked credential was still sent the images: {rest}"
    );
    assert!(ended, "the stream of a revoked credential is still open");
}

// ---- point 8: the event stream outlives the session -----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_keeps_following_a_generation() {
    let model = HeldModel::start().await;
    let app = spawn_app_with(AppOptions {
        smtp: false,
        env: model.env(),
        ..Default::default()
    })
    .await;
    let victim = funded_user(&app).await;
    let (other_session, _) = app.login_mobile(&victim.email, &victim.password).await;
    let (id, stream) =
        followed_generation(&app, &model, &victim.access_token, &victim.access_token).await;

    // The stolen session is signed out from another device.
    let sid = app.state.jwt.verify(&victim.access_token).unwrap().sid;
    let res = app
        .client
        .delete(app.url(&format!("/v1/me/sessions/{sid}")))
        .bearer_auth(&other_session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get_auth("/v1/me", &victim.access_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_stream_stops(&app, &model, stream, &id, &other_session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_out_session_keeps_following_a_generation() {
    let model = HeldModel::start().await;
    let app = spawn_app_with(AppOptions {
        smtp: false,
        env: model.env(),
        ..Default::default()
    })
    .await;
    let victim = funded_user(&app).await;
    let (other_session, _) = app.login_mobile(&victim.email, &victim.password).await;
    let (id, stream) =
        followed_generation(&app, &model, &victim.access_token, &victim.access_token).await;

    let res = app
        .client
        .post(app.url("/v1/auth/logout"))
        .bearer_auth(&victim.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_stream_stops(&app, &model, stream, &id, &other_session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_api_key_keeps_following_a_generation() {
    let model = HeldModel::start().await;
    let app = spawn_app_with(AppOptions {
        smtp: false,
        env: model.env(),
        ..Default::default()
    })
    .await;
    let victim = funded_user(&app).await;
    let (key_id, key) = app.issue_api_key(&victim.access_token, "leaked").await;
    let (id, stream) = followed_generation(&app, &model, &key, &key).await;

    let res = app
        .client
        .delete(app.url(&format!("/v1/me/api-keys/{key_id}")))
        .bearer_auth(&victim.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get_auth("/v1/me", &key).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_stream_stops(&app, &model, stream, &id, &victim.access_token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_keeps_following_a_generation() {
    let model = HeldModel::start().await;
    let app = spawn_app_with(AppOptions {
        smtp: false,
        env: model.env(),
        ..Default::default()
    })
    .await;
    let victim = funded_user(&app).await;
    // A token of the victim's session that expires in a second (5 s of leeway on top).
    let claims = app.state.jwt.verify(&victim.access_token).unwrap();
    let (short, _) = app
        .state
        .jwt
        .issue(claims.sub, claims.sid, Duration::from_secs(1))
        .unwrap();
    let (id, stream) = followed_generation(&app, &model, &victim.access_token, &short).await;

    eventually(
        "the short token to expire",
        Duration::from_secs(15),
        || async {
            (app.get_auth("/v1/me", &short).await.status() == StatusCode::UNAUTHORIZED)
                .then_some(())
        },
    )
    .await;
    assert_stream_stops(&app, &model, stream, &id, &victim.access_token).await;
}

// ---- point 9: decode amplification ----------------------------------------------------

/// A PNG of `width`×`height` 16-bit RGBA pixels of one color, written row by row through a
/// streaming deflate, so neither this test nor the file ever holds the decoded pixels.
fn flat_rgba16_png(width: u32, height: u32) -> Vec<u8> {
    use std::io::Write;
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    // The first row filtered "Sub" (one pixel, then zero differences), every other "Up"
    // (all zero differences): the deflate stream is a long run of zeros.
    let mut row = vec![0u8; 1 + width as usize * 8];
    row[0] = 1;
    row[1..9].copy_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xff, 0xff]);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&row).unwrap();
    row.fill(0);
    row[0] = 2;
    for _ in 1..height {
        z.write_all(&row).unwrap();
    }
    let idat = z.finish().unwrap();
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[16, 6, 0, 0, 0]); // 16 bits, RGBA, deflate, no filter, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Uploads `png` as a reference image to a server of its own.
async fn upload(
    served: &Served,
    client: &reqwest::Client,
    token: &str,
    png: Vec<u8>,
) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(png).file_name("image.png");
    client
        .post(format!("{}/v1/reference-images", served.base))
        .bearer_auth(token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_kib_png_that_decodes_to_320_mib_inflates_the_server() {
    let bomb = flat_rgba16_png(6320, 6320);
    assert!(
        bomb.len() < 320 * 1024,
        "the file is small: {} bytes",
        bomb.len()
    );
    let bomb_kib = bomb.len() / 1024;
    // A `gptimage2 serve` process of its own, so its memory is measured apart from the tests'.
    let served = Served::fresh(&["serve", "--no-workers"], &[]).await;
    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{}/v1/auth/register", served.base))
        .json(&json!({"email": "bomber@example.com", "password": "correct horse battery", "name": "B"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap();
    // Warm up the upload path with an ordinary image first.
    let ordinary = gptimage2_tests::openai_fake::encode_image(256, 256, "png", 1);
    assert_eq!(
        upload(&served, &client, token, ordinary).await.status(),
        StatusCode::CREATED
    );

    let before = served.kib("VmRSS");
    let res = upload(&served, &client, token, bomb).await;
    let status = res.status();
    let problem: Value = res.json().await.unwrap_or_default();
    let growth_mib = served.kib("VmHWM").saturating_sub(before) / 1024;
    assert!(
        growth_mib < 64,
        "the server grew by {growth_mib} MiB for a {} KiB upload (answer {status})",
        bomb_kib
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "image_too_large", "{problem}");
}

// ---- extra: partial images of canceled and failed generations -------------------------

/// The stored objects under the generation's prefix.
async fn objects(app: &TestApp, user: &TestUser, id: &str) -> Vec<String> {
    app.state
        .store
        .list(&format!("users/{}/generations/{id}/", user.id))
        .await
        .unwrap()
}

async fn partial_rows(app: &TestApp, id: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM generation_partials WHERE generation_id = '{id}'"
    ))
    .await
}

/// An app on the held model, a funded user, and a generation whose two partial images are
/// stored.
async fn generation_with_partials(model: &HeldModel) -> (TestApp, TestUser, String) {
    let app = spawn_app_with(AppOptions {
        smtp: false,
        env: model.env(),
        ..Default::default()
    })
    .await;
    let user = funded_user(&app).await;
    let id = submit(&app, &user.access_token, small()).await;
    model.called().await;
    model.set(Stage::Partials);
    eventually(
        "both partial images to be stored",
        Duration::from_secs(15),
        || async { (partial_rows(&app, &id).await == 2).then_some(()) },
    )
    .await;
    assert_eq!(objects(&app, &user, &id).await.len(), 2);
    (app, user, id)
}

async fn assert_nothing_left(app: &TestApp, user: &TestUser, id: &str) {
    eventually(
        "the generation's objects and partial rows to be deleted",
        Duration::from_secs(15),
        || async {
            let objects = objects(app, user, id).await;
            let rows = partial_rows(app, id).await;
            (objects.is_empty() && rows == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_images_of_a_canceled_generation_stay_in_the_bucket() {
    let model = HeldModel::start().await;
    let (app, user, id) = generation_with_partials(&model).await;
    let res = app
        .client
        .post(app.url(&format!("/v1/generations/{id}/cancel")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_nothing_left(&app, &user, &id).await;
    // The model finishing late changes nothing.
    model.set(Stage::Complete);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(objects(&app, &user, &id).await.is_empty());
    assert_eq!(
        status_of(&app, &user.access_token, &id).await["status"],
        "canceled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_images_of_a_failed_generation_stay_in_the_bucket() {
    let model = HeldModel::start().await;
    let (app, user, id) = generation_with_partials(&model).await;
    model.set(Stage::Fail);
    let failed = eventually(
        "the generation to fail",
        Duration::from_secs(15),
        || async {
            let g = status_of(&app, &user.access_token, &id).await;
            (g["status"] == "failed").then_some(g)
        },
    )
    .await;
    assert_eq!(failed["error"]["code"], "content_policy_violation");
    assert_nothing_left(&app, &user, &id).await;
}

// ---- extra: webhook addresses that embed a private IPv4 address -----------------------

/// IPv6 literals that reach 127.0.0.1 (or might, through a translator or tunnel).
fn embedding_loopback(port: u16) -> Vec<String> {
    [
        "::127.0.0.1",                          // IPv4-compatible
        "::ffff:127.0.0.1",                     // IPv4-mapped
        "64:ff9b::127.0.0.1",                   // NAT64, well-known prefix
        "64:ff9b:1::7f00:1",                    // NAT64, local-use prefix
        "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo, client 127.0.0.1
    ]
    .iter()
    .map(|ip| format!("http://[{ip}]:{port}/hook"))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_loopback_through_ipv6_literals_that_embed_it() {
    // Development accepts http and IP hosts at submit: the refusal is the delivery's.
    let app = spawn_app_with(AppOptions {
        smtp: false,
        env: vec![("GI2_JOB_BACKOFF_BASE_MS".into(), "50".into())],
        ..Default::default()
    })
    .await;
    let user = funded_user(&app).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for url in embedding_loopback(port) {
        let mut body = small();
        body["webhook_url"] = json!(url);
        let id = submit(&app, &user.access_token, body).await;
        let delivery = eventually(
            &format!("the first delivery attempt to {url}"),
            Duration::from_secs(20),
            || async {
                let g = status_of(&app, &user.access_token, &id).await;
                let d = g["webhook_deliveries"][0].clone();
                (d["attempts"].as_i64().unwrap_or(0) >= 1).then_some(d)
            },
        )
        .await;
        let error = delivery["last_error"].as_str().unwrap_or_default();
        assert!(
            delivery["status"] == "failed" && error.starts_with("refused:"),
            "the delivery to {url} was attempted: {delivery}"
        );
    }
}

#[tokio::test]
async fn webhook_urls_with_ipv6_literals_that_embed_loopback_are_refused_at_submit() {
    let app = spawn_app_with(AppOptions {
        workers: false,
        env: vec![("GI2_ENV".into(), "production".into())],
        ..Default::default()
    })
    .await;
    let user = funded_user(&app).await;
    for url in embedding_loopback(443) {
        let url = url.replace("http://", "https://").replace("]:443", "]");
        let mut body = small();
        body["webhook_url"] = json!(url);
        let res = app
            .client
            .post(app.url("/v1/generations"))
            .bearer_auth(&user.access_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed", "{url}");
        assert_eq!(problem["errors"][0]["field"], "webhook_url", "{url}");
    }
}
