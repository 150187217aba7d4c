//! `Idempotency-Key` on creating POSTs: the first answer to a key is stored and replayed for
//! 24 h (`GI2_RETENTION_IDEMPOTENCY_HOURS`), so a client can retry a request whose answer it lost
//! without paying twice.
//!
//! What keeps it from becoming a way to keep credentials, or to make the server hold memory:
//!
//! - **Only listed routes, by the route matched.** [`GUARDED`] names the route patterns whose
//!   answers are kept; the pattern is found by the router's own resource map on the router's
//!   own percent-decoded path, so `/v1/me/api%2Dkeys` is `/v1/me/api-keys` here exactly as it
//!   is for the router. Sign-in and API-key creation (their answers are credentials),
//!   provider webhooks (deduplicated by event id), the anonymous unsubscribe link and paths
//!   no route matches ignore the header; a unit test makes every new `POST /v1/…` choose.
//! - **Authenticated first, every time.** The caller is checked (the `Auth` extractor's
//!   check) before anything is read, and again before a stored answer is handed out: an
//!   anonymous or refused caller goes straight on to the route, which answers 401 with
//!   nothing buffered and nothing stored, and a replay needs a credential valid now. Keys
//!   are scoped by a SHA-256 of the principal (a session's user, so a retry still matches
//!   after a token refresh; an API key's id), method and path.
//! - **Bounded by the route's own limit.** The body is buffered up to the JSON limit, or the
//!   upload limit plus multipart framing on upload routes; past it the request goes on
//!   without idempotency and the route refuses it (413) anyway.
//! - **No credential is ever stored.** An answer that sets a cookie or says
//!   `Cache-Control: no-store` (every answer carrying a token or secret does) is not kept.
//! - **Owned.** Each stored answer names its user, so erasing the account erases them.
//!
//! A request is fingerprinted by the SHA-256 of method, path+query and body; only hashes
//! identify callers and requests. Answers below 500 (successes and 4xx alike) are stored and
//! replayed; a 5xx, a 401, a handler error or a dropped request frees the key so the client
//! can retry.

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
    sql_types::{Bytea, Int4, Jsonb, Nullable, Text, Uuid as SqlUuid},
};
use diesel_async::RunQueryDsl;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    auth::{Auth, Credential, extract::caller},
    db::DbPool,
    error::ApiError,
    state::AppState,
};

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Set to `true` on an answer replayed from storage.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub const MAX_KEY_LEN: usize = 255;
/// Slack over the upload limit for multipart framing.
const MULTIPART_SLACK: usize = 1024 * 1024;
/// Larger (or streamed) answers are not stored; the key is freed instead.
const MAX_STORED_RESPONSE: usize = 1024 * 1024;
/// How often a request retries claiming a key that vanished between two statements.
const CLAIM_ATTEMPTS: usize = 3;

/// What a guarded route reads, which bounds how much of a body is buffered for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    /// JSON, or nothing: at most `GI2_MAX_JSON_BYTES`.
    Json,
    /// A multipart upload: at most `GI2_MAX_UPLOAD_BYTES` plus framing.
    Upload,
}

/// The `POST` routes whose answers are stored and replayed, by route pattern.
/// Not the billing portal: its answer is a link that signs the bearer in to the provider's
/// portal, a credential, and opening another costs nothing.
const GUARDED: [(&str, Body); 7] = [
    ("/v1/generations", Body::Json),
    ("/v1/generations/{id}/cancel", Body::Json),
    ("/v1/reference-images", Body::Upload),
    ("/v1/me/exports", Body::Json),
    ("/v1/me/password", Body::Json),
    ("/v1/support/requests", Body::Json),
    ("/v1/billing/checkout", Body::Json),
];

/// `true` for the routes (by pattern, as in the OpenAPI document) whose answers are stored
/// and replayed: the document shows the header on exactly these.
pub fn applies(method: &Method, pattern: &str) -> bool {
    *method == Method::POST && body_of(pattern).is_some()
}

fn body_of(pattern: &str) -> Option<Body> {
    GUARDED
        .iter()
        .find(|(guarded, _)| *guarded == pattern)
        .map(|(_, body)| *body)
}

/// The guarded route `req` is routed to, if any: the router's resource map matched against
/// the router's percent-decoded path (never the raw one, which `%2D` or `%61` would disguise).
fn guarded(req: &ServiceRequest) -> Option<Body> {
    if req.method() != Method::POST {
        return None;
    }
    body_of(
        &req.resource_map()
            .match_pattern(req.match_info().as_str())?,
    )
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
    if !req.headers().contains_key(HEADER) {
        return pass(req, next).await;
    }
    let Some(body) = guarded(&req) else {
        return pass(req, next).await;
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return pass(req, next).await;
    };
    // Who calls, before anything is read: an anonymous or refused caller goes on to the
    // route, which answers its 401 with nothing buffered and nothing stored.
    let auth = match caller(req.request()).await {
        Ok(auth) => auth,
        Err(ApiError::Unauthorized { .. }) => return pass(req, next).await,
        Err(err) => return Ok(req.error_response(err)),
    };
    let mut keys = req.headers().get_all(HEADER);
    let key = match (keys.next(), keys.next()) {
        (Some(value), None) if valid_key(value.as_bytes()) => {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        }
        _ => return Ok(req.error_response(invalid_key())),
    };
    let cap = body_cap(&state, body);
    // Above the cap the body exceeds the route's limit, so the route refuses it (413)
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

    let mut claim = Claim {
        pool: state.pool.clone(),
        scope: scope_hash(&req, &auth),
        key,
        request_hash: request_hash(&req, &body),
        user_id: auth.user_id,
        kept_secs: state.config.retention.idempotency.as_secs() as i64,
        settled: true,
    };
    match claim.acquire().await {
        Ok(Acquired::Owner) => claim.settled = false,
        // Reading the body took time: the credential must still be good to get the answer.
        Ok(Acquired::Replay(row)) => {
            return Ok(match caller(req.request()).await {
                Ok(_) => replay(req, row),
                Err(err) => req.error_response(err),
            });
        }
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
    if status.is_server_error()
        || status == StatusCode::UNAUTHORIZED
        || carries_credential(res.headers())
        || !storable
    {
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

/// The most a route of this kind reads: more is refused by the route itself.
fn body_cap(state: &AppState, body: Body) -> usize {
    let config = &state.config;
    match body {
        Body::Json => config.max_json_bytes,
        Body::Upload => config.upload.max_bytes + MULTIPART_SLACK,
    }
}

/// An answer that hands out a credential: a cookie, or anything its route marked
/// `Cache-Control: no-store` (tokens, API keys, secrets). Kept nowhere, so never replayed.
fn carries_credential(headers: &header::HeaderMap) -> bool {
    headers.contains_key(header::SET_COOKIE)
        || headers
            .get_all(header::CACHE_CONTROL)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|directive| directive.trim().eq_ignore_ascii_case("no-store"))
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

/// Who and where: the same key means something else for another principal or path. A
/// session is scoped by its user, so a retry still matches after an access-token refresh; an
/// API key by its id. The path is the router's decoded one, so an encoding changes nothing.
fn scope_hash(req: &ServiceRequest, auth: &Auth) -> Vec<u8> {
    let (tag, principal): (&[u8], Uuid) = match auth.credential {
        Credential::Session(_) => (b"user", auth.user_id),
        Credential::ApiKey(key_id) => (b"api_key", key_id),
    };
    digest(&[
        tag,
        principal.as_bytes(),
        req.method().as_str().as_bytes(),
        req.match_info().as_str().as_bytes(),
    ])
}

/// Method, decoded path and query, body (the same fields, so the same hashes, as before the
/// path was decoded: a retry across an upgrade still matches).
fn request_hash(req: &ServiceRequest, body: &[u8]) -> Vec<u8> {
    let mut target = req.match_info().as_str().to_owned();
    if let Some(query) = req.uri().query() {
        target.push('?');
        target.push_str(query);
    }
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
    /// Whose answer it is: erasing the account erases it (`ON DELETE CASCADE`).
    user_id: Uuid,
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
                "INSERT INTO idempotency_keys (scope_hash, key, request_hash, status, user_id)
                 VALUES ($1, $2, $3, 'in_progress', $5)
                 ON CONFLICT (scope_hash, key) DO UPDATE SET
                     request_hash = EXCLUDED.request_hash, status = 'in_progress',
                     user_id = EXCLUDED.user_id,
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
            .bind::<SqlUuid, _>(self.user_id)
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

    /// The `POST /v1/…` routes left out of [`GUARDED`], and why.
    const NOT_GUARDED: [(&str, &str); 12] = [
        ("/v1/auth/register", "answers with tokens"),
        ("/v1/auth/login", "answers with tokens"),
        ("/v1/auth/refresh", "answers with tokens"),
        (
            "/v1/auth/logout",
            "idempotent by nature, anonymous with a cookie",
        ),
        (
            "/v1/auth/verify-email",
            "single-use token, may answer with tokens",
        ),
        ("/v1/auth/verify-email/resend", "anonymous"),
        ("/v1/auth/password/forgot", "anonymous"),
        ("/v1/auth/password/reset", "single-use token, ends sessions"),
        ("/v1/me/api-keys", "answers with the key's only copy"),
        (
            "/v1/billing/portal",
            "answers with a sign-in link to the portal",
        ),
        ("/v1/mail/unsubscribe", "anonymous, idempotent by nature"),
        (
            "/v1/webhooks/",
            "provider deliveries, deduplicated by event id",
        ),
    ];

    #[test]
    fn every_post_route_chooses_whether_it_is_guarded() {
        let spec = serde_json::to_value(crate::openapi::build()).unwrap();
        let paths = spec["paths"].as_object().unwrap();
        for (path, item) in paths {
            if item.get("post").is_none() || !path.starts_with("/v1/") {
                continue;
            }
            let is_guarded = applies(&Method::POST, path);
            let left_out = NOT_GUARDED
                .iter()
                .any(|(p, _)| p == path || (p.ends_with('/') && path.starts_with(p)));
            assert!(
                is_guarded != left_out,
                "POST {path}: list it in GUARDED or NOT_GUARDED (exactly one)"
            );
            let multipart = item["post"]["requestBody"]["content"]
                .get("multipart/form-data")
                .is_some();
            if let Some((_, body)) = GUARDED.iter().find(|(p, _)| p == path) {
                assert_eq!(
                    *body == Body::Upload,
                    multipart,
                    "POST {path}: its body kind"
                );
            }
        }
        for (path, _) in GUARDED {
            assert!(paths[path].get("post").is_some(), "{path} is a POST route");
        }
    }

    /// The guarded route found for requests as the router sees them.
    #[actix_web::test]
    async fn routes_are_recognised_however_the_path_is_encoded() {
        use actix_web::{App, middleware::from_fn, test};
        use utoipa_actix_web::AppExt;

        let probe = |req: ServiceRequest, _: Next<BoxBody>| async move {
            let found = format!("{:?}", guarded(&req));
            Ok::<_, Error>(req.into_response(HttpResponse::Ok().body(found)))
        };
        let app = test::init_service(
            App::new()
                .into_utoipa_app()
                .configure(crate::routes::configure)
                .into_app()
                .wrap(from_fn(probe)),
        )
        .await;
        for (method, uri, expected) in [
            (Method::POST, "/v1/generations", "Some(Json)"),
            (Method::POST, "/v1/%67enerations", "Some(Json)"),
            (Method::POST, "/v1/generations/abc/cancel", "Some(Json)"),
            (Method::POST, "/v1/reference-images", "Some(Upload)"),
            (Method::POST, "/v1/reference%2Dimages", "Some(Upload)"),
            (Method::GET, "/v1/generations", "None"),
            (Method::POST, "/v1/me/api-keys", "None"),
            (Method::POST, "/v1/me/api%2Dkeys", "None"),
            (Method::POST, "/v1/me/api%2dkeys", "None"),
            (Method::POST, "/v1/%61uth/login", "None"),
            (Method::POST, "/v1/webhooks/stripe", "None"),
            (Method::POST, "/v1/nowhere", "None"),
            (Method::POST, "/v1/generations/", "None"),
            (Method::POST, "/v1%2Fgenerations", "None"),
        ] {
            let req = test::TestRequest::default()
                .method(method.clone())
                .uri(uri)
                .to_request();
            let body = test::call_and_read_body(&app, req).await;
            assert_eq!(body, expected.as_bytes(), "{method} {uri}");
        }
    }

    #[test]
    fn answers_carrying_credentials_are_recognised() {
        let mut headers = header::HeaderMap::new();
        assert!(!carries_credential(&headers));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        assert!(!carries_credential(&headers));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, No-Store"),
        );
        assert!(carries_credential(&headers));
        let mut headers = header::HeaderMap::new();
        headers.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        assert!(carries_credential(&headers));
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
