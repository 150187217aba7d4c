//! `/v1/me/identities`: the Google and GitHub logins linked to the account.

use actix_web::{HttpResponse, delete, get, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::{Auth, ClientInfo, SessionAuth, activity, oauth::Provider},
    db::schema::{identities, users},
    error::{ApiError, Problem},
    pagination::Page,
    state::AppState,
};

/// A linked Google or GitHub login.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "provider": "google",
    "email": "ada@example.com",
    "created_at": "2026-11-29T10:00:00Z",
    "last_used_at": "2026-11-29T12:30:00Z"
}))]
pub struct IdentityView {
    pub provider: Provider,
    /// The email the provider reported at the latest sign-in.
    #[schema(example = "ada@example.com")]
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
}

/// A page of `IdentityView`s.
pub type IdentityPage = Page<IdentityView>;

type IdentityRow = (String, Option<String>, DateTime<Utc>, DateTime<Utc>);

/// Linked Google/GitHub logins (at most one per provider, so always a single page).
#[utoipa::path(
    tag = "account",
    operation_id = "listIdentities",
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The linked logins, oldest first; `next_cursor` is always null", body = IdentityPage),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/me/identities")]
pub async fn list_identities(
    state: web::Data<AppState>,
    auth: Auth,
) -> Result<web::Json<IdentityPage>, ApiError> {
    let mut conn = state.pool.get().await?;
    let rows: Vec<IdentityRow> = identities::table
        .filter(identities::user_id.eq(auth.user_id))
        .order(identities::created_at.asc())
        .select((
            identities::provider,
            identities::email,
            identities::created_at,
            identities::last_used_at,
        ))
        .load(&mut conn)
        .await?;
    let data = rows
        .into_iter()
        .filter_map(|(provider, email, created_at, last_used_at)| {
            Some(IdentityView {
                // The column's CHECK allows only known providers.
                provider: Provider::parse(&provider)?,
                email,
                created_at,
                last_used_at,
            })
        })
        .collect();
    Ok(web::Json(Page {
        data,
        next_cursor: None,
    }))
}

/// Unlink a Google or GitHub login.
///
/// Refused while it is the account's only way to sign in (no password, no other login):
/// set a password first, with the link `POST /v1/auth/password/forgot` mails.
#[utoipa::path(
    tag = "account",
    operation_id = "unlinkIdentity",
    params(("provider" = Provider, Path, description = "`google` or `github`")),
    security(("bearer_jwt" = [])),
    responses(
        (status = 204, description = "Unlinked"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot unlink logins", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such login is linked", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`last_sign_in_method`: it is the only way to sign in", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/me/identities/{provider}")]
pub async fn unlink_identity(
    state: web::Data<AppState>,
    auth: SessionAuth,
    client: ClientInfo,
    provider: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let provider = Provider::parse(&provider).ok_or(ApiError::NotFound)?;
    let mut conn = state.pool.get().await?;
    conn.transaction::<_, ApiError, _>(async |conn| {
        let client = &client;
        // Locking the account serialises unlinks, so two at once cannot remove the last
        // two ways in.
        let has_password: bool = users::table
            .find(auth.user_id)
            .select(users::password_hash.is_not_null())
            .for_update()
            .first(conn)
            .await?;
        let linked: Vec<String> = identities::table
            .filter(identities::user_id.eq(auth.user_id))
            .select(identities::provider)
            .load(conn)
            .await?;
        if !linked.iter().any(|p| p == provider.as_str()) {
            return Err(ApiError::NotFound);
        }
        if !has_password && linked.len() == 1 {
            return Err(ApiError::conflict(
                "last_sign_in_method",
                format!(
                    "{} is the only way to sign in to this account; set a password (POST /v1/auth/password/forgot mails the link) or link another login first.",
                    provider.label()
                ),
            ));
        }
        diesel::delete(
            identities::table
                .filter(identities::user_id.eq(auth.user_id))
                .filter(identities::provider.eq(provider.as_str())),
        )
        .execute(conn)
        .await?;
        activity::record(
            conn,
            auth.user_id,
            activity::ActivityKind::IdentityUnlinked,
            client,
            serde_json::json!({ "provider": provider.as_str() }),
        )
        .await?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
