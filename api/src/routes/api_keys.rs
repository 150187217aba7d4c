//! `/v1/me/api-keys`: keys for integrators. The secret is shown once, in the creation
//! response, and stored only as a SHA-256 hash (see [`crate::auth::extract`] for its use).
//! Managing keys needs a signed-in session, so a leaked key cannot mint or hide others.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Months, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    accounts::{
        ownership,
        users::{self, User},
    },
    auth::{ClientInfo, SessionAuth, activity, extract::API_KEY_PREFIX, sessions, tokens},
    db::schema::{api_keys, users as users_t},
    error::{ApiError, FieldError, Problem},
    mail,
    pagination::{Page, PageQuery},
    state::AppState,
};

/// Keys a user may hold at once (not revoked, not expired).
pub const MAX_ACTIVE_KEYS: i64 = 20;
/// The largest `daily_credit_limit` accepted.
pub const MAX_DAILY_CREDIT_LIMIT: i64 = 1_000_000;
/// Characters of the key kept in clear to recognise it: `gi2_` + 8.
const PREFIX_LEN: usize = API_KEY_PREFIX.len() + 8;

/// A new key's label, and the limits it is held to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "name": "CI pipeline", "expires_at": "2027-06-01T00:00:00Z", "daily_credit_limit": 500 }))]
pub struct CreateApiKeyRequest {
    /// A label to recognise the key by, e.g. where it is used.
    #[schema(min_length = 1, max_length = 100, example = "CI pipeline")]
    pub name: String,
    /// When the key stops working (RFC 3339): in the future and at most one year ahead.
    /// Absent or `null`: the key does not expire.
    #[schema(format = DateTime, example = "2027-06-01T00:00:00Z")]
    pub expires_at: Option<String>,
    /// The most credits this key may spend per day (UTC). Absent or `null`: no limit of its own.
    #[schema(minimum = 1, maximum = 1_000_000, example = 500)]
    pub daily_credit_limit: Option<i64>,
}

/// A key as listed: never the secret.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
    "name": "CI pipeline",
    "prefix": "gi2_Xy3kP9aQ",
    "expires_at": "2027-06-01T00:00:00Z",
    "daily_credit_limit": 500,
    "last_used_at": "2026-11-29T12:30:00Z",
    "created_at": "2026-11-29T10:00:00Z",
    "expired": false
}))]
pub struct ApiKeyView {
    pub id: Uuid,
    #[schema(example = "CI pipeline")]
    pub name: String,
    /// The first characters of the key, to recognise it.
    #[schema(example = "gi2_Xy3kP9aQ")]
    pub prefix: String,
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(example = 500)]
    pub daily_credit_limit: Option<i64>,
    /// Updated at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// True once `expires_at` has passed; the key is then refused.
    pub expired: bool,
}

/// A page of `ApiKeyView`s.
pub type ApiKeyPage = Page<ApiKeyView>;

/// A new key, with its secret: the only time it is shown.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
    "name": "CI pipeline",
    "prefix": "gi2_Xy3kP9aQ",
    "key": "gi2_Xy3kP9aQ7hVbN2mLwE5tR8uJcZ1oD4fG6sK0yHiAx",
    "expires_at": "2027-06-01T00:00:00Z",
    "daily_credit_limit": 500,
    "created_at": "2026-11-29T10:00:00Z",
    "last_used_at": null
}))]
pub struct CreatedApiKey {
    pub id: Uuid,
    #[schema(example = "CI pipeline")]
    pub name: String,
    #[schema(example = "gi2_Xy3kP9aQ")]
    pub prefix: String,
    /// The secret: send it as `Authorization: Bearer <key>`. Store it now; it cannot be shown again.
    #[schema(example = "gi2_Xy3kP9aQ7hVbN2mLwE5tR8uJcZ1oD4fG6sK0yHiAx")]
    pub key: String,
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(example = 500)]
    pub daily_credit_limit: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// Always null: the key has not been used yet.
    pub last_used_at: Option<DateTime<Utc>>,
}

type KeyRow = (
    Uuid,
    String,
    String,
    Option<DateTime<Utc>>,
    Option<i64>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

fn validate(
    body: &CreateApiKeyRequest,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let mut errors: Vec<FieldError> = Vec::new();
    errors.extend(users::validate_name("name", &body.name));
    let mut expires_at = None;
    if let Some(raw) = &body.expires_at {
        match DateTime::parse_from_rfc3339(raw) {
            Err(_) => errors.push(FieldError::new(
                "expires_at",
                "must be an RFC 3339 timestamp, e.g. 2027-06-01T00:00:00Z",
            )),
            Ok(at) => {
                let at = at.with_timezone(&Utc);
                let latest = now
                    .checked_add_months(Months::new(12))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                if at <= now {
                    errors.push(FieldError::new("expires_at", "must be in the future"));
                } else if at > latest {
                    errors.push(FieldError::new(
                        "expires_at",
                        "must be at most one year ahead",
                    ));
                } else {
                    expires_at = Some(at);
                }
            }
        }
    }
    if let Some(limit) = body.daily_credit_limit
        && !(1..=MAX_DAILY_CREDIT_LIMIT).contains(&limit)
    {
        errors.push(FieldError::new(
            "daily_credit_limit",
            format!("must be between 1 and {MAX_DAILY_CREDIT_LIMIT}"),
        ));
    }
    if errors.is_empty() {
        Ok(expires_at)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Create an API key; its secret is in this response only.
///
/// Needs a verified email address (403 `email_unverified` before): a key outlives sessions,
/// and until the address is proven the account may not be its owner's.
#[utoipa::path(
    tag = "api-keys",
    operation_id = "createApiKey",
    request_body = CreateApiKeyRequest,
    security(("bearer_jwt" = [])),
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = CreatedApiKey),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot create keys; or `email_unverified`: the account's email address is not verified yet", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`too_many_api_keys`: 20 active keys already; revoke one first", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/me/api-keys")]
pub async fn create_api_key(
    state: web::Data<AppState>,
    auth: SessionAuth,
    client: ClientInfo,
    body: web::Json<CreateApiKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let expires_at = validate(&body, Utc::now())?;
    let name = body.name.trim().to_string();
    let key = tokens::random_token(API_KEY_PREFIX);
    let prefix: String = key.chars().take(PREFIX_LEN).collect();
    let mut conn = state.pool.get().await?;
    let row: KeyRow = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let (client, name, key, prefix) = (&client, &name, &key, &prefix);
            // Locking the user serialises concurrent creations, so the cap holds.
            let user: User = users_t::table
                .find(auth.user_id)
                .select(User::as_select())
                .for_update()
                .first(conn)
                .await?;
            // A key outlives sessions: an account someone else may have registered gets none.
            ownership::require_verified(&user)?;
            // The session was checked before the lock; proving the address meanwhile ended it.
            if !sessions::is_live(conn, user.id, auth.session_id).await? {
                return Err(sessions::ended());
            }
            let active: i64 = api_keys::table
                .filter(api_keys::user_id.eq(user.id))
                .filter(api_keys::revoked_at.is_null())
                .filter(
                    api_keys::expires_at
                        .is_null()
                        .or(api_keys::expires_at.gt(diesel::dsl::now)),
                )
                .count()
                .get_result(conn)
                .await?;
            if active >= MAX_ACTIVE_KEYS {
                return Err(ApiError::conflict(
                    "too_many_api_keys",
                    format!(
                        "You already have {MAX_ACTIVE_KEYS} active API keys; revoke one first."
                    ),
                ));
            }
            let id = Uuid::now_v7();
            let row: KeyRow = diesel::insert_into(api_keys::table)
                .values((
                    api_keys::id.eq(id),
                    api_keys::user_id.eq(user.id),
                    api_keys::name.eq(name),
                    api_keys::prefix.eq(prefix),
                    api_keys::key_hash.eq(tokens::hash_token(key)),
                    api_keys::expires_at.eq(expires_at),
                    api_keys::daily_credit_limit.eq(body.daily_credit_limit),
                ))
                .returning((
                    api_keys::id,
                    api_keys::name,
                    api_keys::prefix,
                    api_keys::expires_at,
                    api_keys::daily_credit_limit,
                    api_keys::last_used_at,
                    api_keys::created_at,
                ))
                .get_result(conn)
                .await?;
            activity::record(
                conn,
                user.id,
                activity::ActivityKind::ApiKeyCreated,
                client,
                serde_json::json!({ "id": id, "name": name, "prefix": prefix }),
            )
            .await?;
            // Tells the owner a key exists, in case the session was not theirs.
            mail::queue(
                conn,
                &user.email,
                "api_key_created",
                serde_json::json!({
                    "name": user.name,
                    "key_name": name,
                    "prefix": prefix,
                    "ip": client.ip_key(),
                }),
            )
            .await?;
            Ok(row)
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(CreatedApiKey {
            id: row.0,
            name: row.1,
            prefix: row.2,
            key,
            expires_at: row.3,
            daily_credit_limit: row.4,
            last_used_at: row.5,
            created_at: row.6,
        }))
}

/// The API keys not revoked (expired ones included, flagged), newest first.
#[utoipa::path(
    tag = "api-keys",
    operation_id = "listApiKeys",
    params(PageQuery),
    security(("bearer_jwt" = [])),
    responses(
        (status = 200, description = "A page of keys, without their secrets", body = ApiKeyPage),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot list keys", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: bad `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/me/api-keys")]
pub async fn list_api_keys(
    state: web::Data<AppState>,
    auth: SessionAuth,
    query: web::Query<PageQuery>,
) -> Result<web::Json<ApiKeyPage>, ApiError> {
    let limit = query.limit()?;
    let mut q = api_keys::table
        .filter(api_keys::user_id.eq(auth.user_id))
        .filter(api_keys::revoked_at.is_null())
        .into_boxed();
    if let Some(after) = query.after()? {
        q = q.filter(api_keys::id.lt(after));
    }
    let mut conn = state.pool.get().await?;
    let rows: Vec<KeyRow> = q
        .order(api_keys::id.desc())
        .limit(limit + 1)
        .select((
            api_keys::id,
            api_keys::name,
            api_keys::prefix,
            api_keys::expires_at,
            api_keys::daily_credit_limit,
            api_keys::last_used_at,
            api_keys::created_at,
        ))
        .load(&mut conn)
        .await?;
    let now = Utc::now();
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |r| r.0,
        |r| ApiKeyView {
            expired: r.3.is_some_and(|at| at <= now),
            id: r.0,
            name: r.1,
            prefix: r.2,
            expires_at: r.3,
            daily_credit_limit: r.4,
            last_used_at: r.5,
            created_at: r.6,
        },
    )))
}

/// Revoke an API key: it is refused from the next request on.
#[utoipa::path(
    tag = "api-keys",
    operation_id = "revokeApiKey",
    params(("id" = Uuid, Path, description = "API key id")),
    security(("bearer_jwt" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot revoke keys", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such unrevoked key of yours", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/me/api-keys/{id}")]
pub async fn revoke_api_key(
    state: web::Data<AppState>,
    auth: SessionAuth,
    client: ClientInfo,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let mut conn = state.pool.get().await?;
    conn.transaction::<_, ApiError, _>(async |conn| {
        let client = &client;
        // The owner filter makes another user's key indistinguishable from an unknown one.
        let (name, prefix): (String, String) = diesel::update(
            api_keys::table
                .find(id)
                .filter(api_keys::user_id.eq(auth.user_id))
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::revoked_at.eq(diesel::dsl::now))
        .returning((api_keys::name, api_keys::prefix))
        .get_result(conn)
        .await
        .optional()?
        .ok_or(ApiError::NotFound)?;
        activity::record(
            conn,
            auth.user_id,
            activity::ActivityKind::ApiKeyRevoked,
            client,
            serde_json::json!({ "id": id, "name": name, "prefix": prefix }),
        )
        .await?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
