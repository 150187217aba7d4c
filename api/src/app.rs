//! Start-up and shutdown: builds the state from configuration, runs the HTTP server and the
//! in-process workers, and stops both gracefully.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::dev::ServerHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    db,
    generations::{provider::ImageProvider, renderer::BuiltinRenderer},
    jobs,
    mail::{self, Mailer},
    metrics::Metrics,
    read_cache::ReadCache,
    state::AppState,
    storage,
};

/// Connects to everything the configuration names, migrating the database when asked.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    // Several TLS crypto backends are compiled in (reqwest's, lettre's), so rustls cannot pick
    // one by itself and clients relying on its default (async-stripe's) would panic: choose
    // aws-lc-rs, unless this process already chose (the error then says so and is fine).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let database_url = config.database_url.expose().to_string();
    db::ensure_database(&database_url, config.is_development()).await?;
    if config.auto_migrate {
        let applied = db::migrate::run_pending(&database_url).await?;
        if !applied.is_empty() {
            tracing::info!(count = applied.len(), "applied migrations");
        }
    }
    let pool = db::build_pool(&database_url, config.database_pool_size)?;
    let store = storage::from_config(&config).await?;
    let jwt = Arc::new(crate::auth::tokens::JwtKeys::from_config(&config)?);
    let http = crate::auth::oauth::http_client()?;
    let metrics = Arc::new(Metrics::new());
    let read_cache = Arc::new(ReadCache::new(
        config.read_cache_users,
        &metrics.read_cache_lookups,
    ));
    Ok(AppState {
        config: Arc::new(config),
        pool,
        store,
        metrics,
        jwt,
        read_cache,
        http,
    })
}

pub fn mailer(config: &Config) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(match &config.smtp_url {
        Some(url) => Arc::new(mail::SmtpMailer::new(
            url.expose(),
            config.mail_from.parse()?,
        )?),
        None => Arc::new(mail::LogMailer),
    })
}

/// The image model generations are sent to.
pub fn image_provider(config: &Config) -> anyhow::Result<Arc<dyn ImageProvider>> {
    match config.generation.provider.as_str() {
        "builtin" => Ok(Arc::new(BuiltinRenderer)),
        "openai" => {
            let openai = config.generation.openai.clone().ok_or_else(|| {
                anyhow::anyhow!("GI2_OPENAI_API_KEY: required when GI2_IMAGE_PROVIDER=openai")
            })?;
            Ok(Arc::new(crate::generations::openai::OpenAiProvider::new(
                openai,
            )?))
        }
        other => {
            anyhow::bail!("GI2_IMAGE_PROVIDER: provider '{other}' is not available in this build")
        }
    }
}

/// Every job kind this binary runs.
pub fn job_registry(state: &AppState) -> anyhow::Result<jobs::Registry> {
    Ok(jobs::Registry::default()
        .with(mail::SendMailHandler {
            pool: state.pool.clone(),
            mailer: mailer(&state.config)?,
        })
        .with(crate::generations::job::GenerateHandler {
            pool: state.pool.clone(),
            cache: state.read_cache.clone(),
            store: state.store.clone(),
            provider: image_provider(&state.config)?,
            deadline: state.config.generation.deadline,
        })
        .with(crate::generations::purge::PurgeGenerationHandler {
            pool: state.pool.clone(),
            store: state.store.clone(),
        })
        .with(crate::retention::RetentionSweepHandler {
            pool: state.pool.clone(),
            retention: state.config.retention.clone(),
        })
        .with(crate::accounts::export::ExportHandler {
            pool: state.pool.clone(),
            store: state.store.clone(),
        })
        .with(crate::accounts::deletion::DeleteAccountHandler {
            state: state.clone(),
        })
        .with(crate::accounts::deletion::PurgeAccountMailHandler {
            state: state.clone(),
        })
        .with(crate::generations::webhooks::DeliverWebhookHandler {
            pool: state.pool.clone(),
            cache: state.read_cache.clone(),
            policy: state.config.webhooks.clone(),
            allow_http: state.config.is_development(),
        }))
}

pub fn worker_options(config: &Config) -> jobs::WorkerOptions {
    jobs::WorkerOptions {
        concurrency: config.worker_concurrency,
        lease: config.job_lease,
        poll_interval: config.job_poll_interval,
        shutdown_grace: config.shutdown_grace,
        backoff_base: config.job_backoff_base,
        backoff_max: Duration::from_secs(3600),
    }
}

/// Periodic housekeeping done by worker processes: expiring credit grants, purging expired
/// exports, and dropping stale rate-limit windows and abandoned OAuth states.
pub async fn maintenance(state: AppState, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(mut conn) = state.pool.get().await else {
            continue;
        };
        match crate::credits::ledger::expire_due(&mut conn).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(credits = n, "expired credit grants"),
            Err(e) => tracing::warn!(error = %e, "expiring credit grants failed"),
        }
        if let Err(e) =
            crate::retention::schedule(&mut conn, state.config.retention.sweep_every).await
        {
            tracing::warn!(error = %e, "scheduling the retention sweep failed");
        }
        match crate::accounts::export::purge_expired(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(exports = n, "purged expired exports"),
            Err(e) => tracing::warn!(error = %e, "purging expired exports failed"),
        }
        use diesel_async::RunQueryDsl;
        // A generation whose job gave up must not keep its credits reserved.
        let orphaned: Vec<uuid::Uuid> = diesel::sql_query(
            "SELECT g.id FROM generations g JOIN jobs j ON j.id = g.job_id
             WHERE g.status IN ('queued', 'running') AND j.status = 'failed'",
        )
        .load::<OrphanRow>(&mut conn)
        .await
        .map(|rows| rows.into_iter().map(|r| r.id).collect())
        .unwrap_or_default();
        for id in orphaned {
            let failed = crate::generations::job::finish_unsuccessfully(
                &mut conn,
                id,
                "failed",
                Some((
                    "internal_error",
                    "The generation could not be completed; its credits were released.",
                )),
            )
            .await;
            if let Err(e) = failed {
                tracing::warn!(generation_id = %id, error = %e, "releasing an orphaned generation failed");
            }
        }
        for sql in [
            "DELETE FROM rate_limits WHERE window_start < now() - interval '1 day'",
            "DELETE FROM oauth_states WHERE expires_at < now()",
        ] {
            if let Err(e) = diesel::sql_query(sql).execute(&mut conn).await {
                tracing::warn!(error = %e, "housekeeping query failed");
            }
        }
    }
}

#[derive(diesel::QueryableByName)]
struct OrphanRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: uuid::Uuid,
}

/// A running service: the HTTP server and, unless disabled, the workers.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    /// `/metrics` on a listener of its own, when `GI2_METRICS_BIND` is set.
    metrics_server: Option<actix_web::dev::Server>,
    state: AppState,
    with_workers: bool,
}

impl Application {
    pub async fn build(config: Config, with_workers: bool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.bind)
            .map_err(|e| anyhow::anyhow!("cannot listen on {} (GI2_BIND): {e}", config.bind))?;
        let port = listener.local_addr()?.port();
        let metrics_listener = config
            .metrics_bind
            .map(|addr| {
                TcpListener::bind(addr)
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (GI2_METRICS_BIND): {e}"))
            })
            .transpose()?;
        let state = build_state(config).await?;
        let server = crate::http::server::start(listener, state.clone())?;
        let metrics_server = metrics_listener
            .map(|listener| crate::http::server::start_metrics(listener, state.clone()))
            .transpose()?;
        Ok(Self {
            port,
            server,
            metrics_server,
            state,
            with_workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests and stops the workers.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let handle: ServerHandle = self.server.handle();
        let server = tokio::spawn(self.server);
        let metrics = self
            .metrics_server
            .map(|metrics| (metrics.handle(), tokio::spawn(metrics)));
        // Until this connects, the read cache serves nothing and every read goes to the database.
        if self.state.read_cache.enabled() {
            tokio::spawn(crate::db::listen::listen(
                self.state.config.database_url.expose().to_string(),
                crate::read_cache::CHANNEL,
                "change notifications (read cache)",
                self.state.read_cache.clone(),
                shutdown.clone(),
            ));
        }
        let workers = if self.with_workers {
            tokio::spawn(maintenance(
                self.state.clone(),
                Duration::from_secs(60),
                shutdown.clone(),
            ));
            let registry = job_registry(&self.state)?;
            Some(tokio::spawn(jobs::run_workers(
                self.state.pool.clone(),
                self.state.config.database_url.expose().to_string(),
                registry,
                worker_options(&self.state.config),
                shutdown.clone(),
            )))
        } else {
            None
        };
        shutdown.cancelled().await;
        tracing::info!("shutting down: finishing in-flight requests and jobs");
        handle.stop(true).await;
        server.await??;
        if let Some((handle, metrics)) = metrics {
            handle.stop(true).await;
            metrics.await??;
        }
        if let Some(workers) = workers {
            workers.await??;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler installs");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        trigger.cancel();
    });
    token
}
