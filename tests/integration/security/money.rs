//! Attacks: see `security.rs`. Money: spending credits past their expiry, and being granted
//! more than was paid for.

use std::time::Duration;

use chrono::Utc;
use gptimage2::credits::{GrantSource, ledger};
use gptimage2_tests::{
    AppOptions, Storage, TestApp, TestUser,
    creem_fake::{self, CreemFake, Customer},
    spawn_app_with,
    stripe_fake::{StripeFake, event, now, paid_session},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn credits(app: &TestApp, user: &TestUser) -> Value {
    let res = app.get_auth("/v1/credits", &user.access_token).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn transactions(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let res = app
        .get_auth("/v1/billing/transactions", &user.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["data"]
        .as_array()
        .unwrap()
        .clone()
}

async fn submit(app: &TestApp, user: &TestUser, quality: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/generations"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "prompt": "a lighthouse at dusk", "size": "1024x1024", "quality": quality, "n": 1 }))
        .send()
        .await
        .unwrap()
}

/// An app whose expiry sweep never runs (no workers), as between two of its ticks, and a
/// user with 1 credit that never expires and 100 that expired a moment ago.
async fn expired_credits() -> (TestApp, TestUser) {
    let app = spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 1).await;
    let mut conn = app.state.pool.get().await.unwrap();
    ledger::grant(
        &mut conn,
        ledger::NewGrant {
            user_id: user.id.parse().unwrap(),
            amount: 100,
            source: GrantSource::Promotion,
            expires_at: Some(Utc::now() + chrono::Duration::seconds(2)),
            reference: None,
            description: "trial credits",
        },
    )
    .await
    .unwrap();
    drop(conn);
    assert_eq!(credits(&app, &user).await["available"], 101);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    (app, user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacker_spends_credits_after_they_expired() {
    let (app, user) = expired_credits().await;
    // A medium 1024x1024 image costs 4: only the expired grant could pay for it.
    let res = submit(&app, &user, "medium").await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        status,
        StatusCode::PAYMENT_REQUIRED,
        "expired credits were spent: {body}"
    );
    assert_eq!(body["code"], "insufficient_credits");

    // What is still valid can be spent, and nothing else.
    let res = submit(&app, &user, "low").await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let after = credits(&app, &user).await;
    assert_eq!(after["available"], 0, "{after}");
    assert_eq!(after["held"], 1, "{after}");
    assert_eq!(
        app.count(&format!(
            "SELECT coalesce(sum(remaining), 0)::bigint FROM credit_grants WHERE user_id = '{}' AND expires_at IS NOT NULL",
            user.id
        ))
        .await,
        0,
        "the expired grant is not drawn from and keeps nothing spendable"
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacker_is_shown_expired_credits_as_available() {
    let (app, user) = expired_credits().await;
    let after = credits(&app, &user).await;
    assert_eq!(
        after["available"], 1,
        "expired credits are shown as available: {after}"
    );
    assert_eq!(after["balance"], 1, "{after}");
    let grants = after["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "an expired grant is listed: {after}");
    assert!(grants[0]["expires_at"].is_null());
    let me: Value = app
        .get_auth("/v1/me", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["credits"]["available"], 1, "{me}");
    app.assert_ledger_invariants().await;
}

async fn stripe_app() -> (TestApp, StripeFake) {
    let fake = StripeFake::start().await;
    let app = spawn_app_with(AppOptions {
        env: fake.env(),
        ..Default::default()
    })
    .await;
    (app, fake)
}

/// A buyer with a verified address (checkouts may require one).
async fn buyer(app: &TestApp) -> TestUser {
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

/// The Checkout Session (as the fake created it) of a checkout for `item` opened through the API.
async fn open_session(app: &TestApp, fake: &StripeFake, user: &TestUser, item: &str) -> Value {
    let res = app
        .client
        .post(app.url("/v1/billing/checkout"))
        .bearer_auth(&user.access_token)
        .json(&json!({
            "provider": "stripe",
            "item_id": item,
            "success_url": "http://spa.test/billing/success",
            "cancel_url": "http://spa.test/billing",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let url = res.json::<Value>().await.unwrap()["checkout_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = url
        .trim_start_matches("https://checkout.stripe.com/c/pay/")
        .split('#')
        .next()
        .unwrap()
        .to_owned();
    fake.session(&id)
}

async fn deliver_stripe(app: &TestApp, fake: &StripeFake, event: &Value) {
    let body = serde_json::to_string(event).unwrap();
    let res = app
        .client
        .post(app.url("/v1/webhooks/stripe"))
        .header("content-type", "application/json; charset=utf-8")
        .header("Stripe-Signature", fake.sign(&body, now()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// The user's one purchase: no credits granted, recorded as flagged with `flag`.
async fn assert_flagged_without_credits(app: &TestApp, user: &TestUser, flag: &str) {
    let balance = credits(app, user).await;
    assert_eq!(
        balance["balance"], 0,
        "credits granted for a payment that was not the price: {balance}"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM credit_grants WHERE user_id = '{}'",
            user.id
        ))
        .await,
        0
    );
    let list = transactions(app, user).await;
    assert_eq!(list.len(), 1, "the payment is recorded: {list:?}");
    assert_eq!(list[0]["credits"], 0, "{list:?}");
    assert_eq!(list[0]["flag"], flag, "{list:?}");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn attacker_pays_less_than_the_pack_price_through_stripe() {
    let (app, fake) = stripe_app().await;
    let user = buyer(&app).await;
    // A session in the same Stripe account carrying our metadata, but for 1.00 instead of 5.00.
    let session = open_session(&app, &fake, &user, "pack_100").await;
    let completed = event(
        "checkout.session.completed",
        paid_session(session, 100, "usd"),
        None,
        now(),
    );
    deliver_stripe(&app, &fake, &completed).await;
    assert_flagged_without_credits(&app, &user, "amount_mismatch").await;
    let list = transactions(&app, &user).await;
    assert_eq!(list[0]["amount_cents"], 100, "what was paid is recorded");
    // A replay changes nothing.
    deliver_stripe(&app, &fake, &completed).await;
    assert_flagged_without_credits(&app, &user, "amount_mismatch").await;
}

#[tokio::test]
async fn attacker_pays_the_pack_price_in_a_cheaper_currency_through_stripe() {
    let (app, fake) = stripe_app().await;
    let user = buyer(&app).await;
    // 500 yen is about three dollars, not five.
    let session = open_session(&app, &fake, &user, "pack_100").await;
    let completed = event(
        "checkout.session.completed",
        paid_session(session, 500, "jpy"),
        None,
        now(),
    );
    deliver_stripe(&app, &fake, &completed).await;
    assert_flagged_without_credits(&app, &user, "currency_mismatch").await;
}

#[tokio::test]
async fn attacker_buys_another_creem_product_naming_a_pack_in_metadata() {
    let creem = CreemFake::start().await;
    let app = spawn_app_with(AppOptions {
        storage: Storage::Local,
        env: creem.app_env(),
        ..Default::default()
    })
    .await;
    let user = buyer(&app).await;
    let customer = Customer::new(&user.email);
    // A 1.00 product of the same store that is not in our catalog, with our metadata.
    let completed = creem_fake::checkout_completed_pack(
        &user.id,
        &customer,
        "prod_sticker_pack",
        "pack_500",
        100,
    );
    let res = creem.deliver(&app, &completed).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_flagged_without_credits(&app, &user, "unknown_product").await;
}
