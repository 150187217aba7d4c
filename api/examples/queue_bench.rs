//! Job queue figures: submit-to-claim latency (commit of the enqueueing transaction to the
//! handler starting) and jobs per second with an instant handler, beside the floor of the
//! wake-up path measured in the same run: a bare PostgreSQL NOTIFY → LISTEN round trip.
//!
//! Usage: queue_bench <database-url> <jobs> <concurrency>

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use diesel_async::{AsyncConnection, RunQueryDsl};
use futures::StreamExt;
use gptimage2::jobs::{self, JobContext, JobError, JobHandler, NewJob, Registry, WorkerOptions};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Instant_ {
    started: Arc<Mutex<HashMap<String, Instant>>>,
}

#[async_trait::async_trait]
impl JobHandler for Instant_ {
    fn kind(&self) -> &'static str {
        "bench_noop"
    }
    async fn run(&self, job: &JobContext) -> Result<(), JobError> {
        let tag = job.payload["tag"].as_str().unwrap_or_default().to_string();
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tag, Instant::now());
        Ok(())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, count, concurrency] = args.as_slice() else {
        anyhow::bail!("usage: queue_bench <database-url> <jobs> <concurrency>")
    };
    let (count, concurrency): (usize, usize) = (count.parse()?, concurrency.parse()?);
    gptimage2::db::migrate::run_pending(url).await?;
    let pool = gptimage2::db::build_pool(url, concurrency + 4)?;

    // Baseline: NOTIFY on one connection, wait for it on a LISTEN connection.
    let (listener, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(_) = message {
                let _ = tx.send(Instant::now());
            }
        }
    });
    listener.batch_execute("LISTEN bench_ping").await?;
    let (sender, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let mut notify = Vec::new();
    for _ in 0..200 {
        let sent = Instant::now();
        sender.batch_execute("NOTIFY bench_ping").await?;
        let got = rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("listener closed"))?;
        notify.push(got.duration_since(sent).as_secs_f64() * 1000.0);
    }
    notify.sort_by(f64::total_cmp);

    // Submit-to-claim, one job at a time with idle workers (the latency a user sees).
    let handler = Instant_::default();
    let stop = CancellationToken::new();
    let options = WorkerOptions {
        concurrency,
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(1),
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
    };
    let workers = tokio::spawn(jobs::run_workers(
        pool.clone(),
        url.clone(),
        Registry::default().with(handler.clone()),
        options,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut conn = pool.get().await?;
    let mut latency = Vec::new();
    for i in 0..200 {
        let tag = format!("lat-{i}");
        let payload = serde_json::json!({ "tag": tag });
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            jobs::enqueue(conn, NewJob::new("bench_noop", payload))
                .await
                .map(|_| ())
        })
        .await?;
        let committed = Instant::now();
        loop {
            if let Some(started) = handler
                .started
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&tag)
            {
                latency.push(started.duration_since(committed).as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    latency.sort_by(f64::total_cmp);

    // Throughput: enqueue a batch, time until every job has run.
    diesel::sql_query("DELETE FROM jobs")
        .execute(&mut conn)
        .await?;
    let began = Instant::now();
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            for i in chunk {
                jobs::enqueue(
                    conn,
                    NewJob::new(
                        "bench_noop",
                        serde_json::json!({ "tag": format!("tp-{i}") }),
                    ),
                )
                .await?;
            }
            Ok(())
        })
        .await?;
    }
    loop {
        let done = handler
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|k| k.starts_with("tp-"))
            .count();
        if done >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let jobs_per_sec = count as f64 / began.elapsed().as_secs_f64();
    stop.cancel();
    workers.await??;

    println!("{:<44} {:>9} {:>9}", "latency (ms)", "p50", "p99");
    println!(
        "{:<44} {:>9.2} {:>9.2}",
        "NOTIFY -> LISTEN round trip (baseline)",
        percentile(&notify, 0.5),
        percentile(&notify, 0.99)
    );
    println!(
        "{:<44} {:>9.2} {:>9.2}",
        "job submit (commit) -> handler start",
        percentile(&latency, 0.5),
        percentile(&latency, 0.99)
    );
    println!(
        "ratio submit-to-claim / notify round trip: p50 {:.1}x, p99 {:.1}x",
        percentile(&latency, 0.5) / percentile(&notify, 0.5),
        percentile(&latency, 0.99) / percentile(&notify, 0.99)
    );
    println!("jobs_per_sec {jobs_per_sec:.1}");
    Ok(())
}
