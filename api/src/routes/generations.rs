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
    analytics,
    auth::{Auth, Credential},
    credits::{CreditError, ledger, low_balance},
    db::schema::{api_keys, generation_images, generations, reference_images, webhook_deliveries},
    error::{ApiError, FieldError, Problem},
    generations::{
        job::{self, finish_unsuccessfully},
        params::{GenerationRequest, parse_size},
        pricing,
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
    /// `png`, `jpeg` or `webp`.
    #[schema(example = "png")]
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
    /// `pending` (being tried), `delivered` or `failed` (gave up, or refused).
    #[schema(example = "delivered")]
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

#[derive(Serialize, ToSchema)]
pub struct GenerationView {
    pub id: Uuid,
    /// `queued`, `running`, `succeeded`, `failed` or `canceled`.
    #[schema(example = "queued")]
    pub status: String,
    pub prompt: String,
    /// The parameters as submitted.
    pub params: GenerationRequest,
    /// `builtin` (the built-in renderer) or `openai`.
    #[schema(example = "builtin")]
    pub provider: String,
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
    let images: Vec<ImageRow> = generation_images::table
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
        ))
        .load(conn)
        .await?;
    let deliveries: Vec<DeliveryRow> = webhook_deliveries::table
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
        ))
        .load(conn)
        .await?;
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

async fn load_one(
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
/// Prices the request, reserves its credits, and queues it, all at once; `cost_credits` is
/// what will be charged on success (nothing is charged on failure or cancel).
#[utoipa::path(
    tag = "generations",
    operation_id = "createGeneration",
    request_body = GenerationRequest,
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Queued", body = GenerationView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`insufficient_credits`, or `daily_credit_limit_exceeded` for an API key; nothing changed", body = Problem, content_type = "application/problem+json"),
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
    let cost = pricing::cost(
        parse_size(&request.size).ok().flatten(),
        &request.quality,
        request.n,
    );
    let mut conn = state.pool.get().await?;
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
                        "SELECT coalesce(sum(amount), 0)::bigint AS used FROM credit_holds
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
            let hold = ledger::hold(
                conn,
                ledger::NewHold { user_id: auth.user_id, amount: cost, reference: Some(&id.to_string()), api_key_id: api_key, description: "generation" },
            )
            .await
            .map_err(|e| match e {
                CreditError::Insufficient { available, required } => ApiError::PaymentRequired {
                    code: "insufficient_credits",
                    detail: format!("This generation costs {required} credits; {available} are available."),
                },
                other => ApiError::Internal(anyhow::Error::new(other)),
            })?;
            let job_id = jobs::enqueue(conn, NewJob::new(job::KIND, serde_json::json!({ "generation_id": id })).max_attempts(job::MAX_ATTEMPTS)).await?;
            diesel::insert_into(generations::table)
                .values((
                    generations::id.eq(id),
                    generations::user_id.eq(auth.user_id),
                    generations::prompt.eq(&request.prompt),
                    generations::params.eq(serde_json::to_value(&request).map_err(|e| ApiError::Internal(e.into()))?),
                    generations::provider.eq(&provider),
                    generations::cost_credits.eq(cost),
                    generations::hold_id.eq(hold),
                    generations::job_id.eq(job_id),
                    generations::api_key_id.eq(api_key),
                ))
                .execute(conn)
                .await?;
            low_balance::check(conn, &state.config, auth.user_id).await?;
            // Read back before commit: the answer is the state this request created, even
            // if a worker picks the job up the instant it commits.
            load_one(conn, &state, auth.user_id, id).await
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only generations in this status.
    #[param(example = "succeeded")]
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
        (status = 200, description = "A page of generations", body = Page<GenerationView>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: bad `status`, `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/generations")]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<GenerationView>>, ApiError> {
    let query = query.into_inner();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let limit = page.limit()?;
    let mut q = generations::table
        .filter(generations::user_id.eq(auth.user_id))
        .into_boxed();
    if let Some(status) = query.status {
        if !["queued", "running", "succeeded", "failed", "canceled"].contains(&status.as_str()) {
            return Err(ApiError::validation(
                "status",
                "must be queued, running, succeeded, failed or canceled",
            ));
        }
        q = q.filter(generations::status.eq(status));
    }
    if let Some(after) = page.after()? {
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
    Ok(web::Json(Page {
        data,
        next_cursor: last.filter(|_| more).map(crate::pagination::cursor_after),
    }))
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
    if !finish_unsuccessfully(&mut conn, id, "canceled", None).await? {
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
    let prefix = format!("users/{}/generations/{id}/", auth.user_id);
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
pub struct PricingView {
    /// Credits per image; a request costs this × `n`. Other sizes scale with their pixels.
    pub sizes: Vec<pricing::PriceRow>,
}

/// Credits per image for each size × quality.
#[utoipa::path(tag = "generations", operation_id = "getPricing", responses((status = 200, description = "The price table", body = PricingView)))]
#[get("/v1/pricing")]
pub async fn pricing_table() -> web::Json<PricingView> {
    web::Json(PricingView {
        sizes: pricing::table(),
    })
}

/// One Server-Sent Event of `GET /v1/generations/{id}/events`. The stream's schema describes
/// each event (`event:` and `data:` lines), as OpenAPI reads `text/event-stream`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: the frames are written by `sse`
pub struct GenerationEvent {
    pub event: GenerationEventName,
    /// The event's JSON: `{"status": …}` for `status`, `{"index": …, "url": …}` for
    /// `partial_image`, the generation for `completed`, `failed` and `canceled`, `{"id": …}`
    /// for `deleted`.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// The kind of a generation event; `completed`, `failed`, `canceled` and `deleted` end the stream.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum GenerationEventName {
    Status,
    PartialImage,
    Completed,
    Failed,
    Canceled,
    Deleted,
}

/// Follow a generation as Server-Sent Events: a `status` event on every change,
/// `partial_image` (`{index, url}`) for each partial image a streaming model sends, then
/// `completed` (the full generation, with image links), `failed` or `canceled` (or
/// `deleted`, when the generation is deleted meanwhile), and the stream ends. A comment line
/// every 15 s keeps proxies from closing an idle stream.
#[utoipa::path(
    tag = "generations",
    operation_id = "streamGenerationEvents",
    params(("id" = Uuid, Path, description = "Generation id")),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "`text/event-stream`: events `status` (`{\"status\": …}`), `partial_image` (`{\"index\": …, \"url\": …}`), then `completed` (the generation), `failed`, `canceled` or `deleted`", body = GenerationEvent, content_type = "text/event-stream"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such generation of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/generations/{id}/events")]
pub async fn events(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    // Ownership is checked before the stream starts, so a stranger gets a plain 404.
    let mut conn = state.pool.get().await?;
    load_one(&mut conn, &state, auth.user_id, id).await?;
    drop(conn);
    struct Follow {
        state: web::Data<AppState>,
        user_id: Uuid,
        id: Uuid,
        last: Option<String>,
        /// The next partial image index to send.
        next_partial: i32,
        done: bool,
        idle: std::time::Duration,
    }
    let start = Follow {
        state,
        user_id: auth.user_id,
        id,
        last: None,
        next_partial: 0,
        done: false,
        idle: std::time::Duration::ZERO,
    };
    let stream = futures::stream::unfold(start, |mut f| async move {
        if f.done {
            return None;
        }
        loop {
            let view = match f.state.pool.get().await {
                Ok(mut conn) => load_one(&mut conn, &f.state, f.user_id, f.id).await,
                Err(e) => Err(e.into()),
            };
            let view = match view {
                Ok(view) => view,
                Err(ApiError::NotFound) => {
                    f.done = true;
                    return Some((
                        Ok::<_, actix_web::Error>(sse(
                            "deleted",
                            &serde_json::json!({ "id": f.id }),
                        )),
                        f,
                    ));
                }
                // A passing database error: try again on the next tick.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            };
            // Partial images first, so a stream opened late still shows them before the end.
            let partials = match f.state.pool.get().await {
                Ok(mut conn) => new_partials(&mut conn, &f.state, f.id, f.next_partial)
                    .await
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            if !partials.is_empty() {
                f.next_partial = partials
                    .iter()
                    .map(|p| p.index + 1)
                    .max()
                    .unwrap_or(f.next_partial);
                f.idle = std::time::Duration::ZERO;
                let frames: String = partials.iter().map(|p| sse("partial_image", p)).collect();
                return Some((Ok(frames), f));
            }
            if f.last.as_deref() != Some(view.status.as_str()) {
                f.last = Some(view.status.clone());
                f.idle = std::time::Duration::ZERO;
                let terminal = matches!(view.status.as_str(), "succeeded" | "failed" | "canceled");
                let frame = if terminal {
                    f.done = true;
                    let name = if view.status == "succeeded" {
                        "completed"
                    } else {
                        view.status.as_str()
                    };
                    format!(
                        "{}{}",
                        sse("status", &serde_json::json!({ "status": view.status })),
                        sse(name, &view)
                    )
                } else {
                    sse("status", &serde_json::json!({ "status": view.status }))
                };
                return Some((Ok(frame), f));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            f.idle += std::time::Duration::from_millis(250);
            if f.idle >= std::time::Duration::from_secs(15) {
                f.idle = std::time::Duration::ZERO;
                return Some((Ok(": keep-alive\n\n".to_string()), f));
            }
        }
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures::StreamExt::map(stream, |r| {
            r.map(actix_web::web::Bytes::from)
        })))
}

/// A partial image the model streamed, as sent in a `partial_image` event.
#[derive(Serialize)]
struct PartialImage {
    index: i32,
    /// A short-lived signed link to the partial image.
    url: String,
}

async fn new_partials(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    generation_id: Uuid,
    from: i32,
) -> Result<Vec<PartialImage>, ApiError> {
    use crate::db::schema::generation_partials;
    let rows: Vec<(i32, String)> = generation_partials::table
        .filter(generation_partials::generation_id.eq(generation_id))
        .filter(generation_partials::idx.ge(from))
        .order(generation_partials::idx)
        .select((generation_partials::idx, generation_partials::object_key))
        .load(conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (index, key) in rows {
        let url = state
            .store
            .signed_get_url(&key, state.config.signed_url_ttl)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        out.push(PartialImage {
            index,
            url: url.to_string(),
        });
    }
    Ok(out)
}

/// One Server-Sent Event frame.
fn sse(event: &str, data: &impl Serialize) -> String {
    format!(
        "event: {event}\ndata: {}\n\n",
        serde_json::to_string(data).unwrap_or_else(|_| "{}".into())
    )
}
