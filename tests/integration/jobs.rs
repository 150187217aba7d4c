//! The PostgreSQL job queue against a real database: exclusivity under concurrent
//! workers, lease expiry after a worker dies, retries, LISTEN/NOTIFY wake-ups,
//! transactional enqueue, graceful shutdown, and panicking handlers.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::AsyncConnection;
use futures::future::BoxFuture;
use gptimage2::{
    db::{DbPool, build_pool, schema},
    jobs::{self, JobContext, JobError, JobHandler, JobRow, NewJob, Registry, WorkerOptions},
};
use gptimage2_tests::{TestDb, eventually, fresh_database};
use serde_json::json;
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a test handler gets: an owned copy of the context's interesting parts.
#[derive(Clone)]
struct Job {
    id: Uuid,
    attempt: i32,
    cancel: CancellationToken,
}

type RunFn = dyn Fn(Job) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync;

/// A handler made of a closure, so each test states its behaviour inline.
struct FnHandler {
    kind: &'static str,
    run: Arc<RunFn>,
}

fn handler<F, Fut>(kind: &'static str, run: F) -> FnHandler
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    FnHandler {
        kind,
        run: Arc::new(move |job| Box::pin(run(job))),
    }
}

// Spelled out as `#[async_trait]` expands it; the tests crate does not depend on async-trait.
impl JobHandler for FnHandler {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn run<'a, 'b, 'c>(&'a self, job: &'b JobContext) -> BoxFuture<'c, Result<(), JobError>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        (self.run)(Job {
            id: job.id,
            attempt: job.attempt,
            cancel: job.cancel.clone(),
        })
    }
}

fn options() -> WorkerOptions {
    WorkerOptions {
        concurrency: 4,
        lease: Duration::from_secs(5),
        poll_interval: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(1),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
    }
}

struct Workers {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

fn start(db: &TestDb, pool: &DbPool, registry: Registry, options: WorkerOptions) -> Workers {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(jobs::run_workers(
        pool.clone(),
        db.url.clone(),
        registry,
        options,
        shutdown.clone(),
    ));
    Workers { shutdown, task }
}

impl Workers {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("workers stop in time")
            .expect("workers do not panic")
            .expect("workers return Ok");
    }
}

async fn setup() -> (TestDb, DbPool) {
    let db = fresh_database().await;
    let pool = build_pool(&db.url, 16).expect("pool");
    (db, pool)
}

async fn enqueue(pool: &DbPool, job: NewJob) -> Uuid {
    let mut conn = pool.get().await.expect("connection");
    jobs::enqueue(&mut conn, job).await.expect("enqueue")
}

async fn row(pool: &DbPool, id: Uuid) -> JobRow {
    let mut conn = pool.get().await.expect("connection");
    jobs::get(&mut conn, id).await.expect("job row")
}

async fn depth(pool: &DbPool) -> Vec<(String, String, i64)> {
    let mut conn = pool.get().await.expect("connection");
    jobs::depth(&mut conn).await.expect("depth")
}

/// Rows in the jobs table, of one status or all.
async fn count_jobs(pool: &DbPool, status: Option<&str>) -> i64 {
    // Imported here only: its blanket `load` would shadow `AtomicUsize::load` in the tests.
    use diesel_async::RunQueryDsl;
    let mut conn = pool.get().await.expect("connection");
    let mut query = schema::jobs::table.count().into_boxed();
    if let Some(status) = status {
        query = query.filter(schema::jobs::status.eq(status.to_string()));
    }
    query.get_result(&mut conn).await.expect("count jobs")
}

/// Waits until the job has `status`, and returns its row.
async fn wait_for(pool: &DbPool, id: Uuid, status: &str, timeout: Duration) -> JobRow {
    eventually(&format!("job {id} to be {status}"), timeout, || async {
        let job = row(pool, id).await;
        (job.status == status).then_some(job)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_job_runs_twice_concurrently() {
    const JOBS: usize = 200;
    let (db, pool) = setup().await;
    #[derive(Default)]
    struct Record {
        running: Mutex<HashSet<Uuid>>,
        runs: Mutex<HashMap<Uuid, u32>>,
        overlaps: AtomicUsize,
    }
    let record = Arc::new(Record::default());
    let workers: Vec<Workers> = (0..4)
        .map(|_| {
            let record = Arc::clone(&record);
            let registry = Registry::default().with(handler("count", move |job: Job| {
                let record = Arc::clone(&record);
                async move {
                    if !record.running.lock().unwrap().insert(job.id) {
                        record.overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    *record.runs.lock().unwrap().entry(job.id).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    record.running.lock().unwrap().remove(&job.id);
                    Ok(())
                }
            }));
            start(&db, &pool, registry, options())
        })
        .collect();

    // All at once in one transaction, so every slot of every instance races for them.
    let mut conn = pool.get().await.unwrap();
    let ids: Vec<Uuid> = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let mut ids = Vec::new();
            for n in 0..JOBS {
                ids.push(jobs::enqueue(conn, NewJob::new("count", json!({ "n": n }))).await?);
            }
            Ok(ids)
        })
        .await
        .unwrap();

    let started = Instant::now();
    eventually("all jobs to succeed", Duration::from_secs(15), || async {
        (count_jobs(&pool, Some("succeeded")).await == JOBS as i64).then_some(())
    })
    .await;
    eprintln!("{JOBS} jobs on 4 x 4 slots took {:?}", started.elapsed());

    assert_eq!(
        record.overlaps.load(Ordering::SeqCst),
        0,
        "a job ran on two slots at once"
    );
    let runs = record.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), JOBS);
    assert!(
        runs.values().all(|&n| n == 1),
        "every job ran exactly once: {runs:?}"
    );
    for id in ids {
        let job = row(&pool, id).await;
        assert_eq!((job.status.as_str(), job.attempts), ("succeeded", 1));
        assert!(
            job.locked_by.is_none() && job.lease_expires_at.is_none() && job.finished_at.is_some()
        );
    }
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_job_is_retried() {
    let (db, pool) = setup().await;
    let opts = WorkerOptions {
        lease: Duration::from_secs(1),
        ..options()
    };
    let id = enqueue(&pool, NewJob::new("fragile", json!({}))).await;

    // Blocks forever: only the worker's death ends this attempt.
    let hang = Registry::default().with(handler("fragile", |_job: Job| async {
        std::future::pending::<()>().await;
        Ok(())
    }));
    let a = start(&db, &pool, hang, opts.clone());
    let running = wait_for(&pool, id, "running", Duration::from_secs(5)).await;
    assert!(running.locked_by.is_some());
    // Death: no release, no more heartbeats.
    a.task.abort();
    let _ = a.task.await;
    let died = Instant::now();

    let attempts_seen = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&attempts_seen);
    let ok = Registry::default().with(handler("fragile", move |job: Job| {
        seen.lock().unwrap().push(job.attempt);
        async { Ok(()) }
    }));
    let b = start(&db, &pool, ok, opts);
    let done = wait_for(&pool, id, "succeeded", Duration::from_secs(5)).await;
    eprintln!(
        "worker B finished the job {:?} after A died",
        died.elapsed()
    );

    assert_eq!(done.attempts, 2);
    assert_eq!(*attempts_seen.lock().unwrap(), [2]);
    // B waited for A's lease (1s, renewed every ~333ms) to run out.
    assert!(
        died.elapsed() >= Duration::from_millis(500),
        "B took the job before A's lease expired"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_lost_on_its_last_attempt_fails() {
    let (db, pool) = setup().await;
    let opts = WorkerOptions {
        lease: Duration::from_millis(500),
        ..options()
    };
    let id = enqueue(&pool, NewJob::new("fatal", json!({})).max_attempts(1)).await;
    let hang = Registry::default().with(handler("fatal", |_job: Job| std::future::pending()));
    let a = start(&db, &pool, hang, opts.clone());
    wait_for(&pool, id, "running", Duration::from_secs(5)).await;
    a.task.abort();
    let _ = a.task.await;

    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let ok = Registry::default().with(handler("fatal", move |_job: Job| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    }));
    let b = start(&db, &pool, ok, opts);
    let failed = wait_for(&pool, id, "failed", Duration::from_secs(5)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "a job out of attempts is not run again"
    );
    assert_eq!(failed.attempts, 1);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("lease expired: worker lost the job 1 times")
    );
    assert!(failed.locked_by.is_none() && failed.finished_at.is_some());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_that_lost_its_lease_abandons_the_job() {
    let (db, pool) = setup().await;
    let finished = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&finished);
    let registry = Registry::default().with(handler("long", move |_job: Job| {
        let counted = Arc::clone(&counted);
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }));
    // Heartbeats every 100ms.
    let workers = start(
        &db,
        &pool,
        registry,
        WorkerOptions {
            lease: Duration::from_millis(300),
            ..options()
        },
    );
    let id = enqueue(&pool, NewJob::new("long", json!({}))).await;
    wait_for(&pool, id, "running", Duration::from_secs(5)).await;

    // As if another worker had reclaimed it after a lapse.
    let client = db.client().await;
    client
        .execute(
            "UPDATE jobs SET locked_by = 'intruder', lease_expires_at = now() + interval '1 hour' WHERE id = $1::text::uuid",
            &[&id.to_string()],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the handler was stopped"
    );
    let job = row(&pool, id).await;
    assert_eq!(
        (job.status.as_str(), job.locked_by.as_deref()),
        ("running", Some("intruder")),
        "the new owner's row is untouched"
    );
    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_ends_failed_with_its_error() {
    let (db, pool) = setup().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let (retry_runs, permanent_runs) = (Arc::clone(&runs), Arc::new(AtomicUsize::new(0)));
    let counted = Arc::clone(&permanent_runs);
    let registry = Registry::default()
        .with(handler("flaky", move |job: Job| {
            retry_runs.fetch_add(1, Ordering::SeqCst);
            async move {
                Err(JobError::Retryable(
                    anyhow::anyhow!("upstream said 503")
                        .context(format!("attempt {} failed", job.attempt)),
                ))
            }
        }))
        .with(handler("doomed", move |_job: Job| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err(JobError::Permanent(anyhow::anyhow!("payload is malformed"))) }
        }));
    let workers = start(&db, &pool, registry, options());
    let flaky = enqueue(&pool, NewJob::new("flaky", json!({})).max_attempts(3)).await;
    let doomed = enqueue(&pool, NewJob::new("doomed", json!({})).max_attempts(5)).await;

    let failed = wait_for(&pool, flaky, "failed", Duration::from_secs(5)).await;
    assert_eq!(failed.attempts, 3);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    // The whole error chain is kept.
    assert_eq!(
        failed.last_error.as_deref(),
        Some("attempt 3 failed: upstream said 503")
    );
    assert!(failed.finished_at.is_some() && failed.locked_by.is_none());

    let failed = wait_for(&pool, doomed, "failed", Duration::from_secs(5)).await;
    assert_eq!(failed.attempts, 1);
    assert_eq!(permanent_runs.load(Ordering::SeqCst), 1);
    assert_eq!(failed.last_error.as_deref(), Some("payload is malformed"));
    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_idle_worker() {
    let (db, pool) = setup().await;
    let started_at = Arc::new(Mutex::new(None));
    let record = Arc::clone(&started_at);
    let registry = Registry::default().with(handler("wake", move |_job: Job| {
        record.lock().unwrap().get_or_insert(Instant::now());
        async { Ok(()) }
    }));
    // Polling alone would take a minute.
    let workers = start(
        &db,
        &pool,
        registry,
        WorkerOptions {
            poll_interval: Duration::from_secs(60),
            ..options()
        },
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut conn = pool.get().await.unwrap();
    let id = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            jobs::enqueue(conn, NewJob::new("wake", json!({}))).await
        })
        .await
        .unwrap();
    let committed = Instant::now();
    wait_for(&pool, id, "succeeded", Duration::from_secs(2)).await;
    let latency = started_at.lock().unwrap().expect("the handler ran") - committed;
    eprintln!("notify test: the job started {latency:?} after its commit");
    assert!(latency < Duration::from_secs(2));
    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_is_transactional() {
    let (db, pool) = setup().await;
    let rolled_back_runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&rolled_back_runs);
    let registry = Registry::default()
        .with(handler("rolled_back", move |_job: Job| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }))
        .with(handler("committed", |_job: Job| async { Ok(()) }));
    let workers = start(&db, &pool, registry, options());

    let mut conn = pool.get().await.unwrap();
    let rolled_back = conn
        .transaction::<(), diesel::result::Error, _>(async |conn| {
            jobs::enqueue(conn, NewJob::new("rolled_back", json!({}))).await?;
            Err(diesel::result::Error::RollbackTransaction)
        })
        .await;
    assert!(matches!(
        rolled_back,
        Err(diesel::result::Error::RollbackTransaction)
    ));
    assert_eq!(count_jobs(&pool, None).await, 0);

    // A committed job goes through, so the workers were alive to run the other one.
    let id = enqueue(&pool, NewJob::new("committed", json!({}))).await;
    wait_for(&pool, id, "succeeded", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rolled_back_runs.load(Ordering::SeqCst), 0);
    assert_eq!(count_jobs(&pool, None).await, 1);
    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_running_jobs() {
    let (db, pool) = setup().await;
    let registry = Registry::default().with(handler("slow", |job: Job| async move {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(()),
            _ = job.cancel.cancelled() => Err(JobError::Retryable(anyhow::anyhow!("cancelled"))),
        }
    }));
    let workers = start(
        &db,
        &pool,
        registry,
        WorkerOptions {
            shutdown_grace: Duration::from_millis(200),
            ..options()
        },
    );
    let id = enqueue(&pool, NewJob::new("slow", json!({}))).await;
    wait_for(&pool, id, "running", Duration::from_secs(5)).await;
    assert_eq!(
        depth(&pool).await,
        [("slow".to_string(), "running".to_string(), 1)]
    );

    let stopping = Instant::now();
    workers.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), workers.task)
        .await
        .expect("run_workers returns soon after the grace period")
        .unwrap()
        .unwrap();
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "the grace period was honoured ({took:?})"
    );

    let job = row(&pool, id).await;
    assert_eq!(job.status, "queued");
    assert_eq!(job.attempts, 0, "a release is not counted as a try");
    assert_eq!(
        depth(&pool).await,
        [("slow".to_string(), "queued".to_string(), 1)]
    );
    assert!(job.locked_by.is_none() && job.lease_expires_at.is_none() && job.finished_at.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_does_not_kill_worker() {
    let (db, pool) = setup().await;
    let registry = Registry::default()
        .with(handler("explodes", |job: Job| async move {
            // Always true; the `Ok` below only gives the block its type.
            if job.attempt > 0 {
                panic!("kaboom on attempt {}", job.attempt);
            }
            Ok(())
        }))
        .with(handler("fine", |_job: Job| async { Ok(()) }));
    // One slot: the job after the panics runs on the very loop that saw them.
    let workers = start(
        &db,
        &pool,
        registry,
        WorkerOptions {
            concurrency: 1,
            ..options()
        },
    );

    let bad = enqueue(&pool, NewJob::new("explodes", json!({})).max_attempts(2)).await;
    let failed = wait_for(&pool, bad, "failed", Duration::from_secs(5)).await;
    assert_eq!(failed.attempts, 2);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("handler panicked: kaboom on attempt 2")
    );

    let good = enqueue(&pool, NewJob::new("fine", json!({}))).await;
    wait_for(&pool, good, "succeeded", Duration::from_secs(5)).await;
    workers.stop().await;
}
