//! Embedded migrations, applied under an advisory lock so processes starting together are safe.

use diesel::{Connection, RunQueryDsl};
use diesel_async::{AsyncPgConnection, async_connection_wrapper::AsyncConnectionWrapper};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Arbitrary, fixed: the key of the advisory lock that serialises migration runs.
const MIGRATION_LOCK_KEY: i64 = 0x6769_3200_6d69_6772;

/// Applies every pending migration; returns the versions applied.
pub async fn run_pending(database_url: &str) -> anyhow::Result<Vec<String>> {
    let url = database_url.to_string();
    // The sync harness blocks; it must not run on an async worker thread.
    tokio::task::spawn_blocking(move || {
        let mut conn =
            AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to {} to migrate: {e}",
                    super::redacted_url(&url)
                )
            })?;
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn)?;
        let result = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(|v| v.to_string()).collect::<Vec<_>>())
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"));
        diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn)?;
        result
    })
    .await?
}

/// Reverts every migration (used by the up-down-up test).
pub async fn revert_all(database_url: &str) -> anyhow::Result<()> {
    let url = database_url.to_string();
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)?;
        conn.revert_all_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("revert failed: {e}"))?;
        Ok(())
    })
    .await?
}
