//! Signed downloads of the local object store. (The S3 backend hands out presigned S3 URLs
//! instead, so there this route answers 404.)

use actix_web::{HttpResponse, get, http::header, web};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::{
    config::StorageConfig,
    error::ApiError,
    state::AppState,
    storage::{StorageError, signing},
};

/// The signature part of a download link, as issued by the store.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// Unix time (seconds) after which the link stops working.
    #[param(required = true)]
    pub expires: Option<i64>,
    /// Hex HMAC-SHA256 of the key and `expires`.
    #[param(required = true)]
    pub signature: Option<String>,
}

/// The object's bytes, as stored.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct FileBytes(pub Vec<u8>);

/// Downloads an object of the local store through a signed, expiring URL.
#[utoipa::path(
    tag = "storage",
    operation_id = "downloadFile",
    params(
        ("key" = String, Path, description = "Object key, e.g. `users/0193…/images/1.png`"),
        DownloadQuery,
    ),
    responses(
        (status = 200, description = "The object, with its stored content type", body = inline(FileBytes), content_type = "application/octet-stream"),
        (status = 403, description = "The signature is missing, invalid or expired", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such object, or the store is not local", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`expires` is not an integer", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[get("/files/{key:.*}")]
pub async fn download(
    state: web::Data<AppState>,
    key: web::Path<String>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    if !matches!(state.config.storage, StorageConfig::Local { .. }) {
        return Err(ApiError::NotFound);
    }
    let key = key.into_inner();
    let now = chrono::Utc::now().timestamp();
    let (Some(expires), Some(signature)) = (query.expires, query.signature.as_deref()) else {
        return Err(ApiError::Forbidden(
            "This download link is incomplete: it needs `expires` and `signature`.".into(),
        ));
    };
    if !signing::verify(
        &state.config.url_signing_key,
        signing::Purpose::DownloadUrl,
        &key,
        expires,
        signature,
        now,
    ) {
        return Err(ApiError::Forbidden(if now > expires {
            "This download link has expired; request a new one.".into()
        } else {
            "This download link is invalid.".into()
        }));
    }
    let object = match state.store.get(&key).await {
        Ok(object) => object,
        Err(StorageError::NotFound | StorageError::InvalidKey(_)) => {
            return Err(ApiError::NotFound);
        }
        Err(StorageError::Other(e)) => return Err(ApiError::Internal(e.context("download"))),
    };
    let content_type = object
        .meta
        .content_type
        .unwrap_or_else(|| "application/octet-stream".into());
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        // The link itself expires, so caches must not keep the bytes longer.
        .insert_header((
            header::CACHE_CONTROL,
            format!("private, max-age={}", (expires - now).max(0)),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .no_chunking(object.meta.content_length)
        .streaming(object.body))
}
