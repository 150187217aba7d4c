//! `/v1/auth/oauth/{provider}`: sign in with Google or GitHub.
//!
//! `authorize` sends the browser to the provider with a single-use `state` and a PKCE
//! challenge; the provider sends it back to `callback`, which redeems the code, finds or
//! creates the account, and lands the browser on the SPA with the refresh cookie set. The
//! SPA then calls `POST /v1/auth/refresh` for an access token. Once the SPA's address is
//! known (a valid state), every failure is a redirect back to it with `?error=<code>`:
//! the browser is mid-navigation and a JSON error page would strand the user.
//!
//! `state` alone proves only that *some* browser started the sign-in. `authorize` also sets
//! the `gi2_oauth_state` cookie (see [`cookie::oauth_state`]) and stores its nonce's hash
//! with the state; a callback from a browser without that cookie (a callback URL the
//! attacker completed with their own provider account and handed to a victim: login CSRF)
//! signs nobody in.

use actix_web::{HttpRequest, HttpResponse, ResponseError, get, http::header, web};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Deserialize;
use url::Url;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::{
    accounts::{
        User, consents,
        ownership::{self, Proof},
        users,
    },
    analytics,
    auth::{
        ClientInfo, activity, cookie, new_device,
        oauth::{self, Provider, ProviderUser},
        rate_limit,
        sessions::{self, ClientKind, Issued},
        tokens,
    },
    config::{Config, OAuthProviderConfig},
    db::schema::{identities, oauth_states, users as users_t},
    error::{ApiError, Problem},
    http::request_id,
    state::AppState,
};

const MAX_REDIRECT_LEN: usize = 2048;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeQuery {
    /// Where the browser lands afterwards: an absolute URL on the web app's origin. On
    /// success `signed_in=1` is added to its query; on failure `error=<code>`.
    #[param(
        required = true,
        max_length = 2048,
        example = "https://app.gptimage2.dev/after-sign-in"
    )]
    pub redirect_to: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code; absent when the provider sends `error` instead.
    #[param(max_length = 2048)]
    pub code: Option<String>,
    /// The value `authorize` sent to the provider.
    #[param(required = true, max_length = 256)]
    pub state: Option<String>,
    /// Set by the provider instead of `code`, e.g. `access_denied` when the user declined.
    pub error: Option<String>,
}

/// A 404 problem saying which provider is off, so a misconfigured deployment is obvious.
fn not_configured(provider: Provider) -> HttpResponse {
    let code = "provider_not_configured";
    HttpResponse::NotFound()
        .content_type("application/problem+json")
        .json(Problem {
            type_: format!("https://docs.gptimage2.dev/problems/{code}"),
            title: "Not found".into(),
            status: 404,
            detail: format!(
                "Sign-in with {} is not set up on this server.",
                provider.label()
            ),
            code: code.into(),
            request_id: request_id::current(),
            errors: Vec::new(),
        })
}

/// Why the path's provider cannot be used.
enum Unavailable {
    Unknown,
    NotConfigured(Provider),
}

impl Unavailable {
    fn response(self) -> HttpResponse {
        match self {
            Self::Unknown => ApiError::NotFound.error_response(),
            Self::NotConfigured(provider) => not_configured(provider),
        }
    }
}

/// Which provider the path names, and its configuration.
fn provider_of<'a>(
    config: &'a Config,
    raw: &str,
) -> Result<(Provider, &'a OAuthProviderConfig), Unavailable> {
    let provider = Provider::parse(raw).ok_or(Unavailable::Unknown)?;
    let settings = provider
        .config(&config.oauth)
        .ok_or(Unavailable::NotConfigured(provider))?;
    Ok((provider, settings))
}

/// Only the SPA may receive the browser (and learn that it signed in): an open redirect
/// here would hand sessions to any site.
fn allowed_redirect(config: &Config, raw: Option<&str>) -> Result<Url, ApiError> {
    let invalid = |message: &str| ApiError::validation("redirect_to", message);
    let raw = raw
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| invalid("is required"))?;
    if raw.len() > MAX_REDIRECT_LEN {
        return Err(invalid("must be at most 2048 characters"));
    }
    let url = Url::parse(raw).map_err(|_| invalid("must be an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() {
        return Err(invalid("must be an http(s) URL without credentials"));
    }
    let origin = url.origin();
    let allowed = config.auth.spa_url.origin() == origin
        || config
            .cors_origins
            .iter()
            .filter_map(|o| Url::parse(o).ok())
            .any(|o| o.origin() == origin);
    if !allowed {
        return Err(invalid("must be on the web app's origin"));
    }
    Ok(url)
}

/// `url` with one query parameter added.
fn with_param(mut url: Url, key: &str, value: &str) -> String {
    url.query_pairs_mut().append_pair(key, value);
    url.into()
}

fn found(location: &str) -> actix_web::HttpResponseBuilder {
    let mut res = HttpResponse::Found();
    res.insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    res
}

/// Start signing in with Google or GitHub.
///
/// Redirects the browser to the provider. After the user agrees, the provider sends the
/// browser to `callback`, which lands it on `redirect_to`.
#[utoipa::path(
    tag = "oauth",
    operation_id = "oauthAuthorize",
    params(
        ("provider" = Provider, Path, description = "`google` or `github`"),
        AuthorizeQuery,
    ),
    responses(
        (status = 302, description = "To the provider's sign-in page, with `state` and a PKCE `code_challenge` (S256)",
            headers(
                ("Location" = String, description = "The provider's authorization URL"),
                ("Set-Cookie" = String, description = "The `gi2_oauth_state` HttpOnly, SameSite=Lax cookie (Path: the provider's callback, 10 minutes) binding the sign-in to this browser"),
            )),
        (status = 404, description = "`provider_not_configured`, or `not_found` for an unknown provider", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `redirect_to` is missing or not on the web app's origin", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/auth/oauth/{provider}/authorize")]
pub async fn authorize(
    state: web::Data<AppState>,
    client: ClientInfo,
    provider: web::Path<String>,
    query: web::Query<AuthorizeQuery>,
) -> Result<HttpResponse, ApiError> {
    let (provider, settings) = match provider_of(&state.config, &provider) {
        Ok(found) => found,
        Err(unavailable) => return Ok(unavailable.response()),
    };
    let redirect_to = allowed_redirect(&state.config, query.redirect_to.as_deref())?;
    let mut conn = state.pool.get().await?;
    rate_limit::hit(
        &mut conn,
        rate_limit::Key::new("oauth_per_ip", client.ip_key()),
        state.config.auth.rate_per_ip_per_minute,
        state.config.auth.rate_window,
    )
    .await?;
    let oauth_state = tokens::random_token("");
    let browser_nonce = tokens::random_token("");
    let verifier = oauth::pkce_verifier();
    // Abandoned sign-ins are swept here: the table only ever holds ten minutes of them.
    diesel::delete(oauth_states::table.filter(oauth_states::expires_at.lt(diesel::dsl::now)))
        .execute(&mut conn)
        .await?;
    diesel::insert_into(oauth_states::table)
        .values((
            oauth_states::state_hash.eq(tokens::hash_token(&oauth_state)),
            oauth_states::provider.eq(provider.as_str()),
            oauth_states::pkce_verifier.eq(&verifier),
            oauth_states::redirect_to.eq(redirect_to.as_str()),
            oauth_states::expires_at.eq(Utc::now() + oauth::STATE_TTL),
            oauth_states::browser_nonce_hash.eq(tokens::hash_token(&browser_nonce)),
        ))
        .execute(&mut conn)
        .await?;
    let location = oauth::authorize_url(
        settings,
        provider,
        &oauth::callback_url(&state.config.public_url, provider),
        &oauth_state,
        &oauth::pkce_challenge(&verifier),
    );
    Ok(found(location.as_str())
        .cookie(cookie::oauth_state::issue(
            &state.config,
            provider,
            &browser_nonce,
            oauth::STATE_TTL,
        ))
        .finish())
}

#[derive(Queryable)]
struct Pending {
    provider: String,
    pkce_verifier: String,
    redirect_to: String,
    browser_nonce_hash: Vec<u8>,
}

/// Takes the pending sign-in for `state` out of the table: it works once, and not late.
async fn consume_state(conn: &mut AsyncPgConnection, state: &str) -> QueryResult<Option<Pending>> {
    diesel::delete(
        oauth_states::table
            .filter(oauth_states::state_hash.eq(tokens::hash_token(state)))
            .filter(oauth_states::expires_at.gt(diesel::dsl::now)),
    )
    .returning((
        oauth_states::provider,
        oauth_states::pkce_verifier,
        oauth_states::redirect_to,
        oauth_states::browser_nonce_hash,
    ))
    .get_result(conn)
    .await
    .optional()
}

/// Why a sign-in ended without a session; sent to the SPA as `?error=<code>`.
mod refusal {
    pub const ACCESS_DENIED: &str = "access_denied";
    pub const PROVIDER_ERROR: &str = "provider_error";
    pub const EMAIL_NOT_VERIFIED: &str = "email_not_verified";
    pub const ACCOUNT_DISABLED: &str = "account_disabled";
    pub const IDENTITY_CONFLICT: &str = "identity_conflict";
    pub const STATE_MISMATCH: &str = "oauth_state_mismatch";
}

enum Outcome {
    SignedIn(Issued, Uuid),
    Refused(&'static str),
}

/// Finish signing in with Google or GitHub (the provider sends the browser here).
///
/// Redeems the code and reads the provider's profile. An account already linked to this
/// login is signed in; otherwise a **verified** provider email links to the account with
/// that email, or creates one (no password; email verified; analytics and marketing consent
/// off). An unverified provider email never links or creates anything. Linking into an
/// account whose address was not verified removes its password and ends its sessions and API
/// keys and replaces its webhook secret: whoever registered it never proved the address.
///
/// The browser is redirected to `redirect_to` with `signed_in=1` and the refresh cookie,
/// or with `error=` one of `access_denied` (the user declined), `provider_error` (the
/// provider failed or refused the code), `email_not_verified`, `account_disabled`,
/// `identity_conflict` (the account is linked to another login of this provider),
/// `oauth_state_mismatch` (this browser did not start this sign-in: its `gi2_oauth_state`
/// cookie is missing or belongs to another sign-in). Every redirect clears that cookie.
#[utoipa::path(
    tag = "oauth",
    operation_id = "oauthCallback",
    params(
        ("provider" = Provider, Path, description = "`google` or `github`"),
        CallbackQuery,
    ),
    responses(
        (status = 302, description = "To `redirect_to`: with `signed_in=1` and the `gi2_refresh` cookie, or with `error=<code>`",
            headers(
                ("Location" = String, description = "The web app's `redirect_to` URL with `signed_in=1` or `error=<code>`"),
                ("Set-Cookie" = String, description = "On success, the `gi2_refresh` HttpOnly cookie; always, the expired `gi2_oauth_state` cookie"),
            )),
        (status = 400, description = "`invalid_oauth_state`: unknown, used or expired `state`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`provider_not_configured`, or `not_found` for an unknown provider", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `state`, or both `code` and `error`, missing", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/auth/oauth/{provider}/callback")]
pub async fn callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    client: ClientInfo,
    provider: web::Path<String>,
    query: web::Query<CallbackQuery>,
) -> Result<HttpResponse, ApiError> {
    let (provider, settings) = match provider_of(&state.config, &provider) {
        Ok(found) => found,
        Err(unavailable) => return Ok(unavailable.response()),
    };
    let query = query.into_inner();
    let oauth_state = query
        .state
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::validation("state", "is required"))?;
    let code = query.code.filter(|c| !c.is_empty());
    if code.is_none() && query.error.is_none() {
        return Err(ApiError::validation("code", "is required"));
    }
    if oauth_state.len() > 256 {
        return Err(ApiError::validation("state", "is too long"));
    }
    if code.as_ref().is_some_and(|c| c.len() > 2048) {
        return Err(ApiError::validation("code", "is too long"));
    }
    let mut conn = state.pool.get().await?;
    rate_limit::hit(
        &mut conn,
        rate_limit::Key::new("oauth_callback_per_ip", client.ip_key()),
        state.config.auth.rate_per_ip_per_minute,
        state.config.auth.rate_window,
    )
    .await?;
    let pending = consume_state(&mut conn, &oauth_state)
        .await?
        .filter(|p| p.provider == provider.as_str())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_oauth_state",
                "This sign-in is unknown, already finished or expired; start it again.",
            )
        })?;
    // Stored only after validation; the SPA's own address is the fallback if that ever fails.
    let back =
        Url::parse(&pending.redirect_to).unwrap_or_else(|_| state.config.auth.spa_url.clone());
    let clear_cookie = || cookie::oauth_state::clear(&state.config, provider);
    let refuse = |reason: &str| {
        Ok(found(&with_param(back.clone(), "error", reason))
            .cookie(clear_cookie())
            .finish())
    };
    // The state is used up either way: a callback URL handed to another browser is dead.
    if !oauth::browser_nonce_matches(
        cookie::oauth_state::read(&req).as_deref(),
        &pending.browser_nonce_hash,
    ) {
        tracing::info!(
            provider = provider.as_str(),
            "OAuth callback from a browser that did not start the sign-in"
        );
        return refuse(refusal::STATE_MISMATCH);
    }

    let Some(code) = code else {
        let error = query.error.unwrap_or_default();
        tracing::info!(
            provider = provider.as_str(),
            error = error
                .chars()
                .filter(char::is_ascii_graphic)
                .take(64)
                .collect::<String>(),
            "OAuth sign-in ended at the provider"
        );
        return refuse(if error == "access_denied" {
            refusal::ACCESS_DENIED
        } else {
            refusal::PROVIDER_ERROR
        });
    };
    // No pooled connection is held while the provider answers (up to its timeout).
    drop(conn);
    let redirect_uri = oauth::callback_url(&state.config.public_url, provider);
    let profile = match oauth::fetch_user(
        &state.http,
        provider,
        settings,
        &code,
        &pending.pkce_verifier,
        &redirect_uri,
    )
    .await
    {
        Ok(profile) => profile,
        Err(err) => {
            tracing::warn!(
                request_id = request_id::current().as_deref(),
                provider = provider.as_str(),
                error = format!("{err:#}"),
                "OAuth sign-in failed at the provider"
            );
            return refuse(refusal::PROVIDER_ERROR);
        }
    };

    let mut conn = state.pool.get().await?;
    let outcome = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let (state, client, profile) = (&state, &client, &profile);
            resolve_and_sign_in(conn, state, client, provider, profile).await
        })
        .await;
    match outcome {
        // A concurrent sign-in with the same login won a race; the loser was rolled back.
        Err(ApiError::Conflict { code, .. }) if code == refusal::IDENTITY_CONFLICT => {
            refuse(refusal::IDENTITY_CONFLICT)
        }
        Err(err) => Err(err),
        Ok(Outcome::Refused(reason)) => refuse(reason),
        Ok(Outcome::SignedIn(issued, user_id)) => {
            // Linking may have ended sessions (see `link`); no write guard covers a sign-in.
            state.read_cache.invalidate(user_id);
            analytics::track(
                &mut conn,
                &state.config.url_signing_key,
                user_id,
                analytics::event::SIGNED_IN,
                serde_json::json!({ "method": provider.as_str() }),
            )
            .await;
            Ok(found(&with_param(back, "signed_in", "1"))
                .cookie(cookie::issue(
                    &state.config,
                    &issued.refresh_token,
                    issued.refresh_expires_at - Utc::now(),
                ))
                .cookie(clear_cookie())
                .finish())
        }
    }
}

/// The account for this provider login: already linked, linked now by verified email, or
/// created. Then a web session. Nothing is written when the answer is a refusal.
async fn resolve_and_sign_in(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    client: &ClientInfo,
    provider: Provider,
    profile: &ProviderUser,
) -> Result<Outcome, ApiError> {
    let method = provider.as_str();
    let linked: Option<(Uuid, Uuid)> = identities::table
        .filter(identities::provider.eq(method))
        .filter(identities::subject.eq(&profile.subject))
        .select((identities::id, identities::user_id))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let user_id = match linked {
        Some((identity_id, user_id)) => {
            if users::find(conn, user_id).await?.disabled_at.is_some() {
                return Ok(Outcome::Refused(refusal::ACCOUNT_DISABLED));
            }
            diesel::update(identities::table.find(identity_id))
                .set((
                    identities::last_used_at.eq(diesel::dsl::now),
                    identities::email.eq(&profile.email),
                ))
                .execute(conn)
                .await?;
            user_id
        }
        None => {
            let Some(email) = profile.email.as_deref().filter(|_| profile.email_verified) else {
                return Ok(Outcome::Refused(refusal::EMAIL_NOT_VERIFIED));
            };
            if users::validate_email("email", email).is_some() {
                tracing::warn!(provider = method, "OAuth provider sent an unusable email");
                return Ok(Outcome::Refused(refusal::PROVIDER_ERROR));
            }
            let existing: Option<User> = users_t::table
                .filter(users_t::email_normalized.eq(users::normalize_email(email)))
                .select(User::as_select())
                .for_update()
                .first(conn)
                .await
                .optional()?;
            match existing {
                Some(user) => match link(conn, client, provider, profile, &user).await? {
                    Some(refused) => return Ok(Outcome::Refused(refused)),
                    None => user.id,
                },
                None => match create(conn, state, client, provider, profile, email).await? {
                    Some(user_id) => user_id,
                    None => return Ok(Outcome::Refused(refusal::IDENTITY_CONFLICT)),
                },
            }
        }
    };
    let issued = sessions::start(conn, state, user_id, ClientKind::Web, method, client).await?;
    let user = users::find(conn, user_id).await?;
    new_device::notify_if_new_device(conn, &user, client, method).await?;
    activity::record(
        conn,
        user_id,
        activity::ActivityKind::SignedIn,
        client,
        serde_json::json!({ "method": method, "session_id": issued.session_id }),
    )
    .await?;
    Ok(Outcome::SignedIn(issued, user_id))
}

/// Links `user_id` to this provider login; 0 rows when the login, or another login of this
/// provider, is already linked to an account.
async fn insert_identity(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    provider: Provider,
    profile: &ProviderUser,
) -> QueryResult<usize> {
    diesel::insert_into(identities::table)
        .values((
            identities::id.eq(Uuid::now_v7()),
            identities::user_id.eq(user_id),
            identities::provider.eq(provider.as_str()),
            identities::subject.eq(&profile.subject),
            identities::email.eq(&profile.email),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await
}

/// Links the login to the account with the same (provider-verified) email; `Some` is a
/// refusal.
async fn link(
    conn: &mut AsyncPgConnection,
    client: &ClientInfo,
    provider: Provider,
    profile: &ProviderUser,
    user: &User,
) -> Result<Option<&'static str>, ApiError> {
    if user.disabled_at.is_some() {
        return Ok(Some(refusal::ACCOUNT_DISABLED));
    }
    // Conflicts only when the account already has another login of this provider.
    let inserted = insert_identity(conn, user.id, provider, profile).await?;
    if inserted == 0 {
        return Ok(Some(refusal::IDENTITY_CONFLICT));
    }
    let mut details = serde_json::json!({ "provider": provider.as_str() });
    if user.email_verified_at.is_none() {
        // Whoever set the password never proved the address; the provider just did. An
        // account pre-registered by someone else ("pre-hijacking") must not keep their
        // password, nor anything it opened (see `ownership`).
        if user.password_hash.is_some() {
            diesel::update(users_t::table.find(user.id))
                .set(users_t::password_hash.eq(None::<String>))
                .execute(conn)
                .await?;
            details["password_removed"] = true.into();
        }
        ownership::prove(conn, user.id, Proof::ProviderSignIn, client).await?;
    }
    activity::record(
        conn,
        user.id,
        activity::ActivityKind::IdentityLinked,
        client,
        details,
    )
    .await?;
    Ok(None)
}

/// A new account for a provider-verified email; `None` when another sign-in created the
/// account or identity first.
async fn create(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    client: &ClientInfo,
    provider: Provider,
    profile: &ProviderUser,
    email: &str,
) -> Result<Option<Uuid>, ApiError> {
    let id = Uuid::now_v7();
    let policy = &state.config.auth.privacy_policy_version;
    let avatar = profile
        .avatar_url
        .as_deref()
        .filter(|url| users::validate_avatar_url("avatar_url", url).is_none());
    let inserted = diesel::insert_into(users_t::table)
        .values((
            users_t::id.eq(id),
            users_t::email.eq(email.trim()),
            users_t::email_normalized.eq(users::normalize_email(email)),
            users_t::name.eq(display_name(profile.name.as_deref(), email)),
            users_t::avatar_url.eq(avatar),
            users_t::email_verified_at.eq(diesel::dsl::now),
            users_t::terms_version.eq(policy),
            users_t::terms_accepted_at.eq(diesel::dsl::now),
        ))
        .on_conflict(users_t::email_normalized)
        .do_nothing()
        .execute(conn)
        .await?;
    if inserted == 0 {
        return Ok(None);
    }
    let linked = insert_identity(conn, id, provider, profile).await?;
    if linked == 0 {
        // Committing would leave an account without a way in: roll back.
        return Err(ApiError::conflict(
            refusal::IDENTITY_CONFLICT,
            "Another sign-in with this login finished first; try again.",
        ));
    }
    consents::record(conn, id, false, false, policy, client.ip.as_deref()).await?;
    activity::record(
        conn,
        id,
        activity::ActivityKind::SignedUp,
        client,
        serde_json::json!({ "method": provider.as_str() }),
    )
    .await?;
    Ok(Some(id))
}

/// The provider's name when usable, else the email's local part: 1–100 printable characters.
fn display_name(provider_name: Option<&str>, email: &str) -> String {
    let clean = |raw: &str| -> String {
        raw.chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
            .trim()
            .chars()
            .take(100)
            .collect::<String>()
            .trim()
            .to_string()
    };
    [
        provider_name.unwrap_or(""),
        email.split('@').next().unwrap_or(""),
    ]
    .into_iter()
    .map(clean)
    .find(|n| !n.is_empty())
    .unwrap_or_else(|| "User".into())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config() -> Config {
        let vars: HashMap<String, String> = [
            (
                "GI2_CORS_ORIGINS",
                "http://spa.test,https://App.Example.com",
            ),
            ("GI2_SPA_URL", "https://www.example.com/app/"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Config::from_vars(vars).unwrap()
    }

    #[test]
    fn only_the_web_apps_origins_are_redirect_targets() {
        let config = config();
        for ok in [
            "http://spa.test",
            "http://spa.test/after?x=1#top",
            "https://app.example.com/in",
            "https://www.example.com/elsewhere",
        ] {
            assert!(allowed_redirect(&config, Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            None,
            Some(""),
            Some("/relative"),
            Some("//spa.test/x"),
            Some("https://spa.test/x"),
            Some("http://spa.test:8080/x"),
            Some("http://spa.test.evil.com/x"),
            Some("http://spa.test@evil.com/x"),
            Some("http://user@spa.test/x"),
            Some("javascript:alert(1)"),
            Some("https://evil.com/?http://spa.test"),
        ] {
            assert!(allowed_redirect(&config, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display_names_fall_back_to_the_email() {
        assert_eq!(display_name(Some(" Ada "), "a@x.com"), "Ada");
        assert_eq!(display_name(Some("\u{7}"), "ada.l@x.com"), "ada.l");
        assert_eq!(display_name(None, "ada@x.com"), "ada");
        assert_eq!(display_name(Some(&"x".repeat(300)), "a@x.com").len(), 100);
    }
}
