//! Failures of what the service depends on, while it works.

use std::time::Duration;

use gptimage2_tests::{AppOptions, Served, spawn_app_with};
use serde_json::{Value, json};

/// The object store goes away while a generation is being stored: the job retries, then the
/// generation fails and its credits are released; nothing is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_outage_during_a_generation_releases_the_hold() {
    let mut server = gptimage2_tests::s3::PrivateServer::start().await;
    let mut env = server.app_env("faults-bucket");
    env.push(("GI2_JOB_BACKOFF_BASE_MS".into(), "50".into()));
    env.push(("GI2_JOB_POLL_MS".into(), "50".into()));
    let app = spawn_app_with(AppOptions {
        smtp: false,
        env,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 10).await;

    server.stop();
    let res = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(&user.access_token)
        .json(&json!({"prompt": "a fox", "size": "256x256", "quality": "low"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = gptimage2_tests::eventually(
        "the generation to fail",
        Duration::from_secs(60),
        || async {
            let g: Value = app
                .get_auth(&format!("/v1/generations/{id}"), &user.access_token)
                .await
                .json()
                .await
                .unwrap();
            (g["status"] == "failed").then_some(g)
        },
    )
    .await;
    assert_eq!(failed["error"]["code"], "internal_error");
    let attempts: i32 = app
        .db
        .client()
        .await
        .query_one("SELECT attempts FROM jobs WHERE kind = 'generate'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(attempts > 1, "the job was retried before giving up");
    let credits: Value = app
        .get_auth("/v1/credits", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (credits["available"].as_i64(), credits["held"].as_i64()),
        (Some(10), Some(0)),
        "nothing charged"
    );
    app.assert_ledger_invariants().await;
}

/// The database connection dies under a running request: that request gets a 503
/// problem (not a 500), and the next one is served on a fresh connection, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_connection_lost_mid_request_is_a_503_and_the_service_recovers() {
    let app = spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    // Hold the request inside the database: the profile query waits on this lock.
    let mut locker = app.db.client().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let request = {
        let client = app.client.clone();
        let url = app.url("/v1/me");
        let token = user.access_token.clone();
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await.unwrap() })
    };
    let admin = app.db.client().await;
    let waiting: i32 = gptimage2_tests::eventually(
        "the request waiting in the database",
        Duration::from_secs(10),
        || async {
            admin
                .query_opt(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
                     AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .map(|row| row.get(0))
        },
    )
    .await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&waiting])
        .await
        .unwrap();
    let res = request.await.unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "database_unavailable");
    lock.rollback().await.unwrap();

    // Recovered: the dead connection is discarded (at once, or on its next checkout once
    // its socket reports closed) and every request is served again.
    gptimage2_tests::eventually("a 200 again", Duration::from_secs(5), || async {
        let res = app.get_auth("/v1/me", &user.access_token).await;
        (res.status() == reqwest::StatusCode::OK).then_some(())
    })
    .await;
    for _ in 0..20 {
        let res = app.get_auth("/v1/me", &user.access_token).await;
        assert_eq!(res.status(), reqwest::StatusCode::OK);
    }
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
}

/// The process handling a Stripe webhook dies (SIGKILL) right after the grant committed, so
/// Stripe never saw a 2xx and delivers the event again: the retry is acknowledged and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_retried_after_the_handler_died_past_its_commit_pays_once() {
    use gptimage2_tests::stripe_fake::{StripeFake, event, now, paid_session};
    let fake = StripeFake::start().await;
    let db = gptimage2_tests::fresh_database().await;
    let dir = gptimage2_tests::tempfile_dir::TempDir::new();
    let mut env: Vec<(String, String)> = gptimage2_tests::base_env(&db).into_iter().collect();
    env.extend(fake.env());
    env.push(("GI2_STORAGE_DIR".into(), dir.0.display().to_string()));
    let mut first = Served::start(&["serve"], env.clone()).await;
    let client = reqwest::Client::new();

    let registered: Value = client
        .post(format!("{}/v1/auth/register", first.base))
        .json(&json!({ "email": "crash@example.com", "password": "correct horse battery", "name": "C" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap().to_string();
    // Buying needs a verified address.
    db.client()
        .await
        .execute("UPDATE users SET email_verified_at = now()", &[])
        .await
        .unwrap();
    let checkout: Value = client
        .post(format!("{}/v1/billing/checkout", first.base))
        .bearer_auth(&token)
        .json(&json!({ "provider": "stripe", "item_id": "pack_100",
                       "success_url": "http://spa.test/ok", "cancel_url": "http://spa.test/no" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session_id = checkout["checkout_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://checkout.stripe.com/c/pay/")
        .split('#')
        .next()
        .unwrap()
        .to_string();
    let paid = event(
        "checkout.session.completed",
        paid_session(fake.session(&session_id), 500, "usd"),
        None,
        now(),
    );
    let body = serde_json::to_string(&paid).unwrap();
    let deliver = |base: String, body: String, signature: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/v1/webhooks/stripe"))
                .header("content-type", "application/json")
                .header("Stripe-Signature", signature)
                .body(body)
                .send()
                .await
        }
    };

    // The first delivery: the process is killed the moment its grant is committed.
    let in_flight = tokio::spawn(deliver(
        first.base.clone(),
        body.clone(),
        fake.sign(&body, now()),
    ));
    let sql = db.client().await;
    let grants = async || -> i64 {
        sql.query_one("SELECT count(*) FROM credit_grants", &[])
            .await
            .unwrap()
            .get(0)
    };
    gptimage2_tests::eventually("the grant committed", Duration::from_secs(15), || async {
        (grants().await == 1).then_some(())
    })
    .await;
    first.kill();
    let _ = in_flight.await.unwrap();

    // Stripe retries against the restarted service.
    let second = Served::start(&["serve"], env.clone()).await;
    let res = deliver(second.base.clone(), body.clone(), fake.sign(&body, now()))
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    assert_eq!(grants().await, 1, "the retry granted nothing more");
    let transactions: i64 = sql
        .query_one("SELECT count(*) FROM billing_transactions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(transactions, 1);
    let credits: Value = client
        .get(format!("{}/v1/credits", second.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(credits["balance"], 100);
}
