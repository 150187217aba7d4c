//! Operations endpoints: liveness, readiness, metrics.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, get, http::header, web};
use diesel_async::RunQueryDsl;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{error::ApiError, state::AppState, wire_enum};

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

wire_enum! {
    /// `ok`: the only status a healthy answer has (an unhealthy one is a problem document).
    pub enum HealthStatus {
        Ok = "ok",
    }
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "status": "ok" }))]
pub struct Health {
    pub status: HealthStatus,
}

/// Liveness: the process is up. Checks nothing else.
#[utoipa::path(tag = "ops", operation_id = "healthz", responses((status = 200, description = "The process is up", body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> web::Json<Health> {
    web::Json(Health {
        status: HealthStatus::Ok,
    })
}

/// Ready: every component answered (otherwise the answer is a 503 problem).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "status": "ok", "checks": { "database": "ok", "object_store": "ok" } }))]
pub struct Readiness {
    pub status: HealthStatus,
    pub checks: ReadinessChecks,
}

/// Each component's state: `ok`, or a short reason.
#[derive(Serialize, ToSchema, Clone)]
pub struct ReadinessChecks {
    #[schema(example = "ok")]
    pub database: String,
    #[schema(example = "ok")]
    pub object_store: String,
}

/// Readiness: the database and the object store both answer.
#[utoipa::path(
    tag = "ops",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready to serve", body = Readiness),
        (status = 503, description = "A component is down; `detail` names it", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (database, object_store) = tokio::join!(check_database(&state), check_store(&state));
    let checks = ReadinessChecks {
        database: outcome(database),
        object_store: outcome(object_store),
    };
    let failed: Vec<&str> = [
        ("database", &checks.database),
        ("object_store", &checks.object_store),
    ]
    .into_iter()
    .filter(|(_, result)| result.as_str() != "ok")
    .map(|(name, _)| name)
    .collect();
    if failed.is_empty() {
        return Ok(HttpResponse::Ok().json(Readiness {
            status: HealthStatus::Ok,
            checks,
        }));
    }
    let detail = failed
        .iter()
        .map(|name| {
            format!(
                "{name}: {}",
                if *name == "database" {
                    &checks.database
                } else {
                    &checks.object_store
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(ApiError::unavailable(
        "not_ready",
        format!("Not ready: {detail}"),
    ))
}

fn outcome(result: Result<(), String>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(reason) => reason,
    }
}

async fn check_database(state: &AppState) -> Result<(), String> {
    let check = async {
        let mut conn = state
            .pool
            .get()
            .await
            .map_err(|e| format!("unreachable ({e})"))?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(|e| format!("query failed ({e})"))?;
        Ok(())
    };
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

async fn check_store(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, state.store.check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("unreachable ({e})")),
        Err(_) => Err("timed out".into()),
    }
}

/// Prometheus metrics in the text exposition format. With `GI2_METRICS_TOKEN` set it needs
/// `Authorization: Bearer <token>`; with `GI2_METRICS_BIND` set it is served only there.
#[utoipa::path(
    tag = "ops",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "`unauthorized`: a metrics token is configured and was not sent", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: metrics are served on their own listener", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[get("/metrics")]
pub async fn metrics(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if state.config.metrics_bind.is_some() {
        return Err(ApiError::NotFound);
    }
    serve_metrics(state, req).await
}

/// `/metrics` itself, on whichever listener serves it.
pub async fn serve_metrics(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let authorization = req.headers().get(header::AUTHORIZATION);
    if !crate::metrics::authorized(state.config.metrics_token.as_ref(), authorization) {
        return Err(ApiError::unauthorized(
            "unauthorized",
            "Send `Authorization: Bearer <metrics token>`.",
        ));
    }
    let status = state.pool.status();
    state.metrics.pool_size.set(status.size as i64);
    state.metrics.pool_available.set(status.available as i64);
    state.metrics.pool_waiting.set(status.waiting as i64);
    // Queue depth is read fresh; on a database outage the last values stay.
    if let Ok(Ok(mut conn)) = tokio::time::timeout(CHECK_TIMEOUT, state.pool.get()).await
        && let Ok(rows) = crate::jobs::depth(&mut conn).await
    {
        state.metrics.job_queue_depth.reset();
        for (kind, job_status, count) in rows {
            state
                .metrics
                .job_queue_depth
                .with_label_values(&[kind.as_str(), job_status.as_str()])
                .set(count);
        }
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4"))
        .body(state.metrics.render()))
}
