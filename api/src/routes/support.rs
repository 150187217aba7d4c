//! `/v1/support/requests`: write to support. Each request is stored (so the user can see
//! what they sent, and it is part of their data export), mailed to the support address, and
//! a copy is mailed to the user when their address is verified: the text is the caller's, so
//! a copy to an unproven address would let anyone mail anything to anyone.

use std::time::Duration;

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    accounts::users,
    auth::{Auth, rate_limit},
    db::schema::support_requests,
    error::{ApiError, FieldError, Problem},
    mail,
    pagination::{Page, PageQuery},
    state::AppState,
};

pub const MAX_SUBJECT_CHARS: usize = 200;
pub const MAX_MESSAGE_CHARS: usize = 10_000;
/// Each request mails a person; this keeps a runaway script from flooding the inbox.
const REQUESTS_PER_HOUR: i32 = 10;

/// A message to support.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "subject": "A generation failed but used credits",
    "message": "Generation 0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f failed with provider_error at 10:02 UTC."
}))]
pub struct CreateSupportRequest {
    /// One line: no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        example = "A generation failed but used credits"
    )]
    pub subject: String,
    /// Newlines and tabs are kept; other control characters are refused.
    #[schema(
        min_length = 1,
        max_length = 10000,
        example = "Generation 0192… failed with provider_error at 10:02 UTC."
    )]
    pub message: String,
}

/// A request the user sent to support.
#[derive(Serialize, ToSchema, Queryable)]
#[schema(example = json!({
    "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
    "subject": "A generation failed but used credits",
    "message": "Generation 0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f failed with provider_error at 10:02 UTC.",
    "created_at": "2026-11-29T10:02:30Z"
}))]
pub struct SupportRequestView {
    pub id: Uuid,
    pub subject: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

/// A page of `SupportRequestView`s.
pub type SupportRequestPage = Page<SupportRequestView>;

/// `value` trimmed, or why it is not acceptable.
fn check_text<'a>(
    field: &str,
    value: &'a str,
    max_chars: usize,
    allow_newlines: bool,
) -> Result<&'a str, FieldError> {
    let value = value.trim();
    let chars = value.chars().count();
    if chars == 0 || chars > max_chars {
        return Err(FieldError::new(
            field,
            format!("must be 1–{max_chars} characters"),
        ));
    }
    let allowed = |c: char| allow_newlines && matches!(c, '\n' | '\r' | '\t');
    if value.chars().any(|c| c.is_control() && !allowed(c)) {
        let what = if allow_newlines {
            "must not contain control characters other than newlines and tabs"
        } else {
            "must not contain control characters or line breaks"
        };
        return Err(FieldError::new(field, what));
    }
    Ok(value)
}

/// Write to support; the request is mailed to the support team and, once your email address
/// is verified, a copy to you.
#[utoipa::path(
    tag = "support",
    operation_id = "createSupportRequest",
    request_body = CreateSupportRequest,
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Stored and on its way to support", body = SupportRequestView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names `subject` or `message`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: 10 requests an hour; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/support/requests")]
pub async fn create_support_request(
    state: web::Data<AppState>,
    auth: Auth,
    body: web::Json<CreateSupportRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let subject = check_text("subject", &body.subject, MAX_SUBJECT_CHARS, false);
    let message = check_text("message", &body.message, MAX_MESSAGE_CHARS, true);
    let (subject, message) = match (subject, message) {
        (Ok(subject), Ok(message)) => (subject, message),
        (subject, message) => {
            let errors = [subject.err(), message.err()].into_iter().flatten();
            return Err(ApiError::Validation(errors.collect()));
        }
    };
    let mut conn = state.pool.get().await?;
    // Counted after validation, so a typo does not use up the hour.
    rate_limit::hit(
        &mut conn,
        rate_limit::Key::new("support", &auth.user_id.to_string()),
        REQUESTS_PER_HOUR,
        Duration::from_secs(3600),
    )
    .await?;
    let user = users::find(&mut conn, auth.user_id).await?;
    let view = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let state = &state;
            let view: SupportRequestView = diesel::insert_into(support_requests::table)
                .values((
                    support_requests::id.eq(Uuid::now_v7()),
                    support_requests::user_id.eq(user.id),
                    support_requests::subject.eq(subject),
                    support_requests::message.eq(message),
                ))
                .returning((
                    support_requests::id,
                    support_requests::subject,
                    support_requests::message,
                    support_requests::created_at,
                ))
                .get_result(conn)
                .await?;
            let context = serde_json::json!({
                "user_id": user.id,
                "email": user.email,
                "name": user.name,
                "subject": view.subject,
                "message": view.message,
                "sent_at": view.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            });
            // Support answers by replying: straight to the user.
            let mut to_support = context.clone();
            to_support["reply_to"] = user.email.clone().into();
            mail::queue(
                conn,
                &state.config.support_email,
                "support_request",
                to_support,
            )
            .await?;
            if user.email_verified_at.is_some() {
                mail::queue(conn, &user.email, "support_copy", context).await?;
            }
            Ok(view)
        })
        .await?;
    Ok(HttpResponse::Created().json(view))
}

/// The support requests you sent, newest first.
#[utoipa::path(
    tag = "support",
    operation_id = "listSupportRequests",
    params(PageQuery),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of your requests", body = SupportRequestPage),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: bad `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/support/requests")]
pub async fn list_support_requests(
    state: web::Data<AppState>,
    auth: Auth,
    query: web::Query<PageQuery>,
) -> Result<web::Json<SupportRequestPage>, ApiError> {
    let limit = query.limit()?;
    let mut q = support_requests::table
        .filter(support_requests::user_id.eq(auth.user_id))
        .into_boxed();
    if let Some(after) = query.after()? {
        q = q.filter(support_requests::id.lt(after));
    }
    let mut conn = state.pool.get().await?;
    let rows: Vec<SupportRequestView> = q
        .order(support_requests::id.desc())
        .limit(limit + 1)
        .select((
            support_requests::id,
            support_requests::subject,
            support_requests::message,
            support_requests::created_at,
        ))
        .load(&mut conn)
        .await?;
    Ok(web::Json(Page::from_rows(rows, limit, |r| r.id, |r| r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert_eq!(check_text("s", "  Hi  ", 200, false).ok(), Some("Hi"));
        assert!(check_text("s", "   ", 200, false).is_err());
        assert!(check_text("s", &"é".repeat(200), 200, false).is_ok());
        assert!(check_text("s", &"é".repeat(201), 200, false).is_err());
        assert!(check_text("s", "a\nb", 200, false).is_err());
        assert!(check_text("m", "a\r\n\tb", 200, true).is_ok());
        assert!(check_text("m", "a\u{7}b", 200, true).is_err());
        assert!(check_text("m", "a\u{85}b", 200, true).is_err());
    }
}
