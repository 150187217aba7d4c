//! Creem payments that must never be lost or misrecorded (issue #14, points 5 and 6): a
//! checkout whose customer is already linked to another account, a signed event that can
//! never be applied, renewals that record what was charged (discounts, tax, another
//! currency), and receipts that respect the currency's minor units.

use std::time::Duration;

use gptimage2_tests::{
    AppOptions, Storage, TestApp, TestUser,
    creem_fake::{self, CreemFake, Customer, Subscription},
    spawn_app_with,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::billing_creem::deliver_ok;

async fn creem_app_with(extra: Vec<(String, String)>) -> (TestApp, CreemFake) {
    let creem = CreemFake::start().await;
    let mut env = creem.app_env();
    env.extend(extra);
    let app = spawn_app_with(AppOptions {
        storage: Storage::Local,
        env,
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

/// The text of the one receipt mailed to `user`.
async fn receipt_text(app: &TestApp, user: &TestUser) -> String {
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
    receipts[0].text_body()
}

/// Creem's transaction object as `subscription.paid` carries it in `last_transaction`.
fn transaction(id: &str, amount: i64, paid: i64, discount: i64, tax: i64, currency: &str) -> Value {
    json!({
        "id": id,
        "object": "transaction",
        "amount": amount,
        "amount_paid": paid,
        "discount_amount": discount,
        "currency": currency,
        "type": "invoice",
        "tax_country": "DE",
        "tax_amount": tax,
        "status": "paid",
        "refunded_amount": null,
        "created_at": chrono::Utc::now().timestamp_millis(),
        "mode": "test",
    })
}

#[tokio::test]
async fn creem_checkout_for_a_customer_linked_to_another_account_credits_our_buyer_and_is_flagged()
{
    let (app, creem) = creem_app_with(vec![]).await;
    let first = app.register_user().await;
    let buyer = app.register_user().await;
    // One Creem customer (same card/e-mail at Creem) pays from two of our accounts.
    let customer = Customer::new(&first.email);
    deliver_ok(
        &creem,
        &app,
        &creem_fake::checkout_completed_pack(
            &first.id,
            &customer,
            "prod_pack_100",
            "pack_100",
            500,
        ),
    )
    .await;
    assert_eq!(balance(&app, &first).await, 100);

    // Our own checkout reference (metadata.user_id) names the buyer: it wins over the
    // customer link, the payment is recorded and credited, and flagged for a person to see.
    let event =
        creem_fake::checkout_completed_pack(&buyer.id, &customer, "prod_pack_100", "pack_100", 500);
    let res = creem.deliver(&app, &event).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "a paid checkout must be acknowledged, not refused forever: {}",
        res.text().await.unwrap()
    );
    assert_eq!(
        balance(&app, &buyer).await,
        100,
        "the buyer gets what they paid for"
    );
    assert_eq!(
        balance(&app, &first).await,
        100,
        "the other account gets nothing more"
    );
    let list = transactions(&app, &buyer).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        list[0]["provider_reference"],
        event["object"]["order"]["id"]
    );
    assert_eq!(list[0]["credits"], 100);
    assert_eq!(list[0]["flag"], "customer_conflict");
    // The customer stays linked to the account that first used it.
    let linked: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM billing_customers WHERE provider = 'creem' AND customer_id = $1",
            &[&customer.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(linked, 1);
    // A retry of the same event changes nothing.
    deliver_ok(&creem, &app, &event).await;
    assert_eq!(balance(&app, &buyer).await, 100);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_renewal_for_a_customer_linked_to_another_account_credits_the_subscriber() {
    let (app, creem) = creem_app_with(vec![]).await;
    let first = app.register_user().await;
    let buyer = app.register_user().await;
    let customer = Customer::new(&first.email);
    deliver_ok(
        &creem,
        &app,
        &creem_fake::checkout_completed_pack(
            &first.id,
            &customer,
            "prod_pack_100",
            "pack_100",
            500,
        ),
    )
    .await;

    let sub = Subscription::new(&buyer.id, &customer, "prod_starter_monthly", "starter");
    deliver_ok(&creem, &app, &sub.checkout_completed(chrono::Utc::now())).await;
    let res = creem
        .deliver(&app, &sub.event("subscription.paid", chrono::Utc::now()))
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap()
    );
    assert_eq!(balance(&app, &buyer).await, 500);
    let list = transactions(&app, &buyer).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["kind"], "renewal");
    assert_eq!(list[0]["flag"], "customer_conflict");
    assert_eq!(balance(&app, &first).await, 100);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_signed_event_that_can_never_apply_is_acknowledged_and_kept_for_review() {
    let (app, creem) = creem_app_with(vec![]).await;
    let user = app.register_user().await;
    let customer = Customer::new(&user.email);
    let mut event =
        creem_fake::checkout_completed_pack(&user.id, &customer, "prod_pack_100", "pack_100", 500);
    // A one-time checkout without its order: nothing tells what was paid, and no retry
    // will ever change that.
    event["object"]["order"] = Value::Null;
    let res = creem.deliver(&app, &event).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "a permanent condition must not make Creem retry: {}",
        res.text().await.unwrap()
    );
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT needs_attention FROM webhook_events WHERE provider = 'creem' AND event_id = $1",
            &[&event["id"].as_str().unwrap()],
        )
        .await
        .unwrap();
    let reason: Option<String> = row.get(0);
    assert!(
        reason.is_some_and(|r| r.contains("order")),
        "the reason is kept"
    );
    assert_eq!(balance(&app, &user).await, 0);
    // Creem's later redelivery is a replay.
    deliver_ok(&creem, &app, &event).await;
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_discounted_taxed_renewal_records_the_charged_amount_and_currency() {
    let (app, creem) = creem_app_with(vec![]).await;
    let user = app.register_user().await;
    let customer = Customer::new(&user.email);
    let sub = Subscription::new(&user.id, &customer, "prod_starter_monthly", "starter");
    deliver_ok(&creem, &app, &sub.checkout_completed(chrono::Utc::now())).await;
    let mut paid = sub.event("subscription.paid", chrono::Utc::now());
    // The 9.00 USD plan, charged in EUR: 8.00 list, 2.00 off, 1.14 VAT = 7.14 EUR paid.
    let tran = sub.last_transaction_id.clone().unwrap();
    paid["object"]["last_transaction"] = transaction(&tran, 600, 714, 200, 114, "EUR");
    deliver_ok(&creem, &app, &paid).await;

    assert_eq!(
        balance(&app, &user).await,
        500,
        "a paid period grants the plan"
    );
    let list = transactions(&app, &user).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["provider_reference"], tran.as_str());
    assert_eq!(
        list[0]["amount_cents"], 714,
        "what was charged, not the catalog's 900"
    );
    assert_eq!(list[0]["currency"], "eur");
    let text = receipt_text(&app, &user).await;
    assert!(text.contains("7.14 EUR"), "{text}");
    assert!(!text.contains("9.00"), "{text}");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_jpy_receipt_has_no_decimals() {
    let catalog = std::env::temp_dir().join(format!("gi2-jpy-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(
        &catalog,
        json!({
            "plans": [],
            "packs": [{ "id": "pack_jpy", "name": "100 credits", "credits": 100,
                        "price_cents": 1500, "currency": "jpy", "creem_product_id": "prod_pack_jpy" }],
        })
        .to_string(),
    )
    .unwrap();
    let (app, creem) = creem_app_with(vec![(
        "GI2_BILLING_CATALOG".into(),
        catalog.display().to_string(),
    )])
    .await;
    let user = app.register_user().await;
    let customer = Customer::new(&user.email);
    let mut event =
        creem_fake::checkout_completed_pack(&user.id, &customer, "prod_pack_jpy", "pack_jpy", 1500);
    event["object"]["order"]["currency"] = json!("JPY");
    deliver_ok(&creem, &app, &event).await;

    assert_eq!(balance(&app, &user).await, 100);
    let list = transactions(&app, &user).await;
    assert_eq!(list[0]["amount_cents"], 1500);
    assert_eq!(list[0]["currency"], "jpy");
    let text = receipt_text(&app, &user).await;
    assert!(text.contains("1500 JPY"), "¥1500 has no minor unit: {text}");
    assert!(!text.contains("15.00"), "{text}");
    let _ = std::fs::remove_file(catalog);
    app.assert_ledger_invariants().await;
}
