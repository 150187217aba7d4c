//! A local stand-in for Creem's API, speaking its wire format on a wiremock server: hosted
//! checkouts, the customer portal and subscription cancellation behind `x-api-key`, every
//! request recorded. Plus complete, realistic webhook events (shaped like Creem's documented
//! examples) and their `creem-signature`.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wiremock::{
    Match, Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{method, path, path_regex},
};

use crate::TestApp;

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub api_key: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    requests: Vec<Recorded>,
    /// Answer every call with 500, as during an outage.
    failing: bool,
}

type State = Arc<Mutex<Shared>>;

fn lock(state: &State) -> MutexGuard<'_, Shared> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct CreemFake {
    pub server: MockServer,
    pub api_key: String,
    pub webhook_secret: String,
    state: State,
}

#[derive(Clone, Copy)]
enum Endpoint {
    Checkout,
    Portal,
    Cancel,
}

struct Responder {
    endpoint: Endpoint,
    api_key: String,
    state: State,
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn now_iso() -> String {
    iso(Utc::now())
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn error(status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "trace_id": uuid::Uuid::new_v4().to_string(),
        "status": status,
        "error": message,
        "message": [message],
        "timestamp": Utc::now().timestamp_millis(),
    }))
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let api_key = request
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let mut shared = lock(&self.state);
        shared.requests.push(Recorded {
            path: request.url.path().to_string(),
            api_key: api_key.clone(),
            body: body.clone(),
        });
        if api_key.as_deref() != Some(self.api_key.as_str()) {
            return error(403, "Forbidden");
        }
        if shared.failing {
            return error(500, "Internal Server Error");
        }
        match self.endpoint {
            Endpoint::Checkout => {
                let Some(product) = body["product_id"].as_str() else {
                    return error(400, "product_id must be a string");
                };
                let id = random_id("ch");
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": id,
                    "mode": "test",
                    "object": "checkout",
                    "status": "pending",
                    "product": product,
                    "units": 1,
                    "request_id": body["request_id"],
                    "success_url": body["success_url"],
                    "metadata": body["metadata"],
                    "checkout_url": format!("https://checkout.creem.io/{id}"),
                }))
            }
            Endpoint::Portal => match body["customer_id"].as_str() {
                Some(customer) => ResponseTemplate::new(200).set_body_json(json!({
                    "customer_portal_link": format!("https://creem.io/my-orders/login/{customer}"),
                })),
                None => error(400, "customer_id must be a string"),
            },
            Endpoint::Cancel => {
                let id = request
                    .url
                    .path_segments()
                    .and_then(|mut s| s.nth(2))
                    .unwrap_or_default()
                    .to_string();
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": id,
                    "object": "subscription",
                    "status": "canceled",
                    "canceled_at": now_iso(),
                    "mode": "test",
                }))
            }
        }
    }
}

async fn mount(server: &MockServer, matcher: impl Match + 'static, responder: Responder) {
    Mock::given(method("POST"))
        .and(matcher)
        .respond_with(responder)
        .mount(server)
        .await;
}

impl CreemFake {
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let api_key = random_id("creem_test");
        let state = State::default();
        let responder = |endpoint| Responder {
            endpoint,
            api_key: api_key.clone(),
            state: state.clone(),
        };
        mount(
            &server,
            path("/v1/checkouts"),
            responder(Endpoint::Checkout),
        )
        .await;
        mount(
            &server,
            path("/v1/customers/billing"),
            responder(Endpoint::Portal),
        )
        .await;
        let cancel = path_regex(r"^/v1/subscriptions/[^/]+/cancel$");
        mount(&server, cancel, responder(Endpoint::Cancel)).await;
        Self {
            server,
            api_key,
            webhook_secret: random_id("whsec"),
            state,
        }
    }

    /// The variables that point the app at this fake.
    pub fn app_env(&self) -> Vec<(String, String)> {
        vec![
            ("GI2_CREEM_API_KEY".into(), self.api_key.clone()),
            (
                "GI2_CREEM_WEBHOOK_SECRET".into(),
                self.webhook_secret.clone(),
            ),
            ("GI2_CREEM_API_BASE".into(), self.server.uri()),
        ]
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// The bodies of the requests to `path`, oldest first.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn set_failing(&self, failing: bool) {
        lock(&self.state).failing = failing;
    }

    /// The `creem-signature` Creem would send for `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        sign(&self.webhook_secret, body)
    }

    /// Posts `event` to the app's webhook, signed, as Creem delivers it.
    pub async fn deliver(&self, app: &TestApp, event: &Value) -> reqwest::Response {
        let body = serde_json::to_vec(event).unwrap();
        let signature = self.sign(&body);
        post_webhook(app, body, Some(&signature)).await
    }
}

/// Posts raw bytes to the Creem webhook with an optional signature header.
pub async fn post_webhook(
    app: &TestApp,
    body: Vec<u8>,
    signature: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/webhooks/creem"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("creem-signature", signature);
    }
    request.send().await.expect("request sent")
}

/// Hex HMAC-SHA256 (RFC 2104), written out here so the test does not share the server's
/// implementation.
pub fn sign(secret: &str, body: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut key = secret.as_bytes().to_vec();
    if key.len() > BLOCK {
        key = Sha256::digest(&key).to_vec();
    }
    key.resize(BLOCK, 0);
    let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}

/// Who pays at Creem.
#[derive(Debug, Clone)]
pub struct Customer {
    pub id: String,
    pub email: String,
}

impl Customer {
    pub fn new(email: &str) -> Self {
        Self {
            id: random_id("cust"),
            email: email.to_string(),
        }
    }

    fn object(&self) -> Value {
        json!({
            "id": self.id,
            "object": "customer",
            "email": self.email,
            "name": "Test User",
            "country": "NL",
            "created_at": now_iso(),
            "updated_at": now_iso(),
            "mode": "test",
        })
    }
}

fn product(id: &str, price: i64, billing_type: &str) -> Value {
    json!({
        "id": id,
        "object": "product",
        "name": id,
        "description": "",
        "image_url": null,
        "price": price,
        "currency": "USD",
        "billing_type": billing_type,
        "billing_period": if billing_type == "recurring" { "every-month" } else { "once" },
        "status": "active",
        "tax_mode": "exclusive",
        "tax_category": "saas",
        "default_success_url": "",
        "created_at": now_iso(),
        "updated_at": now_iso(),
        "mode": "test",
    })
}

fn envelope(event_type: &str, created_at: DateTime<Utc>, object: Value) -> Value {
    json!({
        "id": random_id("evt"),
        "eventType": event_type,
        "created_at": created_at.timestamp_millis(),
        "object": object,
    })
}

/// A paid one-time checkout of a pack; the event's `object.order.id` is the payment.
pub fn checkout_completed_pack(
    user_id: &str,
    customer: &Customer,
    product_id: &str,
    item_id: &str,
    amount: i64,
) -> Value {
    let order_id = random_id("ord");
    envelope(
        "checkout.completed",
        Utc::now(),
        json!({
            "id": random_id("ch"),
            "object": "checkout",
            "request_id": uuid::Uuid::new_v4().to_string(),
            "order": {
                "id": order_id,
                "customer": customer.id,
                "product": product_id,
                "amount": amount,
                "currency": "USD",
                "sub_total": amount,
                "tax_amount": 0,
                "amount_due": amount,
                "amount_paid": amount,
                "status": "paid",
                "type": "onetime",
                "transaction": random_id("tran"),
                "created_at": now_iso(),
                "updated_at": now_iso(),
                "mode": "test",
            },
            "product": product(product_id, amount, "onetime"),
            "units": 1,
            "customer": customer.object(),
            "custom_fields": [],
            "status": "completed",
            "metadata": { "user_id": user_id, "item_id": item_id },
            "mode": "test",
        }),
    )
}

/// A Creem subscription, as its events carry it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub product_id: String,
    pub plan_id: String,
    pub user_id: String,
    pub customer: Customer,
    pub status: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub last_transaction_id: Option<String>,
}

impl Subscription {
    /// An active subscription to `plan_id` whose current period started now.
    pub fn new(user_id: &str, customer: &Customer, product_id: &str, plan_id: &str) -> Self {
        let start = Utc::now();
        Self {
            id: random_id("sub"),
            product_id: product_id.to_string(),
            plan_id: plan_id.to_string(),
            user_id: user_id.to_string(),
            customer: customer.clone(),
            status: "active".into(),
            period_start: start,
            period_end: start + chrono::Duration::days(30),
            last_transaction_id: Some(random_id("tran")),
        }
    }

    /// The next monthly period, paid by a new transaction.
    pub fn next_period(&self) -> Self {
        Self {
            period_start: self.period_end,
            period_end: self.period_end + chrono::Duration::days(30),
            last_transaction_id: Some(random_id("tran")),
            ..self.clone()
        }
    }

    fn object(&self, price: i64) -> Value {
        let canceled = matches!(self.status.as_str(), "canceled" | "expired");
        json!({
            "id": self.id,
            "object": "subscription",
            "product": product(&self.product_id, price, "recurring"),
            "customer": self.customer.object(),
            "collection_method": "charge_automatically",
            "status": self.status,
            "last_transaction_id": self.last_transaction_id,
            "last_transaction_date": iso(self.period_start),
            "next_transaction_date": iso(self.period_end),
            "current_period_start_date": iso(self.period_start),
            "current_period_end_date": iso(self.period_end),
            "canceled_at": if canceled { Value::String(now_iso()) } else { Value::Null },
            "created_at": iso(self.period_start),
            "updated_at": now_iso(),
            "metadata": { "user_id": self.user_id, "plan_id": self.plan_id },
            "mode": "test",
        })
    }

    /// A `subscription.*` event (`subscription.active`, `.paid`, `.canceled`, `.expired`)
    /// produced at `created_at`.
    pub fn event(&self, event_type: &str, created_at: DateTime<Utc>) -> Value {
        envelope(event_type, created_at, self.object(900))
    }

    /// The `checkout.completed` that starts this subscription.
    pub fn checkout_completed(&self, created_at: DateTime<Utc>) -> Value {
        let mut nested = self.object(900);
        // In a checkout the subscription names its product and customer by id only.
        nested["product"] = json!(self.product_id);
        nested["customer"] = json!(self.customer.id);
        envelope(
            "checkout.completed",
            created_at,
            json!({
                "id": random_id("ch"),
                "object": "checkout",
                "request_id": uuid::Uuid::new_v4().to_string(),
                "order": {
                    "id": random_id("ord"),
                    "customer": self.customer.id,
                    "product": self.product_id,
                    "amount": 900,
                    "currency": "USD",
                    "status": "paid",
                    "type": "recurring",
                    "created_at": now_iso(),
                    "updated_at": now_iso(),
                    "mode": "test",
                },
                "product": product(&self.product_id, 900, "recurring"),
                "customer": self.customer.object(),
                "subscription": nested,
                "custom_fields": [],
                "status": "completed",
                "metadata": { "user_id": self.user_id, "item_id": self.plan_id },
                "mode": "test",
            }),
        )
    }
}

/// A refund of `amount` of the order `order_id`.
pub fn refund_created(order_id: &str, customer: &Customer, amount: i64) -> Value {
    let transaction = random_id("tran");
    envelope(
        "refund.created",
        Utc::now(),
        json!({
            "id": random_id("ref"),
            "object": "refund",
            "status": "succeeded",
            "refund_amount": amount,
            "refund_currency": "USD",
            "reason": "requested_by_customer",
            "transaction": {
                "id": transaction,
                "object": "transaction",
                "amount": amount,
                "amount_paid": amount,
                "currency": "USD",
                "type": "payment",
                "status": "refunded",
                "refunded_amount": amount,
                "order": order_id,
                "customer": customer.id,
                "created_at": Utc::now().timestamp_millis(),
                "mode": "test",
            },
            "order": {
                "id": order_id,
                "customer": customer.id,
                "amount": amount,
                "currency": "USD",
                "status": "paid",
                "type": "onetime",
                "mode": "test",
            },
            "customer": customer.object(),
            "created_at": Utc::now().timestamp_millis(),
            "mode": "test",
        }),
    )
}
