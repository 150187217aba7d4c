//! Billing: the catalog, the payment-provider seam (Stripe, Creem), and the bookkeeping every
//! provider shares: purchases and renewals that grant credits, refunds that claw them back,
//! subscription state that only moves forward, and webhook events applied exactly once.

pub mod catalog;
pub mod creem;
pub mod plan_grants;
pub mod provider;
pub mod stripe;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::{
    accounts::users,
    credits::{GrantSource, ledger},
    db::schema::{
        billing_customers, billing_payment_aliases, billing_transactions, webhook_events,
    },
    error::ApiError,
    mail, wire_enum,
};

pub use provider::{CheckoutRequest, PaymentProvider};

wire_enum! {
    /// A billing transaction: a pack bought, a plan period paid, or money given back.
    #[schema(example = "purchase")]
    pub enum TransactionKind {
        Purchase = "purchase",
        Renewal = "renewal",
        Refund = "refund",
    }
}

wire_enum! {
    /// Why a payment awaits an operator. `amount_mismatch`, `currency_mismatch` and
    /// `unknown_product` were recorded without credits: the payment did not pay the catalog
    /// price of what it claims to buy (another amount or currency), or bought a product that
    /// is not in the catalog while its metadata names an item that is (settled by a refund or
    /// a grant by hand). `customer_conflict` was granted as usual to the account our own
    /// checkout reference names, but the provider's customer is linked to another account.
    #[schema(example = "amount_mismatch")]
    pub enum PaymentFlag {
        AmountMismatch = "amount_mismatch",
        CurrencyMismatch = "currency_mismatch",
        UnknownProduct = "unknown_product",
        CustomerConflict = "customer_conflict",
    }
}

impl PaymentFlag {
    /// Whether a payment with this flag is recorded without its credits.
    pub fn withholds_credits(self) -> bool {
        !matches!(self, Self::CustomerConflict)
    }
}

/// Whether a payment paid the catalog price (`price_cents` in `currency`): `list_cents` is
/// what the provider says the items cost before discounts and taxes, in `paid_currency`.
/// Discounts lower the total, not the list price: they can only come from the provider
/// account's own coupons, so they are the operator's choice and are allowed.
pub fn price_flag(
    list_cents: Option<i64>,
    paid_currency: Option<&str>,
    price_cents: i64,
    currency: &str,
) -> Option<PaymentFlag> {
    if !paid_currency.is_some_and(|paid| paid.eq_ignore_ascii_case(currency)) {
        Some(PaymentFlag::CurrencyMismatch)
    } else if list_cents != Some(price_cents) {
        Some(PaymentFlag::AmountMismatch)
    } else {
        None
    }
}

/// Records a webhook event; false when it was already applied (a replay). Call inside the
/// transaction that applies the event, so the record and the effect commit together.
pub async fn first_delivery(
    conn: &mut AsyncPgConnection,
    provider: &str,
    event_id: &str,
    event_type: &str,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(webhook_events::table)
        .values((
            webhook_events::provider.eq(provider),
            webhook_events::event_id.eq(event_id),
            webhook_events::event_type.eq(event_type),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// A paid purchase or renewal.
pub struct Payment<'a> {
    pub user_id: Uuid,
    pub provider: &'a str,
    /// `purchase` (a pack) or `renewal` (a plan period).
    pub kind: &'a str,
    /// The provider's id of this payment; a second payment with the same id is ignored.
    pub provider_reference: &'a str,
    pub item_id: &'a str,
    pub amount_cents: i64,
    pub currency: &'a str,
    pub credits: i64,
    /// Plan credits expire (period end + grace); pack credits do not.
    pub credits_expire_at: Option<DateTime<Utc>>,
    /// Set when the payment needs an operator's look: it is recorded, flagged and logged,
    /// and grants nothing unless the flag allows it ([`PaymentFlag::withholds_credits`]).
    pub flag: Option<PaymentFlag>,
}

/// Records the payment, grants its credits and queues the receipt; `None` when this payment
/// was already recorded. A flagged payment is recorded with its flag and logged as a
/// warning; it grants nothing (and mails no receipt) when its flag withholds credits.
/// `amount_cents` and `currency` are what the provider charged. Call inside the caller's
/// transaction.
pub async fn record_payment(
    conn: &mut AsyncPgConnection,
    p: Payment<'_>,
) -> Result<Option<Uuid>, ApiError> {
    let id = Uuid::now_v7();
    let withheld = p.flag.is_some_and(PaymentFlag::withholds_credits);
    let credits = if withheld { 0 } else { p.credits };
    let inserted = diesel::insert_into(billing_transactions::table)
        .values((
            billing_transactions::id.eq(id),
            billing_transactions::user_id.eq(p.user_id),
            billing_transactions::anonymous_user_id.eq(Uuid::new_v4()),
            billing_transactions::provider.eq(p.provider),
            billing_transactions::kind.eq(p.kind),
            billing_transactions::provider_reference.eq(p.provider_reference),
            billing_transactions::item_id.eq(p.item_id),
            billing_transactions::amount_cents.eq(p.amount_cents),
            billing_transactions::currency.eq(p.currency),
            billing_transactions::credits.eq(credits),
            billing_transactions::flag.eq(p.flag.map(PaymentFlag::as_str)),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 0 {
        return Ok(None);
    }
    if let Some(flag) = p.flag {
        tracing::warn!(
            transaction = %id,
            user = %p.user_id,
            provider = p.provider,
            reference = p.provider_reference,
            item = p.item_id,
            amount_cents = p.amount_cents,
            currency = p.currency,
            flag = flag.as_str(),
            credits_withheld = withheld,
            "payment flagged for review"
        );
        if withheld {
            return Ok(Some(id));
        }
    }
    let source = if p.kind == "renewal" {
        GrantSource::Subscription
    } else {
        GrantSource::Purchase
    };
    let description = format!(
        "{} {} ({})",
        if p.kind == "renewal" { "Plan" } else { "Pack" },
        p.item_id,
        p.provider
    );
    // A payment that grants nothing (a plan change without an upgrade) is still recorded.
    if p.credits > 0 {
        ledger::grant(
            conn,
            ledger::NewGrant {
                user_id: p.user_id,
                amount: p.credits,
                source,
                expires_at: p.credits_expire_at,
                reference: Some(&id.to_string()),
                description: &description,
            },
        )
        .await
        .map_err(credit_error)?;
    }
    let user = users::find(conn, p.user_id).await?;
    mail::queue(
        conn,
        &user.email,
        "payment_receipt",
        serde_json::json!({
            "name": user.name,
            "amount": format_money(p.amount_cents, p.currency),
            "credits": p.credits,
            "item": p.item_id,
            "provider": p.provider,
            "reference": p.provider_reference,
            "date": Utc::now().format("%Y-%m-%d").to_string(),
        }),
    )
    .await?;
    Ok(Some(id))
}

/// A refund of (part of) a recorded payment.
pub struct Refund<'a> {
    pub provider: &'a str,
    /// The refunded payment's `provider_reference`.
    pub payment_reference: &'a str,
    /// The refund's own id at the provider; a second refund with the same id is ignored.
    pub refund_reference: &'a str,
    pub amount_cents: i64,
}

/// A charge's refunds as one event shows them, bookable from that event alone: the cumulative
/// refunded amount, and the refund objects it lists (when expanded), succeeded or pending.
pub struct ChargeRefunds<'a> {
    pub provider: &'a str,
    /// The refunded payment's `provider_reference`.
    pub payment_reference: &'a str,
    /// The charge's id: names a refund booked from the cumulative total alone.
    pub charge_reference: &'a str,
    /// Everything refunded of the charge so far (Stripe's `amount_refunded`).
    pub amount_refunded: i64,
    /// `(refund id, amount)` of the refunds the event lists.
    pub listed: &'a [(&'a str, i64)],
}

/// Books what `c.amount_refunded` adds to the refunds already booked for the payment: listed
/// refunds not yet booked under their own id first, the rest under the charge and total.
/// Replays, and events showing an older total, book nothing. `None` when the payment is not
/// recorded here; else (credits clawed back, credits lost) of what this booked. Call inside
/// the caller's transaction.
pub async fn record_charge_refunds(
    conn: &mut AsyncPgConnection,
    c: ChargeRefunds<'_>,
) -> Result<Option<(i64, i64)>, ApiError> {
    // Locked, so concurrent events for one payment book one after the other.
    let payment: Option<Uuid> = billing_transactions::table
        .filter(billing_transactions::provider.eq(c.provider))
        .filter(billing_transactions::kind.ne("refund"))
        .filter(billing_transactions::provider_reference.eq(c.payment_reference))
        .select(billing_transactions::id)
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some(payment_id) = payment else {
        return Ok(None);
    };
    let booked: Vec<(String, i64)> = billing_transactions::table
        .filter(billing_transactions::refunded_transaction_id.eq(payment_id))
        .filter(billing_transactions::kind.eq("refund"))
        .select((
            billing_transactions::provider_reference,
            billing_transactions::amount_cents,
        ))
        .load(conn)
        .await?;
    let mut due = c.amount_refunded - booked.iter().map(|(_, a)| -a).sum::<i64>();
    let mut total = (0, 0);
    let mut book = async |conn: &mut AsyncPgConnection, reference: &str, amount: i64| {
        let applied = record_refund(
            conn,
            Refund {
                provider: c.provider,
                payment_reference: c.payment_reference,
                refund_reference: reference,
                amount_cents: amount,
            },
        )
        .await?;
        if let Some((clawed, lost)) = applied {
            total = (total.0 + clawed, total.1 + lost);
        }
        Ok::<_, ApiError>(())
    };
    for &(refund, amount) in c.listed {
        if amount > 0 && amount <= due && !booked.iter().any(|(r, _)| r == refund) {
            book(conn, refund, amount).await?;
            due -= amount;
        }
    }
    if due > 0 {
        let reference = format!("{}:{}", c.charge_reference, c.amount_refunded);
        book(conn, &reference, due).await?;
    }
    Ok(Some(total))
}

/// Records that the payment `alias` (a payment intent or charge) paid `payment_reference` (the
/// reference a payment was recorded under). Repeats are no-ops.
pub async fn record_payment_alias(
    conn: &mut AsyncPgConnection,
    provider: &str,
    alias: &str,
    payment_reference: &str,
) -> QueryResult<()> {
    diesel::insert_into(billing_payment_aliases::table)
        .values((
            billing_payment_aliases::provider.eq(provider),
            billing_payment_aliases::alias.eq(alias),
            billing_payment_aliases::payment_reference.eq(payment_reference),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// The payment references recorded for any of `aliases`.
pub async fn payments_for_aliases(
    conn: &mut AsyncPgConnection,
    provider: &str,
    aliases: &[&str],
) -> QueryResult<Vec<String>> {
    billing_payment_aliases::table
        .filter(billing_payment_aliases::provider.eq(provider))
        .filter(billing_payment_aliases::alias.eq_any(aliases))
        .select(billing_payment_aliases::payment_reference)
        .load(conn)
        .await
}

/// Takes back the refunded share of the payment's credits (see [`ledger::claw_back`]: the
/// payment's grant first, then the rest of the balance; what was spent is owed, as
/// `credits_lost`). `None` when already recorded or the payment is unknown. Call inside the
/// caller's transaction.
pub async fn record_refund(
    conn: &mut AsyncPgConnection,
    r: Refund<'_>,
) -> Result<Option<(i64, i64)>, ApiError> {
    let payment: Option<(Uuid, Option<Uuid>, i64, i64, String)> = billing_transactions::table
        .filter(billing_transactions::provider.eq(r.provider))
        .filter(billing_transactions::kind.ne("refund"))
        .filter(billing_transactions::provider_reference.eq(r.payment_reference))
        .select((
            billing_transactions::id,
            billing_transactions::user_id,
            billing_transactions::amount_cents,
            billing_transactions::credits,
            billing_transactions::currency,
        ))
        .first(conn)
        .await
        .optional()?;
    let Some((payment_id, Some(user_id), paid_cents, credits, currency)) = payment else {
        return Ok(None);
    };
    let id = Uuid::now_v7();
    let inserted = diesel::insert_into(billing_transactions::table)
        .values((
            billing_transactions::id.eq(id),
            billing_transactions::user_id.eq(user_id),
            billing_transactions::anonymous_user_id.eq(Uuid::new_v4()),
            billing_transactions::provider.eq(r.provider),
            billing_transactions::kind.eq("refund"),
            billing_transactions::provider_reference.eq(r.refund_reference),
            billing_transactions::amount_cents.eq(-r.amount_cents.abs()),
            billing_transactions::currency.eq(&currency),
            billing_transactions::refunded_transaction_id.eq(payment_id),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 0 {
        return Ok(None);
    }
    // The refunded share of the credits, rounded up: a full refund takes everything back.
    let share = if paid_cents <= 0 {
        credits
    } else {
        ((credits * r.amount_cents.abs() + paid_cents - 1) / paid_cents).min(credits)
    };
    let (clawed, lost) = if share > 0 {
        ledger::claw_back(
            conn,
            user_id,
            &payment_id.to_string(),
            share,
            &format!("Refund {}", r.refund_reference),
        )
        .await
        .map_err(credit_error)?
    } else {
        (0, 0)
    };
    diesel::update(billing_transactions::table.find(id))
        .set((
            billing_transactions::credits.eq(-clawed),
            billing_transactions::credits_lost.eq(lost),
        ))
        .execute(conn)
        .await?;
    Ok(Some((clawed, lost)))
}

/// A subscription's state as a provider reported it at `provider_updated_at`.
pub struct SubscriptionState<'a> {
    pub user_id: Uuid,
    pub provider: &'a str,
    pub provider_subscription_id: &'a str,
    pub plan_id: &'a str,
    pub status: &'a str,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub provider_updated_at: DateTime<Utc>,
}

/// Stores the state unless a newer one is already stored (events can arrive out of order);
/// true when it was applied.
pub async fn apply_subscription_state(
    conn: &mut AsyncPgConnection,
    s: SubscriptionState<'_>,
) -> QueryResult<bool> {
    use diesel::sql_types::{Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
    // Upsert guarded by the provider's timestamp: an older state never overwrites a newer one.
    let changed = diesel::sql_query(
        "INSERT INTO subscriptions AS s (id, user_id, provider, provider_subscription_id, plan_id, status,
                                         current_period_end, cancel_at_period_end, provider_updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (provider, provider_subscription_id) DO UPDATE SET
           plan_id = EXCLUDED.plan_id, status = EXCLUDED.status, current_period_end = EXCLUDED.current_period_end,
           cancel_at_period_end = EXCLUDED.cancel_at_period_end, provider_updated_at = EXCLUDED.provider_updated_at,
           updated_at = now()
         WHERE s.provider_updated_at <= EXCLUDED.provider_updated_at",
    )
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<SqlUuid, _>(s.user_id)
    .bind::<Text, _>(s.provider)
    .bind::<Text, _>(s.provider_subscription_id)
    .bind::<Text, _>(s.plan_id)
    .bind::<Text, _>(s.status)
    .bind::<Nullable<Timestamptz>, _>(s.current_period_end)
    .bind::<Bool, _>(s.cancel_at_period_end)
    .bind::<Timestamptz, _>(s.provider_updated_at)
    .execute(conn)
    .await?;
    Ok(changed == 1)
}

/// The user's customer id at `provider`, if one was created.
pub async fn customer_id(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    provider: &str,
) -> QueryResult<Option<String>> {
    billing_customers::table
        .find((user_id, provider))
        .select(billing_customers::customer_id)
        .first(conn)
        .await
        .optional()
}

/// Remembers the provider's customer for the user (first writer wins); returns the stored id.
pub async fn remember_customer(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    provider: &str,
    customer: &str,
) -> QueryResult<String> {
    insert_link(conn, user_id, provider, customer).await?;
    billing_customers::table
        .find((user_id, provider))
        .select(billing_customers::customer_id)
        .first(conn)
        .await
}

/// The user's link to the provider's customer, unless either is linked already.
async fn insert_link(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    provider: &str,
    customer: &str,
) -> QueryResult<usize> {
    diesel::insert_into(billing_customers::table)
        .values((
            billing_customers::user_id.eq(user_id),
            billing_customers::provider.eq(provider),
            billing_customers::customer_id.eq(customer),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await
}

/// Links the provider's customer to the user unless it is linked already (first link wins:
/// it is what the portal opens). False when the customer belongs to another account: the
/// caller still records the payment for `user_id` and flags it
/// ([`PaymentFlag::CustomerConflict`]).
pub async fn link_customer(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    provider: &str,
    customer: &str,
) -> QueryResult<bool> {
    insert_link(conn, user_id, provider, customer).await?;
    let owner = user_for_customer(conn, provider, customer).await?;
    Ok(owner.is_none_or(|owner| owner == user_id))
}

/// Records a signed event that can never be applied (it lacks what we need, or names
/// nothing we can act on) with the reason, so it is acknowledged once and an operator can
/// find it (`webhook_events.needs_attention`). Repeats are no-ops.
pub async fn record_unapplied(
    conn: &mut AsyncPgConnection,
    provider: &str,
    event_id: &str,
    event_type: &str,
    reason: &str,
) -> QueryResult<()> {
    tracing::warn!(
        provider,
        event_id,
        event_type,
        reason,
        "webhook event cannot be applied; acknowledged and kept for review"
    );
    diesel::insert_into(webhook_events::table)
        .values((
            webhook_events::provider.eq(provider),
            webhook_events::event_id.eq(event_id),
            webhook_events::event_type.eq(event_type),
            webhook_events::needs_attention.eq(reason),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// The user a provider's customer id belongs to.
pub async fn user_for_customer(
    conn: &mut AsyncPgConnection,
    provider: &str,
    customer: &str,
) -> QueryResult<Option<Uuid>> {
    billing_customers::table
        .filter(billing_customers::provider.eq(provider))
        .filter(billing_customers::customer_id.eq(customer))
        .select(billing_customers::user_id)
        .first(conn)
        .await
        .optional()
}

/// How many decimals a currency's amounts have (ISO 4217 minor units). Providers count
/// amounts in the smallest unit: 1500 JPY is ¥1500, 1500 USD cents is $15.00, 1500 BHD fils
/// is 1.500 BHD.
pub fn minor_units(currency: &str) -> u32 {
    // ISO 4217 currencies without a minor unit, and those with three decimals; every
    // other currency has two.
    const ZERO: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
        "VUV", "XAF", "XOF", "XPF",
    ];
    const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    let code = currency.to_ascii_uppercase();
    if ZERO.contains(&code.as_str()) {
        0
    } else if THREE.contains(&code.as_str()) {
        3
    } else {
        2
    }
}

/// An amount in the currency's smallest unit as text: `5.00 USD`, `1500 JPY`, `1.500 BHD`.
pub fn format_money(amount: i64, currency: &str) -> String {
    let code = currency.to_uppercase();
    let digits = minor_units(currency);
    if digits == 0 {
        return format!("{amount} {code}");
    }
    let scale = 10_i64.pow(digits);
    let sign = if amount < 0 { "-" } else { "" };
    let (major, minor) = (
        amount.unsigned_abs() / scale as u64,
        amount.unsigned_abs() % scale as u64,
    );
    format!(
        "{sign}{major}.{minor:0width$} {code}",
        width = digits as usize
    )
}

fn credit_error(err: crate::credits::CreditError) -> ApiError {
    ApiError::Internal(anyhow::Error::new(err).context("credit ledger"))
}

/// The provider named in a request, if this server has its keys.
pub fn provider(
    state: &crate::state::AppState,
    name: &str,
) -> Result<Box<dyn PaymentProvider>, ApiError> {
    let billing = &state.config.billing;
    match name {
        "stripe" => billing
            .stripe
            .as_ref()
            .map(|c| Box::new(stripe::StripeProvider::new(c.clone())) as Box<dyn PaymentProvider>)
            .ok_or_else(|| not_configured("Stripe")),
        "creem" => billing
            .creem
            .as_ref()
            .map(|c| Box::new(creem::CreemProvider::new(c.clone())) as Box<dyn PaymentProvider>)
            .ok_or_else(|| not_configured("Creem")),
        _ => Err(ApiError::validation("provider", "must be stripe or creem")),
    }
}

/// 503 `billing_not_configured`, for routes of a provider without keys.
pub fn not_configured(provider: &str) -> ApiError {
    ApiError::unavailable(
        "billing_not_configured",
        format!("Payments through {provider} are not configured on this server."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_respects_the_currency_minor_units() {
        assert_eq!(format_money(500, "usd"), "5.00 USD");
        assert_eq!(format_money(5, "eur"), "0.05 EUR");
        assert_eq!(format_money(-714, "eur"), "-7.14 EUR");
        assert_eq!(format_money(1500, "jpy"), "1500 JPY");
        assert_eq!(format_money(1500, "KRW"), "1500 KRW");
        assert_eq!(format_money(1500, "bhd"), "1.500 BHD");
    }

    #[test]
    fn only_the_catalog_price_in_its_currency_passes() {
        assert_eq!(price_flag(Some(500), Some("usd"), 500, "usd"), None);
        assert_eq!(price_flag(Some(500), Some("USD"), 500, "usd"), None);
        assert_eq!(
            price_flag(Some(100), Some("usd"), 500, "usd"),
            Some(PaymentFlag::AmountMismatch)
        );
        assert_eq!(
            price_flag(Some(1000), Some("usd"), 500, "usd"),
            Some(PaymentFlag::AmountMismatch),
            "two packs paid are not one pack"
        );
        assert_eq!(
            price_flag(None, Some("usd"), 500, "usd"),
            Some(PaymentFlag::AmountMismatch)
        );
        assert_eq!(
            price_flag(Some(500), Some("jpy"), 500, "usd"),
            Some(PaymentFlag::CurrencyMismatch)
        );
        assert_eq!(
            price_flag(Some(500), None, 500, "usd"),
            Some(PaymentFlag::CurrencyMismatch)
        );
    }
}
