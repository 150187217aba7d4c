//! The one integration-test binary: every file here is a module.

mod errors;
mod http_basics;
mod mail;
mod migrations;
mod openapi;
