//! API keys through HTTP: created by a session and shown once, stored hashed, usable as a
//! bearer on ordinary routes but not on account-security ones, revoked or expired at once.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use gptimage2_tests::{TestApp, spawn_app};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn create(app: &TestApp, token: &str, body: &Value) -> Response {
    app.client
        .post(app.url("/v1/me/api-keys"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn revoke(app: &TestApp, token: &str, id: &str) -> Response {
    app.client
        .delete(app.url(&format!("/v1/me/api-keys/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Every row of `table` as JSON text, to search for what must not be stored.
async fn dump(app: &TestApp, table: &str) -> String {
    app.db
        .client()
        .await
        .query_one(
            &format!("SELECT coalesce(string_agg(row_to_json(t)::text, '\n'), '') FROM {table} t"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn code(res: Response) -> String {
    res.json::<Value>().await.unwrap()["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_shown_once_stored_hashed_and_authenticates_its_owner() {
    let app = spawn_app().await;
    let user = app.register_user().await;
    let expires = (Utc::now() + TimeDelta::days(30)).to_rfc3339();
    let res = create(
        &app,
        &user.access_token,
        &json!({"name": "  CI pipeline ", "expires_at": expires, "daily_credit_limit": 500}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let created: Value = res.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("gi2_") && key.len() > 40, "{key}");
    assert_eq!(created["prefix"], key[..12]);
    assert_eq!(created["name"], "CI pipeline");
    assert_eq!(created["daily_credit_limit"], 500);
    assert!(created["last_used_at"].is_null());
    assert!(created["created_at"].is_string());
    let stored_expiry: chrono::DateTime<Utc> =
        serde_json::from_value(created["expires_at"].clone()).unwrap();
    assert_eq!(
        stored_expiry.timestamp(),
        chrono::DateTime::parse_from_rfc3339(&expires)
            .unwrap()
            .timestamp()
    );

    // The key works as its owner on ordinary routes.
    let me = app.get_auth("/v1/me", &key).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.json::<Value>().await.unwrap()["id"], user.id.as_str());
    let activity = app.get_auth("/v1/me/activity", &key).await;
    assert_eq!(activity.status(), StatusCode::OK);
    let activity: Value = activity.json().await.unwrap();
    let event = &activity["data"][0];
    assert_eq!(event["kind"], "api_key_created");
    assert_eq!(event["details"]["id"], id.as_str());
    assert_eq!(event["details"]["prefix"], key[..12]);

    // The list shows the prefix and the use, never the secret.
    let res = app.get_auth("/v1/me/api-keys", &user.access_token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(!text.contains(&key), "the list never shows the secret");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let listed = &list["data"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["prefix"], key[..12]);
    assert_eq!(listed["name"], "CI pipeline");
    assert_eq!(listed["daily_credit_limit"], 500);
    assert_eq!(listed["expired"], false);
    assert!(listed["last_used_at"].is_string(), "use is recorded");
    assert!(listed.get("key").is_none() && listed.get("key_hash").is_none());
    assert!(list["next_cursor"].is_null());

    // Only the hash is stored; the secret is in no table.
    let hash: Vec<u8> = app
        .db
        .client()
        .await
        .query_one("SELECT key_hash FROM api_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(hash, Sha256::digest(key.as_bytes()).to_vec());
    for table in ["api_keys", "activity_events", "outbox_mails", "jobs"] {
        assert!(
            !dump(&app, table).await.contains(&key),
            "the secret is stored in {table}"
        );
    }

    // The owner is told by mail, with the prefix only.
    let smtp = app.smtp.as_ref().unwrap();
    let mail = gptimage2_tests::eventually(
        "the api_key_created mail",
        Duration::from_secs(10),
        || async {
            smtp.received().into_iter().find(|m| {
                m.to == vec![user.email.clone()]
                    && m.header("Subject")
                        .is_some_and(|s| s.contains("API key was created"))
            })
        },
    )
    .await;
    let body = mail.text_body();
    assert!(body.contains(&key[..12]) && body.contains("CI pipeline"));
    assert!(!mail.data.contains(&key), "the mail never holds the secret");
}

#[tokio::test]
async fn keys_cannot_manage_account_security() {
    let app = spawn_app().await;
    let user = app.register_user().await;
    let (id, key) = app.issue_api_key(&user.access_token, "automation").await;

    let password = app
        .client
        .post(app.url("/v1/me/password"))
        .bearer_auth(&key)
        .json(&json!({"current_password": user.password, "password": "a brand new horse battery"}))
        .send()
        .await
        .unwrap();
    let sessions = app.get_auth("/v1/me/sessions", &key).await;
    let list = app.get_auth("/v1/me/api-keys", &key).await;
    let new_key = create(&app, &key, &json!({"name": "child"})).await;
    let delete = revoke(&app, &key, &id).await;
    for res in [password, sessions, list, new_key, delete] {
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{}", res.url());
        assert_eq!(code(res).await, "forbidden");
    }
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 1);
    assert_eq!(
        app.get_auth("/v1/me", &key).await.status(),
        StatusCode::OK,
        "the key survives its own revocation attempt"
    );
}

#[tokio::test]
async fn revoked_keys_are_refused_at_once_and_only_their_owner_revokes() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let (id, key) = app.issue_api_key(&owner.access_token, "laptop").await;
    assert_eq!(app.get_auth("/v1/me", &key).await.status(), StatusCode::OK);

    let res = revoke(&app, &stranger.access_token, &id).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "ids cannot be probed");
    assert_eq!(code(res).await, "not_found");
    let unknown = revoke(&app, &owner.access_token, &uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let malformed = revoke(&app, &owner.access_token, "not-a-uuid").await;
    assert_eq!(malformed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.get_auth("/v1/me", &key).await.status(), StatusCode::OK);

    let res = revoke(&app, &owner.access_token, &id).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let refused = app.get_auth("/v1/me", &key).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(code(refused).await, "invalid_api_key");
    assert_eq!(
        revoke(&app, &owner.access_token, &id).await.status(),
        StatusCode::NOT_FOUND,
        "already revoked"
    );

    let list: Value = app
        .get_auth("/v1/me/api-keys", &owner.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"], json!([]), "revoked keys are not listed");
    let activity: Value = app
        .get_auth("/v1/me/activity", &owner.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(activity["data"][0]["kind"], "api_key_revoked");
    assert_eq!(activity["data"][0]["details"]["id"], id.as_str());
    assert_eq!(
        app.count("SELECT count(*) FROM activity_events WHERE kind = 'api_key_revoked'")
            .await,
        1
    );
}

#[tokio::test]
async fn expired_keys_are_refused_and_flagged() {
    let app = spawn_app().await;
    let user = app.register_user().await;
    let expires = (Utc::now() + TimeDelta::hours(1)).to_rfc3339();
    let res = create(
        &app,
        &user.access_token,
        &json!({"name": "short-lived", "expires_at": expires}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let key = res.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.get_auth("/v1/me", &key).await.status(), StatusCode::OK);

    app.db
        .client()
        .await
        .execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    // Changed behind the server's back: its cached check ends when the change is notified.
    let refused = gptimage2_tests::eventually(
        "the expired key refused",
        std::time::Duration::from_secs(5),
        || async {
            let res = app.get_auth("/v1/me", &key).await;
            (res.status() == StatusCode::UNAUTHORIZED).then_some(res)
        },
    )
    .await;
    assert_eq!(code(refused).await, "invalid_api_key");

    let list: Value = app
        .get_auth("/v1/me/api-keys", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["expired"], true, "listed until revoked");
}

#[tokio::test]
async fn invalid_requests_create_nothing() {
    let app = spawn_app().await;
    let user = app.register_user().await;
    let past = (Utc::now() - TimeDelta::minutes(1)).to_rfc3339();
    let too_far = (Utc::now() + TimeDelta::days(367)).to_rfc3339();
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({}), "name"),
        (json!({"name": "k", "expires_at": past}), "expires_at"),
        (json!({"name": "k", "expires_at": too_far}), "expires_at"),
        (
            json!({"name": "k", "expires_at": "next tuesday"}),
            "expires_at",
        ),
        (
            json!({"name": "k", "daily_credit_limit": 0}),
            "daily_credit_limit",
        ),
        (
            json!({"name": "k", "daily_credit_limit": -5}),
            "daily_credit_limit",
        ),
        (
            json!({"name": "k", "daily_credit_limit": 1_000_001}),
            "daily_credit_limit",
        ),
        (json!({"name": "k", "scopes": ["all"]}), "scopes"),
    ];
    for (body, field) in cases {
        let res = create(&app, &user.access_token, &body).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed", "{body}");
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM activity_events WHERE kind = 'api_key_created'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox_mails WHERE template = 'api_key_created'")
            .await,
        0
    );

    // The bounds themselves are accepted.
    let edge = (Utc::now() + TimeDelta::days(364)).to_rfc3339();
    let res = create(
        &app,
        &user.access_token,
        &json!({"name": "x".repeat(100), "expires_at": edge, "daily_credit_limit": 1_000_000}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = create(
        &app,
        &user.access_token,
        &json!({"name": "k", "expires_at": null, "daily_credit_limit": 1}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn active_keys_are_capped_and_listed_newest_first() {
    let app = spawn_app().await;
    let user = app.register_user().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            app.issue_api_key(&user.access_token, &format!("key {i}"))
                .await
                .0,
        );
    }
    let res = create(&app, &user.access_token, &json!({"name": "one too many"})).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(code(res).await, "too_many_api_keys");
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 20);

    // Newest first, paged by cursor.
    let page: Value = app
        .get_auth("/v1/me/api-keys?limit=15", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    let first: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(first.len(), 15);
    assert_eq!(first[0], ids[19]);
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let rest: Value = app
        .get_auth(
            &format!("/v1/me/api-keys?limit=15&cursor={cursor}"),
            &user.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["data"].as_array().unwrap().len(), 5);
    assert_eq!(rest["data"][4]["id"], ids[0].as_str());
    assert!(rest["next_cursor"].is_null());

    // Revoking one, or one expiring, frees a place.
    assert_eq!(
        revoke(&app, &user.access_token, &ids[0]).await.status(),
        StatusCode::NO_CONTENT
    );
    app.issue_api_key(&user.access_token, "replacement").await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&uuid::Uuid::parse_str(&ids[1]).unwrap()],
        )
        .await
        .unwrap();
    app.issue_api_key(&user.access_token, "another").await;
    let res = create(&app, &user.access_token, &json!({"name": "over again"})).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
}
