//! The baseline for `bench/http.sh`: a minimal actix-web handler answering a small JSON body,
//! built with the same compiler, profile and machine as the API it is compared with.
//!
//! Usage: hello_actix <bind address> <workers>

use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bind = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:18080".into());
    let workers: usize = args.get(2).and_then(|w| w.parse().ok()).unwrap_or(2);
    HttpServer::new(|| {
        App::new().route(
            "/",
            web::get()
                .to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }),
        )
    })
    .workers(workers)
    .bind(bind)?
    .run()
    .await
}
