//! Every route, registered through utoipa-actix-web so the route table and the OpenAPI
//! document are built by one chain.

pub mod files;
pub mod ops;

use utoipa_actix_web::service_config::ServiceConfig;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(files::download);
}
