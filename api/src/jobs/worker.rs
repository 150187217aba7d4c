//! The claim loops: each slot claims one job at a time, runs its handler in a task of its
//! own (so a panic is caught) while renewing the lease, and writes the outcome only while it
//! still holds the job (`locked_by` = this slot).

use std::{pin::pin, sync::Arc, time::Duration};

use diesel::{
    QueryableByName, sql_query,
    sql_types::{Array, Double, Integer, Jsonb, Nullable, Text},
};
use diesel_async::RunQueryDsl;
use rand::Rng;
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};
use uuid::Uuid;

use super::{CHANNEL, JobContext, JobError, Registry, WorkerOptions, backoff};
use crate::db::DbPool;

/// Pause after a database error before the loop tries again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Floor for idle waits, so a due-but-locked job cannot make the loop spin.
const MIN_WAIT: Duration = Duration::from_millis(20);
/// How long an aborted handler gets to unwind before its row is released anyway.
const ABORT_WAIT: Duration = Duration::from_secs(1);
/// Attempts at writing a job's outcome; past them the lease expires and the job reruns.
const SETTLE_TRIES: u32 = 5;

struct Shared {
    pool: DbPool,
    registry: Registry,
    kinds: Vec<String>,
    options: WorkerOptions,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
}

pub(super) async fn run(
    pool: DbPool,
    database_url: String,
    registry: Registry,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let kinds: Vec<String> = registry.kinds().into_iter().map(String::from).collect();
    if kinds.is_empty() {
        tracing::warn!("no job handlers registered; workers idle until shutdown");
        shutdown.cancelled().await;
        return Ok(());
    }
    let prefix = format!(
        "{}-{}-{}",
        hostname(),
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let concurrency = options.concurrency.max(1);
    let notify = Arc::new(Notify::new());
    let shared = Arc::new(Shared {
        pool,
        registry,
        kinds,
        options,
        notify: Arc::clone(&notify),
        shutdown: shutdown.clone(),
    });

    // A JoinSet aborts its tasks when dropped, so aborting this future stops every slot
    // (and, through AbortOnDropHandle, every handler) like a dead process would.
    let mut tasks = JoinSet::new();
    tasks.spawn(crate::db::listen::listen(
        database_url,
        CHANNEL,
        "job notifications",
        Arc::new(WakeSlots(notify)),
        shutdown,
    ));
    for slot in 0..concurrency {
        tasks.spawn(run_slot(Arc::clone(&shared), format!("{prefix}-{slot}")));
    }
    tracing::info!(worker = %prefix, concurrency, kinds = ?shared.kinds, "job workers started");
    while let Some(ended) = tasks.join_next().await {
        if let Err(err) = ended {
            tracing::error!(error = %err, "a job worker task died");
        }
    }
    tracing::info!(worker = %prefix, "job workers stopped");
    Ok(())
}

/// Wakes every idle slot on each notification, and after every (re)connect since
/// notifications sent while disconnected are lost. While deaf, slots poll.
struct WakeSlots(Arc<Notify>);

impl crate::db::listen::Subscriber for WakeSlots {
    fn listening(&self) {
        self.0.notify_waiters();
    }
    fn notified(&self, _: &str) {
        self.0.notify_waiters();
    }
    fn deaf(&self) {}
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "worker".into())
}

async fn run_slot(shared: Arc<Shared>, me: String) {
    let shutdown = &shared.shutdown;
    while !shutdown.is_cancelled() {
        // Registered before the claim, so a NOTIFY arriving between an empty claim and the
        // wait below still wakes us.
        let mut notified = pin!(shared.notify.notified());
        notified.as_mut().enable();

        let wait = match claim(&shared, &me).await {
            Ok(Some(job)) => {
                if shutdown.is_cancelled() {
                    // Claimed while shutdown began: hand it straight back.
                    settle(&shared, &me, &job, Outcome::Release).await;
                } else if job.attempts > job.max_attempts {
                    // Attempts only exceed the maximum when an expired lease was reclaimed:
                    // its worker died on the last allowed try.
                    tracing::warn!(job_id = %job.id, kind = %job.kind, "job lost by its worker too often; failing it");
                    settle(&shared, &me, &job, Outcome::Lost).await;
                } else {
                    process(&shared, &me, job).await;
                }
                continue;
            }
            Ok(None) => match next_due(&shared).await {
                Ok(due) => Some(due.map_or(shared.options.poll_interval, |due| {
                    due.min(shared.options.poll_interval)
                })),
                Err(err) => {
                    tracing::warn!(worker = %me, error = format!("{err:#}"), "cannot read the queue; polling");
                    Some(shared.options.poll_interval)
                }
            },
            Err(err) => {
                tracing::warn!(worker = %me, error = format!("{err:#}"), "cannot claim a job; retrying");
                None
            }
        };
        match wait {
            Some(wait) => tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait.max(MIN_WAIT)) => {}
                _ = shutdown.cancelled() => {}
            },
            None => tokio::select! {
                _ = tokio::time::sleep(ERROR_PAUSE) => {}
                _ = shutdown.cancelled() => {}
            },
        }
    }
}

#[derive(QueryableByName)]
struct Claimed {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Jsonb)]
    payload: serde_json::Value,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Integer)]
    max_attempts: i32,
}

/// Claims the next due job of a known kind: a queued one, or a running one whose worker
/// stopped renewing its lease. SKIP LOCKED lets concurrent claimers pass each other.
async fn claim(shared: &Shared, me: &str) -> anyhow::Result<Option<Claimed>> {
    let mut conn = shared.pool.get().await?;
    let claimed = sql_query(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = $1, \
             lease_expires_at = now() + make_interval(secs => $2), updated_at = now() \
         WHERE id = ( \
             SELECT id FROM jobs \
             WHERE kind = ANY($3) \
               AND ((status = 'queued' AND run_at <= now()) \
                    OR (status = 'running' AND lease_expires_at < now())) \
             ORDER BY run_at, id \
             LIMIT 1 \
             FOR UPDATE SKIP LOCKED) \
         RETURNING id, kind, payload, attempts, max_attempts",
    )
    .bind::<Text, _>(me)
    .bind::<Double, _>(shared.options.lease.as_secs_f64())
    .bind::<Array<Text>, _>(&shared.kinds)
    .get_results::<Claimed>(&mut conn)
    .await?;
    Ok(claimed.into_iter().next())
}

#[derive(QueryableByName)]
struct Due {
    #[diesel(sql_type = Nullable<Double>)]
    secs: Option<f64>,
}

/// Time until the next job becomes claimable (a delayed run or an expiring lease), so
/// retries and lost jobs start on time without a short poll interval.
async fn next_due(shared: &Shared) -> anyhow::Result<Option<Duration>> {
    let mut conn = shared.pool.get().await?;
    let due = sql_query(
        "SELECT extract(epoch FROM least( \
             (SELECT min(run_at) FROM jobs WHERE status = 'queued' AND kind = ANY($1)), \
             (SELECT min(lease_expires_at) FROM jobs WHERE status = 'running' AND kind = ANY($1)) \
         ) - now())::float8 AS secs",
    )
    .bind::<Array<Text>, _>(&shared.kinds)
    .get_result::<Due>(&mut conn)
    .await?;
    // Already due (but locked by a concurrent claimer): try again shortly.
    Ok(due.secs.map(|secs| Duration::from_secs_f64(secs.max(0.0))))
}

/// Runs the handler under a renewed lease and records how it ended.
async fn process(shared: &Shared, me: &str, job: Claimed) {
    let Some(handler) = shared.registry.get(&job.kind) else {
        // Unreachable: claims are filtered by the registry's kinds.
        settle(shared, me, &job, Outcome::Release).await;
        return;
    };
    tracing::debug!(job_id = %job.id, kind = %job.kind, attempt = job.attempts, worker = %me, "job started");
    let cancel = CancellationToken::new();
    let context = JobContext {
        id: job.id,
        kind: job.kind.clone(),
        attempt: job.attempts,
        max_attempts: job.max_attempts,
        payload: job.payload.clone(),
        cancel: cancel.clone(),
    };
    let mut task = AbortOnDropHandle::new(tokio::spawn(async move { handler.run(&context).await }));

    let lease = shared.options.lease;
    let beat = (lease / 3).max(Duration::from_millis(10));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut grace = pin!(async {
        shared.shutdown.cancelled().await;
        tokio::time::sleep(shared.options.shutdown_grace).await;
    });

    let joined = loop {
        tokio::select! {
            joined = &mut task => break joined,
            _ = heartbeat.tick() => match renew(shared, me, job.id).await {
                Ok(true) => {}
                Ok(false) => {
                    // Another worker reclaimed it (our lease lapsed): its outcome is theirs.
                    tracing::warn!(job_id = %job.id, kind = %job.kind, worker = %me, "job lease lost; abandoning the job");
                    cancel.cancel();
                    task.abort();
                    return;
                }
                Err(err) => {
                    tracing::warn!(job_id = %job.id, error = format!("{err:#}"), "cannot renew the job lease; retrying");
                }
            },
            _ = &mut grace => {
                tracing::warn!(job_id = %job.id, kind = %job.kind, "job still running after the shutdown grace period; releasing it");
                cancel.cancel();
                task.abort();
                let _ = tokio::time::timeout(ABORT_WAIT, &mut task).await;
                settle(shared, me, &job, Outcome::Release).await;
                return;
            }
        }
    };

    let result = joined.unwrap_or_else(|err| {
        let reason = if err.is_panic() {
            let panic = err.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            format!("handler panicked: {message}")
        } else {
            "handler task was cancelled".into()
        };
        Err(JobError::Retryable(anyhow::anyhow!(reason)))
    });
    let outcome = match result {
        Ok(()) => Outcome::Succeeded,
        Err(JobError::Permanent(err)) => Outcome::Failed(format!("{err:#}")),
        Err(JobError::Retryable(err)) if job.attempts >= job.max_attempts => {
            Outcome::Failed(format!("{err:#}"))
        }
        Err(JobError::Retryable(err)) => {
            let delay = backoff(
                job.attempts,
                shared.options.backoff_base,
                shared.options.backoff_max,
            );
            // ±20% so jobs that failed together do not retry together.
            let delay = delay.mul_f64(rand::rng().random_range(0.8..=1.2));
            Outcome::Retry {
                delay,
                error: format!("{err:#}"),
            }
        }
    };
    match &outcome {
        Outcome::Succeeded => {
            tracing::debug!(job_id = %job.id, kind = %job.kind, "job succeeded")
        }
        Outcome::Retry { delay, error } => {
            tracing::info!(job_id = %job.id, kind = %job.kind, attempt = job.attempts, retry_in = ?delay, error = %error, "job failed; will retry")
        }
        Outcome::Failed(error) => {
            tracing::warn!(job_id = %job.id, kind = %job.kind, attempt = job.attempts, error = %error, "job failed for good")
        }
        Outcome::Release | Outcome::Lost => {}
    }
    settle(shared, me, &job, outcome).await;
}

/// Extends the lease; `false` when the job is no longer ours.
async fn renew(shared: &Shared, me: &str, id: Uuid) -> anyhow::Result<bool> {
    let mut conn = shared.pool.get().await?;
    let renewed = sql_query(
        "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now() \
         WHERE id = $1 AND locked_by = $2 AND status = 'running'",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Text, _>(me)
    .bind::<Double, _>(shared.options.lease.as_secs_f64())
    .execute(&mut conn)
    .await?;
    Ok(renewed == 1)
}

/// How a claimed job leaves this worker.
enum Outcome {
    Succeeded,
    Failed(String),
    Retry {
        delay: Duration,
        error: String,
    },
    /// Back to the queue untried (shutdown): the claim is not counted as an attempt.
    Release,
    /// Reclaimed after its worker died on the last allowed attempt.
    Lost,
}

/// Writes the outcome, retrying briefly on database errors. Every statement requires the
/// row to still be ours, so a worker that lost its lease cannot overwrite the new owner.
async fn settle(shared: &Shared, me: &str, job: &Claimed, outcome: Outcome) {
    for attempt in 1..=SETTLE_TRIES {
        match write_outcome(shared, me, job.id, &outcome).await {
            Ok(1) => return,
            Ok(_) => {
                tracing::warn!(job_id = %job.id, worker = %me, "job lease lost before its outcome was written; discarding it");
                return;
            }
            Err(err) if attempt < SETTLE_TRIES => {
                tracing::warn!(job_id = %job.id, error = format!("{err:#}"), "cannot record the job outcome; retrying");
                tokio::time::sleep(ERROR_PAUSE / 2 * attempt).await;
            }
            Err(err) => {
                tracing::warn!(job_id = %job.id, error = format!("{err:#}"), "cannot record the job outcome; it will rerun when its lease expires");
            }
        }
    }
}

async fn write_outcome(
    shared: &Shared,
    me: &str,
    id: Uuid,
    outcome: &Outcome,
) -> anyhow::Result<usize> {
    // Every way out of 'running' clears the lease (the table's CHECK insists).
    const OURS: &str = "locked_by = NULL, lease_expires_at = NULL, updated_at = now() \
                        WHERE id = $1 AND locked_by = $2 AND status = 'running'";
    let mut conn = shared.pool.get().await?;
    let conn = &mut *conn;
    let rows =
        match outcome {
            Outcome::Succeeded => {
                sql_query(format!(
                    "UPDATE jobs SET status = 'succeeded', finished_at = now(), {OURS}"
                ))
                .bind::<diesel::sql_types::Uuid, _>(id)
                .bind::<Text, _>(me)
                .execute(conn)
                .await?
            }
            Outcome::Failed(error) => sql_query(format!(
                "UPDATE jobs SET status = 'failed', finished_at = now(), last_error = $3, {OURS}"
            ))
            .bind::<diesel::sql_types::Uuid, _>(id)
            .bind::<Text, _>(me)
            .bind::<Text, _>(error)
            .execute(conn)
            .await?,
            Outcome::Retry { delay, error } => sql_query(format!(
                "UPDATE jobs SET status = 'queued', run_at = now() + make_interval(secs => $3), \
                 last_error = $4, {OURS}"
            ))
            .bind::<diesel::sql_types::Uuid, _>(id)
            .bind::<Text, _>(me)
            .bind::<Double, _>(delay.as_secs_f64())
            .bind::<Text, _>(error)
            .execute(conn)
            .await?,
            Outcome::Release => {
                sql_query(format!(
                    "UPDATE jobs SET status = 'queued', attempts = greatest(attempts - 1, 0), \
                 run_at = now(), {OURS}"
                ))
                .bind::<diesel::sql_types::Uuid, _>(id)
                .bind::<Text, _>(me)
                .execute(conn)
                .await?
            }
            Outcome::Lost => {
                // The reclaim itself is not a try: attempts go back to the maximum.
                sql_query(format!(
                "UPDATE jobs SET status = 'failed', finished_at = now(), attempts = attempts - 1, \
                 last_error = 'lease expired: worker lost the job ' || (attempts - 1) || ' times' \
                     || coalesce(' (last error: ' || last_error || ')', ''), {OURS}"
            ))
            .bind::<diesel::sql_types::Uuid, _>(id)
            .bind::<Text, _>(me)
            .execute(conn)
            .await?
            }
        };
    Ok(rows)
}
