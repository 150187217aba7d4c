//! `Idempotency-Key` on creating POSTs: the first answer to a key is stored and replayed for
//! 24 h (`GI2_RETENTION_IDEMPOTENCY_HOURS`), so a client can retry a request whose answer it lost
//! without paying twice.
//!
//! One middleware covers every `POST /v1/…` that sends the header, except `/v1/auth/…` and
//! `/v1/webhooks/…` (sign-in and provider deliveries create nothing for a signed-in principal;
//! webhooks have their own event-id deduplication). Keys are scoped by a SHA-256 of the caller
//! (the verified user id of a session token, else the `Authorization` value) plus method and
//! path, and a request is fingerprinted by the SHA-256 of method, path+query and body; only
//! those hashes are stored.
//!
//! Answers below 500 (successes and 4xx alike) are stored and replayed; a 5xx, a 401, a handler
//! error or a dropped request frees the key so the client can retry. A 401 says nothing about
//! the request, only that its credentials did not authenticate anyone: stored, it would make
//! a later unauthenticated call with the key a 422 `idempotency_key_reused` (or a replay)
//! instead of its own 401, and let anonymous callers fill the table.

use actix_web::{
    Error, HttpMessage, HttpResponse, ResponseError,
    body::{BodySize, BoxBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    error::PayloadError,
    http::{
        Method, StatusCode,
        header::{self, HeaderName, HeaderValue},
    },
    middleware::Next,
    web,
};
use bytes::{Bytes, BytesMut};
use diesel::{
    QueryableByName,
    sql_types::{Bytea, Int4, Jsonb, Nullable, Text},
};
use diesel_async::RunQueryDsl;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::{db::DbPool, error::ApiError, state::AppState};

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Set to `true` on an answer replayed from storage.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub const MAX_KEY_LEN: usize = 255;
/// Bodies are buffered up to at least this; the real bound follows the configured limits.
const MIN_BODY_CAP: usize = 25 * 1024 * 1024;
/// Slack over the upload limit for multipart framing.
const MULTIPART_SLACK: usize = 1024 * 1024;
/// Larger (or streamed) answers are not stored; the key is freed instead.
const MAX_STORED_RESPONSE: usize = 1024 * 1024;
/// How often a request retries claiming a key that vanished between two statements.
const CLAIM_ATTEMPTS: usize = 3;

/// `true` for the requests this middleware guards: POSTs under `/v1/`, except auth and webhooks.
pub fn applies(method: &Method, path: &str) -> bool {
    if method != Method::POST {
        return false;
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return false;
    };
    // Creating an API key answers with its secret, which is stored nowhere but in the
    // client's hands: a replay would mean keeping it, so key creation is not replayable.
    !matches!(rest.split('/').next(), Some("auth" | "webhooks")) && rest != "me/api-keys"
}

/// 1–255 visible ASCII characters (no spaces).
fn valid_key(key: &[u8]) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len()) && key.iter().all(|b| (0x21..=0x7e).contains(b))
}

fn invalid_key() -> ApiError {
    ApiError::bad_request(
        "invalid_idempotency_key",
        "`Idempotency-Key` must be one header of 1 to 255 visible ASCII characters.",
    )
}

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if !applies(req.method(), req.path()) || !req.headers().contains_key(HEADER) {
        return pass(req, next).await;
    }
    let mut keys = req.headers().get_all(HEADER);
    let key = match (keys.next(), keys.next()) {
        (Some(value), None) if valid_key(value.as_bytes()) => {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        }
        _ => return Ok(req.error_response(invalid_key())),
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return pass(req, next).await;
    };
    let cap = body_cap(&state);
    // Above the cap the body exceeds every route's limit, so the handler refuses it (413)
    // without creating anything: no need to buffer it here.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > cap) {
        return pass(req, next).await;
    }
    let body = match buffer_body(&mut req, cap).await? {
        Some(body) => body,
        None => return pass(req, next).await,
    };
    req.set_payload(Payload::from(body.clone()));

    let scope = scope_hash(&req, &state);
    let fingerprint = request_hash(&req, &body);
    let mut claim = Claim {
        pool: state.pool.clone(),
        scope,
        key,
        request_hash: fingerprint,
        kept_secs: state.config.retention.idempotency.as_secs() as i64,
        settled: true,
    };
    match claim.acquire().await {
        Ok(Acquired::Owner) => claim.settled = false,
        Ok(Acquired::Replay(row)) => return Ok(replay(req, row)),
        Ok(Acquired::Reused) => return Ok(reused(req)),
        Ok(Acquired::InUse) => return Ok(in_use(req)),
        Err(err) => return Ok(req.error_response(err)),
    }

    let res = match next.call(req).await {
        Ok(res) => res.map_into_boxed_body(),
        Err(err) => {
            claim.release().await;
            return Err(err);
        }
    };
    let status = res.status();
    let storable = match res.response().body().size() {
        BodySize::None => true,
        BodySize::Sized(n) => n <= MAX_STORED_RESPONSE as u64,
        BodySize::Stream => false,
    };
    if status.is_server_error() || status == StatusCode::UNAUTHORIZED || !storable {
        if !storable {
            tracing::warn!(
                status = status.as_u16(),
                "response too large to store for an idempotency key; key freed"
            );
        }
        claim.release().await;
        return Ok(res);
    }
    let (http_req, response) = res.into_parts();
    let (head, body) = response.into_parts();
    let bytes = match actix_web::body::to_bytes_limited(body, MAX_STORED_RESPONSE).await {
        Ok(Ok(bytes)) => bytes,
        _ => {
            claim.release().await;
            let err = ApiError::Internal(anyhow::anyhow!("reading a response to store it failed"));
            return Ok(ServiceResponse::new(http_req, err.error_response()));
        }
    };
    let headers = stored_headers(head.headers());
    claim.complete(status, headers, &bytes).await;
    Ok(ServiceResponse::new(
        http_req,
        head.set_body(bytes).map_into_boxed_body(),
    ))
}

async fn pass(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    Ok(next.call(req).await?.map_into_boxed_body())
}

fn body_cap(state: &AppState) -> usize {
    let config = &state.config;
    MIN_BODY_CAP.max(config.upload.max_bytes.max(config.max_json_bytes) + MULTIPART_SLACK)
}

/// Reads the whole body, up to `cap`. Past it, puts back what was read followed by the rest
/// of the stream and returns `None`: the request then goes on without idempotency.
async fn buffer_body(req: &mut ServiceRequest, cap: usize) -> Result<Option<Bytes>, Error> {
    let mut payload = req.take_payload();
    let mut buffered = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        buffered.extend_from_slice(&chunk);
        if buffered.len() > cap {
            let head = futures::stream::once(async move { Ok(buffered.freeze()) });
            let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
                Box::pin(head.chain(payload));
            req.set_payload(Payload::from(stream));
            return Ok(None);
        }
    }
    Ok(Some(buffered.freeze()))
}

/// Length-prefixed fields, so no two different inputs hash alike.
fn digest(parts: &[&[u8]]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().to_vec()
}

/// Who and where: the same key means something else for another caller or route. A session
/// is scoped by its verified user id, so a retry still matches after an access-token refresh;
/// anything else (API keys, invalid tokens) by the `Authorization` value itself.
fn scope_hash(req: &ServiceRequest, state: &AppState) -> Vec<u8> {
    let authorization = req.headers().get(header::AUTHORIZATION);
    let user = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, token)| state.jwt.verify(token.trim()))
        .map(|claims| claims.sub);
    let (tag, principal): (&[u8], Vec<u8>) = match (user, authorization) {
        (Some(user), _) => (b"user", user.as_bytes().to_vec()),
        (None, Some(value)) => (b"authorization", value.as_bytes().to_vec()),
        // Unauthenticated calls share one scope; every guarded route but the unsubscribe link
        // refuses them, and a refusal (401) is never stored.
        (None, None) => (b"anonymous", Vec::new()),
    };
    digest(&[
        tag,
        &principal,
        req.method().as_str().as_bytes(),
        req.path().as_bytes(),
    ])
}

fn request_hash(req: &ServiceRequest, body: &[u8]) -> Vec<u8> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.path(), |pq| pq.as_str());
    digest(&[req.method().as_str().as_bytes(), target.as_bytes(), body])
}

/// Only what a client needs to read the replayed answer.
fn stored_headers(headers: &header::HeaderMap) -> serde_json::Value {
    let mut stored = serde_json::Map::new();
    for name in [header::CONTENT_TYPE, header::LOCATION] {
        if let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) {
            stored.insert(name.as_str().to_owned(), value.into());
        }
    }
    serde_json::Value::Object(stored)
}

#[derive(QueryableByName)]
struct StoredRow {
    #[diesel(sql_type = Bytea)]
    request_hash: Vec<u8>,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Int4>)]
    response_status: Option<i32>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    response_headers: Option<serde_json::Value>,
    #[diesel(sql_type = Nullable<Bytea>)]
    response_body: Option<Vec<u8>>,
}

enum Acquired {
    /// This request holds the key: run the handler.
    Owner,
    Replay(StoredRow),
    Reused,
    InUse,
}

/// A key held while its first request runs. Unless completed, it is freed on release or
/// drop (a client that hangs up must not block its own retry for 24 h).
struct Claim {
    pool: DbPool,
    scope: Vec<u8>,
    key: String,
    request_hash: Vec<u8>,
    /// How long an answer is replayed (`GI2_RETENTION_IDEMPOTENCY_HOURS`).
    kept_secs: i64,
    settled: bool,
}

impl Claim {
    async fn acquire(&self) -> Result<Acquired, ApiError> {
        let mut conn = self.pool.get().await?;
        for _ in 0..CLAIM_ATTEMPTS {
            // Inserts a new claim, or takes over a record past retention, or one left running
            // for 10 minutes by a process that died (no request lasts that long).
            let claimed = diesel::sql_query(
                "INSERT INTO idempotency_keys (scope_hash, key, request_hash, status)
                 VALUES ($1, $2, $3, 'in_progress')
                 ON CONFLICT (scope_hash, key) DO UPDATE SET
                     request_hash = EXCLUDED.request_hash, status = 'in_progress',
                     response_status = NULL, response_headers = NULL, response_body = NULL,
                     created_at = now(), completed_at = NULL
                 WHERE idempotency_keys.created_at < now() - make_interval(secs => $4)
                    OR (idempotency_keys.status = 'in_progress'
                        AND idempotency_keys.created_at < now() - interval '10 minutes')",
            )
            .bind::<Bytea, _>(&self.scope)
            .bind::<Text, _>(&self.key)
            .bind::<Bytea, _>(&self.request_hash)
            .bind::<diesel::sql_types::Double, _>(self.kept_secs as f64)
            .execute(&mut conn)
            .await?;
            if claimed == 1 {
                return Ok(Acquired::Owner);
            }
            let row: Option<StoredRow> = diesel::sql_query(
                "SELECT request_hash, status, response_status, response_headers, response_body
                 FROM idempotency_keys WHERE scope_hash = $1 AND key = $2",
            )
            .bind::<Bytea, _>(&self.scope)
            .bind::<Text, _>(&self.key)
            .get_result(&mut conn)
            .await
            .map(Some)
            .or_else(|e| match e {
                diesel::result::Error::NotFound => Ok(None),
                other => Err(other),
            })?;
            // Gone in between (its first request failed): try to claim it again.
            let Some(row) = row else { continue };
            return Ok(if row.request_hash != self.request_hash {
                Acquired::Reused
            } else if row.status == "completed" {
                Acquired::Replay(row)
            } else {
                Acquired::InUse
            });
        }
        Ok(Acquired::InUse)
    }

    async fn complete(&mut self, status: StatusCode, headers: serde_json::Value, body: &[u8]) {
        self.settled = true;
        let stored = async {
            let mut conn = self.pool.get().await.map_err(anyhow::Error::new)?;
            diesel::sql_query(
                "UPDATE idempotency_keys SET status = 'completed', response_status = $4,
                     response_headers = $5, response_body = $6, completed_at = now()
                 WHERE scope_hash = $1 AND key = $2 AND request_hash = $3
                   AND status = 'in_progress'",
            )
            .bind::<Bytea, _>(&self.scope)
            .bind::<Text, _>(&self.key)
            .bind::<Bytea, _>(&self.request_hash)
            .bind::<Int4, _>(i32::from(status.as_u16()))
            .bind::<Jsonb, _>(headers)
            .bind::<Bytea, _>(body)
            .execute(&mut conn)
            .await
            .map_err(anyhow::Error::new)
        }
        .await;
        if let Err(e) = stored {
            // The answer still goes out; the key is freed so a retry is not stuck on 409.
            tracing::warn!(error = %e, "storing an idempotent response failed");
            release(
                self.pool.clone(),
                self.scope.clone(),
                self.key.clone(),
                self.request_hash.clone(),
            )
            .await;
        }
    }

    async fn release(&mut self) {
        self.settled = true;
        release(
            self.pool.clone(),
            self.scope.clone(),
            self.key.clone(),
            self.request_hash.clone(),
        )
        .await;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped mid-request (client gone): free the key in the background.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(release(
                self.pool.clone(),
                self.scope.clone(),
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.request_hash),
            ));
        }
    }
}

/// Deletes an unfinished claim; only this request's own (same fingerprint, still running).
async fn release(pool: DbPool, scope: Vec<u8>, key: String, request_hash: Vec<u8>) {
    let deleted = async {
        let mut conn = pool.get().await.map_err(anyhow::Error::new)?;
        diesel::sql_query(
            "DELETE FROM idempotency_keys
             WHERE scope_hash = $1 AND key = $2 AND request_hash = $3 AND status = 'in_progress'",
        )
        .bind::<Bytea, _>(scope)
        .bind::<Text, _>(key)
        .bind::<Bytea, _>(request_hash)
        .execute(&mut conn)
        .await
        .map_err(anyhow::Error::new)
    }
    .await;
    if let Err(e) = deleted {
        tracing::warn!(error = %e, "freeing an idempotency key failed");
    }
}

fn replay(req: ServiceRequest, row: StoredRow) -> ServiceResponse<BoxBody> {
    let status = row
        .response_status
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok());
    let Some(status) = status else {
        let err = ApiError::Internal(anyhow::anyhow!("stored idempotent response has no status"));
        return req.error_response(err);
    };
    let mut response = HttpResponse::build(status);
    if let Some(serde_json::Value::Object(headers)) = row.response_headers {
        for (name, value) in headers {
            let name = HeaderName::try_from(name.as_str());
            let value = value.as_str().and_then(|v| HeaderValue::from_str(v).ok());
            if let (Ok(name), Some(value)) = (name, value) {
                response.insert_header((name, value));
            }
        }
    }
    response.insert_header((REPLAYED, HeaderValue::from_static("true")));
    req.into_response(response.body(row.response_body.unwrap_or_default()))
}

fn reused(req: ServiceRequest) -> ServiceResponse<BoxBody> {
    req.error_response(ApiError::Unprocessable {
        code: "idempotency_key_reused",
        detail: "This Idempotency-Key was already used with a different request; use a new key."
            .into(),
    })
}

fn in_use(req: ServiceRequest) -> ServiceResponse<BoxBody> {
    let mut res = req.error_response(ApiError::conflict(
        "idempotency_key_in_use",
        "A request with this Idempotency-Key is still running; retry shortly.",
    ));
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_creating_posts_under_v1_are_guarded() {
        assert!(applies(&Method::POST, "/v1/generations"));
        assert!(applies(&Method::POST, "/v1/reference-images"));
        assert!(!applies(&Method::GET, "/v1/generations"));
        assert!(!applies(&Method::POST, "/v1/auth/login"));
        assert!(!applies(&Method::POST, "/v1/webhooks/stripe"));
        assert!(
            !applies(&Method::POST, "/v1/me/api-keys"),
            "its answer carries a secret"
        );
        assert!(!applies(&Method::POST, "/healthz"));
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert!(valid_key(b"abc-123_:."));
        assert!(valid_key(&[b'a'; 255]));
        assert!(!valid_key(b""));
        assert!(!valid_key(&[b'a'; 256]));
        assert!(!valid_key(b"has space"));
        assert!(!valid_key("é".as_bytes()));
    }

    #[test]
    fn fields_cannot_shift_between_parts() {
        assert_ne!(
            digest(&[&b"ab"[..], &b"c"[..]]),
            digest(&[&b"a"[..], &b"bc"[..]])
        );
    }
}
