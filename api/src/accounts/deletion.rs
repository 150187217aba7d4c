//! Account erasure, after `DELETE /v1/me` disabled the account (which stops every session,
//! access token and API key at once), queued the confirmation mail and enqueued
//! `delete_account` `{user_id, mail_id}` in one transaction.
//!
//! `delete_account` is idempotent: every step can run again after a crash at any point.
//! 1. Cancel the user's live subscriptions at their provider (unconfigured providers are
//!    skipped and logged).
//! 2. Drop the user's queued generation and export jobs and wait for running ones, which
//!    could still write objects.
//! 3. Delete every object under `users/{id}/` (images, reference images, exports).
//! 4. In one transaction: delete the user's other mails, rate-limit windows (exactly those of
//!    the user's address and id), idempotency records and jobs naming the user or their rows,
//!    then the user row. Everything else cascades; `billing_transactions` rows stay for bookkeeping with `user_id` set NULL by
//!    their foreign key, keeping only the random `anonymous_user_id` (they never hold a
//!    name or an address).
//! 5. Delete the objects once more, for anything written between 3 and 4.
//! 6. Enqueue `purge_account_mail` and scrub this job's own payload, so no job row names
//!    the user afterwards; a run that finds the payload scrubbed has nothing left to do.
//!
//! The confirmation mail is the one thing left holding the address: `send_mail` skips
//! mails whose outbox row is gone, so the row must outlive the erasure until delivered.
//! `purge_account_mail` `{mail_id}` deletes it once it is sent (or has finally failed),
//! re-scheduling itself while delivery is still pending.

use std::time::Duration;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{BigInt, Nullable, Text, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    accounts::users as accounts,
    auth::rate_limit,
    billing,
    db::schema::{outbox_mails, subscriptions, users},
    jobs::{self, JobContext, JobError, JobHandler, NewJob},
    state::AppState,
};

pub const KIND: &str = "delete_account";
pub const PURGE_MAIL_KIND: &str = "purge_account_mail";
/// With the worker's backoff (capped at an hour) this is most of a day of retries.
pub const MAX_ATTEMPTS: i32 = 12;

/// Subscription statuses that need no cancellation.
const ENDED: [&str; 3] = ["canceled", "incomplete_expired", "expired"];

/// Re-checks of a pending confirmation before it is purged regardless (a few days).
const MAX_MAIL_CHECKS: u32 = 80;

fn retry(err: impl Into<anyhow::Error>) -> JobError {
    JobError::Retryable(err.into())
}

#[derive(Deserialize)]
struct Payload {
    user_id: Option<Uuid>,
    mail_id: Option<Uuid>,
}

/// The payload `DELETE /v1/me` enqueues.
pub fn job(user_id: Uuid, confirmation_mail_id: Uuid) -> NewJob {
    NewJob::new(
        KIND,
        serde_json::json!({ "user_id": user_id, "mail_id": confirmation_mail_id }),
    )
    .max_attempts(MAX_ATTEMPTS)
}

pub struct DeleteAccountHandler {
    pub state: AppState,
}

#[async_trait::async_trait]
impl JobHandler for DeleteAccountHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, job: &JobContext) -> Result<(), JobError> {
        let payload: Payload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::Permanent(anyhow!("bad payload: {e}")))?;
        // Scrubbed by step 6: the erasure finished and only the success mark was lost.
        let Some(user_id) = payload.user_id else {
            return Ok(());
        };
        // On the last attempt, what cannot be done (a provider down, a stuck generation) is
        // logged and skipped: the erasure itself must not be held back forever.
        let last_attempt = job.attempt >= job.max_attempts;
        let mut conn = self.state.pool.get().await.map_err(retry)?;
        let disabled: Option<Option<DateTime<Utc>>> = users::table
            .find(user_id)
            .select(users::disabled_at)
            .first(&mut conn)
            .await
            .optional()
            .map_err(retry)?;
        if let Some(None) = disabled {
            return Err(JobError::Permanent(anyhow!(
                "the account is not disabled; refusing to erase it"
            )));
        }
        if disabled.is_some() {
            cancel_subscriptions(&self.state, &mut conn, job.id, user_id, last_attempt).await?;
            stop_writers(&mut conn, user_id, last_attempt).await?;
        }
        // Do not hold a pooled connection across slow object-store calls.
        drop(conn);
        delete_objects(&self.state, job.id, user_id).await?;
        let mut conn = self.state.pool.get().await.map_err(retry)?;
        erase_rows(&mut conn, job.id, user_id, payload.mail_id).await?;
        drop(conn);
        delete_objects(&self.state, job.id, user_id).await?;
        let mut conn = self.state.pool.get().await.map_err(retry)?;
        finish(&mut conn, job.id, payload.mail_id).await?;
        tracing::info!(job_id = %job.id, "account erased");
        Ok(())
    }
}

async fn cancel_subscriptions(
    state: &AppState,
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    user_id: Uuid,
    last_attempt: bool,
) -> Result<(), JobError> {
    let live: Vec<(Uuid, String, String)> = subscriptions::table
        .filter(subscriptions::user_id.eq(user_id))
        .filter(subscriptions::status.ne_all(ENDED))
        .select((
            subscriptions::id,
            subscriptions::provider,
            subscriptions::provider_subscription_id,
        ))
        .load(conn)
        .await
        .map_err(retry)?;
    for (id, provider_name, subscription) in live {
        let Ok(provider) = billing::provider(state, &provider_name) else {
            tracing::warn!(%job_id, provider = %provider_name, %subscription, "cannot cancel a subscription: the provider is not configured here");
            continue;
        };
        match provider.cancel_subscription(state, &subscription).await {
            // Remembered, so a re-run does not cancel it twice.
            Ok(()) => {
                diesel::update(subscriptions::table.find(id))
                    .set((
                        subscriptions::status.eq("canceled"),
                        subscriptions::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn)
                    .await
                    .map_err(retry)?;
            }
            Err(err) if last_attempt => {
                tracing::error!(%job_id, provider = %provider_name, %subscription, error = %err, "could not cancel a subscription; erasing the account anyway");
            }
            Err(err) => {
                return Err(retry(anyhow!(
                    "cancelling a {provider_name} subscription failed: {err}"
                )));
            }
        }
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Jobs that write the user's objects: their generations (by the generation's `job_id` or
/// the payload) and exports.
const WRITER_JOBS: &str =
    "(j.id IN (SELECT job_id FROM generations WHERE user_id = $1 AND job_id IS NOT NULL)
      OR j.payload->>'generation_id' IN (SELECT id::text FROM generations WHERE user_id = $1)
      OR j.payload->>'export_id' IN (SELECT id::text FROM exports WHERE user_id = $1))";

/// Queued generation and export jobs go; running ones could still write objects after those
/// are deleted, so the erasure waits for them (retrying with backoff).
async fn stop_writers(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    last_attempt: bool,
) -> Result<(), JobError> {
    diesel::sql_query(format!(
        "DELETE FROM jobs j WHERE j.status = 'queued' AND {WRITER_JOBS}"
    ))
    .bind::<SqlUuid, _>(user_id)
    .execute(conn)
    .await
    .map_err(retry)?;
    let running = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM jobs j WHERE j.status = 'running' AND {WRITER_JOBS}"
    ))
    .bind::<SqlUuid, _>(user_id)
    .get_result::<Count>(conn)
    .await
    .map_err(retry)?
    .n;
    if running > 0 && !last_attempt {
        return Err(retry(anyhow!(
            "waiting for {running} running generation or export job(s) to finish"
        )));
    }
    Ok(())
}

async fn delete_objects(state: &AppState, job_id: Uuid, user_id: Uuid) -> Result<(), JobError> {
    match state
        .store
        .delete_prefix(&format!("users/{user_id}/"))
        .await
    {
        Ok(n) => {
            tracing::debug!(%job_id, objects = n, "deleted the account's objects");
            Ok(())
        }
        Err(err) => {
            tracing::warn!(%job_id, error = %err, "deleting the account's objects failed");
            // Not the store's message: it names the key, and so the user, in the job row.
            Err(retry(anyhow!("deleting the account's objects failed")))
        }
    }
}

/// Deletes every row that names the user, then the user row (which cascades to the rest).
async fn erase_rows(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    user_id: Uuid,
    confirmation: Option<Uuid>,
) -> Result<(), JobError> {
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        let email: Option<String> = users::table
            .find(user_id)
            .select(users::email)
            .for_update()
            .first(conn)
            .await
            .optional()?;
        // Gone: an earlier run committed this transaction.
        let Some(email) = email else {
            return Ok(());
        };
        // Jobs naming the user or their generations, webhook deliveries and mails; never a
        // running one (its worker owns it), this job (scrubbed at the end) or the
        // confirmation's delivery.
        diesel::sql_query(format!(
            "DELETE FROM jobs j WHERE j.id <> $2 AND j.status <> 'running' AND (
                 strpos(j.payload::text, $1::text) > 0
              OR strpos(coalesce(j.last_error, ''), $1::text) > 0
              OR {WRITER_JOBS}
              OR j.payload->>'delivery_id' IN (SELECT id::text FROM webhook_deliveries WHERE user_id = $1)
              OR (j.payload->>'mail_id' IN (SELECT id::text FROM outbox_mails WHERE lower(to_address) = lower($3))
                  AND j.payload->>'mail_id' IS DISTINCT FROM $4::text))"
        ))
        .bind::<SqlUuid, _>(user_id)
        .bind::<SqlUuid, _>(job_id)
        .bind::<Text, _>(&email)
        .bind::<Nullable<Text>, _>(confirmation.map(|id| id.to_string()))
        .execute(conn)
        .await?;
        diesel::sql_query(
            // Mails to the user, and support requests sent on their behalf (Reply-To them).
            "DELETE FROM outbox_mails WHERE (lower(to_address) = lower($1)
                                            OR lower(headers->>'Reply-To') = lower($1))
                                       AND id IS DISTINCT FROM $2",
        )
        .bind::<Text, _>(&email)
        .bind::<Nullable<SqlUuid>, _>(confirmation)
        .execute(conn)
        .await?;
        // Rate-limit windows of exactly this address (sign-in failures, reset mails) and this
        // id (resends, support requests, deletion attempts); nobody else's.
        let (address, id) = (accounts::normalize_email(&email), user_id.to_string());
        rate_limit::forget(conn, &[&address, &id]).await?;
        // Replayable answers are stored by hash of the caller only; find the user's by what
        // they say: the user's id or address, or the id of one of their generations or
        // reference images.
        diesel::sql_query(
            "DELETE FROM idempotency_keys k WHERE k.response_body IS NOT NULL AND (
                 position(convert_to($1::text, 'UTF8') IN k.response_body) > 0
              OR position(convert_to($2, 'UTF8') IN k.response_body) > 0
              OR position(convert_to(lower($2), 'UTF8') IN k.response_body) > 0
              OR EXISTS (SELECT 1 FROM generations g WHERE g.user_id = $1
                         AND position(convert_to(g.id::text, 'UTF8') IN k.response_body) > 0)
              OR EXISTS (SELECT 1 FROM reference_images r WHERE r.user_id = $1
                         AND position(convert_to(r.id::text, 'UTF8') IN k.response_body) > 0))",
        )
        .bind::<SqlUuid, _>(user_id)
        .bind::<Text, _>(&email)
        .execute(conn)
        .await?;
        diesel::delete(users::table.find(user_id))
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
    .map_err(retry)
}

/// Hands the confirmation over to `purge_account_mail` and scrubs this job's row, in one
/// transaction: a re-run then finds nothing to do and enqueues nothing twice.
async fn finish(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    confirmation: Option<Uuid>,
) -> Result<(), JobError> {
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        if let Some(mail_id) = confirmation {
            jobs::enqueue(conn, purge_job(mail_id, 0)).await?;
        }
        diesel::sql_query(
            "UPDATE jobs SET payload = '{}'::jsonb, last_error = NULL, updated_at = now() WHERE id = $1",
        )
        .bind::<SqlUuid, _>(job_id)
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
    .map_err(retry)
}

fn purge_job(mail_id: Uuid, checks: u32) -> NewJob {
    // 5 s, 10 s, 20 s ... capped at an hour: a prompt delivery is purged within seconds.
    let delay = Duration::from_secs(5)
        .checked_mul(2u32.saturating_pow(checks))
        .map_or(Duration::from_secs(3600), |d| {
            d.min(Duration::from_secs(3600))
        });
    let job = NewJob::new(
        PURGE_MAIL_KIND,
        serde_json::json!({ "mail_id": mail_id, "checks": checks }),
    );
    if checks == 0 {
        job
    } else {
        job.run_at(Utc::now() + delay)
    }
}

#[derive(Deserialize)]
struct PurgePayload {
    mail_id: Uuid,
    #[serde(default)]
    checks: u32,
}

/// Deletes an erased account's confirmation mail once it left (or finally failed).
pub struct PurgeAccountMailHandler {
    pub state: AppState,
}

#[async_trait::async_trait]
impl JobHandler for PurgeAccountMailHandler {
    fn kind(&self) -> &'static str {
        PURGE_MAIL_KIND
    }

    async fn run(&self, job: &JobContext) -> Result<(), JobError> {
        let payload: PurgePayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::Permanent(anyhow!("bad payload: {e}")))?;
        let mut conn = self.state.pool.get().await.map_err(retry)?;
        let status: Option<String> = outbox_mails::table
            .find(payload.mail_id)
            .select(outbox_mails::status)
            .first(&mut conn)
            .await
            .optional()
            .map_err(retry)?;
        if status.as_deref() == Some("pending") && payload.checks < MAX_MAIL_CHECKS {
            // Still being delivered: look again later, as a new job so attempts are not spent.
            jobs::enqueue(&mut conn, purge_job(payload.mail_id, payload.checks + 1))
                .await
                .map_err(retry)?;
            return Ok(());
        }
        if status.as_deref() != Some("sent") {
            tracing::warn!(mail_id = %payload.mail_id, status = ?status, "purging an account-deletion confirmation that was not delivered");
        }
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            diesel::delete(outbox_mails::table.find(payload.mail_id))
                .execute(conn)
                .await?;
            // Earlier checks and the delivery job; a running one belongs to its worker.
            diesel::sql_query(
                "DELETE FROM jobs WHERE id <> $1 AND status <> 'running' AND payload->>'mail_id' = $2",
            )
            .bind::<SqlUuid, _>(job.id)
            .bind::<Text, _>(payload.mail_id.to_string())
            .execute(conn)
            .await?;
            Ok(())
        })
        .await
        .map_err(retry)
    }
}
