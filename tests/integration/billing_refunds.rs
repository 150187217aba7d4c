//! Refunds (issue #14 point 3): booked from each event's own payload (the charge's cumulative
//! `amount_refunded`, never `previous_attributes`, which Stripe sends only on `*.updated`
//! events), and taking back held credits too. Invariants after each.

use gptimage2::credits::ledger::{self, NewHold};
use gptimage2_tests::{
    TestApp, TestUser,
    stripe_fake::{StripeFake, event, now, refunded_charge, stripe_id},
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::billing_stripe::{balance, deliver, paid_pack_event, transactions};

async fn stripe_app() -> (TestApp, StripeFake) {
    let fake = StripeFake::start().await;
    let app = gptimage2_tests::spawn_app_with(gptimage2_tests::AppOptions {
        env: fake.env(),
        ..Default::default()
    })
    .await;
    (app, fake)
}

/// Buys `pack_100` (100 credits for 5.00 USD); returns (payment intent, customer).
async fn bought_pack(app: &TestApp, fake: &StripeFake, user: &TestUser) -> (String, String) {
    let purchase = paid_pack_event(app, fake, user).await;
    deliver(app, fake, &purchase).await;
    assert_eq!(balance(app, user).await, 100);
    let session = &purchase["data"]["object"];
    (
        session["payment_intent"].as_str().unwrap().to_owned(),
        session["customer"].as_str().unwrap().to_owned(),
    )
}

/// A `charge.refunded` event as Stripe sends it: no `previous_attributes` (only `*.updated`
/// events carry them); without an expanded refund list (API versions from 2022-11-15) when
/// `refunds` is empty, with `amount_refunded` the cumulative total.
fn charge_refunded(
    charge_id: &str,
    intent: &str,
    customer: &str,
    amount_refunded: i64,
    refunds: &[(&str, i64)],
) -> Value {
    let mut charge = refunded_charge(intent, None, customer, 500, refunds);
    charge["id"] = json!(charge_id);
    charge["amount_refunded"] = json!(amount_refunded);
    charge["refunded"] = json!(amount_refunded >= 500);
    if refunds.is_empty() {
        charge.as_object_mut().unwrap().remove("refunds");
    }
    event("charge.refunded", charge, None, now())
}

#[tokio::test]
async fn two_partial_refunds_take_back_each_share_once() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let (intent, customer) = bought_pack(&app, &fake, &user).await;
    let charge = stripe_id("ch_");

    // A quarter refunded, then another quarter: each event names only the cumulative total.
    deliver(
        &app,
        &fake,
        &charge_refunded(&charge, &intent, &customer, 125, &[]),
    )
    .await;
    assert_eq!(balance(&app, &user).await, 75, "a quarter taken back");
    let second = charge_refunded(&charge, &intent, &customer, 250, &[]);
    deliver(&app, &fake, &second).await;
    assert_eq!(balance(&app, &user).await, 50, "half taken back in all");
    // The same state sent again as a new event (Stripe retries, or a second endpoint): nothing.
    deliver(
        &app,
        &fake,
        &charge_refunded(&charge, &intent, &customer, 250, &[]),
    )
    .await;
    assert_eq!(balance(&app, &user).await, 50);

    let list = transactions(&app, &user).await;
    let refunds: Vec<&Value> = list.iter().filter(|t| t["kind"] == "refund").collect();
    assert_eq!(refunds.len(), 2, "{list:#?}");
    let booked: i64 = refunds
        .iter()
        .map(|t| t["amount_cents"].as_i64().unwrap())
        .sum();
    assert_eq!(booked, -250);
    let credits: i64 = refunds.iter().map(|t| t["credits"].as_i64().unwrap()).sum();
    assert_eq!(credits, -50);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_refund_list_after_a_cumulative_total_books_only_what_is_new() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let (intent, customer) = bought_pack(&app, &fake, &user).await;
    let charge = stripe_id("ch_");
    let (first, second) = (stripe_id("re_"), stripe_id("re_"));

    // The first refund arrives without the list, the second with the list expanded.
    deliver(
        &app,
        &fake,
        &charge_refunded(&charge, &intent, &customer, 125, &[]),
    )
    .await;
    let listed = [(first.as_str(), 125), (second.as_str(), 125)];
    deliver(
        &app,
        &fake,
        &charge_refunded(&charge, &intent, &customer, 250, &listed),
    )
    .await;
    deliver(
        &app,
        &fake,
        &charge_refunded(&charge, &intent, &customer, 250, &listed),
    )
    .await;
    assert_eq!(
        balance(&app, &user).await,
        50,
        "half taken back, not three quarters"
    );
    let booked: i64 = transactions(&app, &user)
        .await
        .iter()
        .filter(|t| t["kind"] == "refund")
        .map(|t| t["amount_cents"].as_i64().unwrap())
        .sum();
    assert_eq!(booked, -250);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_full_refund_takes_back_credits_held_by_running_generations() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let user_id: Uuid = user.id.parse().unwrap();
    let (intent, customer) = bought_pack(&app, &fake, &user).await;

    let mut conn = app.state.pool.get().await.unwrap();
    let hold = ledger::hold(
        &mut conn,
        NewHold {
            user_id,
            amount: 100,
            reference: None,
            api_key_id: None,
            description: "running generation",
        },
    )
    .await
    .unwrap();
    drop(conn);

    let refund = stripe_id("re_");
    let full = charge_refunded(
        &stripe_id("ch_"),
        &intent,
        &customer,
        500,
        &[(&refund, 500)],
    );
    deliver(&app, &fake, &full).await;

    // The generation fails: its hold is released, into nothing.
    let mut conn = app.state.pool.get().await.unwrap();
    ledger::release(&mut conn, hold).await.unwrap();
    drop(conn);
    assert_eq!(
        balance(&app, &user).await,
        0,
        "a refunded purchase leaves nothing spendable"
    );
    let list = transactions(&app, &user).await;
    let refund_row = list.iter().find(|t| t["kind"] == "refund").unwrap();
    assert_eq!(refund_row["amount_cents"], -500);
    app.assert_ledger_invariants().await;
}

async fn ledger_kinds(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let res = app
        .get_auth("/v1/credits/ledger?limit=100", &user.access_token)
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    res.json::<Value>().await.unwrap()["data"]
        .as_array()
        .unwrap()
        .clone()
}

async fn spend(app: &TestApp, user: &TestUser, amount: i64) {
    let user_id: Uuid = user.id.parse().unwrap();
    let mut conn = app.state.pool.get().await.unwrap();
    let hold = ledger::hold(
        &mut conn,
        NewHold {
            user_id,
            amount,
            reference: None,
            api_key_id: None,
            description: "test spend",
        },
    )
    .await
    .unwrap();
    ledger::capture(&mut conn, hold, amount).await.unwrap();
}

#[tokio::test]
async fn a_refund_of_a_spent_pack_takes_back_from_the_rest_of_the_balance() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let (intent, customer) = bought_pack(&app, &fake, &user).await;
    // Spending draws the oldest pack first: 96 of the first pack are spent.
    spend(&app, &user, 96).await;
    let second = paid_pack_event(&app, &fake, &user).await;
    deliver(&app, &fake, &second).await;
    assert_eq!(balance(&app, &user).await, 104);

    let refund = stripe_id("re_");
    let full = charge_refunded(
        &stripe_id("ch_"),
        &intent,
        &customer,
        500,
        &[(&refund, 500)],
    );
    deliver(&app, &fake, &full).await;
    assert_eq!(
        balance(&app, &user).await,
        4,
        "all 100 credits of the refunded pack taken back"
    );
    let list = transactions(&app, &user).await;
    let row = list.iter().find(|t| t["kind"] == "refund").unwrap();
    assert_eq!(row["credits"], -100);
    assert_eq!(row["credits_lost"], 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_refund_short_of_credits_leaves_a_debt_the_next_purchase_pays_first() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let (intent, customer) = bought_pack(&app, &fake, &user).await;
    spend(&app, &user, 60).await;

    let refund = stripe_id("re_");
    let full = charge_refunded(
        &stripe_id("ch_"),
        &intent,
        &customer,
        500,
        &[(&refund, 500)],
    );
    deliver(&app, &fake, &full).await;
    assert_eq!(balance(&app, &user).await, 0);
    let entries = ledger_kinds(&app, &user).await;
    assert!(
        entries.iter().any(|e| e["kind"] == "debt"),
        "the ledger says 60 credits are owed: {entries:#?}"
    );

    let next = paid_pack_event(&app, &fake, &user).await;
    deliver(&app, &fake, &next).await;
    assert_eq!(
        balance(&app, &user).await,
        40,
        "the next purchase pays the 60 owed first"
    );
    let entries = ledger_kinds(&app, &user).await;
    assert_eq!(entries.iter().filter(|e| e["kind"] == "debt").count(), 2);
    app.assert_ledger_invariants().await;
}
