//! Creem: hosted checkout, the customer portal and cancellation through its REST API
//! (`{api_base}/v1/...`, authenticated with `x-api-key`), and the signed webhook events that
//! grant credits and track subscriptions (`creem-signature`: hex HMAC-SHA256 of the raw body).
//!
//! Errors are logged with the endpoint and Creem's status only, never the key or a signature.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hmac::{Hmac, Mac};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use sha2::Sha256;
use url::Url;
use uuid::Uuid;

use crate::{
    accounts::User,
    billing::{
        self, Payment, PaymentFlag, Refund, SubscriptionState,
        catalog::{Catalog, Item, Plan},
        plan_grants::{self, Charge, PlanPayment},
        provider::{CheckoutRequest, PaymentProvider},
    },
    config::{BillingConfig, CreemConfig},
    db::schema::users,
    error::ApiError,
    state::AppState,
};

/// The provider's name in every billing table.
pub const PROVIDER: &str = "creem";
/// Every call to Creem gives up after this.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Creem's answers are small; anything bigger is not one of them.
const MAX_BODY_BYTES: usize = 256 * 1024;

pub struct CreemProvider {
    config: CreemConfig,
}

impl CreemProvider {
    pub fn new(config: CreemConfig) -> Self {
        Self { config }
    }

    /// `{api_base}/v1/{segments...}`, each segment escaped (ids come from webhooks).
    fn endpoint(&self, segments: &[&str]) -> Result<Url, ApiError> {
        let mut url = self.config.api_base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("GI2_CREEM_API_BASE cannot be a base URL"))?
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        Ok(url)
    }

    /// POSTs `body` and reads Creem's JSON answer; any failure is a 502 `provider_error`.
    async fn post<T: DeserializeOwned>(
        &self,
        http: &reqwest::Client,
        segments: &[&str],
        body: &Value,
    ) -> Result<T, ApiError> {
        let url = self.endpoint(segments)?;
        let what = url.path().to_string();
        let res = http
            .post(url)
            .header("x-api-key", self.config.api_key.expose())
            .json(body)
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|err| {
                let why = if err.is_timeout() {
                    format!("no answer within {TIMEOUT:?}")
                } else {
                    err.without_url().to_string()
                };
                provider_error(&what, &why)
            })?;
        let status = res.status();
        if !status.is_success() {
            return Err(provider_error(&what, &format!("answered {status}")));
        }
        read_json(res)
            .await
            .map_err(|err| provider_error(&what, &format!("{err:#}")))
    }
}

fn provider_error(what: &str, why: &str) -> ApiError {
    tracing::warn!(endpoint = what, error = why, "Creem call failed");
    ApiError::bad_gateway(
        "provider_error",
        "Creem did not complete the request; try again shortly.",
    )
}

/// The body as JSON, refusing more than [`MAX_BODY_BYTES`].
async fn read_json<T: DeserializeOwned>(mut res: reqwest::Response) -> anyhow::Result<T> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            anyhow::bail!("response larger than {MAX_BODY_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(serde_json::from_slice(&body)?)
}

#[derive(Deserialize)]
struct CheckoutCreated {
    checkout_url: String,
}

#[derive(Deserialize)]
struct PortalCreated {
    customer_portal_link: String,
}

/// A link from Creem that we send the user to: it must at least be a web URL.
fn web_url(raw: String, what: &str) -> Result<String, ApiError> {
    match Url::parse(&raw) {
        Ok(url) if matches!(url.scheme(), "https" | "http") => Ok(raw),
        _ => Err(provider_error(
            what,
            "answered a link that is not a web URL",
        )),
    }
}

#[async_trait::async_trait]
impl PaymentProvider for CreemProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn checkout(
        &self,
        state: &AppState,
        request: CheckoutRequest<'_>,
    ) -> Result<String, ApiError> {
        let (item_id, product_id) = match request.item {
            Item::Plan(p) => (&p.id, &p.creem_product_id),
            Item::Pack(p) => (&p.id, &p.creem_product_id),
        };
        let Some(product_id) = product_id else {
            return Err(ApiError::validation("item_id", "is not sold through Creem"));
        };
        // The metadata comes back on the webhook events: it names the buyer and the item.
        let body = json!({
            "product_id": product_id,
            "request_id": Uuid::new_v4().to_string(),
            "success_url": request.success_url,
            "customer": { "email": request.user.email },
            "metadata": { "user_id": request.user.id.to_string(), "item_id": item_id },
        });
        let created: CheckoutCreated = self.post(&state.http, &["checkouts"], &body).await?;
        web_url(created.checkout_url, "/v1/checkouts")
    }

    async fn portal(&self, state: &AppState, user: &User) -> Result<String, ApiError> {
        let mut conn = state.pool.get().await?;
        let customer = billing::customer_id(&mut conn, user.id, PROVIDER).await?;
        drop(conn);
        let Some(customer) = customer else {
            return Err(ApiError::missing(
                "no_customer",
                "Nothing was bought through Creem with this account yet.",
            ));
        };
        let body = json!({ "customer_id": customer });
        let portal: PortalCreated = self
            .post(&state.http, &["customers", "billing"], &body)
            .await?;
        web_url(portal.customer_portal_link, "/v1/customers/billing")
    }

    async fn cancel_subscription(&self, state: &AppState, id: &str) -> Result<(), ApiError> {
        let _: Value = self
            .post(&state.http, &["subscriptions", id, "cancel"], &json!({}))
            .await?;
        Ok(())
    }
}

/// True when `signature` (the `creem-signature` header) is the hex HMAC-SHA256 of `body`.
pub fn verify_signature(secret: &str, body: &[u8], signature: &str) -> bool {
    let Ok(expected) = hex::decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected).is_ok()
}

/// A webhook event's envelope; `object` is read according to `event_type`.
#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "eventType")]
    pub event_type: String,
    /// Unix milliseconds: when Creem produced the event (orders subscription states).
    pub created_at: i64,
    #[serde(default)]
    pub object: Value,
}

impl Event {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let event: Self = serde_json::from_slice(body).map_err(|e| invalid(&e.to_string()))?;
        if event.id.is_empty() || event.id.len() > 255 || event.event_type.is_empty() {
            return Err(invalid("`id` and `eventType` must be set"));
        }
        Ok(event)
    }

    fn created_at(&self) -> Result<DateTime<Utc>, ApiError> {
        DateTime::from_timestamp_millis(self.created_at)
            .ok_or_else(|| invalid("`created_at` is out of range"))
    }

    fn object<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        T::deserialize(&self.object).map_err(|e| invalid(&format!("object: {e}")))
    }
}

/// 400 `invalid_payload`: a correctly signed event that lacks what we need. Nothing is
/// recorded, so Creem's retry (or a fixed event) can still apply it.
fn invalid(why: &str) -> ApiError {
    ApiError::bad_request("invalid_payload", format!("Unreadable Creem event: {why}."))
}

/// A reference Creem sends either as an id or as the expanded object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Ref {
    Id(String),
    Object { id: String },
}

impl Ref {
    fn id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }
}

/// What our checkout put in `metadata`; Creem copies it onto the subscription.
#[derive(Debug, Default, Deserialize)]
struct Metadata {
    user_id: Option<String>,
    item_id: Option<String>,
    plan_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Order {
    id: String,
    /// The order's total, in the currency's smallest unit.
    amount: i64,
    /// What the customer paid (after discounts, with taxes), when Creem states it.
    amount_paid: Option<i64>,
    /// The product's price × units, before discounts and taxes.
    sub_total: Option<i64>,
    currency: String,
    status: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CheckoutObject {
    order: Option<Order>,
    product: Ref,
    customer: Option<Ref>,
    subscription: Option<Expandable<SubscriptionObject>>,
    metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Expandable<T> {
    Id(String),
    Object(Box<T>),
}

#[derive(Debug, Deserialize)]
struct SubscriptionObject {
    id: String,
    product: Ref,
    customer: Option<Ref>,
    status: String,
    current_period_start_date: Option<DateTime<Utc>>,
    current_period_end_date: Option<DateTime<Utc>>,
    metadata: Option<Metadata>,
    last_transaction_id: Option<String>,
    /// The paid transaction itself, when Creem includes it.
    last_transaction: Option<Transaction>,
}

/// A Creem transaction: one charge of a subscription (or an order).
#[derive(Debug, Deserialize)]
struct Transaction {
    id: String,
    /// The transaction's amount, in the currency's smallest unit.
    amount: i64,
    /// What was actually charged (after discounts, with taxes), when stated.
    amount_paid: Option<i64>,
    currency: String,
}

impl Order {
    /// What was charged: `amount_paid` when Creem states it, else the order's `amount`.
    fn charged(&self) -> i64 {
        self.amount_paid.unwrap_or(self.amount)
    }
}

#[derive(Debug, Deserialize)]
struct RefundObject {
    id: String,
    refund_amount: i64,
    order: Option<Ref>,
    transaction: Option<Ref>,
}

/// Applies a verified event whose first delivery was just recorded, in the caller's
/// transaction. Events for unknown users or items are logged and otherwise ignored.
pub async fn apply_event(
    conn: &mut AsyncPgConnection,
    billing: &BillingConfig,
    event: &Event,
) -> Result<(), ApiError> {
    let at = event.created_at()?;
    match event.event_type.as_str() {
        "checkout.completed" => checkout_completed(conn, billing, event, at).await,
        "refund.created" => refund_created(conn, event).await,
        t if t.starts_with("subscription.") => subscription_event(conn, billing, event, at).await,
        _ => {
            tracing::info!(event_id = %event.id, event_type = %event.event_type, "Creem event ignored");
            Ok(())
        }
    }
}

/// The buyer: our own checkout reference first (the `metadata.user_id` our checkout wrote,
/// which Creem copies onto the subscription) if that user still exists, else the account the
/// customer is linked to. A customer linked to another account does not change the buyer:
/// see [`link_customer`].
async fn find_user(
    conn: &mut AsyncPgConnection,
    metadata: Option<&Metadata>,
    customer: Option<&Ref>,
) -> Result<Option<Uuid>, ApiError> {
    if let Some(id) = metadata
        .and_then(|m| m.user_id.as_deref())
        .and_then(|raw| Uuid::parse_str(raw).ok())
    {
        let exists: bool = diesel::select(diesel::dsl::exists(users::table.find(id)))
            .get_result(conn)
            .await?;
        if exists {
            return Ok(Some(id));
        }
    }
    match customer {
        Some(c) => Ok(billing::user_for_customer(conn, PROVIDER, c.id()).await?),
        None => Ok(None),
    }
}

/// Links the event's customer to the buyer; `Some(customer_conflict)` when Creem's customer
/// is already linked to another account (one card or e-mail used from two accounts): the
/// payment is still recorded and credited for the buyer our checkout names, and flagged.
async fn link_customer(
    conn: &mut AsyncPgConnection,
    event: &Event,
    user_id: Uuid,
    customer: Option<&Ref>,
) -> Result<Option<PaymentFlag>, ApiError> {
    let Some(customer) = customer else {
        return Ok(None);
    };
    if billing::link_customer(conn, user_id, PROVIDER, customer.id()).await? {
        return Ok(None);
    }
    tracing::warn!(
        event_id = %event.id,
        user = %user_id,
        customer = customer.id(),
        "Creem customer linked to another account; payment recorded for the checkout's buyer and flagged"
    );
    Ok(Some(PaymentFlag::CustomerConflict))
}

fn no_user(event: &Event) -> Result<(), ApiError> {
    tracing::warn!(event_id = %event.id, event_type = %event.event_type, "Creem event for no known user; ignored");
    Ok(())
}

/// The product alone decides what was bought: the metadata is written by whoever opens the
/// checkout, so it names the buyer, never the item.
fn plan_for<'a>(catalog: &'a Catalog, product: &str) -> Option<&'a Plan> {
    catalog.plan_by_creem_product(product)
}

/// The item of our catalog the metadata claims a checkout buys, if any.
fn claimed_item<'a>(catalog: &Catalog, metadata: Option<&'a Metadata>) -> Option<&'a str> {
    let metadata = metadata?;
    [metadata.item_id.as_deref(), metadata.plan_id.as_deref()]
        .into_iter()
        .flatten()
        .find(|id| catalog.item(id).is_some())
}

/// A product not in the catalog: someone else's sale in the same store, ignored; or, when its
/// metadata names one of our items, a payment that tries to pass for it, recorded as flagged.
async fn unknown_product(
    conn: &mut AsyncPgConnection,
    catalog: &Catalog,
    event: &Event,
    user_id: Uuid,
    product: &str,
    metadata: Option<&Metadata>,
    order: Option<&Order>,
) -> Result<(), ApiError> {
    let (Some(claimed), Some(order)) = (claimed_item(catalog, metadata), order) else {
        tracing::warn!(event_id = %event.id, product, "Creem checkout for a product not in the catalog; ignored");
        return Ok(());
    };
    billing::record_payment(
        conn,
        Payment {
            user_id,
            provider: PROVIDER,
            kind: "purchase",
            provider_reference: &order.id,
            item_id: claimed,
            amount_cents: order.charged(),
            currency: &order.currency.to_lowercase(),
            credits: 0,
            credits_expire_at: None,
            flag: Some(PaymentFlag::UnknownProduct),
        },
    )
    .await?;
    Ok(())
}

async fn checkout_completed(
    conn: &mut AsyncPgConnection,
    billing: &BillingConfig,
    event: &Event,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let object: CheckoutObject = event.object()?;
    let metadata = object.metadata.as_ref();
    let Some(user_id) = find_user(conn, metadata, object.customer.as_ref()).await? else {
        return no_user(event);
    };
    // From now on the portal can be opened for this user (unless the customer is another's).
    let conflict = link_customer(conn, event, user_id, object.customer.as_ref()).await?;
    let recurring = object.subscription.is_some()
        || object.order.as_ref().and_then(|o| o.kind.as_deref()) == Some("recurring")
        || billing
            .catalog
            .plan_by_creem_product(object.product.id())
            .is_some();
    if recurring {
        // Plan credits come with `subscription.paid`, which Creem also sends for the first
        // period; here only the subscription's state is noted.
        let Some(plan) = plan_for(&billing.catalog, object.product.id()) else {
            // `subscription.paid` finds no plan either, so this grants nothing.
            return unknown_product(
                conn,
                &billing.catalog,
                event,
                user_id,
                object.product.id(),
                metadata,
                object.order.as_ref(),
            )
            .await;
        };
        let (id, status, period_end) = match &object.subscription {
            Some(Expandable::Object(s)) => {
                (s.id.as_str(), s.status.as_str(), s.current_period_end_date)
            }
            Some(Expandable::Id(id)) => (id.as_str(), "active", None),
            None => return Ok(()),
        };
        let (status, cancel_at_period_end) = status_of(&event.event_type, status);
        billing::apply_subscription_state(
            conn,
            SubscriptionState {
                user_id,
                provider: PROVIDER,
                provider_subscription_id: id,
                plan_id: &plan.id,
                status,
                current_period_end: period_end,
                cancel_at_period_end,
                provider_updated_at: at,
            },
        )
        .await?;
        return Ok(());
    }
    let order = object
        .order
        .as_ref()
        .ok_or_else(|| invalid("object.order is missing"))?;
    if order.status.as_deref().is_some_and(|s| s != "paid") {
        tracing::warn!(event_id = %event.id, order = %order.id, "Creem checkout with an unpaid order; no credits");
        return Ok(());
    }
    let Some(pack) = billing.catalog.pack_by_creem_product(object.product.id()) else {
        return unknown_product(
            conn,
            &billing.catalog,
            event,
            user_id,
            object.product.id(),
            metadata,
            Some(order),
        )
        .await;
    };
    // A price or currency mismatch withholds the credits, so it wins over a conflict.
    let flag = billing::price_flag(
        Some(order.sub_total.unwrap_or(order.amount)),
        Some(&order.currency),
        pack.price_cents,
        &pack.currency,
    )
    .or(conflict);
    billing::record_payment(
        conn,
        Payment {
            user_id,
            provider: PROVIDER,
            kind: "purchase",
            provider_reference: &order.id,
            item_id: &pack.id,
            amount_cents: order.charged(),
            currency: &order.currency.to_lowercase(),
            credits: pack.credits,
            credits_expire_at: None,
            flag,
        },
    )
    .await?;
    Ok(())
}

/// Our stored status and `cancel_at_period_end` for Creem's event and status. A scheduled
/// cancellation is still active until the period ends.
fn status_of<'a>(event_type: &str, status: &'a str) -> (&'a str, bool) {
    match (event_type, status) {
        ("subscription.canceled", _) => ("canceled", false),
        ("subscription.expired", _) => ("expired", false),
        ("subscription.scheduled_cancel", _) | (_, "scheduled_cancel") => ("active", true),
        _ => (status, false),
    }
}

async fn subscription_event(
    conn: &mut AsyncPgConnection,
    billing: &BillingConfig,
    event: &Event,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let sub: SubscriptionObject = event.object()?;
    let metadata = sub.metadata.as_ref();
    let Some(user_id) = find_user(conn, metadata, sub.customer.as_ref()).await? else {
        return no_user(event);
    };
    let conflict = link_customer(conn, event, user_id, sub.customer.as_ref()).await?;
    let Some(plan) = plan_for(&billing.catalog, sub.product.id()) else {
        tracing::warn!(
            event_id = %event.id,
            product = sub.product.id(),
            claimed = claimed_item(&billing.catalog, metadata),
            "Creem subscription for a product not in the catalog; ignored"
        );
        return Ok(());
    };
    let (status, cancel_at_period_end) = status_of(&event.event_type, &sub.status);
    billing::apply_subscription_state(
        conn,
        SubscriptionState {
            user_id,
            provider: PROVIDER,
            provider_subscription_id: &sub.id,
            plan_id: &plan.id,
            status,
            current_period_end: sub.current_period_end_date,
            cancel_at_period_end,
            provider_updated_at: at,
        },
    )
    .await?;
    if event.event_type != "subscription.paid" {
        return Ok(());
    }
    // A paid period, or (Creem's payload does not say which) a charge for a plan change
    // within a period already paid: `plan_grants` tells them apart by the period's level.
    let period_end = sub
        .current_period_end_date
        .ok_or_else(|| invalid("object.current_period_end_date is missing"))?;
    let transaction = sub.last_transaction.as_ref();
    let transaction_id = transaction
        .map(|t| &t.id)
        .or(sub.last_transaction_id.as_ref());
    let reference = match (transaction_id, sub.current_period_start_date) {
        (Some(transaction), _) => transaction.clone(),
        (None, Some(start)) => format!(
            "{}:{}",
            sub.id,
            start.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        (None, None) => return Err(invalid("object.current_period_start_date is missing")),
    };
    // A trialing subscription has paid for no period yet.
    let charge = if sub.status == "trialing" {
        Charge::Other("trialing")
    } else {
        Charge::Period
    };
    // What was charged: the paid transaction's `amount_paid` (after discounts, with taxes;
    // else its `amount`) in its currency. When Creem leaves the transaction out, the
    // catalog's price and currency are recorded instead (`amount_paid: None`).
    let currency = transaction.map(|t| t.currency.to_lowercase());
    let amount_paid = transaction.map(|t| t.amount_paid.unwrap_or(t.amount));
    let grace = chrono::Duration::from_std(billing.grace).map_err(anyhow::Error::new)?;
    let granted = plan_grants::record_plan_payment(
        conn,
        PlanPayment {
            user_id,
            provider: PROVIDER,
            reference: &reference,
            subscription_id: &sub.id,
            charge,
            plan,
            amount_paid,
            currency: currency.as_deref().unwrap_or(&plan.currency),
            flag: conflict,
            period_start: sub.current_period_start_date,
            period_end,
            from: at,
            grace,
        },
    )
    .await?;
    tracing::info!(event_id = %event.id, ?granted, "Creem subscription paid");
    Ok(())
}

async fn refund_created(conn: &mut AsyncPgConnection, event: &Event) -> Result<(), ApiError> {
    let refund: RefundObject = event.object()?;
    if refund.order.is_none() && refund.transaction.is_none() {
        return Err(invalid("object.order is missing"));
    }
    // Packs are recorded under the order id, renewals under the transaction id.
    for payment in [&refund.order, &refund.transaction].into_iter().flatten() {
        let recorded = billing::record_refund(
            conn,
            Refund {
                provider: PROVIDER,
                payment_reference: payment.id(),
                refund_reference: &refund.id,
                amount_cents: refund.refund_amount,
            },
        )
        .await?;
        if let Some((clawed, lost)) = recorded {
            tracing::info!(event_id = %event.id, clawed, lost, "Creem refund recorded");
            return Ok(());
        }
    }
    tracing::warn!(event_id = %event.id, "Creem refund for no recorded payment (or recorded already); ignored");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256_of_the_raw_body() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), a known vector.
        let body = b"The quick brown fox jumps over the lazy dog";
        let good = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
        assert!(verify_signature("key", body, good));
        assert!(verify_signature("key", body, &good.to_uppercase()));
        assert!(!verify_signature("other", body, good));
        assert!(!verify_signature("key", b"tampered", good));
        assert!(!verify_signature("key", body, "zz"));
        assert!(!verify_signature("key", body, ""));
    }

    #[test]
    fn references_may_be_ids_or_objects() {
        let r: Ref = serde_json::from_value(json!("cust_1")).unwrap();
        assert_eq!(r.id(), "cust_1");
        let r: Ref = serde_json::from_value(json!({"id": "cust_2", "email": "a@b.c"})).unwrap();
        assert_eq!(r.id(), "cust_2");
    }

    #[test]
    fn scheduled_cancellation_stays_active() {
        assert_eq!(
            status_of("subscription.update", "scheduled_cancel"),
            ("active", true)
        );
        assert_eq!(
            status_of("subscription.canceled", "active"),
            ("canceled", false)
        );
        assert_eq!(status_of("subscription.paid", "active"), ("active", false));
    }
}
