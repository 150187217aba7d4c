//! A LISTEN connection kept open outside the pool (a pooled diesel connection cannot surface
//! notifications): the job queue's wake-ups and the read cache's invalidations.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};

const RECONNECT_MIN: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// A connection cut silently (no RST) would leave us deaf without knowing it: a cheap query
/// finds out within these two (the read cache serves until then, so they bound its staleness
/// in that case).
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

type Driver = AbortOnDropHandle<Result<(), tokio_postgres::Error>>;

/// What a listener does with its channel.
pub trait Subscriber: Send + Sync + 'static {
    /// LISTEN is in effect: from now on every committed notification arrives. Also called
    /// after each reconnect, since notifications sent while disconnected are lost.
    fn listening(&self);
    fn notified(&self, payload: &str);
    /// The connection is gone (or could not be made): notifications may be missed until the
    /// next `listening`.
    fn deaf(&self);
}

/// Listens on `channel` until `shutdown` is cancelled, reconnecting with backoff; `what`
/// names the subscriber in logs.
pub async fn listen(
    database_url: String,
    channel: &'static str,
    what: &'static str,
    subscriber: Arc<dyn Subscriber>,
    shutdown: CancellationToken,
) {
    let mut pause = RECONNECT_MIN;
    loop {
        let listening = tokio::select! {
            _ = shutdown.cancelled() => return,
            listening = connect(&database_url, channel, &subscriber) => listening,
        };
        match listening {
            Ok((client, driver)) => {
                tracing::debug!(channel, "listening for {what}");
                pause = RECONNECT_MIN;
                subscriber.listening();
                let lost = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    lost = watch(client, driver) => lost,
                };
                subscriber.deaf();
                tracing::warn!(
                    error = format!("{lost:#}"),
                    "connection for {what} lost; reconnecting"
                );
            }
            Err(err) => {
                subscriber.deaf();
                tracing::warn!(
                    error = format!("{err:#}"),
                    retry_in = ?pause,
                    "cannot listen for {what}; retrying"
                );
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}

async fn connect(
    database_url: &str,
    channel: &str,
    subscriber: &Arc<dyn Subscriber>,
) -> anyhow::Result<(Client, Driver)> {
    let (client, mut connection) = tokio_postgres::connect(database_url, NoTls).await?;
    // The connection must be driven for the client's queries to complete, so it runs in
    // its own task; that ends when the server goes away or the client is dropped.
    let forward = Arc::clone(subscriber);
    let driver = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notification(n) = message? {
                forward.notified(n.payload());
            }
        }
        Ok(())
    }));
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    Ok((client, driver))
}

/// Keeps the connection open until it fails, and says why.
async fn watch(client: Client, mut driver: Driver) -> anyhow::Error {
    loop {
        tokio::select! {
            ended = &mut driver => {
                return match ended {
                    Ok(Ok(())) => anyhow::anyhow!("the server closed the connection"),
                    Ok(Err(err)) => err.into(),
                    Err(err) => err.into(),
                };
            }
            _ = tokio::time::sleep(PING_EVERY) => {
                match tokio::time::timeout(PING_TIMEOUT, client.batch_execute("SELECT 1")).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => return err.into(),
                    Err(_) => return anyhow::anyhow!("no answer to a ping within {PING_TIMEOUT:?}"),
                }
            }
        }
    }
}
