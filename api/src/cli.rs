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
    /// Queue a test mail to check delivery (delivered by a running worker).
    SendTestMail {
        #[arg(long)]
        to: String,
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
            crate::jobs::run_workers(
                state.pool.clone(),
                state.config.database_url.expose().to_string(),
                registry,
                app::worker_options(&state.config),
                app::shutdown_on_signals(),
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
    }
    Ok(())
}
