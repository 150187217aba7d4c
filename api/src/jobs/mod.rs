//! The PostgreSQL job queue.
//!
//! Jobs are enqueued inside the caller's transaction, claimed with `FOR UPDATE SKIP LOCKED`
//! under a renewable lease, retried with exponential backoff, and woken by LISTEN/NOTIFY.
//! Delivery is at least once: a job whose worker dies runs again once its lease expires.

mod worker;

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{DbPool, schema::jobs};

/// The channel the insert/requeue trigger notifies (see the jobs migration).
pub(crate) const CHANNEL: &str = "gi2_jobs";

/// What to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Chosen here, so a caller can refer to the job in statements sent alongside its insert.
    pub id: Uuid,
    pub kind: &'static str,
    pub payload: serde_json::Value,
    pub max_attempts: i32,
    /// When to run it first; `None` is now.
    pub run_at: Option<DateTime<Utc>>,
}

impl NewJob {
    pub fn new(kind: &'static str, payload: serde_json::Value) -> Self {
        Self {
            id: Uuid::now_v7(),
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
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
}

/// Inserts the job using the caller's connection, so it commits (and wakes a worker)
/// together with whatever the caller's transaction wrote.
pub async fn enqueue<C>(conn: &mut C, job: NewJob) -> diesel::QueryResult<Uuid>
where
    C: diesel_async::AsyncConnectionCore<Backend = diesel::pg::Pg>,
{
    diesel::insert_into(jobs::table)
        .values((
            jobs::id.eq(job.id),
            jobs::kind.eq(job.kind),
            jobs::payload.eq(job.payload),
            jobs::max_attempts.eq(job.max_attempts),
            // `None` leaves the column to its default, the database's now().
            job.run_at.map(|at| jobs::run_at.eq(at)),
        ))
        .execute(conn)
        .await?;
    Ok(job.id)
}

/// A whole `jobs` row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = jobs, check_for_backend(diesel::pg::Pg))]
pub struct JobRow {
    pub id: Uuid,
    pub kind: String,
    pub payload: serde_json::Value,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub locked_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One job by id, for tests and operations.
pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> diesel::QueryResult<JobRow> {
    jobs::table
        .find(id)
        .select(JobRow::as_select())
        .first(conn)
        .await
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
///
/// Database errors are logged and retried, never returned. Dropping (or aborting) the
/// future stops everything at once without releasing: the jobs it held run again once
/// their leases expire, as if the process had died.
pub async fn run_workers(
    pool: DbPool,
    database_url: String,
    registry: Registry,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    worker::run(pool, database_url, registry, options, shutdown).await
}

/// Queue depth by kind and status (`queued`, `running`), for `/metrics`.
pub async fn depth(
    conn: &mut AsyncPgConnection,
) -> diesel::QueryResult<Vec<(String, String, i64)>> {
    jobs::table
        .filter(jobs::status.eq_any(["queued", "running"]))
        .group_by((jobs::kind, jobs::status))
        .select((jobs::kind, jobs::status, diesel::dsl::count_star()))
        .load(conn)
        .await
}

/// The delay before retrying after failed attempt `attempt` (1-based):
/// `base * 2^(attempt-1)`, capped at `max`. Jitter is added by the caller.
pub fn backoff(attempt: i32, base: Duration, max: Duration) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0);
    2u32.checked_pow(exponent)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(max, |delay| delay.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        let delays: Vec<u64> = (1..=7).map(|a| backoff(a, base, max).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60]);
        // No attempt yet behaves like the first; huge attempts saturate instead of overflowing.
        assert_eq!(backoff(0, base, max), base);
        assert_eq!(backoff(-3, base, max), base);
        assert_eq!(backoff(40, base, max), max);
        assert_eq!(backoff(i32::MAX, base, max), max);
        assert_eq!(backoff(3, Duration::ZERO, max), Duration::ZERO);
    }
}
