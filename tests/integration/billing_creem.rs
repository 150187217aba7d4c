//! Paying through Creem: the hosted checkout and portal against a local fake of Creem's
//! API, and signed webhook events applied exactly once: pack purchases, plan renewals,
//! subscription state in order, refunds that never drive credits negative. Ledger
//! invariants after each.

use std::time::Duration;

use chrono::{DateTime, Utc};
use gptimage2::credits::ledger::{self, NewHold};
use gptimage2_tests::{
    AppOptions, Storage, TestApp, TestUser,
    creem_fake::{self, CreemFake, Customer, Subscription},
    spawn_app_with,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn creem_app() -> (TestApp, CreemFake) {
    let creem = CreemFake::start().await;
    let app = spawn_app_with(AppOptions {
        storage: Storage::Local,
        env: creem.app_env(),
        ..Default::default()
    })
    .await;
    (app, creem)
}

async fn get_json(app: &TestApp, user: &TestUser, path: &str) -> Value {
    let res = app.get_auth(path, &user.access_token).await;
    assert_eq!(res.status(), StatusCode::OK, "GET {path}");
    res.json().await.unwrap()
}

async fn post_auth(app: &TestApp, user: &TestUser, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(&user.access_token)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

async fn balance(app: &TestApp, user: &TestUser) -> i64 {
    get_json(app, user, "/v1/credits").await["balance"]
        .as_i64()
        .unwrap()
}

async fn transactions(app: &TestApp, user: &TestUser) -> Vec<Value> {
    get_json(app, user, "/v1/billing/transactions").await["data"]
        .as_array()
        .unwrap()
        .clone()
}

async fn subscription(app: &TestApp, user: &TestUser) -> Value {
    get_json(app, user, "/v1/billing/subscription").await["subscription"].clone()
}

async fn webhook_events(app: &TestApp) -> i64 {
    app.db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM webhook_events WHERE provider = 'creem'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

pub(crate) async fn deliver_ok(creem: &CreemFake, app: &TestApp, event: &Value) {
    let res = creem.deliver(app, event).await;
    assert_eq!(res.status(), StatusCode::OK, "{}", event["eventType"]);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({ "received": true }));
}

pub(crate) fn pack_event(user: &TestUser, customer: &Customer) -> Value {
    creem_fake::checkout_completed_pack(&user.id, customer, "prod_pack_100", "pack_100", 500)
}

async fn problem(res: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(res.status(), status);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
}

fn same_instant(value: &Value, expected: DateTime<Utc>) {
    let got: DateTime<Utc> = value.as_str().unwrap().parse().unwrap();
    assert!(
        (got - expected).num_milliseconds().abs() < 1000,
        "{got} is not {expected}"
    );
}

#[tokio::test]
async fn creem_checkout_sends_product_customer_and_metadata() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let res = post_auth(
        &app,
        &user,
        "/v1/billing/checkout",
        &json!({
            "provider": "creem",
            "item_id": "pack_100",
            "success_url": "http://spa.test/billing/success",
            "cancel_url": "http://spa.test/billing",
        }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let url = body["checkout_url"].as_str().unwrap();
    assert!(url.starts_with("https://checkout.creem.io/ch_"), "{url}");

    let sent = creem.requests_to("/v1/checkouts");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].api_key.as_deref(), Some(creem.api_key.as_str()));
    let sent = &sent[0].body;
    assert_eq!(sent["product_id"], "prod_pack_100");
    assert_eq!(sent["customer"]["email"], user.email.as_str());
    assert_eq!(sent["metadata"]["user_id"], user.id.as_str());
    assert_eq!(sent["metadata"]["item_id"], "pack_100");
    assert_eq!(sent["success_url"], "http://spa.test/billing/success");
    assert!(sent["request_id"].as_str().is_some_and(|r| !r.is_empty()));

    // Creem down: a 502 with a stable code, nothing else.
    creem.set_failing(true);
    let res = post_auth(
        &app,
        &user,
        "/v1/billing/checkout",
        &json!({
            "provider": "creem",
            "item_id": "starter",
            "success_url": "http://spa.test/billing/success",
            "cancel_url": "http://spa.test/billing",
        }),
    )
    .await;
    problem(res, StatusCode::BAD_GATEWAY, "provider_error").await;
    assert_eq!(balance(&app, &user).await, 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_without_keys_answers_billing_not_configured() {
    let app = spawn_app_with(AppOptions {
        storage: Storage::Local,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    let res = post_auth(
        &app,
        &user,
        "/v1/billing/checkout",
        &json!({
            "provider": "creem",
            "item_id": "pack_100",
            "success_url": "http://spa.test/billing/success",
            "cancel_url": "http://spa.test/billing",
        }),
    )
    .await;
    problem(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "billing_not_configured",
    )
    .await;
    let res = post_auth(
        &app,
        &user,
        "/v1/billing/portal",
        &json!({ "provider": "creem" }),
    )
    .await;
    problem(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "billing_not_configured",
    )
    .await;
    let event = pack_event(&user, &Customer::new(&user.email));
    let body = serde_json::to_vec(&event).unwrap();
    let signature = creem_fake::sign("whatever", &body);
    let res = creem_fake::post_webhook(&app, body, Some(&signature)).await;
    problem(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "billing_not_configured",
    )
    .await;
    assert_eq!(webhook_events(&app).await, 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_webhook_with_bad_or_missing_signature_changes_nothing() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let event = pack_event(&user, &Customer::new(&user.email));
    let body = serde_json::to_vec(&event).unwrap();

    let wrong_secret = creem_fake::sign("whsec_not_ours", &body);
    // Creem's signature over the body, on a body whose amount was changed.
    let signature = creem.sign(&body);
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("\"amount\":500", "\"amount\":50000")
        .into_bytes();
    assert_ne!(tampered, body);
    for (body, signature) in [
        (body.clone(), None),
        (body.clone(), Some(wrong_secret.as_str())),
        (body.clone(), Some("not-hex")),
        (body.clone(), Some("")),
        (tampered, Some(signature.as_str())),
    ] {
        let res = creem_fake::post_webhook(&app, body, signature).await;
        problem(res, StatusCode::BAD_REQUEST, "invalid_signature").await;
    }
    assert_eq!(webhook_events(&app).await, 0);
    assert_eq!(balance(&app, &user).await, 0);
    assert!(transactions(&app, &user).await.is_empty());

    // A signed body that is not an event is refused too, and not recorded.
    let junk = br#"{"hello": "world"}"#.to_vec();
    let signature = creem.sign(&junk);
    let res = creem_fake::post_webhook(&app, junk, Some(&signature)).await;
    problem(res, StatusCode::BAD_REQUEST, "invalid_payload").await;
    assert_eq!(webhook_events(&app).await, 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_checkout_completed_grants_the_pack_once_with_a_receipt() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let customer = Customer::new(&user.email);
    let event = pack_event(&user, &customer);
    deliver_ok(&creem, &app, &event).await;
    deliver_ok(&creem, &app, &event).await;

    let credits = get_json(&app, &user, "/v1/credits").await;
    assert_eq!(credits["balance"], 100);
    let grants = credits["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["source"], "purchase");
    assert!(
        grants[0]["expires_at"].is_null(),
        "pack credits do not expire"
    );

    let list = transactions(&app, &user).await;
    assert_eq!(list.len(), 1);
    let t = &list[0];
    assert_eq!(t["kind"], "purchase");
    assert_eq!(t["provider"], "creem");
    assert_eq!(t["provider_reference"], event["object"]["order"]["id"]);
    assert_eq!(t["item_id"], "pack_100");
    assert_eq!(t["amount_cents"], 500);
    assert_eq!(t["currency"], "usd");
    assert_eq!(t["credits"], 100);

    let smtp = app.smtp.as_ref().unwrap();
    let receipts = gptimage2_tests::eventually("the receipt", Duration::from_secs(15), || async {
        let receipts: Vec<_> = smtp
            .received()
            .into_iter()
            .filter(|m| m.to.contains(&user.email))
            .filter(|m| m.header("Subject").is_some_and(|s| s.contains("receipt")))
            .collect();
        (!receipts.is_empty()).then_some(receipts)
    })
    .await;
    let text = receipts[0].text_body();
    assert!(text.contains("5.00 USD"), "{text}");
    assert!(
        text.contains(event["object"]["order"]["id"].as_str().unwrap()),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count = smtp
        .received()
        .iter()
        .filter(|m| m.header("Subject").is_some_and(|s| s.contains("receipt")))
        .count();
    assert_eq!(count, 1, "one receipt for one payment");
    assert_eq!(webhook_events(&app).await, 1);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_same_event_delivered_twenty_times_at_once_grants_once() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let event = pack_event(&user, &Customer::new(&user.email));
    let deliveries = (0..20).map(|_| creem.deliver(&app, &event));
    for res in futures::future::join_all(deliveries).await {
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(balance(&app, &user).await, 100);
    assert_eq!(transactions(&app, &user).await.len(), 1);
    assert_eq!(webhook_events(&app).await, 1);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_renewals_grant_each_paid_period_with_expiry() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let customer = Customer::new(&user.email);
    let first = Subscription::new(&user.id, &customer, "prod_starter_monthly", "starter");
    let t0 = Utc::now();
    // The checkout notes the subscription; credits come with `subscription.paid`.
    deliver_ok(&creem, &app, &first.checkout_completed(t0)).await;
    assert_eq!(balance(&app, &user).await, 0);
    deliver_ok(
        &creem,
        &app,
        &first.event("subscription.paid", t0 + chrono::Duration::seconds(1)),
    )
    .await;

    // The next period, with no transaction id: the period start tells payments apart.
    let mut second = first.next_period();
    second.last_transaction_id = None;
    let paid = second.event("subscription.paid", t0 + chrono::Duration::seconds(2));
    deliver_ok(&creem, &app, &paid).await;
    deliver_ok(&creem, &app, &paid).await;

    let credits = get_json(&app, &user, "/v1/credits").await;
    assert_eq!(credits["balance"], 1000);
    let grants = credits["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 2);
    let grace = chrono::Duration::days(3);
    for (grant, period) in grants.iter().zip([&first, &second]) {
        assert_eq!(grant["source"], "subscription");
        assert_eq!(grant["amount"], 500);
        same_instant(&grant["expires_at"], period.period_end + grace);
    }
    let list = transactions(&app, &user).await;
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .all(|t| t["kind"] == "renewal" && t["item_id"] == "starter")
    );
    assert!(list.iter().any(|t| t["provider_reference"] == first.last_transaction_id.clone().unwrap().as_str()));

    let sub = subscription(&app, &user).await;
    assert_eq!(sub["plan"], "starter");
    assert_eq!(sub["provider"], "creem");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["cancel_at_period_end"], false);
    same_instant(&sub["renews_at"], second.period_end);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_canceled_subscription_shows_canceled() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let customer = Customer::new(&user.email);
    let mut sub = Subscription::new(&user.id, &customer, "prod_pro_monthly", "pro");
    let t0 = Utc::now();
    deliver_ok(&creem, &app, &sub.event("subscription.active", t0)).await;
    assert_eq!(subscription(&app, &user).await["status"], "active");

    sub.status = "canceled".into();
    deliver_ok(
        &creem,
        &app,
        &sub.event("subscription.canceled", t0 + chrono::Duration::seconds(5)),
    )
    .await;
    let view = subscription(&app, &user).await;
    assert_eq!(view["plan"], "pro");
    assert_eq!(view["status"], "canceled");
    assert_eq!(view["cancel_at_period_end"], false);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_older_subscription_event_after_a_newer_one_changes_nothing() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let customer = Customer::new(&user.email);
    let active = Subscription::new(&user.id, &customer, "prod_starter_monthly", "starter");
    let mut canceled = active.clone();
    canceled.status = "canceled".into();
    let t0 = Utc::now();
    // Delivered out of order: the cancellation (newer) first, the activation (older) late.
    deliver_ok(&creem, &app, &canceled.event("subscription.canceled", t0)).await;
    let before = subscription(&app, &user).await;
    assert_eq!(before["status"], "canceled");
    let late = active
        .next_period()
        .event("subscription.active", t0 - chrono::Duration::seconds(30));
    deliver_ok(&creem, &app, &late).await;
    assert_eq!(subscription(&app, &user).await, before);
    assert_eq!(webhook_events(&app).await, 2, "both recorded");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_refund_takes_back_only_the_unspent_credits() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let customer = Customer::new(&user.email);
    let purchase = pack_event(&user, &customer);
    deliver_ok(&creem, &app, &purchase).await;

    // 70 of the 100 credits are spent before the refund.
    let user_id = user.id.parse().unwrap();
    {
        let mut conn = app.state.pool.get().await.unwrap();
        let hold = ledger::hold(
            &mut conn,
            NewHold {
                user_id,
                amount: 70,
                reference: None,
                api_key_id: None,
                description: "test spend",
            },
        )
        .await
        .unwrap();
        ledger::capture(&mut conn, hold, 70).await.unwrap();
    }
    assert_eq!(balance(&app, &user).await, 30);

    let order = purchase["object"]["order"]["id"].as_str().unwrap();
    let refund = creem_fake::refund_created(order, &customer, 500);
    deliver_ok(&creem, &app, &refund).await;
    deliver_ok(&creem, &app, &refund).await;

    assert_eq!(balance(&app, &user).await, 0, "never below zero");
    let list = transactions(&app, &user).await;
    assert_eq!(list.len(), 2);
    let row = list.iter().find(|t| t["kind"] == "refund").unwrap();
    assert_eq!(row["provider_reference"], refund["object"]["id"]);
    assert_eq!(row["amount_cents"], -500);
    assert_eq!(row["credits"], -30);
    assert_eq!(row["credits_lost"], 70);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_portal_opens_once_a_checkout_revealed_the_customer() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let res = post_auth(
        &app,
        &user,
        "/v1/billing/portal",
        &json!({ "provider": "creem" }),
    )
    .await;
    problem(res, StatusCode::NOT_FOUND, "no_customer").await;
    assert!(creem.requests_to("/v1/customers/billing").is_empty());

    let customer = Customer::new(&user.email);
    deliver_ok(&creem, &app, &pack_event(&user, &customer)).await;
    let res = post_auth(
        &app,
        &user,
        "/v1/billing/portal",
        &json!({ "provider": "creem" }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["url"],
        format!("https://creem.io/my-orders/login/{}", customer.id)
    );
    let sent = creem.requests_to("/v1/customers/billing");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body, json!({ "customer_id": customer.id }));
    assert_eq!(sent[0].api_key.as_deref(), Some(creem.api_key.as_str()));
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_cancel_subscription_calls_creem() {
    let (app, creem) = creem_app().await;
    let provider = gptimage2::billing::provider(&app.state, "creem").unwrap();
    provider
        .cancel_subscription(&app.state, "sub_123")
        .await
        .unwrap();
    let sent = creem.requests_to("/v1/subscriptions/sub_123/cancel");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].api_key.as_deref(), Some(creem.api_key.as_str()));

    creem.set_failing(true);
    let err = provider
        .cancel_subscription(&app.state, "sub_123")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "provider_error");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_events_for_no_known_user_or_of_unknown_types_are_acknowledged_once() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let stranger = uuid::Uuid::new_v4().to_string();
    let mut unknown_user = pack_event(&user, &Customer::new("nobody@example.com"));
    unknown_user["object"]["metadata"]["user_id"] = json!(stranger);
    deliver_ok(&creem, &app, &unknown_user).await;
    let mut unknown_type = pack_event(&user, &Customer::new(&user.email));
    unknown_type["eventType"] = json!("dispute.created");
    deliver_ok(&creem, &app, &unknown_type).await;
    deliver_ok(&creem, &app, &unknown_type).await;
    assert_eq!(balance(&app, &user).await, 0);
    assert!(transactions(&app, &user).await.is_empty());
    assert_eq!(
        webhook_events(&app).await,
        2,
        "recorded, so never applied later"
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_refund_of_a_renewal_is_found_by_its_transaction() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let customer = Customer::new(&user.email);
    let sub = Subscription::new(&user.id, &customer, "prod_starter_monthly", "starter");
    deliver_ok(&creem, &app, &sub.event("subscription.paid", Utc::now())).await;
    assert_eq!(balance(&app, &user).await, 500);

    // Half of the period's price back: half of its (unspent) credits go.
    let mut refund = creem_fake::refund_created("ord_of_the_renewal", &customer, 450);
    refund["object"]["transaction"]["id"] = json!(sub.last_transaction_id.clone().unwrap());
    deliver_ok(&creem, &app, &refund).await;
    assert_eq!(balance(&app, &user).await, 250);
    let list = transactions(&app, &user).await;
    let row = list.iter().find(|t| t["kind"] == "refund").unwrap();
    assert_eq!(row["credits"], -250);
    assert_eq!(row["credits_lost"], 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_item_without_a_creem_product_is_refused() {
    let creem = CreemFake::start().await;
    let dir = gptimage2_tests::tempfile_dir::TempDir::new();
    let catalog = dir.0.join("catalog.json");
    std::fs::write(
        &catalog,
        json!({
            "plans": [],
            "packs": [{ "id": "stripe_only", "name": "Stripe only", "credits": 10,
                        "price_cents": 100, "currency": "usd", "stripe_price_id": "price_x" }],
        })
        .to_string(),
    )
    .unwrap();
    let mut env = creem.app_env();
    env.push(("GI2_BILLING_CATALOG".into(), catalog.display().to_string()));
    let app = spawn_app_with(AppOptions {
        storage: Storage::Local,
        env,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    let res = post_auth(
        &app,
        &user,
        "/v1/billing/checkout",
        &json!({
            "provider": "creem",
            "item_id": "stripe_only",
            "success_url": "http://spa.test/billing/success",
            "cancel_url": "http://spa.test/billing",
        }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(body["errors"][0]["field"], "item_id");
    assert!(creem.requests().is_empty());
    app.assert_ledger_invariants().await;
}
