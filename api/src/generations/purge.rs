//! The `purge_generation` job: a generation that ended without success (canceled or
//! failed) keeps nothing in the store. Every object under its prefix goes (the partial
//! images a streaming model sent, and final images stored just before a cancel or a failed
//! commit), then its partial-image rows.
//!
//! It is queued in the transaction that ends the generation
//! ([`super::job::finish_unsuccessfully`], which every cancel, delete, failure, deadline and
//! orphan sweep goes through), so no path skips it and a store outage only delays it. It
//! can run any number of times. A partial image still being stored when the generation
//! ends is removed by the job that stored it (`job::keep_partials` checks the status under
//! a row lock after each upload), so nothing lands after the purge.

use std::sync::Arc;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::json;
use uuid::Uuid;

use crate::{
    db::{DbPool, schema::generation_partials},
    jobs::{self, JobContext, JobError, JobHandler, NewJob},
    storage::ObjectStore,
};

pub const KIND: &str = "purge_generation";

/// The prefix every object of a generation is stored under.
pub fn prefix(user_id: Uuid, generation_id: Uuid) -> String {
    format!("users/{user_id}/generations/{generation_id}/")
}

/// Queues the purge on the caller's connection (inside the transaction that ended the
/// generation).
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    generation_id: Uuid,
) -> QueryResult<Uuid> {
    jobs::enqueue(
        conn,
        NewJob::new(
            KIND,
            json!({ "user_id": user_id, "generation_id": generation_id }),
        )
        .max_attempts(10),
    )
    .await
}

pub struct PurgeGenerationHandler {
    pub pool: DbPool,
    pub store: Arc<dyn ObjectStore>,
}

fn retry<E: std::fmt::Display>(e: E) -> JobError {
    JobError::Retryable(anyhow::anyhow!("{e}"))
}

#[async_trait::async_trait]
impl JobHandler for PurgeGenerationHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, job: &JobContext) -> Result<(), JobError> {
        let id = |name: &str| {
            job.payload
                .get(name)
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse::<Uuid>().ok())
                .ok_or_else(|| JobError::Permanent(anyhow::anyhow!("payload has no {name}")))
        };
        let (user_id, generation_id) = (id("user_id")?, id("generation_id")?);
        let mut conn = self.pool.get().await.map_err(retry)?;
        purge(&mut conn, self.store.as_ref(), user_id, generation_id)
            .await
            .map_err(retry)
    }
}

/// Deletes every object of an ended generation, then its partial-image rows; what the job
/// does, also run at once by a cancel so that its previews stop being served from that
/// moment (the job, queued with the cancel, still covers a failure here).
pub async fn purge(
    conn: &mut AsyncPgConnection,
    store: &dyn ObjectStore,
    user_id: Uuid,
    generation_id: Uuid,
) -> anyhow::Result<()> {
    // Objects first: a row left by a failed run still names what to delete next time.
    let deleted = store.delete_prefix(&prefix(user_id, generation_id)).await?;
    diesel::delete(
        generation_partials::table.filter(generation_partials::generation_id.eq(generation_id)),
    )
    .execute(conn)
    .await?;
    if deleted > 0 {
        tracing::info!(generation_id = %generation_id, objects = deleted, "purged an unsuccessful generation's objects");
    }
    Ok(())
}
