//! `/v1/billing`: the catalog, hosted checkout and portal, subscription state and
//! transactions. Card data never reaches this API: the providers' hosted pages take it.

use actix_web::{get, post, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    accounts::{ownership, users},
    analytics,
    auth::{Auth, SessionAuth},
    billing::{self, CheckoutRequest, PaymentFlag, TransactionKind, catalog::Catalog},
    db::schema::{billing_transactions, subscriptions},
    error::{ApiError, FieldError, Problem},
    pagination::{Page, PageQuery},
    state::AppState,
};

/// Plans and credit packs on sale, with prices.
#[utoipa::path(tag = "billing", operation_id = "getCatalog", responses((status = 200, description = "The catalog", body = Catalog)))]
#[get("/v1/billing/catalog")]
pub async fn catalog(state: web::Data<AppState>) -> web::Json<Catalog> {
    web::Json(state.config.billing.catalog.clone())
}

crate::wire_enum! {
    /// A payment provider.
    #[schema(example = "stripe")]
    pub enum ProviderName {
        Stripe = "stripe",
        Creem = "creem",
    }
}

/// What to buy, with which provider, and where to come back to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "provider": "stripe",
    "item_id": "pack_100",
    "success_url": "http://localhost:5173/billing/success",
    "cancel_url": "http://localhost:5173/billing"
}))]
pub struct CheckoutBody {
    pub provider: ProviderName,
    /// A plan or pack id from the catalog.
    #[schema(example = "pack_100", max_length = 100)]
    pub item_id: String,
    /// Where the provider sends the user after paying (an allowed SPA origin).
    #[schema(example = "http://localhost:5173/billing/success", max_length = 2048)]
    pub success_url: String,
    #[schema(example = "http://localhost:5173/billing", max_length = 2048)]
    pub cancel_url: String,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "checkout_url": "https://checkout.stripe.com/c/pay/cs_test_a1B2c3D4" }))]
pub struct CheckoutResponse {
    /// The provider's hosted checkout page.
    pub checkout_url: String,
}

/// Return URLs must lead back to the SPA (or this API), never elsewhere.
fn check_return_url(state: &AppState, field: &str, raw: &str) -> Option<FieldError> {
    let allowed = url::Url::parse(raw).ok().is_some_and(|u| {
        let origin = u.origin().ascii_serialization();
        state.config.cors_origins.contains(&origin)
            || origin == state.config.auth.spa_url.origin().ascii_serialization()
            || origin == state.config.public_url.origin().ascii_serialization()
    });
    (!allowed || raw.len() > 2048)
        .then(|| FieldError::new(field, "must be a URL on an allowed SPA origin"))
}

/// Open the provider's hosted checkout for a plan (subscription) or a credit pack.
///
/// Needs a verified email address (403 `email_unverified` before).
#[utoipa::path(
    tag = "billing",
    operation_id = "createCheckout",
    request_body = CheckoutBody,
    security(("bearer_jwt" = [])),
    responses(
        (status = 200, description = "Send the user to `checkout_url`", body = CheckoutResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot buy; or `email_unverified`: the account's email address is not verified yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: unknown item, or return URLs off the allowed origins", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "`provider_error`: the provider refused or failed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`billing_not_configured`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/billing/checkout")]
pub async fn checkout(
    state: web::Data<AppState>,
    auth: SessionAuth,
    body: web::Json<CheckoutBody>,
) -> Result<web::Json<CheckoutResponse>, ApiError> {
    let body = body.into_inner();
    let provider = billing::provider(&state, body.provider.as_str())?;
    let mut errors: Vec<FieldError> = Vec::new();
    let item = state.config.billing.catalog.item(&body.item_id);
    if item.is_none() {
        errors.push(FieldError::new("item_id", "is not in the catalog"));
    }
    errors.extend(check_return_url(&state, "success_url", &body.success_url));
    errors.extend(check_return_url(&state, "cancel_url", &body.cancel_url));
    let Some(item) = item.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let mut conn = state.pool.get().await?;
    let user = users::find(&mut conn, auth.user_id).await?;
    drop(conn);
    ownership::require_verified(&user)?;
    let checkout_url = provider
        .checkout(
            &state,
            CheckoutRequest {
                user: &user,
                item,
                success_url: &body.success_url,
                cancel_url: &body.cancel_url,
            },
        )
        .await?;
    analytics::track_pooled(
        &state,
        auth.user_id,
        analytics::event::CHECKOUT_STARTED,
        serde_json::json!({ "provider": body.provider.as_str(), "item_id": body.item_id }),
    )
    .await;
    Ok(web::Json(CheckoutResponse { checkout_url }))
}

/// The provider whose portal to open.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "provider": "stripe" }))]
pub struct PortalBody {
    pub provider: ProviderName,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "url": "https://billing.stripe.com/p/session/test_YWNjdF8x" }))]
pub struct PortalResponse {
    /// The provider's page to manage the subscription and payment methods.
    pub url: String,
}

/// A link to the provider's customer portal.
#[utoipa::path(
    tag = "billing",
    operation_id = "createPortal",
    request_body = PortalBody,
    security(("bearer_jwt" = [])),
    responses(
        (status = 200, description = "Send the user to `url`", body = PortalResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot manage billing", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`no_customer`: nothing bought with this provider yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "`provider_error`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`billing_not_configured`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/billing/portal")]
pub async fn portal(
    state: web::Data<AppState>,
    auth: SessionAuth,
    body: web::Json<PortalBody>,
) -> Result<web::Json<PortalResponse>, ApiError> {
    let provider = billing::provider(&state, body.provider.as_str())?;
    let mut conn = state.pool.get().await?;
    let user = users::find(&mut conn, auth.user_id).await?;
    drop(conn);
    Ok(web::Json(PortalResponse {
        url: provider.portal(&state, &user).await?,
    }))
}

/// The user's plan.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionView {
    /// The plan id from the catalog.
    #[schema(example = "starter")]
    pub plan: String,
    #[schema(value_type = ProviderName)]
    pub provider: String,
    /// The provider's own status, passed through (so not a closed set here): e.g. `active`,
    /// `past_due`, `canceled`, `expired`.
    #[schema(example = "active")]
    pub status: String,
    /// End of the paid period: the next renewal, or the end when canceling.
    pub renews_at: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "subscription": {
        "plan": "starter",
        "provider": "stripe",
        "status": "active",
        "renews_at": "2026-12-29T10:00:00Z",
        "cancel_at_period_end": false
    }
}))]
pub struct SubscriptionResponse {
    /// The current subscription; null when there is none.
    pub subscription: Option<SubscriptionView>,
}

type SubscriptionRow = (String, String, String, Option<DateTime<Utc>>, bool);

/// The current plan, its status and renewal date.
#[utoipa::path(
    tag = "billing",
    operation_id = "getSubscription",
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The subscription, or null", body = SubscriptionResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/billing/subscription")]
pub async fn subscription(
    state: web::Data<AppState>,
    auth: Auth,
) -> Result<web::Json<SubscriptionResponse>, ApiError> {
    let mut conn = state.pool.get().await?;
    let row: Option<SubscriptionRow> = subscriptions::table
        .filter(subscriptions::user_id.eq(auth.user_id))
        .order((
            subscriptions::status.eq("active").desc(),
            subscriptions::updated_at.desc(),
        ))
        .select((
            subscriptions::plan_id,
            subscriptions::provider,
            subscriptions::status,
            subscriptions::current_period_end,
            subscriptions::cancel_at_period_end,
        ))
        .first(&mut conn)
        .await
        .optional()?;
    Ok(web::Json(SubscriptionResponse {
        subscription: row.map(
            |(plan, provider, status, renews_at, cancel_at_period_end)| SubscriptionView {
                plan,
                provider,
                status,
                renews_at,
                cancel_at_period_end,
            },
        ),
    }))
}

/// A purchase, renewal or refund, with what a receipt shows.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
    "kind": "purchase",
    "provider": "stripe",
    "provider_reference": "cs_test_a1B2c3D4",
    "item_id": "pack_100",
    "amount_cents": 500,
    "currency": "usd",
    "credits": 100,
    "credits_lost": 0,
    "flag": null,
    "created_at": "2026-11-29T10:00:00Z"
}))]
pub struct TransactionView {
    pub id: Uuid,
    #[schema(value_type = TransactionKind)]
    pub kind: String,
    #[schema(value_type = ProviderName)]
    pub provider: String,
    /// The provider's reference (checkout session, invoice, order or refund id).
    pub provider_reference: String,
    pub item_id: Option<String>,
    /// In the currency's smallest unit; negative for refunds.
    #[schema(example = 500)]
    pub amount_cents: i64,
    #[schema(example = "usd")]
    pub currency: String,
    /// Credits granted (negative: taken back by a refund).
    #[schema(example = 100)]
    pub credits: i64,
    /// Refunds only: credits already spent, so not taken back.
    pub credits_lost: i64,
    /// Set when the payment awaits support. `amount_mismatch`, `currency_mismatch`,
    /// `unknown_product`: it was not the catalog price of what it claims to buy and granted no
    /// credits (a refund, or credits granted by hand). `customer_conflict`: it was granted as
    /// usual, but the provider's customer is linked to another account.
    #[schema(value_type = Option<PaymentFlag>)]
    pub flag: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A page of `TransactionView`s.
pub type TransactionPage = Page<TransactionView>;

type TransactionRow = (
    Uuid,
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    i64,
    i64,
    Option<String>,
    DateTime<Utc>,
);

/// Purchases, renewals and refunds, newest first.
#[utoipa::path(
    tag = "billing",
    operation_id = "listTransactions",
    params(PageQuery),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of transactions", body = TransactionPage),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: bad `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/billing/transactions")]
pub async fn transactions(
    state: web::Data<AppState>,
    auth: Auth,
    query: web::Query<PageQuery>,
) -> Result<web::Json<TransactionPage>, ApiError> {
    let limit = query.limit()?;
    let mut q = billing_transactions::table
        .filter(billing_transactions::user_id.eq(auth.user_id))
        .into_boxed();
    if let Some(after) = query.after()? {
        q = q.filter(billing_transactions::id.lt(after));
    }
    let mut conn = state.pool.get().await?;
    let rows: Vec<TransactionRow> = q
        .order(billing_transactions::id.desc())
        .limit(limit + 1)
        .select((
            billing_transactions::id,
            billing_transactions::kind,
            billing_transactions::provider,
            billing_transactions::provider_reference,
            billing_transactions::item_id,
            billing_transactions::amount_cents,
            billing_transactions::currency,
            billing_transactions::credits,
            billing_transactions::credits_lost,
            billing_transactions::flag,
            billing_transactions::created_at,
        ))
        .load(&mut conn)
        .await?;
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |r| r.0,
        |r| TransactionView {
            id: r.0,
            kind: r.1,
            provider: r.2,
            provider_reference: r.3,
            item_id: r.4,
            amount_cents: r.5,
            currency: r.6,
            credits: r.7,
            credits_lost: r.8,
            flag: r.9,
            created_at: r.10,
        },
    )))
}
