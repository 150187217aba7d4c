//! A local stand-in for Stripe's REST API on a wiremock server, speaking its wire format:
//! bearer secret key, form-encoded requests, JSON objects with Stripe's ids and fields. It
//! records every request so tests can assert their shapes. Plus builders of complete,
//! realistic webhook events (API version 2024-06-20, the webhook endpoint's version) and
//! their `Stripe-Signature`. Answers parse as async-stripe's (newer) types: their required
//! fields are all present.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

pub const API_VERSION: &str = "2024-06-20";

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The form-encoded body, in order (`metadata[user_id]` style keys).
    pub form: Vec<(String, String)>,
}

impl Recorded {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<Recorded>,
    /// Requests refused for a wrong key or body, with why.
    rejections: Vec<String>,
    sessions: HashMap<String, Value>,
    customers: HashMap<String, Value>,
}

type State = Arc<Mutex<Shared>>;

fn lock(state: &State) -> MutexGuard<'_, Shared> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stripe-looking random id: `prefix` + 24 alphanumerics.
pub fn stripe_id(prefix: &str) -> String {
    let raw = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &raw[..24])
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub struct StripeFake {
    pub server: MockServer,
    pub secret_key: String,
    pub webhook_secret: String,
    state: State,
}

impl StripeFake {
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let secret_key = stripe_id("sk_test_");
        let webhook_secret = stripe_id("whsec_");
        let state: State = Arc::new(Mutex::new(Shared::default()));
        Mock::given(any())
            .respond_with(Api {
                state: state.clone(),
                secret_key: secret_key.clone(),
            })
            .mount(&server)
            .await;
        Self {
            server,
            secret_key,
            webhook_secret,
            state,
        }
    }

    /// The `GI2_*` variables that point the app at this fake (at the root of its port:
    /// Stripe clients put `/v1/...` right after the host).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GI2_STRIPE_SECRET_KEY".into(), self.secret_key.clone()),
            (
                "GI2_STRIPE_WEBHOOK_SECRET".into(),
                self.webhook_secret.clone(),
            ),
            ("GI2_STRIPE_API_BASE".into(), self.server.uri()),
        ]
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    pub fn rejections(&self) -> Vec<String> {
        lock(&self.state).rejections.clone()
    }

    /// A Checkout Session the fake created.
    pub fn session(&self, id: &str) -> Value {
        lock(&self.state)
            .sessions
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("no checkout session {id}"))
    }

    /// The `Stripe-Signature` header value for `payload` signed at `timestamp`.
    pub fn sign(&self, payload: &str, timestamp: i64) -> String {
        sign_with(&self.webhook_secret, payload, timestamp)
    }
}

pub fn sign_with(secret: &str, payload: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{payload}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

fn stripe_error(status: u16, kind: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": { "type": kind, "message": message, "request_log_url": null }
    }))
}

struct Api {
    state: State,
    secret_key: String,
}

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let method = request.method.as_str().to_owned();
        let path = request.url.path().to_owned();
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let mut state = lock(&self.state);
        if header("authorization") != format!("Bearer {}", self.secret_key) {
            state.rejections.push(format!("{method} {path}: bad key"));
            return stripe_error(
                401,
                "invalid_request_error",
                "Invalid API Key provided: sk_test_****",
            );
        }
        if method == "POST"
            && !header("content-type").starts_with("application/x-www-form-urlencoded")
        {
            state
                .rejections
                .push(format!("{method} {path}: not form-encoded"));
            return stripe_error(400, "invalid_request_error", "Invalid request body.");
        }
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        let recorded = Recorded {
            method: method.clone(),
            path: path.clone(),
            form,
        };
        state.requests.push(recorded.clone());
        let f = |k: &str| recorded.get(k).map(str::to_owned);
        let created = now();
        match (method.as_str(), path.as_str()) {
            ("POST", "/v1/customers") => {
                let id = stripe_id("cus_");
                let customer = json!({
                    "id": id,
                    "object": "customer",
                    "address": null,
                    "balance": 0,
                    "created": created,
                    "currency": null,
                    "default_source": null,
                    "delinquent": false,
                    "description": null,
                    "discount": null,
                    "email": f("email"),
                    "invoice_prefix": "7C1E9B3A",
                    "invoice_settings": {
                        "custom_fields": null,
                        "default_payment_method": null,
                        "footer": null,
                        "rendering_options": null
                    },
                    "livemode": false,
                    "metadata": { "user_id": f("metadata[user_id]") },
                    "name": f("name"),
                    "next_invoice_sequence": 1,
                    "phone": null,
                    "preferred_locales": [],
                    "shipping": null,
                    "tax_exempt": "none",
                    "test_clock": null
                });
                state.customers.insert(id, customer.clone());
                ResponseTemplate::new(200).set_body_json(customer)
            }
            ("POST", "/v1/checkout/sessions") => {
                let required = ["mode", "success_url", "line_items[0][price]"];
                if let Some(missing) = required.iter().find(|k| f(k).is_none()) {
                    return stripe_error(
                        400,
                        "invalid_request_error",
                        &format!("Missing required param: {missing}."),
                    );
                }
                let session = checkout_session_object(&recorded, created);
                let id = session["id"].as_str().unwrap_or_default().to_owned();
                state.sessions.insert(id, session.clone());
                ResponseTemplate::new(200).set_body_json(session)
            }
            ("POST", "/v1/billing_portal/sessions") => {
                let Some(customer) = f("customer") else {
                    return stripe_error(
                        400,
                        "invalid_request_error",
                        "Missing required param: customer.",
                    );
                };
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": stripe_id("bps_"),
                    "object": "billing_portal.session",
                    "configuration": stripe_id("bpc_"),
                    "created": created,
                    "customer": customer,
                    "flow": null,
                    "livemode": false,
                    "locale": null,
                    "on_behalf_of": null,
                    "return_url": f("return_url"),
                    "url": format!("https://billing.stripe.com/p/session/test_{}", stripe_id(""))
                }))
            }
            ("DELETE", p) if p.starts_with("/v1/subscriptions/sub_") => {
                let id = &p["/v1/subscriptions/".len()..];
                let mut sub = subscription_object(
                    id,
                    "cus_unknown",
                    "",
                    "price_starter_monthly",
                    "canceled",
                    created,
                    false,
                );
                sub["canceled_at"] = json!(created);
                sub["ended_at"] = json!(created);
                ResponseTemplate::new(200).set_body_json(sub)
            }
            _ => stripe_error(
                404,
                "invalid_request_error",
                &format!("Unrecognized request URL ({method}: {path})."),
            ),
        }
    }
}

/// One object from several `json!` parts (one literal this large overflows the macro).
fn merge<const N: usize>(parts: [Value; N]) -> Value {
    let mut all = serde_json::Map::new();
    for part in parts {
        if let Value::Object(map) = part {
            all.extend(map);
        }
    }
    Value::Object(all)
}

/// A fresh Checkout Session as Stripe returns it on creation (open, unpaid).
fn checkout_session_object(r: &Recorded, created: i64) -> Value {
    let id = stripe_id("cs_test_a1");
    let mode = r.get("mode").unwrap_or("payment");
    let metadata: serde_json::Map<String, Value> = r
        .form
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((key.to_owned(), json!(v)))
        })
        .collect();
    merge([
        json!({
            "id": id,
            "object": "checkout.session",
            "after_expiration": null,
            "allow_promotion_codes": null,
            "amount_subtotal": null,
            "amount_total": null,
            "automatic_tax": { "enabled": false, "liability": null, "status": null },
            "billing_address_collection": null,
            "cancel_url": r.get("cancel_url"),
            "client_reference_id": r.get("client_reference_id"),
            "client_secret": null,
            "consent": null,
            "consent_collection": null,
            "created": created,
            "currency": null,
            "currency_conversion": null,
            "custom_fields": [],
            "custom_text": {
                "after_submit": null,
                "shipping_address": null,
                "submit": null,
                "terms_of_service_acceptance": null
            },
            "customer": r.get("customer"),
            "customer_creation": null,
            "customer_details": null,
            "customer_email": null,
            "expires_at": created + 86_400
        }),
        json!({
            "invoice": null,
            "invoice_creation": null,
            "livemode": false,
            "locale": null,
            "metadata": metadata,
            "mode": mode,
            "payment_intent": null,
            "payment_link": null,
            "payment_method_collection": if mode == "subscription" { "always" } else { "if_required" },
            "payment_method_configuration_details": null,
            "payment_method_options": { "card": { "request_three_d_secure": "automatic" } },
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "phone_number_collection": { "enabled": false },
            "recovered_from": null,
            "saved_payment_method_options": null,
            "setup_intent": null,
            "shipping_address_collection": null,
            "shipping_cost": null,
            "shipping_details": null,
            "shipping_options": [],
            "status": "open",
            "submit_type": null,
            "subscription": null,
            "success_url": r.get("success_url"),
            "total_details": null,
            "ui_mode": "hosted",
            "url": format!("https://checkout.stripe.com/c/pay/{id}#fidkdWxOYHwnPyd1blpxYHZxWjA0")
        }),
    ])
}

/// The session after the customer paid `amount` in `currency` (what
/// `checkout.session.completed` carries).
pub fn paid_session(mut session: Value, amount: i64, currency: &str) -> Value {
    let mode = session["mode"].as_str().unwrap_or("payment").to_owned();
    session["status"] = json!("complete");
    session["payment_status"] = json!("paid");
    session["amount_subtotal"] = json!(amount);
    session["amount_total"] = json!(amount);
    session["currency"] = json!(currency);
    session["url"] = Value::Null;
    session["customer_details"] = json!({
        "address": { "city": null, "country": "DE", "line1": null, "line2": null, "postal_code": null, "state": null },
        "email": "buyer@example.com",
        "name": "Test Buyer",
        "phone": null,
        "tax_exempt": "none",
        "tax_ids": []
    });
    session["total_details"] =
        json!({ "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 });
    if mode == "payment" {
        session["payment_intent"] = json!(stripe_id("pi_"));
    } else {
        session["subscription"] = json!(stripe_id("sub_"));
        session["invoice"] = json!(stripe_id("in_"));
    }
    session
}

/// A complete event envelope around `object`.
pub fn event(kind: &str, object: Value, previous_attributes: Option<Value>, created: i64) -> Value {
    let mut data = json!({ "object": object });
    if let Some(previous) = previous_attributes {
        data["previous_attributes"] = previous;
    }
    json!({
        "id": stripe_id("evt_1"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": data,
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": kind
    })
}

fn price_object(price_id: &str, amount: i64, recurring: bool) -> Value {
    json!({
        "id": price_id,
        "object": "price",
        "active": true,
        "billing_scheme": "per_unit",
        "created": 1_700_000_000,
        "currency": "usd",
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": null,
        "metadata": {},
        "nickname": null,
        "product": "prod_QeXtBaYsUqH2Nn",
        "recurring": if recurring {
            json!({ "aggregate_usage": null, "interval": "month", "interval_count": 1, "meter": null, "trial_period_days": null, "usage_type": "licensed" })
        } else {
            Value::Null
        },
        "tax_behavior": "unspecified",
        "tiers_mode": null,
        "transform_quantity": null,
        "type": if recurring { "recurring" } else { "one_time" },
        "unit_amount": amount,
        "unit_amount_decimal": amount.to_string()
    })
}

fn plan_object(price_id: &str, amount: i64) -> Value {
    json!({
        "id": price_id,
        "object": "plan",
        "active": true,
        "amount": amount,
        "amount_decimal": amount.to_string(),
        "billing_scheme": "per_unit",
        "created": 1_700_000_000,
        "currency": "usd",
        "interval": "month",
        "interval_count": 1,
        "livemode": false,
        "metadata": {},
        "meter": null,
        "nickname": null,
        "product": "prod_QeXtBaYsUqH2Nn",
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": null,
        "usage_type": "licensed"
    })
}

/// A subscription object (with the fields of the webhook version and of newer ones); `user_id` goes into its metadata as checkout set it.
pub fn subscription_object(
    id: &str,
    customer: &str,
    user_id: &str,
    price_id: &str,
    status: &str,
    current_period_end: i64,
    cancel_at_period_end: bool,
) -> Value {
    let start = current_period_end - 30 * 86_400;
    merge([
        json!({
            "id": id,
            "object": "subscription",
            "application": null,
            "application_fee_percent": null,
            "automatic_tax": { "enabled": false, "liability": null },
            "billing_cycle_anchor": start,
        "billing_cycle_anchor_config": null,
        "billing_mode": { "type": "classic" },
        "billing_schedules": [],
        "billing_thresholds": null,
            "cancel_at": if cancel_at_period_end { json!(current_period_end) } else { Value::Null },
            "cancel_at_period_end": cancel_at_period_end,
            "canceled_at": null,
            "cancellation_details": { "comment": null, "feedback": null, "reason": null },
            "collection_method": "charge_automatically",
            "created": start,
            "currency": "usd",
            "current_period_end": current_period_end,
            "current_period_start": start,
            "customer": customer,
            "days_until_due": null,
            "default_payment_method": stripe_id("pm_"),
            "default_source": null,
            "default_tax_rates": [],
            "description": null,
            "discount": null,
            "discounts": [],
            "ended_at": null
        }),
        json!({
            "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
            "items": {
                "object": "list",
                "data": [{
                    "id": stripe_id("si_"),
                    "object": "subscription_item",
                    "billing_thresholds": null,
                    "created": start,
        "current_period_end": current_period_end,
        "current_period_start": start,
        "discounts": [],
        "metadata": {},
        "plan": plan_object(price_id, 900),
                    "price": price_object(price_id, 900, true),
                    "quantity": 1,
                    "subscription": id,
                    "tax_rates": []
                }],
                "has_more": false,
                "total_count": 1,
                "url": format!("/v1/subscription_items?subscription={id}")
            },
            "latest_invoice": stripe_id("in_"),
            "livemode": false,
            "metadata": if user_id.is_empty() { json!({}) } else { json!({ "user_id": user_id }) },
            "next_pending_invoice_item_invoice": null,
            "on_behalf_of": null,
            "pause_collection": null,
            "payment_settings": {
                "payment_method_options": null,
                "payment_method_types": null,
                "save_default_payment_method": "off"
            },
            "pending_invoice_item_interval": null,
            "pending_setup_intent": null,
            "pending_update": null,
            "schedule": null,
            "start_date": start,
            "status": status,
            "test_clock": null,
            "transfer_data": null,
            "trial_end": null,
            "trial_settings": { "end_behavior": { "missing_payment_method": "create_invoice" } },
            "trial_start": null
        }),
    ])
}

/// A paid subscription invoice for one period (`period_start`..`period_end`).
pub struct InvoiceSpec<'a> {
    pub customer: &'a str,
    pub subscription: &'a str,
    pub user_id: &'a str,
    pub price_id: &'a str,
    pub amount: i64,
    pub period_start: i64,
    pub period_end: i64,
    pub billing_reason: &'a str,
}

pub fn invoice_object(spec: &InvoiceSpec<'_>) -> Value {
    let id = stripe_id("in_1");
    merge([
        json!({
            "id": id,
            "object": "invoice",
            "account_country": "US",
            "account_name": "GPT Image 2",
            "account_tax_ids": null,
            "amount_due": spec.amount,
            "amount_paid": spec.amount,
            "amount_remaining": 0,
            "amount_shipping": 0,
            "application": null,
            "application_fee_amount": null,
            "attempt_count": 1,
            "attempted": true,
            "auto_advance": false,
            "automatic_tax": { "enabled": false, "liability": null, "status": null },
            "billing_reason": spec.billing_reason,
            "charge": stripe_id("ch_"),
            "collection_method": "charge_automatically",
            "created": spec.period_start,
            "currency": "usd",
            "custom_fields": null,
            "customer": spec.customer,
            "customer_address": null,
            "customer_email": "buyer@example.com",
            "customer_name": "Test Buyer",
            "customer_phone": null,
            "customer_shipping": null,
            "customer_tax_exempt": "none",
            "customer_tax_ids": [],
            "default_payment_method": null,
            "default_source": null,
            "default_tax_rates": [],
            "description": null,
            "discount": null,
            "discounts": [],
            "due_date": null,
            "effective_at": spec.period_start
        }),
        json!({
            "ending_balance": 0,
            "footer": null,
            "from_invoice": null,
            "hosted_invoice_url": format!("https://invoice.stripe.com/i/acct_1Nv0FGQ9RKHgCVdK/test_{id}"),
            "invoice_pdf": format!("https://pay.stripe.com/invoice/acct_1Nv0FGQ9RKHgCVdK/test_{id}/pdf"),
            "issuer": { "type": "self" },
            "last_finalization_error": null,
            "latest_revision": null,
            "lines": {
                "object": "list",
                "data": [{
                    "id": stripe_id("il_"),
                    "object": "line_item",
                    "amount": spec.amount,
                    "amount_excluding_tax": spec.amount,
                    "currency": "usd",
                    "description": "1 × Plan (at $9.00 / month)",
                    "discount_amounts": [],
                    "discountable": true,
                    "discounts": [],
                    "invoice": id,
                    "livemode": false,
                    "metadata": {},
                    "period": { "end": spec.period_end, "start": spec.period_start },
                    "plan": plan_object(spec.price_id, spec.amount),
                    "price": price_object(spec.price_id, spec.amount, true),
                    "proration": false,
                    "proration_details": { "credited_items": null },
                    "quantity": 1,
                    "subscription": spec.subscription,
                    "subscription_item": stripe_id("si_"),
                    "tax_amounts": [],
                    "tax_rates": [],
                    "type": "subscription",
                    "unit_amount_excluding_tax": spec.amount.to_string()
                }],
                "has_more": false,
                "total_count": 1,
                "url": format!("/v1/invoices/{id}/lines")
            },
            "livemode": false,
            "metadata": {},
            "next_payment_attempt": null
        }),
        json!({
            "number": "7C1E9B3A-0001",
            "on_behalf_of": null,
            "paid": true,
            "paid_out_of_band": false,
            "payment_intent": stripe_id("pi_"),
            "payment_settings": { "default_mandate": null, "payment_method_options": null, "payment_method_types": null },
            "period_end": spec.period_start,
            "period_start": spec.period_start,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "quote": null,
            "receipt_number": null,
            "rendering": null,
            "shipping_cost": null,
            "shipping_details": null,
            "starting_balance": 0,
            "statement_descriptor": null,
            "status": "paid",
            "status_transitions": {
                "finalized_at": spec.period_start,
                "marked_uncollectible_at": null,
                "paid_at": spec.period_start,
                "voided_at": null
            },
            "subscription": spec.subscription,
            "subscription_details": { "metadata": { "user_id": spec.user_id } },
            "subtotal": spec.amount,
            "subtotal_excluding_tax": spec.amount,
            "tax": null,
            "test_clock": null,
            "total": spec.amount,
            "total_discount_amounts": [],
            "total_excluding_tax": spec.amount,
            "total_tax_amounts": [],
            "transfer_data": null,
            "webhooks_delivered_at": spec.period_start
        }),
    ])
}

/// An `invoice_payment` (API versions from 2025-03-31): which payment intent paid an invoice,
/// as Stripe sends it with `invoice_payment.paid`.
pub fn invoice_payment_object(invoice: &str, payment_intent: &str, amount: i64) -> Value {
    let paid_at = now();
    json!({
        "id": stripe_id("inpay_"),
        "object": "invoice_payment",
        "amount_paid": amount,
        "amount_requested": amount,
        "created": paid_at,
        "currency": "usd",
        "invoice": invoice,
        "is_default": true,
        "livemode": false,
        "payment": { "type": "payment_intent", "payment_intent": payment_intent },
        "status": "paid",
        "status_transitions": { "canceled_at": null, "paid_at": paid_at }
    })
}

/// A charge of `amount` (for `payment_intent`, and `invoice` for renewals) after the
/// given refunds `(refund id, amount)`.
pub fn refunded_charge(
    payment_intent: &str,
    invoice: Option<&str>,
    customer: &str,
    amount: i64,
    refunds: &[(&str, i64)],
) -> Value {
    let id = stripe_id("ch_");
    let refunded: i64 = refunds.iter().map(|(_, a)| a).sum();
    let created = now();
    let refund_objects: Vec<Value> = refunds
        .iter()
        .map(|(refund_id, refund_amount)| {
            json!({
                "id": refund_id,
                "object": "refund",
                "amount": refund_amount,
                "balance_transaction": stripe_id("txn_"),
                "charge": id,
                "created": created,
                "currency": "usd",
                "destination_details": { "card": { "reference_status": "pending", "reference_type": "acquirer_reference_number", "type": "refund" }, "type": "card" },
                "metadata": {},
                "payment_intent": payment_intent,
                "reason": "requested_by_customer",
                "receipt_number": null,
                "source_transfer_reversal": null,
                "status": "succeeded",
                "transfer_reversal": null
            })
        })
        .collect();
    merge([
        json!({
            "id": id,
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": refunded,
            "application": null,
            "application_fee": null,
            "application_fee_amount": null,
            "balance_transaction": stripe_id("txn_"),
            "billing_details": {
                "address": { "city": null, "country": "DE", "line1": null, "line2": null, "postal_code": null, "state": null },
                "email": "buyer@example.com",
                "name": "Test Buyer",
                "phone": null
            },
            "calculated_statement_descriptor": "GPTIMAGE2",
            "captured": true,
            "created": created - 3_600,
            "currency": "usd",
            "customer": customer,
            "description": null,
            "destination": null,
            "dispute": null,
            "disputed": false,
            "failure_balance_transaction": null,
            "failure_code": null,
            "failure_message": null,
            "fraud_details": {}
        }),
        json!({
            "invoice": invoice,
            "livemode": false,
            "metadata": {},
            "on_behalf_of": null,
            "order": null,
            "outcome": {
                "network_status": "approved_by_network",
                "reason": null,
                "risk_level": "normal",
                "risk_score": 32,
                "seller_message": "Payment complete.",
                "type": "authorized"
            },
            "paid": true,
            "payment_intent": payment_intent,
            "payment_method": stripe_id("pm_"),
            "payment_method_details": {
                "card": {
                    "amount_authorized": amount,
                    "brand": "visa",
                    "checks": { "address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass" },
                    "country": "US",
                    "exp_month": 12,
                    "exp_year": 2034,
                    "extended_authorization": { "status": "disabled" },
                    "fingerprint": "Xt5EWLLDS7FJjR1c",
                    "funding": "credit",
                    "incremental_authorization": { "status": "unavailable" },
                    "installments": null,
                    "last4": "4242",
                    "mandate": null,
                    "multicapture": { "status": "unavailable" },
                    "network": "visa",
                    "network_token": { "used": false },
                    "overcapture": { "maximum_amount_capturable": amount, "status": "unavailable" },
                    "three_d_secure": null,
                    "wallet": null
                },
                "type": "card"
            },
            "receipt_email": null,
            "receipt_number": null,
            "receipt_url": format!("https://pay.stripe.com/receipts/payment/{id}"),
            "refunded": refunded >= amount,
            "refunds": {
                "object": "list",
                "data": refund_objects,
                "has_more": false,
                "total_count": refunds.len(),
                "url": format!("/v1/charges/{id}/refunds")
            },
            "review": null,
            "shipping": null,
            "source": null,
            "source_transfer": null,
            "statement_descriptor": null,
            "statement_descriptor_suffix": null,
            "status": "succeeded",
            "transfer_data": null,
            "transfer_group": null
        }),
    ])
}
