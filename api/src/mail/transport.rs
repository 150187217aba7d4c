//! Where mail goes: SMTP (lettre), or, as the development default, the log.

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart, header::ContentType},
};

use super::OutboxMail;

#[async_trait::async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, mail: &OutboxMail) -> anyhow::Result<()>;
}

/// Builds the MIME message: text and HTML alternatives plus any extra headers.
pub fn build_message(from: &Mailbox, mail: &OutboxMail) -> anyhow::Result<Message> {
    let to: Mailbox = mail.to_address.parse()?;
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(&mail.subject);
    if let Some(headers) = mail.headers.as_object() {
        for (name, value) in headers {
            if let Some(value) = value.as_str() {
                builder = builder.raw_header(lettre::message::header::HeaderValue::new(
                    lettre::message::header::HeaderName::new_from_ascii(name.clone())?,
                    value.to_string(),
                ));
            }
        }
    }
    let body = MultiPart::alternative()
        .singlepart(
            lettre::message::SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(mail.text_body.clone()),
        )
        .singlepart(
            lettre::message::SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(mail.html_body.clone()),
        );
    Ok(builder.multipart(body)?)
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    /// `url` is lettre's form: `smtp://user:pass@host:587?tls=required`, `smtps://host:465`,
    /// or `smtp://host:25` (no TLS).
    pub fn new(url: &str, from: Mailbox) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("GI2_SMTP_URL: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(20)))
            .build();
        Ok(Self { transport, from })
    }
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &OutboxMail) -> anyhow::Result<()> {
        let message = build_message(&self.from, mail)?;
        self.transport
            .send(message)
            .await
            .map_err(|e| anyhow::anyhow!("SMTP delivery failed: {e}"))?;
        Ok(())
    }
}

/// The embedded default (development only): writes each mail to the log instead of sending
/// it. One record per mail, every part of it a field quoted and escaped (`Debug`): a mail's
/// text is partly the user's, and written raw its line breaks would forge log lines.
pub struct LogMailer;

#[async_trait::async_trait]
impl Mailer for LogMailer {
    async fn send(&self, mail: &OutboxMail) -> anyhow::Result<()> {
        tracing::info!(
            mail_id = %mail.id,
            to = ?mail.to_address,
            template = ?mail.template,
            subject = ?mail.subject,
            body = ?mail.text_body,
            "mail (outbox log; set GI2_SMTP_URL to send)"
        );
        Ok(())
    }
}
