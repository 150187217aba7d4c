//! The pieces of `bench/export.sh` that talk to the database and the object store. Every
//! step builds the object store from the same `GI2_*` configuration the `gptimage2` binary
//! reads (so keys, client and settings match the worker's), and prints one line of figures.
//!
//! Usage:
//!   export_bench seed <images> <mib>   one user with <images> generation images of <mib> MiB
//!                                      (a decimal: 0.01 is 10 KiB) of random bytes; prints
//!                                      the user id
//!   export_bench read <user-id>        context: GETs the user's images and drops the bytes;
//!                                      prints `seconds bytes`, then ms per GET: median to
//!                                      its answer, median and p90 to its body's end
//!   export_bench copy <user-id>        baseline: GETs the user's images (in export order) and
//!                                      streams them into one object through `ObjectStore::put`;
//!                                      prints `seconds bytes`
//!   export_bench export <user-id>      inserts an export and enqueues its job as
//!                                      `POST /v1/me/exports` does, waits until it succeeded
//!                                      (a separate `gptimage2 worker` runs it); prints
//!                                      `seconds bytes`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use futures::{SinkExt, StreamExt, TryStreamExt, channel::mpsc};
use gptimage2::{
    accounts::export,
    config::Config,
    db::{
        self,
        schema::{exports, generation_images},
    },
    generations::job::object_key,
    jobs::{self, NewJob},
    storage::{self, ObjectStore},
};
use rand::RngCore;
use uuid::Uuid;

/// Objects uploaded at once while seeding.
const SEED_CONCURRENCY: usize = 4;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let config = Config::from_env()?;
    let url = config.database_url.expose().to_string();
    let pool = db::build_pool(&url, SEED_CONCURRENCY + 2)?;
    let store = storage::from_config(&config).await?;
    match args.iter().skip(1).map(String::as_str).collect::<Vec<_>>()[..] {
        ["seed", images, mib] => {
            let size = (mib.parse::<f64>()? * 1024.0 * 1024.0).round() as usize;
            anyhow::ensure!(size > 0, "images need at least one byte");
            let user = seed(&pool, store, images.parse()?, size).await?;
            println!("{user}");
        }
        ["read", user] => {
            let (seconds, bytes, [head, p50, p90]) = read(&pool, store, user.parse()?).await?;
            println!("{seconds:.3} {bytes} {head:.2} {p50:.2} {p90:.2}");
        }
        ["copy", user] => {
            let (seconds, bytes) = copy(&pool, store, user.parse()?).await?;
            println!("{seconds:.3} {bytes}");
        }
        ["export", user] => {
            let (seconds, bytes) = run_export(&pool, store, user.parse()?).await?;
            println!("{seconds:.3} {bytes}");
        }
        _ => anyhow::bail!("usage: export_bench seed <images> <mib> | read|copy|export <user-id>"),
    }
    Ok(())
}

/// One user, one generation per image of `size` bytes (position 0, PNG): the rows the export
/// reads and the objects under the keys the generate job would have used.
async fn seed(
    pool: &db::DbPool,
    store: Arc<dyn ObjectStore>,
    images: usize,
    size: usize,
) -> anyhow::Result<Uuid> {
    let user = Uuid::now_v7();
    let mut conn = pool.get().await?;
    diesel::sql_query(format!(
        "INSERT INTO users (id, email, email_normalized, name)
         VALUES ('{user}', 'export-bench-{user}@example.com', 'export-bench-{user}@example.com', 'Export Bench')"
    ))
    .execute(&mut conn)
    .await?;
    let mut rows = Vec::with_capacity(images);
    for _ in 0..images {
        rows.push((Uuid::now_v7(), Uuid::now_v7()));
    }
    for chunk in rows.chunks(500) {
        let generations = chunk
            .iter()
            .map(|(g, _)| {
                format!(
                    "('{g}', '{user}', 'succeeded', 'export bench', '{{\"size\":\"1024x1024\",\"n\":1}}', 'builtin', 1, now(), now())"
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        diesel::sql_query(format!(
            "INSERT INTO generations (id, user_id, status, prompt, params, provider, cost_credits, started_at, finished_at) VALUES {generations}"
        ))
        .execute(&mut conn)
        .await?;
        let images = chunk
            .iter()
            .map(|(g, i)| {
                let key = object_key(user, *g, 0, "png");
                format!(
                    "('{i}', '{g}', '{user}', 0, '{key}', 'png', 1024, 1024, {})",
                    size
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        diesel::sql_query(format!(
            "INSERT INTO generation_images (id, generation_id, user_id, position, object_key, format, width, height, bytes) VALUES {images}"
        ))
        .execute(&mut conn)
        .await?;
    }
    drop(conn);
    futures::stream::iter(rows)
        .map(|(g, _)| {
            let store = store.clone();
            async move {
                // Random, so nothing on the way can compress it.
                let mut body = vec![0u8; size];
                rand::rng().fill_bytes(&mut body);
                store
                    .put(
                        &object_key(user, g, 0, "png"),
                        "image/png",
                        storage::bytes_stream(body),
                    )
                    .await
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(user)
}

/// The user's image keys in the order the export reads them.
async fn keys(pool: &db::DbPool, user: Uuid) -> anyhow::Result<Vec<String>> {
    let mut conn = pool.get().await?;
    Ok(generation_images::table
        .filter(generation_images::user_id.eq(user))
        .order((
            generation_images::generation_id,
            generation_images::position,
        ))
        .select(generation_images::object_key)
        .load(&mut conn)
        .await?)
}

/// The reads alone: every object fetched in turn, its bytes dropped. Also returns the median
/// milliseconds until a GET's answer (headers), and the median and 90th percentile of whole
/// GETs (request to the body's end).
async fn read(
    pool: &db::DbPool,
    store: Arc<dyn ObjectStore>,
    user: Uuid,
) -> anyhow::Result<(f64, u64, [f64; 3])> {
    let keys = keys(pool, user).await?;
    let started = Instant::now();
    let mut bytes = 0u64;
    let (mut heads, mut wholes) = (Vec::new(), Vec::new());
    for key in &keys {
        let asked = Instant::now();
        let mut body = store.get(key).await?.body;
        heads.push(asked.elapsed().as_secs_f64() * 1000.0);
        while let Some(chunk) = body.next().await {
            bytes += chunk.with_context(|| format!("reading {key}"))?.len() as u64;
        }
        wholes.push(asked.elapsed().as_secs_f64() * 1000.0);
    }
    let percentile = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let ms = [
        percentile(&mut heads, 0.5),
        percentile(&mut wholes, 0.5),
        percentile(&mut wholes, 0.9),
    ];
    Ok((started.elapsed().as_secs_f64(), bytes, ms))
}

/// The floor for an export: the same objects read one after another and written, unchanged,
/// into one object through the same `put` (a bounded channel of 4 chunks, as the export uses),
/// without a ZIP, hashing or progress updates.
async fn copy(
    pool: &db::DbPool,
    store: Arc<dyn ObjectStore>,
    user: Uuid,
) -> anyhow::Result<(f64, u64)> {
    let keys = keys(pool, user).await?;
    let target = format!("bench/copy-{}.bin", Uuid::now_v7());
    let started = Instant::now();
    let (mut tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    let reader = {
        let store = store.clone();
        async move {
            for key in &keys {
                let object = store.get(key).await?;
                let mut body = object.body;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.with_context(|| format!("reading {key}"))?;
                    tx.send(Ok(chunk))
                        .await
                        .map_err(|_| anyhow::anyhow!("the upload stopped reading"))?;
                }
            }
            anyhow::Ok(())
        }
    };
    let upload = store.put(&target, "application/octet-stream", rx.boxed());
    let (read, written) = tokio::join!(reader, upload);
    read?;
    let written = written?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        store.head(&target).await?.content_length == written,
        "the copy's size differs from the bytes sent"
    );
    store.delete(&target).await?;
    Ok((seconds, written))
}

/// Queues an export the way the route does and times commit → `succeeded`.
async fn run_export(
    pool: &db::DbPool,
    store: Arc<dyn ObjectStore>,
    user: Uuid,
) -> anyhow::Result<(f64, u64)> {
    let id = Uuid::now_v7();
    let mut conn = pool.get().await?;
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        diesel::insert_into(exports::table)
            .values((exports::id.eq(id), exports::user_id.eq(user)))
            .execute(conn)
            .await?;
        jobs::enqueue(
            conn,
            NewJob::new(export::KIND, serde_json::json!({ "export_id": id }))
                .max_attempts(export::MAX_ATTEMPTS),
        )
        .await?;
        Ok(())
    })
    .await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3600);
    let (status, bytes, key, error) = loop {
        let (status, bytes, key, error): (String, Option<i64>, Option<String>, Option<String>) =
            exports::table
                .find(id)
                .select((
                    exports::status,
                    exports::bytes,
                    exports::object_key,
                    exports::error,
                ))
                .first(&mut conn)
                .await?;
        if status == "succeeded" || status == "failed" {
            break (status, bytes, key, error);
        }
        anyhow::ensure!(Instant::now() < deadline, "the export did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        status == "succeeded",
        "the export failed: {}",
        error.unwrap_or_default()
    );
    let bytes = u64::try_from(bytes.context("a succeeded export has its size")?)?;
    let key = key.context("a succeeded export has its key")?;
    anyhow::ensure!(
        store.head(&key).await?.content_length == bytes,
        "the stored archive's size differs from the recorded one"
    );
    Ok((seconds, bytes))
}
