//! Reference images through HTTP: PNG, JPEG and WebP uploads are checked, stored re-encoded
//! without metadata, and readable, listable and deletable only by their owner; anything
//! else (other formats, corrupt files, decompression bombs, oversized bodies) stores nothing.

use std::io::Cursor;

use gptimage2::{generations::reference_images, storage::StorageError};
use gptimage2_tests::{AppOptions, Storage, TestApp, TestUser, spawn_app_with};
use image::{DynamicImage, ImageFormat, RgbImage, RgbaImage};
use reqwest::{
    Response, StatusCode,
    multipart::{Form, Part},
};
use serde_json::Value;
use uuid::Uuid;

const MAX_UPLOAD_BYTES: usize = 100_000;
const MAX_IMAGE_PIXELS: u64 = 10_000_000;

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        storage: Storage::S3,
        workers: false,
        smtp: false,
        env: vec![
            ("GI2_MAX_UPLOAD_BYTES".into(), MAX_UPLOAD_BYTES.to_string()),
            ("GI2_MAX_IMAGE_PIXELS".into(), MAX_IMAGE_PIXELS.to_string()),
        ],
    })
    .await
}

// ---- fixtures -------------------------------------------------------------------------

fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
    })
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
    encode(
        &DynamicImage::ImageRgb8(gradient(width, height)),
        ImageFormat::Png,
    )
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(
        &DynamicImage::ImageRgb8(gradient(width, height)),
        ImageFormat::Jpeg,
    )
}

fn webp(width: u32, height: u32) -> Vec<u8> {
    let rgba = RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([x as u8, y as u8, 90, if x < width / 2 { 255 } else { 128 }])
    });
    encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::WebP)
}

/// A 40x30 JPEG carrying an APP1 Exif segment (big-endian TIFF; IFD0 holds one entry,
/// Orientation = 6, "rotate 90° clockwise to display") followed by a GPS-looking payload,
/// spliced in right after SOI as cameras write it.
fn jpeg_with_gps_exif() -> Vec<u8> {
    let plain = jpeg(40, 30);
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // TIFF header, IFD0 at offset 8
    exif.extend_from_slice(&[0, 1]); // one entry
    exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]); // Orientation, SHORT, 6
    exif.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    exif.extend_from_slice(b"GPS 48.858370N 2.294481E");
    let len = u16::try_from(exif.len() + 2).unwrap();
    let mut out = plain[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&exif);
    out.extend_from_slice(&plain[2..]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A well-formed PNG header claiming `width`x`height` 8-bit grey pixels, with a token IDAT:
/// decoding it would need width × height bytes.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // depth 8, greyscale, deflate, no filter, no interlace
    png_chunk(&mut out, b"IHDR", &ihdr);
    // An empty stored deflate block: a valid zlib stream, far short of the claimed pixels.
    png_chunk(
        &mut out,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01,
        ],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

// ---- helpers --------------------------------------------------------------------------

async fn upload(app: &TestApp, token: &str, name: &str, bytes: Vec<u8>) -> Response {
    let form = Form::new().part("file", Part::bytes(bytes).file_name(name.to_string()));
    app.client
        .post(app.url("/v1/reference-images"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// Uploads and asserts 201; returns the response body.
pub(crate) async fn upload_ok(app: &TestApp, token: &str, name: &str, bytes: Vec<u8>) -> Value {
    let res = upload(app, token, name, bytes).await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "upload of {name} refused"
    );
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/reference-images/{}", body["id"].as_str().unwrap())
    );
    body
}

async fn delete(app: &TestApp, token: &str, id: &str) -> Response {
    app.client
        .delete(app.url(&format!("/v1/reference-images/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn object_key(app: &TestApp, id: &str) -> Option<String> {
    let id: Uuid = id.parse().unwrap();
    app.db
        .client()
        .await
        .query_opt(
            "SELECT object_key FROM reference_images WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

/// Asserts the user has no reference-image row and no object under their prefix.
async fn assert_nothing_stored(app: &TestApp, user: &TestUser) {
    let user_id: Uuid = user.id.parse().unwrap();
    let rows: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM reference_images WHERE user_id = $1",
            &[&user_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "no row is written");
    let objects = app
        .state
        .store
        .list(&format!("users/{}/", user.id))
        .await
        .unwrap();
    assert!(objects.is_empty(), "no object is stored: {objects:?}");
}

/// Asserts a 422 problem naming `file`; returns its message.
async fn assert_file_invalid(res: Response) -> String {
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "file");
    problem["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string()
}

// ---- tests ----------------------------------------------------------------------------

#[tokio::test]
async fn png_jpeg_and_webp_are_stored_with_their_dimensions() {
    let app = app().await;
    let user = app.register_user().await;
    for (name, bytes, content_type, ext) in [
        ("a.png", png(64, 48), "image/png", "png"),
        ("b.jpg", jpeg(50, 40), "image/jpeg", "jpg"),
        ("c.webp", webp(32, 20), "image/webp", "webp"),
    ] {
        let (width, height) = image::load_from_memory(&bytes)
            .map(|i| (i.width(), i.height()))
            .unwrap();
        let body = upload_ok(&app, &user.access_token, name, bytes).await;
        assert_eq!(body["width"], width, "{name}");
        assert_eq!(body["height"], height, "{name}");
        assert_eq!(body["content_type"], content_type, "{name}");
        assert!(body["created_at"].is_string());

        let id = body["id"].as_str().unwrap();
        let key = object_key(&app, id).await.expect("the row exists");
        assert_eq!(key, format!("users/{}/references/{id}.{ext}", user.id));
        let meta = app.state.store.head(&key).await.expect("the object exists");
        assert_eq!(
            meta.content_length,
            body["bytes"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(meta.content_type.as_deref(), Some(content_type));
    }
}

#[tokio::test]
async fn exif_gps_metadata_is_stripped_and_the_link_downloads_the_image() {
    let app = app().await;
    let user = app.register_user().await;
    let original = jpeg_with_gps_exif();
    assert!(
        original.windows(4).any(|w| w == b"Exif"),
        "the fixture carries EXIF"
    );

    // An integrator's API key may upload, read and delete too.
    let (_, key) = app.issue_api_key(&user.access_token, "uploader").await;
    let body = upload_ok(&app, &key, "gps.jpg", original).await;
    let id = body["id"].as_str().unwrap();

    let res = app
        .get_auth(&format!("/v1/reference-images/{id}"), &key)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let detail: Value = res.json().await.unwrap();
    assert_eq!(detail["id"], id);
    // The orientation tag is applied to the pixels before it is dropped: upright, 30x40.
    assert_eq!(
        (detail["width"].as_u64(), detail["height"].as_u64()),
        (Some(30), Some(40))
    );
    let expires: chrono::DateTime<chrono::Utc> =
        detail["url_expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expires > chrono::Utc::now());

    let stored = reqwest::get(detail["url"].as_str().unwrap())
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, body["bytes"].as_u64().unwrap());
    assert!(stored.starts_with(&[0xFF, 0xD8, 0xFF]), "still a JPEG");
    assert!(
        !stored.windows(4).any(|w| w == b"Exif"),
        "no EXIF segment is kept"
    );
    assert!(
        !stored.windows(3).any(|w| w == b"GPS"),
        "no GPS data is kept"
    );
    let decoded = image::load_from_memory(&stored).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (30, 40));

    // What the generation worker reads: the same bytes, for the owner only.
    let user_id: Uuid = user.id.parse().unwrap();
    let image_id: Uuid = id.parse().unwrap();
    let mut conn = app.state.pool.get().await.unwrap();
    let (bytes, content_type) =
        reference_images::load(&mut conn, app.state.store.as_ref(), user_id, image_id)
            .await
            .unwrap();
    assert_eq!((bytes, content_type.as_str()), (stored, "image/jpeg"));
    let err = reference_images::load(
        &mut conn,
        app.state.store.as_ref(),
        Uuid::now_v7(),
        image_id,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "not_found");
    drop(conn);

    assert_eq!(
        delete(&app, &key, id).await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn other_formats_and_broken_images_store_nothing() {
    let app = app().await;
    let user = app.register_user().await;
    let token = &user.access_token;

    for (name, bytes) in [
        ("anim.gif", b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;".to_vec()),
        ("notes.png", b"just some text, named like an image".to_vec()),
    ] {
        let res = upload(&app, token, name, bytes).await;
        assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{name}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "unsupported_media_type");
    }

    let whole = png(64, 48);
    let message = assert_file_invalid(
        upload(&app, token, "cut.png", whole[..whole.len() / 2].to_vec()).await,
    )
    .await;
    assert!(message.contains("PNG"), "{message}");

    let message = assert_file_invalid(upload(&app, token, "empty.png", Vec::new()).await).await;
    assert!(message.contains("empty"), "{message}");

    // Not multipart at all, and multipart without a `file` part.
    let res = app
        .client
        .post(app.url("/v1/reference-images"))
        .bearer_auth(token)
        .header("content-type", "image/png")
        .body(png(8, 8))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let res = app
        .client
        .post(app.url("/v1/reference-images"))
        .bearer_auth(token)
        .multipart(Form::new().text("image", "nope"))
        .send()
        .await
        .unwrap();
    assert_file_invalid(res).await;

    // Unauthenticated.
    let res = app
        .client
        .post(app.url("/v1/reference-images"))
        .multipart(Form::new().part("file", Part::bytes(png(8, 8))))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    assert_nothing_stored(&app, &user).await;
}

#[tokio::test]
async fn decompression_bombs_are_refused_from_the_header() {
    let app = app().await;
    let user = app.register_user().await;
    let bomb = png_bomb(50_000, 50_000);
    assert!(bomb.len() < 100, "the bomb is tiny: {} bytes", bomb.len());
    let res = upload(&app, &user.access_token, "bomb.png", bomb).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "image_too_large");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("50000x50000 pixels"), "{detail}");
    assert_nothing_stored(&app, &user).await;
}

#[tokio::test]
async fn uploads_over_the_cap_are_refused_with_413() {
    let app = app().await;
    let user = app.register_user().await;
    let mut big = b"\x89PNG\r\n\x1a\n".to_vec();
    big.resize(2 * MAX_UPLOAD_BYTES, 0);
    let res = upload(&app, &user.access_token, "big.png", big).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "payload_too_large");

    // Parts other than `file` are not kept, but they count toward the cap.
    let form = Form::new()
        .text("padding", "x".repeat(MAX_UPLOAD_BYTES + 1))
        .part("file", Part::bytes(png(8, 8)));
    let res = app
        .client
        .post(app.url("/v1/reference-images"))
        .bearer_auth(&user.access_token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);

    assert_nothing_stored(&app, &user).await;
}

#[tokio::test]
async fn only_the_owner_reads_and_deletes_and_delete_removes_the_object() {
    let app = app().await;
    let owner = app.register_user().await;
    let other = app.register_user().await;
    let body = upload_ok(&app, &owner.access_token, "mine.png", png(16, 16)).await;
    let id = body["id"].as_str().unwrap();
    let key = object_key(&app, id).await.unwrap();

    let path = format!("/v1/reference-images/{id}");
    assert_eq!(
        app.get_auth(&path, &other.access_token).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        delete(&app, &other.access_token, id).await.status(),
        StatusCode::NOT_FOUND
    );
    let listed: Value = app
        .get_auth("/v1/reference-images", &other.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"], Value::Array(vec![]));
    app.state.store.head(&key).await.expect("still stored");

    assert_eq!(
        delete(&app, &owner.access_token, id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert!(matches!(
        app.state.store.head(&key).await,
        Err(StorageError::NotFound)
    ));
    assert_eq!(object_key(&app, id).await, None);
    assert_eq!(
        app.get_auth(&path, &owner.access_token).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        delete(&app, &owner.access_token, id).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get_auth("/v1/reference-images/not-a-uuid", &owner.access_token)
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn the_list_is_paginated_newest_first() {
    let app = app().await;
    let user = app.register_user().await;
    let mut ids = Vec::new();
    for side in [8, 9, 10] {
        let body = upload_ok(&app, &user.access_token, "p.png", png(side, side)).await;
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    ids.reverse();

    let first: Value = app
        .get_auth("/v1/reference-images?limit=2", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    let page_ids: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(page_ids, [ids[0].as_str(), ids[1].as_str()]);
    assert_eq!(first["data"][0]["width"], 10);
    assert!(
        first["data"][0].get("url").is_none(),
        "lists carry no links"
    );
    let cursor = first["next_cursor"].as_str().expect("a next page");

    let second: Value = app
        .get_auth(
            &format!("/v1/reference-images?limit=2&cursor={cursor}"),
            &user.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["data"].as_array().unwrap().len(), 1);
    assert_eq!(second["data"][0]["id"], ids[2].as_str());
    assert!(second["next_cursor"].is_null());
}

#[tokio::test]
async fn uploads_larger_than_the_json_body_limit_are_accepted_under_the_default_cap() {
    let app = spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    // Noise does not compress: about 1.7 MB of PNG, past the 1 MiB JSON limit.
    let mut seed = 0x2545_F491_u32;
    let noise = RgbImage::from_fn(800, 700, |_, _| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let [r, g, b, _] = seed.to_le_bytes();
        image::Rgb([r, g, b])
    });
    let bytes = encode(&DynamicImage::ImageRgb8(noise), ImageFormat::Png);
    assert!(bytes.len() > 1_100_000, "{} bytes", bytes.len());
    let body = upload_ok(&app, &user.access_token, "noise.png", bytes).await;
    assert_eq!(
        (body["width"].as_u64(), body["height"].as_u64()),
        (Some(800), Some(700))
    );
}
