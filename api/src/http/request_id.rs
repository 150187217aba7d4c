//! `X-Request-Id`: taken from the request when it is sane, else a fresh UUIDv7; echoed on
//! every response and available to error rendering and logs through a task-local.

use actix_web::{
    Error, HttpMessage, HttpResponse, ResponseError,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    http::{StatusCode, header},
    middleware::Next,
};

use crate::error::Problem;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// The longest client-chosen id kept; longer ones are replaced.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served on this task, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn acceptable(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable(id))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    // Handlers' errors are already responses here; only middleware (CORS) returns `Err`,
    // which is re-rendered as problem+json carrying the request id.
    let mut res = match REQUEST_ID.scope(id.clone(), next.call(req)).await {
        Ok(res) => res.map_into_boxed_body(),
        Err(err) => {
            return Err(MiddlewareProblem {
                id,
                status: err.as_response_error().status_code(),
                detail: err.to_string(),
            }
            .into());
        }
    };
    if needs_problem_body(&res) {
        res = into_problem(res, &id).await;
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HEADER, value);
    }
    Ok(res)
}

/// An error response that some layer (CORS, actix itself) rendered as plain text.
fn needs_problem_body(res: &ServiceResponse<BoxBody>) -> bool {
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    (status.is_client_error() || status.is_server_error())
        && !content_type.starts_with("application/problem+json")
}

async fn into_problem(res: ServiceResponse<BoxBody>, id: &str) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let (req, response) = res.into_parts();
    let (head, body) = response.into_parts();
    let text = actix_web::body::to_bytes_limited(body, 1024)
        .await
        .ok()
        .and_then(|r| r.ok())
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").to_string());
    let problem = Problem::from_status(status, &text, Some(id.to_string()));
    let mut rebuilt = HttpResponse::build(status);
    for (name, value) in head.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.append_header((name.clone(), value.clone()));
        }
    }
    rebuilt.insert_header((header::CONTENT_TYPE, "application/problem+json"));
    ServiceResponse::new(
        req,
        rebuilt.body(serde_json::to_string(&problem).unwrap_or_default()),
    )
}

#[derive(Debug)]
struct MiddlewareProblem {
    id: String,
    status: StatusCode,
    detail: String,
}

impl std::fmt::Display for MiddlewareProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl ResponseError for MiddlewareProblem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let problem = Problem::from_status(self.status, &self.detail, Some(self.id.clone()));
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if let Ok(value) = HeaderValue::from_str(&self.id) {
            res.insert_header((HEADER, value));
        }
        res.body(serde_json::to_string(&problem).unwrap_or_default())
    }
}
