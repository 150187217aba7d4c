//! Configuration from `GI2_*` environment variables. Every variable has a default that
//! runs locally; production refuses the development-only defaults for secrets.

use std::{
    collections::HashMap, fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration,
};

use rand::RngCore;
use url::Url;

pub const ENV_PREFIX: &str = "GI2_";

/// A value that must never reach a log line or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// 32 random bytes, hex-encoded: an ephemeral key for development.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// Objects on the local disk, served by the API behind signed, expiring URLs.
    Local {
        dir: PathBuf,
    },
    S3(S3Config),
}

#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub path_style: bool,
    /// Create the bucket at start-up when it is missing (development and tests).
    pub create_bucket: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub bind: SocketAddr,
    /// Base URL clients reach this API at; signed links of the local store point here.
    pub public_url: Url,
    pub database_url: Secret,
    pub database_pool_size: usize,
    pub auto_migrate: bool,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub cors_origins: Vec<String>,
    pub http_workers: usize,
    /// Users whose credential checks and generation pages are kept in memory
    /// (`read_cache.rs`); 0 turns the cache off.
    pub read_cache_users: usize,
    pub max_json_bytes: usize,
    /// When set, `/metrics` answers only `Authorization: Bearer <this>`.
    pub metrics_token: Option<Secret>,
    /// When set, `/metrics` is served on its own listener here (and no longer on `bind`).
    pub metrics_bind: Option<SocketAddr>,
    pub storage: StorageConfig,
    /// HMAC key for signed URLs of the local object store.
    pub url_signing_key: Secret,
    pub signed_url_ttl: Duration,
    pub jwt_secret: Secret,
    /// Earlier signing keys, still accepted for verification while their tokens live out.
    pub jwt_previous_secrets: Vec<Secret>,
    pub auth: AuthConfig,
    pub oauth: OAuthConfig,
    pub billing: BillingConfig,
    pub upload: UploadConfig,
    pub generation: GenerationConfig,
    pub webhooks: WebhookConfig,
    pub smtp_url: Option<Secret>,
    pub mail_from: String,
    /// Where support requests are mailed.
    pub support_email: String,
    pub worker_concurrency: usize,
    pub job_lease: Duration,
    pub job_poll_interval: Duration,
    /// First retry delay of failed jobs; doubles each attempt.
    pub job_backoff_base: Duration,
    pub shutdown_grace: Duration,
    pub retention: RetentionConfig,
    /// Warnings found while loading (ephemeral keys and the like), logged once tracing is up.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// `Secure` on the refresh cookie; off only for plain-HTTP localhost development.
    pub cookie_secure: bool,
    /// Where mailed links (verification, reset) and OAuth sign-ins land.
    pub spa_url: Url,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub verify_token_ttl: Duration,
    pub reset_token_ttl: Duration,
    /// Requests per minute per client IP on each sign-in route (register, login, ...).
    pub rate_per_ip_per_minute: i32,
    /// The window of that limit (a minute, unless tests shorten it).
    pub rate_window: Duration,
    /// Failed passwords per account and IP before that pair is locked out for `lockout`.
    pub max_failed_logins: i32,
    pub lockout: Duration,
    /// Proxies of ours in front of the API, each appending to `X-Forwarded-For`: the client
    /// IP is the entry this many places from the right (0: the TCP peer). See `auth::client`.
    pub trusted_proxy_hops: usize,
    pub privacy_policy_version: String,
    pub privacy_policy_updated_at: String,
    pub privacy_policy_url: String,
}

#[derive(Debug, Clone)]
pub struct BillingConfig {
    pub catalog: crate::billing::catalog::Catalog,
    pub stripe: Option<StripeConfig>,
    pub creem: Option<CreemConfig>,
    /// Plan credits stay usable this long after their period ends.
    pub grace: Duration,
    /// A mail goes out once when the available balance drops below this.
    pub low_balance_threshold: i64,
}

#[derive(Debug, Clone)]
pub struct GenerationConfig {
    /// `builtin` (the embedded renderer) or `openai` (an OpenAI-compatible Images API).
    pub provider: String,
    pub openai: Option<OpenAiConfig>,
    /// A generation still unfinished this long after it started fails (`deadline_exceeded`).
    pub deadline: Duration,
}

/// Outgoing generation webhooks (see `generations::webhooks`).
#[derive(Debug, Clone, Default)]
pub struct WebhookConfig {
    /// Deliver to any address, private and loopback included (tests and local setups only:
    /// it switches the SSRF protection off).
    pub allow_private: bool,
    /// Hosts (names or IP literals, lower case) exempt from the address check, e.g. an
    /// internal receiver; they may also use plain http.
    pub allowed_hosts: Vec<String>,
}

impl WebhookConfig {
    /// Whether `host` skips the private-address check.
    pub fn host_exempt(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.allow_private
            || self
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host))
    }
}

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    pub base_url: Url,
    pub api_key: Secret,
    pub model: String,
    pub timeout: Duration,
}

/// How long records that have served their purpose are kept (see `retention`).
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Security-log entries (`/v1/me/activity`).
    pub activity: Duration,
    /// Jobs that succeeded or failed.
    pub finished_jobs: Duration,
    /// Stored `Idempotency-Key` responses.
    pub idempotency: Duration,
    /// An export's row after its download expired (its archive is deleted at expiry).
    pub expired_exports: Duration,
    /// How often the sweep runs.
    pub sweep_every: Duration,
}

/// Bounds on uploaded reference images.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Largest accepted file, in bytes; bigger uploads stop with 413 as soon as they pass it.
    pub max_bytes: usize,
    /// Largest accepted width × height, checked from the header before decoding
    /// (the decompression-bomb bound).
    pub max_image_pixels: u64,
    /// Largest accepted decoded size (width × height × bytes per pixel), checked from the
    /// header before decoding: 64 MiB by default, a 4096×4096 RGBA image or a 3840×2160
    /// 16-bit RGBA one. One decode holds at most this plus its re-encoded copy, and at most
    /// one decode per core runs at once.
    pub max_decoded_bytes: u64,
}

impl UploadConfig {
    pub fn decode_limits(&self) -> crate::generations::reference_images::DecodeLimits {
        crate::generations::reference_images::DecodeLimits {
            max_pixels: self.max_image_pixels,
            max_decoded_bytes: self.max_decoded_bytes,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: Secret,
    pub webhook_secret: Secret,
    /// The API's base URL (tests point it at a local stand-in).
    pub api_base: Url,
}

#[derive(Debug, Clone)]
pub struct CreemConfig {
    pub api_key: Secret,
    pub webhook_secret: Secret,
    /// `https://api.creem.io` live, `https://test-api.creem.io` test mode.
    pub api_base: Url,
}

#[derive(Debug, Clone)]
pub struct OAuthProviderConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub authorize_url: Url,
    pub token_url: Url,
    /// Google: the OIDC userinfo endpoint. GitHub: the API base (`/user`, `/user/emails`).
    pub api_url: Url,
}

#[derive(Debug, Clone, Default)]
pub struct OAuthConfig {
    pub google: Option<OAuthProviderConfig>,
    pub github: Option<OAuthProviderConfig>,
}

/// A configuration problem, always naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: String,
    pub message: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Builds the configuration from a variable map (the process environment, or a test's).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Vars { vars };
        let environment = match env.get("ENV").as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                return Err(env.error(
                    "ENV",
                    format!("expected development or production, got '{other}'"),
                ));
            }
        };
        let dev = environment == Environment::Development;
        let mut warnings = Vec::new();

        let bind: SocketAddr = env.parse("BIND", "127.0.0.1:8080")?;
        let public_url = match env.get("PUBLIC_URL") {
            Some(raw) => Url::parse(&raw).map_err(|e| env.error("PUBLIC_URL", e.to_string()))?,
            None => Url::parse(&format!("http://{bind}"))
                .map_err(|e| env.error("BIND", e.to_string()))?,
        };
        let database_url = env
            .get("DATABASE_URL")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/gptimage2".into());
        Url::parse(&database_url)
            .map_err(|_| env.error("DATABASE_URL", "not a URL (postgres://user@host:port/db)"))?;

        let log_format = match env.get("LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(env.error(
                    "LOG_FORMAT",
                    format!("expected text or json, got '{other}'"),
                ));
            }
        };
        let cors_origins = env
            .get("CORS_ORIGINS")
            .unwrap_or_else(|| "http://localhost:5173,http://127.0.0.1:5173".into())
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect::<Vec<_>>();
        for origin in &cors_origins {
            let url = Url::parse(origin)
                .map_err(|_| env.error("CORS_ORIGINS", format!("'{origin}' is not an origin")))?;
            if url.path() != "/" || url.query().is_some() {
                return Err(env.error(
                    "CORS_ORIGINS",
                    format!("'{origin}' must be scheme://host[:port] only"),
                ));
            }
        }

        let storage = match env.get("STORAGE").as_deref() {
            None | Some("local") => StorageConfig::Local {
                dir: PathBuf::from(
                    env.get("STORAGE_DIR")
                        .unwrap_or_else(|| ".data/objects".into()),
                ),
            },
            Some("s3") => StorageConfig::S3(S3Config {
                endpoint: env.get("S3_ENDPOINT"),
                region: env.get("S3_REGION").unwrap_or_else(|| "us-east-1".into()),
                bucket: env.get("S3_BUCKET").unwrap_or_else(|| "gptimage2".into()),
                access_key_id: env.get("S3_ACCESS_KEY_ID"),
                secret_access_key: env.get("S3_SECRET_ACCESS_KEY").map(Secret::new),
                path_style: env.parse("S3_PATH_STYLE", "true")?,
                create_bucket: env.parse("S3_CREATE_BUCKET", if dev { "true" } else { "false" })?,
            }),
            Some(other) => {
                return Err(env.error("STORAGE", format!("expected local or s3, got '{other}'")));
            }
        };
        if let StorageConfig::S3(s3) = &storage
            && let Some(endpoint) = &s3.endpoint
        {
            Url::parse(endpoint).map_err(|e| env.error("S3_ENDPOINT", e.to_string()))?;
        }

        let url_signing_key = env.secret("URL_SIGNING_KEY", dev, &mut warnings)?;
        let jwt_secret = env.secret("JWT_SECRET", dev, &mut warnings)?;

        let jwt_previous_secrets = env
            .get("JWT_PREVIOUS_SECRETS")
            .map(|list| {
                list.split(',')
                    .map(|s| Secret::new(s.trim()))
                    .filter(|s| !s.expose().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let spa_url = match env.get("SPA_URL") {
            Some(raw) => Url::parse(&raw).map_err(|e| env.error("SPA_URL", e.to_string()))?,
            None => Url::parse(
                cors_origins
                    .first()
                    .map(String::as_str)
                    .unwrap_or("http://localhost:5173"),
            )
            .map_err(|e| env.error("CORS_ORIGINS", e.to_string()))?,
        };
        let auth = AuthConfig {
            access_token_ttl: Duration::from_secs(env.parse_min(
                "ACCESS_TOKEN_TTL_SECS",
                "900",
                30,
            )?),
            refresh_token_ttl: Duration::from_secs(env.parse_min(
                "REFRESH_TOKEN_TTL_SECS",
                "2592000",
                60,
            )?),
            cookie_secure: env.parse("COOKIE_SECURE", if dev { "false" } else { "true" })?,
            spa_url,
            argon2_memory_kib: env.parse_min("ARGON2_MEMORY_KIB", "19456", 1024)?,
            argon2_iterations: env.parse_min("ARGON2_ITERATIONS", "2", 1)?,
            argon2_parallelism: env.parse_min("ARGON2_PARALLELISM", "1", 1)?,
            verify_token_ttl: Duration::from_secs(env.parse_min(
                "VERIFY_TOKEN_TTL_SECS",
                "172800",
                60,
            )?),
            reset_token_ttl: Duration::from_secs(env.parse_min(
                "RESET_TOKEN_TTL_SECS",
                "3600",
                60,
            )?),
            rate_per_ip_per_minute: env.parse_min("AUTH_RATE_PER_MINUTE", "30", 1)?,
            rate_window: Duration::from_secs(env.parse_min("AUTH_RATE_WINDOW_SECS", "60", 1)?),
            max_failed_logins: env.parse_min("MAX_FAILED_LOGINS", "5", 1)?,
            lockout: Duration::from_secs(env.parse_min("LOCKOUT_SECS", "900", 1)?),
            trusted_proxy_hops: env.trusted_proxy_hops()?,
            privacy_policy_version: env
                .get("PRIVACY_POLICY_VERSION")
                .unwrap_or_else(|| "2026-11-01".into()),
            privacy_policy_updated_at: env
                .get("PRIVACY_POLICY_UPDATED_AT")
                .unwrap_or_else(|| "2026-11-01T00:00:00Z".into()),
            privacy_policy_url: env
                .get("PRIVACY_POLICY_URL")
                .unwrap_or_else(|| "https://gptimage2.dev/legal/privacy".into()),
        };
        let oauth = OAuthConfig {
            google: env.oauth_provider(
                "GOOGLE",
                "https://accounts.google.com/o/oauth2/v2/auth",
                "https://oauth2.googleapis.com/token",
                "https://openidconnect.googleapis.com/v1/userinfo",
            )?,
            github: env.oauth_provider(
                "GITHUB",
                "https://github.com/login/oauth/authorize",
                "https://github.com/login/oauth/access_token",
                "https://api.github.com",
            )?,
        };

        let catalog = match env.get("BILLING_CATALOG") {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    env.error("BILLING_CATALOG", format!("cannot read {path}: {e}"))
                })?;
                crate::billing::catalog::Catalog::parse(&text)
                    .map_err(|e| env.error("BILLING_CATALOG", e))?
            }
            None => crate::billing::catalog::Catalog::builtin(),
        };
        let url_var = |name: &str, default: &str| -> Result<Url, ConfigError> {
            let raw = env.get(name).unwrap_or_else(|| default.to_string());
            Url::parse(&raw).map_err(|e| env.error(name, e.to_string()))
        };
        let stripe = match env.get("STRIPE_SECRET_KEY") {
            Some(key) => Some(StripeConfig {
                secret_key: Secret::new(key),
                webhook_secret: Secret::new(env.get("STRIPE_WEBHOOK_SECRET").ok_or_else(|| {
                    env.error(
                        "STRIPE_WEBHOOK_SECRET",
                        "required when GI2_STRIPE_SECRET_KEY is set",
                    )
                })?),
                api_base: url_var("STRIPE_API_BASE", "https://api.stripe.com")?,
            }),
            None => None,
        };
        let creem = match env.get("CREEM_API_KEY") {
            Some(key) => Some(CreemConfig {
                api_key: Secret::new(key),
                webhook_secret: Secret::new(env.get("CREEM_WEBHOOK_SECRET").ok_or_else(|| {
                    env.error(
                        "CREEM_WEBHOOK_SECRET",
                        "required when GI2_CREEM_API_KEY is set",
                    )
                })?),
                api_base: url_var("CREEM_API_BASE", "https://api.creem.io")?,
            }),
            None => None,
        };
        let billing = BillingConfig {
            catalog,
            stripe,
            creem,
            grace: Duration::from_secs(env.parse::<u64>("BILLING_GRACE_DAYS", "3")? * 86_400),
            low_balance_threshold: env.parse_min("LOW_BALANCE_THRESHOLD", "20", 0)?,
        };

        let openai = match env.get("OPENAI_API_KEY") {
            Some(key) => Some(OpenAiConfig {
                base_url: url_var("OPENAI_BASE_URL", "https://api.openai.com")?,
                api_key: Secret::new(key),
                model: env
                    .get("OPENAI_MODEL")
                    .unwrap_or_else(|| "gpt-image-2".into()),
                timeout: Duration::from_secs(env.parse_min("OPENAI_TIMEOUT_SECS", "300", 1)?),
            }),
            None => None,
        };
        let provider = env.get("IMAGE_PROVIDER").unwrap_or_else(|| {
            if openai.is_some() {
                "openai".into()
            } else {
                "builtin".into()
            }
        });
        match provider.as_str() {
            "builtin" => {}
            "openai" if openai.is_some() => {}
            "openai" => {
                return Err(env.error("OPENAI_API_KEY", "required when GI2_IMAGE_PROVIDER=openai"));
            }
            other => {
                return Err(env.error(
                    "IMAGE_PROVIDER",
                    format!("expected builtin or openai, got '{other}'"),
                ));
            }
        }
        let generation = GenerationConfig {
            provider,
            openai,
            deadline: Duration::from_secs(env.parse_min("GENERATION_DEADLINE_SECS", "600", 1)?),
        };

        let upload = UploadConfig {
            max_bytes: env.parse_min("MAX_UPLOAD_BYTES", "20971520", 1024)?,
            max_image_pixels: env.parse_min("MAX_IMAGE_PIXELS", "40000000", 1)?,
            max_decoded_bytes: env.parse_min("MAX_IMAGE_DECODED_BYTES", "67108864", 1_048_576)?,
        };

        let webhooks = WebhookConfig {
            allow_private: env.parse("WEBHOOK_ALLOW_PRIVATE", "false")?,
            allowed_hosts: env
                .get("WEBHOOK_ALLOWED_HOSTS")
                .map(|list| {
                    list.split(',')
                        .map(|h| h.trim().to_ascii_lowercase())
                        .filter(|h| !h.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        };

        let smtp_url = env.get("SMTP_URL").map(Secret::new);
        if let Some(smtp) = &smtp_url {
            let url = Url::parse(smtp.expose()).map_err(|_| {
                env.error(
                    "SMTP_URL",
                    "not a URL (smtp://user:pass@host:587?tls=required)",
                )
            })?;
            if !matches!(url.scheme(), "smtp" | "smtps") {
                return Err(env.error("SMTP_URL", "scheme must be smtp or smtps"));
            }
        }
        // Without it mail goes to the log, password-reset and verification links included:
        // fine on a laptop, a leak of every account's keys on a server.
        if !dev && smtp_url.is_none() {
            return Err(env.error(
                "SMTP_URL",
                "required in production (mail would be written to the log, sign-in links included)",
            ));
        }

        let metrics_token = env.get("METRICS_TOKEN").map(Secret::new);
        if metrics_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return Err(env.error("METRICS_TOKEN", "must be at least 16 characters"));
        }
        let metrics_bind: Option<SocketAddr> = match env.get("METRICS_BIND") {
            Some(_) => Some(env.parse("METRICS_BIND", "")?),
            None => None,
        };
        if metrics_bind == Some(bind) {
            return Err(env.error("METRICS_BIND", "must differ from GI2_BIND"));
        }

        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let config = Self {
            environment,
            bind,
            public_url,
            database_url: Secret::new(database_url),
            database_pool_size: env.parse_min("DATABASE_POOL_SIZE", "16", 1)?,
            auto_migrate: env.parse("AUTO_MIGRATE", "true")?,
            log_filter: env.get("LOG").unwrap_or_else(|| "info".into()),
            log_format,
            cors_origins,
            http_workers: env.parse_min("HTTP_WORKERS", &cpus.to_string(), 1)?,
            read_cache_users: env.parse("READ_CACHE_USERS", "10000")?,
            max_json_bytes: env.parse_min("MAX_JSON_BYTES", "1048576", 1024)?,
            metrics_token,
            metrics_bind,
            storage,
            url_signing_key,
            signed_url_ttl: Duration::from_secs(env.parse_min("SIGNED_URL_TTL_SECS", "900", 1)?),
            jwt_secret,
            jwt_previous_secrets,
            auth,
            oauth,
            billing,
            upload,
            generation,
            webhooks,
            smtp_url,
            mail_from: env
                .get("MAIL_FROM")
                .unwrap_or_else(|| "GPT Image 2 <no-reply@localhost>".into()),
            support_email: env
                .get("SUPPORT_EMAIL")
                .unwrap_or_else(|| "support@localhost".into()),
            worker_concurrency: env.parse_min("WORKER_CONCURRENCY", "4", 1)?,
            job_lease: Duration::from_secs(env.parse_min("JOB_LEASE_SECS", "30", 1)?),
            job_poll_interval: Duration::from_millis(env.parse_min("JOB_POLL_MS", "1000", 10)?),
            job_backoff_base: Duration::from_millis(env.parse_min(
                "JOB_BACKOFF_BASE_MS",
                "2000",
                1,
            )?),
            shutdown_grace: Duration::from_secs(env.parse("SHUTDOWN_GRACE_SECS", "20")?),
            retention: RetentionConfig {
                activity: days(env.parse_min("RETENTION_ACTIVITY_DAYS", "365", 1)?),
                finished_jobs: days(env.parse_min("RETENTION_JOBS_DAYS", "30", 1)?),
                idempotency: Duration::from_secs(
                    env.parse_min::<u64>("RETENTION_IDEMPOTENCY_HOURS", "24", 1)? * 3600,
                ),
                expired_exports: days(env.parse_min("RETENTION_EXPIRED_EXPORTS_DAYS", "30", 0)?),
                sweep_every: Duration::from_secs(env.parse_min(
                    "RETENTION_SWEEP_SECS",
                    "3600",
                    60,
                )?),
            },
            warnings,
        };
        config
            .mail_from
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| env.error("MAIL_FROM", e.to_string()))?;
        config
            .support_email
            .parse::<lettre::Address>()
            .map_err(|e| env.error("SUPPORT_EMAIL", e.to_string()))?;
        Ok(config)
    }

    pub fn is_development(&self) -> bool {
        self.environment == Environment::Development
    }
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

struct Vars {
    vars: HashMap<String, String>,
}

impl Vars {
    fn get(&self, name: &str) -> Option<String> {
        self.vars
            .get(&format!("{ENV_PREFIX}{name}"))
            .filter(|v| !v.is_empty())
            .cloned()
    }

    fn error(&self, name: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            var: format!("{ENV_PREFIX}{name}"),
            message: message.into(),
        }
    }

    fn parse<T: FromStr>(&self, name: &str, default: &str) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        let raw = self.get(name).unwrap_or_else(|| default.to_string());
        raw.parse::<T>()
            .map_err(|e| self.error(name, format!("cannot parse '{raw}': {e}")))
    }

    fn parse_min<T: FromStr + PartialOrd + fmt::Display>(
        &self,
        name: &str,
        default: &str,
        min: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        let value: T = self.parse(name, default)?;
        if value < min {
            return Err(self.error(name, format!("must be at least {min}")));
        }
        Ok(value)
    }

    /// `TRUSTED_PROXY_HOPS`, or the older `TRUST_FORWARDED_FOR=true`, which means one proxy.
    fn trusted_proxy_hops(&self) -> Result<usize, ConfigError> {
        let legacy: bool = self.parse("TRUST_FORWARDED_FOR", "false")?;
        let hops: usize = self.parse("TRUSTED_PROXY_HOPS", if legacy { "1" } else { "0" })?;
        if legacy && hops == 0 {
            return Err(self.error(
                "TRUSTED_PROXY_HOPS",
                "0 contradicts GI2_TRUST_FORWARDED_FOR=true (one proxy); unset one of them",
            ));
        }
        if hops > 10 {
            return Err(self.error("TRUSTED_PROXY_HOPS", "must be at most 10"));
        }
        Ok(hops)
    }

    /// A provider is on when its client id is set; then its secret is required too.
    fn oauth_provider(
        &self,
        name: &str,
        authorize: &str,
        token: &str,
        api: &str,
    ) -> Result<Option<OAuthProviderConfig>, ConfigError> {
        let Some(client_id) = self.get(&format!("{name}_CLIENT_ID")) else {
            return Ok(None);
        };
        let secret_var = format!("{name}_CLIENT_SECRET");
        let client_secret = self
            .get(&secret_var)
            .ok_or_else(|| self.error(&secret_var, "required when the client id is set"))?;
        let url = |suffix: &str, default: &str| -> Result<Url, ConfigError> {
            let var = format!("{name}_{suffix}");
            let raw = self.get(&var).unwrap_or_else(|| default.to_string());
            Url::parse(&raw).map_err(|e| self.error(&var, e.to_string()))
        };
        Ok(Some(OAuthProviderConfig {
            client_id,
            client_secret: Secret::new(client_secret),
            authorize_url: url("AUTHORIZE_URL", authorize)?,
            token_url: url("TOKEN_URL", token)?,
            api_url: url("API_URL", api)?,
        }))
    }

    /// A secret key: required in production, generated (with a warning) in development.
    fn secret(
        &self,
        name: &str,
        dev: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Secret, ConfigError> {
        match self.get(name) {
            Some(value) if value.len() < 32 => {
                Err(self.error(name, "must be at least 32 characters"))
            }
            Some(value) => Ok(Secret::new(value)),
            None if dev => {
                warnings.push(format!(
                    "{ENV_PREFIX}{name} is not set: using an ephemeral random key; everything signed with it is invalid after a restart"
                ));
                Ok(Secret::random())
            }
            None => Err(self.error(
                name,
                "required in production (at least 32 random characters)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_run_locally() {
        let config = Config::from_vars(HashMap::new()).expect("defaults are valid");
        assert!(config.is_development());
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(
            config.warnings.len(),
            2,
            "both ephemeral keys are announced"
        );
    }

    #[test]
    fn proxy_hops_default_to_none_and_the_older_switch_means_one() {
        let hops = |pairs: &[(&str, &str)]| {
            Config::from_vars(vars(pairs)).map(|c| c.auth.trusted_proxy_hops)
        };
        assert_eq!(hops(&[]).unwrap(), 0);
        assert_eq!(hops(&[("GI2_TRUST_FORWARDED_FOR", "true")]).unwrap(), 1);
        assert_eq!(hops(&[("GI2_TRUSTED_PROXY_HOPS", "2")]).unwrap(), 2);
        let err = hops(&[
            ("GI2_TRUST_FORWARDED_FOR", "true"),
            ("GI2_TRUSTED_PROXY_HOPS", "0"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "GI2_TRUSTED_PROXY_HOPS");
        assert!(hops(&[("GI2_TRUSTED_PROXY_HOPS", "-1")]).is_err());
    }

    #[test]
    fn metrics_protection_is_checked() {
        let err = Config::from_vars(vars(&[("GI2_METRICS_TOKEN", "short")])).unwrap_err();
        assert_eq!(err.var, "GI2_METRICS_TOKEN");
        let err = Config::from_vars(vars(&[("GI2_METRICS_BIND", "127.0.0.1:8080")])).unwrap_err();
        assert_eq!(err.var, "GI2_METRICS_BIND");
        let config = Config::from_vars(vars(&[("GI2_METRICS_BIND", "127.0.0.1:9090")])).unwrap();
        assert_eq!(config.metrics_bind.unwrap().port(), 9090);
    }

    #[test]
    fn errors_name_the_variable() {
        let err = Config::from_vars(vars(&[("GI2_BIND", "nowhere")])).unwrap_err();
        assert_eq!(err.var, "GI2_BIND");
        let err = Config::from_vars(vars(&[("GI2_ENV", "production")])).unwrap_err();
        assert_eq!(err.var, "GI2_URL_SIGNING_KEY");
        let secrets = [
            ("GI2_ENV", "production"),
            (
                "GI2_URL_SIGNING_KEY",
                "production-url-signing-key-0123456789",
            ),
            ("GI2_JWT_SECRET", "production-jwt-secret-0123456789abcdef"),
        ];
        let err = Config::from_vars(vars(&secrets)).unwrap_err();
        assert_eq!(err.var, "GI2_SMTP_URL");
        let mut with_smtp = secrets.to_vec();
        with_smtp.push(("GI2_SMTP_URL", "smtp://mail.example.com:587"));
        assert!(Config::from_vars(vars(&with_smtp)).is_ok());
        let err = Config::from_vars(vars(&[("GI2_WORKER_CONCURRENCY", "0")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid configuration: GI2_WORKER_CONCURRENCY:")
        );
    }

    #[test]
    fn webhook_overrides_are_off_unless_set() {
        let config = Config::from_vars(HashMap::new()).unwrap();
        assert!(!config.webhooks.host_exempt("127.0.0.1"));
        let config = Config::from_vars(vars(&[(
            "GI2_WEBHOOK_ALLOWED_HOSTS",
            " Hooks.Internal.Example , ::1,",
        )]))
        .unwrap();
        assert!(config.webhooks.host_exempt("hooks.internal.example"));
        assert!(config.webhooks.host_exempt("[::1]"));
        assert!(!config.webhooks.host_exempt("127.0.0.1"));
        let config = Config::from_vars(vars(&[("GI2_WEBHOOK_ALLOW_PRIVATE", "true")])).unwrap();
        assert!(config.webhooks.host_exempt("10.0.0.1"));
        let err = Config::from_vars(vars(&[("GI2_WEBHOOK_ALLOW_PRIVATE", "yes")])).unwrap_err();
        assert_eq!(err.var, "GI2_WEBHOOK_ALLOW_PRIVATE");
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let config = Config::from_vars(vars(&[(
            "GI2_JWT_SECRET",
            "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t",
        )]))
        .unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}
