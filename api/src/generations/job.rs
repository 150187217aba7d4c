//! The `generate` job: calls the image provider, stores the images, and settles the credit
//! hold exactly once: on success it captures the price of what was rendered ([`charge`]:
//! an `auto` size or quality is charged as the provider made it) and releases the rest.
//! Safe to run again at any point: a finished generation is left alone, stored objects are
//! overwritten under the same keys, and capture/release happen once.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{
    params::{GenerationRequest, parse_size},
    provider::{ImageProvider, ProvidedImage, ProviderError, ProviderRequest},
};
use crate::{
    credits::ledger,
    db::{
        DbPool,
        schema::{generation_images, generation_partials, generations},
    },
    jobs::{JobContext, JobError, JobHandler},
    read_cache::ReadCache,
    storage::{self, ObjectStore},
};

pub const KIND: &str = "generate";
/// Provider calls are retried this often on transient errors.
pub const MAX_ATTEMPTS: i32 = 4;

pub struct GenerateHandler {
    pub pool: DbPool,
    /// Marked while a generation changes, so its user's cached pages wait for the commit.
    pub cache: Arc<ReadCache>,
    pub store: Arc<dyn ObjectStore>,
    pub provider: Arc<dyn ImageProvider>,
    pub deadline: Duration,
}

fn retry<E: std::fmt::Display>(e: E) -> JobError {
    JobError::Retryable(anyhow::anyhow!("{e}"))
}

pub fn object_key(user_id: Uuid, generation_id: Uuid, position: usize, format: &str) -> String {
    let ext = if format == "jpeg" { "jpg" } else { format };
    format!(
        "{}{position}.{ext}",
        super::purge::prefix(user_id, generation_id)
    )
}

/// The price of the images as rendered, never more than `held`: an `auto` size or quality
/// is charged as the provider made it, explicit ones as asked.
pub fn charge(params: &GenerationRequest, images: &[ProvidedImage], held: i64) -> i64 {
    let size = parse_size(&params.size).ok().flatten();
    let price: i64 = images
        .iter()
        .map(|image| {
            super::pricing::rendered(
                size,
                &params.quality,
                image.rendered_size,
                image.rendered_quality.as_deref(),
            )
        })
        .sum();
    if price > held {
        // A compatible server rendered beyond what `auto` resolves to: the hold is the limit.
        tracing::warn!(
            price,
            held,
            "the rendered images cost more than was held; charging the hold"
        );
    }
    price.min(held)
}

/// Ends a queued or running generation as failed or canceled and returns its credits; its
/// stored objects (partial images) are purged by a job queued in the same transaction.
/// Returns false when it had already ended.
pub async fn finish_unsuccessfully(
    conn: &mut AsyncPgConnection,
    generation_id: Uuid,
    status: &str,
    error: Option<(&str, &str)>,
) -> QueryResult<bool> {
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        let row: Option<(Uuid, String, Option<Uuid>, Option<Uuid>)> = generations::table
            .find(generation_id)
            .select((
                generations::user_id,
                generations::status,
                generations::hold_id,
                generations::job_id,
            ))
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some((user_id, current, hold, job)) = row else {
            return Ok(false);
        };
        if current != "queued" && current != "running" {
            return Ok(false);
        }
        diesel::update(generations::table.find(generation_id))
            .set((
                generations::status.eq(status),
                generations::error_code.eq(error.map(|e| e.0)),
                generations::error_message.eq(error.map(|e| e.1)),
                generations::finished_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        if let Some(hold) = hold {
            ledger::release(conn, hold).await.map_err(|e| match e {
                crate::credits::CreditError::Db(e) => e,
                other => diesel::result::Error::QueryBuilderError(other.to_string().into()),
            })?;
        }
        // A queued job that has not started yet is done with: cancel is immediate.
        if let Some(job) = job {
            diesel::sql_query("UPDATE jobs SET status = 'succeeded', finished_at = now(), updated_at = now() WHERE id = $1 AND status = 'queued'")
                .bind::<diesel::sql_types::Uuid, _>(job)
                .execute(conn)
                .await?;
        }
        // Failed and canceled generations notify their webhook too, atomically with the change.
        super::webhooks::enqueue_for(conn, generation_id).await?;
        super::purge::enqueue(conn, user_id, generation_id).await?;
        Ok(true)
    })
    .await
}

/// Cancels a queued or running generation: the whole hold is released (nothing is charged,
/// even after partial images arrived) and its partial images are deleted at once, so none
/// is served from the moment of the cancel (the purge job queued with it covers a store that
/// fails here). False when it had already ended.
pub async fn cancel(
    conn: &mut AsyncPgConnection,
    store: &dyn ObjectStore,
    user_id: Uuid,
    generation_id: Uuid,
) -> QueryResult<bool> {
    if !finish_unsuccessfully(conn, generation_id, "canceled", None).await? {
        return Ok(false);
    }
    if let Err(e) = super::purge::purge(conn, store, user_id, generation_id).await {
        tracing::warn!(generation_id = %generation_id, error = format!("{e:#}"), "deleting a canceled generation's objects failed; its purge job will");
    }
    Ok(true)
}

#[derive(Queryable)]
struct Loaded {
    user_id: Uuid,
    status: String,
    prompt: String,
    params: serde_json::Value,
    hold_id: Option<Uuid>,
    started_at: Option<chrono::DateTime<Utc>>,
}

impl GenerateHandler {
    async fn request(&self, g: &Loaded) -> Result<ProviderRequest, JobError> {
        let params: GenerationRequest = serde_json::from_value(g.params.clone()).map_err(|e| {
            JobError::Permanent(anyhow::anyhow!("stored parameters do not parse: {e}"))
        })?;
        let mut conn = self.pool.get().await.map_err(retry)?;
        let mut references = Vec::new();
        for id in &params.reference_image_ids {
            references.push(
                super::reference_images::load(&mut conn, self.store.as_ref(), g.user_id, *id)
                    .await
                    .map_err(retry)?,
            );
        }
        let mask = match params.mask_image_id {
            Some(id) => Some(
                super::reference_images::load(&mut conn, self.store.as_ref(), g.user_id, id)
                    .await
                    .map_err(retry)?,
            ),
            None => None,
        };
        Ok(ProviderRequest {
            prompt: g.prompt.clone(),
            size: parse_size(&params.size).ok().flatten(),
            quality: params.quality,
            n: params.n,
            background: params.background,
            output_format: params.output_format,
            output_compression: params.output_compression.map(|c| c.min(100) as u8),
            moderation: params.moderation,
            references,
            mask,
        })
    }

    /// Stores the images, then records them, captures the hold and marks success in one
    /// transaction — unless the generation was canceled meanwhile.
    async fn complete(
        &self,
        generation_id: Uuid,
        g: &Loaded,
        images: Vec<ProvidedImage>,
    ) -> Result<(), JobError> {
        let mut keys = Vec::new();
        for (position, image) in images.iter().enumerate() {
            let key = object_key(g.user_id, generation_id, position, &image.format);
            let content_type = format!("image/{}", image.format);
            self.store
                .put(
                    &key,
                    &content_type,
                    storage::bytes_stream(image.bytes.clone()),
                )
                .await
                .map_err(retry)?;
            keys.push(key);
        }
        let params: GenerationRequest = serde_json::from_value(g.params.clone()).map_err(|e| {
            JobError::Permanent(anyhow::anyhow!("stored parameters do not parse: {e}"))
        })?;
        let mut conn = self.pool.get().await.map_err(retry)?;
        let user_id = g.user_id;
        let hold = g.hold_id;
        let stored = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let status: String = generations::table
                    .find(generation_id)
                    .select(generations::status)
                    .for_update()
                    .first(conn)
                    .await?;
                if status != "running" && status != "queued" {
                    return Ok(false);
                }
                for (position, (image, key)) in images.iter().zip(&keys).enumerate() {
                    diesel::insert_into(generation_images::table)
                        .values((
                            generation_images::id.eq(Uuid::now_v7()),
                            generation_images::generation_id.eq(generation_id),
                            generation_images::user_id.eq(user_id),
                            generation_images::position.eq(position as i32),
                            generation_images::object_key.eq(key),
                            generation_images::format.eq(&image.format),
                            generation_images::width.eq(image.width as i32),
                            generation_images::height.eq(image.height as i32),
                            generation_images::bytes.eq(image.bytes.len() as i64),
                        ))
                        .on_conflict((
                            generation_images::generation_id,
                            generation_images::position,
                        ))
                        .do_nothing()
                        .execute(conn)
                        .await?;
                }
                // What was rendered is captured, the rest of the hold released; the
                // generation shows what was charged.
                let charged = match hold {
                    Some(hold) => {
                        let amount: i64 = crate::db::schema::credit_holds::table
                            .find(hold)
                            .select(crate::db::schema::credit_holds::amount)
                            .first(conn)
                            .await?;
                        let settled = ledger::capture(conn, hold, charge(&params, &images, amount))
                            .await
                            .map_err(|e| match e {
                                crate::credits::CreditError::Db(e) => e,
                                other => diesel::result::Error::QueryBuilderError(
                                    other.to_string().into(),
                                ),
                            })?;
                        match settled {
                            ledger::Settled::Captured(n) => Some(n),
                            ledger::Settled::Released => Some(0),
                        }
                    }
                    None => None,
                };
                diesel::update(generations::table.find(generation_id))
                    .set((
                        generations::status.eq("succeeded"),
                        generations::finished_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn)
                    .await?;
                if let Some(charged) = charged {
                    diesel::update(generations::table.find(generation_id))
                        .set(generations::cost_credits.eq(charged))
                        .execute(conn)
                        .await?;
                }
                super::webhooks::enqueue_for(conn, generation_id).await?;
                Ok(true)
            })
            .await
            .map_err(retry)?;
        if !stored {
            // Canceled while drawing: nothing is kept and nothing is charged.
            for key in keys {
                let _ = self.store.delete(&key).await;
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl JobHandler for GenerateHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, job: &JobContext) -> Result<(), JobError> {
        let result = self.attempt(job).await;
        // The last try failed (storage or database down, say): end the generation and give
        // its credits back now rather than leaving them reserved.
        if let Err(JobError::Retryable(err)) = &result
            && job.attempt >= job.max_attempts
            && let Some(id) = job
                .payload
                .get("generation_id")
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse::<Uuid>().ok())
            && let Ok(mut conn) = self.pool.get().await
        {
            tracing::warn!(generation_id = %id, error = format!("{err:#}"), "generation failed on its last attempt");
            let _ = finish_unsuccessfully(
                &mut conn,
                id,
                "failed",
                Some((
                    "internal_error",
                    "The generation could not be completed; its credits were released.",
                )),
            )
            .await;
        }
        result
    }
}

impl GenerateHandler {
    async fn attempt(&self, job: &JobContext) -> Result<(), JobError> {
        let generation_id: Uuid = job
            .payload
            .get("generation_id")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| JobError::Permanent(anyhow::anyhow!("payload has no generation_id")))?;
        let mut conn = self.pool.get().await.map_err(retry)?;
        let g: Option<Loaded> = generations::table
            .find(generation_id)
            .select((
                generations::user_id,
                generations::status,
                generations::prompt,
                generations::params,
                generations::hold_id,
                generations::started_at,
            ))
            .first(&mut conn)
            .await
            .optional()
            .map_err(retry)?;
        // Deleted, canceled or already finished: nothing left to do.
        let Some(g) = g.filter(|g| g.status == "queued" || g.status == "running") else {
            return Ok(());
        };
        let _writing = self.cache.writing(g.user_id);
        let started_at = g.started_at.unwrap_or_else(Utc::now);
        diesel::update(
            generations::table
                .find(generation_id)
                .filter(generations::status.eq_any(["queued", "running"])),
        )
        .set((
            generations::status.eq("running"),
            generations::started_at.eq(started_at),
        ))
        .execute(&mut conn)
        .await
        .map_err(retry)?;
        drop(conn);

        let remaining = self
            .deadline
            .checked_sub((Utc::now() - started_at).to_std().unwrap_or_default());
        let Some(remaining) = remaining.filter(|r| !r.is_zero()) else {
            let mut conn = self.pool.get().await.map_err(retry)?;
            finish_unsuccessfully(
                &mut conn,
                generation_id,
                "failed",
                Some((
                    "deadline_exceeded",
                    "The generation took longer than allowed.",
                )),
            )
            .await
            .map_err(retry)?;
            return Ok(());
        };
        let request = self.request(&g).await?;
        let (partials, received) = tokio::sync::mpsc::unbounded_channel();
        let keeper = tokio::spawn(keep_partials(
            self.pool.clone(),
            self.store.clone(),
            g.user_id,
            generation_id,
            request.output_format.clone(),
            received,
        ));
        let outcome = tokio::select! {
            result = tokio::time::timeout(remaining, self.provider.generate(&request, Some(partials))) => result,
            _ = self.canceled(generation_id) => return Ok(()),
            _ = job.cancel.cancelled() => return Err(JobError::Retryable(anyhow::anyhow!("worker stopping"))),
        };
        // The provider dropped its sender: the keeper finishes storing what arrived.
        let _ = keeper.await;
        let mut conn = self.pool.get().await.map_err(retry)?;
        match outcome {
            Err(_) => {
                finish_unsuccessfully(
                    &mut conn,
                    generation_id,
                    "failed",
                    Some((
                        "deadline_exceeded",
                        "The generation took longer than allowed.",
                    )),
                )
                .await
                .map_err(retry)?;
                Ok(())
            }
            Ok(Ok(images)) => {
                drop(conn);
                self.complete(generation_id, &g, images).await
            }
            Ok(Err(ProviderError::Permanent { code, message })) => {
                finish_unsuccessfully(&mut conn, generation_id, "failed", Some((&code, &message)))
                    .await
                    .map_err(retry)?;
                Ok(())
            }
            Ok(Err(ProviderError::Transient(message))) if job.attempt >= job.max_attempts => {
                finish_unsuccessfully(
                    &mut conn,
                    generation_id,
                    "failed",
                    Some(("provider_unavailable", &message)),
                )
                .await
                .map_err(retry)?;
                Ok(())
            }
            Ok(Err(ProviderError::Transient(message))) => {
                Err(JobError::Retryable(anyhow::anyhow!("provider: {message}")))
            }
        }
    }
}

/// Stores each partial image a streaming model sends, for `GET /v1/generations/{id}/events`.
/// Best effort: a partial that cannot be kept is skipped, never failing the generation.
async fn keep_partials(
    pool: DbPool,
    store: Arc<dyn ObjectStore>,
    user_id: Uuid,
    generation_id: Uuid,
    format: String,
    mut received: tokio::sync::mpsc::UnboundedReceiver<(u32, bytes::Bytes)>,
) {
    let ext = if format == "jpeg" {
        "jpg"
    } else {
        format.as_str()
    };
    while let Some((index, image)) = received.recv().await {
        let key = format!(
            "{}partial-{index}.{ext}",
            super::purge::prefix(user_id, generation_id)
        );
        if let Err(e) = store
            .put(
                &key,
                &format!("image/{format}"),
                storage::bytes_stream(image),
            )
            .await
        {
            tracing::warn!(generation_id = %generation_id, error = %e, "storing a partial image failed");
            continue;
        }
        let recorded = match pool.get().await {
            Ok(mut conn) => record_partial(&mut conn, generation_id, index, &key).await,
            Err(e) => Err(anyhow::Error::new(e)),
        };
        match recorded {
            Ok(true) => {}
            // Ended meanwhile: its purge may already have run, so this upload is undone here.
            Ok(false) => {
                if let Err(e) = store.delete(&key).await {
                    tracing::warn!(generation_id = %generation_id, error = %e, "deleting a late partial image failed");
                }
            }
            // Left in place: an earlier attempt's row may name the same key.
            Err(e) => {
                tracing::warn!(generation_id = %generation_id, error = format!("{e:#}"), "recording a partial image failed");
            }
        }
    }
}

/// Records a stored partial image while its generation is still queued or running; false
/// once it ended. The generation's row is share-locked while it is checked, so an ending
/// (which locks it for update and queues the purge) comes either before the check (then
/// false) or after this row is committed (then the purge deletes it).
async fn record_partial(
    conn: &mut AsyncPgConnection,
    generation_id: Uuid,
    index: u32,
    key: &str,
) -> anyhow::Result<bool> {
    let recorded = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let status: Option<String> = generations::table
                .find(generation_id)
                .select(generations::status)
                .for_share()
                .first(conn)
                .await
                .optional()?;
            if !matches!(status.as_deref(), Some("queued" | "running")) {
                return Ok(false);
            }
            diesel::insert_into(generation_partials::table)
                .values((
                    generation_partials::generation_id.eq(generation_id),
                    generation_partials::idx.eq(index as i32),
                    generation_partials::object_key.eq(key),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            Ok(true)
        })
        .await?;
    Ok(recorded)
}

impl GenerateHandler {
    /// Resolves when the user cancels (or deletes) the generation.
    async fn canceled(&self, generation_id: Uuid) {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Ok(mut conn) = self.pool.get().await else {
                continue;
            };
            let status: Option<String> = generations::table
                .find(generation_id)
                .select(generations::status)
                .first(&mut conn)
                .await
                .optional()
                .unwrap_or(Some("running".into()));
            if status.as_deref() != Some("running") {
                return;
            }
        }
    }
}
