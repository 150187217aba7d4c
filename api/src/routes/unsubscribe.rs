//! `/v1/mail/unsubscribe`: the one-click unsubscribe target of optional mails (RFC 8058).

use actix_web::{HttpResponse, post, web};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::{
    auth::{
        ClientInfo,
        activity::{self, ActivityKind},
    },
    db::schema::users,
    error::{ApiError, Problem},
    mail::unsubscribe,
    state::AppState,
};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnsubscribeQuery {
    /// The token from the mail's `List-Unsubscribe` link.
    #[param(max_length = 300)]
    pub token: String,
}

/// Stop an optional mail (today: low-balance notices) from its `List-Unsubscribe` link.
///
/// Mail clients POST here with `List-Unsubscribe=One-Click`; the body is ignored. The token
/// in the link is the authorization, so no sign-in is needed. Turn notices back on with
/// `PATCH /v1/me` `{low_balance_emails: true}`.
#[utoipa::path(
    tag = "account",
    operation_id = "unsubscribeMail",
    params(UnsubscribeQuery),
    responses(
        (status = 204, description = "Unsubscribed (also when already off)"),
        (status = 400, description = "`invalid_token`: not a link we sent", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: the `token` query parameter is missing", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/mail/unsubscribe")]
pub async fn unsubscribe_mail(
    state: web::Data<AppState>,
    client: ClientInfo,
    query: web::Query<UnsubscribeQuery>,
) -> Result<HttpResponse, ApiError> {
    let invalid = || ApiError::bad_request("invalid_token", "This unsubscribe link is not valid.");
    // Low-balance notices are the only list so far.
    let (user_id, _list) = unsubscribe::verify(&state.config, &query.token).ok_or_else(invalid)?;
    let mut conn = state.pool.get().await?;
    conn.transaction::<_, ApiError, _>(async |conn| {
        let client = &client;
        let changed = diesel::update(
            users::table
                .find(user_id)
                .filter(users::low_balance_emails.eq(true)),
        )
        .set(users::low_balance_emails.eq(false))
        .execute(conn)
        .await?;
        if changed > 0 {
            activity::record(
                conn,
                user_id,
                ActivityKind::ProfileUpdated,
                client,
                serde_json::json!({ "fields": ["low_balance_emails"], "via": "unsubscribe_link" }),
            )
            .await?;
        }
        Ok(())
    })
    .await?;
    // A deleted account's link is answered the same way: nothing is left to unsubscribe.
    Ok(HttpResponse::NoContent().finish())
}
