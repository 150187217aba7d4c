//! Plan credits are granted for paid plan periods only (issue #14, point 1): a full period for
//! a first paid period (`subscription_create`, or the first cycle after a trial) and each
//! renewal (`subscription_cycle`), read from the subscription line, never a proration line;
//! an upgrade within a period grants the difference pro rata, once per period and level; a
//! downgrade, a $0 invoice or a replay grants nothing. Stripe and Creem, with balances,
//! ledger rows, transactions and receipts checked after each sequence.

use chrono::{DateTime, Months, Utc};
use gptimage2_tests::{
    AppOptions, Storage, TestApp, TestUser,
    creem_fake::{CreemFake, Customer, Subscription},
    spawn_app_with,
    stripe_fake::{InvoiceSpec, StripeFake, event, invoice_object, now, stripe_id},
};
use serde_json::{Value, json};

use crate::billing_stripe::{balance, deliver, transactions};

const STARTER: &str = "price_starter_monthly";
const PRO: &str = "price_pro_monthly";

async fn stripe_app() -> (TestApp, StripeFake) {
    let fake = StripeFake::start().await;
    let app = spawn_app_with(AppOptions {
        env: fake.env(),
        ..Default::default()
    })
    .await;
    (app, fake)
}

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

/// Receipts queued for the user.
async fn receipts(app: &TestApp, user: &TestUser) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM outbox_mails WHERE template = 'payment_receipt' AND to_address = '{}'",
        user.email
    ))
    .await
}

/// The amounts of the user's credit grants, oldest first.
async fn grants(app: &TestApp, user: &TestUser) -> Vec<i64> {
    app.db
        .client()
        .await
        .query(
            &format!(
                "SELECT amount FROM credit_grants WHERE user_id = '{}' ORDER BY created_at, id",
                user.id
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// One subscription of one user at Stripe, billed monthly from `start`.
struct StripeSub<'a> {
    user: &'a TestUser,
    customer: String,
    id: String,
    start: i64,
    end: i64,
}

impl<'a> StripeSub<'a> {
    fn new(user: &'a TestUser, start: i64) -> Self {
        Self {
            user,
            customer: stripe_id("cus_"),
            id: stripe_id("sub_"),
            start,
            end: month_after(start),
        }
    }

    /// A paid invoice with `lines`: what Stripe sends with `invoice.paid` (API 2024-06-20).
    fn invoice(&self, reason: &str, amount_paid: i64, lines: Vec<Value>) -> Value {
        let total: i64 = lines.iter().map(|l| l["amount"].as_i64().unwrap()).sum();
        let mut invoice = invoice_object(&InvoiceSpec {
            customer: &self.customer,
            subscription: &self.id,
            user_id: &self.user.id,
            price_id: STARTER,
            amount: amount_paid,
            period_start: self.start,
            period_end: self.start,
            billing_reason: reason,
        });
        let id = invoice["id"].as_str().unwrap().to_owned();
        let lines: Vec<Value> = lines
            .into_iter()
            .map(|mut l| {
                l["invoice"] = json!(id);
                l["subscription"] = json!(self.id);
                l
            })
            .collect();
        invoice["lines"]["total_count"] = json!(lines.len());
        invoice["lines"]["data"] = json!(lines);
        for field in [
            "subtotal",
            "subtotal_excluding_tax",
            "total",
            "total_excluding_tax",
        ] {
            invoice[field] = json!(total);
        }
        invoice["amount_due"] = json!(amount_paid);
        invoice["amount_paid"] = json!(amount_paid);
        // Whatever was not paid with money came from (or went to) the customer's balance.
        let (starting, ending) = if total >= 0 {
            (amount_paid - total, 0)
        } else {
            (0, total)
        };
        invoice["starting_balance"] = json!(starting);
        invoice["ending_balance"] = json!(ending);
        invoice
    }

    fn paid(&self, invoice: Value, at: i64) -> Value {
        event("invoice.paid", invoice, None, at)
    }
}

fn month_after(t: i64) -> i64 {
    DateTime::<Utc>::from_timestamp(t, 0)
        .unwrap()
        .checked_add_months(Months::new(1))
        .unwrap()
        .timestamp()
}

/// The subscription line of a period: `1 × Pro (at $29.00 / month)`.
fn subscription_line(price: &str, amount: i64, from: i64, to: i64, name: &str) -> Value {
    line(
        price,
        amount,
        from,
        to,
        false,
        &format!("1 × {name} (at ${}.00 / month)", amount / 100),
    )
}

/// A proration line, as a plan change within a period creates them: "Unused time on
/// Starter after 15 Dec 2026" (negative) and "Remaining time on Pro after 15 Dec 2026".
fn proration_line(price: &str, amount: i64, from: i64, to: i64, description: &str) -> Value {
    line(price, amount, from, to, true, description)
}

fn line(price: &str, amount: i64, from: i64, to: i64, proration: bool, description: &str) -> Value {
    let unit = if price == PRO { 2900 } else { 900 };
    json!({
        "id": stripe_id("il_"),
        "object": "line_item",
        "amount": amount,
        "amount_excluding_tax": amount,
        "currency": "usd",
        "description": description,
        "discount_amounts": [],
        "discountable": !proration,
        "discounts": [],
        "invoice": null,
        "invoice_item": if proration { json!(stripe_id("ii_")) } else { Value::Null },
        "livemode": false,
        "metadata": {},
        "period": { "end": to, "start": from },
        "plan": {
            "id": price, "object": "plan", "active": true, "amount": unit,
            "amount_decimal": unit.to_string(), "billing_scheme": "per_unit", "created": 1_700_000_000,
            "currency": "usd", "interval": "month", "interval_count": 1, "livemode": false,
            "metadata": {}, "meter": null, "nickname": null, "product": "prod_QeXtBaYsUqH2Nn",
            "tiers_mode": null, "transform_usage": null, "trial_period_days": null, "usage_type": "licensed"
        },
        "price": {
            "id": price, "object": "price", "active": true, "billing_scheme": "per_unit",
            "created": 1_700_000_000, "currency": "usd", "custom_unit_amount": null, "livemode": false,
            "lookup_key": null, "metadata": {}, "nickname": null, "product": "prod_QeXtBaYsUqH2Nn",
            "recurring": { "aggregate_usage": null, "interval": "month", "interval_count": 1, "meter": null, "trial_period_days": null, "usage_type": "licensed" },
            "tax_behavior": "unspecified", "tiers_mode": null, "transform_quantity": null,
            "type": "recurring", "unit_amount": unit, "unit_amount_decimal": unit.to_string()
        },
        "proration": proration,
        "proration_details": { "credited_items": null },
        "quantity": 1,
        "subscription": null,
        "subscription_item": stripe_id("si_"),
        "tax_amounts": [],
        "tax_rates": [],
        "type": if proration { "invoiceitem" } else { "subscription" },
        "unit_amount_excluding_tax": amount.to_string()
    })
}

/// `floor(difference × (end − from) / (end − start))`: the documented pro-rata rule.
fn pro_rata(difference: i64, start: i64, from: i64, end: i64) -> i64 {
    difference * (end - from) / (end - start)
}

#[tokio::test]
async fn a_zero_proration_subscription_update_invoice_grants_nothing() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let start = now() - 5 * 86_400;
    let sub = StripeSub::new(&user, start);
    let first = sub.invoice(
        "subscription_create",
        900,
        vec![subscription_line(STARTER, 900, start, sub.end, "Starter")],
    );
    deliver(&app, &fake, &sub.paid(first, start)).await;
    assert_eq!(balance(&app, &user).await, 500);

    // A plan change whose prorations net to $0 (a same-price swap, or fully covered): paid,
    // but nothing was charged.
    let at = start + 86_400;
    let update = sub.invoice(
        "subscription_update",
        0,
        vec![
            proration_line(
                STARTER,
                -870,
                at,
                sub.end,
                "Unused time on Starter after 6 Dec",
            ),
            proration_line(PRO, 870, at, sub.end, "Remaining time on Pro after 6 Dec"),
        ],
    );
    deliver(&app, &fake, &sub.paid(update, at)).await;

    assert_eq!(
        balance(&app, &user).await,
        500,
        "a $0 subscription_update invoice granted credits"
    );
    assert_eq!(grants(&app, &user).await, vec![500]);
    assert_eq!(transactions(&app, &user).await.len(), 1);
    assert_eq!(receipts(&app, &user).await, 1);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_downgrade_upgrade_loop_grants_only_the_pro_rata_difference_never_a_full_period() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let start = now() - 10 * 86_400;
    let sub = StripeSub::new(&user, start);
    let first = sub.invoice(
        "subscription_create",
        900,
        vec![subscription_line(STARTER, 900, start, sub.end, "Starter")],
    );
    deliver(&app, &fake, &sub.paid(first, start)).await;

    // Upgrade half-way through the period, invoiced at once (`always_invoice`): the customer
    // pays the prorated difference.
    let half = start + (sub.end - start) / 2;
    let upgrade = |at: i64, paid: i64| {
        sub.invoice(
            "subscription_update",
            paid,
            vec![
                proration_line(STARTER, -450, at, sub.end, "Unused time on Starter"),
                proration_line(PRO, 1450, at, sub.end, "Remaining time on Pro"),
            ],
        )
    };
    let downgrade = |at: i64| {
        sub.invoice(
            "subscription_update",
            0,
            vec![
                proration_line(PRO, -1400, at, sub.end, "Unused time on Pro"),
                proration_line(STARTER, 430, at, sub.end, "Remaining time on Starter"),
            ],
        )
    };
    deliver(&app, &fake, &sub.paid(upgrade(half, 1000), half)).await;
    let after_upgrade = 500 + pro_rata(2000, start, half, sub.end);
    assert_eq!(balance(&app, &user).await, after_upgrade);

    // Then the loop: down to Starter (a credit to the customer's balance), up to Pro again
    // (paid from that balance, or with money): never another grant in this period.
    for (i, paid) in [(1, 0), (2, 970), (3, 0)] {
        let at = half + i * 3600;
        deliver(&app, &fake, &sub.paid(downgrade(at), at)).await;
        deliver(&app, &fake, &sub.paid(upgrade(at + 60, paid), at + 60)).await;
    }
    assert_eq!(
        balance(&app, &user).await,
        after_upgrade,
        "a plan change loop granted more than the first upgrade's pro-rata difference"
    );

    // The next period renews Pro in full.
    let next_end = month_after(sub.end);
    let cycle = sub.invoice(
        "subscription_cycle",
        2900,
        vec![subscription_line(PRO, 2900, sub.end, next_end, "Pro")],
    );
    deliver(&app, &fake, &sub.paid(cycle, sub.end)).await;
    assert_eq!(balance(&app, &user).await, after_upgrade + 2500);
    assert_eq!(
        grants(&app, &user).await,
        vec![500, pro_rata(2000, start, half, sub.end), 2500]
    );
    // Every payment with money is recorded (so a refund finds it) with its receipt.
    let list = transactions(&app, &user).await;
    let credits: Vec<i64> = list
        .iter()
        .map(|t| t["credits"].as_i64().unwrap())
        .collect();
    assert_eq!(
        credits,
        vec![2500, 0, pro_rata(2000, start, half, sub.end), 500]
    );
    assert_eq!(receipts(&app, &user).await, 4);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_trial_grants_nothing_and_the_first_paid_cycle_grants_the_plan() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let start = now() - 86_400;
    let sub = StripeSub::new(&user, start);
    let trial_end = start + 14 * 86_400;
    let trial = sub.invoice(
        "subscription_create",
        0,
        vec![subscription_line(PRO, 0, start, trial_end, "Pro")],
    );
    let mut trial_line = trial["lines"]["data"][0].clone();
    trial_line["description"] = json!("Trial period for Pro");
    let mut trial = trial;
    trial["lines"]["data"][0] = trial_line;
    deliver(&app, &fake, &sub.paid(trial, start)).await;
    assert_eq!(
        balance(&app, &user).await,
        0,
        "the $0 trial invoice granted credits"
    );
    assert!(transactions(&app, &user).await.is_empty());
    assert_eq!(receipts(&app, &user).await, 0);

    let first_paid = sub.invoice(
        "subscription_cycle",
        2900,
        vec![subscription_line(
            PRO,
            2900,
            trial_end,
            month_after(trial_end),
            "Pro",
        )],
    );
    deliver(&app, &fake, &sub.paid(first_paid, trial_end)).await;
    assert_eq!(balance(&app, &user).await, 2500);
    assert_eq!(grants(&app, &user).await, vec![2500]);
    assert_eq!(receipts(&app, &user).await, 1);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_cycle_invoice_whose_first_line_is_a_proration_grants_the_subscription_lines_plan() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let start = now() - 25 * 86_400;
    let sub = StripeSub::new(&user, start);
    let first = sub.invoice(
        "subscription_create",
        900,
        vec![subscription_line(STARTER, 900, start, sub.end, "Starter")],
    );
    deliver(&app, &fake, &sub.paid(first, start)).await;

    // Upgraded with `create_prorations`: the prorations wait for the next invoice, where
    // they come first, before the new period's subscription line.
    let at = start + 20 * 86_400;
    let next_end = month_after(sub.end);
    let cycle = sub.invoice(
        "subscription_cycle",
        3233,
        vec![
            proration_line(
                STARTER,
                -300,
                at,
                sub.end,
                "Unused time on Starter after 20 Nov",
            ),
            proration_line(PRO, 633, at, sub.end, "Remaining time on Pro after 20 Nov"),
            subscription_line(PRO, 2900, sub.end, next_end, "Pro"),
        ],
    );
    deliver(&app, &fake, &sub.paid(cycle.clone(), sub.end)).await;
    assert_eq!(
        balance(&app, &user).await,
        500 + 2500,
        "the renewal was read from the first (proration) line"
    );
    let list = transactions(&app, &user).await;
    assert_eq!(list[0]["item_id"], "pro");
    assert_eq!(list[0]["provider_reference"], cycle["id"]);
    // Credits last until the new period's end plus grace (3 days).
    let credits = app
        .get_auth("/v1/credits", &user.access_token)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let expiry: DateTime<Utc> = credits["grants"][1]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(expiry.timestamp(), next_end + 3 * 86_400);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_replayed_invoice_event_grants_once() {
    let (app, fake) = stripe_app().await;
    let user = app.register_user().await;
    let start = now() - 86_400;
    let sub = StripeSub::new(&user, start);
    let invoice = sub.invoice(
        "subscription_create",
        2900,
        vec![subscription_line(PRO, 2900, start, sub.end, "Pro")],
    );
    // The same invoice in two events (`invoice.paid` resent under a new event id).
    for _ in 0..2 {
        deliver(&app, &fake, &sub.paid(invoice.clone(), start)).await;
    }
    let mut replay = sub.paid(invoice, start);
    replay["id"] = json!(stripe_id("evt_1"));
    deliver(&app, &fake, &replay).await;
    deliver(&app, &fake, &replay).await;
    assert_eq!(balance(&app, &user).await, 2500);
    assert_eq!(grants(&app, &user).await, vec![2500]);
    assert_eq!(transactions(&app, &user).await.len(), 1);
    assert_eq!(receipts(&app, &user).await, 1);
    app.assert_ledger_invariants().await;
}

// Creem ----------------------------------------------------------------------------------

use crate::billing_creem::deliver_ok;

#[tokio::test]
async fn creem_an_upgrade_within_a_period_grants_the_pro_rata_difference_once() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let customer = Customer::new(&user.email);
    let starter = Subscription::new(&user.id, &customer, "prod_starter_monthly", "starter");
    let t0 = starter.period_start;
    deliver_ok(&creem, &app, &starter.checkout_completed(t0)).await;
    deliver_ok(&creem, &app, &starter.event("subscription.paid", t0)).await;
    assert_eq!(balance(&app, &user).await, 500);

    // Upgraded half-way (`proration-charge-immediately`): Creem charges the difference and
    // sends the subscription, now on Pro, same period, with the new transaction.
    let half = t0 + (starter.period_end - t0) / 2;
    let mut pro = starter.clone();
    pro.product_id = "prod_pro_monthly".into();
    pro.last_transaction_id = Some(format!("tran_{}", uuid::Uuid::new_v4().simple()));
    deliver_ok(&creem, &app, &pro.event("subscription.update", half)).await;
    deliver_ok(&creem, &app, &pro.event("subscription.paid", half)).await;
    let period = (starter.period_end - t0).num_seconds();
    let remaining = (starter.period_end - half).num_seconds();
    let difference = 2000 * remaining / period;
    assert_eq!(
        balance(&app, &user).await,
        500 + difference,
        "a mid-period upgrade granted a full period of the new plan"
    );

    // Down and up again within the same period: nothing more.
    for i in 1..=2 {
        let at = half + chrono::Duration::hours(i);
        let mut down = starter.clone();
        down.last_transaction_id = Some(format!("tran_{}", uuid::Uuid::new_v4().simple()));
        deliver_ok(&creem, &app, &down.event("subscription.update", at)).await;
        deliver_ok(&creem, &app, &down.event("subscription.paid", at)).await;
        let mut up = pro.clone();
        up.last_transaction_id = Some(format!("tran_{}", uuid::Uuid::new_v4().simple()));
        let at = at + chrono::Duration::minutes(1);
        deliver_ok(&creem, &app, &up.event("subscription.update", at)).await;
        deliver_ok(&creem, &app, &up.event("subscription.paid", at)).await;
    }
    assert_eq!(balance(&app, &user).await, 500 + difference);
    assert_eq!(grants(&app, &user).await, vec![500, difference]);

    // The next period renews Pro in full.
    let next = pro.next_period();
    deliver_ok(
        &creem,
        &app,
        &next.event("subscription.paid", next.period_start),
    )
    .await;
    assert_eq!(balance(&app, &user).await, 500 + difference + 2500);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_a_trial_grants_nothing_until_the_first_paid_period() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let customer = Customer::new(&user.email);
    let mut sub = Subscription::new(&user.id, &customer, "prod_pro_monthly", "pro");
    sub.status = "trialing".into();
    let t0 = sub.period_start;
    deliver_ok(&creem, &app, &sub.checkout_completed(t0)).await;
    deliver_ok(&creem, &app, &sub.event("subscription.trialing", t0)).await;
    // Whatever Creem sends while the subscription is trialing pays for nothing.
    deliver_ok(&creem, &app, &sub.event("subscription.paid", t0)).await;
    assert_eq!(
        balance(&app, &user).await,
        0,
        "a trialing subscription granted credits"
    );
    assert_eq!(receipts(&app, &user).await, 0);

    let mut paid = sub.next_period();
    paid.status = "active".into();
    deliver_ok(
        &creem,
        &app,
        &paid.event("subscription.active", paid.period_start),
    )
    .await;
    deliver_ok(
        &creem,
        &app,
        &paid.event("subscription.paid", paid.period_start),
    )
    .await;
    assert_eq!(balance(&app, &user).await, 2500);
    assert_eq!(grants(&app, &user).await, vec![2500]);
    assert_eq!(receipts(&app, &user).await, 1);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn creem_a_replayed_paid_event_grants_once() {
    let (app, creem) = creem_app().await;
    let user = app.register_user().await;
    let customer = Customer::new(&user.email);
    let sub = Subscription::new(&user.id, &customer, "prod_pro_monthly", "pro");
    let paid = sub.event("subscription.paid", sub.period_start);
    deliver_ok(&creem, &app, &paid).await;
    deliver_ok(&creem, &app, &paid).await;
    // Resent under a new event id.
    let mut again = paid.clone();
    again["id"] = json!(format!("evt_{}", uuid::Uuid::new_v4().simple()));
    deliver_ok(&creem, &app, &again).await;
    assert_eq!(balance(&app, &user).await, 2500);
    assert_eq!(grants(&app, &user).await, vec![2500]);
    assert_eq!(receipts(&app, &user).await, 1);
    app.assert_ledger_invariants().await;
}
