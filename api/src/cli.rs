//! The `gptimage2` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{app, config::Config, db, telemetry};

#[derive(Parser)]
#[command(
    name = "gptimage2",
    version,
    about = "GPT Image 2 API service. Configured by GI2_* environment variables (see README)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API, with the background workers in the same process.
    Serve {
        /// Run the API alone (scale workers separately with `gptimage2 worker`).
        #[arg(long)]
        no_workers: bool,
    },
    /// Run background workers only.
    Worker,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
    /// Operator tasks.
    Admin {
        #[command(subcommand)]
        task: AdminTask,
    },
}

#[derive(Subcommand)]
enum AdminTask {
    /// Grant credits to a user (recorded as an admin grant in their ledger).
    GrantCredits {
        #[arg(long)]
        email: String,
        /// Credits to add (1 – 100,000,000).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=100_000_000))]
        amount: i64,
        /// When they expire (RFC 3339, e.g. 2027-01-31T00:00:00Z); never by default.
        #[arg(long)]
        expires: Option<chrono::DateTime<chrono::Utc>>,
        /// Shown in the user's ledger.
        #[arg(long, default_value = "Granted by support")]
        reason: String,
    },
    /// Queue a test mail to check delivery (delivered by a running worker).
    SendTestMail {
        #[arg(long)]
        to: String,
    },
    /// Mail every active user the `policy_changed` notice for a policy version, once per
    /// user and version: a re-run (after a crash, or for users who joined since) mails only
    /// those not notified yet.
    NotifyPolicyChange {
        /// The policy version, e.g. 2027-01.
        #[arg(long)]
        version: String,
        /// A sentence on what changed, included in the mail.
        #[arg(long)]
        summary: Option<String>,
    },
    /// Product-analytics events (consenting users only) per UTC day and event.
    Analytics {
        /// Days to cover, today included.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(i32).range(1..=366))]
        days: i32,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        print!(
            "{}",
            crate::openapi::to_pretty_json(&crate::openapi::build())
        );
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("gptimage2: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log_filter, config.log_format);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("gptimage2: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "fatal");
            eprintln!("gptimage2: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { no_workers } => {
            let application = app::Application::build(config, !no_workers).await?;
            let public = application.state().config.public_url.clone();
            tracing::info!(
                port = application.port(),
                workers = !no_workers,
                "serving; Swagger UI at {}docs/",
                public
            );
            application
                .run_until_stopped(app::shutdown_on_signals())
                .await
        }
        Command::Worker => {
            let state = app::build_state(config).await?;
            let registry = app::job_registry(&state)?;
            tracing::info!(kinds = ?registry.kinds(), "worker started");
            let shutdown = app::shutdown_on_signals();
            tokio::spawn(app::maintenance(
                state.clone(),
                std::time::Duration::from_secs(60),
                shutdown.clone(),
            ));
            crate::jobs::run_workers(
                state.pool.clone(),
                state.config.database_url.expose().to_string(),
                registry,
                app::worker_options(&state.config),
                shutdown,
            )
            .await
        }
        Command::Migrate => {
            let url = config.database_url.expose();
            db::ensure_database(url, config.is_development()).await?;
            let applied = db::migrate::run_pending(url).await?;
            tracing::info!(applied = ?applied, "migrations up to date");
            Ok(())
        }
        Command::Openapi => unreachable!("handled before configuration is read"),
        Command::Admin { task } => admin(task, config).await,
    }
}

async fn admin(task: AdminTask, config: Config) -> anyhow::Result<()> {
    let state = app::build_state(config).await?;
    let mut conn = state.pool.get().await?;
    match task {
        AdminTask::GrantCredits {
            email,
            amount,
            expires,
            reason,
        } => {
            if expires.is_some_and(|at| at <= chrono::Utc::now()) {
                anyhow::bail!("--expires must be in the future");
            }
            let user = crate::accounts::users::find_by_email(&mut conn, &email)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no account with email {email}"))?;
            let grant = crate::credits::ledger::grant(
                &mut conn,
                crate::credits::ledger::NewGrant {
                    user_id: user.id,
                    amount,
                    source: crate::credits::GrantSource::Admin,
                    expires_at: expires,
                    reference: None,
                    description: &reason,
                },
            )
            .await?;
            let summary = crate::credits::ledger::summary(&mut conn, user.id).await?;
            println!(
                "granted {amount} credits to {email} (grant {grant}); available now {}",
                summary.available
            );
        }
        AdminTask::NotifyPolicyChange { version, summary } => {
            let url = state.config.auth.privacy_policy_url.clone();
            let queued = notify_policy_change(&mut conn, &version, summary, &url).await?;
            println!(
                "queued {queued} policy_changed mail(s) for version {}",
                version.trim()
            );
        }
        AdminTask::SendTestMail { to } => {
            to.parse::<lettre::message::Mailbox>()
                .map_err(|e| anyhow::anyhow!("--to: {e}"))?;
            let id = crate::mail::queue(
                &mut conn,
                &to,
                "operator_test",
                serde_json::json!({ "sent_at": chrono::Utc::now().to_rfc3339() }),
            )
            .await?;
            println!("queued mail {id} to {to}");
        }
        AdminTask::Analytics { days } => {
            let rows = crate::analytics::daily_counts(&mut conn, days).await?;
            let subjects = crate::analytics::distinct_subjects(&mut conn, days).await?;
            println!("analytics, last {days} days (UTC; consenting users only)");
            println!(
                "{:<10}  {:<24}  {:>8}  {:>8}",
                "day", "event", "events", "subjects"
            );
            for r in &rows {
                println!(
                    "{:<10}  {:<24}  {:>8}  {:>8}",
                    r.day, r.event, r.events, r.subjects
                );
            }
            println!("distinct subjects: {subjects}");
        }
    }
    Ok(())
}

/// Users notified per transaction: a crash loses at most one batch's work, never mails twice.
const POLICY_NOTICE_BATCH: i64 = 500;

/// Queues `policy_changed` for every active user without a `policy_notices` row for
/// `version`, recording the row in the same transaction; returns how many were queued.
async fn notify_policy_change(
    conn: &mut diesel_async::AsyncPgConnection,
    version: &str,
    summary: Option<String>,
    url: &str,
) -> anyhow::Result<u64> {
    use diesel::prelude::*;
    use diesel_async::{AsyncConnection, RunQueryDsl};

    use crate::db::schema::{policy_notices, users};

    let version = version.trim();
    if version.is_empty() || version.chars().count() > 64 || version.chars().any(char::is_control) {
        anyhow::bail!("--version must be 1–64 printable characters");
    }
    let summary = summary
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if summary.as_ref().is_some_and(|s| s.chars().count() > 2000) {
        anyhow::bail!("--summary must be at most 2000 characters");
    }
    let mut queued = 0u64;
    loop {
        let batch = conn
            .transaction::<_, anyhow::Error, _>(async |conn| {
                let pending: Vec<(uuid::Uuid, String, String)> = users::table
                    .filter(users::disabled_at.is_null())
                    .filter(diesel::dsl::not(diesel::dsl::exists(
                        policy_notices::table
                            .filter(policy_notices::user_id.eq(users::id))
                            .filter(policy_notices::version.eq(version)),
                    )))
                    .order(users::id)
                    .limit(POLICY_NOTICE_BATCH)
                    .select((users::id, users::email, users::name))
                    // A user deleted meanwhile waits for this batch instead of failing it.
                    .for_key_share()
                    .load(conn)
                    .await?;
                let mut sent = 0u64;
                for (user_id, email, name) in &pending {
                    // A concurrent run may have taken this user: the row decides who mails.
                    let claimed = diesel::insert_into(policy_notices::table)
                        .values((
                            policy_notices::user_id.eq(user_id),
                            policy_notices::version.eq(version),
                        ))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    if claimed == 1 {
                        crate::mail::queue(
                            conn,
                            email,
                            "policy_changed",
                            serde_json::json!({ "name": name, "version": version,
                                                "summary": summary, "url": url }),
                        )
                        .await?;
                        sent += 1;
                    }
                }
                Ok((pending.len(), sent))
            })
            .await?;
        queued += batch.1;
        if batch.0 == 0 {
            return Ok(queued);
        }
    }
}
