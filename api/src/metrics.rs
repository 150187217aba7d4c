//! Prometheus metrics: HTTP traffic by route, database pool use, job queue depth, read-cache
//! hits. Every label takes values from a bounded set (see `http::metrics`), and operators can
//! keep `/metrics` to themselves: `GI2_METRICS_TOKEN` ([`authorized`]) and/or
//! `GI2_METRICS_BIND` (a listener of its own, `http::server::start_metrics`).

use actix_web::http::header::HeaderValue;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Whether a request with this `Authorization` header may read the metrics: always when no
/// token is configured, else only with `Bearer <token>` (compared in constant time).
pub fn authorized(token: Option<&Secret>, authorization: Option<&HeaderValue>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(given) = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, given)| given.trim())
    else {
        return false;
    };
    // Digests, so the comparison takes as long whatever the lengths.
    let (expected, given) = (
        Sha256::digest(token.expose().as_bytes()),
        Sha256::digest(given.as_bytes()),
    );
    expected.ct_eq(&given).into()
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub pool_size: IntGauge,
    pub pool_available: IntGauge,
    pub pool_waiting: IntGauge,
    pub job_queue_depth: IntGaugeVec,
    pub read_cache_lookups: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("gptimage2".into()), None).expect("static prefix is valid");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests served, by method, route pattern and status.",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency, by method and route pattern.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["method", "route"],
        )
        .expect("valid metric");
        let pool_size = IntGauge::new(
            "db_pool_connections",
            "Database connections open in the pool.",
        )
        .expect("valid metric");
        let pool_available = IntGauge::new(
            "db_pool_available",
            "Idle database connections in the pool.",
        )
        .expect("valid metric");
        let pool_waiting = IntGauge::new(
            "db_pool_waiting",
            "Requests waiting for a database connection.",
        )
        .expect("valid metric");
        let job_queue_depth = IntGaugeVec::new(
            Opts::new(
                "job_queue_depth",
                "Jobs queued or running, by kind and status.",
            ),
            &["kind", "status"],
        )
        .expect("valid metric");
        let read_cache_lookups = IntCounterVec::new(
            Opts::new(
                "read_cache_lookups_total",
                "Read-cache lookups, by kind (session, api_key, page) and outcome (hit, miss).",
            ),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(pool_size.clone()),
            Box::new(pool_available.clone()),
            Box::new(pool_waiting.clone()),
            Box::new(job_queue_depth.clone()),
            Box::new(read_cache_lookups.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            http_requests,
            http_duration,
            pool_size,
            pool_available,
            pool_waiting,
            job_queue_depth,
            read_cache_lookups,
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_bearer_token_reads_protected_metrics() {
        let token = Secret::new("metrics-token-0123456789");
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(authorized(None, None));
        assert!(authorized(
            Some(&token),
            Some(&header("Bearer metrics-token-0123456789"))
        ));
        assert!(authorized(
            Some(&token),
            Some(&header("bearer metrics-token-0123456789"))
        ));
        for refused in [
            None,
            Some(header("Bearer metrics-token-012345678")),
            Some(header("Bearer ")),
            Some(header("Basic metrics-token-0123456789")),
            Some(header("metrics-token-0123456789")),
        ] {
            assert!(!authorized(Some(&token), refused.as_ref()), "{refused:?}");
        }
    }
}
