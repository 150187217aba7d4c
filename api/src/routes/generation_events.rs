//! `GET /v1/generations/{id}/events`: a generation followed as Server-Sent Events. Each event
//! is a [`GenerationEvent`]; the spec describes the stream with the same type.

use actix_web::{HttpResponse, get, http::header, web};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::generations::{GenerationView, load_one};
use crate::{
    auth::Auth,
    error::{ApiError, Problem},
    generations::values::GenerationStatus,
    state::AppState,
};

/// One event of the stream: `event` is the SSE `event:` name, `data` the JSON of its `data:`
/// line. A stream is `status` events, `partial_image` events while a streaming model draws,
/// then one of `completed`, `failed`, `canceled` or `deleted`, and it ends.
#[derive(Serialize, ToSchema)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
#[schema(example = json!({ "event": "status", "data": { "status": "running" } }))]
pub enum GenerationEvent {
    /// The status changed (also sent just before the final event).
    Status(GenerationStatusData),
    /// A partial image a streaming model sent.
    PartialImage(PartialImage),
    /// It succeeded: the generation, with links to its images.
    Completed(Box<GenerationView>),
    /// It failed: the generation, with its `error`.
    Failed(Box<GenerationView>),
    /// It was canceled: the generation.
    Canceled(Box<GenerationView>),
    /// It was deleted while followed.
    Deleted(GenerationDeletedData),
}

/// The data of a `status` event.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "status": "running" }))]
pub struct GenerationStatusData {
    #[schema(value_type = GenerationStatus)]
    pub status: String,
}

/// The data of a `partial_image` event.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "index": 0,
    "url": "https://files.gptimage2.dev/users/0193a1d2/generations/0193a1d2/partial-0.png?expires=1764400000&signature=51d0"
}))]
pub struct PartialImage {
    /// 0 for the first partial image, counting up.
    pub index: i32,
    /// A short-lived signed link to the partial image.
    pub url: String,
}

/// The data of a `deleted` event.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f" }))]
pub struct GenerationDeletedData {
    pub id: Uuid,
}

/// Follow a generation as Server-Sent Events: a `status` event on every change,
/// `partial_image` for each partial image a streaming model sends, then `completed` (the full
/// generation, with image links), `failed`, `canceled` or `deleted`, and the stream ends. A
/// comment line every 15 s keeps proxies from closing an idle stream.
#[utoipa::path(
    tag = "generations",
    operation_id = "streamGenerationEvents",
    params(("id" = Uuid, Path, description = "Generation id")),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The event stream; each event is `event: <event>` and `data: <data as JSON>`", body = GenerationEvent, content_type = "text/event-stream"),
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
                    let deleted = GenerationEvent::Deleted(GenerationDeletedData { id: f.id });
                    return Some((Ok::<_, actix_web::Error>(frame(&deleted)), f));
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
                let frames: String = partials
                    .into_iter()
                    .map(|p| frame(&GenerationEvent::PartialImage(p)))
                    .collect();
                return Some((Ok(frames), f));
            }
            if f.last.as_deref() != Some(view.status.as_str()) {
                f.last = Some(view.status.clone());
                f.idle = std::time::Duration::ZERO;
                let status = GenerationStatus::parse(&view.status);
                let mut frames = frame(&GenerationEvent::Status(GenerationStatusData {
                    status: view.status.clone(),
                }));
                let last: Option<fn(Box<GenerationView>) -> GenerationEvent> = match status {
                    Some(GenerationStatus::Succeeded) => Some(GenerationEvent::Completed),
                    Some(GenerationStatus::Failed) => Some(GenerationEvent::Failed),
                    Some(GenerationStatus::Canceled) => Some(GenerationEvent::Canceled),
                    _ => None,
                };
                if let Some(last) = last {
                    f.done = true;
                    frames.push_str(&frame(&last(Box::new(view))));
                }
                return Some((Ok(frames), f));
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

/// One Server-Sent Event frame; the name and the data come from the event's serde form, the
/// same one its schema describes.
fn frame(event: &GenerationEvent) -> String {
    let value = serde_json::to_value(event).unwrap_or_default();
    let name = value["event"].as_str().unwrap_or("message");
    format!("event: {name}\ndata: {}\n\n", value["data"])
}
