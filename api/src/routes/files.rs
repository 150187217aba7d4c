//! STUB: the storage helper implements the local store's signed downloads here.

use actix_web::{HttpResponse, get, web};

use crate::{error::ApiError, state::AppState};

/// Downloads an object of the local store through a signed, expiring URL.
#[utoipa::path(tag = "storage", operation_id = "downloadFile", params(("key" = String, Path, description = "Object key")), responses((status = 200, description = "The object")))]
#[get("/files/{key:.*}")]
pub async fn download(
    _state: web::Data<AppState>,
    _key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
