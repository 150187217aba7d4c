//! The wake-up channel: one LISTEN connection per worker process, outside the pool
//! (a pooled diesel connection cannot surface notifications).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};

use super::CHANNEL;

const RECONNECT_MIN: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// A connection cut silently (no RST) would leave us deaf for good; a cheap query finds out.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

type Driver = AbortOnDropHandle<Result<(), tokio_postgres::Error>>;

/// Wakes every idle worker slot on each notification, and after every (re)connect since
/// notifications sent while disconnected are lost. Returns when `shutdown` is cancelled.
pub(super) async fn listen(database_url: String, notify: Arc<Notify>, shutdown: CancellationToken) {
    let mut pause = RECONNECT_MIN;
    loop {
        let listening = tokio::select! {
            _ = shutdown.cancelled() => return,
            listening = connect(&database_url, &notify) => listening,
        };
        match listening {
            Ok((client, driver)) => {
                tracing::debug!("listening for job notifications");
                pause = RECONNECT_MIN;
                notify.notify_waiters();
                let lost = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    lost = watch(client, driver) => lost,
                };
                tracing::warn!(
                    error = format!("{lost:#}"),
                    "job notification connection lost; reconnecting"
                );
            }
            Err(err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    retry_in = ?pause,
                    "cannot listen for job notifications; workers poll meanwhile"
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

async fn connect(database_url: &str, notify: &Arc<Notify>) -> anyhow::Result<(Client, Driver)> {
    let (client, mut connection) = tokio_postgres::connect(database_url, NoTls).await?;
    // The connection must be driven for the client's queries to complete, so it runs in
    // its own task; that ends when the server goes away or the client is dropped.
    let forward = Arc::clone(notify);
    let driver = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notification(_) = message? {
                forward.notify_waiters();
            }
        }
        Ok(())
    }));
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
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
