//! The S3-compatible test server (s3s-fs), started by the test script; its address and keys
//! come from `GI2_TEST_S3_*`.

pub struct S3Env {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

pub fn env() -> S3Env {
    let get = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the tests through scripts/test, which starts the S3 test server")
        })
    };
    S3Env {
        endpoint: get("GI2_TEST_S3_ENDPOINT"),
        access_key: get("GI2_TEST_S3_ACCESS_KEY"),
        secret_key: get("GI2_TEST_S3_SECRET_KEY"),
    }
}

pub fn fresh_bucket_name() -> String {
    format!("t-{}", uuid::Uuid::new_v4().simple())
}

/// The app variables for an S3 store on `bucket` (created at start-up).
pub fn app_env(bucket: &str) -> Vec<(String, String)> {
    let s3 = env();
    vec![
        ("GI2_STORAGE".into(), "s3".into()),
        ("GI2_S3_ENDPOINT".into(), s3.endpoint),
        ("GI2_S3_BUCKET".into(), bucket.into()),
        ("GI2_S3_REGION".into(), "us-east-1".into()),
        ("GI2_S3_ACCESS_KEY_ID".into(), s3.access_key),
        ("GI2_S3_SECRET_ACCESS_KEY".into(), s3.secret_key),
        ("GI2_S3_PATH_STYLE".into(), "true".into()),
        ("GI2_S3_CREATE_BUCKET".into(), "true".into()),
    ]
}

/// The binary that serves S3 for tests (`GI2_TEST_S3S_BIN`), for tests that start their own.
pub fn server_binary() -> String {
    std::env::var("GI2_TEST_S3S_BIN").unwrap_or_else(|_| "s3s-fs".into())
}

/// An S3 server of one test's own, so the test can stop it (outage tests).
pub struct PrivateServer {
    pub port: u16,
    child: std::process::Child,
    _dir: crate::tempfile_dir::TempDir,
}

impl PrivateServer {
    pub async fn start() -> Self {
        let s3 = env();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("port")
            .port();
        let dir = crate::tempfile_dir::TempDir::new();
        let child = std::process::Command::new(server_binary())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                &s3.access_key,
                "--secret-key",
                &s3.secret_key,
            ])
            .arg(&dir.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        crate::eventually(
            "the private S3 server",
            std::time::Duration::from_secs(10),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
        Self {
            port,
            child,
            _dir: dir,
        }
    }

    /// The app variables for a store on `bucket` of this server.
    pub fn app_env(&self, bucket: &str) -> Vec<(String, String)> {
        let mut vars = app_env(bucket);
        vars.retain(|(k, _)| k != "GI2_S3_ENDPOINT");
        vars.push((
            "GI2_S3_ENDPOINT".into(),
            format!("http://127.0.0.1:{}", self.port),
        ));
        vars
    }

    /// Kills the server: every request to it fails from now on.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}
