//! Retention: records that have served their purpose are deleted once older than the
//! configured age (`GI2_RETENTION_*`). A `retention_sweep` job does it; the maintenance loop
//! schedules one per `sweep_every`, and a unique index keeps at most one queued or running.

use std::time::Duration;

use diesel::sql_types::{Double, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::{
    config::RetentionConfig,
    db::DbPool,
    jobs::{JobContext, JobError, JobHandler},
};

pub const KIND: &str = "retention_sweep";

/// Rows deleted per statement, so no sweep holds long locks or a huge transaction.
const BATCH: i64 = 5_000;

/// What one sweep deleted, per kind of record.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub activity_events: u64,
    pub finished_jobs: u64,
    pub sent_mails: u64,
    pub idempotency_records: u64,
    pub expired_exports: u64,
}

/// Queues a sweep unless one is queued or running, or one succeeded within `every`.
/// True when a sweep was queued.
pub async fn schedule(conn: &mut AsyncPgConnection, every: Duration) -> diesel::QueryResult<bool> {
    let queued = diesel::sql_query(
        "INSERT INTO jobs (id, kind, payload, max_attempts)
         SELECT $1, 'retention_sweep', '{}'::jsonb, 3
         WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE kind = 'retention_sweep'
                           AND status = 'succeeded' AND finished_at > now() - make_interval(secs => $2))
         ON CONFLICT DO NOTHING",
    )
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<Double, _>(every.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(queued == 1)
}

/// Deletes everything past its retention. Each kind is deleted in batches by age.
pub async fn sweep(
    conn: &mut AsyncPgConnection,
    retention: &RetentionConfig,
) -> diesel::QueryResult<Swept> {
    Ok(Swept {
        activity_events: delete_older(
            conn,
            "DELETE FROM activity_events WHERE id IN (SELECT id FROM activity_events
             WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)",
            retention.activity,
        )
        .await?,
        finished_jobs: delete_older(
            conn,
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs
             WHERE status IN ('succeeded', 'failed')
               AND finished_at < now() - make_interval(secs => $1) LIMIT $2)",
            retention.finished_jobs,
        )
        .await?,
        // A delivered mail is the payload of a finished job: same age.
        sent_mails: delete_older(
            conn,
            "DELETE FROM outbox_mails WHERE id IN (SELECT id FROM outbox_mails
             WHERE status <> 'pending' AND created_at < now() - make_interval(secs => $1) LIMIT $2)",
            retention.finished_jobs,
        )
        .await?,
        idempotency_records: delete_older(
            conn,
            "DELETE FROM idempotency_keys WHERE (scope_hash, key) IN (
               SELECT scope_hash, key FROM idempotency_keys
               WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)",
            retention.idempotency,
        )
        .await?,
        // Archives are deleted at expiry (`export::purge_expired`); here their rows go.
        expired_exports: delete_older(
            conn,
            "DELETE FROM exports WHERE id IN (SELECT id FROM exports
             WHERE object_key IS NULL AND status IN ('succeeded', 'failed')
               AND COALESCE(expires_at, finished_at, created_at) < now() - make_interval(secs => $1)
             LIMIT $2)",
            retention.expired_exports,
        )
        .await?,
    })
}

/// Runs `sql` (binding the age in seconds as `$1` and the batch size as `$2`) until a batch
/// comes back short.
async fn delete_older(
    conn: &mut AsyncPgConnection,
    sql: &'static str,
    age: Duration,
) -> diesel::QueryResult<u64> {
    let mut total = 0;
    loop {
        let n = diesel::sql_query(sql)
            .bind::<Double, _>(age.as_secs_f64())
            .bind::<diesel::sql_types::BigInt, _>(BATCH)
            .execute(conn)
            .await?;
        total += n as u64;
        if (n as i64) < BATCH {
            return Ok(total);
        }
    }
}

pub struct RetentionSweepHandler {
    pub pool: DbPool,
    pub retention: RetentionConfig,
}

#[async_trait::async_trait]
impl JobHandler for RetentionSweepHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, _job: &JobContext) -> Result<(), JobError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| JobError::Retryable(e.into()))?;
        let swept = sweep(&mut conn, &self.retention)
            .await
            .map_err(|e| JobError::Retryable(e.into()))?;
        if swept != Swept::default() {
            tracing::info!(?swept, "retention sweep deleted expired records");
        }
        Ok(())
    }
}
