//! The real binary as a process of its own (`gptimage2 serve`), for what an in-process app
//! cannot show: its own memory (`/proc/<pid>/status`), its log output, a crash (SIGKILL).

use std::{io::Read, process::Child, time::Duration};

use crate::{TestDb, base_env, eventually, fresh_database, tempfile_dir::TempDir};

/// The binary under test: `$GI2_TEST_BIN`, else the `gptimage2` beside this test binary.
pub fn binary() -> String {
    std::env::var("GI2_TEST_BIN").unwrap_or_else(|_| {
        // target/debug/deps/integration-… → target/debug/gptimage2
        let exe = std::env::current_exe().unwrap();
        exe.parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("gptimage2")
            .display()
            .to_string()
    })
}

/// A `serve` process, killed (SIGKILL) when dropped. Its stdout goes to a file in its own
/// temporary directory, which also holds the local store unless `env` says otherwise.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    dir: TempDir,
    _db: Option<TestDb>,
}

impl Served {
    /// `gptimage2 <args>` with exactly `env` (plus `PATH`, the bind address and public URL),
    /// once its `/readyz` answers 200.
    pub async fn start(args: &[&str], env: impl IntoIterator<Item = (String, String)>) -> Self {
        Self::spawn(args, env, None).await
    }

    /// `gptimage2 <args>` on a fresh database of its own with the harness's settings and the
    /// local store, then `extra`.
    pub async fn fresh(args: &[&str], extra: &[(&str, &str)]) -> Self {
        let db = fresh_database().await;
        let mut env = base_env(&db);
        env.insert("GI2_STORAGE".into(), "local".into());
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::spawn(args, env, Some(db)).await
    }

    async fn spawn(
        args: &[&str],
        env: impl IntoIterator<Item = (String, String)>,
        db: Option<TestDb>,
    ) -> Self {
        let dir = TempDir::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.0.join("stdout.log")).unwrap();
        let child = std::process::Command::new(binary())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GI2_STORAGE_DIR", dir.0.join("objects"))
            .envs(env)
            .env("GI2_BIND", format!("127.0.0.1:{port}"))
            .env("GI2_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the gptimage2 binary starts (GI2_TEST_BIN)");
        let served = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            _db: db,
        };
        let client = reqwest::Client::new();
        eventually("serve is ready", Duration::from_secs(60), || async {
            client
                .get(format!("{}/readyz", served.base))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        })
        .await;
        served
    }

    /// `host:port`, for clients that speak to the socket directly.
    pub fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }

    /// Everything the process has written to stdout so far.
    pub fn output(&self) -> String {
        let mut out = String::new();
        std::fs::File::open(self.dir.0.join("stdout.log"))
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    /// SIGKILL, at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}
