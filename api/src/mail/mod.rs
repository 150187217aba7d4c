//! Mail: templates rendered into an outbox row in the caller's transaction, then delivered by
//! a `send_mail` job, so an SMTP outage delays mail but never loses it.

pub mod job;
pub mod templates;
pub mod transport;
pub mod unsubscribe;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::{
    db::schema::outbox_mails,
    jobs::{self, NewJob},
};

pub use job::SendMailHandler;
pub use transport::{LogMailer, Mailer, SmtpMailer};

/// A mail ready to deliver.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox_mails)]
pub struct OutboxMail {
    pub id: Uuid,
    pub to_address: String,
    pub template: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
    pub headers: serde_json::Value,
    pub status: String,
}

/// Delivery of one mail is retried this often (with capped exponential backoff: about a day).
pub const MAIL_MAX_ATTEMPTS: i32 = 30;

/// Renders `template` with `context` and queues it for `to`; commits with the caller's transaction.
pub async fn queue(
    conn: &mut AsyncPgConnection,
    to: &str,
    template: &str,
    context: serde_json::Value,
) -> anyhow::Result<Uuid> {
    let rendered = templates::render(template, &context)?;
    let id = Uuid::now_v7();
    diesel::insert_into(outbox_mails::table)
        .values((
            outbox_mails::id.eq(id),
            outbox_mails::to_address.eq(to),
            outbox_mails::template.eq(template),
            outbox_mails::subject.eq(&rendered.subject),
            outbox_mails::text_body.eq(&rendered.text),
            outbox_mails::html_body.eq(&rendered.html),
            outbox_mails::headers.eq(serde_json::Value::Object(rendered.headers)),
        ))
        .execute(conn)
        .await?;
    jobs::enqueue(
        conn,
        NewJob::new(job::KIND, serde_json::json!({ "mail_id": id }))
            .max_attempts(MAIL_MAX_ATTEMPTS),
    )
    .await?;
    Ok(id)
}
