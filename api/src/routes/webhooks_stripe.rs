//! `POST /v1/webhooks/stripe`: Stripe's events, signature-checked over the raw body and each
//! applied exactly once (the event record and its effect commit in one transaction).
//!
//! Stripe retries anything but a 2xx for days, so an event this server cannot use (unknown
//! type, unknown user or price) is recorded and acknowledged, with a warning, rather than
//! refused.
//!
//! Event shapes follow the API version the webhook endpoint was created with: fields are read
//! as of 2024-06-20, falling back to where newer versions moved them (the invoice's `parent`,
//! a line's `pricing`, the items' periods).

use actix_web::{HttpRequest, ResponseError, post, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    billing::{
        self, ChargeRefunds, Payment, SubscriptionState,
        catalog::{Catalog, Item, Plan},
        plan_grants::{self, Charge, PlanPayment},
        stripe::{SIGNATURE_TOLERANCE, verify_signature},
    },
    db::schema::{subscriptions, users},
    error::{ApiError, Problem},
    state::AppState,
};

const PROVIDER: &str = "stripe";

#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "received": true }))]
pub struct WebhookAck {
    /// Always true: the event was applied now or earlier, or deliberately ignored.
    pub received: bool,
}

/// Receive a Stripe event (for Stripe only: signed with the endpoint's secret).
#[utoipa::path(
    tag = "webhooks",
    operation_id = "receiveStripeEvent",
    request_body(
        content = String,
        content_type = "application/json",
        description = "The event exactly as Stripe sent it: the signature covers these raw bytes."
    ),
    params(
        ("Stripe-Signature" = String, Header, description = "`t=<unix time>,v1=<hex HMAC-SHA256 of \"{t}.{body}\">`, as Stripe sends it; at most 5 minutes old."),
    ),
    responses(
        (status = 200, description = "Applied now, applied earlier (a replay), or ignored", body = WebhookAck),
        (status = 400, description = "`invalid_signature`: missing, stale or wrong signature; `invalid_payload`: not a Stripe event", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`billing_not_configured`, or `database_unavailable` (Stripe retries)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/webhooks/stripe")]
pub async fn receive_stripe_event(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<web::Json<WebhookAck>, ApiError> {
    let config = state
        .config
        .billing
        .stripe
        .as_ref()
        .ok_or_else(|| billing::not_configured("Stripe"))?;
    let header = request
        .headers()
        .get("Stripe-Signature")
        .and_then(|v| v.to_str().ok());
    if let Err(reason) = verify_signature(
        header,
        &body,
        config.webhook_secret.expose(),
        Utc::now().timestamp(),
        SIGNATURE_TOLERANCE,
    ) {
        tracing::warn!(?reason, "Stripe webhook refused");
        return Err(ApiError::bad_request(
            "invalid_signature",
            "The Stripe-Signature header is missing, stale or does not match this body.",
        ));
    }
    let event: Value = serde_json::from_slice(&body).map_err(|_| invalid_payload())?;
    let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err(invalid_payload());
    };
    let event = Event {
        id,
        kind,
        created: event["created"]
            .as_i64()
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .unwrap_or_else(Utc::now),
        object: &event["data"]["object"],
    };
    let mut conn = state.pool.get().await?;
    let applied = conn
        .transaction::<_, ApiError, _>(async |conn| {
            if billing::first_delivery(conn, PROVIDER, event.id, event.kind).await? {
                apply(conn, &state, &event).await?;
            } else {
                tracing::debug!(event = event.id, "Stripe event replayed; already applied");
            }
            Ok(())
        })
        .await;
    match applied {
        // A 4xx is permanent: the same event can never apply, so Stripe's retries are
        // pointless. It is kept for review and acknowledged; a 5xx is retried.
        Err(err) if err.status_code().is_client_error() => {
            billing::record_unapplied(&mut conn, PROVIDER, event.id, event.kind, &err.to_string())
                .await?;
        }
        other => other?,
    }
    Ok(web::Json(WebhookAck { received: true }))
}

fn invalid_payload() -> ApiError {
    ApiError::bad_request("invalid_payload", "The body is not a Stripe event.")
}

struct Event<'a> {
    id: &'a str,
    kind: &'a str,
    created: DateTime<Utc>,
    object: &'a Value,
}

async fn apply(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    event: &Event<'_>,
) -> Result<(), ApiError> {
    match event.kind {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            checkout_paid(conn, state, event).await
        }
        "invoice.paid" => invoice_paid(conn, state, event).await,
        "invoice.payment_failed" => invoice_failed(conn, event).await,
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => subscription_changed(conn, state, event).await,
        "invoice_payment.paid" => invoice_payment_paid(conn, event).await,
        "charge.refunded" => charge_refunded(conn, event).await,
        other => {
            tracing::debug!(event = event.id, kind = other, "Stripe event type not used");
            Ok(())
        }
    }
}

/// An id field that Stripe sends either as a string or, when expanded, as an object.
fn id_of(value: &Value) -> Option<&str> {
    value.as_str().or_else(|| value["id"].as_str())
}

fn time_of(value: &Value) -> Option<DateTime<Utc>> {
    value.as_i64().and_then(|t| DateTime::from_timestamp(t, 0))
}

/// The user behind a Stripe object: its customer (created by this API), else the user id
/// this API put in its metadata, if that user still exists.
async fn find_user(
    conn: &mut AsyncPgConnection,
    customer: Option<&str>,
    metadata_user: Option<&str>,
) -> QueryResult<Option<Uuid>> {
    if let Some(customer) = customer
        && let Some(user) = billing::user_for_customer(conn, PROVIDER, customer).await?
    {
        return Ok(Some(user));
    }
    let Some(user) = metadata_user.and_then(|u| u.parse::<Uuid>().ok()) else {
        return Ok(None);
    };
    let exists: bool = diesel::select(diesel::dsl::exists(users::table.find(user)))
        .get_result(conn)
        .await?;
    Ok(exists.then_some(user))
}

fn ignored(event: &Event<'_>, why: &str) -> Result<(), ApiError> {
    tracing::warn!(
        event = event.id,
        kind = event.kind,
        why,
        "Stripe event ignored"
    );
    Ok(())
}

/// A paid Checkout Session for a pack. Subscriptions are credited by `invoice.paid`; a
/// delayed payment method (`unpaid`) is credited by `async_payment_succeeded`.
async fn checkout_paid(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    event: &Event<'_>,
) -> Result<(), ApiError> {
    let session = event.object;
    if session["mode"].as_str() != Some("payment") {
        return Ok(());
    }
    if !matches!(
        session["payment_status"].as_str(),
        Some("paid" | "no_payment_required")
    ) {
        return Ok(());
    }
    let Some(session_id) = session["id"].as_str() else {
        return ignored(event, "session without id");
    };
    let catalog = &state.config.billing.catalog;
    let Some(Item::Pack(pack)) = session["metadata"]["item_id"]
        .as_str()
        .and_then(|id| catalog.item(id))
    else {
        return ignored(event, "no pack of the catalog in metadata.item_id");
    };
    let metadata_user = session["metadata"]["user_id"]
        .as_str()
        .or_else(|| session["client_reference_id"].as_str());
    let Some(user_id) = find_user(conn, id_of(&session["customer"]), metadata_user).await? else {
        return ignored(event, "no such user");
    };
    // The payment intent is what a later `charge.refunded` names, so it is the reference.
    let reference = id_of(&session["payment_intent"]).unwrap_or(session_id);
    // The metadata names the pack, but anyone who can open a session in this Stripe account
    // can write it: only the price paid decides.
    let flag = billing::price_flag(
        list_price(session),
        priced_in(session),
        pack.price_cents,
        &pack.currency,
    );
    billing::record_payment(
        conn,
        Payment {
            user_id,
            provider: PROVIDER,
            kind: "purchase",
            provider_reference: reference,
            item_id: &pack.id,
            amount_cents: session["amount_total"].as_i64().unwrap_or(0),
            currency: session["currency"].as_str().unwrap_or(&pack.currency),
            credits: pack.credits,
            credits_expire_at: None,
            flag,
        },
    )
    .await?;
    Ok(())
}

/// What a Checkout Session's items cost before discounts and taxes (`amount_subtotal`), in
/// the currency of their prices: with Adaptive Pricing the session is in the customer's
/// currency and `currency_conversion` holds the amounts in the prices' own.
fn list_price(session: &Value) -> Option<i64> {
    let conversion = &session["currency_conversion"];
    if conversion.is_object() {
        conversion["amount_subtotal"].as_i64()
    } else {
        session["amount_subtotal"].as_i64()
    }
}

/// The currency [`list_price`] is in.
fn priced_in(session: &Value) -> Option<&str> {
    let conversion = &session["currency_conversion"];
    if conversion.is_object() {
        conversion["source_currency"].as_str()
    } else {
        session["currency"].as_str()
    }
}

/// The price id of an invoice line, as of 2024-06-20 or of newer API versions.
fn line_price(line: &Value) -> Option<&str> {
    id_of(&line["price"])
        .or_else(|| line["pricing"]["price_details"]["price"].as_str())
        .or_else(|| id_of(&line["plan"]))
}

/// Whether an invoice line is a proration ("Unused time on Starter", "Remaining time on
/// Pro"), as of 2024-06-20 (`proration`) or of newer API versions (`parent.…_details`).
fn is_proration(line: &Value) -> bool {
    line["proration"]
        .as_bool()
        .or_else(|| line["parent"]["subscription_item_details"]["proration"].as_bool())
        .or_else(|| line["parent"]["invoice_item_details"]["proration"].as_bool())
        .unwrap_or(false)
}

/// Whether an invoice line bills a subscription item for a period (not a proration).
fn is_subscription_line(line: &Value) -> bool {
    !is_proration(line)
        && (line["type"].as_str() == Some("subscription")
            || line["parent"]["type"].as_str() == Some("subscription_item_details"))
}

/// What a paid subscription invoice is for, by its `billing_reason`, and the line that
/// says which plan: the subscription line for a period (never a proration line, which come
/// first), the new plan's "Remaining time on …" line for a plan change (the "Unused time on
/// …" line names the plan changed from).
fn invoice_charge<'a>(
    catalog: &'a Catalog,
    invoice: &'a Value,
) -> Option<(&'a Value, &'a Plan, Charge<'a>)> {
    let lines = invoice["lines"]["data"].as_array().map(Vec::as_slice);
    let lines = lines.unwrap_or_default();
    let planned = |keep: &dyn Fn(&Value) -> bool| {
        lines.iter().filter(|l| keep(l)).find_map(|line| {
            line_price(line)
                .and_then(|price| catalog.plan_by_stripe_price(price))
                .map(|plan| (line, plan))
        })
    };
    let amount = |line: &Value| line["amount"].as_i64().unwrap_or(0);
    let subscription_line = || planned(&is_subscription_line);
    match invoice["billing_reason"].as_str().unwrap_or("") {
        "subscription_create" | "subscription_cycle" => {
            subscription_line().map(|(line, plan)| (line, plan, Charge::Period))
        }
        "subscription_update" => {
            let previous = planned(&|l| is_proration(l) && amount(l) < 0).map(|(_, plan)| plan);
            planned(&|l| is_proration(l) && amount(l) > 0)
                .or_else(subscription_line)
                .map(|(line, plan)| (line, plan, Charge::Change { previous }))
        }
        other => subscription_line()
            .or_else(|| planned(&|_| true))
            .map(|(line, plan)| (line, plan, Charge::Other(other))),
    }
}

/// A paid subscription invoice: plan credits as [`plan_grants`] decides (a paid period in
/// full, an upgrade's pro-rata difference, nothing for $0, downgrades or other reasons).
async fn invoice_paid(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    event: &Event<'_>,
) -> Result<(), ApiError> {
    let invoice = event.object;
    let Some(invoice_id) = invoice["id"].as_str() else {
        return ignored(event, "invoice without id");
    };
    let catalog = &state.config.billing.catalog;
    let Some((line, plan, charge)) = invoice_charge(catalog, invoice) else {
        return ignored(event, "no plan of the catalog on the invoice");
    };
    let metadata_user = invoice["subscription_details"]["metadata"]["user_id"]
        .as_str()
        .or_else(|| invoice["parent"]["subscription_details"]["metadata"]["user_id"].as_str())
        .or_else(|| line["metadata"]["user_id"].as_str());
    let Some(user_id) = find_user(conn, id_of(&invoice["customer"]), metadata_user).await? else {
        return ignored(event, "no such user");
    };
    let subscription = id_of(&invoice["subscription"])
        .or_else(|| invoice["parent"]["subscription_details"]["subscription"].as_str())
        .unwrap_or(invoice_id);
    let period_end = time_of(&line["period"]["end"])
        .or_else(|| time_of(&invoice["period_end"]))
        .unwrap_or(event.created + chrono::Duration::days(31));
    let line_start = time_of(&line["period"]["start"]);
    let grace = chrono::Duration::from_std(state.config.billing.grace).unwrap_or_default();
    let granted = plan_grants::record_plan_payment(
        conn,
        PlanPayment {
            user_id,
            provider: PROVIDER,
            reference: invoice_id,
            subscription_id: subscription,
            charge,
            plan,
            // Never assume a payment: what the invoice says was paid in money.
            amount_paid: Some(invoice["amount_paid"].as_i64().unwrap_or(0)),
            currency: invoice["currency"].as_str().unwrap_or(&plan.currency),
            flag: None,
            // A period line spans the period; a proration line only its prorated part.
            period_start: match charge {
                Charge::Period => line_start,
                _ => None,
            },
            period_end,
            from: line_start.unwrap_or(event.created),
            grace,
        },
    )
    .await?;
    tracing::info!(
        event = event.id,
        invoice = invoice_id,
        ?granted,
        "Stripe invoice paid"
    );
    Ok(())
}

/// A failed renewal: the active subscription becomes `past_due`, unless a newer state is
/// stored (Stripe's own `customer.subscription.updated` follows and is authoritative).
async fn invoice_failed(conn: &mut AsyncPgConnection, event: &Event<'_>) -> Result<(), ApiError> {
    let invoice = event.object;
    let subscription = id_of(&invoice["subscription"])
        .or_else(|| invoice["parent"]["subscription_details"]["subscription"].as_str());
    let Some(subscription) = subscription else {
        return Ok(());
    };
    diesel::update(
        subscriptions::table
            .filter(subscriptions::provider.eq(PROVIDER))
            .filter(subscriptions::provider_subscription_id.eq(subscription))
            .filter(subscriptions::status.eq("active"))
            .filter(subscriptions::provider_updated_at.lt(event.created)),
    )
    .set((
        subscriptions::status.eq("past_due"),
        subscriptions::provider_updated_at.eq(event.created),
        subscriptions::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// The plan of a subscription: by its first item's price, else the plan id in metadata.
fn subscription_plan<'a>(state: &'a AppState, subscription: &Value) -> Option<&'a Plan> {
    let catalog = &state.config.billing.catalog;
    let items = subscription["items"]["data"].as_array().map(Vec::as_slice);
    items
        .unwrap_or_default()
        .iter()
        .find_map(|item| id_of(&item["price"]).and_then(|p| catalog.plan_by_stripe_price(p)))
        .or_else(|| {
            let id = subscription["metadata"]["plan_id"].as_str()?;
            catalog.plans.iter().find(|plan| plan.id == id)
        })
}

/// A subscription's new state, stored unless a newer one already is (events arrive out of
/// order; the event's `created` orders them).
async fn subscription_changed(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    event: &Event<'_>,
) -> Result<(), ApiError> {
    let subscription = event.object;
    let Some(subscription_id) = subscription["id"].as_str() else {
        return ignored(event, "subscription without id");
    };
    let Some(plan) = subscription_plan(state, subscription) else {
        return ignored(event, "no plan of the catalog on the subscription");
    };
    let metadata_user = subscription["metadata"]["user_id"].as_str();
    let Some(user_id) = find_user(conn, id_of(&subscription["customer"]), metadata_user).await?
    else {
        return ignored(event, "no such user");
    };
    let status = if event.kind == "customer.subscription.deleted" {
        "canceled"
    } else {
        subscription["status"].as_str().unwrap_or("active")
    };
    // Newer API versions moved the period onto the items.
    let current_period_end = time_of(&subscription["current_period_end"])
        .or_else(|| time_of(&subscription["items"]["data"][0]["current_period_end"]));
    let applied = billing::apply_subscription_state(
        conn,
        SubscriptionState {
            user_id,
            provider: PROVIDER,
            provider_subscription_id: subscription_id,
            plan_id: &plan.id,
            status,
            current_period_end,
            cancel_at_period_end: subscription["cancel_at_period_end"]
                .as_bool()
                .unwrap_or(false),
            provider_updated_at: event.created,
        },
    )
    .await?;
    if !applied {
        tracing::info!(
            event = event.id,
            "older Stripe subscription state ignored; a newer one is stored"
        );
    }
    Ok(())
}

/// Which payment paid which invoice (API versions from 2025-03-31, whose charges no longer
/// name their invoice): kept so a renewal's later refund finds the invoice it was recorded
/// under, whether this comes before or after `invoice.paid`.
async fn invoice_payment_paid(
    conn: &mut AsyncPgConnection,
    event: &Event<'_>,
) -> Result<(), ApiError> {
    let payment = event.object;
    let Some(invoice) = id_of(&payment["invoice"]) else {
        return ignored(event, "invoice payment without invoice");
    };
    let paid_by = &payment["payment"];
    for alias in [id_of(&paid_by["payment_intent"]), id_of(&paid_by["charge"])]
        .into_iter()
        .flatten()
    {
        billing::record_payment_alias(conn, PROVIDER, alias, invoice).await?;
    }
    Ok(())
}

/// A (partial) refund: takes back the refunded share of the unspent credits of the payment
/// the charge belongs to: a renewal's invoice (named by the charge in older API versions, by
/// an earlier `invoice_payment.paid` in newer ones) or a purchase's payment intent.
async fn charge_refunded(conn: &mut AsyncPgConnection, event: &Event<'_>) -> Result<(), ApiError> {
    let charge = event.object;
    let Some(charge_id) = charge["id"].as_str() else {
        return ignored(event, "charge without id");
    };
    let intent = id_of(&charge["payment_intent"]);
    let aliases: Vec<&str> = [intent, Some(charge_id)].into_iter().flatten().collect();
    let invoices = billing::payments_for_aliases(conn, PROVIDER, &aliases).await?;
    let payments: Vec<&str> = [id_of(&charge["invoice"])]
        .into_iter()
        .flatten()
        .chain(invoices.iter().map(String::as_str))
        .chain(intent)
        .collect();
    // Booked from this event alone: the cumulative `amount_refunded` against what is already
    // booked for the payment (`previous_attributes` comes only with `*.updated` events), under
    // the ids of the refunds listed when the list is expanded (API versions before 2022-11-15).
    let listed: Vec<(&str, i64)> = charge["refunds"]["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|r| !matches!(r["status"].as_str(), Some("failed" | "canceled")))
        .filter_map(|r| Some((r["id"].as_str()?, r["amount"].as_i64()?)))
        .collect();
    let amount_refunded = charge["amount_refunded"].as_i64().unwrap_or(0);
    let mut applied = None;
    for payment in &payments {
        applied = billing::record_charge_refunds(
            conn,
            ChargeRefunds {
                provider: PROVIDER,
                payment_reference: payment,
                charge_reference: charge_id,
                amount_refunded,
                listed: &listed,
            },
        )
        .await?;
        if applied.is_some() {
            break;
        }
    }
    match applied {
        Some((clawed, lost)) => {
            tracing::info!(charge = %charge_id, amount_refunded, clawed, lost, "Stripe refunds applied")
        }
        None => tracing::info!(
            charge = %charge_id,
            "Stripe refund for a payment not recorded here"
        ),
    }
    Ok(())
}
