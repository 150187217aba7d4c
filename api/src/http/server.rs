//! Builds the application (state, middleware, routes, docs) and runs the HTTP server.

use std::net::TcpListener;

use actix_cors::Cors;
use actix_web::{App, HttpResponse, dev::Server, http::header, middleware::from_fn, web};
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use super::{extractors, fallback::RouteTable, request_id};
use crate::{config::Config, state::AppState};

fn cors(config: &Config) -> Cors {
    let origins = config.cors_origins.clone();
    Cors::default()
        .allowed_origin_fn(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| origins.iter().any(|allowed| allowed == o))
        })
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("idempotency-key"),
            request_id::HEADER,
        ])
        .expose_headers([
            request_id::HEADER,
            header::RETRY_AFTER,
            header::LOCATION,
            header::HeaderName::from_static("idempotent-replayed"),
        ])
        .supports_credentials()
        .max_age(600)
}

/// Binds the listener and starts serving; the returned server stops on its handle.
pub fn start(listener: TcpListener, state: AppState) -> anyhow::Result<Server> {
    let config = state.config.clone();
    let spec = crate::openapi::build();
    let routes = web::Data::new(RouteTable::from_openapi(&spec));
    // One serialized document shared by every worker: each used to keep (and re-serialize on
    // every request) its own copy, about 5 MiB of each worker's memory.
    let spec_json = web::Bytes::from(serde_json::to_vec(&spec)?);
    drop(spec);
    let state = web::Data::new(state);
    let workers = config.http_workers;
    let server = actix_web::HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(routes.clone())
            .app_data(extractors::json_config(config.max_json_bytes))
            .app_data(extractors::query_config())
            .app_data(extractors::path_config())
            .app_data(web::PayloadConfig::default().limit(config.max_json_bytes))
            // Outermost last: the request id wraps everything, so every response carries it.
            .wrap(from_fn(super::idempotency::middleware))
            .wrap(from_fn(super::metrics::middleware))
            .wrap(cors(&config))
            .wrap(from_fn(super::limits::middleware))
            .wrap(from_fn(request_id::middleware))
            .into_utoipa_app()
            .openapi(crate::openapi::base())
            .configure(crate::routes::configure)
            .into_app()
            .route("/openapi.json", {
                let spec_json = spec_json.clone();
                web::get().to(move || {
                    let body = spec_json.clone();
                    async move {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(body)
                    }
                })
            })
            .service(
                SwaggerUi::new("/docs/{_:.*}")
                    .config(utoipa_swagger_ui::Config::from("/openapi.json")),
            )
            .route(
                "/docs",
                web::get().to(|| async {
                    HttpResponse::PermanentRedirect()
                        .insert_header((header::LOCATION, "/docs/"))
                        .finish()
                }),
            )
            .default_service(web::to(super::fallback::fallback))
    })
    .workers(workers)
    // Signals are handled by the caller, which also stops the workers.
    .disable_signals()
    .shutdown_timeout(30)
    .listen(listener)?
    .run();
    release_startup_memory();
    Ok(server)
}

/// The metrics listener (`GI2_METRICS_BIND`): `/metrics` and nothing else, for a scraper on
/// a network the public never reaches.
pub fn start_metrics(listener: TcpListener, state: AppState) -> anyhow::Result<Server> {
    let state = web::Data::new(state);
    let server = actix_web::HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(crate::routes::ops::serve_metrics))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(crate::error::ApiError::NotFound)
            }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    Ok(server)
}

/// Building the route chain and the document on every worker allocates several MiB that is
/// freed once the workers are up, but glibc keeps it (a third of the idle footprint). Give it
/// back once they are.
fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    std::thread::spawn(|| {
        std::thread::sleep(std::time::Duration::from_secs(1));
        // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no pointers.
        unsafe {
            libc::malloc_trim(0);
        }
    });
}
