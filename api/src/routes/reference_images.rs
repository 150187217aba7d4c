//! `/v1/reference-images`: upload, read, list and delete the pictures generations start from.

use actix_multipart::{Multipart, MultipartError};
use actix_web::{HttpRequest, HttpResponse, delete, get, http::header, post, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures::StreamExt;
use serde::Serialize;
use url::Url;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::Auth,
    db::schema::reference_images,
    error::{ApiError, Problem},
    generations::reference_images::{self as refs, ImageContentType, ReferenceImage},
    pagination::{Page, PageQuery},
    state::AppState,
    storage::bytes_stream,
};

/// The multipart form of an upload.
#[derive(ToSchema)]
#[allow(dead_code)] // Only describes the request body in the spec.
pub struct UploadForm {
    /// A PNG, JPEG or WebP image (detected from its content, not its name or part type).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// A stored reference image. Its bytes are the upload re-encoded in the same format,
/// without metadata (EXIF/GPS, text chunks, ICC profiles).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
    "width": 1024,
    "height": 768,
    "content_type": "image/png",
    "bytes": 482113,
    "created_at": "2026-11-29T10:00:00Z"
}))]
pub struct ReferenceImageView {
    pub id: Uuid,
    #[schema(example = 1024)]
    pub width: i32,
    #[schema(example = 768)]
    pub height: i32,
    #[schema(value_type = ImageContentType)]
    pub content_type: String,
    /// Size of the stored (re-encoded) image.
    #[schema(example = 482113)]
    pub bytes: i64,
    pub created_at: DateTime<Utc>,
}

/// A page of `ReferenceImageView`s.
pub type ReferenceImagePage = Page<ReferenceImageView>;

impl From<ReferenceImage> for ReferenceImageView {
    fn from(row: ReferenceImage) -> Self {
        Self {
            id: row.id,
            width: row.width,
            height: row.height,
            content_type: row.content_type,
            bytes: row.bytes,
            created_at: row.created_at,
        }
    }
}

/// A reference image with a short-lived download link.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
    "width": 1024,
    "height": 768,
    "content_type": "image/png",
    "bytes": 482113,
    "created_at": "2026-11-29T10:00:00Z",
    "url": "https://files.gptimage2.dev/users/0193a1d2/references/0193a1d2.png?expires=1764400000&signature=7ac3",
    "url_expires_at": "2026-11-29T10:15:00Z"
}))]
pub struct ReferenceImageDetail {
    #[serde(flatten)]
    pub image: ReferenceImageView,
    /// A signed link to the stored image; anyone holding it can download until it expires.
    #[schema(format = "uri")]
    pub url: String,
    pub url_expires_at: DateTime<Utc>,
}

/// Reads the `file` part, refusing the upload with 413 as soon as the parts read so far pass
/// `max_bytes`: at most `max_bytes` are ever held in memory, and other parts are skipped
/// without being kept (but they count, so they cannot stream forever).
async fn read_file_part(mut payload: Multipart, max_bytes: usize) -> Result<Vec<u8>, ApiError> {
    let mut skipped = 0usize;
    while let Some(field) = payload.next().await {
        let mut field = field.map_err(malformed)?;
        let is_file = field.name() == Some("file");
        let mut data = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(malformed)?;
            if skipped + data.len() + chunk.len() > max_bytes {
                return Err(ApiError::PayloadTooLarge { limit: max_bytes });
            }
            if is_file {
                data.extend_from_slice(&chunk);
            } else {
                skipped += chunk.len();
            }
        }
        if is_file {
            // Only the first `file` counts; the rest of the body is not read.
            return Ok(data);
        }
    }
    Err(ApiError::validation(
        "file",
        "is required: send the image as the multipart part named `file`",
    ))
}

fn malformed(err: MultipartError) -> ApiError {
    ApiError::bad_request(
        "malformed_multipart",
        format!("The multipart body could not be read: {err}."),
    )
}

fn is_multipart(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// Upload a reference image (multipart/form-data, one part named `file`).
///
/// PNG, JPEG and WebP are accepted, recognised by their content. The image is decoded in full
/// to check it, then **re-encoded in the same format** (PNG → PNG, JPEG → JPEG at quality 92,
/// WebP → lossless WebP) so no metadata (EXIF/GPS, text chunks, ICC profiles) is kept; the
/// EXIF orientation is applied to the pixels first. `bytes` is the size of the stored image.
#[utoipa::path(
    tag = "reference-images",
    operation_id = "uploadReferenceImage",
    request_body(content_type = "multipart/form-data", content = UploadForm),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Stored", body = ReferenceImageView,
            headers(("Location" = String, description = "The new reference image"))),
        (status = 400, description = "`malformed_multipart`: the body is not valid multipart", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the file is larger than the upload cap (`GI2_MAX_UPLOAD_BYTES`, 20 MiB by default)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the request is not multipart/form-data, or the file is not PNG, JPEG or WebP", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`image_too_large`: the header claims more than allowed, refused before decoding: more pixels than `GI2_MAX_IMAGE_PIXELS` (40 million by default), a side over 16,384, or more decoded bytes (width × height × bytes per pixel) than `GI2_MAX_IMAGE_DECODED_BYTES` (64 MiB by default); `validation_failed` on `file`: missing, empty, truncated or corrupt", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/reference-images")]
pub async fn upload_reference_image(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    payload: Multipart,
) -> Result<HttpResponse, ApiError> {
    if !is_multipart(&req) {
        return Err(ApiError::UnsupportedMediaType(
            "Send the image as multipart/form-data with a part named `file`.".into(),
        ));
    }
    let upload = &state.config.upload;
    let data = read_file_part(payload, upload.max_bytes).await?;
    let image = refs::clean_blocking(data, upload.decode_limits()).await?;

    let id = Uuid::now_v7();
    let key = refs::object_key(auth.user_id, id, image.format);
    let content_type = image.format.content_type();
    let (width, height) = (image.width, image.height);
    let stored = state
        .store
        .put(&key, content_type, bytes_stream(image.bytes))
        .await
        .map_err(|e| {
            ApiError::Internal(anyhow::Error::new(e).context("storing a reference image"))
        })?;

    let row = ReferenceImage {
        id,
        user_id: auth.user_id,
        object_key: key.clone(),
        content_type: content_type.into(),
        width: i32::try_from(width).map_err(|e| ApiError::Internal(e.into()))?,
        height: i32::try_from(height).map_err(|e| ApiError::Internal(e.into()))?,
        bytes: i64::try_from(stored).map_err(|e| ApiError::Internal(e.into()))?,
        created_at: Utc::now(),
    };
    let inserted = async {
        let mut conn = state.pool.get().await?;
        diesel::insert_into(reference_images::table)
            .values(&row)
            .returning(ReferenceImage::as_returning())
            .get_result(&mut conn)
            .await
            .map_err(ApiError::from)
    }
    .await;
    let row = match inserted {
        Ok(row) => row,
        Err(err) => {
            // No row points at the object: remove it rather than leave an orphan.
            if let Err(e) = state.store.delete(&key).await {
                tracing::warn!(key, error = %e, "orphaned reference image not deleted");
            }
            return Err(err);
        }
    };
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/reference-images/{id}")))
        .json(ReferenceImageView::from(row)))
}

/// A reference image of yours, with a short-lived signed download link.
#[utoipa::path(
    tag = "reference-images",
    operation_id = "getReferenceImage",
    params(("id" = Uuid, Path, description = "Reference image id")),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The reference image", body = ReferenceImageDetail),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such reference image of yours", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/reference-images/{id}")]
pub async fn get_reference_image(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<Uuid>,
) -> Result<web::Json<ReferenceImageDetail>, ApiError> {
    let mut conn = state.pool.get().await?;
    let row = refs::find(&mut conn, auth.user_id, id.into_inner()).await?;
    drop(conn);
    let ttl = state.config.signed_url_ttl;
    let url_expires_at = Utc::now() + ttl;
    let url: Url = state
        .store
        .signed_get_url(&row.object_key, ttl)
        .await
        .map_err(|e| {
            ApiError::Internal(anyhow::Error::new(e).context("signing a download link"))
        })?;
    Ok(web::Json(ReferenceImageDetail {
        image: row.into(),
        url: url.into(),
        url_expires_at,
    }))
}

/// Your reference images, newest first.
#[utoipa::path(
    tag = "reference-images",
    operation_id = "listReferenceImages",
    params(PageQuery),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of reference images", body = ReferenceImagePage),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: bad `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/reference-images")]
pub async fn list_reference_images(
    state: web::Data<AppState>,
    auth: Auth,
    query: web::Query<PageQuery>,
) -> Result<web::Json<ReferenceImagePage>, ApiError> {
    let limit = query.limit()?;
    let mut q = reference_images::table
        .filter(reference_images::user_id.eq(auth.user_id))
        .into_boxed();
    if let Some(after) = query.after()? {
        q = q.filter(reference_images::id.lt(after));
    }
    let mut conn = state.pool.get().await?;
    let rows: Vec<ReferenceImage> = q
        .order(reference_images::id.desc())
        .limit(limit + 1)
        .select(ReferenceImage::as_select())
        .load(&mut conn)
        .await?;
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |r| r.id,
        ReferenceImageView::from,
    )))
}

/// Delete a reference image: the stored image first, then its record.
#[utoipa::path(
    tag = "reference-images",
    operation_id = "deleteReferenceImage",
    params(("id" = Uuid, Path, description = "Reference image id")),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such reference image of yours", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/reference-images/{id}")]
pub async fn delete_reference_image(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    let row = refs::find(&mut conn, auth.user_id, id.into_inner()).await?;
    // Object first: if that fails the row stays, so the delete can be retried; the other
    // order could leave an object nothing points at.
    state.store.delete(&row.object_key).await.map_err(|e| {
        ApiError::Internal(anyhow::Error::new(e).context("deleting a reference image"))
    })?;
    diesel::delete(
        reference_images::table
            .find(row.id)
            .filter(reference_images::user_id.eq(auth.user_id)),
    )
    .execute(&mut conn)
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
