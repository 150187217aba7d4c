//! Outgoing generation webhooks (Standard Webhooks): when a generation ends, a delivery row
//! and a `deliver_webhook` job are written in the same transaction as the terminal status;
//! the job signs the event with the user's secret and POSTs it, retrying with backoff.
//!
//! Events are sent for every terminal status: `generation.succeeded`, `generation.failed` and
//! `generation.canceled` (a cancel, or a delete of an unfinished generation; a deleted
//! generation's pending deliveries go with it).
//!
//! SSRF: the host is resolved, every address is vetted (no loopback, private, link-local,
//! CGNAT, ...; an IPv6 address that carries an IPv4 one, IPv4-mapped or -compatible, NAT64
//! or 6to4, is judged by that IPv4 address, and local-use NAT64 and Teredo are refused
//! outright), and the connection is pinned to the vetted addresses, so a DNS rebinding
//! between check and connect cannot redirect it. Redirects are never followed.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::json;
use sha2::Sha256;
use url::{Host, Url};
use uuid::Uuid;

use crate::{
    config::{Secret, WebhookConfig},
    db::{
        DbPool,
        schema::{generation_images, generations, webhook_deliveries, webhook_secrets},
    },
    jobs::{self, JobContext, JobError, JobHandler, NewJob},
    read_cache::ReadCache,
};

pub const KIND: &str = "deliver_webhook";
/// With the default 2 s backoff base the last try is about four minutes after the first.
pub const MAX_ATTEMPTS: i32 = 8;
/// The whole exchange, connect to last body byte.
const TIMEOUT: Duration = Duration::from_secs(10);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The receiver's answer is ignored; at most this much of it is read.
const MAX_RESPONSE_BYTES: usize = 4096;
const SECRET_PREFIX: &str = "whsec_";

/// A fresh `whsec_` secret: 24 random bytes, base64.
fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", BASE64.encode(bytes))
}

/// The user's signing secret, created on first use. Concurrent first uses agree: the insert
/// loses quietly to whichever committed first and the stored one is read back.
pub async fn secret_for(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<Secret> {
    diesel::insert_into(webhook_secrets::table)
        .values((
            webhook_secrets::user_id.eq(user_id),
            webhook_secrets::secret.eq(new_secret()),
        ))
        .on_conflict(webhook_secrets::user_id)
        .do_nothing()
        .execute(conn)
        .await?;
    let secret: String = webhook_secrets::table
        .find(user_id)
        .select(webhook_secrets::secret)
        .first(conn)
        .await?;
    Ok(Secret::new(secret))
}

/// Replaces the user's signing secret, if one was ever handed out; true when it was.
pub async fn rotate_secret(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<bool> {
    let changed = diesel::update(webhook_secrets::table.find(user_id))
        .set((
            webhook_secrets::secret.eq(new_secret()),
            webhook_secrets::created_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(changed > 0)
}

/// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), the key being the
/// base64-decoded part of the secret after `whsec_`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> anyhow::Result<String> {
    let key = BASE64
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .map_err(|_| anyhow::anyhow!("the signing secret is not valid base64"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| anyhow::anyhow!("the signing secret is unusable"))?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// Records a delivery of the generation's terminal state and queues its job, on the caller's
/// connection (call it inside the transaction that ended the generation). Nothing happens
/// without a `webhook_url` or before the generation has ended.
pub async fn enqueue_for(
    conn: &mut AsyncPgConnection,
    generation_id: Uuid,
) -> QueryResult<Option<Uuid>> {
    type Row = (
        Uuid,
        String,
        serde_json::Value,
        i64,
        Option<String>,
        Option<String>,
    );
    let row: Option<Row> = generations::table
        .find(generation_id)
        .select((
            generations::user_id,
            generations::status,
            generations::params,
            generations::cost_credits,
            generations::error_code,
            generations::error_message,
        ))
        .first(conn)
        .await
        .optional()?;
    let Some((user_id, status, params, cost, error_code, error_message)) = row else {
        return Ok(None);
    };
    // Read loosely: unparseable params must not roll back the status change.
    let Some(url) = params.get("webhook_url").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    let event_type = match status.as_str() {
        "succeeded" => "generation.succeeded",
        "failed" => "generation.failed",
        "canceled" => "generation.canceled",
        _ => return Ok(None),
    };
    let images: Vec<(Uuid, i32, i32, String, i64)> = generation_images::table
        .filter(generation_images::generation_id.eq(generation_id))
        .order(generation_images::position)
        .select((
            generation_images::id,
            generation_images::width,
            generation_images::height,
            generation_images::format,
            generation_images::bytes,
        ))
        .load(conn)
        .await?;
    // No signed image links: they expire before a late retry; receivers fetch the generation.
    let payload = json!({
        "type": event_type,
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        "data": {
            "id": generation_id,
            "status": status,
            "cost_credits": cost,
            "error": error_code.map(|code| json!({"code": code, "message": error_message.unwrap_or_default()})),
            "images": images.iter().map(|(id, width, height, format, bytes)| json!({
                "id": id, "width": width, "height": height, "format": format, "bytes": bytes,
            })).collect::<Vec<_>>(),
        },
    });
    let id = Uuid::now_v7();
    diesel::insert_into(webhook_deliveries::table)
        .values((
            webhook_deliveries::id.eq(id),
            webhook_deliveries::generation_id.eq(generation_id),
            webhook_deliveries::user_id.eq(user_id),
            webhook_deliveries::url.eq(url),
            webhook_deliveries::event_type.eq(event_type),
            webhook_deliveries::payload.eq(payload),
        ))
        .execute(conn)
        .await?;
    jobs::enqueue(
        conn,
        NewJob::new(KIND, json!({ "delivery_id": id })).max_attempts(MAX_ATTEMPTS),
    )
    .await?;
    Ok(Some(id))
}

/// Why an address must not be contacted, or `None` when it is public.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT)")
    } else if a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded = |at: usize| {
        let o = ip.octets();
        Ipv4Addr::new(o[at], o[at + 1], o[at + 2], o[at + 3])
    };
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    // Addresses that carry an IPv4 address reach it (or may, through a translator, a relay
    // or the host's own stack): they are judged by that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        // ::ffff:a.b.c.d, IPv4-mapped
        return refusal_v4(v4);
    }
    if segments[..6] == [0; 6] {
        // ::a.b.c.d, IPv4-compatible (deprecated, but some stacks still route it)
        return refusal_v4(embedded(12)).or(Some("deprecated IPv4-compatible"));
    }
    if segments[..6] == [0, 0, 0, 0, 0xffff, 0] {
        // ::ffff:0:a.b.c.d, IPv4-translated (SIIT)
        return refusal_v4(embedded(12));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // 64:ff9b::a.b.c.d, NAT64 with the well-known prefix
        return refusal_v4(embedded(12));
    }
    if segments[0] == 0x2002 {
        // 2002:aabb:ccdd::/48, 6to4 of a.b.c.d
        return refusal_v4(embedded(2));
    }
    if segments[..2] == [0x64, 0xff9b] && segments[2] == 1 {
        // 64:ff9b:1::/48, NAT64 for local use: wherever the translator puts the IPv4
        // address, it is the operator's own network.
        return Some("local-use NAT64");
    }
    if segments[..2] == [0x2001, 0] {
        // 2001::/32, Teredo: a tunnel to an address hidden in the bits.
        return Some("Teredo");
    }
    if ip.is_multicast() {
        Some("multicast")
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if segments[0] & 0xffc0 == 0xfec0 {
        Some("site-local")
    } else if segments[0] & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if segments[..4] == [0x100, 0, 0, 0] {
        Some("discard-only")
    } else if segments[..2] == [0x2001, 0xdb8] {
        Some("documentation")
    } else {
        None
    }
}

/// Where a vetted request may connect: the host name pinned to its checked addresses
/// (`None` for an IP literal, which needs no lookup).
struct Target {
    pinned: Option<(String, Vec<SocketAddr>)>,
}

enum Vetting {
    /// Never retried.
    Refused(String),
    /// DNS trouble: worth retrying.
    Unresolved(String),
}

/// Checks scheme and every resolved address of the URL's host.
async fn vet(url: &Url, policy: &WebhookConfig, allow_http: bool) -> Result<Target, Vetting> {
    let host = url
        .host()
        .ok_or_else(|| Vetting::Refused("the webhook URL has no host".into()))?;
    let host_text = url.host_str().unwrap_or_default();
    let exempt = policy.host_exempt(host_text);
    match url.scheme() {
        "https" => {}
        "http" if allow_http || exempt => {}
        other => {
            return Err(Vetting::Refused(format!(
                "refused: webhook URLs must use https, not {other}"
            )));
        }
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let (addrs, pinned) = match host {
        Host::Ipv4(ip) => (vec![SocketAddr::new(ip.into(), port)], None),
        Host::Ipv6(ip) => (vec![SocketAddr::new(ip.into(), port)], None),
        Host::Domain(domain) => {
            let resolved =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((domain, port)))
                    .await
                    .map_err(|_| Vetting::Unresolved(format!("resolving {domain} timed out")))?
                    .map_err(|e| Vetting::Unresolved(format!("cannot resolve {domain}: {e}")))?;
            let addrs: Vec<SocketAddr> = resolved.collect();
            if addrs.is_empty() {
                return Err(Vetting::Unresolved(format!("{domain} has no addresses")));
            }
            (addrs.clone(), Some((domain.to_string(), addrs)))
        }
    };
    if !exempt {
        // Any bad address refuses the host: a name mixing public and private addresses
        // could otherwise be steered to the private one.
        for addr in &addrs {
            if let Some(kind) = refusal(addr.ip()) {
                let ip = addr.ip();
                return Err(Vetting::Refused(if pinned.is_some() {
                    format!("refused: {host_text} resolves to {ip}, a {kind} address")
                } else {
                    format!("refused: {ip} is a {kind} address")
                }));
            }
        }
    }
    Ok(Target { pinned })
}

/// How one attempt went.
enum Attempt {
    Delivered(u16),
    Permanent { status: Option<u16>, error: String },
    Retry { status: Option<u16>, error: String },
}

pub struct DeliverWebhookHandler {
    pub pool: DbPool,
    /// Marked while a delivery's outcome is recorded (it is shown on the generation).
    pub cache: Arc<ReadCache>,
    pub policy: WebhookConfig,
    /// Plain http receivers are accepted (development).
    pub allow_http: bool,
}

fn retry<E: std::fmt::Display>(e: E) -> JobError {
    JobError::Retryable(anyhow::anyhow!("{e}"))
}

impl DeliverWebhookHandler {
    async fn attempt(
        &self,
        id: Uuid,
        raw_url: &str,
        secret: &Secret,
        payload: &serde_json::Value,
    ) -> Attempt {
        let permanent = |error: String| Attempt::Permanent {
            status: None,
            error,
        };
        let url = match Url::parse(raw_url) {
            Ok(url) => url,
            Err(e) => return permanent(format!("invalid webhook URL: {e}")),
        };
        let target = match vet(&url, &self.policy, self.allow_http).await {
            Ok(target) => target,
            Err(Vetting::Refused(reason)) => return permanent(reason),
            Err(Vetting::Unresolved(error)) => {
                return Attempt::Retry {
                    status: None,
                    error,
                };
            }
        };
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            // A proxy would resolve the name itself, undoing the check.
            .no_proxy()
            .user_agent(concat!("gptimage2-webhooks/", env!("CARGO_PKG_VERSION")));
        if let Some((domain, addrs)) = &target.pinned {
            builder = builder.resolve_to_addrs(domain, addrs);
        }
        let client = match builder.build() {
            Ok(client) => client,
            Err(e) => {
                return Attempt::Retry {
                    status: None,
                    error: format!("cannot build the HTTP client: {e}"),
                };
            }
        };
        let body = match serde_json::to_vec(payload) {
            Ok(body) => body,
            Err(e) => return permanent(format!("cannot encode the event: {e}")),
        };
        let timestamp = Utc::now().timestamp();
        let signature = match sign(secret.expose(), &id.to_string(), timestamp, &body) {
            Ok(signature) => signature,
            Err(e) => return permanent(format!("{e:#}")),
        };
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", id.to_string())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return Attempt::Retry {
                    status: None,
                    error: format!("no answer within {} s", TIMEOUT.as_secs()),
                };
            }
            Err(e) => {
                return Attempt::Retry {
                    status: None,
                    error: format!("{:#}", anyhow::Error::new(e)),
                };
            }
        };
        let status = response.status();
        let mut read = 0;
        while read < MAX_RESPONSE_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        let code = status.as_u16();
        if status.is_success() {
            Attempt::Delivered(code)
        } else if status == reqwest::StatusCode::GONE {
            // The receiver's way of saying "stop sending".
            Attempt::Permanent {
                status: Some(code),
                error: "the receiver answered 410 Gone".into(),
            }
        } else {
            Attempt::Retry {
                status: Some(code),
                error: format!("the receiver answered {status}"),
            }
        }
    }

    async fn record(
        &self,
        id: Uuid,
        status: &str,
        response_status: Option<u16>,
        error: Option<&str>,
    ) -> Result<(), JobError> {
        let mut conn = self.pool.get().await.map_err(retry)?;
        let delivered_at: Option<DateTime<Utc>> = (status == "delivered").then(Utc::now);
        diesel::update(
            webhook_deliveries::table
                .find(id)
                .filter(webhook_deliveries::status.eq("pending")),
        )
        .set((
            webhook_deliveries::status.eq(status),
            webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1),
            webhook_deliveries::response_status.eq(response_status.map(i32::from)),
            webhook_deliveries::last_error.eq(error),
            webhook_deliveries::delivered_at.eq(delivered_at),
        ))
        .execute(&mut conn)
        .await
        .map_err(retry)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl JobHandler for DeliverWebhookHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, job: &JobContext) -> Result<(), JobError> {
        let id: Uuid = job
            .payload
            .get("delivery_id")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| JobError::Permanent(anyhow::anyhow!("payload has no delivery_id")))?;
        let mut conn = self.pool.get().await.map_err(retry)?;
        let row: Option<(Uuid, String, serde_json::Value, String)> = webhook_deliveries::table
            .find(id)
            .select((
                webhook_deliveries::user_id,
                webhook_deliveries::url,
                webhook_deliveries::payload,
                webhook_deliveries::status,
            ))
            .first(&mut conn)
            .await
            .optional()
            .map_err(retry)?;
        // Deleted with its generation, or already settled: nothing to send.
        let Some((user_id, url, payload, _)) = row.filter(|r| r.3 == "pending") else {
            return Ok(());
        };
        let _writing = self.cache.writing(user_id);
        let secret = secret_for(&mut conn, user_id).await.map_err(retry)?;
        // No pooled connection is held across the receiver's (up to 10 s) answer.
        drop(conn);
        match self.attempt(id, &url, &secret, &payload).await {
            Attempt::Delivered(code) => {
                self.record(id, "delivered", Some(code), None).await?;
                tracing::info!(delivery_id = %id, status = code, "webhook delivered");
                Ok(())
            }
            Attempt::Permanent { status, error } => {
                self.record(id, "failed", status, Some(&error)).await?;
                tracing::warn!(delivery_id = %id, error = %error, "webhook delivery failed for good");
                Err(JobError::Permanent(anyhow::anyhow!(error)))
            }
            Attempt::Retry { status, error } => {
                let last = job.attempt >= job.max_attempts;
                let state = if last { "failed" } else { "pending" };
                self.record(id, state, status, Some(&error)).await?;
                tracing::info!(delivery_id = %id, attempt = job.attempt, error = %error, "webhook delivery attempt failed");
                Err(JobError::Retryable(anyhow::anyhow!(error)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(ip: &str) -> Option<&'static str> {
        refusal(ip.parse().unwrap())
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for (ip, kind) in [
            ("10.0.0.1", "private"),
            ("172.16.5.4", "private"),
            ("192.168.1.1", "private"),
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:127.0.0.1", "loopback"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            // IPv4 embedded in IPv6 is judged by the IPv4 address.
            ("::127.0.0.1", "loopback"),
            ("::10.1.2.3", "private"),
            ("::8.8.8.8", "deprecated IPv4-compatible"),
            ("::ffff:0:127.0.0.1", "loopback"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::192.168.0.1", "private"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:c0a8:101::", "private"),
            ("2002:a9fe:a9fe:1::2", "link-local"),
            // Prefixes whose IPv4 part cannot be told, or that are never public.
            ("64:ff9b:1::7f00:1", "local-use NAT64"),
            ("64:ff9b:1:ffff::808:808", "local-use NAT64"),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo"),
            ("2001::1", "Teredo"),
            ("100::1", "discard-only"),
            ("2001:db8::1", "documentation"),
        ] {
            assert_eq!(classify(ip), Some(kind), "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "93.184.216.34",
            "2606:4700::1111",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
        ] {
            assert_eq!(classify(ip), None, "{ip}");
        }
    }

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_have_the_whsec_form() {
        let secret = new_secret();
        let key = BASE64
            .decode(secret.strip_prefix(SECRET_PREFIX).unwrap())
            .unwrap();
        assert_eq!(key.len(), 24);
        assert_ne!(secret, new_secret());
    }

    #[tokio::test]
    async fn vetting_refuses_before_any_traffic() {
        let policy = WebhookConfig::default();
        let refused = |url: &str| {
            let url = Url::parse(url).unwrap();
            let policy = policy.clone();
            async move {
                match vet(&url, &policy, true).await {
                    Err(Vetting::Refused(reason)) => reason,
                    _ => panic!("{url} should be refused"),
                }
            }
        };
        assert_eq!(
            refused("http://127.0.0.1:9/hook").await,
            "refused: 127.0.0.1 is a loopback address"
        );
        assert_eq!(
            refused("https://[::1]/").await,
            "refused: ::1 is a loopback address"
        );
        assert!(
            refused("http://localhost:9/")
                .await
                .starts_with("refused: localhost resolves to ")
        );
        let https_only = Url::parse("http://93.184.216.34/").unwrap();
        assert!(matches!(
            vet(&https_only, &policy, false).await,
            Err(Vetting::Refused(_))
        ));
        // The override lets private receivers (tests) through.
        let open = WebhookConfig {
            allow_private: true,
            allowed_hosts: vec![],
        };
        let local = Url::parse("http://127.0.0.1:9/hook").unwrap();
        assert!(vet(&local, &open, false).await.is_ok());
        let listed = WebhookConfig {
            allow_private: false,
            allowed_hosts: vec!["127.0.0.1".into()],
        };
        assert!(vet(&local, &listed, false).await.is_ok());
    }
}
