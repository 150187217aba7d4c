//! `/v1/auth`: registration, email verification, password sign-in, refresh, sign-out and
//! password reset. Browsers keep the refresh token in a cookie; mobile apps in the body.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, post, web};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    accounts::{
        User, UserView, consents,
        ownership::{self, Proof},
        users,
    },
    analytics,
    auth::{
        ClientInfo, SessionAuth, activity, cookie, lockout, new_device, password, rate_limit,
        sessions::{self, ClientKind, Issued},
        tokens,
    },
    db::schema::{email_tokens, users as users_t},
    error::{ApiError, FieldError, Problem},
    mail,
    state::AppState,
    wire_enum,
};

wire_enum! {
    /// How to send the access token: always `Authorization: Bearer <access_token>`.
    pub enum TokenType {
        Bearer = "Bearer",
    }
}

/// Tokens handed out at sign-in and refresh.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "user": {
        "id": "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
        "email": "ada@example.com",
        "email_verified": false,
        "name": "Ada Lovelace",
        "avatar_url": null,
        "has_password": true,
        "low_balance_emails": true,
        "created_at": "2026-11-29T10:00:00Z",
        "credits": { "balance": 0, "available": 0 },
        "plan": null
    },
    "access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIwMTkzYTFkMiJ9.c2lnbmF0dXJl",
    "token_type": "Bearer",
    "expires_in": 900,
    "refresh_token": "Q2hhbmdlIG1lOiBhIG1vYmlsZSByZWZyZXNoIHRva2Vu"
}))]
pub struct AuthResponse {
    pub user: UserView,
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    pub token_type: TokenType,
    /// Seconds until `access_token` expires.
    #[schema(example = 900)]
    pub expires_in: i64,
    /// Mobile clients only; browsers get it as the `gi2_refresh` HttpOnly cookie instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

fn respond(status: StatusCode, state: &AppState, user: UserView, issued: Issued) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    res.insert_header(("Cache-Control", "no-store"));
    let refresh_token = match issued.client {
        ClientKind::Web => {
            res.cookie(cookie::issue(
                &state.config,
                &issued.refresh_token,
                issued.refresh_expires_at - Utc::now(),
            ));
            None
        }
        ClientKind::Mobile => Some(issued.refresh_token),
    };
    res.json(AuthResponse {
        user,
        access_token: issued.access_token,
        token_type: TokenType::Bearer,
        expires_in: issued.expires_in,
        refresh_token,
    })
}

/// Per-IP limit shared by the sign-in routes.
async fn limit_ip(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    route: &str,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    rate_limit::hit(
        conn,
        rate_limit::Key::new(&format!("{route}_per_ip"), client.ip_key()),
        state.config.auth.rate_per_ip_per_minute,
        state.config.auth.rate_window,
    )
    .await
}

fn check(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Creates a single-use mailed token; only its hash is kept.
async fn new_email_token(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    purpose: &str,
    ttl: Duration,
) -> QueryResult<String> {
    let token = tokens::random_token("");
    diesel::insert_into(email_tokens::table)
        .values((
            email_tokens::id.eq(Uuid::now_v7()),
            email_tokens::user_id.eq(user_id),
            email_tokens::purpose.eq(purpose),
            email_tokens::token_hash.eq(tokens::hash_token(&token)),
            email_tokens::expires_at.eq(Utc::now() + ttl),
        ))
        .execute(conn)
        .await?;
    Ok(token)
}

/// Marks a mailed token used and returns its user; `None` when unknown, used or expired.
async fn consume_email_token(
    conn: &mut AsyncPgConnection,
    token: &str,
    purpose: &str,
) -> QueryResult<Option<Uuid>> {
    diesel::update(
        email_tokens::table
            .filter(email_tokens::token_hash.eq(tokens::hash_token(token)))
            .filter(email_tokens::purpose.eq(purpose))
            .filter(email_tokens::used_at.is_null())
            .filter(email_tokens::expires_at.gt(diesel::dsl::now)),
    )
    .set(email_tokens::used_at.eq(diesel::dsl::now))
    .returning(email_tokens::user_id)
    .get_result(conn)
    .await
    .optional()
}

fn spa_link(state: &AppState, path: &str, token: &str) -> String {
    let mut url = state.config.auth.spa_url.clone();
    url.set_path(path);
    url.query_pairs_mut().clear().append_pair("token", token);
    url.to_string()
}

async fn queue_verification(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user: &User,
) -> Result<(), ApiError> {
    let token = new_email_token(
        conn,
        user.id,
        "verify_email",
        state.config.auth.verify_token_ttl,
    )
    .await?;
    mail::queue(
        conn,
        &user.email,
        "verify_email",
        serde_json::json!({ "name": user.name, "link": spa_link(state, "/verify-email", &token),
                            "hours": state.config.auth.verify_token_ttl.as_secs() / 3600 }),
    )
    .await?;
    Ok(())
}

/// A new account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "email": "ada@example.com",
    "password": "correct horse battery staple",
    "name": "Ada Lovelace",
    "client": "web",
    "accept_terms": true
}))]
pub struct RegisterRequest {
    #[schema(format = "email", max_length = 254, example = "ada@example.com")]
    pub email: String,
    /// 10–128 characters, not a commonly used password, not containing the email or name.
    #[schema(
        min_length = 10,
        max_length = 128,
        example = "correct horse battery staple"
    )]
    pub password: String,
    #[schema(min_length = 1, max_length = 100, example = "Ada Lovelace")]
    pub name: String,
    /// `mobile` returns the refresh token in the body instead of a cookie.
    #[serde(default)]
    pub client: ClientKind,
    /// Signing up accepts the current terms and privacy policy; `false` is refused.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub accept_terms: bool,
}

fn yes() -> bool {
    true
}

/// Create an account with email and password.
///
/// Signs the new user in and mails a verification link. The current terms/privacy-policy
/// version is recorded as accepted; analytics and marketing consent start off.
#[utoipa::path(
    tag = "auth",
    operation_id = "register",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created and signed in; browsers also get the refresh cookie", body = AuthResponse),
        (status = 409, description = "`email_taken`: an account with this email exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/register")]
pub async fn register(
    state: web::Data<AppState>,
    client: ClientInfo,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors: Vec<FieldError> = Vec::new();
    errors.extend(users::validate_email("email", &body.email));
    errors.extend(users::validate_name("name", &body.name));
    errors.extend(
        password::problems(&body.password, &body.email, &body.name)
            .into_iter()
            .map(|m| FieldError::new("password", m)),
    );
    if !body.accept_terms {
        errors.push(FieldError::new(
            "accept_terms",
            "the terms must be accepted to create an account",
        ));
    }
    check(errors)?;
    let mut conn = state.pool.get().await?;
    limit_ip(&mut conn, &state, "register", &client).await?;
    let hash = password::hash(&state.config.auth, &body.password).await?;
    let policy = state.config.auth.privacy_policy_version.clone();
    let (user, issued) = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let state = &state;
            let client = &client;
            let id = Uuid::now_v7();
            let inserted = diesel::insert_into(users_t::table)
                .values((
                    users_t::id.eq(id),
                    users_t::email.eq(body.email.trim()),
                    users_t::email_normalized.eq(users::normalize_email(&body.email)),
                    users_t::name.eq(body.name.trim()),
                    users_t::password_hash.eq(&hash),
                    users_t::terms_version.eq(&policy),
                    users_t::terms_accepted_at.eq(diesel::dsl::now),
                ))
                .on_conflict(users_t::email_normalized)
                .do_nothing()
                .execute(conn)
                .await?;
            if inserted == 0 {
                return Err(ApiError::conflict(
                    "email_taken",
                    "An account with this email already exists; sign in or reset the password.",
                ));
            }
            let user = users::find(conn, id).await?;
            consents::record(conn, id, false, false, &policy, client.ip.as_deref()).await?;
            activity::record(
                conn,
                id,
                activity::ActivityKind::SignedUp,
                client,
                serde_json::json!({}),
            )
            .await?;
            queue_verification(conn, state, &user).await?;
            let issued = sessions::start(conn, state, id, body.client, "password", client).await?;
            Ok((user, issued))
        })
        .await?;
    // Consent starts off, so this records only if registration ever carries a choice.
    analytics::track(
        &mut conn,
        &state.config.url_signing_key,
        user.id,
        analytics::event::SIGNED_UP,
        serde_json::json!({ "method": "password" }),
    )
    .await;
    let view = UserView::load(&mut conn, &user).await?;
    Ok(respond(StatusCode::CREATED, &state, view, issued))
}

/// A token from a mailed link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "token": "k3PqV9sLw2XbN7mR4tYc8uZe1aDf6gHj" }))]
pub struct TokenRequest {
    /// The token from the mailed link.
    #[schema(min_length = 1, max_length = 256)]
    pub token: String,
}

/// Confirm the email address with the token from the verification mail.
///
/// Following the link proves the mailbox. The first time, every session (the one that
/// registered included) and every API key made before it end and the webhook secret is
/// replaced, in case someone else registered the address first: sign in again afterwards.
/// This request signs no one in.
#[utoipa::path(
    tag = "auth",
    operation_id = "verifyEmail",
    request_body = TokenRequest,
    responses(
        (status = 204, description = "Email verified; earlier sessions and API keys ended"),
        (status = 400, description = "`invalid_token`: unknown, used or expired", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/verify-email")]
pub async fn verify_email(
    state: web::Data<AppState>,
    client: ClientInfo,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    limit_ip(&mut conn, &state, "verify", &client).await?;
    let token = body.into_inner().token;
    let user_id = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let client = &client;
            let user_id = consume_email_token(conn, &token, "verify_email")
                .await?
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_token",
                        "This verification link is invalid, used or expired; request a new one.",
                    )
                })?;
            let proven = ownership::prove(conn, user_id, Proof::VerificationLink, client).await?;
            if proven.newly_verified {
                activity::record(
                    conn,
                    user_id,
                    activity::ActivityKind::EmailVerified,
                    client,
                    serde_json::json!({}),
                )
                .await?;
            }
            Ok(user_id)
        })
        .await?;
    // Not signed in, so no write guard: the ended credentials are forgotten before the answer.
    state.read_cache.invalidate(user_id);
    Ok(HttpResponse::NoContent().finish())
}

/// Mail a new verification link to the signed-in user (if not yet verified).
#[utoipa::path(
    tag = "auth",
    operation_id = "resendVerification",
    security(("bearer_jwt" = [])),
    responses(
        (status = 202, description = "A new link is on its way, unless the email is already verified"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/verify-email/resend")]
pub async fn resend_verification(
    state: web::Data<AppState>,
    auth: SessionAuth,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    rate_limit::hit(
        &mut conn,
        rate_limit::Key::new("resend", &auth.user_id.to_string()),
        3,
        Duration::from_secs(600),
    )
    .await?;
    let user = users::find(&mut conn, auth.user_id).await?;
    if user.email_verified_at.is_none() {
        conn.transaction::<_, ApiError, _>(async |conn| {
            queue_verification(conn, &state, &user).await
        })
        .await?;
    }
    Ok(HttpResponse::Accepted().finish())
}

/// Email and password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "email": "ada@example.com",
    "password": "correct horse battery staple",
    "client": "mobile"
}))]
pub struct LoginRequest {
    #[schema(format = "email", max_length = 254, example = "ada@example.com")]
    pub email: String,
    #[schema(
        min_length = 1,
        max_length = 1024,
        example = "correct horse battery staple"
    )]
    pub password: String,
    /// `mobile` returns the refresh token in the body instead of a cookie.
    #[serde(default)]
    pub client: ClientKind,
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized("invalid_credentials", "The email or password is wrong.")
}

/// Sign in with email and password.
///
/// Wrong email and wrong password get the same answer. Repeated failures from one address
/// lock that address out of the account for a while (never the account itself for good:
/// a password reset lifts every lock).
#[utoipa::path(
    tag = "auth",
    operation_id = "login",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; browsers also get the refresh cookie", body = AuthResponse),
        (status = 401, description = "`invalid_credentials`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many attempts; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/login")]
pub async fn login(
    state: web::Data<AppState>,
    client: ClientInfo,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.password.is_empty() || body.password.len() > 1024 {
        return Err(ApiError::validation(
            "password",
            "must be 1–1024 characters",
        ));
    }
    let auth = &state.config.auth;
    let email = users::normalize_email(&body.email);
    let mut conn = state.pool.get().await?;
    limit_ip(&mut conn, &state, "login", &client).await?;
    // Failures are counted per (account, address), and per account across addresses with a
    // far higher bar, so a victim elsewhere can still sign in.
    let attempts = lockout::PasswordAttempts::new(&email, &client);
    attempts.check(&mut conn, auth).await?;

    let user = users::find_by_email(&mut conn, &email).await?;
    let ok = password::verify(
        auth,
        &body.password,
        user.as_ref().and_then(|u| u.password_hash.as_deref()),
    )
    .await?;
    let user = match user {
        Some(user) if ok && user.disabled_at.is_none() => user,
        other => {
            attempts.failed(&mut conn, auth).await;
            // Best effort: an account being erased may vanish between the lookup and this
            // insert, and a failed attempt must never turn into a 500.
            if let Some(user) = other.filter(|u| u.disabled_at.is_none()) {
                let recorded = activity::record(
                    &mut conn,
                    user.id,
                    activity::ActivityKind::SignInFailed,
                    &client,
                    serde_json::json!({}),
                )
                .await;
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, "recording a failed sign-in failed");
                }
            }
            return Err(invalid_credentials());
        }
    };
    attempts.succeeded(&mut conn).await?;
    let issued = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let (state, client, user_id) = (&state, &client, user.id);
            let issued =
                sessions::start(conn, state, user_id, body.client, "password", client).await?;
            new_device::notify_if_new_device(conn, &user, client, "password").await?;
            activity::record(
                conn,
                user_id,
                activity::ActivityKind::SignedIn,
                client,
                serde_json::json!({ "method": "password", "session_id": issued.session_id }),
            )
            .await?;
            Ok(issued)
        })
        .await?;
    analytics::track(
        &mut conn,
        &state.config.url_signing_key,
        user.id,
        analytics::event::SIGNED_IN,
        serde_json::json!({ "method": "password" }),
    )
    .await;
    let view = UserView::load(&mut conn, &user).await?;
    Ok(respond(StatusCode::OK, &state, view, issued))
}

/// A mobile client's refresh token.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "refresh_token": "Q2hhbmdlIG1lOiBhIG1vYmlsZSByZWZyZXNoIHRva2Vu" }))]
pub struct RefreshRequest {
    /// Mobile clients send their refresh token here; browsers send none (the cookie is used).
    #[schema(max_length = 256)]
    pub refresh_token: Option<String>,
}

/// Where the refresh token came from decides how the new one is returned.
fn presented_refresh_token(
    req: &HttpRequest,
    state: &AppState,
    body: Option<RefreshRequest>,
) -> Result<(String, bool), ApiError> {
    if let Some(token) = body.and_then(|b| b.refresh_token).filter(|t| !t.is_empty()) {
        return Ok((token, false));
    }
    let token = cookie::read(req).ok_or_else(|| {
        ApiError::unauthorized(
            "invalid_refresh_token",
            "No refresh token: send the cookie or `refresh_token`.",
        )
    })?;
    cookie::require_allowed_origin(req, &state.config)?;
    Ok((token, true))
}

/// Exchange the refresh token for a new access token (and a new refresh token).
///
/// Browsers send the `gi2_refresh` cookie (and must send an allowed `Origin`); mobile apps
/// send `{"refresh_token": …}`. Every refresh token works once: presenting a used one ends
/// the whole session.
#[utoipa::path(
    tag = "auth",
    operation_id = "refresh",
    request_body(content = Option<RefreshRequest>, description = "Mobile clients only"),
    responses(
        (status = 200, description = "New tokens; the cookie or `refresh_token` is replaced", body = AuthResponse),
        (status = 401, description = "`invalid_refresh_token` or `refresh_token_reused`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Cookie sent from a foreign or missing Origin", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/refresh")]
pub async fn refresh(
    req: HttpRequest,
    state: web::Data<AppState>,
    client: ClientInfo,
    body: Option<web::Json<RefreshRequest>>,
) -> Result<HttpResponse, ApiError> {
    let (token, from_cookie) = presented_refresh_token(&req, &state, body.map(|b| b.into_inner()))?;
    let mut conn = state.pool.get().await?;
    limit_ip(&mut conn, &state, "refresh", &client).await?;
    let result = sessions::rotate(&mut conn, &state, &token, &client).await;
    let (user_id, mut issued) = match result {
        Ok(ok) => ok,
        Err(err) => {
            // A dead cookie is cleared so the browser stops sending it.
            let mut res = actix_web::ResponseError::error_response(&err);
            if from_cookie {
                let _ = res.add_cookie(&cookie::clear(&state.config));
            }
            return Ok(res);
        }
    };
    // The token's transport decides the reply's, whatever the session started as.
    issued.client = if from_cookie {
        ClientKind::Web
    } else {
        ClientKind::Mobile
    };
    let user = users::find(&mut conn, user_id).await?;
    let view = UserView::load(&mut conn, &user).await?;
    Ok(respond(StatusCode::OK, &state, view, issued))
}

/// Sign out: end the current session.
///
/// Identifies the session by the bearer access token, the refresh cookie, or a
/// `refresh_token` in the body; clears the cookie either way.
#[utoipa::path(
    tag = "auth",
    operation_id = "logout",
    request_body(content = Option<RefreshRequest>, description = "Mobile clients may send their refresh token"),
    security((), ("bearer_jwt" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Nothing identifies a session", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Cookie sent from a foreign or missing Origin", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/logout")]
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    client: ClientInfo,
    bearer: Option<SessionAuth>,
    body: Option<web::Json<RefreshRequest>>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    let target: Option<(Uuid, Uuid)> = match bearer {
        Some(auth) => Some((auth.user_id, auth.session_id)),
        None => {
            let (token, _) = presented_refresh_token(&req, &state, body.map(|b| b.into_inner()))?;
            crate::db::schema::refresh_tokens::table
                .filter(
                    crate::db::schema::refresh_tokens::token_hash.eq(tokens::hash_token(&token)),
                )
                .select((
                    crate::db::schema::refresh_tokens::user_id,
                    crate::db::schema::refresh_tokens::session_id,
                ))
                .first(&mut conn)
                .await
                .optional()?
        }
    };
    if let Some((user_id, session_id)) = target
        && sessions::revoke(&mut conn, user_id, session_id, "signed_out").await?
    {
        // Signed out by cookie there is no write guard: forget the session before answering.
        state.read_cache.invalidate(user_id);
        activity::record(
            &mut conn,
            user_id,
            activity::ActivityKind::SignedOut,
            &client,
            serde_json::json!({ "session_id": session_id }),
        )
        .await?;
    }
    let mut res = HttpResponse::NoContent();
    res.cookie(cookie::clear(&state.config));
    Ok(res.finish())
}

/// The account to send a reset link to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "email": "ada@example.com" }))]
pub struct ForgotPasswordRequest {
    #[schema(format = "email", max_length = 254, example = "ada@example.com")]
    pub email: String,
}

/// Mail a password-reset link.
///
/// Always 202, whether or not the email has an account, so addresses cannot be probed.
#[utoipa::path(
    tag = "auth",
    operation_id = "forgotPassword",
    request_body = ForgotPasswordRequest,
    responses(
        (status = 202, description = "If the email has an account, a reset link is on its way"),
        (status = 422, description = "`validation_failed`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/password/forgot")]
pub async fn forgot_password(
    state: web::Data<AppState>,
    client: ClientInfo,
    body: web::Json<ForgotPasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    let email = body.into_inner().email;
    check(users::validate_email("email", &email).into_iter().collect())?;
    let mut conn = state.pool.get().await?;
    limit_ip(&mut conn, &state, "forgot", &client).await?;
    let user = users::find_by_email(&mut conn, &email).await?;
    // A per-address cap keeps anyone from flooding a victim's inbox; silently, like the rest.
    let within_cap = rate_limit::hit(
        &mut conn,
        rate_limit::Key::new("forgot", &users::normalize_email(&email)),
        3,
        Duration::from_secs(3600),
    )
    .await
    .is_ok();
    if let Some(user) = user.filter(|u| u.disabled_at.is_none())
        && within_cap
    {
        conn.transaction::<_, ApiError, _>(async |conn| {
            let (state, client) = (&state, &client);
                let token = new_email_token(conn, user.id, "reset_password", state.config.auth.reset_token_ttl).await?;
                mail::queue(
                    conn,
                    &user.email,
                    "reset_password",
                    serde_json::json!({ "name": user.name, "link": spa_link(state, "/reset-password", &token),
                                        "minutes": state.config.auth.reset_token_ttl.as_secs() / 60, "ip": client.ip_key() }),
                )
                .await?;
                activity::record(conn, user.id, activity::ActivityKind::PasswordResetRequested, client, serde_json::json!({})).await?;
                Ok(())
        })
        .await?;
    }
    Ok(HttpResponse::Accepted().finish())
}

/// The mailed reset token and the new password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "token": "k3PqV9sLw2XbN7mR4tYc8uZe1aDf6gHj",
    "password": "a new correct horse battery"
}))]
pub struct ResetPasswordRequest {
    #[schema(min_length = 1, max_length = 256)]
    pub token: String,
    #[schema(
        min_length = 10,
        max_length = 128,
        example = "a new correct horse battery"
    )]
    pub password: String,
}

/// Set a new password with the token from the reset mail.
///
/// The mail proves the address, so this is how an account is recovered: every session ends,
/// every API key is revoked and the webhook secret is replaced (whoever only knew the old
/// password loses what it opened), and the address counts as verified. Accounts without a
/// password (Google/GitHub sign-in) set their first one this way.
#[utoipa::path(
    tag = "auth",
    operation_id = "resetPassword",
    request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "Password set; every session and API key ended"),
        (status = 400, description = "`invalid_token`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: the password breaks a rule", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/password/reset")]
pub async fn reset_password(
    state: web::Data<AppState>,
    client: ClientInfo,
    body: web::Json<ResetPasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut conn = state.pool.get().await?;
    limit_ip(&mut conn, &state, "reset", &client).await?;
    let invalid = || {
        ApiError::bad_request(
            "invalid_token",
            "This reset link is invalid, used or expired; request a new one.",
        )
    };
    // Look the token up first (without using it) to check the password against the account.
    let user_id: Uuid = email_tokens::table
        .filter(email_tokens::token_hash.eq(tokens::hash_token(&body.token)))
        .filter(email_tokens::purpose.eq("reset_password"))
        .filter(email_tokens::used_at.is_null())
        .filter(email_tokens::expires_at.gt(diesel::dsl::now))
        .select(email_tokens::user_id)
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(invalid)?;
    let user = users::find(&mut conn, user_id).await?;
    check(
        password::problems(&body.password, &user.email, &user.name)
            .into_iter()
            .map(|m| FieldError::new("password", m))
            .collect(),
    )?;
    let hash = password::hash(&state.config.auth, &body.password).await?;
    conn.transaction::<_, ApiError, _>(async |conn| {
        let client = &client;
        consume_email_token(conn, &body.token, "reset_password")
            .await?
            .filter(|id| *id == user.id)
            .ok_or_else(invalid)?;
        diesel::update(users_t::table.find(user.id))
            .set((
                users_t::password_hash.eq(&hash),
                users_t::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        // Receiving the mail proves the address: what anyone made before ends.
        ownership::prove(conn, user.id, Proof::PasswordReset, client).await?;
        lockout::lift(conn, &user.email).await?;
        activity::record(
            conn,
            user.id,
            activity::ActivityKind::PasswordReset,
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
    // Not signed in, so no write guard: the ended sessions are forgotten before the answer.
    state.read_cache.invalidate(user.id);
    Ok(HttpResponse::NoContent().finish())
}
