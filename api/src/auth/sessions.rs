//! Sessions and their refresh tokens: created at sign-in, rotated on every refresh, and
//! revoked whole when a rotated token is presented again (it was stolen, or replayed).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{activity, client::ClientInfo, tokens};
use crate::{
    db::schema::{refresh_tokens, sessions, users},
    error::ApiError,
    state::AppState,
    wire_enum,
};

wire_enum! {
    /// How the client keeps its refresh token.
    #[derive(Default)]
    #[schema(example = "web")]
    pub enum ClientKind {
        /// Browser SPA: the refresh token lives in an HttpOnly cookie.
        #[default]
        Web = "web",
        /// Mobile app: the refresh token is returned in the body.
        Mobile = "mobile",
    }
}

wire_enum! {
    /// How a session was signed in.
    #[schema(example = "password")]
    pub enum AuthMethod {
        Password = "password",
        Google = "google",
        Github = "github",
    }
}

/// What a sign-in or refresh hands out.
pub struct Issued {
    pub session_id: Uuid,
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
    pub client: ClientKind,
}

async fn insert_refresh_token(
    conn: &mut AsyncPgConnection,
    session_id: Uuid,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
) -> QueryResult<String> {
    let token = tokens::random_token("");
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::id.eq(Uuid::now_v7()),
            refresh_tokens::session_id.eq(session_id),
            refresh_tokens::user_id.eq(user_id),
            refresh_tokens::token_hash.eq(tokens::hash_token(&token)),
            refresh_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .await?;
    Ok(token)
}

/// Starts a session for `user_id`; call inside the transaction that signs the user in.
pub async fn start(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user_id: Uuid,
    client: ClientKind,
    auth_method: &str,
    info: &ClientInfo,
) -> Result<Issued, ApiError> {
    let session_id = Uuid::now_v7();
    let expires_at = Utc::now() + state.config.auth.refresh_token_ttl;
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(session_id),
            sessions::user_id.eq(user_id),
            sessions::client.eq(client.as_str()),
            sessions::auth_method.eq(auth_method),
            sessions::ip.eq(&info.ip),
            sessions::user_agent.eq(&info.user_agent),
            sessions::last_ip.eq(&info.ip),
            sessions::last_user_agent.eq(&info.user_agent),
            sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .await?;
    let refresh_token = insert_refresh_token(conn, session_id, user_id, expires_at).await?;
    let (access_token, expires_in) =
        state
            .jwt
            .issue(user_id, session_id, state.config.auth.access_token_ttl)?;
    Ok(Issued {
        session_id,
        access_token,
        expires_in,
        refresh_token,
        refresh_expires_at: expires_at,
        client,
    })
}

#[derive(Queryable)]
struct Presented {
    token_id: Uuid,
    rotated_at: Option<DateTime<Utc>>,
    token_expires_at: DateTime<Utc>,
    session_id: Uuid,
    user_id: Uuid,
    client: String,
    session_expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    disabled_at: Option<DateTime<Utc>>,
}

fn invalid() -> ApiError {
    ApiError::unauthorized(
        "invalid_refresh_token",
        "The refresh token is invalid or expired; sign in again.",
    )
}

/// Exchanges a refresh token for a new access token and a new refresh token. A token that
/// was already rotated revokes its whole session.
pub async fn rotate(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    presented: &str,
    info: &ClientInfo,
) -> Result<(Uuid, Issued), ApiError> {
    let hash = tokens::hash_token(presented);
    let outcome: Result<(Uuid, Issued), (Uuid, ApiError)> = conn
        .transaction::<_, ApiError, _>(async |conn| {
                let found: Option<Presented> = refresh_tokens::table
                    .inner_join(sessions::table.inner_join(users::table))
                    .filter(refresh_tokens::token_hash.eq(&hash))
                    .select((
                        refresh_tokens::id,
                        refresh_tokens::rotated_at,
                        refresh_tokens::expires_at,
                        sessions::id,
                        sessions::user_id,
                        sessions::client,
                        sessions::expires_at,
                        sessions::revoked_at,
                        users::disabled_at,
                    ))
                    // Serialises concurrent refreshes with the same token.
                    .for_update()
                    .first(conn)
                    .await
                    .optional()?;
                let Some(t) = found else { return Err(invalid()) };
                if t.rotated_at.is_some() {
                    let revoked = diesel::update(sessions::table.find(t.session_id).filter(sessions::revoked_at.is_null()))
                        .set((sessions::revoked_at.eq(diesel::dsl::now), sessions::revoked_reason.eq("refresh_token_reuse")))
                        .execute(conn)
                        .await?;
                    if revoked > 0 {
                        activity::record(
                            conn,
                            t.user_id,
                            activity::ActivityKind::RefreshTokenReused,
                            info,
                            serde_json::json!({ "session_id": t.session_id }),
                        )
                        .await?;
                    }
                    // Committed on purpose: the revocation must stick although the call fails.
                    return Ok(Err((t.user_id, ApiError::unauthorized(
                        "refresh_token_reused",
                        "This refresh token was already used; the session has been ended for safety. Sign in again.",
                    ))));
                }
                let now = Utc::now();
                if t.revoked_at.is_some() || t.disabled_at.is_some() || t.session_expires_at <= now || t.token_expires_at <= now {
                    return Err(invalid());
                }
                diesel::update(refresh_tokens::table.find(t.token_id))
                    .set(refresh_tokens::rotated_at.eq(diesel::dsl::now))
                    .execute(conn)
                    .await?;
                diesel::update(sessions::table.find(t.session_id))
                    .set((
                        sessions::last_used_at.eq(diesel::dsl::now),
                        sessions::last_ip.eq(&info.ip),
                        sessions::last_user_agent.eq(&info.user_agent),
                    ))
                    .execute(conn)
                    .await?;
                let refresh_token = insert_refresh_token(conn, t.session_id, t.user_id, t.session_expires_at).await?;
                let (access_token, expires_in) = state.jwt.issue(t.user_id, t.session_id, state.config.auth.access_token_ttl)?;
                let client = if t.client == "mobile" { ClientKind::Mobile } else { ClientKind::Web };
                Ok(Ok((
                    t.user_id,
                    Issued {
                        session_id: t.session_id,
                        access_token,
                        expires_in,
                        refresh_token,
                        refresh_expires_at: t.session_expires_at,
                        client,
                    },
                )))
        })
        .await?;
    // A refresh is not signed in, so no write guard: forget the ended session before answering.
    outcome.map_err(|(user_id, err)| {
        state.read_cache.invalidate(user_id);
        err
    })
}

/// Whether session `session_id` of `user_id` is still live (not revoked, not expired): for a
/// request that must not act on a session ended while it waited for a lock.
pub async fn is_live(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    session_id: Uuid,
) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        sessions::table
            .filter(sessions::id.eq(session_id))
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::expires_at.gt(diesel::dsl::now)),
    ))
    .get_result(conn)
    .await
}

/// The answer to a request whose session has ended.
pub fn ended() -> ApiError {
    ApiError::unauthorized("session_revoked", "This session has ended; sign in again.")
}

/// Ends one session of `user_id`; false when there is no such live session.
pub async fn revoke(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    session_id: Uuid,
    reason: &str,
) -> QueryResult<bool> {
    let n = diesel::update(
        sessions::table
            .filter(sessions::id.eq(session_id))
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null()),
    )
    .set((
        sessions::revoked_at.eq(diesel::dsl::now),
        sessions::revoked_reason.eq(reason),
    ))
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// Ends every session of `user_id`, except `keep` when given.
pub async fn revoke_all(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    reason: &str,
    keep: Option<Uuid>,
) -> QueryResult<usize> {
    let keep = keep.unwrap_or(Uuid::nil());
    diesel::update(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::id.ne(keep)),
    )
    .set((
        sessions::revoked_at.eq(diesel::dsl::now),
        sessions::revoked_reason.eq(reason),
    ))
    .execute(conn)
    .await
}
