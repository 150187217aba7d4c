//! `/v1/me`: the signed-in user's profile, password, sessions, security log and consents.

use actix_web::{HttpResponse, delete, get, patch, post, put, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    accounts::{UserView, consents, users},
    auth::{
        Auth, ClientInfo, SessionAuth,
        activity::{self, ActivityKind},
        lockout::PasswordAttempts,
        password,
        sessions::{self, AuthMethod, ClientKind},
    },
    db::schema::{activity_events, sessions as sessions_t, users as users_t},
    error::{ApiError, FieldError, Problem},
    mail,
    pagination::{Page, PageQuery},
    state::AppState,
};

/// The signed-in user's profile.
#[utoipa::path(
    tag = "account",
    operation_id = "getMe",
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The profile", body = UserView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/me")]
pub async fn get_me(
    state: web::Data<AppState>,
    auth: Auth,
) -> Result<web::Json<UserView>, ApiError> {
    let mut conn = state.pool.get().await?;
    let user = users::find(&mut conn, auth.user_id).await?;
    Ok(web::Json(UserView::load(&mut conn, &user).await?))
}

/// The profile fields to change; absent ones are kept.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "name": "Ada King", "avatar_url": "https://images.example.com/ada.png" }))]
pub struct UpdateMeRequest {
    #[schema(min_length = 1, max_length = 100, example = "Ada King")]
    pub name: Option<String>,
    /// An https URL on a public host; `null` removes the avatar.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 2048, example = "https://images.example.com/ada.png")]
    pub avatar_url: Option<Option<String>>,
    /// Low-balance notices on or off.
    #[schema(example = false)]
    pub low_balance_emails: Option<bool>,
}

/// Tells "absent" (keep) from `null` (clear).
fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// Correct the profile (name, avatar) and choose optional mails.
#[utoipa::path(
    tag = "account",
    operation_id = "updateMe",
    request_body = UpdateMeRequest,
    security(("bearer_jwt" = [])),
    responses(
        (status = 200, description = "The updated profile", body = UserView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot change the profile", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/v1/me")]
pub async fn update_me(
    state: web::Data<AppState>,
    auth: SessionAuth,
    client: ClientInfo,
    body: web::Json<UpdateMeRequest>,
) -> Result<web::Json<UserView>, ApiError> {
    let body = body.into_inner();
    let mut errors: Vec<FieldError> = Vec::new();
    if let Some(name) = &body.name {
        errors.extend(users::validate_name("name", name));
    }
    if let Some(Some(url)) = &body.avatar_url {
        errors.extend(users::validate_avatar_url("avatar_url", url));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut conn = state.pool.get().await?;
    let user = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let client = &client;
            if let Some(name) = &body.name {
                diesel::update(users_t::table.find(auth.user_id))
                    .set(users_t::name.eq(name.trim()))
                    .execute(conn)
                    .await?;
            }
            if let Some(avatar) = &body.avatar_url {
                diesel::update(users_t::table.find(auth.user_id))
                    .set(users_t::avatar_url.eq(avatar))
                    .execute(conn)
                    .await?;
            }
            if let Some(on) = body.low_balance_emails {
                diesel::update(users_t::table.find(auth.user_id))
                    .set(users_t::low_balance_emails.eq(on))
                    .execute(conn)
                    .await?;
            }
            diesel::update(users_t::table.find(auth.user_id))
                .set(users_t::updated_at.eq(diesel::dsl::now))
                .execute(conn)
                .await?;
            let fields: Vec<&str> = [
                body.name.as_ref().map(|_| "name"),
                body.avatar_url.as_ref().map(|_| "avatar_url"),
                body.low_balance_emails.map(|_| "low_balance_emails"),
            ]
            .into_iter()
            .flatten()
            .collect();
            activity::record(
                conn,
                auth.user_id,
                ActivityKind::ProfileUpdated,
                client,
                serde_json::json!({ "fields": fields }),
            )
            .await?;
            Ok(users::find(conn, auth.user_id).await?)
        })
        .await?;
    Ok(web::Json(UserView::load(&mut conn, &user).await?))
}

/// The current password and the new one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "current_password": "correct horse battery staple",
    "password": "a brand new horse battery"
}))]
pub struct ChangePasswordRequest {
    /// The account's current password. Accounts without one (Google/GitHub only) cannot use
    /// this route: they set a first password through the mailed reset link.
    #[schema(max_length = 1024)]
    pub current_password: Option<String>,
    #[schema(
        min_length = 10,
        max_length = 128,
        example = "a brand new horse battery"
    )]
    pub password: String,
}

/// 403 with its own code, so a client knows to send the user through the mailed link.
fn password_setup_requires_email() -> ApiError {
    ApiError::Denied {
        code: "password_setup_requires_email",
        detail: "This account has no password yet; set one with the link mailed by POST /v1/auth/password/forgot.".into(),
    }
}

/// Change the password; every other session is signed out.
///
/// Wrong current passwords count like failed sign-ins (same lockout: 429 with `Retry-After`),
/// so a stolen access token does not make the password guessable.
///
/// An account without a password (created with Google/GitHub) cannot set its first one here:
/// an access token alone would turn into a permanent way in. It gets 403
/// `password_setup_requires_email`; the owner sets one through the mailed link instead
/// (`POST /v1/auth/password/forgot`, then `POST /v1/auth/password/reset`).
#[utoipa::path(
    tag = "account",
    operation_id = "changePassword",
    request_body = ChangePasswordRequest,
    security(("bearer_jwt" = [])),
    responses(
        (status = 204, description = "Changed"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot change passwords; or `password_setup_requires_email`: the account has no password yet, set one with the mailed reset link", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: wrong current password, or the new one breaks a rule", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many wrong current passwords; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/me/password")]
pub async fn change_password(
    state: web::Data<AppState>,
    auth: SessionAuth,
    client: ClientInfo,
    body: web::Json<ChangePasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let config = &state.config.auth;
    let mut conn = state.pool.get().await?;
    let user = users::find(&mut conn, auth.user_id).await?;
    let stored = user
        .password_hash
        .as_deref()
        .ok_or_else(password_setup_requires_email)?;
    let attempts = PasswordAttempts::new(&user.email, &client);
    attempts.check(&mut conn, config).await?;
    let current = body.current_password.as_deref().unwrap_or("");
    if current.is_empty()
        || current.len() > 1024
        || !password::verify(config, current, Some(stored)).await?
    {
        attempts.failed(&mut conn, config).await;
        return Err(ApiError::validation(
            "current_password",
            "is not your current password",
        ));
    }
    attempts.succeeded(&mut conn).await?;
    let problems = password::problems(&body.password, &user.email, &user.name);
    if !problems.is_empty() {
        return Err(ApiError::Validation(
            problems
                .into_iter()
                .map(|m| FieldError::new("password", m))
                .collect(),
        ));
    }
    let hash = password::hash(&state.config.auth, &body.password).await?;
    conn.transaction::<_, ApiError, _>(async |conn| {
        let client = &client;
        diesel::update(users_t::table.find(user.id))
            .set((
                users_t::password_hash.eq(&hash),
                users_t::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        sessions::revoke_all(conn, user.id, "password_changed", Some(auth.session_id)).await?;
        activity::record(
            conn,
            user.id,
            ActivityKind::PasswordChanged,
            client,
            serde_json::json!({}),
        )
        .await?;
        mail::queue(
            conn,
            &user.email,
            "password_changed",
            serde_json::json!({ "name": user.name, "ip": client.ip_key() }),
        )
        .await?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// One signed-in device.
#[derive(Serialize, ToSchema, Queryable)]
#[schema(example = json!({
    "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
    "client": "web",
    "auth_method": "password",
    "ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15",
    "last_ip": "203.0.113.7",
    "created_at": "2026-11-29T10:00:00Z",
    "last_used_at": "2026-11-29T12:30:00Z",
    "current": true
}))]
pub struct SessionView {
    pub id: Uuid,
    #[schema(value_type = ClientKind)]
    pub client: String,
    #[schema(value_type = AuthMethod)]
    pub auth_method: String,
    /// Address at sign-in.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Address of the latest refresh.
    pub last_ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    /// True for the session making this request.
    #[diesel(skip_insertion)]
    pub current: bool,
}

/// A page of `SessionView`s.
pub type SessionPage = Page<SessionView>;

type SessionRow = (
    Uuid,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// Active sessions, newest first.
#[utoipa::path(
    tag = "account",
    operation_id = "listSessions",
    params(PageQuery),
    security(("bearer_jwt" = [])),
    responses(
        (status = 200, description = "A page of sessions", body = SessionPage),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot list sessions", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: bad `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/me/sessions")]
pub async fn list_sessions(
    state: web::Data<AppState>,
    auth: SessionAuth,
    query: web::Query<PageQuery>,
) -> Result<web::Json<SessionPage>, ApiError> {
    let limit = query.limit()?;
    let mut q = sessions_t::table
        .filter(sessions_t::user_id.eq(auth.user_id))
        .filter(sessions_t::revoked_at.is_null())
        .filter(sessions_t::expires_at.gt(diesel::dsl::now))
        .into_boxed();
    if let Some(after) = query.after()? {
        q = q.filter(sessions_t::id.lt(after));
    }
    let mut conn = state.pool.get().await?;
    let rows: Vec<SessionRow> = q
        .order(sessions_t::id.desc())
        .limit(limit + 1)
        .select((
            sessions_t::id,
            sessions_t::client,
            sessions_t::auth_method,
            sessions_t::ip,
            sessions_t::user_agent,
            sessions_t::last_ip,
            sessions_t::created_at,
            sessions_t::last_used_at,
        ))
        .load(&mut conn)
        .await?;
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |r| r.0,
        |r| SessionView {
            current: r.0 == auth.session_id,
            id: r.0,
            client: r.1,
            auth_method: r.2,
            ip: r.3,
            user_agent: r.4,
            last_ip: r.5,
            created_at: r.6,
            last_used_at: r.7,
        },
    )))
}

/// Sign a device out.
#[utoipa::path(
    tag = "account",
    operation_id = "revokeSession",
    params(("id" = Uuid, Path, description = "Session id")),
    security(("bearer_jwt" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot revoke sessions", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such active session of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/me/sessions/{id}")]
pub async fn revoke_session(
    state: web::Data<AppState>,
    auth: SessionAuth,
    client: ClientInfo,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let mut conn = state.pool.get().await?;
    if !sessions::revoke(&mut conn, auth.user_id, id, "revoked_by_user").await? {
        return Err(ApiError::NotFound);
    }
    activity::record(
        &mut conn,
        auth.user_id,
        ActivityKind::SessionRevoked,
        &client,
        serde_json::json!({ "session_id": id }),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// One security event.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
    "kind": "session_revoked",
    "ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15",
    "details": { "session_id": "0193a1d2-8a40-7c11-b2f3-5d6e7f8a9b0c" },
    "created_at": "2026-11-29T10:00:00Z"
}))]
pub struct ActivityView {
    pub id: Uuid,
    #[schema(value_type = ActivityKind)]
    pub kind: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// A page of `ActivityView`s.
pub type ActivityPage = Page<ActivityView>;

type ActivityRow = (
    Uuid,
    String,
    Option<String>,
    Option<String>,
    serde_json::Value,
    DateTime<Utc>,
);

/// The security log: sign-ins, failures, password and key changes, with IP and user agent.
#[utoipa::path(
    tag = "account",
    operation_id = "listActivity",
    params(PageQuery),
    security(("bearer_jwt" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of events, newest first", body = ActivityPage),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: bad `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/me/activity")]
pub async fn list_activity(
    state: web::Data<AppState>,
    auth: Auth,
    query: web::Query<PageQuery>,
) -> Result<web::Json<ActivityPage>, ApiError> {
    let limit = query.limit()?;
    let mut q = activity_events::table
        .filter(activity_events::user_id.eq(auth.user_id))
        .into_boxed();
    if let Some(after) = query.after()? {
        q = q.filter(activity_events::id.lt(after));
    }
    let mut conn = state.pool.get().await?;
    let rows: Vec<ActivityRow> = q
        .order(activity_events::id.desc())
        .limit(limit + 1)
        .select((
            activity_events::id,
            activity_events::kind,
            activity_events::ip,
            activity_events::user_agent,
            activity_events::details,
            activity_events::created_at,
        ))
        .load(&mut conn)
        .await?;
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |r| r.0,
        |r| ActivityView {
            id: r.0,
            kind: r.1,
            ip: r.2,
            user_agent: r.3,
            details: r.4,
            created_at: r.5,
        },
    )))
}

/// The current consent choice and its dated history.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "analytics": true,
    "marketing": false,
    "policy_version": "2026-11-01",
    "updated_at": "2026-11-29T10:00:00Z",
    "history": [
        { "analytics": true, "marketing": false, "policy_version": "2026-11-01", "ip": "203.0.113.7", "created_at": "2026-11-29T10:00:00Z" },
        { "analytics": false, "marketing": false, "policy_version": "2026-11-01", "ip": "203.0.113.7", "created_at": "2026-11-28T09:00:00Z" }
    ]
}))]
pub struct ConsentsView {
    /// Product analytics (off unless granted).
    pub analytics: bool,
    /// Marketing mail (off unless granted).
    pub marketing: bool,
    pub policy_version: String,
    pub updated_at: Option<DateTime<Utc>>,
    /// Every choice made, newest first.
    pub history: Vec<consents::ConsentRecord>,
}

async fn consents_view(
    conn: &mut diesel_async::AsyncPgConnection,
    state: &AppState,
    user_id: Uuid,
) -> Result<ConsentsView, ApiError> {
    let history = consents::history(conn, user_id).await?;
    let current = <[consents::ConsentRecord]>::first(&history);
    Ok(ConsentsView {
        analytics: current.is_some_and(|c| c.analytics),
        marketing: current.is_some_and(|c| c.marketing),
        policy_version: current
            .map(|c| c.policy_version.clone())
            .unwrap_or_else(|| state.config.auth.privacy_policy_version.clone()),
        updated_at: current.map(|c| c.created_at),
        history,
    })
}

/// Current consents (analytics, marketing) and their history.
#[utoipa::path(
    tag = "account",
    operation_id = "getConsents",
    security(("bearer_jwt" = [])),
    responses(
        (status = 200, description = "Consents", body = ConsentsView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot read consents", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/me/consents")]
pub async fn get_consents(
    state: web::Data<AppState>,
    auth: SessionAuth,
) -> Result<web::Json<ConsentsView>, ApiError> {
    let mut conn = state.pool.get().await?;
    Ok(web::Json(
        consents_view(&mut conn, &state, auth.user_id).await?,
    ))
}

/// The consent choice, both parts at once.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "analytics": true, "marketing": false }))]
pub struct UpdateConsentsRequest {
    pub analytics: bool,
    pub marketing: bool,
}

/// Grant or withdraw consent; withdrawing is as easy as granting and applies from the next request.
#[utoipa::path(
    tag = "account",
    operation_id = "updateConsents",
    request_body = UpdateConsentsRequest,
    security(("bearer_jwt" = [])),
    responses(
        (status = 200, description = "Recorded", body = ConsentsView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot change consents", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/me/consents")]
pub async fn update_consents(
    state: web::Data<AppState>,
    auth: SessionAuth,
    client: ClientInfo,
    body: web::Json<UpdateConsentsRequest>,
) -> Result<web::Json<ConsentsView>, ApiError> {
    let body = body.into_inner();
    let mut conn = state.pool.get().await?;
    let view = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let (state, client) = (&state, &client);
            let version = &state.config.auth.privacy_policy_version;
            consents::record(
                conn,
                auth.user_id,
                body.analytics,
                body.marketing,
                version,
                client.ip.as_deref(),
            )
            .await?;
            activity::record(
                conn,
                auth.user_id,
                ActivityKind::ConsentChanged,
                client,
                serde_json::json!({ "analytics": body.analytics, "marketing": body.marketing }),
            )
            .await?;
            consents_view(conn, state, auth.user_id).await
        })
        .await?;
    Ok(web::Json(view))
}

/// The privacy policy in force.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "version": "2026-11-01",
    "updated_at": "2026-11-01T00:00:00Z",
    "url": "https://gptimage2.dev/legal/privacy"
}))]
pub struct PrivacyPolicy {
    #[schema(example = "2026-11-01")]
    pub version: String,
    #[schema(example = "2026-11-01T00:00:00Z")]
    pub updated_at: String,
    #[schema(example = "https://gptimage2.dev/legal/privacy")]
    pub url: String,
}

/// The current privacy-policy version; consents record the version they were given under.
#[utoipa::path(tag = "legal", operation_id = "getPrivacyPolicy", responses((status = 200, description = "The policy in force", body = PrivacyPolicy)))]
#[get("/v1/legal/privacy-policy")]
pub async fn privacy_policy(state: web::Data<AppState>) -> web::Json<PrivacyPolicy> {
    let auth = &state.config.auth;
    web::Json(PrivacyPolicy {
        version: auth.privacy_policy_version.clone(),
        updated_at: auth.privacy_policy_updated_at.clone(),
        url: auth.privacy_policy_url.clone(),
    })
}
