//! The one integration-test binary: every file here is a module.

mod auth;
mod cli;
mod errors;
mod http_basics;
mod jobs;
mod mail;
mod migrations;
mod openapi;
mod storage;
