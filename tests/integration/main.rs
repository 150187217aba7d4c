//! The one integration-test binary: every file here is a module.

mod account_deletion;
mod analytics;
mod api_keys;
mod auth;
mod authz_matrix;
mod bad_input;
mod billing_creem;
mod billing_stripe;
mod cli;
mod credits;
mod errors;
mod exports;
mod faults;
mod generations;
mod http_basics;
mod idempotency;
mod jobs;
mod mail;
mod migrations;
mod oauth;
mod openai_provider;
mod openapi;
mod reference_images;
mod storage;
mod support_and_mails;
mod webhooks_out;
