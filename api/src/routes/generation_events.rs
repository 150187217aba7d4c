//! `GET /v1/generations/{id}/events`: a generation followed as Server-Sent Events. Each event
//! is a [`GenerationEvent`]; the spec describes the stream with the same type.

use std::time::Duration;

use actix_web::{HttpResponse, get, http::header, web};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::generations::{GenerationView, load_one};
use crate::{
    auth::{LiveAuth, Standing},
    db::schema::generations,
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

/// How often a quiet stream checks that its credential still holds (it also checks before
/// everything it sends).
const RECHECK_EVERY: Duration = Duration::from_secs(2);
/// How often the generation is looked at.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// A comment line after this much silence keeps proxies from closing the stream.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);

/// Follow a generation as Server-Sent Events: a `status` event on every change,
/// `partial_image` for each partial image a streaming model sends, then `completed` (the full
/// generation, with image links), `failed`, `canceled` or `deleted`, and the stream ends. A
/// comment line every 15 s keeps proxies from closing an idle stream.
///
/// The stream lives no longer than its credential: it is checked again before each event
/// and every 2 s, and once the session is signed out or revoked, the access token expired,
/// or the API key revoked, the stream ends without another event (a client reconnecting
/// with a fresh token picks up from the current status).
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
    live: LiveAuth,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    // Ownership is checked before the stream starts, so a stranger gets a plain 404.
    let mut conn = state.pool.get().await?;
    status_of(&mut conn, live.auth.user_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    drop(conn);
    let start = Follow {
        state,
        live,
        id,
        last: None,
        next_partial: 0,
        done: false,
        idle: Duration::ZERO,
        unchecked: Duration::ZERO,
    };
    let stream = futures::stream::unfold(start, |mut f| async move {
        if f.done {
            return None;
        }
        let frames = f.next_frames().await?;
        // Nothing leaves unless the credential still holds at this moment.
        if !f.credential_holds().await {
            return None;
        }
        f.unchecked = Duration::ZERO;
        Some((Ok::<_, actix_web::Error>(frames), f))
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures::StreamExt::map(stream, |r| {
            r.map(actix_web::web::Bytes::from)
        })))
}

/// A stream in progress.
struct Follow {
    state: web::Data<AppState>,
    live: LiveAuth,
    id: Uuid,
    /// The status last sent.
    last: Option<String>,
    /// The next partial image index to send.
    next_partial: i32,
    done: bool,
    /// Since anything was sent.
    idle: Duration,
    /// Since the credential was last checked.
    unchecked: Duration,
}

impl Follow {
    /// Whether the credential that opened the stream still authenticates its user; a
    /// check that cannot be made (database unavailable) is retried, sending nothing.
    async fn credential_holds(&self) -> bool {
        loop {
            match self.live.standing(&self.state).await {
                Standing::Valid => return true,
                Standing::Revoked => return false,
                Standing::Unknown => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// The next frames to send, once there are any; `None` ends the stream (its credential
    /// was found revoked while it was quiet).
    async fn next_frames(&mut self) -> Option<String> {
        loop {
            let user_id = self.live.auth.user_id;
            let status = match self.state.pool.get().await {
                Ok(mut conn) => status_of(&mut conn, user_id, self.id).await,
                Err(e) => Err(e.into()),
            };
            let status = match status {
                Ok(Some(status)) => status,
                Ok(None) => {
                    self.done = true;
                    return Some(frame(&GenerationEvent::Deleted(GenerationDeletedData {
                        id: self.id,
                    })));
                }
                // A passing database error: try again on the next tick.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // Partial images first, so a stream opened late still shows them before the end.
            let partials = match self.state.pool.get().await {
                Ok(mut conn) => new_partials(&mut conn, &self.state, self.id, self.next_partial)
                    .await
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            if !partials.is_empty() {
                self.next_partial = partials
                    .iter()
                    .map(|p| p.index + 1)
                    .max()
                    .unwrap_or(self.next_partial);
                self.idle = Duration::ZERO;
                return Some(
                    partials
                        .into_iter()
                        .map(|p| frame(&GenerationEvent::PartialImage(p)))
                        .collect(),
                );
            }
            if self.last.as_deref() != Some(status.as_str()) {
                let last: Option<fn(Box<GenerationView>) -> GenerationEvent> =
                    match GenerationStatus::parse(&status) {
                        Some(GenerationStatus::Succeeded) => Some(GenerationEvent::Completed),
                        Some(GenerationStatus::Failed) => Some(GenerationEvent::Failed),
                        Some(GenerationStatus::Canceled) => Some(GenerationEvent::Canceled),
                        _ => None,
                    };
                // Only the final event carries the whole generation (and its signed links).
                let view = match last {
                    Some(_) => match self.state.pool.get().await {
                        Ok(mut conn) => {
                            match load_one(&mut conn, &self.state, user_id, self.id).await {
                                Ok(view) => Some(view),
                                Err(ApiError::NotFound) => continue,
                                Err(_) => {
                                    tokio::time::sleep(Duration::from_millis(500)).await;
                                    continue;
                                }
                            }
                        }
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    },
                    None => None,
                };
                self.idle = Duration::ZERO;
                let mut frames = frame(&GenerationEvent::Status(GenerationStatusData {
                    status: status.clone(),
                }));
                self.last = Some(status);
                if let (Some(last), Some(view)) = (last, view) {
                    self.done = true;
                    frames.push_str(&frame(&last(Box::new(view))));
                }
                return Some(frames);
            }
            tokio::time::sleep(POLL_EVERY).await;
            self.idle += POLL_EVERY;
            self.unchecked += POLL_EVERY;
            if self.idle >= KEEP_ALIVE_EVERY {
                self.idle = Duration::ZERO;
                return Some(": keep-alive\n\n".to_string());
            }
            if self.unchecked >= RECHECK_EVERY {
                if !self.credential_holds().await {
                    return None;
                }
                self.unchecked = Duration::ZERO;
            }
        }
    }
}

/// The status of the user's generation `id`: one indexed row, no links signed.
async fn status_of(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<String>, ApiError> {
    Ok(generations::table
        .filter(generations::id.eq(id))
        .filter(generations::user_id.eq(user_id))
        .select(generations::status)
        .first(conn)
        .await
        .optional()?)
}

/// The partial images from index `from` on, unless the generation was canceled or failed:
/// from that moment they are never served, even before its purge job deleted them (a stream
/// opened late on a succeeded generation still shows them before the end).
async fn new_partials(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    generation_id: Uuid,
    from: i32,
) -> Result<Vec<PartialImage>, ApiError> {
    use crate::db::schema::generation_partials;
    let rows: Vec<(i32, String)> = generation_partials::table
        .inner_join(generations::table)
        .filter(generation_partials::generation_id.eq(generation_id))
        .filter(generations::status.ne_all(["canceled", "failed"]))
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
