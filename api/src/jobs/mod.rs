//! The PostgreSQL job queue (interface; the queue helper fills in the bodies).
//!
//! Jobs are enqueued inside the caller's transaction, claimed with `FOR UPDATE SKIP LOCKED`
//! under a renewable lease, retried with exponential backoff, and woken by LISTEN/NOTIFY.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::DbPool;

/// What to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: &'static str,
    pub payload: serde_json::Value,
    pub max_attempts: i32,
    /// When to run it first; `None` is now.
    pub run_at: Option<DateTime<Utc>>,
}

impl NewJob {
    pub fn new(kind: &'static str, payload: serde_json::Value) -> Self {
        Self {
            kind,
            payload,
            max_attempts: 5,
            run_at: None,
        }
    }
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n;
        self
    }
}

/// Inserts the job using the caller's connection, so it commits (and wakes a worker)
/// together with whatever the caller's transaction wrote.
pub async fn enqueue(conn: &mut AsyncPgConnection, job: NewJob) -> diesel::QueryResult<Uuid> {
    let _ = (conn, job);
    Err(diesel::result::Error::NotFound)
}

/// What a handler sees of the job it runs.
pub struct JobContext {
    pub id: Uuid,
    pub kind: String,
    /// 1 on the first run.
    pub attempt: i32,
    pub max_attempts: i32,
    pub payload: serde_json::Value,
    /// Cancelled when the lease is lost or the worker is shutting down past its grace period.
    pub cancel: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Try again later (with backoff), unless attempts are used up.
    #[error("{0:#}")]
    Retryable(anyhow::Error),
    /// Never retry: the job ends as failed with this error.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

#[async_trait::async_trait]
pub trait JobHandler: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    async fn run(&self, job: &JobContext) -> Result<(), JobError>;
}

/// The handlers a worker process knows, by kind.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
}

impl Registry {
    pub fn with(mut self, handler: impl JobHandler) -> Self {
        self.handlers.insert(handler.kind(), Arc::new(handler));
        self
    }
    pub fn get(&self, kind: &str) -> Option<Arc<dyn JobHandler>> {
        self.handlers.get(kind).cloned()
    }
    pub fn kinds(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }
}

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs run at once by this process.
    pub concurrency: usize,
    pub lease: Duration,
    /// Fallback poll when no NOTIFY arrives.
    pub poll_interval: Duration,
    /// How long running jobs may finish after shutdown starts before they are released.
    pub shutdown_grace: Duration,
    /// First retry delay; doubles each attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// Runs workers until `shutdown` is cancelled; then stops claiming, lets running jobs
/// finish within the grace period, and releases the rest back to the queue.
pub async fn run_workers(
    pool: DbPool,
    database_url: String,
    registry: Registry,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let _ = (pool, database_url, registry, options);
    shutdown.cancelled().await;
    Ok(())
}

/// Queue depth by kind and status (`queued`, `running`), for `/metrics`.
pub async fn depth(
    conn: &mut AsyncPgConnection,
) -> diesel::QueryResult<Vec<(String, String, i64)>> {
    let _ = conn;
    Ok(Vec::new())
}
