//! Who is calling: client IP and user agent, recorded on sessions and in the activity log, and
//! the address sign-in lockouts are counted by.
//!
//! The IP is the TCP peer's, unless `GI2_TRUSTED_PROXY_HOPS` says that many proxies of ours
//! stand in front: each appends the address it saw to `X-Forwarded-For`, so the entry that
//! many places from the right is the one the outermost of them saw, and everything left of
//! it is the client's own text. Only a syntactically valid IP is taken from there; anything
//! else (or too short a list) falls back to the peer. `Forwarded` is not read.

use std::{
    future::{Ready, ready},
    net::{IpAddr, SocketAddr},
};

use actix_web::{
    FromRequest, HttpRequest,
    dev::Payload,
    http::header::{self, HeaderMap},
    web,
};

use crate::{error::ApiError, state::AppState};

#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn of(req: &HttpRequest) -> Self {
        let hops = req
            .app_data::<web::Data<AppState>>()
            .map_or(0, |s| s.config.auth.trusted_proxy_hops);
        let ip = client_ip(req.peer_addr().map(|a| a.ip()), req.headers(), hops)
            .map(|ip| ip.to_string());
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

/// The client's address behind `hops` trusted proxies; see the module notes.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
    let peer = peer.map(|ip| ip.to_canonical());
    if hops == 0 {
        return peer;
    }
    // Several headers are one list, in order (RFC 9110, section 5.3).
    let mut entries = Vec::new();
    for value in headers.get_all(header::X_FORWARDED_FOR) {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        entries.extend(value.split(',').map(str::trim));
    }
    let Some(entry) = entries.len().checked_sub(hops).map(|i| entries[i]) else {
        return peer;
    };
    parse_ip(entry).map(|ip| ip.to_canonical()).or(peer)
}

/// An IP, alone or with a port (`203.0.113.7:4711`, `[2001:db8::1]:4711`).
fn parse_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
}

impl FromRequest for ClientInfo {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self::of(req)))
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    const PEER: &str = "10.0.0.2";

    fn ip(headers: &[&str], hops: usize) -> String {
        let mut map = HeaderMap::new();
        for value in headers {
            map.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        client_ip(Some(PEER.parse().unwrap()), &map, hops)
            .unwrap()
            .to_string()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        assert_eq!(ip(&["203.0.113.7"], 0), PEER);
    }

    #[test]
    fn the_entry_the_outermost_trusted_proxy_appended_is_taken() {
        assert_eq!(ip(&["1.1.1.1, 203.0.113.7"], 1), "203.0.113.7");
        assert_eq!(ip(&["1.1.1.1, 203.0.113.7, 10.0.0.9"], 2), "203.0.113.7");
        assert_eq!(ip(&["1.1.1.1", "203.0.113.7"], 1), "203.0.113.7");
        assert_eq!(ip(&["1.1.1.1, 2001:db8::1"], 1), "2001:db8::1");
        assert_eq!(ip(&["[2001:db8::1]:4711"], 1), "2001:db8::1");
        assert_eq!(ip(&["203.0.113.7:4711"], 1), "203.0.113.7");
        assert_eq!(ip(&["::ffff:203.0.113.7"], 1), "203.0.113.7");
    }

    #[test]
    fn anything_but_an_ip_falls_back_to_the_peer() {
        assert_eq!(ip(&["203.0.113.7, call +1 555 0100"], 1), PEER);
        assert_eq!(ip(&["203.0.113.7, "], 1), PEER);
        assert_eq!(ip(&["unknown"], 1), PEER);
        assert_eq!(ip(&[], 1), PEER);
        assert_eq!(ip(&["203.0.113.7"], 2), PEER, "fewer entries than proxies");
    }
}
