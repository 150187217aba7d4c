//! Stripe: hosted checkout and portal against a local fake of Stripe's API, and signed
//! webhooks applied exactly once: pack purchases, renewals, subscription state that only
//! moves forward, and refunds that take back only unspent credits. Invariants after each.

use std::time::Duration;

use chrono::{DateTime, Utc};
use gptimage2::credits::ledger::{self, NewHold};
use gptimage2_tests::{
    AppOptions, TestApp, TestUser, spawn_app_with,
    stripe_fake::{
        InvoiceSpec, StripeFake, event, invoice_object, invoice_payment_object, now, paid_session,
        refunded_charge, sign_with, stripe_id, subscription_object,
    },
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

async fn stripe_app() -> (TestApp, StripeFake) {
    let fake = StripeFake::start().await;
    let app = spawn_app_with(AppOptions {
        env: fake.env(),
        ..Default::default()
    })
    .await;
    (app, fake)
}

async fn checkout(app: &TestApp, user: &TestUser, item: &str) -> Response {
    app.client
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
        .expect("request sent")
}

/// Opens a checkout for `item` and returns the session the fake created.
async fn open_session(app: &TestApp, fake: &StripeFake, user: &TestUser, item: &str) -> Value {
    let res = checkout(app, user, item).await;
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

pub(crate) async fn post_webhook(app: &TestApp, body: &str, signature: Option<String>) -> Response {
    let mut request = app
        .client
        .post(app.url("/v1/webhooks/stripe"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    request.send().await.expect("request sent")
}

/// Delivers `event` signed now, as Stripe does; expects 200.
pub(crate) async fn deliver(app: &TestApp, fake: &StripeFake, event: &Value) {
    let body = serde_json::to_string(event).unwrap();
    let res = post_webhook(app, &body, Some(fake.sign(&body, now()))).await;
    let status = res.status();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

async fn get_json(app: &TestApp, user: &TestUser, path: &str) -> Value {
    let res = app.get_auth(path, &user.access_token).await;
    assert_eq!(res.status(), StatusCode::OK, "GET {path}");
    res.json().await.unwrap()
}

pub(crate) async fn balance(app: &TestApp, user: &TestUser) -> i64 {
    get_json(app, user, "/v1/credits").await["balance"]
        .as_i64()
        .unwrap()
}

pub(crate) async fn transactions(app: &TestApp, user: &TestUser) -> Vec<Value> {
    get_json(app, user, "/v1/billing/transactions").await["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// A completed, paid Checkout Session event for a fresh checkout of `pack_100` by `user`.
pub(crate) async fn paid_pack_event(app: &TestApp, fake: &StripeFake, user: &TestUser) -> Value {
    let session = open_session(app, fake, user, "pack_100").await;
    event(
        "checkout.session.completed",
        paid_session(session, 500, "usd"),
        None,
        now(),
    )
}

fn ts(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap()
}

fn time_field(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn checkout_sends_stripe_the_right_sessions_and_creates_the_customer_once() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;

    let res = app
        .client
        .post(app.url("/v1/billing/portal"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "provider": "stripe" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "no_customer");

    let res = checkout(&app, &user, "pack_100").await;
    assert_eq!(res.status(), StatusCode::OK);
    let url = res.json::<Value>().await.unwrap()["checkout_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        url.starts_with("https://checkout.stripe.com/c/pay/cs_test_"),
        "{url}"
    );

    let customers = fake.requests_to("POST", "/v1/customers");
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].get("email"), Some(user.email.as_str()));
    assert_eq!(customers[0].get("name"), Some(user.name.as_str()));
    assert_eq!(
        customers[0].get("metadata[user_id]"),
        Some(user.id.as_str())
    );

    let sessions = fake.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!(sessions.len(), 1);
    let pack = &sessions[0];
    let customer = pack.get("customer").unwrap().to_owned();
    assert!(customer.starts_with("cus_"));
    assert_eq!(pack.get("mode"), Some("payment"));
    assert_eq!(pack.get("line_items[0][price]"), Some("price_pack_100"));
    assert_eq!(pack.get("line_items[0][quantity]"), Some("1"));
    assert_eq!(pack.get("client_reference_id"), Some(user.id.as_str()));
    assert_eq!(pack.get("metadata[user_id]"), Some(user.id.as_str()));
    assert_eq!(pack.get("metadata[item_id]"), Some("pack_100"));
    assert_eq!(
        pack.get("success_url"),
        Some("http://spa.test/billing/success")
    );
    assert_eq!(pack.get("cancel_url"), Some("http://spa.test/billing"));
    assert_eq!(pack.get("subscription_data[metadata][plan_id]"), None);

    // The second checkout reuses the customer.
    let res = checkout(&app, &user, "starter").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(fake.requests_to("POST", "/v1/customers").len(), 1);
    let sessions = fake.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!(sessions.len(), 2);
    let plan = &sessions[1];
    assert_eq!(plan.get("customer"), Some(customer.as_str()));
    assert_eq!(plan.get("mode"), Some("subscription"));
    assert_eq!(
        plan.get("line_items[0][price]"),
        Some("price_starter_monthly")
    );
    assert_eq!(plan.get("metadata[item_id]"), Some("starter"));
    assert_eq!(
        plan.get("subscription_data[metadata][user_id]"),
        Some(user.id.as_str())
    );
    assert_eq!(
        plan.get("subscription_data[metadata][plan_id]"),
        Some("starter")
    );

    let res = app
        .client
        .post(app.url("/v1/billing/portal"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "provider": "stripe" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let url = res.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        url.starts_with("https://billing.stripe.com/p/session/"),
        "{url}"
    );
    let portal = fake.requests_to("POST", "/v1/billing_portal/sessions");
    assert_eq!(portal.len(), 1);
    assert_eq!(portal[0].get("customer"), Some(customer.as_str()));
    assert_eq!(
        portal[0].get("return_url"),
        Some(app.state.config.auth.spa_url.as_str())
    );

    // Cancellation (account deletion) reaches Stripe.
    let provider = gptimage2::billing::provider(&app.state, "stripe").unwrap();
    provider
        .cancel_subscription(&app.state, "sub_1QeXtBaYsUqH2NnCancel")
        .await
        .unwrap();
    assert_eq!(
        fake.requests_to("DELETE", "/v1/subscriptions/sub_1QeXtBaYsUqH2NnCancel")
            .len(),
        1
    );

    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn stripe_failures_are_bad_gateway() {
    let fake = StripeFake::start().await;
    let mut env = fake.env();
    env.retain(|(k, _)| k != "GI2_STRIPE_SECRET_KEY");
    env.push(("GI2_STRIPE_SECRET_KEY".into(), "sk_test_wrong".into()));
    let app = spawn_app_with(AppOptions {
        env,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    let res = checkout(&app, &user, "pack_100").await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "provider_error");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn without_keys_stripe_is_not_configured() {
    let app = spawn_app_with(AppOptions::default()).await;
    let user = app.register_user().await;
    let res = checkout(&app, &user, "pack_100").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "billing_not_configured"
    );
    let body = r#"{"id":"evt_1","type":"invoice.paid"}"#;
    let res = post_webhook(&app, body, Some(sign_with("whsec_x", body, now()))).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "billing_not_configured"
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn bad_missing_or_stale_signatures_are_refused_and_change_nothing() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let event = paid_pack_event(&app, &fake, &user).await;
    let body = serde_json::to_string(&event).unwrap();
    let tampered = body.replace("\"amount_total\":500", "\"amount_total\":1");
    assert_ne!(tampered, body);

    let attempts = [
        (
            "wrong secret",
            body.clone(),
            Some(sign_with("whsec_other", &body, now())),
        ),
        ("stale", body.clone(), Some(fake.sign(&body, now() - 360))),
        ("missing", body.clone(), None),
        ("tampered body", tampered, Some(fake.sign(&body, now()))),
        ("garbage header", body.clone(), Some("t=abc,v1=zz".into())),
    ];
    for (what, payload, signature) in attempts {
        let res = post_webhook(&app, &payload, signature).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        assert_eq!(
            res.json::<Value>().await.unwrap()["code"],
            "invalid_signature",
            "{what}"
        );
    }
    assert_eq!(balance(&app, &user).await, 0);
    assert!(transactions(&app, &user).await.is_empty());
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 0);

    // The genuine delivery still applies afterwards.
    deliver(&app, &fake, &event).await;
    assert_eq!(balance(&app, &user).await, 100);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_paid_checkout_grants_the_pack_once_with_a_receipt() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let event = paid_pack_event(&app, &fake, &user).await;
    deliver(&app, &fake, &event).await;
    deliver(&app, &fake, &event).await;

    let credits = get_json(&app, &user, "/v1/credits").await;
    assert_eq!(credits["balance"], 100);
    assert_eq!(credits["grants"][0]["source"], "purchase");
    assert_eq!(credits["grants"][0]["expires_at"], Value::Null);

    let list = transactions(&app, &user).await;
    assert_eq!(list.len(), 1);
    let t = &list[0];
    assert_eq!(t["kind"], "purchase");
    assert_eq!(t["provider"], "stripe");
    assert_eq!(t["item_id"], "pack_100");
    assert_eq!(t["amount_cents"], 500);
    assert_eq!(t["currency"], "usd");
    assert_eq!(t["credits"], 100);
    assert_eq!(
        t["provider_reference"],
        event["data"]["object"]["payment_intent"]
    );

    let smtp = app.smtp.as_ref().unwrap();
    let receipt =
        gptimage2_tests::eventually("the receipt mail", Duration::from_secs(15), || async {
            smtp.received().into_iter().find(|m| {
                m.to.contains(&user.email)
                    && m.header("Subject").is_some_and(|s| s.contains("receipt"))
            })
        })
        .await;
    let text = receipt.text_body();
    assert!(text.contains("100"), "{text}");
    assert!(text.contains("5.00 USD"), "{text}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let receipts = smtp
        .received()
        .into_iter()
        .filter(|m| m.header("Subject").is_some_and(|s| s.contains("receipt")))
        .count();
    assert_eq!(receipts, 1);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn unpaid_async_checkout_waits_for_the_payment() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let session = open_session(&app, &fake, &user, "pack_500").await;
    let mut completed = paid_session(session, 2000, "usd");
    completed["payment_status"] = json!("unpaid");
    deliver(
        &app,
        &fake,
        &event("checkout.session.completed", completed.clone(), None, now()),
    )
    .await;
    assert_eq!(balance(&app, &user).await, 0);

    completed["payment_status"] = json!("paid");
    deliver(
        &app,
        &fake,
        &event(
            "checkout.session.async_payment_succeeded",
            completed,
            None,
            now(),
        ),
    )
    .await;
    assert_eq!(balance(&app, &user).await, 500);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn twenty_concurrent_deliveries_of_one_event_grant_once() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let event = paid_pack_event(&app, &fake, &user).await;
    let body = serde_json::to_string(&event).unwrap();
    let signature = fake.sign(&body, now());
    let responses = futures::future::join_all(
        (0..20).map(|_| post_webhook(&app, &body, Some(signature.clone()))),
    )
    .await;
    for res in responses {
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(balance(&app, &user).await, 100);
    assert_eq!(transactions(&app, &user).await.len(), 1);
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 1);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn subscription_state_only_moves_forward() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let session = open_session(&app, &fake, &user, "starter").await;
    let customer = session["customer"].as_str().unwrap().to_owned();
    let sub_id = stripe_id("sub_1");
    let t = now();
    let period_end = t + 30 * 86_400;
    let sub = |status: &str, cancel: bool| {
        subscription_object(
            &sub_id,
            &customer,
            &user.id,
            "price_starter_monthly",
            status,
            period_end,
            cancel,
        )
    };

    deliver(
        &app,
        &fake,
        &event(
            "customer.subscription.created",
            sub("active", false),
            None,
            t,
        ),
    )
    .await;
    let current = get_json(&app, &user, "/v1/billing/subscription").await["subscription"].clone();
    assert_eq!(current["plan"], "starter");
    assert_eq!(current["provider"], "stripe");
    assert_eq!(current["status"], "active");
    assert_eq!(time_field(&current["renews_at"]), ts(period_end));
    assert_eq!(current["cancel_at_period_end"], false);

    // The newer update (cancel at period end) arrives before an older one (past_due).
    deliver(
        &app,
        &fake,
        &event(
            "customer.subscription.updated",
            sub("active", true),
            Some(json!({ "cancel_at_period_end": false })),
            t + 100,
        ),
    )
    .await;
    deliver(
        &app,
        &fake,
        &event(
            "customer.subscription.updated",
            sub("past_due", false),
            Some(json!({ "status": "active" })),
            t + 50,
        ),
    )
    .await;
    let current = get_json(&app, &user, "/v1/billing/subscription").await["subscription"].clone();
    assert_eq!(current["status"], "active");
    assert_eq!(current["cancel_at_period_end"], true);

    let mut ended = sub("canceled", false);
    ended["canceled_at"] = json!(t + 200);
    ended["ended_at"] = json!(t + 200);
    deliver(
        &app,
        &fake,
        &event("customer.subscription.deleted", ended, None, t + 200),
    )
    .await;
    let current = get_json(&app, &user, "/v1/billing/subscription").await["subscription"].clone();
    assert_eq!(current["status"], "canceled");
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 1);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn paid_invoices_grant_plan_credits_that_expire_after_the_period_and_grace() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let session = open_session(&app, &fake, &user, "starter").await;
    let customer = session["customer"].as_str().unwrap().to_owned();
    let sub_id = stripe_id("sub_1");
    let start = now();
    let day = 86_400;
    let invoice = |from: i64, to: i64, reason: &'static str| {
        invoice_object(&InvoiceSpec {
            customer: &customer,
            subscription: &sub_id,
            user_id: &user.id,
            price_id: "price_starter_monthly",
            amount: 900,
            period_start: from,
            period_end: to,
            billing_reason: reason,
        })
    };
    let first = invoice(start, start + 30 * day, "subscription_create");
    deliver(
        &app,
        &fake,
        &event("invoice.paid", first.clone(), None, start),
    )
    .await;
    let credits = get_json(&app, &user, "/v1/credits").await;
    assert_eq!(credits["balance"], 500);
    assert_eq!(credits["grants"][0]["source"], "subscription");
    // Default grace: 3 days.
    assert_eq!(
        time_field(&credits["grants"][0]["expires_at"]),
        ts(start + 33 * day)
    );

    let second = invoice(start + 30 * day, start + 60 * day, "subscription_cycle");
    let renewal = event("invoice.paid", second.clone(), None, start + 30 * day);
    deliver(&app, &fake, &renewal).await;
    deliver(&app, &fake, &renewal).await;
    let credits = get_json(&app, &user, "/v1/credits").await;
    assert_eq!(credits["balance"], 1000);
    let expiries: Vec<DateTime<Utc>> = credits["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| time_field(&g["expires_at"]))
        .collect();
    assert_eq!(expiries, vec![ts(start + 33 * day), ts(start + 63 * day)]);

    let list = transactions(&app, &user).await;
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .all(|t| t["kind"] == "renewal" && t["credits"] == 500)
    );
    assert_eq!(list[0]["provider_reference"], second["id"]);
    assert_eq!(list[1]["provider_reference"], first["id"]);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_refund_after_spending_takes_back_only_the_unspent_credits() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let user_id: Uuid = user.id.parse().unwrap();
    let purchase = paid_pack_event(&app, &fake, &user).await;
    deliver(&app, &fake, &purchase).await;
    assert_eq!(balance(&app, &user).await, 100);

    let mut conn = app.state.pool.get().await.unwrap();
    let hold = ledger::hold(
        &mut conn,
        NewHold {
            user_id,
            amount: 60,
            reference: None,
            api_key_id: None,
            description: "test spend",
        },
    )
    .await
    .unwrap();
    ledger::capture(&mut conn, hold, 60).await.unwrap();
    drop(conn);
    assert_eq!(balance(&app, &user).await, 40);

    let session = &purchase["data"]["object"];
    let payment_intent = session["payment_intent"].as_str().unwrap();
    let customer = session["customer"].as_str().unwrap();
    let refund_id = stripe_id("re_");
    let charge = refunded_charge(payment_intent, None, customer, 500, &[(&refund_id, 500)]);
    let refunded = event(
        "charge.refunded",
        charge,
        Some(json!({ "amount_refunded": 0, "refunded": false })),
        now(),
    );
    deliver(&app, &fake, &refunded).await;
    deliver(&app, &fake, &refunded).await;

    let credits = get_json(&app, &user, "/v1/credits").await;
    assert_eq!(credits["balance"], 0);
    let list = transactions(&app, &user).await;
    assert_eq!(list.len(), 2);
    let refund = &list[0];
    assert_eq!(refund["kind"], "refund");
    assert_eq!(refund["provider_reference"], refund_id.as_str());
    assert_eq!(refund["amount_cents"], -500);
    assert_eq!(refund["credits"], -40);
    assert_eq!(refund["credits_lost"], 60);

    // A later event for the same charge lists the same refund again: nothing more happens.
    let again = refunded_charge(payment_intent, None, customer, 500, &[(&refund_id, 500)]);
    deliver(&app, &fake, &event("charge.refunded", again, None, now())).await;
    assert_eq!(transactions(&app, &user).await.len(), 2);
    app.assert_ledger_invariants().await;
}

/// From API version 2025-03-31 a charge no longer names its invoice, nor lists its refunds:
/// the renewal it paid is found through `invoice_payment.paid`, in whichever order that and
/// `invoice.paid` arrive.
#[tokio::test]
async fn a_refunded_renewal_is_taken_back_on_newer_api_versions() {
    const NEWER: &str = "2025-03-31.basil";
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let session = open_session(&app, &fake, &user, "starter").await;
    let customer = session["customer"].as_str().unwrap().to_owned();
    let start = now();
    let mut invoice = invoice_object(&InvoiceSpec {
        customer: &customer,
        subscription: &stripe_id("sub_1"),
        user_id: &user.id,
        price_id: "price_starter_monthly",
        amount: 900,
        period_start: start,
        period_end: start + 30 * 86_400,
        billing_reason: "subscription_cycle",
    });
    invoice.as_object_mut().unwrap().remove("charge");
    let invoice_id = invoice["id"].as_str().unwrap().to_owned();
    let intent = stripe_id("pi_");
    let newer = |kind: &str, object: Value, previous: Option<Value>| {
        let mut e = event(kind, object, previous, now());
        e["api_version"] = json!(NEWER);
        e
    };
    // The link first, then the invoice.
    let link = newer(
        "invoice_payment.paid",
        invoice_payment_object(&invoice_id, &intent, 900),
        None,
    );
    deliver(&app, &fake, &link).await;
    deliver(&app, &fake, &link).await;
    deliver(&app, &fake, &newer("invoice.paid", invoice, None)).await;
    assert_eq!(balance(&app, &user).await, 500);

    // Half refunded: no invoice on the charge, no refund list, only `amount_refunded` grew.
    let mut charge = refunded_charge(&intent, None, &customer, 900, &[]);
    charge["amount_refunded"] = json!(450);
    charge["refunded"] = json!(false);
    for field in ["invoice", "refunds"] {
        charge.as_object_mut().unwrap().remove(field);
    }
    let refunded = newer(
        "charge.refunded",
        charge,
        Some(json!({ "amount_refunded": 0 })),
    );
    deliver(&app, &fake, &refunded).await;
    deliver(&app, &fake, &refunded).await;

    assert_eq!(balance(&app, &user).await, 250, "half of the unspent 500");
    let list = transactions(&app, &user).await;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["kind"], "refund");
    assert_eq!(list[0]["amount_cents"], -450);
    assert_eq!(list[0]["credits"], -250);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn events_this_server_cannot_use_are_acknowledged_and_recorded() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let unknown = event(
        "payment_intent.created",
        json!({ "id": stripe_id("pi_"), "object": "payment_intent" }),
        None,
        now(),
    );
    deliver(&app, &fake, &unknown).await;

    // A session of a user who no longer exists (metadata only, customer unknown).
    let session = open_session(&app, &fake, &user, "pack_100").await;
    let mut orphan = paid_session(session, 500, "usd");
    let stranger = Uuid::now_v7().to_string();
    orphan["customer"] = json!(stripe_id("cus_"));
    orphan["client_reference_id"] = json!(stranger);
    orphan["metadata"]["user_id"] = json!(stranger);
    deliver(
        &app,
        &fake,
        &event("checkout.session.completed", orphan, None, now()),
    )
    .await;

    let res = post_webhook(&app, "not json", Some(fake.sign("not json", now()))).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "invalid_payload"
    );

    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 2);
    assert_eq!(balance(&app, &user).await, 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_failed_renewal_marks_the_subscription_past_due() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let session = open_session(&app, &fake, &user, "pro").await;
    let customer = session["customer"].as_str().unwrap().to_owned();
    let sub_id = stripe_id("sub_1");
    let t = now();
    let sub = subscription_object(
        &sub_id,
        &customer,
        &user.id,
        "price_pro_monthly",
        "active",
        t + 30 * 86_400,
        false,
    );
    deliver(
        &app,
        &fake,
        &event("customer.subscription.created", sub, None, t),
    )
    .await;

    let mut invoice = invoice_object(&InvoiceSpec {
        customer: &customer,
        subscription: &sub_id,
        user_id: &user.id,
        price_id: "price_pro_monthly",
        amount: 2900,
        period_start: t + 30 * 86_400,
        period_end: t + 60 * 86_400,
        billing_reason: "subscription_cycle",
    });
    invoice["paid"] = json!(false);
    invoice["status"] = json!("open");
    invoice["amount_paid"] = json!(0);
    invoice["amount_remaining"] = json!(2900);
    deliver(
        &app,
        &fake,
        &event("invoice.payment_failed", invoice, None, t + 10),
    )
    .await;
    let current = get_json(&app, &user, "/v1/billing/subscription").await["subscription"].clone();
    assert_eq!(current["plan"], "pro");
    assert_eq!(current["status"], "past_due");
    assert_eq!(balance(&app, &user).await, 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn items_without_a_stripe_price_cannot_be_bought_through_stripe() {
    let fake = StripeFake::start().await;
    let dir = gptimage2_tests::tempfile_dir::TempDir::new();
    let catalog = dir.0.join("catalog.json");
    std::fs::write(
        &catalog,
        r#"{"plans": [], "packs": [{"id": "creem_only", "name": "Creem only", "credits": 10,
            "price_cents": 100, "currency": "usd", "creem_product_id": "prod_x"}]}"#,
    )
    .unwrap();
    let mut env = fake.env();
    env.push(("GI2_BILLING_CATALOG".into(), catalog.display().to_string()));
    let app = spawn_app_with(AppOptions {
        env,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    let res = checkout(&app, &user, "creem_only").await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "item_id");
    assert!(fake.requests().is_empty(), "nothing reached Stripe");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn discounted_or_localized_checkouts_of_the_catalog_price_grant_the_pack() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    // A promotion code of this Stripe account took 1.00 off: the list price is still ours.
    let session = open_session(&app, &fake, &user, "pack_100").await;
    let mut discounted = paid_session(session, 500, "usd");
    discounted["amount_total"] = json!(400);
    discounted["total_details"]["amount_discount"] = json!(100);
    deliver(
        &app,
        &fake,
        &event("checkout.session.completed", discounted, None, now()),
    )
    .await;
    assert_eq!(balance(&app, &user).await, 100);

    // Adaptive Pricing: the customer paid in euros a price that is ours in dollars.
    let session = open_session(&app, &fake, &user, "pack_100").await;
    let mut localized = paid_session(session, 470, "eur");
    localized["currency_conversion"] = json!({
        "amount_subtotal": 500,
        "amount_total": 500,
        "fx_rate": "0.94",
        "source_currency": "usd"
    });
    deliver(
        &app,
        &fake,
        &event("checkout.session.completed", localized, None, now()),
    )
    .await;
    assert_eq!(balance(&app, &user).await, 200);

    let list = transactions(&app, &user).await;
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|t| t["flag"].is_null()), "{list:?}");
    let paid: Vec<(i64, &str)> = list
        .iter()
        .map(|t| {
            (
                t["amount_cents"].as_i64().unwrap(),
                t["currency"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        paid,
        [(470, "eur"), (400, "usd")],
        "what was paid is recorded"
    );
    app.assert_ledger_invariants().await;
}
