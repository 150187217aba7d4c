//! The `gptimage2` binary: configuration errors, the spec printer, operator commands.

use std::process::Command;

pub(crate) use gptimage2_tests::served::binary;

pub(crate) fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "run {} (build it with `cargo build -p gptimage2-api`): {e}",
            binary()
        )
    })
}

#[test]
fn invalid_configuration_fails_with_one_line_naming_the_variable() {
    let out = run(&["serve"], &[("GI2_BIND", "not-an-address")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("GI2_BIND"), "{stderr}");

    let out = run(&["serve"], &[("GI2_ENV", "production")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GI2_URL_SIGNING_KEY"));
}

#[test]
fn secrets_never_reach_the_output() {
    let secret = "super-secret-password-that-must-not-leak";
    let url = format!("postgres://postgres:{secret}@127.0.0.1:1/nowhere");
    let out = run(
        &["migrate"],
        &[
            ("GI2_DATABASE_URL", &url),
            ("GI2_JWT_SECRET", "jwt-secret-jwt-secret-jwt-secret-jwt"),
        ],
    );
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(secret), "the database password leaked: {all}");
    assert!(
        !all.contains("jwt-secret-jwt"),
        "the JWT secret leaked: {all}"
    );
    assert!(
        all.contains("127.0.0.1:1"),
        "the error names where it tried: {all}"
    );
}

#[test]
fn openapi_subcommand_prints_the_committed_spec() {
    let out = run(&["openapi"], &[]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../openapi/openapi.json"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[tokio::test]
async fn admin_send_test_mail_queues_a_mail() {
    let db = gptimage2_tests::fresh_database().await;
    let dir = gptimage2_tests::tempfile_dir::TempDir::new();
    let storage_dir = dir.0.display().to_string();
    let out = run(
        &["admin", "send-test-mail", "--to", "ops@example.com"],
        &[
            ("GI2_DATABASE_URL", &db.url),
            ("GI2_STORAGE_DIR", &storage_dir),
            ("GI2_LOG", "warn"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = db.client().await;
    let row = client
        .query_one("SELECT to_address, template, status FROM outbox_mails", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ops@example.com");
    assert_eq!(row.get::<_, String>(2), "pending");
    let jobs: i64 = client
        .query_one("SELECT count(*) FROM jobs WHERE kind = 'send_mail'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs, 1, "a delivery job is queued with it");

    let bad = run(
        &["admin", "send-test-mail", "--to", "not an address"],
        &[
            ("GI2_DATABASE_URL", &db.url),
            ("GI2_STORAGE_DIR", &storage_dir),
        ],
    );
    assert!(!bad.status.success());
}

#[tokio::test]
async fn admin_grant_credits_writes_an_admin_grant() {
    let app = gptimage2_tests::spawn_app_with(gptimage2_tests::AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    let dir = gptimage2_tests::tempfile_dir::TempDir::new();
    let storage_dir = dir.0.display().to_string();
    let env = [
        ("GI2_DATABASE_URL", app.db.url.as_str()),
        ("GI2_STORAGE_DIR", storage_dir.as_str()),
        ("GI2_LOG", "warn"),
    ];
    let out = run(
        &[
            "admin",
            "grant-credits",
            "--email",
            &user.email.to_uppercase(),
            "--amount",
            "250",
            "--expires",
            "2099-01-01T00:00:00Z",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("granted 250 credits"));
    let credits: serde_json::Value = app
        .get_auth("/v1/credits", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(credits["available"], 250);
    assert_eq!(credits["grants"][0]["source"], "admin");

    for bad in [
        vec![
            "admin",
            "grant-credits",
            "--email",
            "nobody@example.com",
            "--amount",
            "5",
        ],
        vec![
            "admin",
            "grant-credits",
            "--email",
            &user.email,
            "--amount",
            "0",
        ],
        vec![
            "admin",
            "grant-credits",
            "--email",
            &user.email,
            "--amount",
            "5",
            "--expires",
            "2001-01-01T00:00:00Z",
        ],
    ] {
        assert!(!run(&bad, &env).status.success(), "{bad:?} must fail");
    }
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn serve_logs_json_and_stops_cleanly_on_sigterm() {
    let db = gptimage2_tests::fresh_database().await;
    let dir = gptimage2_tests::tempfile_dir::TempDir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let storage_dir = dir.0.display().to_string();
    let mut child = Command::new(binary())
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("GI2_DATABASE_URL", db.url.as_str()),
            ("GI2_STORAGE_DIR", storage_dir.as_str()),
            ("GI2_BIND", bind.as_str()),
            ("GI2_LOG_FORMAT", "json"),
            ("GI2_HTTP_WORKERS", "1"),
            ("GI2_SHUTDOWN_GRACE_SECS", "2"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let health = gptimage2_tests::eventually(
        "the server to answer",
        std::time::Duration::from_secs(20),
        || async {
            client
                .get(format!("http://{bind}/readyz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        },
    )
    .await;
    assert_eq!(health.status(), 200);
    assert_eq!(
        client
            .get(format!("http://{bind}/docs/"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "Swagger UI is served"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                return (status, out.stdout, started.elapsed());
            }
            if started.elapsed() > std::time::Duration::from_secs(20) {
                let _ = child.kill();
                panic!("serve did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);
    let stdout = String::from_utf8(status.1).unwrap();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            parsed["level"].is_string() && parsed["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("\"route\":\"/readyz\"")),
        "requests are logged with their route"
    );
    assert!(stdout.contains("stopped"), "the shutdown is logged");
}
