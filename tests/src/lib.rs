//! The test harness: a real server on port 0 with a fresh database (cloned from a migrated
//! template) and a fresh bucket on the test S3 server, plus local stand-ins for SMTP.

pub mod creem_fake;

pub mod db;
pub mod oauth_fake;
pub mod openai_fake;
pub mod s3;
pub mod served;
pub mod smtp;
pub mod stripe_fake;
pub mod users;

use std::{collections::HashMap, time::Duration};

use gptimage2::{app::Application, config::Config, state::AppState};
use tokio_util::sync::CancellationToken;

pub use db::{TestDb, fresh_database};
pub use served::Served;
pub use smtp::{ReceivedMail, SmtpServer};
pub use users::TestUser;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// The S3-compatible test server (s3s-fs), a fresh bucket per app.
    S3,
    /// A fresh temporary directory.
    Local,
}

pub struct AppOptions {
    pub storage: Storage,
    /// Run the in-process workers.
    pub workers: bool,
    /// Start an SMTP listener and point the app at it.
    pub smtp: bool,
    /// Extra `GI2_*` variables, applied last.
    pub env: Vec<(String, String)>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            storage: Storage::S3,
            workers: true,
            smtp: true,
            env: Vec::new(),
        }
    }
}

pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    pub port: u16,
    pub db: TestDb,
    pub state: AppState,
    pub client: reqwest::Client,
    pub smtp: Option<SmtpServer>,
    /// The directory of the local store, when `Storage::Local`.
    pub storage_dir: Option<tempfile_dir::TempDir>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub mod tempfile_dir {
    /// A directory removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new() -> Self {
            let path =
                std::env::temp_dir().join(format!("gi2-test-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&path).expect("temp dir");
            Self(path)
        }
    }
    impl Default for TempDir {
        fn default() -> Self {
            Self::new()
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The variables every test app shares: fixed keys, quiet logs, a small pool.
pub fn base_env(db: &TestDb) -> HashMap<String, String> {
    let mut env = HashMap::new();
    env.insert("GI2_DATABASE_URL".into(), db.url.clone());
    env.insert("GI2_BIND".into(), "127.0.0.1:0".into());
    env.insert(
        "GI2_LOG".into(),
        std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
    );
    env.insert(
        "GI2_URL_SIGNING_KEY".into(),
        "test-url-signing-key-0123456789abcdef".into(),
    );
    env.insert(
        "GI2_JWT_SECRET".into(),
        "test-jwt-secret-0123456789abcdef0123".into(),
    );
    env.insert("GI2_DATABASE_POOL_SIZE".into(), "8".into());
    env.insert("GI2_HTTP_WORKERS".into(), "2".into());
    env.insert("GI2_JOB_POLL_MS".into(), "200".into());
    env.insert("GI2_SHUTDOWN_GRACE_SECS".into(), "2".into());
    env.insert("GI2_CORS_ORIGINS".into(), "http://spa.test".into());
    env
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    gptimage2::telemetry::init(
        &std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
        gptimage2::config::LogFormat::Text,
    );
    let db = fresh_database().await;
    let mut env = base_env(&db);
    let mut storage_dir = None;
    match options.storage {
        Storage::S3 => env.extend(s3::app_env(&s3::fresh_bucket_name())),
        Storage::Local => {
            let dir = tempfile_dir::TempDir::new();
            env.insert("GI2_STORAGE".into(), "local".into());
            env.insert("GI2_STORAGE_DIR".into(), dir.0.display().to_string());
            storage_dir = Some(dir);
        }
    }
    let smtp = if options.smtp {
        Some(SmtpServer::start().await)
    } else {
        None
    };
    if let Some(smtp) = &smtp {
        env.insert("GI2_SMTP_URL".into(), format!("smtp://{}", smtp.addr));
    }
    env.extend(options.env);

    // Port 0 is only known after binding; the public URL must name the real port, so bind
    // first and hand the address over.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    env.insert("GI2_BIND".into(), format!("127.0.0.1:{port}"));
    env.entry("GI2_PUBLIC_URL".into())
        .or_insert(format!("http://127.0.0.1:{port}"));

    let config = Config::from_vars(env).expect("test configuration is valid");
    let application = Application::build(config, options.workers)
        .await
        .expect("the app starts");
    let port = application.port();
    let state = application.state().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        db,
        state,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        smtp,
        storage_dir,
        shutdown,
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Stops the server and workers gracefully and waits for them.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), server)
                .await
                .expect("stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// The first column of the one row `sql` returns (a `count(*)`, say), read directly.
    pub async fn count(&self, sql: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// `gptimage2_read_cache_lookups_total{kind, outcome}` from `/metrics`.
    pub async fn cache_lookups(&self, kind: &str, outcome: &str) -> u64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        let series =
            format!("gptimage2_read_cache_lookups_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    /// Waits until the read cache listens (it serves nothing before) and serves `path` (a
    /// 200 for `token`) from memory, so a test of what follows a change runs against a cache.
    pub async fn until_cached(&self, token: &str, path: &str, kind: &str) {
        eventually(
            &format!("{path} served from the read cache"),
            Duration::from_secs(10),
            || async {
                let before = self.cache_lookups(kind, "hit").await;
                let res = self
                    .client
                    .get(self.url(path))
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("request sent");
                assert_eq!(res.status(), reqwest::StatusCode::OK, "{path}");
                (self.cache_lookups(kind, "hit").await > before).then_some(())
            },
        )
        .await;
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
