//! Settings: `config/default.toml` (compiled in) < `--config FILE` < environment.
//!
//! Every key is documented in `config/default.toml`; this module only gives them types and
//! checks their ranges, so an operator sees one line naming the key that is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use uuid::Uuid;

/// The defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Short environment names from the original task list, and the key each one sets.
pub const SHORT_ENV_NAMES: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("PORT", "server.port"),
    ("QUEUE_BACKEND", "queue.backend"),
    ("NATS_URL", "queue.nats.url"),
    ("WORKER_ENABLED", "worker.enabled"),
    ("WORKER_CONCURRENCY", "worker.concurrency"),
    ("RETRY_MAX_ATTEMPTS", "retry.max_attempts"),
    ("RETRY_MAX_AGE", "retry.max_age"),
    ("DLQ_RETENTION", "dlq.retention"),
    ("LOG_LEVEL", "log.level"),
    ("AUTH_REQUIRED", "auth.required"),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("cannot load configuration: {0}")]
    Load(String),
}

fn invalid(key: &str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub api: ApiSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub queue: QueueSettings,
    pub worker: WorkerSettings,
    pub delivery: DeliverySettings,
    pub retry: RetrySettings,
    pub dlq: DlqSettings,
    pub providers: ProvidersSettings,
    pub webhooks: WebhookSettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    #[serde(deserialize_with = "byte_size")]
    pub body_limit: usize,
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    pub http_workers: usize,
    /// How long a request body may take to arrive (408 after).
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    /// How long events may wait untouched before /readyz reports the queue stalled.
    #[serde(deserialize_with = "duration")]
    pub stall_timeout: Duration,
    /// Peers whose `X-Forwarded-For` names the client (rate limits, logs).
    #[serde(deserialize_with = "cidrs")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub auto_migrate: bool,
    /// 0 = automatic, see [`DatabaseSettings::pool_size`].
    pub max_connections: u32,
    #[serde(deserialize_with = "duration")]
    pub acquire_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub busy_timeout: Duration,
    pub sqlite_synchronous: SqliteSynchronous,
}

/// `database.sqlite_synchronous`: when SQLite syncs its WAL to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// At checkpoints: the last commits can be lost with the machine.
    Normal,
    /// At every commit.
    Full,
}

impl DatabaseSettings {
    /// SQLite writes one transaction at a time and every connection has a page cache of
    /// its own, so beyond a few connections each extra one only adds cold caches: the
    /// load benchmark ran ~8% faster with 4 than with 10. PostgreSQL writes in parallel.
    const SQLITE_POOL: u32 = 4;
    const POSTGRES_POOL: u32 = 10;

    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    /// The SQLite database file, if it is one (not `:memory:`).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let path = self
            .url
            .strip_prefix("sqlite://")
            .or_else(|| self.url.strip_prefix("sqlite:"))?;
        let path = path.split('?').next().unwrap_or_default();
        (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
    }

    /// A relative SQLite path taken from `dir` (the config file's directory that set it).
    fn resolve_sqlite_path(&mut self, dir: &Path) {
        let Some(path) = self.sqlite_path().filter(|p| p.is_relative()) else {
            return;
        };
        let query = self.url.split_once('?').map_or("", |(_, q)| q);
        let separator = if query.is_empty() { "" } else { "?" };
        self.url = format!("sqlite://{}{separator}{query}", dir.join(path).display());
    }

    pub fn pool_size(&self) -> u32 {
        match self.max_connections {
            0 if self.is_sqlite() => Self::SQLITE_POOL,
            0 => Self::POSTGRES_POOL,
            n => n,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub default_customer_id: Uuid,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Every `/api` request needs an API key; false = open (local experiments only).
    pub required: bool,
    /// How long a verified key is trusted without asking the database again.
    #[serde(deserialize_with = "duration")]
    pub cache_ttl: Duration,
    /// Where the first start writes the initial operator key (mode 0600); empty = stdout.
    pub bootstrap_key_file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests per API key (and per provider for signed webhooks).
    pub per_key: Rate,
    /// Requests a key may send at once above its steady rate.
    pub burst: u32,
    /// Requests per client IP that carry no valid credentials.
    pub per_ip: Rate,
}

/// A rate such as `500/s`: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let refuse =
            || format!("accepts a rate like \"500/s\", \"100/m\" or \"1000/h\", got {text:?}");
        let (count, unit) = text.trim().split_once('/').ok_or_else(refuse)?;
        let count: u32 = count.trim().parse().map_err(|_| refuse())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(refuse()),
        };
        if count == 0 {
            return Err(format!("must allow at least 1 request, got {text:?}"));
        }
        Ok(Rate { count, per })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A secret from the configuration; never shown by `Debug` (settings may be logged).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackendKind {
    Memory,
    Nats,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    pub backend: QueueBackendKind,
    pub capacity: usize,
    #[serde(deserialize_with = "duration")]
    pub enqueue_timeout: Duration,
    /// Memory backend: most bytes of events held, beside `capacity`.
    #[serde(deserialize_with = "byte_size")]
    pub max_bytes: usize,
    /// Memory backend: where a shutdown writes the events the database refused
    /// ("" = beside the SQLite file, or `data` with PostgreSQL).
    pub spill_dir: String,
    pub nats: NatsSettings,
}

impl QueueSettings {
    /// The directory of `spill-*.jsonl` files (see `spill_dir`).
    pub fn spill_directory(&self, database: &DatabaseSettings) -> PathBuf {
        if !self.spill_dir.trim().is_empty() {
            return PathBuf::from(self.spill_dir.trim());
        }
        database
            .sqlite_path()
            .and_then(|file| file.parent().map(Path::to_path_buf))
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(if database.is_sqlite() { "." } else { "data" }))
    }
}

/// `queue.backend = "nats"`: NATS JetStream (SPEC §10).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// Comma-separated server URLs.
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub consumer: String,
    pub replicas: usize,
    #[serde(deserialize_with = "duration")]
    pub ack_wait: Duration,
    #[serde(deserialize_with = "duration")]
    pub duplicate_window: Duration,
    #[serde(deserialize_with = "byte_size")]
    pub max_bytes: usize,
    pub max_ack_pending: i64,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub publish_timeout: Duration,
}

impl NatsSettings {
    /// The servers of `url`, in order.
    pub fn servers(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let servers = self.servers();
        if servers.is_empty() {
            return Err(invalid("queue.nats.url", "needs at least one server URL"));
        }
        for server in &servers {
            if server.parse::<async_nats::ServerAddr>().is_err() {
                return Err(invalid(
                    "queue.nats.url",
                    format!("accepts comma-separated URLs like nats://host:4222, got {server:?}"),
                ));
            }
        }
        // Names become subject tokens of the JetStream API: no dots, wildcards or spaces.
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(&self.stream) {
            return Err(invalid(
                "queue.nats.stream",
                "accepts letters, digits, - and _",
            ));
        }
        if !name_ok(&self.consumer) {
            return Err(invalid(
                "queue.nats.consumer",
                "accepts letters, digits, - and _",
            ));
        }
        if !self.subject_prefix.split('.').all(name_ok) {
            return Err(invalid(
                "queue.nats.subject_prefix",
                "accepts dot-separated tokens of letters, digits, - and _ (no wildcards)",
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(invalid("queue.nats.replicas", "accepts 1 to 5"));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(invalid("queue.nats.ack_wait", "must be at least 1s"));
        }
        for (key, value) in [
            ("queue.nats.duplicate_window", self.duplicate_window),
            ("queue.nats.connect_timeout", self.connect_timeout),
            ("queue.nats.publish_timeout", self.publish_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than 0s"));
            }
        }
        if self.max_bytes == 0 {
            return Err(invalid("queue.nats.max_bytes", "must be at least 1B"));
        }
        if self.max_ack_pending < 1 {
            return Err(invalid("queue.nats.max_ack_pending", "must be at least 1"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub enabled: bool,
    pub concurrency: usize,
    pub batch_size: usize,
}

/// The delivery stage (SPEC §13): senders claim due outbound messages from the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// How often a sender looks for due messages it was not told about (retries coming
    /// due, messages stored by another process, leases run out).
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// How long a claim lasts: a message whose sender died is due again after it.
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
}

/// Webhooks to customers (SPEC §15).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// An endpoint has this long to answer 2xx.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// The waits before each retry; a delivery fails for good after the last.
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// An endpoint failing without a success for this long is disabled.
    #[serde(deserialize_with = "duration")]
    pub disable_after: Duration,
    /// Endpoints on loopback and private addresses (for tests and closed networks).
    pub allow_private: bool,
    /// Calls in flight to one endpoint, per process.
    pub concurrency_per_endpoint: usize,
    /// How often deliverers look for due deliveries.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// How long a claimed delivery is held before another deliverer may take it.
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub max_attempts: u32,
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    #[serde(deserialize_with = "duration")]
    pub base_delay: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_delay: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqSettings {
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    #[serde(deserialize_with = "duration")]
    pub purge_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersSettings {
    pub sms: ProviderSettings,
    pub email: ProviderSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Mock,
    Http,
    /// Twilio's Messages API (SMS and MMS only; see `providers::twilio`).
    Twilio,
    /// An SMTP server or relay (email only; see `providers::smtp`).
    Smtp,
}

/// `providers.email.tls` with kind = "smtp": how the connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// A plain connection upgraded with STARTTLS, which the server must offer.
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS", implicit TLS).
    Tls,
    /// No encryption: a relay on the same host or a trusted network only.
    None,
}

impl SmtpTls {
    /// The port when `port` is 0: submission (587), submissions (465) or SMTP (25).
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

impl ProviderKind {
    /// As settings spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Mock => "mock",
            ProviderKind::Http => "http",
            ProviderKind::Twilio => "twilio",
            ProviderKind::Smtp => "smtp",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub kind: ProviderKind,
    pub url: String,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub mock_latency: Duration,
    pub mock_error_rate: f64,
    pub mock_rate_limit_rate: f64,
    pub mock_timeout_rate: f64,
    #[serde(deserialize_with = "duration")]
    pub mock_retry_after: Duration,
    #[serde(deserialize_with = "optional_seed")]
    pub mock_seed: Option<u64>,
    /// When set, this provider's webhook must carry `X-Messaging-Signature`.
    pub webhook_secret: Secret,
    /// How far a signature's timestamp may be from now.
    #[serde(deserialize_with = "duration")]
    pub webhook_tolerance: Duration,
    /// PEM file of extra CAs trusted for an `https://` url ("" = public roots only).
    pub ca_file: String,
    /// Provider calls in flight at most.
    pub concurrency: usize,
    /// Provider calls per unit of time at most ("" = no limit).
    #[serde(deserialize_with = "optional_rate")]
    pub rate: Option<Rate>,
    /// Consecutive transient failures that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit stays open before one trial call.
    #[serde(deserialize_with = "duration")]
    pub breaker_cooldown: Duration,
    /// kind = "twilio": the account (`AC` and 32 hex digits).
    #[serde(default)]
    pub account_sid: String,
    /// kind = "twilio": the account's auth token, or read from `auth_token_file`.
    #[serde(default)]
    pub auth_token: Secret,
    #[serde(default)]
    pub auth_token_file: String,
    /// kind = "twilio": where Twilio's API is ("" = https://api.twilio.com).
    #[serde(default)]
    pub base_url: String,
    /// kind = "twilio": send through this Messaging Service instead of from `from`.
    #[serde(default)]
    pub messaging_service_sid: String,
    /// kind = "twilio": this server's base URL as Twilio calls it; Twilio's webhooks are
    /// signed over it, and receipts are asked for at it ("" = neither).
    #[serde(default)]
    pub public_url: String,
    /// A second provider, a generic HTTP endpoint (as `kind = "http"`), called while this
    /// one's circuit is open ("" = none: messages wait for this one).
    #[serde(default)]
    pub fallback_url: String,
    /// kind = "smtp": the server and its port (0 = the usual one for `tls`).
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub tls: SmtpTls,
    /// kind = "smtp": AUTH credentials ("" = none); the password or `password_file`.
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: Secret,
    #[serde(default)]
    pub password_file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Base URL of an OTLP/HTTP receiver (an OpenTelemetry Collector); empty = no export.
    pub otlp_endpoint: String,
    /// How often metrics are pushed, and the longest a finished span waits to be sent.
    #[serde(deserialize_with = "duration")]
    pub otlp_interval: Duration,
    /// `service.name` of everything exported.
    pub service_name: String,
    /// Share of new traces recorded (a request's sampled `traceparent` is always followed).
    pub trace_sample_ratio: f64,
}

impl TelemetrySettings {
    pub fn otlp_enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }
}

/// Where settings come from besides the compiled-in defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A deployment file layered over the defaults.
    pub file: Option<PathBuf>,
    /// Environment variables (name, value), highest precedence.
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// The process environment, with `MESSAGING_CONFIG` as the file unless one is given.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let file = file.or_else(|| {
            env.iter()
                .find(|(k, _)| k == "MESSAGING_CONFIG")
                .map(|(_, v)| PathBuf::from(v))
        });
        Sources { file, env }
    }
}

impl Settings {
    /// The compiled-in defaults alone (what tests start from).
    pub fn defaults() -> Self {
        Self::load(&Sources::default()).expect("config/default.toml is valid")
    }

    pub fn load(sources: &Sources) -> Result<Self, SettingsError> {
        use config::{Config, File, FileFormat};

        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = &sources.file {
            if !Path::new(path).exists() {
                return Err(SettingsError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Toml));
        }
        for (name, value) in &sources.env {
            if let Some(key) = env_key(name) {
                builder = builder
                    .set_override(key, value.as_str())
                    .map_err(|e| SettingsError::Load(e.to_string()))?;
            }
        }
        // Short names win over MESSAGING__… so the documented names behave predictably.
        for (short, key) in SHORT_ENV_NAMES {
            if let Some((_, value)) = sources.env.iter().find(|(k, _)| k == short) {
                // Both names set: the long one would be ignored without a word, even when
                // it is invalid. Refuse unless they agree.
                let long = format!("MESSAGING__{}", key.replace('.', "__").to_uppercase());
                if let Some((_, other)) = sources.env.iter().find(|(k, _)| *k == long) {
                    if other != value {
                        return Err(invalid(
                            key,
                            format!(
                                "{short}={value:?} and {long}={other:?} disagree; set one of them"
                            ),
                        ));
                    }
                }
                builder = builder
                    .set_override(*key, value.as_str())
                    .map_err(|e| SettingsError::Load(e.to_string()))?;
            }
        }
        let config = builder.build().map_err(load_error)?;
        let mut settings: Settings = config.try_deserialize().map_err(load_error)?;
        if let Some(path) = &sources.file {
            // A relative SQLite path written in a config file means beside that file, so
            // every command given the same file opens the same database wherever it runs
            // (not when the environment overrides it: then it is the shell's, relative to
            // the current directory).
            let in_file = Config::builder()
                .add_source(File::from(path.as_path()).format(FileFormat::Toml))
                .build()
                .ok()
                .and_then(|c| c.get_string("database.url").ok());
            if in_file.as_deref() == Some(settings.database.url.as_str()) {
                let dir = std::fs::canonicalize(path)
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .unwrap_or_default();
                settings.database.resolve_sqlite_path(&dir);
            }
        }
        for (name, p) in [
            ("sms", &mut settings.providers.sms),
            ("email", &mut settings.providers.email),
        ] {
            for (secret, file, field) in [
                (&mut p.auth_token, &p.auth_token_file, "auth_token_file"),
                (&mut p.password, &p.password_file, "password_file"),
            ] {
                if secret.is_empty() && !file.is_empty() {
                    let value = std::fs::read_to_string(file).map_err(|e| {
                        invalid(
                            &format!("providers.{name}.{field}"),
                            format!("cannot read {file}: {e}"),
                        )
                    })?;
                    *secret = Secret::new(value.trim());
                }
            }
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let positive = |key: &str, value: usize| {
            if value == 0 {
                Err(invalid(key, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        positive("queue.capacity", self.queue.capacity)?;
        positive("queue.max_bytes", self.queue.max_bytes)?;
        self.queue.nats.validate()?;
        positive("worker.concurrency", self.worker.concurrency)?;
        positive("server.body_limit", self.server.body_limit)?;
        // Keeps one multi-row INSERT under SQLite's 32766 bound parameters.
        if !(1..=1000).contains(&self.worker.batch_size) {
            return Err(invalid("worker.batch_size", "accepts 1 to 1000"));
        }
        if self.retry.max_attempts == 0 {
            return Err(invalid("retry.max_attempts", "must be at least 1"));
        }
        if self.retry.base_delay > self.retry.max_delay {
            return Err(invalid(
                "retry.base_delay",
                "must not exceed retry.max_delay",
            ));
        }
        if self.server.body_timeout.is_zero() {
            return Err(invalid("server.body_timeout", "must be longer than 0s"));
        }
        for (key, value) in [
            ("server.stall_timeout", self.server.stall_timeout),
            ("delivery.poll_interval", self.delivery.poll_interval),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than 0s"));
            }
        }
        let hooks = &self.webhooks;
        for (key, value) in [
            ("webhooks.timeout", hooks.timeout),
            ("webhooks.poll_interval", hooks.poll_interval),
            ("webhooks.disable_after", hooks.disable_after),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than 0s"));
            }
        }
        positive(
            "webhooks.concurrency_per_endpoint",
            hooks.concurrency_per_endpoint,
        )?;
        if hooks.lease <= hooks.timeout {
            return Err(invalid(
                "webhooks.lease",
                "must be longer than webhooks.timeout (a delivery is held while it is called)",
            ));
        }
        if self.dlq.purge_interval.is_zero() {
            return Err(invalid("dlq.purge_interval", "must be longer than 0s"));
        }
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "accepts sqlite://PATH?mode=rwc or postgres://USER@HOST/DB",
            ));
        }
        for (name, p) in [
            ("sms", &self.providers.sms),
            ("email", &self.providers.email),
        ] {
            for (field, rate) in [
                ("mock_error_rate", p.mock_error_rate),
                ("mock_rate_limit_rate", p.mock_rate_limit_rate),
                ("mock_timeout_rate", p.mock_timeout_rate),
            ] {
                if !(0.0..=1.0).contains(&rate) {
                    return Err(invalid(
                        &format!("providers.{name}.{field}"),
                        "accepts a number from 0.0 to 1.0",
                    ));
                }
            }
            let web = p.url.starts_with("http://") || p.url.starts_with("https://");
            if p.kind == ProviderKind::Http && !web {
                return Err(invalid(
                    &format!("providers.{name}.url"),
                    "accepts an http:// or https:// URL when kind = \"http\"",
                ));
            }
            if !p.fallback_url.is_empty() && !valid_http_url(&p.fallback_url) {
                return Err(invalid(
                    &format!("providers.{name}.fallback_url"),
                    "accepts an http:// or https:// URL (or \"\" for no fallback)",
                ));
            }
            match p.kind {
                ProviderKind::Twilio => validate_twilio(name, p)?,
                ProviderKind::Smtp => validate_smtp(name, p)?,
                ProviderKind::Mock | ProviderKind::Http => {}
            }
            if !p.ca_file.is_empty() {
                crate::providers::tls_config(&p.ca_file)
                    .map_err(|e| invalid(&format!("providers.{name}.ca_file"), e))?;
            }
            if p.concurrency == 0 {
                return Err(invalid(
                    &format!("providers.{name}.concurrency"),
                    "must be at least 1",
                ));
            }
            if p.breaker_failures == 0 {
                return Err(invalid(
                    &format!("providers.{name}.breaker_failures"),
                    "must be at least 1",
                ));
            }
            if p.breaker_cooldown.is_zero() {
                return Err(invalid(
                    &format!("providers.{name}.breaker_cooldown"),
                    "must be longer than 0s",
                ));
            }
            // A lease shorter than a call could run out mid-call and let another sender
            // call the provider a second time for the same message.
            if self.delivery.lease < p.timeout * 2 + Duration::from_secs(5) {
                return Err(invalid(
                    "delivery.lease",
                    format!(
                        "must be at least twice providers.{name}.timeout plus 5s ({:?})",
                        p.timeout * 2 + Duration::from_secs(5)
                    ),
                ));
            }
        }
        if self.auth.cache_ttl.is_zero() {
            return Err(invalid("auth.cache_ttl", "must be longer than 0s"));
        }
        if self.rate_limit.burst == 0 {
            return Err(invalid("rate_limit.burst", "must be at least 1"));
        }
        for (name, p) in [
            ("sms", &self.providers.sms),
            ("email", &self.providers.email),
        ] {
            // Shorter secrets can be guessed; HMAC keys should carry at least 128 bits.
            if !p.webhook_secret.is_empty() && p.webhook_secret.expose().len() < 16 {
                return Err(invalid(
                    &format!("providers.{name}.webhook_secret"),
                    "must be empty (no signature) or at least 16 characters",
                ));
            }
            if p.webhook_tolerance.is_zero() {
                return Err(invalid(
                    &format!("providers.{name}.webhook_tolerance"),
                    "must be longer than 0s",
                ));
            }
        }
        let telemetry = &self.telemetry;
        if telemetry.otlp_enabled() && !valid_http_url(&telemetry.otlp_endpoint) {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                "accepts \"\" (no export) or an http:// or https:// URL like \"http://127.0.0.1:4318\"",
            ));
        }
        if telemetry.otlp_interval < Duration::from_millis(100) {
            return Err(invalid("telemetry.otlp_interval", "must be at least 100ms"));
        }
        if telemetry.service_name.trim().is_empty() {
            return Err(invalid("telemetry.service_name", "must not be empty"));
        }
        if !(0.0..=1.0).contains(&telemetry.trace_sample_ratio) {
            return Err(invalid(
                "telemetry.trace_sample_ratio",
                "accepts a number from 0.0 to 1.0",
            ));
        }
        if !valid_log_filter(&self.log.level) {
            return Err(invalid(
                "log.level",
                "accepts error, warn, info, debug, trace, off, or a filter like \"info,sqlx=warn\"",
            ));
        }
        Ok(())
    }
}

/// `http(s)://host[:port][/path]`: a host, and no spaces or control characters.
fn valid_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|rest| {
        !rest.split('/').next().unwrap_or_default().is_empty()
            && rest.bytes().all(|b| b.is_ascii_graphic())
    })
}

/// A level, or comma-separated `target=level` directives with at most one bare level.
fn valid_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let is_level = |s: &str| LEVELS.contains(&s.trim().to_ascii_lowercase().as_str());
    let is_target = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-')
    };
    !filter.trim().is_empty()
        && filter
            .split(',')
            .all(|directive| match directive.split_once('=') {
                Some((target, level)) => is_target(target.trim()) && is_level(level),
                None => is_level(directive),
            })
}

/// The values an enumerated key accepts, for error messages.
fn accepted_values(key: &str) -> Option<&'static str> {
    match key.rsplit('.').next()? {
        "backend" => Some("memory or nats"),
        "format" => Some("pretty or json"),
        "kind" => Some("mock, http, twilio (sms) or smtp (email)"),
        "tls" => Some("starttls, tls or none"),
        _ => None,
    }
}

/// `MESSAGING__SECTION__KEY` → `section.key`.
fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix("MESSAGING__")?;
    if rest.is_empty() {
        return None;
    }
    Some(rest.to_ascii_lowercase().replace("__", "."))
}

/// Turns the config crate's errors into one line that names the key and what it accepts.
fn load_error(err: config::ConfigError) -> SettingsError {
    let (key, what) = match err {
        config::ConfigError::Type {
            key: Some(key),
            expected,
            unexpected,
            ..
        } => (key, format!("expected {expected}, got {unexpected}")),
        other => {
            let text = other.to_string();
            match text.rsplit_once(" for key `") {
                Some((what, key)) => (key.trim_end_matches('`').to_string(), what.to_string()),
                None => return SettingsError::Load(text),
            }
        }
    };
    if what.contains("variant") {
        if let Some(values) = accepted_values(&key) {
            return invalid(&key, format!("accepts {values}"));
        }
    }
    if let Some(field) = what
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        let full = if key.is_empty() {
            field.to_string()
        } else {
            format!("{key}.{field}")
        };
        return invalid(&full, "is not a setting (see config/default.toml)");
    }
    invalid(&key, what)
}

/// The longest duration a setting takes: longer ones would overflow the clock arithmetic
/// of timers, and no wait of this service is meant to outlast a century.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A Twilio provider needs its account, a token, and URLs that are URLs.
fn validate_twilio(name: &str, p: &ProviderSettings) -> Result<(), SettingsError> {
    let key = |field: &str| format!("providers.{name}.{field}");
    if name != "sms" {
        return Err(invalid(
            &key("kind"),
            "accepts \"twilio\" for sms only (email: mock, http, smtp)",
        ));
    }
    let sid = |value: &str, prefix: &str| {
        value.len() == 34
            && value.starts_with(prefix)
            && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
    };
    if !sid(&p.account_sid, "AC") {
        return Err(invalid(
            &key("account_sid"),
            "needs the account SID (AC followed by 32 hex digits) when kind = \"twilio\"",
        ));
    }
    if p.auth_token.is_empty() {
        return Err(invalid(
            &key("auth_token"),
            "needs the auth token (or auth_token_file) when kind = \"twilio\"",
        ));
    }
    if !p.messaging_service_sid.is_empty() && !sid(&p.messaging_service_sid, "MG") {
        return Err(invalid(
            &key("messaging_service_sid"),
            "accepts a Messaging Service SID (MG followed by 32 hex digits)",
        ));
    }
    if !p.base_url.is_empty() && web_url(&p.base_url).is_none() {
        return Err(invalid(
            &key("base_url"),
            "accepts an http:// or https:// URL",
        ));
    }
    let base = web_url(&p.public_url).filter(|u| u.query().is_none() && u.fragment().is_none());
    if !p.public_url.is_empty() && base.is_none() {
        return Err(invalid(
            &key("public_url"),
            "accepts an http:// or https:// base URL without query or fragment",
        ));
    }
    Ok(())
}

/// `text` parsed as an http:// or https:// URL with a host.
fn web_url(text: &str) -> Option<url::Url> {
    url::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// An SMTP provider needs its server, and credentials whole and never in clear over a
/// network.
fn validate_smtp(name: &str, p: &ProviderSettings) -> Result<(), SettingsError> {
    let key = |field: &str| format!("providers.{name}.{field}");
    if name != "email" {
        return Err(invalid(
            &key("kind"),
            "accepts \"smtp\" for email only (sms: mock, http, twilio)",
        ));
    }
    if p.host.is_empty() || url::Host::parse(&p.host).is_err() {
        return Err(invalid(
            &key("host"),
            "needs the SMTP server's host name or IP address when kind = \"smtp\"",
        ));
    }
    if !p.username.is_empty() && p.password.is_empty() {
        return Err(invalid(
            &key("password"),
            "needs the password (or password_file) when username is set",
        ));
    }
    if p.username.is_empty() && !p.password.is_empty() {
        return Err(invalid(
            &key("username"),
            "needs the user the password is for",
        ));
    }
    let local = matches!(p.host.as_str(), "localhost" | "127.0.0.1" | "[::1]");
    if p.tls == SmtpTls::None && !p.username.is_empty() && !local {
        return Err(invalid(
            &key("tls"),
            "must be \"starttls\" or \"tls\" when credentials go to a server not on this host",
        ));
    }
    Ok(())
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    match humantime::parse_duration(text.trim()) {
        Ok(value) if value <= MAX_DURATION => Ok(value),
        _ => Err(serde::de::Error::custom(format!(
            "accepts a duration like 250ms, 30s, 72h or 30d (at most 100 years), got {text:?}"
        ))),
    }
}

/// A list of CIDR ranges or addresses, in a list or one comma-separated string (as an
/// environment variable gives it).
fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        One(String),
        Many(Vec<String>),
    }
    let texts = match Given::deserialize(d)? {
        Given::One(text) => text.split(',').map(str::to_string).collect(),
        Given::Many(texts) => texts,
    };
    texts
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "accepts addresses and CIDR ranges like [\"10.0.0.0/8\"], got {text:?}"
                    ))
                })
        })
        .collect()
}

fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|text| match humantime::parse_duration(text.trim()) {
            Ok(value) if value <= MAX_DURATION => Ok(value),
            _ => Err(serde::de::Error::custom(format!(
                "accepts a list of durations like [\"5s\", \"5m\", \"2h\"], got {text:?}"
            ))),
        })
        .collect()
}

fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let text = String::deserialize(d)?;
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64() as usize)
        .map_err(|_| {
            serde::de::Error::custom(format!("accepts a size like 256KiB or 1MiB, got {text:?}"))
        })
}

fn optional_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rate>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

fn optional_seed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!("accepts an unsigned integer or \"\", got {text:?}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_env(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::load(&Sources {
            file: None,
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::defaults();
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.server.body_limit, 512 * 1024);
        assert_eq!(s.server.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(s.server.body_timeout, Duration::from_secs(30));
        assert_eq!(s.server.stall_timeout, Duration::from_secs(30));
        assert_eq!(s.delivery.poll_interval, Duration::from_millis(250));
        assert_eq!(s.delivery.lease, Duration::from_secs(60));
        assert_eq!(s.webhooks.timeout, Duration::from_secs(10));
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(
            s.webhooks.retry_schedule,
            [
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(1800),
                hours(2),
                hours(5),
                hours(10),
                hours(10)
            ]
        );
        assert_eq!(s.webhooks.disable_after, hours(5 * 24));
        assert!(!s.webhooks.allow_private);
        assert_eq!(s.providers.sms.concurrency, 500);
        assert_eq!(s.providers.sms.rate, None);
        assert_eq!(s.providers.sms.breaker_failures, 5);
        assert_eq!(s.providers.sms.breaker_cooldown, Duration::from_secs(30));
        assert_eq!(s.database.url, "sqlite://data/messaging.db?mode=rwc");
        assert_eq!(s.queue.backend, QueueBackendKind::Memory);
        assert_eq!(s.queue.capacity, 10_000);
        assert!(s.worker.enabled);
        assert_eq!(s.worker.concurrency, 4);
        assert_eq!(s.retry.max_attempts, 10);
        assert_eq!(s.retry.max_age, Duration::from_secs(72 * 3600));
        assert_eq!(s.retry.base_delay, Duration::from_secs(1));
        assert_eq!(s.retry.max_delay, Duration::from_secs(3600));
        assert_eq!(s.dlq.retention, Duration::from_secs(30 * 86400));
        assert_eq!(s.providers.sms.kind, ProviderKind::Mock);
        assert_eq!(s.providers.sms.mock_seed, None);
        assert_eq!(s.log.format, LogFormat::Pretty);
        assert!(s.auth.required, "secure by default");
        assert_eq!(s.auth.cache_ttl, Duration::from_secs(5));
        assert!(s.providers.sms.webhook_secret.is_empty());
        assert_eq!(s.providers.sms.webhook_tolerance, Duration::from_secs(300));
        assert!(!s.telemetry.otlp_enabled(), "no export unless asked for");
        assert_eq!(s.telemetry.otlp_interval, Duration::from_secs(10));
        assert_eq!(s.telemetry.service_name, "messaging-server");
        assert_eq!(s.telemetry.trace_sample_ratio, 1.0);
        let on = with_env(&[(
            "MESSAGING__TELEMETRY__OTLP_ENDPOINT",
            "https://collector.internal:4318",
        )])
        .unwrap();
        assert!(on.telemetry.otlp_enabled());
    }

    #[test]
    fn rates_parse_and_bad_ones_name_the_key() {
        let s = with_env(&[
            ("MESSAGING__RATE_LIMIT__PER_KEY", "500/s"),
            ("MESSAGING__RATE_LIMIT__PER_IP", "30/m"),
            ("AUTH_REQUIRED", "false"),
        ])
        .unwrap();
        assert_eq!(
            s.rate_limit.per_key,
            Rate {
                count: 500,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(s.rate_limit.per_ip.per, Duration::from_secs(60));
        assert!(!s.auth.required);
        for bad in ["500", "fast", "0/s", "-1/s", "10/fortnight", "/s"] {
            match with_env(&[("MESSAGING__RATE_LIMIT__PER_KEY", bad)]) {
                Err(SettingsError::Invalid { key, message }) => {
                    assert_eq!(key, "rate_limit.per_key", "{bad}");
                    assert!(message.contains(bad), "{bad}: {message}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = with_env(&[(
            "MESSAGING__PROVIDERS__SMS__WEBHOOK_SECRET",
            "a-very-secret-webhook-key",
        )])
        .unwrap();
        assert_eq!(
            s.providers.sms.webhook_secret.expose(),
            "a-very-secret-webhook-key"
        );
        assert!(!format!("{s:?}").contains("a-very-secret"));
    }

    #[test]
    fn environment_overrides_with_long_and_short_names() {
        let s = with_env(&[
            ("MESSAGING__QUEUE__CAPACITY", "5"),
            ("MESSAGING__PROVIDERS__SMS__MOCK_ERROR_RATE", "1.0"),
            ("PORT", "9999"),
            ("WORKER_ENABLED", "false"),
            ("RETRY_MAX_AGE", "2h"),
            ("DATABASE_URL", "postgres://u@h/db"),
        ])
        .unwrap();
        assert_eq!(s.queue.capacity, 5);
        assert_eq!(s.providers.sms.mock_error_rate, 1.0);
        assert_eq!(s.server.port, 9999);
        assert!(!s.worker.enabled);
        assert_eq!(s.retry.max_age, Duration::from_secs(7200));
        assert_eq!(s.database.url, "postgres://u@h/db");
    }

    #[test]
    fn log_filters() {
        for ok in [
            "info",
            "WARN",
            "info,sqlx=warn",
            "messaging_server::actors=debug,off",
        ] {
            assert!(valid_log_filter(ok), "{ok}");
        }
        for bad in ["", "loud", "info,", "sqlx=loud", "a b=info"] {
            assert!(!valid_log_filter(bad), "{bad}");
        }
    }

    #[test]
    fn enumerated_keys_list_their_values() {
        match with_env(&[("QUEUE_BACKEND", "kafka")]) {
            Err(SettingsError::Invalid { key, message }) => {
                assert_eq!(key, "queue.backend");
                assert!(message.contains("memory"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_deployment_file_layers_over_the_defaults() {
        let path = std::env::temp_dir().join(format!("ms-config-{}.toml", Uuid::new_v4()));
        std::fs::write(&path, "[worker]\nconcurrency = 7\n").unwrap();
        let s = Settings::load(&Sources {
            file: Some(path.clone()),
            env: vec![],
        })
        .unwrap();
        std::fs::remove_file(path).ok();
        assert_eq!(s.worker.concurrency, 7);
        assert_eq!(s.worker.batch_size, Settings::defaults().worker.batch_size);
    }

    #[test]
    fn a_short_and_a_long_name_that_disagree_are_refused() {
        let load = |env: &[(&str, &str)]| {
            Settings::load(&Sources {
                file: None,
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
        };
        let err = load(&[("PORT", "8081"), ("MESSAGING__SERVER__PORT", "eighty")]).unwrap_err();
        assert!(
            matches!(&err, SettingsError::Invalid { key, message } if key == "server.port"
                && message.contains("PORT=\"8081\"") && message.contains("MESSAGING__SERVER__PORT=\"eighty\"")),
            "{err}"
        );
        let agreed = load(&[("PORT", "8081"), ("MESSAGING__SERVER__PORT", "8081")]).unwrap();
        assert_eq!(agreed.server.port, 8081);
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            ("PORT", "eighty", "server.port"),
            ("RETRY_MAX_AGE", "soon", "retry.max_age"),
            ("RETRY_MAX_AGE", "1000years", "retry.max_age"),
            ("QUEUE_BACKEND", "carrier-pigeon", "queue.backend"),
            ("WORKER_CONCURRENCY", "0", "worker.concurrency"),
            (
                "MESSAGING__PROVIDERS__EMAIL__MOCK_ERROR_RATE",
                "1.5",
                "providers.email.mock_error_rate",
            ),
            ("DATABASE_URL", "mysql://x", "database.url"),
            ("LOG_LEVEL", "loud!", "log.level"),
            ("LOG_LEVEL", "loud", "log.level"),
            ("MESSAGING__SERVER__PORTT", "1", "server.portt"),
            ("MESSAGING__SERVER__BODY_LIMIT", "lots", "server.body_limit"),
            ("AUTH_REQUIRED", "maybe", "auth.required"),
            ("MESSAGING__AUTH__CACHE_TTL", "0s", "auth.cache_ttl"),
            ("MESSAGING__RATE_LIMIT__BURST", "0", "rate_limit.burst"),
            ("MESSAGING__RATE_LIMIT__PER_IP", "many", "rate_limit.per_ip"),
            (
                "MESSAGING__PROVIDERS__SMS__WEBHOOK_SECRET",
                "short",
                "providers.sms.webhook_secret",
            ),
            (
                "MESSAGING__PROVIDERS__EMAIL__WEBHOOK_TOLERANCE",
                "soon",
                "providers.email.webhook_tolerance",
            ),
            (
                "MESSAGING__SERVER__BODY_TIMEOUT",
                "0s",
                "server.body_timeout",
            ),
            (
                "MESSAGING__SERVER__STALL_TIMEOUT",
                "0s",
                "server.stall_timeout",
            ),
            (
                "MESSAGING__DELIVERY__POLL_INTERVAL",
                "0s",
                "delivery.poll_interval",
            ),
            ("MESSAGING__DELIVERY__LEASE", "5s", "delivery.lease"),
            (
                "MESSAGING__PROVIDERS__SMS__CONCURRENCY",
                "0",
                "providers.sms.concurrency",
            ),
            (
                "MESSAGING__PROVIDERS__EMAIL__RATE",
                "fast",
                "providers.email.rate",
            ),
            (
                "MESSAGING__PROVIDERS__SMS__BREAKER_FAILURES",
                "0",
                "providers.sms.breaker_failures",
            ),
            (
                "MESSAGING__TELEMETRY__OTLP_ENDPOINT",
                "127.0.0.1:4318",
                "telemetry.otlp_endpoint",
            ),
            (
                "MESSAGING__TELEMETRY__OTLP_ENDPOINT",
                "http://",
                "telemetry.otlp_endpoint",
            ),
            (
                "MESSAGING__TELEMETRY__OTLP_ENDPOINT",
                "http://collector :4318",
                "telemetry.otlp_endpoint",
            ),
            (
                "MESSAGING__TELEMETRY__OTLP_INTERVAL",
                "0s",
                "telemetry.otlp_interval",
            ),
            (
                "MESSAGING__TELEMETRY__SERVICE_NAME",
                " ",
                "telemetry.service_name",
            ),
            (
                "MESSAGING__TELEMETRY__TRACE_SAMPLE_RATIO",
                "2",
                "telemetry.trace_sample_ratio",
            ),
            ("NATS_URL", "", "queue.nats.url"),
            ("NATS_URL", "nats://a:4222,::bad::", "queue.nats.url"),
            (
                "MESSAGING__QUEUE__NATS__STREAM",
                "MY.STREAM",
                "queue.nats.stream",
            ),
            (
                "MESSAGING__QUEUE__NATS__SUBJECT_PREFIX",
                "a.*",
                "queue.nats.subject_prefix",
            ),
            (
                "MESSAGING__QUEUE__NATS__REPLICAS",
                "7",
                "queue.nats.replicas",
            ),
            (
                "MESSAGING__QUEUE__NATS__ACK_WAIT",
                "10ms",
                "queue.nats.ack_wait",
            ),
            (
                "MESSAGING__QUEUE__NATS__MAX_BYTES",
                "huge",
                "queue.nats.max_bytes",
            ),
        ];
        for (name, value, key) in cases {
            match with_env(&[(name, value)]) {
                Err(SettingsError::Invalid { key: k, .. }) => assert_eq!(k, key, "{name}={value}"),
                other => panic!("{name}={value}: expected an error naming {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn nats_settings_have_the_spec_defaults_and_short_env_names() {
        let nats = Settings::defaults().queue.nats;
        assert_eq!(nats.url, "nats://127.0.0.1:4222");
        assert_eq!(nats.stream, "MESSAGING");
        assert_eq!(nats.subject_prefix, "messaging.events");
        assert_eq!(nats.consumer, "messaging-workers");
        assert_eq!(nats.replicas, 1);
        assert_eq!(nats.ack_wait, Duration::from_secs(30));
        assert_eq!(nats.duplicate_window, Duration::from_secs(120));
        assert_eq!(nats.publish_timeout, Duration::from_secs(2));
        let s = with_env(&[
            ("QUEUE_BACKEND", "nats"),
            ("NATS_URL", "nats://n1:4222, nats://n2:4222,nats://n3:4222"),
            ("MESSAGING__QUEUE__NATS__REPLICAS", "3"),
        ])
        .unwrap();
        assert_eq!(s.queue.backend, QueueBackendKind::Nats);
        assert_eq!(
            s.queue.nats.servers(),
            ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
        );
        assert_eq!(s.queue.nats.replicas, 3);
    }

    #[test]
    fn the_production_example_is_valid() {
        let s = Settings::load(&Sources {
            file: Some(PathBuf::from("config/production.toml")),
            env: vec![],
        })
        .unwrap();
        assert_eq!(s.queue.backend, QueueBackendKind::Nats);
        assert_eq!(s.queue.nats.replicas, 3);
        assert_eq!(s.queue.nats.servers().len(), 3);
        assert_eq!(s.log.format, LogFormat::Json);
    }

    #[test]
    fn spill_files_go_beside_the_sqlite_file_unless_set() {
        let mut s = Settings::defaults();
        let dir = |s: &Settings| s.queue.spill_directory(&s.database);
        assert_eq!(dir(&s), PathBuf::from("data"));
        s.database.url = "sqlite:///var/lib/ms/messaging.db?mode=rwc".into();
        assert_eq!(dir(&s), PathBuf::from("/var/lib/ms"));
        s.database.url = "sqlite://messaging.db".into();
        assert_eq!(dir(&s), PathBuf::from("."));
        s.database.url = "postgres://u@h/db".into();
        assert_eq!(dir(&s), PathBuf::from("data"));
        s.queue.spill_dir = "/srv/spill".into();
        assert_eq!(dir(&s), PathBuf::from("/srv/spill"));
    }

    #[test]
    fn pool_size_is_chosen_per_database_unless_set() {
        let mut database = Settings::defaults().database;
        assert_eq!(
            database.max_connections, 0,
            "the shipped default is automatic"
        );
        database.url = "sqlite://data/messaging.db?mode=rwc".into();
        assert_eq!(database.pool_size(), 4);
        database.url = "postgres://postgres@127.0.0.1/messaging".into();
        assert_eq!(database.pool_size(), 10);
        database.max_connections = 3;
        assert_eq!(database.pool_size(), 3);
    }

    #[test]
    fn an_smtp_provider_is_for_email_and_needs_its_server() {
        let refused = |vars: &[(&str, &str)]| match with_env(vars) {
            Err(SettingsError::Invalid { key, .. }) => key,
            other => panic!("{vars:?} accepted: {other:?}"),
        };
        let smtp = ("MESSAGING__PROVIDERS__EMAIL__KIND", "smtp");
        let host = (
            "MESSAGING__PROVIDERS__EMAIL__HOST",
            "email-smtp.eu-west-1.amazonaws.com",
        );
        let user = ("MESSAGING__PROVIDERS__EMAIL__USERNAME", "AKIAEXAMPLE");
        let password = ("MESSAGING__PROVIDERS__EMAIL__PASSWORD", "a-smtp-password");
        assert_eq!(
            refused(&[
                ("MESSAGING__PROVIDERS__SMS__KIND", "smtp"),
                ("MESSAGING__PROVIDERS__SMS__HOST", host.1),
            ]),
            "providers.sms.kind"
        );
        assert_eq!(refused(&[smtp]), "providers.email.host");
        assert_eq!(
            refused(&[
                smtp,
                (
                    "MESSAGING__PROVIDERS__EMAIL__HOST",
                    "smtp://mail.example.com"
                )
            ]),
            "providers.email.host"
        );
        assert_eq!(refused(&[smtp, host, user]), "providers.email.password");
        assert_eq!(refused(&[smtp, host, password]), "providers.email.username");
        let plain = ("MESSAGING__PROVIDERS__EMAIL__TLS", "none");
        assert_eq!(
            refused(&[smtp, host, user, password, plain]),
            "providers.email.tls"
        );
        assert_eq!(
            refused(&[smtp, host, ("MESSAGING__PROVIDERS__EMAIL__TLS", "ssl")]),
            "providers.email.tls"
        );

        let s = with_env(&[smtp, host, user, password]).unwrap();
        let email = &s.providers.email;
        assert_eq!((email.tls, email.port), (SmtpTls::Starttls, 0));
        assert!(!format!("{s:?}").contains("a-smtp-password"), "never shown");
        let local = [
            smtp,
            ("MESSAGING__PROVIDERS__EMAIL__HOST", "127.0.0.1"),
            ("MESSAGING__PROVIDERS__EMAIL__PORT", "2525"),
            plain,
        ];
        let s = with_env(&local).unwrap();
        assert_eq!(s.providers.email.port, 2525);
        assert_eq!(s.providers.email.tls, SmtpTls::None);

        // The password from a file (a mounted secret), its line end trimmed.
        let file = std::env::temp_dir().join(format!("smtp-password-{}", std::process::id()));
        std::fs::write(&file, "from-a-file\n").unwrap();
        let path = file.display().to_string();
        let from_file = ("MESSAGING__PROVIDERS__EMAIL__PASSWORD_FILE", path.as_str());
        let s = with_env(&[smtp, host, user, from_file]).unwrap();
        assert_eq!(s.providers.email.password.expose(), "from-a-file");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            refused(&[smtp, host, user, from_file]),
            "providers.email.password_file"
        );
    }

    #[test]
    fn a_twilio_provider_needs_its_account_and_token() {
        let load = |vars: &[(&str, &str)]| {
            Settings::load(&Sources {
                file: None,
                env: vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
        };
        let account = (
            "MESSAGING__PROVIDERS__SMS__ACCOUNT_SID",
            "AC0123456789abcdef0123456789abcdef",
        );
        let twilio = ("MESSAGING__PROVIDERS__SMS__KIND", "twilio");
        let refused = |vars: &[(&str, &str)]| match load(vars) {
            Err(SettingsError::Invalid { key, .. }) => key,
            other => panic!("{vars:?} accepted: {other:?}"),
        };
        assert_eq!(refused(&[twilio]), "providers.sms.account_sid");
        assert_eq!(refused(&[twilio, account]), "providers.sms.auth_token");
        assert_eq!(
            refused(&[
                ("MESSAGING__PROVIDERS__EMAIL__KIND", "twilio"),
                ("MESSAGING__PROVIDERS__EMAIL__ACCOUNT_SID", account.1),
                ("MESSAGING__PROVIDERS__EMAIL__AUTH_TOKEN", "token"),
            ]),
            "providers.email.kind"
        );
        let token = ("MESSAGING__PROVIDERS__SMS__AUTH_TOKEN", "token");
        assert_eq!(
            refused(&[
                twilio,
                account,
                token,
                ("MESSAGING__PROVIDERS__SMS__BASE_URL", "api.twilio.com")
            ]),
            "providers.sms.base_url"
        );
        assert_eq!(
            refused(&[
                twilio,
                account,
                token,
                ("MESSAGING__PROVIDERS__SMS__MESSAGING_SERVICE_SID", "MGxyz")
            ]),
            "providers.sms.messaging_service_sid"
        );
        assert!(load(&[twilio, account, token]).is_ok());
        for (key, bad) in [
            ("PUBLIC_URL", "msg.example.com"),
            ("PUBLIC_URL", "https://msg.example.com/?x=1"),
            ("FALLBACK_URL", "ftp://backup.example.com"),
        ] {
            let var = format!("MESSAGING__PROVIDERS__SMS__{key}");
            assert_eq!(
                refused(&[twilio, account, token, (&var, bad)]),
                format!("providers.sms.{}", key.to_lowercase())
            );
        }

        // The token from a file (a mounted secret), its line end trimmed.
        let file = std::env::temp_dir().join(format!("twilio-token-{}", std::process::id()));
        std::fs::write(&file, "from-a-file\n").unwrap();
        let path = file.display().to_string();
        let s = load(&[
            twilio,
            account,
            ("MESSAGING__PROVIDERS__SMS__AUTH_TOKEN_FILE", &path),
        ])
        .unwrap();
        assert_eq!(s.providers.sms.auth_token.expose(), "from-a-file");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            refused(&[
                twilio,
                account,
                ("MESSAGING__PROVIDERS__SMS__AUTH_TOKEN_FILE", &path)
            ]),
            "providers.sms.auth_token_file"
        );
    }
}
