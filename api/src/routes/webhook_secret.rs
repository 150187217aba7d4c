//! `/v1/me/webhook-secret`: the secret that signs your generation webhooks.

use actix_web::{HttpResponse, get, http::header, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    accounts::{ownership, users},
    auth::Auth,
    error::ApiError,
    error::Problem,
    generations::webhooks,
    state::AppState,
};

#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }))]
pub struct WebhookSecretView {
    /// `whsec_` + base64 of 24 random bytes. The key is the base64-decoded part after
    /// `whsec_`.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// The secret your generation webhooks are signed with.
///
/// Created on first use. Each delivery to a generation's `webhook_url` is a POST signed per
/// Standard Webhooks: `webhook-id` (the delivery id, the same on retries), `webhook-timestamp`
/// (unix seconds) and `webhook-signature` = `v1,` + base64(HMAC-SHA256(key,
/// "{webhook-id}.{webhook-timestamp}.{body}")). The body is `{type, timestamp, data}` with
/// `type` `generation.succeeded`, `generation.failed` or `generation.canceled` and `data`
/// `{id, status, cost_credits, error, images: [{id, width, height, format, bytes}]}`; fetch
/// the generation for image links. Answer 2xx to acknowledge; 410 stops retries; anything
/// else (or no answer within 10 s) is retried with backoff, up to 8 attempts.
///
/// Needs a verified email address (403 `email_unverified` before). Proving the address later
/// (verification link, Google/GitHub sign-in, password reset) replaces the secret.
#[utoipa::path(
    tag = "account",
    operation_id = "getWebhookSecret",
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The signing secret", body = WebhookSecretView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`email_unverified`: the account's email address is not verified yet", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/me/webhook-secret")]
pub async fn get_webhook_secret(
    state: web::Data<AppState>,
    auth: Auth,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    ownership::require_verified(&users::find(&mut conn, auth.user_id).await?)?;
    let secret = webhooks::secret_for(&mut conn, auth.user_id).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(WebhookSecretView {
            secret: secret.expose().to_string(),
        }))
}
