//! `/v1/generations`, `/v1/images`, `/v1/pricing`: submit, follow, read, cancel and delete
//! generations. Submitting places the credit hold, inserts the generation and enqueues its
//! job in one transaction.

use actix_web::{HttpResponse, delete, get, http::header, post, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    accounts::{ownership, users},
    analytics,
    auth::{Auth, Credential},
    credits::{CreditError, ledger, low_balance},
    db::schema::{api_keys, generation_images, generations, reference_images, webhook_deliveries},
    error::{ApiError, FieldError, Problem},
    generations::{
        job::{self, finish_unsuccessfully},
        params::{GenerationRequest, parse_size},
        pricing,
        values::{GenerationProvider, GenerationStatus, OutputFormat, WebhookDeliveryStatus},
    },
    jobs::{self, NewJob},
    pagination::{Page, PageQuery},
    state::AppState,
};

/// One stored image of a generation.
#[derive(Serialize, ToSchema)]
pub struct ImageView {
    pub id: Uuid,
    /// A short-lived signed link to the image; `GET /v1/images/{id}/content` gives a fresh one.
    pub url: String,
    pub url_expires_at: DateTime<Utc>,
    #[schema(example = 1024)]
    pub width: i32,
    #[schema(example = 1024)]
    pub height: i32,
    #[schema(value_type = OutputFormat)]
    pub format: String,
    #[schema(example = 1_048_576)]
    pub bytes: i64,
}

#[derive(Serialize, ToSchema)]
pub struct GenerationError {
    /// e.g. `content_policy_violation`, `deadline_exceeded`, `provider_unavailable`.
    pub code: String,
    pub message: String,
}

/// One webhook delivery of a generation's outcome and how it went.
#[derive(Serialize, ToSchema)]
pub struct WebhookDeliveryView {
    /// Also the `webhook-id` header, the same on every retry.
    pub id: Uuid,
    #[schema(value_type = WebhookDeliveryStatus)]
    pub status: String,
    #[schema(example = 1)]
    pub attempts: i32,
    /// The receiver's HTTP status on the latest attempt.
    #[schema(example = 200)]
    pub response_status: Option<i32>,
    /// Why the latest attempt failed.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A generation: its request, status, price and, once it succeeded, its images.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
    "status": "succeeded",
    "prompt": "A watercolor fox reading a map at dawn",
    "params": {
        "prompt": "A watercolor fox reading a map at dawn",
        "size": "1024x1024",
        "quality": "medium",
        "n": 1,
        "background": "auto",
        "output_format": "png",
        "moderation": "auto",
        "reference_image_ids": []
    },
    "provider": "builtin",
    "cost_credits": 4,
    "images": [{
        "id": "0193a1d2-8a40-7c11-b2f3-5d6e7f8a9b0c",
        "url": "https://files.gptimage2.dev/users/0193a1d2/generations/0193a1d2/0.png?expires=1764400000&signature=9f2c",
        "url_expires_at": "2026-11-29T10:15:00Z",
        "width": 1024,
        "height": 1024,
        "format": "png",
        "bytes": 1048576
    }],
    "error": null,
    "created_at": "2026-11-29T10:00:00Z",
    "started_at": "2026-11-29T10:00:01Z",
    "finished_at": "2026-11-29T10:00:09Z",
    "webhook_deliveries": []
}))]
pub struct GenerationView {
    pub id: Uuid,
    #[schema(value_type = GenerationStatus)]
    pub status: String,
    pub prompt: String,
    /// The parameters as submitted.
    pub params: GenerationRequest,
    #[schema(value_type = GenerationProvider)]
    pub provider: String,
    /// Credits: while queued or running, what is reserved (for `auto` size or quality, its
    /// highest price); once succeeded, what was charged for the images as rendered. Failed
    /// and canceled generations are charged nothing (this stays what was reserved).
    #[schema(example = 4)]
    pub cost_credits: i64,
    pub images: Vec<ImageView>,
    pub error: Option<GenerationError>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Deliveries to `webhook_url` (one per terminal status), oldest first.
    pub webhook_deliveries: Vec<WebhookDeliveryView>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = generations)]
struct GenerationRow {
    id: Uuid,
    status: String,
    prompt: String,
    params: serde_json::Value,
    provider: String,
    cost_credits: i64,
    error_code: Option<String>,
    error_message: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

type ImageRow = (Uuid, Uuid, String, String, i32, i32, i64);

type DeliveryRow = (
    Uuid,
    Uuid,
    String,
    i32,
    Option<i32>,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

async fn views(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    rows: Vec<GenerationRow>,
) -> Result<Vec<GenerationView>, ApiError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let images = generation_images::table
        .filter(generation_images::generation_id.eq_any(&ids))
        .order((
            generation_images::generation_id,
            generation_images::position,
        ))
        .select((
            generation_images::id,
            generation_images::generation_id,
            generation_images::object_key,
            generation_images::format,
            generation_images::width,
            generation_images::height,
            generation_images::bytes,
        ));
    let deliveries = webhook_deliveries::table
        .filter(webhook_deliveries::generation_id.eq_any(&ids))
        .order((webhook_deliveries::generation_id, webhook_deliveries::id))
        .select((
            webhook_deliveries::id,
            webhook_deliveries::generation_id,
            webhook_deliveries::status,
            webhook_deliveries::attempts,
            webhook_deliveries::response_status,
            webhook_deliveries::last_error,
            webhook_deliveries::created_at,
            webhook_deliveries::delivered_at,
        ));
    // Both go out in one round trip (diesel-async pipelines queries polled together on a
    // shared connection).
    let (mut first, mut second): (&AsyncPgConnection, &AsyncPgConnection) = (conn, conn);
    let (images, deliveries): (Vec<ImageRow>, Vec<DeliveryRow>) =
        futures::try_join!(images.load(&mut first), deliveries.load(&mut second))?;
    assemble(state, rows, &images, &deliveries).await
}

/// The views of `rows`, given their images and webhook deliveries (any order of generations;
/// each generation's in position order).
async fn assemble(
    state: &AppState,
    rows: Vec<GenerationRow>,
    images: &[ImageRow],
    deliveries: &[DeliveryRow],
) -> Result<Vec<GenerationView>, ApiError> {
    let ttl = state.config.signed_url_ttl;
    let expires = Utc::now() + ttl;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut stored = Vec::new();
        for (id, _, key, format, width, height, bytes) in images.iter().filter(|i| i.1 == row.id) {
            let url = state
                .store
                .signed_get_url(key, ttl)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
            stored.push(ImageView {
                id: *id,
                url: url.to_string(),
                url_expires_at: expires,
                width: *width,
                height: *height,
                format: format.clone(),
                bytes: *bytes,
            });
        }
        let params: GenerationRequest = serde_json::from_value(row.params)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored params: {e}")))?;
        out.push(GenerationView {
            id: row.id,
            status: row.status,
            prompt: row.prompt,
            params,
            provider: row.provider,
            cost_credits: row.cost_credits,
            images: stored,
            error: row.error_code.map(|code| GenerationError {
                code,
                message: row.error_message.unwrap_or_default(),
            }),
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            webhook_deliveries: deliveries
                .iter()
                .filter(|d| d.1 == row.id)
                .map(|d| WebhookDeliveryView {
                    id: d.0,
                    status: d.2.clone(),
                    attempts: d.3,
                    response_status: d.4,
                    last_error: d.5.clone(),
                    created_at: d.6,
                    delivered_at: d.7,
                })
                .collect(),
        });
    }
    Ok(out)
}

pub(super) async fn load_one(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user_id: Uuid,
    id: Uuid,
) -> Result<GenerationView, ApiError> {
    let row = generations::table
        .filter(generations::id.eq(id))
        .filter(generations::user_id.eq(user_id))
        .select(GenerationRow::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(ApiError::NotFound)?;
    views(conn, state, vec![row])
        .await?
        .pop()
        .ok_or(ApiError::NotFound)
}

fn check_webhook_url(state: &AppState, raw: &str) -> Option<FieldError> {
    let Ok(url) = url::Url::parse(raw) else {
        return Some(FieldError::new("webhook_url", "must be a valid URL"));
    };
    if raw.len() > 2048 {
        return Some(FieldError::new(
            "webhook_url",
            "must be at most 2048 characters",
        ));
    }
    let dev = state.config.is_development();
    // Allow-listed hosts (and the tests' allow-private override) skip the host rules.
    let exempt = state
        .config
        .webhooks
        .host_exempt(url.host_str().unwrap_or_default());
    if url.scheme() != "https" && !((dev || exempt) && url.scheme() == "http") {
        return Some(FieldError::new("webhook_url", "must use https"));
    }
    if dev || exempt {
        return None;
    }
    // Production: the addresses are checked again at each delivery (after DNS resolution);
    // these are the mistakes visible from the text alone.
    if !url.username().is_empty() || url.password().is_some() {
        return Some(FieldError::new(
            "webhook_url",
            "must not contain credentials",
        ));
    }
    match url.host() {
        Some(url::Host::Domain(h))
            if h.contains('.')
                && ![".localhost", ".local", ".internal", ".home.arpa", ".lan"]
                    .iter()
                    .any(|suffix| h.trim_end_matches('.').ends_with(suffix)) =>
        {
            None
        }
        _ => Some(FieldError::new("webhook_url", "must name a public host")),
    }
}

/// Submit a generation.
///
/// Prices the request, reserves its credits, and queues it, all at once. `cost_credits` is
/// the amount reserved: the price, or for `size` or `quality` `auto` the highest price it can
/// resolve to (any of 1024x1024, 1536x1024, 1024x1536 at `high`). On success the price of
/// what was rendered is charged (an `auto` size or quality as the model made it, explicit
/// ones as asked), the rest released, and `cost_credits` becomes the amount charged.
/// Nothing is charged on failure or cancel.
#[utoipa::path(
    tag = "generations",
    operation_id = "createGeneration",
    request_body = GenerationRequest,
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Queued; follow it at the `Location` (or its `/events`). `cost_credits` is what was reserved (for `auto`, its highest price); once it succeeded, what was charged for what was rendered", body = GenerationView,
            headers(("Location" = String, description = "The generation"))),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`insufficient_credits`, or `daily_credit_limit_exceeded` for an API key; nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`email_unverified`: a `webhook_url` needs a verified email address", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: each invalid field named", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/generations")]
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    body: web::Json<GenerationRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    let mut errors = request.problems();
    if let Some(url) = &request.webhook_url {
        errors.extend(check_webhook_url(&state, url));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut conn = state.pool.get().await?;
    if request.webhook_url.is_some() {
        // Deliveries are signed with the account's webhook secret, which an account that may
        // not be its address owner's does not get.
        ownership::require_verified(&users::find(&mut conn, auth.user_id).await?)?;
    }
    // `auto` reserves the most it can cost; the job charges what was rendered.
    let cost = pricing::hold(
        parse_size(&request.size).ok().flatten(),
        &request.quality,
        request.n,
    );
    let wanted: Vec<Uuid> = request
        .reference_image_ids
        .iter()
        .copied()
        .chain(request.mask_image_id)
        .collect();
    if !wanted.is_empty() {
        let owned: Vec<Uuid> = reference_images::table
            .filter(reference_images::user_id.eq(auth.user_id))
            .filter(reference_images::id.eq_any(&wanted))
            .select(reference_images::id)
            .load(&mut conn)
            .await?;
        let missing: Vec<FieldError> = request
            .reference_image_ids
            .iter()
            .filter(|id| !owned.contains(id))
            .map(|id| FieldError::new("reference_image_ids", format!("no reference image {id}")))
            .chain(
                request
                    .mask_image_id
                    .filter(|id| !owned.contains(id))
                    .map(|id| FieldError::new("mask_image_id", format!("no reference image {id}"))),
            )
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::Validation(missing));
        }
    }
    let api_key = match auth.credential {
        Credential::ApiKey(id) => Some(id),
        Credential::Session(_) => None,
    };
    let provider = state.config.generation.provider.clone();
    let view = conn
        .transaction::<_, ApiError, _>(async |conn| {
            if let Some(key) = api_key {
                let limit: Option<i64> = api_keys::table.find(key).select(api_keys::daily_credit_limit).for_update().first(conn).await?;
                if let Some(limit) = limit {
                    // Spent or reserved through this key in the last 24 hours.
                    #[derive(QueryableByName)]
                    struct Used {
                        #[diesel(sql_type = diesel::sql_types::BigInt)]
                        used: i64,
                    }
                    let used = diesel::sql_query(
                        "SELECT coalesce(sum(CASE WHEN status = 'captured' THEN captured ELSE amount END), 0)::bigint AS used FROM credit_holds
                         WHERE api_key_id = $1 AND status <> 'released' AND created_at > now() - interval '1 day'",
                    )
                    .bind::<diesel::sql_types::Uuid, _>(key)
                    .get_result::<Used>(conn)
                    .await?
                    .used;
                    if used + cost > limit {
                        return Err(ApiError::PaymentRequired {
                            code: "daily_credit_limit_exceeded",
                            detail: format!("This API key may spend {limit} credits a day; {used} are used or reserved."),
                        });
                    }
                }
            }
            let id = Uuid::now_v7();
            let held = ledger::hold_within(
                conn,
                &ledger::NewHold { user_id: auth.user_id, amount: cost, reference: Some(&id.to_string()), api_key_id: api_key, description: "generation" },
            )
            .await
            .map_err(|e| match e {
                CreditError::Insufficient { available, required } => ApiError::PaymentRequired {
                    code: "insufficient_credits",
                    detail: format!("This generation costs {required} credits; {available} are available."),
                },
                other => ApiError::Internal(anyhow::Error::new(other)),
            })?;
            let job = NewJob::new(job::KIND, serde_json::json!({ "generation_id": id })).max_attempts(job::MAX_ATTEMPTS);
            let insert = diesel::insert_into(generations::table)
                .values((
                    generations::id.eq(id),
                    generations::user_id.eq(auth.user_id),
                    generations::prompt.eq(&request.prompt),
                    generations::params.eq(serde_json::to_value(&request).map_err(|e| ApiError::Internal(e.into()))?),
                    generations::provider.eq(&provider),
                    generations::cost_credits.eq(cost),
                    generations::hold_id.eq(held.id),
                    generations::job_id.eq(job.id),
                    generations::api_key_id.eq(api_key),
                ))
                .returning(GenerationRow::as_returning());
            // The job and the generation in one round trip (pipelined; the job is only
            // claimable once this commits).
            let (mut first, mut second): (&AsyncPgConnection, &AsyncPgConnection) = (conn, conn);
            let (_, row): (Uuid, GenerationRow) =
                futures::try_join!(jobs::enqueue(&mut first, job), insert.get_result(&mut second))?;
            low_balance::check_account(conn, &state.config, auth.user_id, held.account.available, held.account.low_balance_notified).await?;
            // The answer is the state this request created (no images or deliveries yet),
            // even if a worker picks the job up the instant it commits.
            let mut views = assemble(&state, vec![row], &[], &[]).await?;
            views.pop().ok_or(ApiError::NotFound)
        })
        .await?;
    // After the commit: only what was chosen, never the prompt or the images.
    analytics::track(
        &mut conn,
        &state.config.url_signing_key,
        auth.user_id,
        analytics::event::GENERATION_SUBMITTED,
        serde_json::json!({
            "size": request.size,
            "quality": request.quality,
            "n": request.n,
            "output_format": request.output_format,
        }),
    )
    .await;
    let id = view.id;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/v1/generations/{id}")))
        .json(view))
}

/// A page of generations.
pub type GenerationPage = Page<GenerationView>;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only generations in this status. A string here, so a bad value is a 422 naming `status`.
    #[param(value_type = Option<GenerationStatus>)]
    pub status: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    #[param(max_length = 64)]
    pub cursor: Option<String>,
}

/// Your generations, newest first.
#[utoipa::path(
    tag = "generations",
    operation_id = "listGenerations",
    params(ListQuery),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of generations", body = GenerationPage),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: bad `status`, `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/generations")]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let limit = page.limit()?;
    let status = match query.status {
        None => None,
        Some(status) => Some(GenerationStatus::parse(&status).ok_or_else(|| {
            ApiError::validation(
                "status",
                "must be queued, running, succeeded, failed or canceled",
            )
        })?),
    };
    let after = page.after()?;
    // A client polling its list gets the page kept from the last identical request, until
    // one of its generations, images or deliveries changes (`read_cache.rs`).
    let cache = &state.read_cache;
    let key = format!(
        "generations?status={}&after={}&limit={limit}",
        status.map_or("", |s| s.as_str()),
        after.map(|id| id.to_string()).unwrap_or_default(),
    );
    if let Some(body) = cache.page(auth.user_id, &key) {
        return Ok(json_bytes(body));
    }
    let stamp = cache.stamp();
    let mut q = generations::table
        .filter(generations::user_id.eq(auth.user_id))
        .into_boxed();
    if let Some(status) = status {
        q = q.filter(generations::status.eq(status.as_str()));
    }
    if let Some(after) = after {
        q = q.filter(generations::id.lt(after));
    }
    let mut conn = state.pool.get().await?;
    let mut rows: Vec<GenerationRow> = q
        .order(generations::id.desc())
        .limit(limit + 1)
        .select(GenerationRow::as_select())
        .load(&mut conn)
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let last = rows.last().map(|r| r.id);
    let data = views(&mut conn, &state, rows).await?;
    let page = Page {
        data,
        next_cursor: last.filter(|_| more).map(crate::pagination::cursor_after),
    };
    let body =
        web::Bytes::from(serde_json::to_vec(&page).map_err(|e| ApiError::Internal(e.into()))?);
    // Kept for a tenth of the links' lifetime, so a page served from memory still carries
    // links valid for nine tenths of it (their `expires_at` says exactly).
    cache.keep_page(
        stamp,
        auth.user_id,
        key,
        body.clone(),
        state.config.signed_url_ttl / 10,
    );
    Ok(json_bytes(body))
}

fn json_bytes(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

/// One generation, with short-lived signed links to its images.
#[utoipa::path(
    tag = "generations",
    operation_id = "getGeneration",
    params(("id" = Uuid, Path, description = "Generation id")),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The generation", body = GenerationView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such generation of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/generations/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<Uuid>,
) -> Result<web::Json<GenerationView>, ApiError> {
    let mut conn = state.pool.get().await?;
    Ok(web::Json(
        load_one(&mut conn, &state, auth.user_id, id.into_inner()).await?,
    ))
}

/// Cancel a queued or running generation; its credits are released.
///
/// Nothing is charged, even when partial images were already sent: they are deleted at
/// once and no longer served (their links stop working, the event stream sends no more).
#[utoipa::path(
    tag = "generations",
    operation_id = "cancelGeneration",
    params(("id" = Uuid, Path, description = "Generation id")),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Canceled (or already finished: its state is returned)", body = GenerationView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such generation of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`already_finished`: it succeeded or failed before the cancel", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/generations/{id}/cancel")]
pub async fn cancel(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<Uuid>,
) -> Result<web::Json<GenerationView>, ApiError> {
    let id = id.into_inner();
    let mut conn = state.pool.get().await?;
    let current = load_one(&mut conn, &state, auth.user_id, id).await?;
    if current.status == "canceled" {
        return Ok(web::Json(current));
    }
    if !job::cancel(&mut conn, state.store.as_ref(), auth.user_id, id).await? {
        return Err(ApiError::conflict(
            "already_finished",
            "The generation finished before it could be canceled.",
        ));
    }
    Ok(web::Json(
        load_one(&mut conn, &state, auth.user_id, id).await?,
    ))
}

/// Delete a generation and its stored images (a running one is canceled first).
#[utoipa::path(
    tag = "generations",
    operation_id = "deleteGeneration",
    params(("id" = Uuid, Path, description = "Generation id")),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such generation of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/generations/{id}")]
pub async fn remove(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let mut conn = state.pool.get().await?;
    let owner: Option<Uuid> = generations::table
        .filter(generations::id.eq(id))
        .filter(generations::user_id.eq(auth.user_id))
        .select(generations::id)
        .first(&mut conn)
        .await
        .optional()?;
    owner.ok_or(ApiError::NotFound)?;
    finish_unsuccessfully(&mut conn, id, "canceled", None).await?;
    let prefix = crate::generations::purge::prefix(auth.user_id, id);
    state
        .store
        .delete_prefix(&prefix)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    diesel::delete(generations::table.find(id))
        .execute(&mut conn)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Redirect to a fresh signed link to one image.
#[utoipa::path(
    tag = "generations",
    operation_id = "getImageContent",
    params(("id" = Uuid, Path, description = "Image id")),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 302, description = "Redirect to a short-lived signed URL", headers(("Location" = String, description = "The signed URL"))),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such image of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/images/{id}/content")]
pub async fn image_content(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    let key: String = generation_images::table
        .filter(generation_images::id.eq(id.into_inner()))
        .filter(generation_images::user_id.eq(auth.user_id))
        .select(generation_images::object_key)
        .first(&mut conn)
        .await
        .optional()?
        .ok_or(ApiError::NotFound)?;
    let url = state
        .store
        .signed_get_url(&key, state.config.signed_url_ttl)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, url.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "sizes": [
        { "size": "1024x1024", "low": 1, "medium": 4, "high": 16, "auto": 16 },
        { "size": "1536x1024", "low": 2, "medium": 6, "high": 24, "auto": 24 }
    ]
}))]
pub struct PricingView {
    /// Credits per image; a request costs this × `n`. Other sizes scale with their pixels.
    /// The `auto` size row and the `auto` quality column are what `auto` holds (its highest
    /// price); it is charged as rendered.
    pub sizes: Vec<pricing::PriceRow>,
}

/// Credits per image for each size × quality.
///
/// Explicit sizes and qualities are charged as listed. `auto` (size, quality or both) is
/// held at the highest price it can resolve to (a size of 1024x1024, 1536x1024 or
/// 1024x1536, quality `high`) and, once the image is made, charged at the price of the size
/// and quality the model rendered; the rest of the hold is released.
#[utoipa::path(tag = "generations", operation_id = "getPricing", responses((status = 200, description = "The price table: explicit sizes and qualities at their price, `auto` at what it holds (charged as rendered)", body = PricingView)))]
#[get("/v1/pricing")]
pub async fn pricing_table() -> web::Json<PricingView> {
    web::Json(PricingView {
        sizes: pricing::table(),
    })
}
