//! `/v1/me/exports`: request a copy of everything the service holds about you, follow its
//! progress, and download the ZIP through a signed link valid for 7 days.

use actix_web::{HttpResponse, get, http::header, post, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    accounts::export::{self, ExportRow, ExportStatus},
    auth::SessionAuth,
    db::schema::exports,
    error::{ApiError, Problem},
    jobs::{self, NewJob},
    pagination::{Page, PageQuery},
    state::AppState,
};

/// A personal-data export.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
    "status": "succeeded",
    "progress": 100,
    "download_url": "https://files.gptimage2.dev/users/0193a1d2/exports/0193a1d2.zip?expires=1765000000&signature=4be1",
    "expires_at": "2026-12-06T10:00:00Z",
    "bytes": 5242880,
    "error": null,
    "created_at": "2026-11-29T10:00:00Z",
    "finished_at": "2026-11-29T10:00:30Z"
}))]
pub struct ExportView {
    pub id: Uuid,
    #[schema(value_type = ExportStatus)]
    pub status: String,
    /// 0–100; 100 once the archive is ready.
    #[schema(example = 40)]
    pub progress: i32,
    /// A signed link to the ZIP, valid until `expires_at`; null until it succeeded and after it expired.
    pub download_url: Option<String>,
    /// When the archive is deleted (7 days after it was made).
    pub expires_at: Option<DateTime<Utc>>,
    /// The archive's size.
    pub bytes: Option<i64>,
    /// Why it failed, for `failed`.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A page of `ExportView`s.
pub type ExportPage = Page<ExportView>;

async fn view(state: &AppState, row: ExportRow) -> Result<ExportView, ApiError> {
    let url = export::download_url(state.store.as_ref(), &row)
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("signing an export link")))?;
    Ok(ExportView {
        id: row.id,
        status: row.status,
        progress: row.progress,
        download_url: url.map(String::from),
        expires_at: row.expires_at,
        bytes: row.bytes,
        error: row.error,
        created_at: row.created_at,
        finished_at: row.finished_at,
    })
}

/// Start an export of your data: profile, sign-ins, consents, generations, images, credits and payments.
#[utoipa::path(
    tag = "account",
    operation_id = "createExport",
    security(("bearer_jwt" = [])),
    responses(
        (status = 202, description = "Queued; follow it at the `Location`", body = ExportView,
         headers(("Location" = String, description = "The export"))),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot export the account", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`export_in_progress`: one export at a time", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/me/exports")]
pub async fn create_export(
    state: web::Data<AppState>,
    auth: SessionAuth,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::now_v7();
    let mut conn = state.pool.get().await?;
    let row = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let inserted = diesel::insert_into(exports::table)
                .values((exports::id.eq(id), exports::user_id.eq(auth.user_id)))
                .execute(conn)
                .await;
            match inserted {
                Ok(_) => {}
                // The partial unique index allows one queued or running export per user.
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                )) => {
                    return Err(ApiError::conflict(
                        "export_in_progress",
                        "An export is already being prepared; wait for it to finish.",
                    ));
                }
                Err(e) => return Err(e.into()),
            }
            jobs::enqueue(
                conn,
                NewJob::new(export::KIND, serde_json::json!({ "export_id": id }))
                    .max_attempts(export::MAX_ATTEMPTS),
            )
            .await?;
            Ok(exports::table
                .find(id)
                .select(ExportRow::as_select())
                .first(conn)
                .await?)
        })
        .await?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/v1/me/exports/{id}")))
        .json(view(&state, row).await?))
}

/// Your exports, newest first.
#[utoipa::path(
    tag = "account",
    operation_id = "listExports",
    params(PageQuery),
    security(("bearer_jwt" = [])),
    responses(
        (status = 200, description = "A page of exports", body = ExportPage),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot list exports", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: bad `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/me/exports")]
pub async fn list_exports(
    state: web::Data<AppState>,
    auth: SessionAuth,
    query: web::Query<PageQuery>,
) -> Result<web::Json<ExportPage>, ApiError> {
    let limit = query.limit()?;
    let mut q = exports::table
        .filter(exports::user_id.eq(auth.user_id))
        .into_boxed();
    if let Some(after) = query.after()? {
        q = q.filter(exports::id.lt(after));
    }
    let mut conn = state.pool.get().await?;
    let rows: Vec<ExportRow> = q
        .order(exports::id.desc())
        .limit(limit + 1)
        .select(ExportRow::as_select())
        .load(&mut conn)
        .await?;
    drop(conn);
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        views.push(view(&state, row).await?);
    }
    Ok(web::Json(Page::from_rows(views, limit, |v| v.id, |v| v)))
}

/// One export: its progress, and the download link once it is ready.
#[utoipa::path(
    tag = "account",
    operation_id = "getExport",
    params(("id" = Uuid, Path, description = "Export id")),
    security(("bearer_jwt" = [])),
    responses(
        (status = 200, description = "The export", body = ExportView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot read exports", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such export of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/me/exports/{id}")]
pub async fn get_export(
    state: web::Data<AppState>,
    auth: SessionAuth,
    id: web::Path<Uuid>,
) -> Result<web::Json<ExportView>, ApiError> {
    let mut conn = state.pool.get().await?;
    let row: ExportRow = exports::table
        .filter(exports::id.eq(id.into_inner()))
        .filter(exports::user_id.eq(auth.user_id))
        .select(ExportRow::as_select())
        .first(&mut conn)
        .await?;
    drop(conn);
    Ok(web::Json(view(&state, row).await?))
}
