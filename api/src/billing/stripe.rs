//! Stripe through async-stripe's typed client: customers (one per user, reused), Checkout
//! Sessions, the billing portal and cancellation; plus the webhook signature check
//! (`Stripe-Signature`), done here over the raw body.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::Duration,
};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use stripe::{Client, ClientBuilder, StripeError};
use stripe_billing::{
    billing_portal_session::CreateBillingPortalSession, subscription::CancelSubscription,
};
use stripe_checkout::{
    CheckoutSessionMode,
    checkout_session::{
        CreateCheckoutSession, CreateCheckoutSessionLineItems,
        CreateCheckoutSessionSubscriptionData,
    },
};
use stripe_core::customer::CreateCustomer;

use crate::{
    accounts::User,
    billing::{
        self,
        catalog::Item,
        provider::{CheckoutRequest, PaymentProvider},
    },
    config::StripeConfig,
    error::ApiError,
    state::AppState,
};

/// How old a signed webhook may be, as Stripe's own libraries allow.
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);

pub struct StripeProvider {
    config: StripeConfig,
}

impl StripeProvider {
    pub fn new(config: StripeConfig) -> Self {
        Self { config }
    }

    /// The client for this configuration, built once per process (its TLS setup reads the
    /// system's root certificates).
    fn client(&self) -> Result<Client, ApiError> {
        static CLIENTS: LazyLock<Mutex<HashMap<String, Client>>> = LazyLock::new(Mutex::default);
        // Keyed by a digest, so the map holds no copy of the secret key.
        let key = hex::encode(Sha256::digest(format!(
            "{}\n{}",
            self.config.api_base,
            self.config.secret_key.expose()
        )));
        let mut clients = CLIENTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = ClientBuilder::new(self.config.secret_key.expose())
            .url(self.config.api_base.as_str())
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|err| stripe_failure("client", err))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The user's Stripe customer: created once, then reused through `billing_customers`.
    async fn customer(
        &self,
        state: &AppState,
        client: &Client,
        user: &User,
    ) -> Result<String, ApiError> {
        let mut conn = state.pool.get().await?;
        if let Some(id) = billing::customer_id(&mut conn, user.id, "stripe").await? {
            return Ok(id);
        }
        drop(conn);
        let created = CreateCustomer::new()
            .email(&user.email)
            .name(&user.name)
            .metadata(HashMap::from([("user_id".to_owned(), user.id.to_string())]))
            .send(client)
            .await
            .map_err(|err| stripe_failure("create customer", err))?;
        let mut conn = state.pool.get().await?;
        // Two concurrent first checkouts may both create one; the first stored wins.
        Ok(billing::remember_customer(&mut conn, user.id, "stripe", created.id.as_str()).await?)
    }
}

/// Logs what Stripe said (never the key: the client marks it sensitive and Stripe does
/// not echo it) and answers 502 `provider_error`.
fn stripe_failure(what: &str, err: StripeError) -> ApiError {
    match &err {
        StripeError::Stripe(details, status) => tracing::warn!(
            what,
            status,
            code = details.code.as_ref().map(|c| c.as_str().to_owned()),
            message = details.message.as_deref(),
            "Stripe refused"
        ),
        other => tracing::warn!(what, error = %other, "Stripe call failed"),
    }
    provider_error()
}

fn provider_error() -> ApiError {
    ApiError::bad_gateway(
        "provider_error",
        "Stripe refused or failed the request; retry shortly.",
    )
}

#[async_trait::async_trait]
impl PaymentProvider for StripeProvider {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn checkout(
        &self,
        state: &AppState,
        request: CheckoutRequest<'_>,
    ) -> Result<String, ApiError> {
        let (mode, item_id, price) = match &request.item {
            Item::Pack(pack) => (
                CheckoutSessionMode::Payment,
                &pack.id,
                pack.stripe_price_id.as_deref(),
            ),
            Item::Plan(plan) => (
                CheckoutSessionMode::Subscription,
                &plan.id,
                plan.stripe_price_id.as_deref(),
            ),
        };
        let price =
            price.ok_or_else(|| ApiError::validation("item_id", "is not sold through Stripe"))?;
        let client = self.client()?;
        let customer = self.customer(state, &client, request.user).await?;
        let user_id = request.user.id.to_string();
        let mut line = CreateCheckoutSessionLineItems::new();
        line.price = Some(price.to_owned());
        line.quantity = Some(1);
        let mut session = CreateCheckoutSession::new()
            .customer(customer)
            .client_reference_id(&user_id)
            .line_items(vec![line])
            .success_url(request.success_url)
            .cancel_url(request.cancel_url)
            .metadata(HashMap::from([
                ("user_id".to_owned(), user_id.clone()),
                ("item_id".to_owned(), item_id.clone()),
            ]));
        if mode == CheckoutSessionMode::Subscription {
            // Subscription events carry these, so they find the user and plan on their own.
            let mut data = CreateCheckoutSessionSubscriptionData::new();
            data.metadata = Some(HashMap::from([
                ("user_id".to_owned(), user_id.clone()),
                ("plan_id".to_owned(), item_id.clone()),
            ]));
            session = session.subscription_data(data);
        }
        let session = session
            .mode(mode)
            .send(&client)
            .await
            .map_err(|err| stripe_failure("create checkout session", err))?;
        session.url.ok_or_else(provider_error)
    }

    async fn portal(&self, state: &AppState, user: &User) -> Result<String, ApiError> {
        let mut conn = state.pool.get().await?;
        let customer = billing::customer_id(&mut conn, user.id, "stripe")
            .await?
            .ok_or_else(|| {
                ApiError::missing("no_customer", "Nothing was bought through Stripe yet.")
            })?;
        drop(conn);
        let session = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(state.config.auth.spa_url.as_str())
            .send(&self.client()?)
            .await
            .map_err(|err| stripe_failure("create portal session", err))?;
        Ok(session.url)
    }

    async fn cancel_subscription(&self, _state: &AppState, id: &str) -> Result<(), ApiError> {
        // Ids are Stripe's own (`sub_...`); refuse anything that could leave the path.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ApiError::validation("subscription", "is not a Stripe id"));
        }
        CancelSubscription::new(id)
            .send(&self.client()?)
            .await
            .map_err(|err| stripe_failure("cancel subscription", err))?;
        Ok(())
    }
}

/// Why a `Stripe-Signature` was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

/// Checks a `Stripe-Signature` header (`t=...,v1=...[,v1=...]`) as Stripe specifies:
/// HMAC-SHA256 of `{t}.{body}` with the endpoint secret, compared in constant time against
/// every `v1`, and `t` within `tolerance` of `now` (unix seconds).
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            // A value that is not hex cannot match; skipping it keeps the others usable.
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    let t: i64 = timestamp.parse().map_err(|_| SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(t) > tolerance.as_secs() {
        return Err(SignatureError::Stale);
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = signatures
        .iter()
        .any(|sig| mac.clone().verify_slice(sig).is_ok());
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures_are_checked_like_stripe_does() {
        let body = br#"{"id":"evt_1"}"#;
        let tol = SIGNATURE_TOLERANCE;
        let good = sign("whsec_a", 1000, body);
        let header = format!("t=1000,v1={},v0=abc", good);
        assert_eq!(
            verify_signature(Some(&header), body, "whsec_a", 1100, tol),
            Ok(())
        );
        // Any of several v1 values (secret rotation) may match.
        let rotated = format!("t=1000,v1={},v1={good}", sign("whsec_old", 1000, body));
        assert_eq!(
            verify_signature(Some(&rotated), body, "whsec_a", 1000, tol),
            Ok(())
        );
        assert_eq!(
            verify_signature(Some(&header), body, "whsec_b", 1000, tol),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&header), b"{}", "whsec_a", 1000, tol),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&header), body, "whsec_a", 1000 + 301, tol),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(None, body, "whsec_a", 1000, tol),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(Some("v1=00"), body, "whsec_a", 1000, tol),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(Some("t=1000"), body, "whsec_a", 1000, tol),
            Err(SignatureError::Malformed)
        );
    }
}
