//! Attacks: see `security.rs`. Here: the lockout and the client address it is keyed by, the
//! metrics endpoint, and the read cache's invalidations.

use std::time::Duration;

use gptimage2_tests::{AppOptions, TestApp, eventually, spawn_app_with, users::PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn app_with(env: &[(&str, &str)]) -> TestApp {
    spawn_app_with(AppOptions {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .await
}

async fn login(app: &TestApp, email: &str, password: &str, forwarded: &[&str]) -> StatusCode {
    let mut req = app.client.post(app.url("/v1/auth/login"));
    for value in forwarded {
        req = req.header("x-forwarded-for", *value);
    }
    req.json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("request sent")
        .status()
}

/// Deleting `lice…@example.com` used to delete every rate-limit row whose key contained that
/// text, `alice…@example.com`'s lockout included: an attacker guessing alice's password
/// registers and deletes look-alike accounts to get fresh guesses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_lookalike_account_resets_the_victims_lockout() {
    let app = app_with(&[("GI2_MAX_FAILED_LOGINS", "3")]).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let victim = app
        .register_with(&format!("alice{tag}@example.com"), PASSWORD, "Alice")
        .await;
    for _ in 0..3 {
        assert_eq!(
            login(&app, &victim.email, "guess guess guess", &[]).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(&app, &victim.email, PASSWORD, &[]).await,
        StatusCode::TOO_MANY_REQUESTS,
        "locked out"
    );

    let lookalike = app
        .register_with(&format!("lice{tag}@example.com"), PASSWORD, "Mallory")
        .await;
    let res = app
        .client
        .delete(app.url("/v1/me"))
        .bearer_auth(&lookalike.access_token)
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    eventually(
        "the look-alike account erased",
        Duration::from_secs(20),
        || async {
            (app.count(&format!(
                "SELECT count(*) FROM users WHERE id = '{}'",
                lookalike.id
            ))
            .await
                == 0)
                .then_some(())
        },
    )
    .await;

    assert_eq!(
        login(&app, &victim.email, PASSWORD, &[]).await,
        StatusCode::TOO_MANY_REQUESTS,
        "erasing another account left the victim's lockout alone"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM rate_limits WHERE key ILIKE '%{tag}%' OR subject ILIKE '%{tag}%'"
        ))
        .await,
        0,
        "rate-limit rows hold no address"
    );
}

/// Behind a proxy that appends the address it sees to `X-Forwarded-For`, the leftmost value is
/// the client's own text: a fresh one per guess used to make a fresh lockout window.
#[tokio::test]
async fn spoofed_leftmost_forwarded_for_escapes_the_lockout() {
    let app = app_with(&[
        ("GI2_MAX_FAILED_LOGINS", "3"),
        ("GI2_TRUST_FORWARDED_FOR", "true"),
    ])
    .await;
    let user = app.register_user().await;
    // What the proxy saw: always the attacker's one address, appended last.
    let proxy_saw = "198.51.100.66";
    let mut last = StatusCode::OK;
    for n in 0..6 {
        let spoofed = format!("203.0.113.{n}, {proxy_saw}");
        last = login(&app, &user.email, "guess guess guess", &[&spoofed]).await;
    }
    assert_eq!(
        last,
        StatusCode::TOO_MANY_REQUESTS,
        "the address the proxy saw is locked out, whatever the client wrote before it"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM activity_events WHERE ip LIKE '203.0.113.%'")
            .await,
        0,
        "the client's own text is not recorded as its address"
    );
    // Someone else behind the same proxy still signs in.
    assert_eq!(
        login(&app, &user.email, PASSWORD, &["198.51.100.7"]).await,
        StatusCode::OK
    );
}

/// Text that is no address, in `X-Forwarded-For`, used to be stored as the client's IP (on
/// the session, in the security log, and in the new-device mail).
#[tokio::test]
async fn free_text_in_forwarded_for_is_stored_as_the_ip() {
    let app = app_with(&[("GI2_TRUST_FORWARDED_FOR", "true")]).await;
    let user = app.register_user().await;
    let forged = "Your account is suspended, call +1-555-0100";
    assert_eq!(
        login(&app, &user.email, "guess guess guess", &[forged]).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, &user.email, PASSWORD, &[forged]).await,
        StatusCode::OK
    );
    // Several headers are one list: the last value of the last header is the proxy's.
    assert_eq!(
        login(&app, &user.email, PASSWORD, &[forged, "198.51.100.9"]).await,
        StatusCode::OK
    );
    let client = app.db.client().await;
    let mut ips: Vec<Option<String>> = Vec::new();
    for sql in [
        "SELECT ip FROM sessions",
        "SELECT last_ip FROM sessions",
        "SELECT ip FROM activity_events",
        "SELECT ip FROM consents",
    ] {
        for row in client.query(sql, &[]).await.unwrap() {
            ips.push(row.get(0));
        }
    }
    for ip in ips.iter().flatten() {
        assert!(
            ip.parse::<std::net::IpAddr>().is_ok(),
            "{ip:?} is stored as an IP"
        );
    }
    assert!(
        ips.iter().flatten().any(|ip| ip == "198.51.100.9"),
        "the proxy's own entry is used: {ips:?}"
    );
}

fn series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("gptimage2_http_"))
        .collect()
}

/// Every made-up method used to be a label value of its own: a series each on `/metrics`,
/// kept for the life of the process.
#[tokio::test]
async fn made_up_http_methods_add_metric_series() {
    let app = app_with(&[]).await;
    // Every series a legitimate client makes here exists before counting, /metrics' own too.
    for path in ["/healthz", "/no/such/route", "/metrics"] {
        assert!(app.get(path).await.status().as_u16() < 500);
    }
    let before = series(&app.get("/metrics").await.text().await.unwrap()).len();
    for n in 0..200 {
        let method = Method::from_bytes(format!("BREW{n}").as_bytes()).unwrap();
        let path = if n % 2 == 0 {
            "/healthz".to_string()
        } else {
            format!("/no/such/route/{n}")
        };
        let res = app
            .client
            .request(method, app.url(&path))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error());
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(!text.contains("BREW"), "a made-up method is no label value");
    let after = series(&text).len();
    assert!(
        after <= before + 40,
        "200 made-up methods made {} new series",
        after - before
    );
}

/// `/metrics` tells anyone the traffic, the queue and the pool; with a token configured it
/// answers only its holder.
#[tokio::test]
async fn anonymous_caller_reads_protected_metrics() {
    let token = "metrics-token-0123456789abcdef0123";
    let app = app_with(&[("GI2_METRICS_TOKEN", token)]).await;
    for auth in [None, Some("wrong-token"), Some("")] {
        let mut req = app.client.get(app.url("/metrics"));
        if let Some(auth) = auth {
            req = req.bearer_auth(auth);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "with {auth:?}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "unauthorized");
    }
    let res = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("gptimage2_http_requests_total")
    );
}

/// With a separate metrics listener, the public one does not serve `/metrics` at all.
#[tokio::test]
async fn anonymous_caller_reads_metrics_moved_to_their_own_listener() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = free.local_addr().unwrap();
    drop(free);
    let app = app_with(&[("GI2_METRICS_BIND", &metrics_addr.to_string())]).await;
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    let res = app
        .client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("gptimage2_http_requests_total")
    );
    let other = app
        .client
        .get(format!("http://{metrics_addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND, "only /metrics there");
}

/// Any user's change (a sign-out, a generation) used to empty every user's cached reads:
/// one account changing in a loop keeps every other request on the database.
#[tokio::test]
async fn one_users_changes_flush_every_users_cached_reads() {
    let app = spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let a = app.register_user().await;
    let b = app.register_user().await;
    let list = "/v1/generations?limit=20";
    app.until_cached(&b.access_token, list, "page").await;

    // A change to A's credentials, made by another process: A's session ends.
    let db = app.db.client().await;
    db.execute(
        &format!(
            "UPDATE sessions SET revoked_at = now() WHERE user_id = '{}'",
            a.id
        ),
        &[],
    )
    .await
    .unwrap();
    eventually("A's session refused", Duration::from_secs(5), || async {
        (app.get_auth("/v1/me", &a.access_token).await.status() == StatusCode::UNAUTHORIZED)
            .then_some(())
    })
    .await;
    let hits = app.cache_lookups("page", "hit").await;
    assert_eq!(
        app.get_auth(list, &b.access_token).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.cache_lookups("page", "hit").await,
        hits + 1,
        "B's list is still cached after A's credentials changed"
    );

    // A change to A's generations, made by another process.
    let c = app.register_user().await;
    app.grant_credits(&c.id, 1000).await;
    let res = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(&c.access_token)
        .json(&json!({"prompt": "a red fox", "size": "256x256", "quality": "low"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.until_cached(&c.access_token, list, "page").await;
    app.until_cached(&b.access_token, list, "page").await;
    db.execute(
        &format!(
            "UPDATE generations SET prompt = 'changed by hand' WHERE user_id = '{}'",
            c.id
        ),
        &[],
    )
    .await
    .unwrap();
    eventually("C's list changed", Duration::from_secs(5), || async {
        let page: Value = app
            .get_auth(list, &c.access_token)
            .await
            .json()
            .await
            .ok()?;
        (page["data"][0]["prompt"] == "changed by hand").then_some(())
    })
    .await;
    let (pages, sessions) = (
        app.cache_lookups("page", "hit").await,
        app.cache_lookups("session", "hit").await,
    );
    assert_eq!(
        app.get_auth(list, &b.access_token).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.cache_lookups("page", "hit").await,
        pages + 1,
        "B's list is still cached after C's generations changed"
    );
    assert!(
        app.cache_lookups("session", "hit").await > sessions,
        "B's session check is still cached"
    );
}
