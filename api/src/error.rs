//! One error type for every handler, rendered as RFC 9457 problem+json with a stable `code`.

use actix_web::{HttpResponse, ResponseError, http::StatusCode, http::header};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::request_id;

/// An RFC 9457 problem document. `code` is stable and meant for programs; `title` and
/// `detail` are for people.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "https://docs.gptimage2.dev/problems/validation_failed",
    "title": "Validation failed",
    "status": 422,
    "detail": "The request has 1 invalid field.",
    "code": "validation_failed",
    "request_id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
    "errors": [{"field": "prompt", "message": "must not be empty"}]
}))]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, e.g. `validation_failed`, `not_found`.
    pub code: String,
    /// The request id, also sent in the `X-Request-Id` header; quote it when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The invalid fields, for `validation_failed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(nullable = false)]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// A problem for an error raised outside the handlers (middleware), from its status alone.
    pub fn from_status(status: StatusCode, detail: &str, request_id: Option<String>) -> Self {
        let code = match status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            413 => "payload_too_large",
            429 => "rate_limited",
            431 => "headers_too_large",
            500..=599 => "internal_error",
            _ => "error",
        };
        let detail = if status.is_server_error() {
            "An unexpected error occurred; quote the request id when reporting it."
        } else {
            detail
        };
        Self {
            type_: format!("https://docs.gptimage2.dev/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.into(),
            request_id,
            errors: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's name, or a JSON path to it.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("{detail}")]
    Unauthorized { code: &'static str, detail: String },
    #[error("{0}")]
    Forbidden(String),
    /// A 403 with its own code (e.g. `reauthentication_required`) the client can act on.
    #[error("{detail}")]
    Denied { code: &'static str, detail: String },
    #[error("not found")]
    NotFound,
    /// A 404 with its own code (e.g. `no_customer`), where plain `not_found` says too little.
    #[error("{detail}")]
    Missing { code: &'static str, detail: String },
    #[error("method not allowed")]
    MethodNotAllowed { allow: Vec<String> },
    #[error("{detail}")]
    PaymentRequired { code: &'static str, detail: String },
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// A 422 about the request as a whole rather than a field (e.g. `idempotency_key_reused`).
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many requests; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{detail}")]
    Unavailable { code: &'static str, detail: String },
    /// An upstream service (a payment provider) refused or failed.
    #[error("{detail}")]
    BadGateway { code: &'static str, detail: String },
    /// Anything unexpected: logged with its cause chain, shown to the client as a request id only.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Unauthorized {
            code,
            detail: detail.into(),
        }
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            detail: detail.into(),
        }
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Unavailable {
            code,
            detail: detail.into(),
        }
    }

    pub fn missing(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Missing {
            code,
            detail: detail.into(),
        }
    }

    pub fn bad_gateway(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadGateway {
            code,
            detail: detail.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unavailable { code, .. }
            | Self::Missing { code, .. }
            | Self::Denied { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::BadGateway { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::PaymentRequired { code, .. } => code,
            Self::Validation(_) => "validation_failed",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::Internal(_) => "internal_error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "Bad request",
            Self::Validation(_) => "Validation failed",
            Self::Unauthorized { .. } => "Unauthorized",
            Self::PaymentRequired { .. } => "Payment required",
            Self::Forbidden(_) | Self::Denied { .. } => "Forbidden",
            Self::Unprocessable { .. } => "Unprocessable content",
            Self::NotFound | Self::Missing { .. } => "Not found",
            Self::MethodNotAllowed { .. } => "Method not allowed",
            Self::Conflict { .. } => "Conflict",
            Self::PayloadTooLarge { .. } => "Payload too large",
            Self::UnsupportedMediaType(_) => "Unsupported media type",
            Self::TooManyRequests { .. } => "Too many requests",
            Self::Unavailable { .. } => "Service unavailable",
            Self::BadGateway { .. } => "Bad gateway",
            Self::Internal(_) => "Internal server error",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Validation(errors) if errors.len() == 1 => {
                format!("The request has an invalid field: {}.", errors[0].field)
            }
            Self::Validation(errors) => format!("The request has {} invalid fields.", errors.len()),
            Self::NotFound => "The requested resource does not exist.".into(),
            Self::MethodNotAllowed { allow } => {
                format!("This resource allows: {}.", allow.join(", "))
            }
            Self::Internal(_) => {
                "An unexpected error occurred; quote the request id when reporting it.".into()
            }
            other => other.to_string(),
        }
    }

    pub fn problem(&self) -> Problem {
        let code = self.code();
        Problem {
            type_: format!("https://docs.gptimage2.dev/problems/{code}"),
            title: self.title().into(),
            status: self.status_code().as_u16(),
            detail: self.detail(),
            code: code.into(),
            request_id: request_id::current(),
            errors: match self {
                Self::Validation(errors) => errors.clone(),
                _ => Vec::new(),
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::PaymentRequired { .. } => StatusCode::PAYMENT_REQUIRED,
            Self::Forbidden(_) | Self::Denied { .. } => StatusCode::FORBIDDEN,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound | Self::Missing { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(err) = self {
            // `{:#}` prints the whole cause chain on one line.
            tracing::error!(
                request_id = request_id::current().as_deref(),
                error = format!("{err:#}"),
                "internal error"
            );
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if let Self::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, allow.join(", ")));
        }
        if let Self::Unauthorized { .. } = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Self::TooManyRequests { retry_after_secs } = self {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        response.body(serde_json::to_string(&self.problem()).unwrap_or_default())
    }
}

impl From<crate::accounts::ownership::EmailUnverified> for ApiError {
    fn from(err: crate::accounts::ownership::EmailUnverified) -> Self {
        Self::Denied {
            code: "email_unverified",
            detail: format!("Not before the email address is verified: {err}."),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        match err {
            diesel::result::Error::NotFound => Self::NotFound,
            // The connection died under the request (database restarted or unreachable): the
            // pool discards it, so a retry gets a fresh one.
            diesel::result::Error::DatabaseError(kind, info)
                if matches!(
                    kind,
                    diesel::result::DatabaseErrorKind::UnableToSendCommand
                        | diesel::result::DatabaseErrorKind::ClosedConnection
                ) || connection_terminated(info.message()) =>
            {
                tracing::warn!(request_id = request_id::current().as_deref(), error = %info.message(), "database connection lost");
                Self::unavailable(
                    "database_unavailable",
                    "The database is unavailable; retry shortly.",
                )
            }
            other => Self::Internal(anyhow::Error::new(other).context("database query")),
        }
    }
}

/// PostgreSQL's messages for a backend it ended (SQLSTATE 57P01–57P03, which diesel reports
/// without their code): administrator command, shutdown, crash recovery.
fn connection_terminated(message: &str) -> bool {
    message.starts_with("terminating connection") || message.starts_with("the database system is")
}

impl From<crate::generations::reference_images::ImageCheckError> for ApiError {
    fn from(err: crate::generations::reference_images::ImageCheckError) -> Self {
        use crate::generations::reference_images::ImageCheckError as E;
        match err {
            E::Empty | E::Corrupt(_) => Self::validation("file", err.to_string()),
            E::Unsupported => Self::UnsupportedMediaType(err.to_string()),
            E::TooLarge(detail) => Self::Unprocessable {
                code: "image_too_large",
                detail,
            },
            E::Internal(e) => Self::Internal(e),
        }
    }
}

impl From<crate::db::PoolError> for ApiError {
    fn from(err: crate::db::PoolError) -> Self {
        tracing::warn!(request_id = request_id::current().as_deref(), error = %err, "database unavailable");
        Self::unavailable(
            "database_unavailable",
            "The database is unavailable; retry shortly.",
        )
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
