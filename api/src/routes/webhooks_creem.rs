//! `POST /v1/webhooks/creem`: Creem's events, signature-checked over the raw body and each
//! applied exactly once (the event record and its effect commit in one transaction).
//!
//! Creem signs without a timestamp, so the recorded event id is the replay protection. An
//! event this server cannot use (unknown type, user or product) is recorded and
//! acknowledged with a warning: refusing it would only make Creem retry it. A signed event
//! that can never be applied (a permanent condition: it lacks what we need) is recorded as
//! needing attention, with the reason, and acknowledged too; only transient failures (the
//! database) answer an error, so Creem retries them.

use actix_web::{HttpRequest, ResponseError, post, web};
use diesel_async::AsyncConnection;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    billing::{
        self,
        creem::{self, Event, PROVIDER},
    },
    error::{ApiError, Problem},
    state::AppState,
};

const SIGNATURE_HEADER: &str = "creem-signature";

#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "received": true }))]
pub struct WebhookAck {
    /// Always true: the event was applied now or earlier, or deliberately ignored.
    pub received: bool,
}

/// Receive a Creem event (for Creem only: signed with the webhook secret).
#[utoipa::path(
    tag = "webhooks",
    operation_id = "receiveCreemEvent",
    request_body(
        content = Object,
        content_type = "application/json",
        description = "The event exactly as Creem sent it: the signature covers these raw bytes."
    ),
    params(
        ("creem-signature" = String, Header, description = "Hex HMAC-SHA256 of the raw body with the webhook secret, as Creem sends it."),
    ),
    responses(
        (status = 200, description = "Applied now, applied earlier (a replay), or ignored", body = WebhookAck),
        (status = 400, description = "`invalid_signature`: missing or wrong signature; `invalid_payload`: not a Creem event (a signed event lacking what this API needs is acknowledged and kept for review)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`billing_not_configured`, or `database_unavailable` (Creem retries)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/webhooks/creem")]
pub async fn receive_creem_event(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<web::Json<WebhookAck>, ApiError> {
    let config = state
        .config
        .billing
        .creem
        .as_ref()
        .ok_or_else(|| billing::not_configured("Creem"))?;
    let signature = request
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let signed = signature
        .is_some_and(|s| creem::verify_signature(config.webhook_secret.expose(), &body, s));
    if !signed {
        tracing::warn!(
            present = signature.is_some(),
            "Creem webhook refused: bad signature"
        );
        return Err(ApiError::bad_request(
            "invalid_signature",
            "The creem-signature header is missing or does not match this body.",
        ));
    }
    // A body that is not an event at all (no id to acknowledge it once) is refused.
    let event = Event::parse(&body)?;
    let mut conn = state.pool.get().await?;
    let applied = conn
        .transaction::<_, ApiError, _>(async |conn| {
            if billing::first_delivery(conn, PROVIDER, &event.id, &event.event_type).await? {
                creem::apply_event(conn, &state.config.billing, &event).await?;
            } else {
                tracing::debug!(event = %event.id, "Creem event replayed; already applied");
            }
            Ok(())
        })
        .await;
    match applied {
        // A 4xx is permanent: the same event can never apply, so retrying is pointless.
        Err(err) if err.status_code().is_client_error() => {
            billing::record_unapplied(
                &mut conn,
                PROVIDER,
                &event.id,
                &event.event_type,
                &err.to_string(),
            )
            .await?;
        }
        other => other?,
    }
    Ok(web::Json(WebhookAck { received: true }))
}
