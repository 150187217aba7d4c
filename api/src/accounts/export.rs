//! Personal-data exports: the `export` job writes one ZIP with the user's data as JSON files
//! and every image they uploaded or generated, streamed straight into the object store.
//!
//! The archive is written by hand with STORED (uncompressed) entries and data descriptors:
//! images are already compressed, and this way nothing needs its size or CRC up front, so
//! every file flows through in chunks and the archive is never held in memory. The JSON
//! files are built one at a time in memory (they are small next to the images).
//! `manifest.json` comes last and lists every other file with its SHA-256 and byte count.
//!
//! ZIP64 fields are written only where a size, offset or count needs them.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Datelike, Timelike, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::{SinkExt, StreamExt, channel::mpsc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    db::{
        DbPool,
        schema::{exports, generation_images, reference_images, users},
    },
    jobs::{JobContext, JobError, JobHandler},
    mail,
    state::AppState,
    storage::{ObjectStore, StorageError},
    wire_enum,
};

pub const KIND: &str = "export";
/// Store or database hiccups are retried; the export fails after this many attempts.
pub const MAX_ATTEMPTS: i32 = 3;
/// How long a finished export can be downloaded; S3 presigned URLs cannot outlive 7 days.
pub const VALID_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
pub const SCHEMA_VERSION: u32 = 1;
/// What users see of a failure; the cause goes to the logs.
const FAILED_MESSAGE: &str = "The export could not be completed; please try again.";

pub fn object_key(user_id: Uuid, export_id: Uuid) -> String {
    format!("users/{user_id}/exports/{export_id}.zip")
}

wire_enum! {
    /// Where an export is; `succeeded` and `failed` are final.
    #[schema(example = "running")]
    pub enum ExportStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

/// A whole `exports` row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = exports, check_for_backend(diesel::pg::Pg))]
pub struct ExportRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: String,
    pub progress: i32,
    pub object_key: Option<String>,
    pub bytes: Option<i64>,
    pub error: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A signed download link for a finished, unexpired export: valid until it expires.
pub async fn download_url(
    store: &dyn ObjectStore,
    row: &ExportRow,
) -> Result<Option<url::Url>, StorageError> {
    let (Some(key), Some(expires_at)) = (&row.object_key, row.expires_at) else {
        return Ok(None);
    };
    if row.status != "succeeded" {
        return Ok(None);
    }
    let Ok(ttl) = (expires_at - Utc::now()).to_std() else {
        return Ok(None);
    };
    if ttl.is_zero() {
        return Ok(None);
    }
    store
        .signed_get_url(key, ttl.min(VALID_FOR))
        .await
        .map(Some)
}

/// An export still queued or running after this long lost its job (a worker died on the
/// last attempt): it is marked failed so it no longer blocks a new one.
const STUCK_AFTER: chrono::Duration = chrono::Duration::hours(24);

/// Deletes the archives of expired exports and of failed ones older than the download
/// window (the rows stay, without a link, until the retention sweep removes them), and fails
/// stuck exports; returns how many archives were deleted. Called by the maintenance loop.
pub async fn purge_expired(state: &AppState) -> anyhow::Result<u64> {
    let mut conn = state.pool.get().await?;
    diesel::update(
        exports::table
            .filter(exports::status.eq_any(["queued", "running"]))
            .filter(exports::created_at.lt(Utc::now() - STUCK_AFTER)),
    )
    .set((
        exports::status.eq("failed"),
        exports::error.eq(FAILED_MESSAGE),
        exports::finished_at.eq(diesel::dsl::now),
    ))
    .execute(&mut conn)
    .await?;
    let window = chrono::Duration::from_std(VALID_FOR)?;
    let due: Vec<(Uuid, Option<String>)> = exports::table
        .filter(exports::object_key.is_not_null())
        .filter(
            exports::expires_at.lt(Utc::now()).or(exports::status
                .eq("failed")
                .and(exports::created_at.lt(Utc::now() - window))),
        )
        .select((exports::id, exports::object_key))
        .limit(500)
        .load(&mut conn)
        .await?;
    let mut purged = 0;
    for (id, key) in due {
        if let Some(key) = key {
            // Keep the key when the object cannot be deleted, so the next round retries.
            if let Err(e) = state.store.delete(&key).await {
                tracing::warn!(export_id = %id, error = %e, "deleting an expired export failed");
                continue;
            }
        }
        purged += diesel::update(exports::table.find(id))
            .set(exports::object_key.eq(None::<String>))
            .execute(&mut conn)
            .await? as u64;
    }
    Ok(purged)
}

pub struct ExportHandler {
    pub pool: DbPool,
    pub store: Arc<dyn ObjectStore>,
}

fn retry<E: std::fmt::Display>(e: E) -> JobError {
    JobError::Retryable(anyhow::anyhow!("{e}"))
}

#[async_trait::async_trait]
impl JobHandler for ExportHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, job: &JobContext) -> Result<(), JobError> {
        let export_id: Uuid = job
            .payload
            .get("export_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| JobError::Permanent(anyhow::anyhow!("payload lacks export_id")))?;
        let mut conn = self.pool.get().await.map_err(retry)?;
        let row: Option<ExportRow> = exports::table
            .find(export_id)
            .select(ExportRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(retry)?;
        // Gone (account deleted) or already finished by an earlier delivery: nothing to do.
        let Some(row) = row.filter(|r| r.status == "queued" || r.status == "running") else {
            return Ok(());
        };
        let key = object_key(row.user_id, row.id);
        diesel::update(exports::table.find(export_id))
            .set((
                exports::status.eq("running"),
                exports::progress.eq(0),
                exports::object_key.eq(&key),
            ))
            .execute(&mut conn)
            .await
            .map_err(retry)?;
        drop(conn);

        let outcome = match self.build(job, &row, &key).await {
            Ok(bytes) => self.succeed(&row, &key, bytes).await,
            Err(e) => Err(e),
        };
        let Err(err) = outcome else { return Ok(()) };
        let last = matches!(err, JobError::Permanent(_)) || job.attempt >= job.max_attempts;
        if last {
            tracing::warn!(export_id = %export_id, error = %err, "export failed");
            let _ = self.store.delete(&key).await;
            let mut conn = self.pool.get().await.map_err(retry)?;
            diesel::update(exports::table.find(export_id))
                .set((
                    exports::status.eq("failed"),
                    exports::error.eq(FAILED_MESSAGE),
                    exports::finished_at.eq(diesel::dsl::now),
                ))
                .execute(&mut conn)
                .await
                .map_err(retry)?;
        }
        Err(err)
    }
}

impl ExportHandler {
    async fn succeed(&self, row: &ExportRow, key: &str, bytes: u64) -> Result<(), JobError> {
        let expires_at = Utc::now() + chrono::Duration::from_std(VALID_FOR).map_err(retry)?;
        let link = self
            .store
            .signed_get_url(key, VALID_FOR)
            .await
            .map_err(retry)?;
        let mut conn = self.pool.get().await.map_err(retry)?;
        let (email, name): (String, String) = users::table
            .find(row.user_id)
            .select((users::email, users::name))
            .first(&mut conn)
            .await
            .map_err(retry)?;
        let bytes = i64::try_from(bytes).map_err(retry)?;
        conn.transaction::<_, anyhow::Error, _>(async |conn| {
            diesel::update(exports::table.find(row.id))
                .set((
                    exports::status.eq("succeeded"),
                    exports::progress.eq(100),
                    exports::bytes.eq(bytes),
                    exports::expires_at.eq(expires_at),
                    exports::finished_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
            mail::queue(
                conn,
                &email,
                "export_ready",
                json!({
                    "name": name,
                    "link": link.as_str(),
                    "expires_on": expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                }),
            )
            .await?;
            Ok(())
        })
        .await
        .map_err(|e| JobError::Retryable(e.context("finishing an export")))
    }

    /// Writes the archive into the store; returns its size.
    async fn build(&self, job: &JobContext, row: &ExportRow, key: &str) -> Result<u64, JobError> {
        // The writer feeds a bounded channel that `put` drains as its body: back-pressure keeps
        // at most a few chunks in flight.
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let writer = async move {
            let mut zip = ZipOut::new(tx);
            let result = self.write_archive(job, row, &mut zip).await;
            if let Err(e) = &result {
                // Fail the upload rather than store a truncated archive.
                let _ = zip
                    .tx
                    .send(Err(std::io::Error::other(format!("{e:#}"))))
                    .await;
            }
            drop(zip);
            result
        };
        let upload = self.store.put(key, "application/zip", rx.boxed());
        let (written, stored) = tokio::join!(writer, upload);
        written.map_err(JobError::Retryable)?;
        stored.map_err(retry)
    }

    async fn write_archive(
        &self,
        job: &JobContext,
        row: &ExportRow,
        zip: &mut ZipOut,
    ) -> anyhow::Result<()> {
        let user_id = row.user_id;
        let generated_at = Utc::now();
        zip.set_time(generated_at);
        let mut conn = self.pool.get().await?;

        let gen_images: Vec<(Uuid, i32, String, String)> = generation_images::table
            .filter(generation_images::user_id.eq(user_id))
            .order((
                generation_images::generation_id,
                generation_images::position,
            ))
            .select((
                generation_images::generation_id,
                generation_images::position,
                generation_images::format,
                generation_images::object_key,
            ))
            .load(&mut conn)
            .await?;
        let ref_images: Vec<(Uuid, String, String)> = reference_images::table
            .filter(reference_images::user_id.eq(user_id))
            .order(reference_images::id)
            .select((
                reference_images::id,
                reference_images::content_type,
                reference_images::object_key,
            ))
            .load(&mut conn)
            .await?;
        let mut images: Vec<(String, String)> = gen_images
            .into_iter()
            .map(|(gid, pos, format, key)| (generation_image_path(gid, pos, &format), key))
            .collect();
        images.extend(
            ref_images
                .into_iter()
                .map(|(id, ct, key)| (reference_image_path(id, &ct), key)),
        );

        let total = SECTIONS.len() + images.len();
        let mut done = 0usize;
        for (file, shape, sql) in SECTIONS {
            write_section(&mut conn, zip, file, *shape, sql, user_id).await?;
            done += 1;
            set_progress(&mut conn, row.id, done, total).await?;
        }

        let mut missing = Vec::new();
        // The next objects are requested ahead, so their round trips overlap (a small object's
        // time is mostly waiting for its last segment); the archive is still written in order.
        let count = images.len();
        let store = &self.store;
        let mut objects = futures::stream::iter(images)
            .map(|(path, key): (String, String)| async move {
                let object = store.get(&key).await;
                (path, key, object)
            })
            .buffered(PREFETCH);
        let mut i = 0;
        while let Some((path, key, object)) = objects.next().await {
            if job.cancel.is_cancelled() {
                anyhow::bail!("the worker is stopping");
            }
            match object {
                Ok(object) => {
                    zip.begin(&path).await?;
                    let mut body = object.body;
                    while let Some(chunk) = body.next().await {
                        zip.data(&chunk.with_context(|| format!("reading {key}"))?)
                            .await?;
                    }
                    zip.end().await?;
                }
                // Deleted since the row was read: list it rather than fail the whole export.
                Err(StorageError::NotFound) => missing.push(path),
                Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {key}"))),
            }
            done += 1;
            i += 1;
            if i % 10 == 0 || i == count {
                set_progress(&mut conn, row.id, done, total).await?;
            }
        }

        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            generated_at,
            user_id,
            export_id: row.id,
            files: ManifestFiles(&zip.entries),
            missing_files: &missing,
        };
        zip.write_file("manifest.json", &serde_json::to_vec_pretty(&manifest)?)
            .await?;
        zip.finish().await
    }
}

fn generation_image_path(generation_id: Uuid, position: i32, format: &str) -> String {
    let ext = if format == "jpeg" { "jpg" } else { format };
    format!("images/generations/{generation_id}/{position}.{ext}")
}

fn reference_image_path(id: Uuid, content_type: &str) -> String {
    let ext = match content_type {
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        _ => "png",
    };
    format!("images/references/{id}.{ext}")
}

/// Progress below 100 until the archive is stored: 100 means downloadable.
async fn set_progress(
    conn: &mut AsyncPgConnection,
    export_id: Uuid,
    done: usize,
    total: usize,
) -> QueryResult<()> {
    let pct = i32::try_from(done * 99 / total.max(1)).unwrap_or(99);
    diesel::update(exports::table.find(export_id))
        .set(exports::progress.eq(pct))
        .execute(conn)
        .await
        .map(|_| ())
}

#[derive(QueryableByName)]
struct JsonRow {
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    value: Value,
}

/// Writes one section as `serde_json::to_vec_pretty` would write its whole value.
async fn write_section(
    conn: &mut AsyncPgConnection,
    zip: &mut ZipOut,
    file: &str,
    shape: Shape,
    sql: &str,
    user_id: Uuid,
) -> anyhow::Result<()> {
    let query = diesel::sql_query(sql).bind::<diesel::sql_types::Uuid, _>(user_id);
    if let Shape::One = shape {
        let row = query.get_result::<JsonRow>(conn).await?;
        return zip
            .write_file(file, &serde_json::to_vec_pretty(&row.value)?)
            .await;
    }
    zip.begin(file).await?;
    let mut rows = std::pin::pin!(query.load_stream::<JsonRow>(conn).await?);
    let mut written = 0usize;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await {
        // An array element, pretty-printed one level in.
        out.clear();
        out.extend_from_slice(if written == 0 { b"[\n" } else { b",\n" });
        let pretty = serde_json::to_vec_pretty(&row?.value)?;
        for (i, line) in pretty.split(|b| *b == b'\n').enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            out.extend_from_slice(b"  ");
            out.extend_from_slice(line);
        }
        zip.data(&out).await?;
        written += 1;
    }
    zip.data(if written == 0 { b"[]" } else { b"\n]" }).await?;
    zip.end().await
}

/// What a section's query returns.
#[derive(Clone, Copy)]
enum Shape {
    /// One row: the file's whole document.
    One,
    /// A row per array element, in order: streamed, so a long history is never held whole.
    Many,
}

/// One JSON file per section, each query naming its columns: no password, token or API-key
/// hash, webhook secret or internal payment pseudonym is ever selected. `$1` is the user id.
const SECTIONS: &[(&str, Shape, &str)] = &[
    (
        "profile.json",
        Shape::One,
        "SELECT to_jsonb(t) AS value FROM (
            SELECT id, email, name, avatar_url, email_verified_at, terms_version,
                   terms_accepted_at, created_at, updated_at
            FROM users WHERE id = $1) t",
    ),
    (
        "identities.json",
        Shape::Many,
        "SELECT to_jsonb(t) AS value FROM (
            SELECT id, provider, subject, email, created_at, last_used_at
            FROM identities WHERE user_id = $1) t ORDER BY t.created_at, t.id",
    ),
    (
        "sessions.json",
        Shape::Many,
        "SELECT to_jsonb(t) AS value FROM (
            SELECT id, client, auth_method, ip, user_agent, created_at, last_used_at, last_ip,
                   last_user_agent, expires_at, revoked_at, revoked_reason
            FROM sessions WHERE user_id = $1) t ORDER BY t.created_at, t.id",
    ),
    (
        "activity.json",
        Shape::Many,
        "SELECT to_jsonb(t) AS value FROM (
            SELECT id, kind, ip, user_agent, details, created_at
            FROM activity_events WHERE user_id = $1) t ORDER BY t.created_at, t.id",
    ),
    (
        "consents.json",
        Shape::Many,
        "SELECT to_jsonb(t) AS value FROM (
            SELECT id, analytics, marketing, policy_version, ip, created_at
            FROM consents WHERE user_id = $1) t ORDER BY t.created_at, t.id",
    ),
    (
        "api_keys.json",
        Shape::Many,
        "SELECT to_jsonb(t) AS value FROM (
            SELECT id, name, prefix, expires_at, daily_credit_limit, last_used_at, revoked_at,
                   created_at
            FROM api_keys WHERE user_id = $1) t ORDER BY t.created_at, t.id",
    ),
    (
        "generations.json",
        Shape::Many,
        "SELECT to_jsonb(t) AS value FROM (
            SELECT g.id, g.status, g.prompt, g.params, g.provider, g.cost_credits, g.api_key_id,
                   g.error_code, g.error_message, g.created_at, g.started_at, g.finished_at,
                   coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'id', i.id, 'position', i.position, 'format', i.format,
                        'width', i.width, 'height', i.height, 'bytes', i.bytes,
                        'created_at', i.created_at,
                        'file', 'images/generations/' || g.id || '/' || i.position || '.' ||
                                CASE i.format WHEN 'jpeg' THEN 'jpg' ELSE i.format END)
                        ORDER BY i.position)
                     FROM generation_images i WHERE i.generation_id = g.id), '[]') AS images
            FROM generations g WHERE g.user_id = $1) t ORDER BY t.created_at, t.id",
    ),
    (
        "reference_images.json",
        Shape::Many,
        "SELECT to_jsonb(t) AS value FROM (
            SELECT id, content_type, width, height, bytes, created_at,
                   'images/references/' || id || '.' || CASE content_type
                       WHEN 'image/jpeg' THEN 'jpg' WHEN 'image/webp' THEN 'webp' ELSE 'png'
                   END AS file
            FROM reference_images WHERE user_id = $1) t ORDER BY t.created_at, t.id",
    ),
    (
        "credits_ledger.json",
        Shape::One,
        "SELECT jsonb_build_object(
            'balance', (SELECT to_jsonb(a) FROM (
                SELECT available, held, updated_at FROM credit_accounts WHERE user_id = $1) a),
            'grants', (SELECT coalesce(jsonb_agg(to_jsonb(g) ORDER BY g.created_at, g.id), '[]') FROM (
                SELECT id, source, amount, remaining, expires_at, expired_at, description, created_at
                FROM credit_grants WHERE user_id = $1) g),
            'entries', (SELECT coalesce(jsonb_agg(to_jsonb(e) ORDER BY e.created_at, e.id), '[]') FROM (
                SELECT id, kind, available_delta, held_delta, grant_id, hold_id, description, created_at
                FROM ledger_entries WHERE user_id = $1) e)
        ) AS value",
    ),
    (
        "billing_transactions.json",
        Shape::Many,
        "SELECT to_jsonb(t) AS value FROM (
            SELECT id, provider, kind, provider_reference, item_id, amount_cents, currency,
                   credits, refunded_transaction_id, credits_lost, created_at
            FROM billing_transactions WHERE user_id = $1) t ORDER BY t.created_at, t.id",
    ),
    (
        "subscription.json",
        Shape::Many,
        "SELECT to_jsonb(t) AS value FROM (
            SELECT id, provider, provider_subscription_id, plan_id, status, current_period_end,
                   cancel_at_period_end, created_at, updated_at
            FROM subscriptions WHERE user_id = $1) t ORDER BY t.created_at, t.id",
    ),
    (
        "support_requests.json",
        Shape::Many,
        "SELECT to_jsonb(t) AS value FROM (
            SELECT id, subject, message, created_at
            FROM support_requests WHERE user_id = $1) t ORDER BY t.created_at, t.id",
    ),
    (
        "policy_notices.json",
        Shape::Many,
        "SELECT to_jsonb(t) AS value FROM (
            SELECT version, queued_at FROM policy_notices WHERE user_id = $1) t ORDER BY t.queued_at, t.version",
    ),
];

/// Objects requested ahead of the one being written: two hide most of each GET's latency
/// here; four were faster still but raised the peak RSS past 64 MiB (`bench/export.sh`).
const PREFETCH: usize = 2;

/// Flushes to the store in chunks of about this size.
const CHUNK: usize = 64 * 1024;
const FLAGS: u16 = 0x0008 | 0x0800; // data descriptor follows; UTF-8 names
const VERSION: u16 = 20;
/// ZIP64 is needed to describe this entry or archive.
const VERSION_ZIP64: u16 = 45;

/// A finished entry: what the central directory and the manifest say of it.
struct CentralEntry {
    name: String,
    crc: u32,
    size: u64,
    offset: u64,
    sha256: [u8; 32],
}

/// `manifest.json`: every file before it, with its SHA-256 and byte count.
#[derive(serde::Serialize)]
struct Manifest<'a> {
    schema_version: u32,
    generated_at: DateTime<Utc>,
    user_id: Uuid,
    export_id: Uuid,
    files: ManifestFiles<'a>,
    missing_files: &'a [String],
}

/// Serialized straight from the entries (no copy per file).
struct ManifestFiles<'a>(&'a [CentralEntry]);

impl serde::Serialize for ManifestFiles<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct File<'a> {
            path: &'a str,
            sha256: String,
            bytes: u64,
        }
        s.collect_seq(self.0.iter().map(|e| File {
            path: &e.name,
            sha256: hex::encode(e.sha256),
            bytes: e.size,
        }))
    }
}

struct Current {
    name: String,
    offset: u64,
    crc: crc32fast::Hasher,
    sha: Sha256,
    size: u64,
}

/// A streaming writer of STORED ZIP entries into a channel of chunks. Like Go's archive/zip,
/// it switches to ZIP64 fields only for values that do not fit 32 (or 16) bits, so small
/// archives stay readable by every tool.
struct ZipOut {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: BytesMut,
    offset: u64,
    dos_time: u16,
    dos_date: u16,
    entries: Vec<CentralEntry>,
    current: Option<Current>,
    /// Values at or above this need ZIP64 (lowered in tests to exercise that path).
    limit32: u64,
    limit16: usize,
}

impl ZipOut {
    fn new(tx: mpsc::Sender<std::io::Result<Bytes>>) -> Self {
        Self {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
            offset: 0,
            dos_time: 0,
            dos_date: 0x21, // 1980-01-01
            entries: Vec::new(),
            current: None,
            limit32: u64::from(u32::MAX),
            limit16: usize::from(u16::MAX),
        }
    }

    fn set_time(&mut self, at: DateTime<Utc>) {
        let year = u16::try_from(at.year().clamp(1980, 2107) - 1980).unwrap_or(0);
        self.dos_date = (year << 9) | ((at.month() as u16) << 5) | at.day() as u16;
        self.dos_time =
            ((at.hour() as u16) << 11) | ((at.minute() as u16) << 5) | (at.second() as u16 / 2);
    }

    async fn raw(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.buf.extend_from_slice(data);
        self.offset += data.len() as u64;
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .send(Ok(chunk))
            .await
            .map_err(|_| anyhow::anyhow!("the upload stopped reading"))
    }

    /// A 32-bit field: the value, or the ZIP64 marker when it does not fit.
    fn field32(&self, value: u64) -> u32 {
        if value >= self.limit32 {
            u32::MAX
        } else {
            value as u32
        }
    }

    async fn begin(&mut self, name: &str) -> anyhow::Result<()> {
        let mut h = BytesMut::with_capacity(30 + name.len());
        h.put_u32_le(0x0403_4b50);
        h.put_u16_le(VERSION);
        h.put_u16_le(FLAGS);
        h.put_u16_le(0); // stored
        h.put_u16_le(self.dos_time);
        h.put_u16_le(self.dos_date);
        h.put_u32_le(0); // crc and sizes are in the data descriptor
        h.put_u32_le(0);
        h.put_u32_le(0);
        h.put_u16_le(u16::try_from(name.len())?);
        h.put_u16_le(0);
        h.put_slice(name.as_bytes());
        let offset = self.offset;
        self.raw(&h).await?;
        self.current = Some(Current {
            name: name.to_string(),
            offset,
            crc: crc32fast::Hasher::new(),
            sha: Sha256::new(),
            size: 0,
        });
        Ok(())
    }

    async fn data(&mut self, data: &[u8]) -> anyhow::Result<()> {
        let current = self.current.as_mut().context("zip data outside an entry")?;
        current.crc.update(data);
        current.sha.update(data);
        current.size += data.len() as u64;
        self.raw(data).await
    }

    async fn end(&mut self) -> anyhow::Result<()> {
        let current = self.current.take().context("no zip entry to end")?;
        let crc = current.crc.finalize();
        let size = current.size;
        let mut d = BytesMut::with_capacity(24);
        d.put_u32_le(0x0807_4b50);
        d.put_u32_le(crc);
        // Readers take the sizes from the central directory; 8-byte ones here when needed.
        if size >= self.limit32 {
            d.put_u64_le(size);
            d.put_u64_le(size);
        } else {
            d.put_u32_le(size as u32);
            d.put_u32_le(size as u32);
        }
        self.raw(&d).await?;
        self.entries.push(CentralEntry {
            name: current.name,
            crc,
            size,
            offset: current.offset,
            sha256: current.sha.finalize().into(),
        });
        Ok(())
    }

    async fn write_file(&mut self, name: &str, body: &[u8]) -> anyhow::Result<()> {
        self.begin(name).await?;
        for chunk in body.chunks(CHUNK) {
            self.data(chunk).await?;
        }
        self.end().await
    }

    /// Writes the central directory and its end records, and flushes everything.
    async fn finish(&mut self) -> anyhow::Result<()> {
        let start = self.offset;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let zip64 = e.size >= self.limit32 || e.offset >= self.limit32;
            let version = if zip64 { VERSION_ZIP64 } else { VERSION };
            let mut c = BytesMut::with_capacity(46 + e.name.len() + 28);
            c.put_u32_le(0x0201_4b50);
            c.put_u16_le((3 << 8) | version); // made by: Unix
            c.put_u16_le(version);
            c.put_u16_le(FLAGS);
            c.put_u16_le(0);
            c.put_u16_le(self.dos_time);
            c.put_u16_le(self.dos_date);
            c.put_u32_le(e.crc);
            // With ZIP64 all three values move to the extra field, in this order.
            let (size, offset) = if zip64 {
                (u32::MAX, u32::MAX)
            } else {
                (self.field32(e.size), self.field32(e.offset))
            };
            c.put_u32_le(size);
            c.put_u32_le(size);
            c.put_u16_le(u16::try_from(e.name.len())?);
            c.put_u16_le(if zip64 { 28 } else { 0 }); // extra
            c.put_u16_le(0); // comment
            c.put_u16_le(0); // disk
            c.put_u16_le(0); // internal attributes
            c.put_u32_le(0o100_644 << 16); // a regular file, rw-r--r--
            c.put_u32_le(offset);
            c.put_slice(e.name.as_bytes());
            if zip64 {
                c.put_u16_le(0x0001);
                c.put_u16_le(24);
                c.put_u64_le(e.size);
                c.put_u64_le(e.size);
                c.put_u64_le(e.offset);
            }
            self.raw(&c).await?;
        }
        let end64_offset = self.offset;
        let size = end64_offset - start;
        let count = entries.len();
        if count >= self.limit16 || size >= self.limit32 || start >= self.limit32 {
            let mut z = BytesMut::with_capacity(76);
            z.put_u32_le(0x0606_4b50);
            z.put_u64_le(44); // the record's size after this field
            z.put_u16_le((3 << 8) | VERSION_ZIP64);
            z.put_u16_le(VERSION_ZIP64);
            z.put_u32_le(0);
            z.put_u32_le(0);
            z.put_u64_le(count as u64);
            z.put_u64_le(count as u64);
            z.put_u64_le(size);
            z.put_u64_le(start);
            // The locator.
            z.put_u32_le(0x0706_4b50);
            z.put_u32_le(0);
            z.put_u64_le(end64_offset);
            z.put_u32_le(1);
            self.raw(&z).await?;
        }
        let count16 = if count >= self.limit16 {
            u16::MAX
        } else {
            count as u16
        };
        let mut end = BytesMut::with_capacity(22);
        end.put_u32_le(0x0605_4b50);
        end.put_u16_le(0);
        end.put_u16_le(0);
        end.put_u16_le(count16);
        end.put_u16_le(count16);
        end.put_u32_le(self.field32(size));
        end.put_u32_le(self.field32(start));
        end.put_u16_le(0);
        self.raw(&end).await?;
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn archive(limit32: u64, limit16: usize) -> Vec<u8> {
        let (tx, rx) = mpsc::channel(1024);
        let mut zip = ZipOut::new(tx);
        zip.limit32 = limit32;
        zip.limit16 = limit16;
        zip.set_time("2026-11-29T12:34:56Z".parse().unwrap());
        zip.write_file("a.json", b"{\"a\": 1}").await.unwrap();
        zip.begin("images/b.bin").await.unwrap();
        for i in 0..3u8 {
            zip.data(&vec![i; 70_000]).await.unwrap();
        }
        zip.end().await.unwrap();
        zip.finish().await.unwrap();
        drop(zip);
        let chunks: Vec<_> = rx.collect().await;
        chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect()
    }

    fn read(bytes: Vec<u8>) -> Vec<(String, Vec<u8>)> {
        use std::io::Read;
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut f = archive.by_index(i).unwrap();
                let mut data = Vec::new();
                f.read_to_end(&mut data).unwrap();
                (f.name().unwrap().to_string(), data)
            })
            .collect()
    }

    #[tokio::test]
    async fn archives_read_back_with_and_without_zip64() {
        let mut big = vec![0u8; 70_000];
        big.extend(vec![1u8; 70_000]);
        big.extend(vec![2u8; 70_000]);
        let expected = vec![
            ("a.json".to_string(), b"{\"a\": 1}".to_vec()),
            ("images/b.bin".to_string(), big),
        ];
        assert_eq!(read(archive(u64::from(u32::MAX), 0xFFFF).await), expected);
        // Tiny limits force every ZIP64 field: sizes, offsets, counts and the end records.
        assert_eq!(read(archive(1, 1).await), expected);
    }
}
