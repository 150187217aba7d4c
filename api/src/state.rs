//! What every handler can reach.

use std::sync::Arc;

use crate::{
    auth::tokens::JwtKeys, config::Config, db::DbPool, metrics::Metrics, read_cache::ReadCache,
    storage::ObjectStore,
};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: DbPool,
    pub store: Arc<dyn ObjectStore>,
    pub metrics: Arc<Metrics>,
    pub jwt: Arc<JwtKeys>,
    /// Credential checks and generation pages, invalidated on change (`read_cache.rs`).
    pub read_cache: Arc<ReadCache>,
    /// Outbound calls to OAuth providers (cheap to clone; shares one connection pool).
    pub http: reqwest::Client,
}
