//! A credential checked again while a long response runs. An event stream may outlive the
//! credential that opened it (a session signed out or revoked, an API key revoked, the
//! account disabled, the access token expired): it asks [`LiveAuth::standing`] before each
//! thing it sends, and ends once the answer is [`Standing::Revoked`].
//!
//! The check is the request's own authentication run again on the same bearer value, so
//! it is as cheap as a request's: the read cache serves it until a change to the user's
//! sessions, keys or account is notified, and an access token's expiry is read from the
//! token itself.

use actix_web::{FromRequest, HttpRequest, dev::Payload};
use futures::future::LocalBoxFuture;

use super::{Auth, ClientInfo, extract};
use crate::{error::ApiError, state::AppState};

/// [`Auth`] plus what it takes to check the same credential again later.
pub struct LiveAuth {
    pub auth: Auth,
    token: String,
    client: ClientInfo,
}

/// What a re-check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The credential still authenticates the same principal.
    Valid,
    /// It no longer does: revoked, signed out, expired, or its account disabled.
    Revoked,
    /// The check could not be made (the database is unavailable): ask again shortly.
    Unknown,
}

impl LiveAuth {
    pub async fn standing(&self, state: &AppState) -> Standing {
        match extract::authenticate(state, self.token.clone(), self.client.clone()).await {
            Ok(now)
                if now.user_id == self.auth.user_id && now.credential == self.auth.credential =>
            {
                Standing::Valid
            }
            Ok(_) | Err(ApiError::Unauthorized { .. }) => Standing::Revoked,
            Err(_) => Standing::Unknown,
        }
    }
}

impl FromRequest for LiveAuth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let auth = Auth::from_request(req, payload);
        let token = extract::bearer(req);
        let client = ClientInfo::of(req);
        Box::pin(async move {
            let auth = auth.await?;
            Ok(Self {
                auth,
                token: token?,
                client,
            })
        })
    }
}
