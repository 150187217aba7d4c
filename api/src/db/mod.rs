//! PostgreSQL through diesel-async: the pool, and start-up checks with errors a newcomer can act on.

pub mod listen;
pub mod migrate;
pub mod schema;

use std::time::Duration;

use diesel_async::{
    AsyncPgConnection,
    pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod, deadpool::Pool,
    },
};
use url::Url;

pub use diesel_async::pooled_connection::deadpool::PoolError;

pub type DbPool = Pool<AsyncPgConnection>;
pub type DbConn = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

/// The database URL with any password removed, for messages.
pub fn redacted_url(database_url: &str) -> String {
    match Url::parse(database_url) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparseable database URL>".into(),
    }
}

pub fn build_pool(database_url: &str, size: usize) -> anyhow::Result<DbPool> {
    // `Fast` recycling: no `SELECT 1` per checkout (that was a third of a small request's
    // queries). A connection whose socket closed is still discarded (`is_broken`), and one
    // that fails mid-request maps to a 503 (`error.rs`).
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the database pool: {e}"))
}

/// Connects once with tokio-postgres so a failure explains itself (diesel-async's own
/// message does not), and in development creates the database when it is missing.
pub async fn ensure_database(database_url: &str, create_if_missing: bool) -> anyhow::Result<()> {
    match tokio_postgres::connect(database_url, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            drop(client);
            let _ = connection.await;
            Ok(())
        }
        Err(err)
            if create_if_missing
                && err.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) =>
        {
            let url = Url::parse(database_url)?;
            let name = url.path().trim_start_matches('/').to_string();
            let mut admin = url.clone();
            admin.set_path("/postgres");
            let (client, connection) =
                tokio_postgres::connect(admin.as_str(), tokio_postgres::NoTls)
                    .await
                    .map_err(|e| explain(database_url, e))?;
            let driver = tokio::spawn(connection);
            tracing::info!(database = %name, "creating the database");
            let created = client
                .batch_execute(&format!(
                    "CREATE DATABASE \"{}\"",
                    name.replace('"', "\"\"")
                ))
                .await;
            drop(client);
            let _ = driver.await;
            match created {
                Ok(()) => Ok(()),
                // Another process created it first.
                Err(e)
                    if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) =>
                {
                    Ok(())
                }
                Err(e) => Err(explain(database_url, e)),
            }
        }
        Err(err) => Err(explain(database_url, err)),
    }
}

fn explain(database_url: &str, err: tokio_postgres::Error) -> anyhow::Error {
    let cause = err
        .as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        });
    anyhow::anyhow!(
        "cannot connect to PostgreSQL at {} ({cause}); start it, or set GI2_DATABASE_URL",
        redacted_url(database_url)
    )
}
