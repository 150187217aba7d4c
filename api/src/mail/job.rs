//! The `send_mail` job: delivers one outbox mail, at most once after it is marked sent.

use std::sync::Arc;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::{Mailer, OutboxMail};
use crate::{
    db::{DbPool, schema::outbox_mails},
    jobs::{JobContext, JobError, JobHandler},
};

pub const KIND: &str = "send_mail";

pub struct SendMailHandler {
    pub pool: DbPool,
    pub mailer: Arc<dyn Mailer>,
}

#[async_trait::async_trait]
impl JobHandler for SendMailHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, job: &JobContext) -> Result<(), JobError> {
        let mail_id: Uuid = job
            .payload
            .get("mail_id")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| JobError::Permanent(anyhow::anyhow!("payload has no mail_id")))?;
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| JobError::Retryable(e.into()))?;
        let mail: Option<OutboxMail> = outbox_mails::table
            .find(mail_id)
            .select(OutboxMail::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(|e| JobError::Retryable(e.into()))?;
        // Gone (its user was erased) or already delivered: nothing to do.
        let Some(mail) = mail.filter(|m| m.status == "pending") else {
            return Ok(());
        };
        // Do not hold a pooled connection across a slow SMTP exchange.
        drop(conn);
        let result = self.mailer.send(&mail).await;
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| JobError::Retryable(e.into()))?;
        let update = diesel::update(outbox_mails::table.find(mail_id));
        match result {
            Ok(()) => {
                update
                    .set((
                        outbox_mails::status.eq("sent"),
                        outbox_mails::sent_at.eq(diesel::dsl::now),
                        outbox_mails::attempts.eq(outbox_mails::attempts + 1),
                        outbox_mails::last_error.eq(None::<String>),
                    ))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| JobError::Retryable(e.into()))?;
                tracing::info!(mail_id = %mail_id, template = %mail.template, "mail sent");
                Ok(())
            }
            Err(err) => {
                let last = job.attempt >= job.max_attempts;
                update
                    .set((
                        outbox_mails::attempts.eq(outbox_mails::attempts + 1),
                        outbox_mails::last_error.eq(format!("{err:#}")),
                        outbox_mails::status.eq(if last { "failed" } else { "pending" }),
                    ))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| JobError::Retryable(e.into()))?;
                tracing::warn!(mail_id = %mail_id, attempt = job.attempt, error = format!("{err:#}"), "mail delivery failed; will retry");
                Err(JobError::Retryable(err))
            }
        }
    }
}
