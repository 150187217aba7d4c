//! The read cache (credential checks and generation pages kept in memory): it is used, a
//! change made through this server is seen by the very next request, and a change made by
//! another process or by hand in the database is seen once its notification arrives, also
//! after the notification connection was lost.

use std::time::Duration;

use gptimage2_tests::{AppOptions, TestApp, TestUser, eventually, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::generations::{app, submit, wait_for};

/// Polls `/v1/me` with `token` until it is refused (a change made elsewhere arrives by
/// notification).
async fn refused_soon(app: &TestApp, token: &str, what: &str) {
    eventually(what, Duration::from_secs(5), || async {
        (app.get_auth("/v1/me", token).await.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
}

async fn list(app: &TestApp, user: &TestUser) -> Value {
    let res = app
        .get_auth("/v1/generations?limit=20", &user.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"],
        "application/json",
        "the cached body keeps its type"
    );
    res.json().await.unwrap()
}

async fn funded_user(app: &TestApp) -> TestUser {
    let user = app.register_user().await;
    app.grant_credits(&user.id, 10_000).await;
    user
}

const SMALL: &str = r#"{"prompt":"a red fox","size":"256x256","quality":"low"}"#;

async fn submit_small(app: &TestApp, user: &TestUser) -> reqwest::Response {
    submit(
        app,
        &user.access_token,
        serde_json::from_str(SMALL).unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_submit_is_in_the_very_next_list() {
    let app = app(false).await;
    let user = funded_user(&app).await;
    app.until_cached(&user.access_token, "/v1/generations?limit=20", "page")
        .await;
    for n in 1..=15 {
        let res = submit_small(&app, &user).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let id = res.json::<Value>().await.unwrap()["id"].clone();
        let page = list(&app, &user).await;
        assert_eq!(page["data"].as_array().unwrap().len(), n);
        assert_eq!(page["data"][0]["id"], id, "submit {n} is first at once");
        // Served from memory again until the next change. The submit's own change
        // notification may arrive after the read above was kept, and rightly evicts it once:
        // so the same page is served from memory within a few reads, not necessarily the next.
        eventually(
            "the page served from memory again",
            Duration::from_secs(10),
            || async {
                let hits = app.cache_lookups("page", "hit").await;
                assert_eq!(list(&app, &user).await, page);
                (app.cache_lookups("page", "hit").await > hits).then_some(())
            },
        )
        .await;
    }
}

/// The write guard itself: while a signed-in change is in flight (its body still arriving),
/// the user's cached reads are not served, so none can be read between its commit and the
/// commit's notification.
#[tokio::test]
async fn nothing_cached_is_served_while_a_change_is_in_flight() {
    let app = app(false).await;
    let user = funded_user(&app).await;
    app.until_cached(&user.access_token, "/v1/generations?limit=20", "page")
        .await;
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    let (head, tail) = SMALL.split_at(10);
    tx.unbounded_send(Ok(head.as_bytes().to_vec())).unwrap();
    let pending = tokio::spawn(
        app.client
            .post(app.url("/v1/generations"))
            .bearer_auth(&user.access_token)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(rx))
            .send(),
    );
    // Once the server has authenticated the POST, reads of this user miss.
    eventually(
        "a read missing the cache",
        Duration::from_secs(10),
        || async {
            let misses = app.cache_lookups("page", "miss").await;
            list(&app, &user).await;
            (app.cache_lookups("page", "miss").await > misses).then_some(())
        },
    )
    .await;
    let hits = app.cache_lookups("page", "hit").await;
    for _ in 0..3 {
        assert!(
            list(&app, &user).await["data"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
    assert_eq!(
        app.cache_lookups("page", "hit").await,
        hits,
        "nothing served meanwhile"
    );
    tx.unbounded_send(Ok(tail.as_bytes().to_vec())).unwrap();
    drop(tx);
    let res = pending.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(list(&app, &user).await["data"].as_array().unwrap().len(), 1);
    app.until_cached(&user.access_token, "/v1/generations?limit=20", "page")
        .await;
}

#[tokio::test]
async fn what_the_worker_finished_is_in_the_very_next_list() {
    let app = app(true).await;
    let user = funded_user(&app).await;
    app.until_cached(&user.access_token, "/v1/generations?limit=20", "page")
        .await;
    for _ in 0..5 {
        let res = submit_small(&app, &user).await;
        let id = res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        // Poll the list as a client would, so it is cached while the worker runs.
        eventually(
            "the list shows it running or done",
            Duration::from_secs(20),
            || async {
                let page = list(&app, &user).await;
                (page["data"][0]["status"] != "queued").then_some(())
            },
        )
        .await;
        // Seen through the uncached single read: the list must agree immediately.
        let done = wait_for(&app, &user, &id, "succeeded").await;
        let page = list(&app, &user).await;
        assert_eq!(page["data"][0]["id"], id.as_str());
        assert_eq!(page["data"][0]["status"], "succeeded");
        assert_eq!(
            page["data"][0]["images"].as_array().unwrap().len(),
            done["images"].as_array().unwrap().len()
        );
    }
}

#[tokio::test]
async fn a_generation_changed_elsewhere_leaves_the_list_once_notified() {
    let app = app(false).await;
    let user = funded_user(&app).await;
    let res = submit_small(&app, &user).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.until_cached(&user.access_token, "/v1/generations?limit=20", "page")
        .await;
    assert_eq!(list(&app, &user).await["data"][0]["prompt"], "a red fox");
    // Another process (here: a plain SQL client) changes it.
    app.db
        .client()
        .await
        .execute("UPDATE generations SET prompt = 'changed elsewhere'", &[])
        .await
        .unwrap();
    eventually(
        "the list shows the change",
        Duration::from_secs(5),
        || async {
            (list(&app, &user).await["data"][0]["prompt"] == "changed elsewhere").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_password_reset_ends_cached_sessions_at_once() {
    let app = spawn_app_with(AppOptions::default()).await;
    let user = app.register_user().await;
    app.until_cached(&user.access_token, "/v1/me", "session")
        .await;
    let res = app
        .post_json("/v1/auth/password/forgot", &json!({"email": user.email}))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let token = app.mailed_token(&user.email, "/reset-password").await;
    let res = app
        .post_json(
            "/v1/auth/password/reset",
            &json!({"token": token, "password": "a brand new passphrase 42"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let me = app.get_auth("/v1/me", &user.access_token).await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
}

/// What another process (an operator's SQL, another API instance) changes must end a cached
/// credential: revoked sessions, disabled accounts, revoked keys.
#[tokio::test]
async fn credentials_changed_elsewhere_are_refused_once_notified() {
    let app = app(false).await;
    let cases = [
        (
            "UPDATE sessions SET revoked_at = now() WHERE user_id = $1",
            false,
        ),
        ("UPDATE users SET disabled_at = now() WHERE id = $1", false),
        (
            "UPDATE api_keys SET revoked_at = now() WHERE user_id = $1",
            true,
        ),
        (
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE user_id = $1",
            true,
        ),
    ];
    for (sql, with_key) in cases {
        let user = app.register_user().await;
        let token = if with_key {
            app.issue_api_key(&user.access_token, "cached").await.1
        } else {
            user.access_token.clone()
        };
        let kind = if with_key { "api_key" } else { "session" };
        app.until_cached(&token, "/v1/me", kind).await;
        let id: uuid::Uuid = user.id.parse().unwrap();
        let changed = app.db.client().await.execute(sql, &[&id]).await.unwrap();
        assert_eq!(changed, 1, "{sql}");
        refused_soon(&app, &token, sql).await;
    }
}

#[tokio::test]
async fn after_losing_its_notifications_the_cache_starts_afresh() {
    let app = app(false).await;
    let user = app.register_user().await;
    app.until_cached(&user.access_token, "/v1/me", "session")
        .await;
    let admin = app.db.client().await;
    // Cut the cache's LISTEN connection, and revoke while it may be reconnecting: the
    // notification is lost, so nothing cached before may be served after.
    let cut = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query = 'LISTEN gi2_changes'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cut, 1, "one listening connection");
    let id: uuid::Uuid = user.id.parse().unwrap();
    admin
        .execute(
            "UPDATE sessions SET revoked_at = now() WHERE user_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    eventually(
        "the revoked session refused",
        Duration::from_secs(5),
        || async {
            (app.get_auth("/v1/me", &user.access_token).await.status() == StatusCode::UNAUTHORIZED)
                .then_some(())
        },
    )
    .await;
    // And it listens again: a new session is cached, then its revocation is seen.
    let again = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": user.email, "password": user.password}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    let token = again.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    app.until_cached(&token, "/v1/me", "session").await;
    admin
        .execute(
            "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await
        .unwrap();
    eventually(
        "the second revocation seen",
        Duration::from_secs(5),
        || async {
            (app.get_auth("/v1/me", &token).await.status() == StatusCode::UNAUTHORIZED)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn with_the_cache_off_every_read_goes_to_the_database() {
    let app = spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        env: vec![("GI2_READ_CACHE_USERS".into(), "0".into())],
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    for _ in 0..5 {
        assert_eq!(
            app.get_auth("/v1/generations", &user.access_token)
                .await
                .status(),
            StatusCode::OK
        );
    }
    assert_eq!(app.cache_lookups("page", "hit").await, 0);
    assert_eq!(app.cache_lookups("session", "hit").await, 0);
    let listeners = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN gi2_changes'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(listeners, 0);
}
