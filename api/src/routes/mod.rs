//! Every route, registered through utoipa-actix-web so the route table and the OpenAPI
//! document are built by one chain.

pub mod account_deletion;
pub mod api_keys;
pub mod auth;
pub mod billing;
pub mod credits;
pub mod exports;
pub mod files;
pub mod generation_events;
pub mod generations;
pub mod identities;
pub mod me;
pub mod oauth;
pub mod ops;
pub mod reference_images;
pub mod support;
pub mod unsubscribe;
pub mod webhook_secret;
pub mod webhooks_creem;
pub mod webhooks_stripe;

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
        .service(oauth::authorize)
        .service(oauth::callback)
        .service(me::get_me)
        .service(me::update_me)
        .service(account_deletion::delete_me)
        .service(me::change_password)
        .service(me::list_sessions)
        .service(me::revoke_session)
        .service(identities::list_identities)
        .service(identities::unlink_identity)
        .service(me::list_activity)
        .service(me::get_consents)
        .service(me::update_consents)
        .service(me::privacy_policy)
        .service(support::create_support_request)
        .service(support::list_support_requests)
        .service(unsubscribe::unsubscribe_mail)
        .service(exports::create_export)
        .service(exports::list_exports)
        .service(exports::get_export)
        .service(webhook_secret::get_webhook_secret)
        .service(credits::get_credits)
        .service(credits::list_ledger)
        .service(billing::catalog)
        .service(billing::checkout)
        .service(billing::portal)
        .service(billing::subscription)
        .service(billing::transactions)
        .service(webhooks_creem::receive_creem_event)
        .service(webhooks_stripe::receive_stripe_event)
        .service(api_keys::create_api_key)
        .service(api_keys::list_api_keys)
        .service(api_keys::revoke_api_key)
        .service(reference_images::upload_reference_image)
        .service(reference_images::list_reference_images)
        .service(reference_images::get_reference_image)
        .service(reference_images::delete_reference_image)
        .service(generations::pricing_table)
        .service(generations::create)
        .service(generations::list)
        .service(generations::get)
        .service(generation_events::events)
        .service(generations::cancel)
        .service(generations::remove)
        .service(generations::image_content);
}
