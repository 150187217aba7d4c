//! The API's cookies, both strictly necessary: the refresh token (HttpOnly, SameSite=Strict,
//! sent only to the auth routes; cookie-authenticated calls must come from an allowed Origin),
//! and, for the ten minutes of a Google or GitHub sign-in, the [`oauth_state`] cookie that
//! binds the sign-in to the browser that started it.

use actix_web::{
    HttpRequest,
    cookie::{Cookie, SameSite, time::Duration as CookieDuration},
    http::header,
};

use crate::{config::Config, error::ApiError};

pub const NAME: &str = "gi2_refresh";
pub const PATH: &str = "/v1/auth";

pub fn issue(config: &Config, token: &str, max_age: chrono::Duration) -> Cookie<'static> {
    Cookie::build(NAME, token.to_owned())
        .http_only(true)
        .secure(config.auth.cookie_secure)
        .same_site(SameSite::Strict)
        .path(PATH)
        .max_age(CookieDuration::seconds(max_age.num_seconds().max(0)))
        .finish()
}

/// An expired cookie that makes the browser forget the token.
pub fn clear(config: &Config) -> Cookie<'static> {
    let mut cookie = issue(config, "", chrono::Duration::zero());
    cookie.make_removal();
    cookie
}

pub fn read(req: &HttpRequest) -> Option<String> {
    req.cookie(NAME)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

/// A cookie travels with any request the browser makes, so a call that relies on it must
/// come from the SPA (or this API's own Swagger UI): its Origin is checked.
pub fn require_allowed_origin(req: &HttpRequest, config: &Config) -> Result<(), ApiError> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let own = config.public_url.origin().ascii_serialization();
    match origin {
        Some(o) if o == own || config.cors_origins.iter().any(|allowed| allowed == o) => Ok(()),
        Some(_) => Err(ApiError::Forbidden(
            "This origin may not use the refresh cookie.".into(),
        )),
        None => Err(ApiError::Forbidden(
            "Cookie-authenticated requests must send an Origin header.".into(),
        )),
    }
}

/// `gi2_oauth_state`: a random nonce set by `authorize` whose hash is stored with the
/// sign-in's `state`. The callback finishes only the sign-in this browser started, so a
/// callback URL completed by someone else (login CSRF) signs nobody in. SameSite=Lax, because
/// the provider's redirect back is a cross-site top-level navigation; sent only to the
/// provider's callback path, and gone when the state expires.
pub mod oauth_state {
    use actix_web::{
        HttpRequest,
        cookie::{Cookie, SameSite, time::Duration as CookieDuration},
    };

    use crate::{auth::oauth::Provider, config::Config};

    pub const NAME: &str = "gi2_oauth_state";

    pub fn path(provider: Provider) -> String {
        format!("/v1/auth/oauth/{}/callback", provider.as_str())
    }

    pub fn issue(
        config: &Config,
        provider: Provider,
        nonce: &str,
        max_age: std::time::Duration,
    ) -> Cookie<'static> {
        Cookie::build(NAME, nonce.to_owned())
            .http_only(true)
            .secure(config.auth.cookie_secure)
            .same_site(SameSite::Lax)
            .path(path(provider))
            .max_age(CookieDuration::seconds(
                i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
            ))
            .finish()
    }

    /// An expired cookie: the nonce is good for one callback.
    pub fn clear(config: &Config, provider: Provider) -> Cookie<'static> {
        let mut cookie = issue(config, provider, "", std::time::Duration::ZERO);
        cookie.make_removal();
        cookie
    }

    pub fn read(req: &HttpRequest) -> Option<String> {
        req.cookie(NAME)
            .map(|c| c.value().to_owned())
            .filter(|v| !v.is_empty())
    }
}
