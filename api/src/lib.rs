//! GPT Image 2: the API service as a library; `main.rs` is only its command line.

pub mod accounts;
pub mod analytics;
pub mod app;
pub mod auth;
pub mod billing;
pub mod cli;
pub mod config;
pub mod credits;
pub mod db;
pub mod error;
pub mod generations;
pub mod http;
pub mod jobs;
pub mod mail;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod read_cache;
pub mod retention;
pub mod routes;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod wire;
