//! One contract for both object-store backends (s3s-fs and a local directory), plus the
//! local store's signed-download route and a proof that the S3 client's signatures are checked.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gptimage2::{
    config::{S3Config, Secret, StorageConfig},
    storage::{ByteStream, ObjectStore, StorageError, bytes_stream, collect, s3::S3Store, signing},
};
use gptimage2_tests::{AppOptions, Storage, TestApp, s3, spawn_app_with};
use sha2::{Digest, Sha256};
use url::Url;

async fn app(storage: Storage) -> TestApp {
    spawn_app_with(AppOptions {
        storage,
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn s3_backend_meets_the_contract() {
    let app = app(Storage::S3).await;
    assert_eq!(app.state.store.backend(), "s3");
    contract(&app).await;

    // The API's own download route is for the local store only.
    let expires = chrono::Utc::now().timestamp() + 60;
    let sig = signing::sign(
        &app.state.config.url_signing_key,
        signing::Purpose::DownloadUrl,
        "share/pic.png",
        expires,
    );
    let res = app
        .get(&format!(
            "/files/share/pic.png?expires={expires}&signature={sig}"
        ))
        .await;
    assert_eq!(res.status(), 404);

    // Bodies up to one part go up in one PutObject, bigger ones as multipart uploads
    // (whose ETag ends in `-<parts>`).
    let bucket = match &app.state.config.storage {
        StorageConfig::S3(s3) => s3.bucket.clone(),
        StorageConfig::Local { .. } => unreachable!(),
    };
    let raw = raw_s3_client();
    let store = app.state.store.as_ref();
    for (key, len, parts) in [
        ("etag/small", 1024, None),
        ("etag/nine-mib", 9 * 1024 * 1024, Some(2)),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<_> = data
            .chunks(65_536)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body: ByteStream = Box::pin(futures::stream::iter(chunks));
        assert_eq!(
            store
                .put(key, "application/octet-stream", body)
                .await
                .unwrap(),
            len as u64
        );
        let head = raw
            .head_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let etag = head.e_tag().unwrap().trim_matches('"').to_string();
        assert_eq!(
            etag.split_once('-').map(|(_, n)| n.parse::<i32>().unwrap()),
            parts,
            "{key}: ETag {etag}"
        );
        assert_eq!(head.content_length(), Some(len as i64));
    }
}

/// A plain SDK client on the test server, to look behind the store.
pub(crate) fn raw_s3_client() -> aws_sdk_s3::Client {
    let env = s3::env();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(env.endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            env.access_key,
            env.secret_key,
            None,
            None,
            "test",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[tokio::test]
async fn local_backend_meets_the_contract() {
    let app = app(Storage::Local).await;
    assert_eq!(app.state.store.backend(), "local");
    contract(&app).await;
    local_download_route(&app).await;

    // Uploads in progress live in tmp/; none are left behind, not even by failed puts.
    let dir = &app.storage_dir.as_ref().unwrap().0;
    assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    // Metadata sidecars live in their own tree and never show up as keys.
    assert!(dir.join("meta/share/pic.png").is_file());
    assert_eq!(
        app.state.store.list("share/").await.unwrap(),
        ["share/pic.png", "share/pid.png"]
    );
}

/// What every backend must do, through the trait only (and plain HTTP for signed URLs).
async fn contract(app: &TestApp) {
    let store = app.state.store.as_ref();
    store.check().await.expect("the store is ready");

    // Round trip, with content type and length.
    let key = "users/u1/images/a.png";
    assert_eq!(
        store
            .put(key, "image/png", bytes_stream(&b"first version"[..]))
            .await
            .unwrap(),
        13
    );
    let (meta, body) = get_all(store, key).await;
    assert_eq!(meta.content_length, 13);
    assert_eq!(meta.content_type.as_deref(), Some("image/png"));
    assert_eq!(body, &b"first version"[..]);

    // Overwrite replaces bytes and content type.
    store
        .put(key, "text/plain", bytes_stream(&b"v2"[..]))
        .await
        .unwrap();
    let (meta, body) = get_all(store, key).await;
    assert_eq!(
        (meta.content_length, meta.content_type.as_deref()),
        (2, Some("text/plain"))
    );
    assert_eq!(body, &b"v2"[..]);
    let head = store.head(key).await.unwrap();
    assert_eq!(
        (head.content_length, head.content_type.as_deref()),
        (2, Some("text/plain"))
    );

    // An empty object is an object.
    store
        .put(
            "users/u1/empty",
            "application/octet-stream",
            bytes_stream(Bytes::new()),
        )
        .await
        .unwrap();
    assert_eq!(
        store.head("users/u1/empty").await.unwrap().content_length,
        0
    );

    big_streamed_object(store).await;
    failed_put_changes_nothing(store).await;

    // Missing keys.
    assert!(matches!(
        store.get("users/u1/nope.png").await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        store.head("users/u1/nope.png").await,
        Err(StorageError::NotFound)
    ));

    // Delete, twice.
    store.delete(key).await.unwrap();
    assert!(matches!(store.get(key).await, Err(StorageError::NotFound)));
    assert!(matches!(store.head(key).await, Err(StorageError::NotFound)));
    store
        .delete(key)
        .await
        .expect("deleting a missing object succeeds");

    list_and_delete_prefix(store).await;
    invalid_keys_are_rejected(store).await;
    signed_urls(app).await;
}

async fn get_all(store: &dyn ObjectStore, key: &str) -> (gptimage2::storage::ObjectMeta, Bytes) {
    let object = store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:#}"));
    (object.meta, collect(object.body).await.unwrap())
}

const BIG: usize = 20 * 1024 * 1024;

/// 20 MiB in odd-sized chunks (so parts never align with them), never held whole.
fn big_body() -> impl Iterator<Item = Bytes> {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        if offset >= BIG {
            return None;
        }
        let len = 65_537.min(BIG - offset);
        let chunk: Vec<u8> = (offset..offset + len)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        offset += len;
        Some(Bytes::from(chunk))
    })
}

async fn big_streamed_object(store: &dyn ObjectStore) {
    let mut expected = Sha256::new();
    big_body().for_each(|c| expected.update(&c));
    let expected = hex::encode(expected.finalize());

    let body: ByteStream = Box::pin(futures::stream::iter(big_body().map(Ok)));
    let written = store
        .put("big/object.bin", "application/octet-stream", body)
        .await
        .unwrap();
    assert_eq!(written, BIG as u64);
    assert_eq!(
        store.head("big/object.bin").await.unwrap().content_length,
        BIG as u64
    );

    let mut object = store.get("big/object.bin").await.unwrap();
    assert_eq!(object.meta.content_length, BIG as u64);
    assert_eq!(
        object.meta.content_type.as_deref(),
        Some("application/octet-stream")
    );
    let (mut hasher, mut read) = (Sha256::new(), 0usize);
    while let Some(chunk) = object.body.next().await {
        let chunk = chunk.unwrap();
        read += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(read, BIG);
    assert_eq!(
        hex::encode(hasher.finalize()),
        expected,
        "the big object comes back identical"
    );
    store.delete("big/object.bin").await.unwrap();
}

/// A body that breaks half-way (client gone) fails the put and leaves the old version.
async fn failed_put_changes_nothing(store: &dyn ObjectStore) {
    fn breaking_body() -> ByteStream {
        // ~9.8 MiB, then an error: past the first multipart part on S3.
        let good = big_body().take(150).map(Ok);
        let bad = std::iter::once(Err(std::io::Error::other("client went away")));
        Box::pin(futures::stream::iter(good.chain(bad)))
    }
    store
        .put("fail/old.txt", "text/plain", bytes_stream("old"))
        .await
        .unwrap();
    let err = store
        .put("fail/old.txt", "text/plain", breaking_body())
        .await
        .expect_err("a broken body fails");
    assert!(format!("{err:#}").contains("client went away"), "{err:#}");
    assert_eq!(get_all(store, "fail/old.txt").await.1, "old");
    assert!(
        store
            .put("fail/new.bin", "text/plain", breaking_body())
            .await
            .is_err()
    );
    assert!(matches!(
        store.head("fail/new.bin").await,
        Err(StorageError::NotFound)
    ));
    assert_eq!(store.delete_prefix("fail/").await.unwrap(), 1);
}

async fn list_and_delete_prefix(store: &dyn ObjectStore) {
    for key in [
        "p/a/1.txt",
        "p/a/2.txt",
        "p/a/sub/3.txt",
        "p/ab/4.txt",
        "p/b/5.txt",
    ] {
        store
            .put(key, "text/plain", bytes_stream(key.to_string()))
            .await
            .unwrap();
    }
    assert_eq!(
        store.list("p/a/").await.unwrap(),
        ["p/a/1.txt", "p/a/2.txt", "p/a/sub/3.txt"]
    );
    // A prefix is a string prefix, not a directory.
    assert_eq!(
        store.list("p/a").await.unwrap(),
        ["p/a/1.txt", "p/a/2.txt", "p/a/sub/3.txt", "p/ab/4.txt"]
    );
    assert!(store.list("nothing/here/").await.unwrap().is_empty());

    assert_eq!(store.delete_prefix("p/a/").await.unwrap(), 3);
    assert_eq!(
        store.list("p/").await.unwrap(),
        ["p/ab/4.txt", "p/b/5.txt"],
        "other prefixes survive"
    );
    assert_eq!(store.delete_prefix("p/a/").await.unwrap(), 0);
    let (_, body) = get_all(store, "p/ab/4.txt").await;
    assert_eq!(body, "p/ab/4.txt");
    // A key can be written again under a prefix that was emptied.
    store
        .put("p/a/1.txt", "text/plain", bytes_stream("again"))
        .await
        .unwrap();
    assert_eq!(store.delete_prefix("p/").await.unwrap(), 3);
    assert!(store.list("p/").await.unwrap().is_empty());
}

async fn invalid_keys_are_rejected(store: &dyn ObjectStore) {
    fn invalid<T>(result: Result<T, StorageError>) -> bool {
        matches!(result, Err(StorageError::InvalidKey(_)))
    }
    for bad in [
        "../escape",
        "a/../../b",
        "/abs",
        "a//b",
        "sp ace",
        "trail/",
        "",
    ] {
        assert!(
            invalid(store.put(bad, "text/plain", bytes_stream("x")).await),
            "put {bad:?}"
        );
        assert!(invalid(store.get(bad).await), "get {bad:?}");
        assert!(invalid(store.head(bad).await), "head {bad:?}");
        assert!(invalid(store.delete(bad).await), "delete {bad:?}");
        assert!(
            invalid(store.signed_get_url(bad, Duration::from_secs(60)).await),
            "sign {bad:?}"
        );
    }
    for bad in ["", "/", "../", "a//"] {
        assert!(invalid(store.list(bad).await), "list {bad:?}");
        assert!(
            invalid(store.delete_prefix(bad).await),
            "delete_prefix {bad:?}"
        );
    }
}

/// Signed URLs work for anyone holding them, and only as issued.
async fn signed_urls(app: &TestApp) {
    let store = app.state.store.as_ref();
    store
        .put(
            "share/pic.png",
            "image/png",
            bytes_stream(&b"picture bytes"[..]),
        )
        .await
        .unwrap();
    // A neighbour that exists, so a swapped key fails on the signature, not on a 404.
    store
        .put(
            "share/pid.png",
            "image/png",
            bytes_stream(&b"other bytes"[..]),
        )
        .await
        .unwrap();

    let url = store
        .signed_get_url("share/pic.png", Duration::from_secs(300))
        .await
        .unwrap();
    let res = app.client.get(url.clone()).send().await.unwrap();
    assert_eq!(res.status(), 200, "{url}");
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.bytes().await.unwrap(), &b"picture bytes"[..]);

    // Control: the URL rebuilt by the tampering helper, unchanged, still works.
    let same = with_params(&url, |_, v| v.to_string());
    assert_eq!(app.client.get(same).send().await.unwrap().status(), 200);

    let tampered = [
        (
            "signature",
            with_params(&url, |k, v| {
                if k.eq_ignore_ascii_case("signature") || k == "X-Amz-Signature" {
                    let flipped = if v.ends_with('0') { '1' } else { '0' };
                    format!("{}{flipped}", &v[..v.len() - 1])
                } else {
                    v.to_string()
                }
            }),
        ),
        (
            "expiry",
            with_params(&url, |k, v| {
                if k == "expires" || k == "X-Amz-Expires" {
                    (v.parse::<i64>().unwrap() + 3600).to_string()
                } else {
                    v.to_string()
                }
            }),
        ),
        ("key", {
            let mut u = url.clone();
            u.set_path(&url.path().replace("pic.png", "pid.png"));
            u
        }),
    ];
    for (what, bad) in tampered {
        assert_ne!(bad, url);
        let res = app.client.get(bad.clone()).send().await.unwrap();
        assert_eq!(res.status(), 403, "tampered {what}: {bad}");
    }

    let short = store
        .signed_get_url("share/pic.png", Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let res = app.client.get(short.clone()).send().await.unwrap();
    assert_eq!(res.status(), 403, "expired: {short}");
}

/// `url` with every query value passed through `f`.
fn with_params(url: &Url, f: impl Fn(&str, &str) -> String) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_string(), f(&k, &v)))
        .collect();
    let mut out = url.clone();
    out.query_pairs_mut().clear().extend_pairs(pairs);
    out
}

async fn local_download_route(app: &TestApp) {
    let store = app.state.store.as_ref();
    let url = store
        .signed_get_url("share/pic.png", Duration::from_secs(120))
        .await
        .unwrap();
    assert!(
        url.as_str()
            .starts_with(&format!("{}/files/share/pic.png?", app.address)),
        "{url}"
    );
    let res = app.client.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["content-length"], "13");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let max_age: i64 = headers["cache-control"]
        .to_str()
        .unwrap()
        .strip_prefix("private, max-age=")
        .unwrap()
        .parse()
        .unwrap();
    assert!((110..=120).contains(&max_age), "max-age {max_age}");
    assert_eq!(res.bytes().await.unwrap(), &b"picture bytes"[..]);

    // Failures are problem+json.
    let expires = chrono::Utc::now().timestamp() + 60;
    let good = signing::sign(
        &app.state.config.url_signing_key,
        signing::Purpose::DownloadUrl,
        "share/pic.png",
        expires,
    );
    let bad = format!(
        "{}{}",
        &good[..good.len() - 1],
        if good.ends_with('0') { '1' } else { '0' }
    );
    for path in [
        format!("/files/share/pic.png?expires={expires}&signature={bad}"),
        format!("/files/share/pic.png?expires={expires}&signature=nothex"),
        format!("/files/share/pic.png?expires={expires}"),
        "/files/share/pic.png".to_string(),
        format!(
            "/files/share/pic.png?expires={}&signature={good}",
            expires + 1
        ),
    ] {
        let res = app.get(&path).await;
        assert_eq!(res.status(), 403, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["code"], "forbidden", "{path}: {body}");
        assert_eq!(body["status"], 403);
    }

    // A valid signature for a missing object: 404, also problem+json.
    let url = store
        .signed_get_url("share/missing.png", Duration::from_secs(60))
        .await
        .unwrap();
    let res = app.client.get(url).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    // An expired link says so.
    let past = chrono::Utc::now().timestamp() - 1;
    let sig = signing::sign(
        &app.state.config.url_signing_key,
        signing::Purpose::DownloadUrl,
        "share/pic.png",
        past,
    );
    let res = app
        .get(&format!(
            "/files/share/pic.png?expires={past}&signature={sig}"
        ))
        .await;
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}

fn s3_config(bucket: &str, secret: &str, create_bucket: bool) -> S3Config {
    let env = s3::env();
    S3Config {
        endpoint: Some(env.endpoint),
        region: "us-east-1".into(),
        bucket: bucket.into(),
        access_key_id: Some(env.access_key),
        secret_access_key: Some(Secret::new(secret)),
        path_style: true,
        create_bucket,
    }
}

#[tokio::test]
async fn s3_store_with_a_wrong_secret_fails_its_check() {
    // The bucket exists, so only the signature can make the check fail.
    let bucket = s3::fresh_bucket_name();
    let good = S3Store::new(&s3_config(&bucket, &s3::env().secret_key, true))
        .await
        .expect("creates the bucket");
    good.check().await.expect("the right secret passes");

    let wrong = S3Store::new(&s3_config(&bucket, "not-the-secret-key-0123456789", false))
        .await
        .unwrap();
    let err = wrong
        .check()
        .await
        .expect_err("a wrong secret must fail the check");
    let message = format!("{err:#}");
    assert!(
        message.contains("S3 HeadBucket") && message.contains("403"),
        "{message}"
    );
    let put = wrong.put("x/y.txt", "text/plain", bytes_stream("x")).await;
    assert!(
        matches!(put, Err(StorageError::Other(_))),
        "a wrongly signed put fails too"
    );
    assert!(
        matches!(good.get("x/y.txt").await, Err(StorageError::NotFound)),
        "and wrote nothing"
    );
}
