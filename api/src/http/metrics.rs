//! Records every response in the request counter and latency histogram, by route pattern.

use std::time::Instant;

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::Method,
    middleware::Next,
    web,
};

use crate::state::AppState;

/// The route label of requests no route matched (whatever their path).
const UNMATCHED: &str = "unmatched";

/// The method label: a method of HTTP itself, else `other` (a client can send any token as
/// a method; each would be a series of its own, kept for the life of the process).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = method_label(req.method());
    let res = next.call(req).await?;
    if let Some(state) = state {
        // Every label has a bounded set of values: the pattern, not the path; a known method
        // or `other`; a status the server chose.
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| UNMATCHED.into());
        let status = res.status().as_u16().to_string();
        state
            .metrics
            .http_requests
            .with_label_values(&[method, route.as_str(), status.as_str()])
            .inc();
        state
            .metrics
            .http_duration
            .with_label_values(&[method, route.as_str()])
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            method,
            route = %route,
            status = res.status().as_u16(),
            latency_ms = started.elapsed().as_millis() as u64,
            request_id = super::request_id::current().as_deref(),
            "request"
        );
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        for made_up in ["BREW", "get", "PROPFIND"] {
            assert_eq!(
                method_label(&Method::from_bytes(made_up.as_bytes()).unwrap()),
                "other"
            );
        }
    }
}
