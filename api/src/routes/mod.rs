//! Every route, registered through utoipa-actix-web so the route table and the OpenAPI
//! document are built by one chain.

pub mod auth;
pub mod files;
pub mod me;
pub mod ops;

use utoipa_actix_web::service_config::ServiceConfig;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(files::download)
        .service(auth::register)
        .service(auth::verify_email)
        .service(auth::resend_verification)
        .service(auth::login)
        .service(auth::refresh)
        .service(auth::logout)
        .service(auth::forgot_password)
        .service(auth::reset_password)
        .service(me::get_me)
        .service(me::update_me)
        .service(me::change_password)
        .service(me::list_sessions)
        .service(me::revoke_session)
        .service(me::list_activity)
        .service(me::get_consents)
        .service(me::update_consents)
        .service(me::privacy_policy);
}
