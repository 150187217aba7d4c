//! `/v1/credits`: balances, the grants they come from, and the full ledger.

use actix_web::{get, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::Auth,
    credits::ledger::{self, GrantSource, LedgerEntryKind},
    db::schema::{credit_grants, ledger_entries},
    error::{ApiError, Problem},
    pagination::{Page, PageQuery},
    state::AppState,
};

/// A grant with credits left, in the order spending draws from them.
#[derive(Serialize, ToSchema)]
pub struct GrantView {
    pub id: Uuid,
    #[schema(value_type = GrantSource)]
    pub source: String,
    #[schema(example = 500)]
    pub amount: i64,
    /// Unspent and unreserved.
    #[schema(example = 320)]
    pub remaining: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "balance": 340,
    "held": 20,
    "available": 320,
    "grants": [{
        "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
        "source": "subscription",
        "amount": 500,
        "remaining": 320,
        "expires_at": "2026-12-31T00:00:00Z",
        "created_at": "2026-11-29T10:00:00Z"
    }]
}))]
pub struct CreditsView {
    /// `available + held`.
    #[schema(example = 340)]
    pub balance: i64,
    /// Reserved by generations in progress.
    #[schema(example = 20)]
    pub held: i64,
    /// Free to spend now.
    #[schema(example = 320)]
    pub available: i64,
    /// Grants with credits left, soonest-expiring first (the order they are spent in).
    pub grants: Vec<GrantView>,
}

type GrantRow = (Uuid, String, i64, i64, Option<DateTime<Utc>>, DateTime<Utc>);

/// Balance, reserved credits, and the grants they come from.
#[utoipa::path(
    tag = "credits",
    operation_id = "getCredits",
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Balances and grants", body = CreditsView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/credits")]
pub async fn get_credits(
    state: web::Data<AppState>,
    auth: Auth,
) -> Result<web::Json<CreditsView>, ApiError> {
    let mut conn = state.pool.get().await?;
    let summary = ledger::summary(&mut conn, auth.user_id).await?;
    let grants: Vec<GrantRow> = ledger::spendable(auth.user_id)
        .select((
            credit_grants::id,
            credit_grants::source,
            credit_grants::amount,
            credit_grants::remaining,
            credit_grants::expires_at,
            credit_grants::created_at,
        ))
        .load(&mut conn)
        .await?;
    Ok(web::Json(CreditsView {
        balance: summary.balance(),
        held: summary.held,
        available: summary.available,
        grants: grants
            .into_iter()
            .map(
                |(id, source, amount, remaining, expires_at, created_at)| GrantView {
                    id,
                    source,
                    amount,
                    remaining,
                    expires_at,
                    created_at,
                },
            )
            .collect(),
    }))
}

/// One change to the balances.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a1d2-9b51-7d22-83a4-6e7f8a9b0c1d",
    "kind": "hold",
    "available_delta": -4,
    "held_delta": 4,
    "grant_id": null,
    "hold_id": "0193a1d2-8a40-7c11-b2f3-5d6e7f8a9b0c",
    "description": "generation",
    "created_at": "2026-11-29T10:00:09Z"
}))]
pub struct LedgerEntryView {
    pub id: Uuid,
    #[schema(value_type = LedgerEntryKind)]
    pub kind: String,
    /// Change to the available credits.
    #[schema(example = 0)]
    pub available_delta: i64,
    /// Change to the reserved credits.
    #[schema(example = -20)]
    pub held_delta: i64,
    pub grant_id: Option<Uuid>,
    /// The hold (one per generation) a hold/capture/release belongs to.
    pub hold_id: Option<Uuid>,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

/// A page of `LedgerEntryView`s.
pub type LedgerEntryPage = Page<LedgerEntryView>;

type EntryRow = (
    Uuid,
    String,
    i64,
    i64,
    Option<Uuid>,
    Option<Uuid>,
    String,
    DateTime<Utc>,
);

/// Every grant, hold, capture, release, refund and expiry: the usage history, newest first.
#[utoipa::path(
    tag = "credits",
    operation_id = "listLedger",
    params(PageQuery),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of ledger entries", body = LedgerEntryPage),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: bad `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/credits/ledger")]
pub async fn list_ledger(
    state: web::Data<AppState>,
    auth: Auth,
    query: web::Query<PageQuery>,
) -> Result<web::Json<LedgerEntryPage>, ApiError> {
    let limit = query.limit()?;
    let mut q = ledger_entries::table
        .filter(ledger_entries::user_id.eq(auth.user_id))
        .into_boxed();
    if let Some(after) = query.after()? {
        q = q.filter(ledger_entries::id.lt(after));
    }
    let mut conn = state.pool.get().await?;
    let rows: Vec<EntryRow> = q
        .order(ledger_entries::id.desc())
        .limit(limit + 1)
        .select((
            ledger_entries::id,
            ledger_entries::kind,
            ledger_entries::available_delta,
            ledger_entries::held_delta,
            ledger_entries::grant_id,
            ledger_entries::hold_id,
            ledger_entries::description,
            ledger_entries::created_at,
        ))
        .load(&mut conn)
        .await?;
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |r| r.0,
        |r| LedgerEntryView {
            id: r.0,
            kind: r.1,
            available_delta: r.2,
            held_delta: r.3,
            grant_id: r.4,
            hold_id: r.5,
            description: r.6,
            created_at: r.7,
        },
    )))
}
