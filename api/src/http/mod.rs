//! The HTTP layer: middleware, extractor error handling, the fallback, and the server.

pub mod extractors;
pub mod fallback;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod request_id;
pub mod server;
