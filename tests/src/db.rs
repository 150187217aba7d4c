//! Fresh databases, cloned from a template migrated once per set of migrations.

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

/// The server tests run against; `GI2_TEST_PG` overrides it.
pub fn server_url() -> String {
    std::env::var("GI2_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub struct TestDb {
    pub name: String,
    pub url: String,
}

/// The template's name changes with the migrations, so a stale template is never used.
fn template_name() -> String {
    let mut hasher = Sha256::new();
    let mut entries: Vec<_> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
            .expect("migrations dir")
            .flatten()
            .map(|e| e.path())
            .collect();
    entries.sort();
    for dir in entries {
        for file in ["up.sql", "down.sql"] {
            hasher.update(dir.file_name().unwrap().as_encoded_bytes());
            hasher.update(std::fs::read(dir.join(file)).unwrap_or_default());
        }
    }
    format!("gi2_template_{}", &hex::encode(hasher.finalize())[..16])
}

pub async fn admin_client() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&format!("{}/postgres", server_url()), NoTls)
            .await
            .unwrap_or_else(|e| panic!("tests need PostgreSQL at {} ({e})", server_url()));
    tokio::spawn(connection);
    client
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// Creates the template once per process; an advisory lock makes concurrent test processes
/// wait for the one that builds it.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let name = template_name();
            let client = admin_client().await;
            client
                .execute("SELECT pg_advisory_lock(7261524)", &[])
                .await
                .unwrap();
            let exists = client
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some();
            if !exists {
                let building = format!("{name}_building");
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {building}"))
                    .await
                    .unwrap();
                client
                    .batch_execute(&format!("CREATE DATABASE {building}"))
                    .await
                    .unwrap();
                gptimage2::db::migrate::run_pending(&format!("{}/{building}", server_url()))
                    .await
                    .expect("migrations apply");
                client
                    .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                    .await
                    .unwrap();
            }
            client
                .execute("SELECT pg_advisory_unlock(7261524)", &[])
                .await
                .unwrap();
            name
        })
        .await
}

/// A new, migrated, empty database.
pub async fn fresh_database() -> TestDb {
    let template = template().await;
    let name = format!("gi2_test_{}", uuid::Uuid::new_v4().simple());
    let client = admin_client().await;
    // Cloning needs the template idle; another test's clone can briefly hold it.
    let mut attempt = 0;
    loop {
        match client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
        {
            Ok(()) => break,
            Err(e) if attempt < 50 && e.to_string().contains("being accessed by other users") => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot create test database: {e}"),
        }
    }
    TestDb {
        url: format!("{}/{name}", server_url()),
        name,
    }
}

/// An empty database without migrations, for migration tests.
pub async fn empty_database() -> TestDb {
    let name = format!("gi2_test_{}", uuid::Uuid::new_v4().simple());
    admin_client()
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    TestDb {
        url: format!("{}/{name}", server_url()),
        name,
    }
}

impl TestDb {
    /// A plain client on this database, for assertions.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect to test db");
        tokio::spawn(connection);
        client
    }
}
