//! `DELETE /v1/me`: the account is disabled at once and erased by a job
//! (see [`crate::accounts::deletion`]).

use actix_web::{HttpResponse, delete, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    accounts::{deletion, users},
    auth::{ClientInfo, SessionAuth, activity, password, rate_limit, sessions},
    db::schema::{api_keys, sessions as sessions_t, users as users_t},
    error::{ApiError, Problem},
    jobs, mail,
    state::AppState,
    wire_enum,
};

/// How recent a sign-in must be to stand in for a password (accounts without one).
const RECENT_SIGN_IN: chrono::Duration = chrono::Duration::minutes(10);

/// Proof that the account holder asks.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "password": "correct horse battery staple" }))]
pub struct DeleteAccountRequest {
    /// The account's password; accounts without one (Google/GitHub only) leave it out and
    /// must have signed in within the last 10 minutes instead.
    #[schema(max_length = 1024)]
    pub password: Option<String>,
}

wire_enum! {
    /// `scheduled`: the account is disabled and its erasure is under way.
    pub enum DeletionStatus {
        Scheduled = "scheduled",
    }
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "status": "scheduled" }))]
pub struct DeletionScheduled {
    pub status: DeletionStatus,
}

/// 403 with its own code, so a client knows to send the user through sign-in again.
fn reauthentication_required() -> ApiError {
    ApiError::Denied {
        code: "reauthentication_required",
        detail: "Sign in again (within the last 10 minutes) before deleting the account.".into(),
    }
}

/// Delete the account: every session, access token and API key stops at once and sign-in is
/// refused; then a job cancels any subscription and erases every image, reference image,
/// export and row of the account. Only payment records stay (bookkeeping law), without name
/// or email. A confirmation mail goes to the address before it is erased.
#[utoipa::path(
    tag = "account",
    operation_id = "deleteMe",
    request_body = DeleteAccountRequest,
    security(("bearer_jwt" = [])),
    responses(
        (status = 202, description = "Disabled; the erasure is scheduled", body = DeletionScheduled),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot delete the account; or `reauthentication_required`: an account without a password must have signed in within the last 10 minutes", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: the password is missing or wrong", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/me")]
pub async fn delete_me(
    state: web::Data<AppState>,
    auth: SessionAuth,
    client: ClientInfo,
    body: web::Json<DeleteAccountRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut conn = state.pool.get().await?;
    let user = users::find(&mut conn, auth.user_id).await?;
    if let Some(stored) = user.password_hash.as_deref() {
        let config = &state.config.auth;
        // A stolen access token must not make this a password oracle.
        let fail_key = rate_limit::Key::new("delete_account_fail", &user.id.to_string());
        rate_limit::check(
            &mut conn,
            &fail_key,
            config.max_failed_logins,
            config.lockout,
        )
        .await?;
        let given = body.password.as_deref().unwrap_or("");
        if given.is_empty() || given.len() > 1024 {
            return Err(ApiError::validation("password", "is required"));
        }
        if !password::verify(config, given, Some(stored)).await? {
            rate_limit::hit(&mut conn, &fail_key, i32::MAX, config.lockout).await?;
            return Err(ApiError::validation("password", "is not your password"));
        }
    } else {
        let signed_in: DateTime<Utc> = sessions_t::table
            .find(auth.session_id)
            .select(sessions_t::created_at)
            .first(&mut conn)
            .await?;
        if Utc::now() - signed_in > RECENT_SIGN_IN {
            return Err(reauthentication_required());
        }
    }
    conn.transaction::<_, ApiError, _>(async |conn| {
        let client = &client;
        // The row lock orders concurrent requests: the second sees the first's mark.
        let disabled: Option<DateTime<Utc>> = users_t::table
            .find(user.id)
            .select(users_t::disabled_at)
            .for_update()
            .first(conn)
            .await?;
        if disabled.is_some() {
            return Ok(());
        }
        // Every request checks `disabled_at`, so this alone stops every token and key.
        diesel::update(users_t::table.find(user.id))
            .set((
                users_t::disabled_at.eq(diesel::dsl::now),
                users_t::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        sessions::revoke_all(conn, user.id, "account_deleted", None).await?;
        diesel::update(
            api_keys::table
                .filter(api_keys::user_id.eq(user.id))
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::revoked_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
        activity::record(
            conn,
            user.id,
            activity::ActivityKind::AccountDeletionRequested,
            client,
            serde_json::json!({}),
        )
        .await?;
        let mail_id = mail::queue(
            conn,
            &user.email,
            "account_deleted",
            serde_json::json!({ "name": user.name }),
        )
        .await?;
        jobs::enqueue(conn, deletion::job(user.id, mail_id)).await?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::Accepted().json(DeletionScheduled {
        status: DeletionStatus::Scheduled,
    }))
}
