//! Authentication of a request: `Authorization: Bearer <access JWT | API key>`.
//!
//! A JWT is only as good as its session: every request checks the session row by primary
//! key, so a revoked session, a reset password or a disabled account stops working at once.
//! The check is kept in the read cache, which forgets it when any of those rows changes.

use actix_web::{
    FromRequest, HttpMessage, HttpRequest,
    dev::Payload,
    http::{Method, header},
    web,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures::future::LocalBoxFuture;
use uuid::Uuid;

use super::{ClientInfo, tokens};
use crate::{
    db::schema::{api_keys, sessions, users},
    error::ApiError,
    read_cache::{ApiKeyCheck, SessionCheck},
    state::AppState,
};

/// API keys start with this, so a bearer value is recognisable at a glance (and in leaks).
pub const API_KEY_PREFIX: &str = "gi2_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A signed-in session (SPA or mobile app).
    Session(Uuid),
    /// An integrator's API key.
    ApiKey(Uuid),
}

/// Any authenticated caller: a session's access token or an API key. For read and
/// generation routes.
#[derive(Debug, Clone, Copy)]
pub struct Auth {
    pub user_id: Uuid,
    pub credential: Credential,
}

/// A signed-in session only: account-security routes (password, keys, sessions, deletion)
/// refuse API keys with 403.
#[derive(Debug, Clone, Copy)]
pub struct SessionAuth {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

pub(super) fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized(
            "unauthorized",
            "Send `Authorization: Bearer <access token or API key>`.",
        )
    })?;
    let value = value.to_str().map_err(|_| {
        ApiError::unauthorized("invalid_token", "The Authorization header is not valid.")
    })?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim().to_owned())
        }
        _ => Err(ApiError::unauthorized(
            "invalid_token",
            "Use the Bearer scheme: `Authorization: Bearer <token>`.",
        )),
    }
}

pub(super) async fn authenticate(
    state: &AppState,
    token: String,
    client: ClientInfo,
) -> Result<Auth, ApiError> {
    let cache = &state.read_cache;
    if token.starts_with(API_KEY_PREFIX) {
        let hash = tokens::hash_token(&token);
        let valid = |key: &ApiKeyCheck| key.expires_at.is_none_or(|at| at > chrono::Utc::now());
        if let Some(key) = cache.api_key(&hash).filter(valid) {
            return Ok(Auth {
                user_id: key.user_id,
                credential: Credential::ApiKey(key.key_id),
            });
        }
        let stamp = cache.stamp();
        let mut conn = state.pool.get().await?;
        let key: Option<(Uuid, Uuid, Option<chrono::DateTime<chrono::Utc>>)> = api_keys::table
            .inner_join(users::table)
            .filter(api_keys::key_hash.eq(&hash))
            .filter(api_keys::revoked_at.is_null())
            .filter(
                api_keys::expires_at
                    .is_null()
                    .or(api_keys::expires_at.gt(diesel::dsl::now)),
            )
            .filter(users::disabled_at.is_null())
            .select((api_keys::id, api_keys::user_id, api_keys::expires_at))
            .first(&mut conn)
            .await
            .optional()?;
        let (key_id, user_id, expires_at) = key.ok_or_else(|| {
            ApiError::unauthorized(
                "invalid_api_key",
                "The API key is unknown, revoked or expired.",
            )
        })?;
        // Cheap: at most one write a minute per key (and none while the check is cached).
        diesel::sql_query(
            "UPDATE api_keys SET last_used_at = now() WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        )
        .bind::<diesel::sql_types::Uuid, _>(key_id)
        .execute(&mut conn)
        .await?;
        cache.keep_api_key(
            stamp,
            hash,
            ApiKeyCheck {
                key_id,
                user_id,
                expires_at,
            },
        );
        return Ok(Auth {
            user_id,
            credential: Credential::ApiKey(key_id),
        });
    }
    let claims = state.jwt.verify(&token).ok_or_else(|| {
        ApiError::unauthorized(
            "invalid_token",
            "The access token is invalid or expired; refresh it.",
        )
    })?;
    let auth = Auth {
        user_id: claims.sub,
        credential: Credential::Session(claims.sid),
    };
    if cache
        .session(claims.sub, claims.sid)
        .is_some_and(|s| s.expires_at > chrono::Utc::now())
    {
        return Ok(auth);
    }
    let stamp = cache.stamp();
    let mut conn = state.pool.get().await?;
    let session: Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
        sessions::table
            .inner_join(users::table)
            .filter(sessions::id.eq(claims.sid))
            .filter(sessions::user_id.eq(claims.sub))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::expires_at.gt(diesel::dsl::now))
            .filter(users::disabled_at.is_null())
            .select((sessions::last_used_at, sessions::expires_at))
            .first(&mut conn)
            .await
            .optional()?;
    let (last_used, expires_at) = session.ok_or_else(|| {
        ApiError::unauthorized("session_revoked", "This session has ended; sign in again.")
    })?;
    // "Last used" for the session list, written at most once a minute per session (and
    // none while the check is cached).
    if chrono::Utc::now() - last_used > chrono::Duration::minutes(1) {
        diesel::update(sessions::table.find(claims.sid))
            .set((
                sessions::last_used_at.eq(diesel::dsl::now),
                sessions::last_ip.eq(&client.ip),
                sessions::last_user_agent.eq(&client.user_agent),
            ))
            .execute(&mut conn)
            .await?;
    }
    cache.keep_session(stamp, claims.sub, claims.sid, SessionCheck { expires_at });
    Ok(auth)
}

/// Who `req` authenticates as, checked now: the `Auth` extractor's check (read cache
/// included) without its write mark, for middleware that must know the caller before the
/// route runs. `ApiError::Unauthorized` when no valid credential is presented.
pub fn caller(req: &HttpRequest) -> LocalBoxFuture<'static, Result<Auth, ApiError>> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let token = bearer(req);
    let client = ClientInfo::of(req);
    Box::pin(async move {
        let state =
            state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("app state missing")))?;
        authenticate(&state, token?, client).await
    })
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let auth = caller(req);
        let req = req.clone();
        Box::pin(async move {
            let auth = auth.await?;
            let state =
                state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("app state missing")))?;
            // A request that may change something holds this until it is dropped with its
            // request, after the handler committed: the user's cached reads are neither
            // served nor kept meanwhile, then forgotten (`read_cache.rs`).
            if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
                req.extensions_mut()
                    .insert(state.read_cache.writing(auth.user_id));
            }
            Ok(auth)
        })
    }
}

impl FromRequest for SessionAuth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let auth = Auth::from_request(req, payload);
        Box::pin(async move {
            match auth.await? {
                Auth {
                    user_id,
                    credential: Credential::Session(session_id),
                } => Ok(Self {
                    user_id,
                    session_id,
                }),
                Auth {
                    credential: Credential::ApiKey(_),
                    ..
                } => Err(ApiError::Forbidden(
                    "API keys cannot manage account security; sign in to do this.".into(),
                )),
            }
        })
    }
}
