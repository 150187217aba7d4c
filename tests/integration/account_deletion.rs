//! `DELETE /v1/me`: re-authentication, the immediate lock-out, and the erasure job, proved by
//! scanning every row of every table and every object in the store for the user afterwards.

use std::{io::Cursor, time::Duration};

use gptimage2_tests::{
    AppOptions, TestApp, TestUser, eventually, spawn_app_with, stripe_fake::StripeFake,
};
use reqwest::{
    Response, StatusCode,
    multipart::{Form, Part},
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub(crate) async fn delete_me(app: &TestApp, token: &str, body: Value) -> Response {
    app.client
        .delete(app.url("/v1/me"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Workers started and stopped by the test, so it controls when the erasure runs.
struct Workers(JoinHandle<anyhow::Result<()>>, CancellationToken);

fn start_workers(app: &TestApp) -> Workers {
    let state = app.state.clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(gptimage2::jobs::run_workers(
        state.pool.clone(),
        state.config.database_url.expose().to_string(),
        gptimage2::app::job_registry(&state).unwrap(),
        gptimage2::app::worker_options(&state.config),
        stop.clone(),
    ));
    Workers(task, stop)
}

impl Workers {
    async fn stop(self) {
        self.1.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.0)
            .await
            .expect("workers stop in time")
            .unwrap()
            .unwrap();
    }
}

fn png() -> Vec<u8> {
    let image =
        image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([x as u8 * 9, y as u8 * 13, 80]));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

async fn submit_generation(app: &TestApp, token: &str, idempotency_key: &str) -> Value {
    let res = app
        .client
        .post(app.url("/v1/generations"))
        .bearer_auth(token)
        .header("Idempotency-Key", idempotency_key)
        .json(&json!({"prompt": "a red fox in the snow", "size": "1024x1024", "quality": "low"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    res.json().await.unwrap()
}

/// Every row of every table in the public schema, as text: (table, row).
pub(crate) async fn rows_as_text(app: &TestApp) -> Vec<(String, String)> {
    let client = app.db.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() > 20, "the scan sees every table: {tables:?}");
    let mut all = Vec::new();
    for table in tables {
        let rows = client
            .query(&format!("SELECT t::text FROM \"{table}\" t"), &[])
            .await
            .unwrap();
        for row in rows {
            all.push((table.clone(), row.get::<_, String>(0)));
        }
    }
    all
}

/// Every table in the public schema whose rows, as text, mention any of `needles`
/// (case-insensitive), with the offending rows.
pub(crate) async fn rows_mentioning(app: &TestApp, needles: &[String]) -> Vec<(String, String)> {
    rows_as_text(app)
        .await
        .into_iter()
        .map(|(table, row)| (table, row.to_lowercase()))
        .filter(|(_, text)| needles.iter().any(|n| text.contains(n.as_str())))
        .collect()
}

/// The user's id and address as they could appear in a row: plain text, and hex for bytea.
pub(crate) fn needles(user: &TestUser) -> Vec<String> {
    let id = user.id.to_lowercase();
    let email = user.email.to_lowercase();
    vec![hex::encode(&id), hex::encode(&email), id, email]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_erases_every_row_and_object_of_the_user_but_keeps_anonymised_payments() {
    let stripe = StripeFake::start().await;
    let mut env = stripe.env();
    env.push(("GI2_JOB_BACKOFF_BASE_MS".into(), "100".into()));
    let app = spawn_app_with(AppOptions {
        workers: false,
        env,
        ..Default::default()
    })
    .await;
    let workers = start_workers(&app);
    // Someone else, who must keep everything.
    let bystander = app.register_user().await;
    app.grant_credits(&bystander.id, 10).await;

    // ---- a user with a bit of everything ---------------------------------------------
    let user = app.register_user().await;
    let user_id: Uuid = user.id.parse().unwrap();
    let (_mobile_token, mobile_refresh) = app.login_mobile(&user.email, &user.password).await;
    let (_key_id, api_key) = app.issue_api_key(&user.access_token, "CI").await;
    // A failed sign-in (rate-limit window keyed by address, activity) and a reset request.
    let res = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": user.email, "password": "not the password at all"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .post_json("/v1/auth/password/forgot", &json!({"email": user.email}))
        .await;
    assert!(res.status().is_success(), "{}", res.status());
    let res = app
        .client
        .put(app.url("/v1/me/consents"))
        .bearer_auth(&user.access_token)
        .json(&json!({"analytics": true, "marketing": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .get_auth("/v1/me/webhook-secret", &user.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    app.grant_credits(&user.id, 100).await;

    // A finished generation with its image (the built-in renderer).
    let generation = submit_generation(&app, &api_key, "gen-1").await;
    let generation_id = generation["id"].as_str().unwrap().to_string();
    eventually(
        "the generation to succeed",
        Duration::from_secs(30),
        || async {
            let g: Value = app
                .get_auth(
                    &format!("/v1/generations/{generation_id}"),
                    &user.access_token,
                )
                .await
                .json()
                .await
                .unwrap();
            (g["status"] == "succeeded").then_some(())
        },
    )
    .await;
    // A reference image.
    let res = app
        .client
        .post(app.url("/v1/reference-images"))
        .bearer_auth(&user.access_token)
        .multipart(Form::new().part("file", Part::bytes(png()).file_name("ref.png")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    // An export's object.
    app.state
        .store
        .put(
            &format!("users/{user_id}/exports/{}.zip", Uuid::now_v7()),
            "application/zip",
            gptimage2::storage::bytes_stream(b"PK\x05\x06 an empty zip".to_vec()),
        )
        .await
        .unwrap();
    // Billing: a customer, a live subscription, a paid pack (receipt mail and grant).
    let subscription = format!("sub_{}", Uuid::new_v4().simple());
    let payment_reference = format!("cs_test_{}", Uuid::new_v4().simple());
    let transaction_id = {
        let mut conn = app.state.pool.get().await.unwrap();
        use diesel_async::AsyncConnection;
        conn.transaction::<_, gptimage2::error::ApiError, _>(async |conn| {
            gptimage2::billing::remember_customer(conn, user_id, "stripe", "cus_DeleteMe1").await?;
            gptimage2::billing::apply_subscription_state(
                conn,
                gptimage2::billing::SubscriptionState {
                    user_id,
                    provider: "stripe",
                    provider_subscription_id: &subscription,
                    plan_id: "starter_monthly",
                    status: "active",
                    current_period_end: Some(chrono::Utc::now() + chrono::Duration::days(30)),
                    cancel_at_period_end: false,
                    provider_updated_at: chrono::Utc::now(),
                },
            )
            .await?;
            Ok(gptimage2::billing::record_payment(
                conn,
                gptimage2::billing::Payment {
                    user_id,
                    provider: "stripe",
                    kind: "purchase",
                    provider_reference: &payment_reference,
                    item_id: "pack_100",
                    amount_cents: 500,
                    currency: "usd",
                    credits: 100,
                    credits_expire_at: None,
                    flag: None,
                },
            )
            .await?
            .unwrap())
        })
        .await
        .unwrap()
    };
    let anonymous_id: Uuid = app
        .db
        .client()
        .await
        .query_one(
            "SELECT anonymous_user_id FROM billing_transactions WHERE id = $1",
            &[&transaction_id],
        )
        .await
        .unwrap()
        .get(0);
    // A Google identity carrying the address.
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO identities (id, user_id, provider, subject, email) VALUES ($1, $2, 'google', 'g-123', $3)",
            &[&Uuid::now_v7(), &user_id, &user.email],
        )
        .await
        .unwrap();
    // The erasure starts while the queue still holds the user's work: stop the workers and
    // leave a generation queued (with its open hold).
    workers.stop().await;
    submit_generation(&app, &user.access_token, "gen-2").await;
    assert!(!rows_mentioning(&app, &needles(&user)).await.is_empty());
    assert!(
        !app.state
            .store
            .list(&format!("users/{user_id}/"))
            .await
            .unwrap()
            .is_empty()
    );
    let bystander_rows = app.count(&format!(
            "SELECT (SELECT count(*) FROM ledger_entries WHERE user_id = '{0}') + (SELECT count(*) FROM sessions WHERE user_id = '{0}')",
            bystander.id
        ),
    )
    .await;

    // ---- the deletion -------------------------------------------------------------
    let res = delete_me(
        &app,
        &user.access_token,
        json!({ "password": user.password }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": "scheduled"})
    );

    // Locked out at once, before any job ran.
    for token in [&user.access_token, &api_key] {
        let res = app.get_auth("/v1/me", token).await;
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "{token} still works"
        );
    }
    let res = app
        .post_json(
            "/v1/auth/refresh",
            &json!({"refresh_token": mobile_refresh}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": user.email, "password": user.password}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "sign-in is refused");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM api_keys WHERE user_id = '{user_id}' AND revoked_at IS NULL"
        ))
        .await,
        0
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM sessions WHERE user_id = '{user_id}' AND revoked_at IS NULL"
        ))
        .await,
        0
    );

    // ---- the erasure ----------------------------------------------------------------
    let workers = start_workers(&app);
    eventually("the erasure job", Duration::from_secs(30), || async {
        let done = app
            .count(
                "SELECT count(*) FROM jobs WHERE kind = 'delete_account' AND status = 'succeeded'",
            )
            .await;
        (done == 1).then_some(())
    })
    .await;
    let smtp = app.smtp.as_ref().unwrap();
    eventually("the confirmation mail", Duration::from_secs(20), || async {
        smtp.received().into_iter().find(|m| {
            m.to.iter().any(|t| t == &user.email)
                && m.header("Subject")
                    .is_some_and(|s| s.contains("account is being deleted"))
        })
    })
    .await;
    eventually(
        "the confirmation purged from the outbox",
        Duration::from_secs(30),
        || async {
            let left = app
                .count("SELECT count(*) FROM outbox_mails WHERE template = 'account_deleted'")
                .await;
            (left == 0).then_some(())
        },
    )
    .await;
    eventually("the queue to drain", Duration::from_secs(30), || async {
        let busy = app.count("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running') AND run_at <= now() + interval '1 minute'",
        )
        .await;
        (busy == 0).then_some(())
    })
    .await;
    workers.stop().await;

    // ---- the scan ---------------------------------------------------------------------
    let left = rows_mentioning(&app, &needles(&user)).await;
    assert!(left.is_empty(), "rows still naming the user: {left:#?}");
    let objects = app
        .state
        .store
        .list(&format!("users/{user_id}/"))
        .await
        .unwrap();
    assert!(objects.is_empty(), "objects left: {objects:?}");
    let everything = app.state.store.list("users/").await.unwrap();
    assert!(
        everything.iter().all(|k| !k.contains(&user.id)),
        "objects left: {everything:?}"
    );
    // The payment stays, anonymised.
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT user_id, anonymous_user_id, amount_cents, currency, provider_reference, credits FROM billing_transactions WHERE id = $1",
            &[&transaction_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Uuid>>(0), None);
    assert_eq!(row.get::<_, Uuid>(1), anonymous_id);
    assert_eq!(row.get::<_, i64>(2), 500);
    assert_eq!(row.get::<_, String>(3), "usd");
    assert_eq!(row.get::<_, String>(4), payment_reference);
    assert_eq!(row.get::<_, i64>(5), 100);
    // The subscription was cancelled at Stripe, once.
    assert_eq!(
        stripe
            .requests_to("DELETE", &format!("/v1/subscriptions/{subscription}"))
            .len(),
        1
    );
    // The bystander keeps everything.
    assert_eq!(
        app.count(&format!(
                "SELECT (SELECT count(*) FROM ledger_entries WHERE user_id = '{0}') + (SELECT count(*) FROM sessions WHERE user_id = '{0}')",
                bystander.id
            ),
        )
        .await,
        bystander_rows
    );
    let res = app.get_auth("/v1/me", &bystander.access_token).await;
    assert_eq!(res.status(), StatusCode::OK);
    // The address is free again.
    let again = app
        .register_with(&user.email, "another long password", "New Me")
        .await;
    assert_ne!(again.id, user.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_an_api_key_changes_nothing() {
    let app = spawn_app_with(AppOptions {
        smtp: false,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    let (_, api_key) = app.issue_api_key(&user.access_token, "CI").await;
    for body in [json!({"password": "wrong wrong wrong"}), json!({})] {
        let res = delete_me(&app, &user.access_token, body).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed");
        assert_eq!(problem["errors"][0]["field"], "password");
    }
    let res = delete_me(&app, &api_key, json!({"password": user.password})).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    for token in [&user.access_token, &api_key] {
        assert_eq!(app.get_auth("/v1/me", token).await.status(), StatusCode::OK);
    }
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE disabled_at IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = 'delete_account'")
            .await,
        0
    );
}

/// A Google session of `user_id` signed in `minutes_ago`; returns its access token.
async fn session(app: &TestApp, user_id: Uuid, minutes_ago: i32) -> String {
    let id = Uuid::now_v7();
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO sessions (id, user_id, client, auth_method, created_at, last_used_at, expires_at)
             VALUES ($1, $2, 'web', 'google', now() - make_interval(mins => $3), now(), now() + interval '1 day')",
            &[&id, &user_id, &minutes_ago],
        )
        .await
        .unwrap();
    app.state
        .jwt
        .issue(user_id, id, Duration::from_secs(600))
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_password_needs_a_recent_sign_in() {
    let app = spawn_app_with(AppOptions {
        smtp: false,
        ..Default::default()
    })
    .await;
    let user_id = Uuid::now_v7();
    let email = format!("oauth-{}@example.com", user_id.simple());
    app.db
        .client()
        .await
        .execute(
        "INSERT INTO users (id, email, email_normalized, name, email_verified_at) VALUES ($1, $2, $2, 'Olga Auth', now())",
        &[&user_id, &email],
    )
    .await
    .unwrap();
    let stale = session(&app, user_id, 20).await;
    let res = delete_me(&app, &stale, json!({})).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "reauthentication_required"
    );
    assert_eq!(
        app.get_auth("/v1/me", &stale).await.status(),
        StatusCode::OK
    );

    let fresh = session(&app, user_id, 1).await;
    let res = delete_me(&app, &fresh, json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(
        app.get_auth("/v1/me", &stale).await.status(),
        StatusCode::UNAUTHORIZED
    );
    eventually("the account erased", Duration::from_secs(30), || async {
        let left = app
            .count(&format!(
                "SELECT count(*) FROM users WHERE id = '{user_id}'"
            ))
            .await;
        (left == 0).then_some(())
    })
    .await;

    // A re-run (a crash lost the success mark) finds nothing left to do and still succeeds.
    let handler = gptimage2::accounts::deletion::DeleteAccountHandler {
        state: app.state.clone(),
    };
    let run = |payload: Value| {
        let handler = &handler;
        async move {
            let context = gptimage2::jobs::JobContext {
                id: Uuid::now_v7(),
                kind: gptimage2::accounts::deletion::KIND.into(),
                attempt: 1,
                max_attempts: 3,
                payload,
                cancel: CancellationToken::new(),
            };
            gptimage2::jobs::JobHandler::run(handler, &context).await
        }
    };
    run(json!({"user_id": user_id, "mail_id": Uuid::now_v7()}))
        .await
        .unwrap();
    run(json!({})).await.unwrap();
    // An account that was never disabled is never erased, whatever the queue says.
    let active = app.register_user().await;
    let refused = run(json!({"user_id": active.id, "mail_id": Uuid::now_v7()})).await;
    assert!(
        matches!(refused, Err(gptimage2::jobs::JobError::Permanent(_))),
        "{refused:?}"
    );
    assert_eq!(
        app.get_auth("/v1/me", &active.access_token).await.status(),
        StatusCode::OK
    );
}
