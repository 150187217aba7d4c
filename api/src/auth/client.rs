//! Who is calling: client IP and user agent, recorded on sessions and in the activity log.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};

use crate::{error::ApiError, state::AppState};

#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn of(req: &HttpRequest) -> Self {
        let trust_forwarded = req
            .app_data::<web::Data<AppState>>()
            .is_some_and(|s| s.config.auth.trust_forwarded_for);
        let ip = if trust_forwarded {
            req.connection_info()
                .realip_remote_addr()
                .map(|a| strip_port(a).to_string())
        } else {
            req.peer_addr().map(|a| a.ip().to_string())
        };
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(512).collect());
        Self { ip, user_agent }
    }

    /// The IP, or a placeholder so rate-limit keys always exist.
    pub fn ip_key(&self) -> &str {
        self.ip.as_deref().unwrap_or("unknown")
    }
}

fn strip_port(addr: &str) -> &str {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(_) => addr
            .rsplit_once(':')
            .map(|(host, _)| host.trim_matches(['[', ']']))
            .unwrap_or(addr),
        Err(_) => addr,
    }
}

impl FromRequest for ClientInfo {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self::of(req)))
    }
}
