//! The settings of each section but the providers': types and defaults' shapes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

use super::values::{byte_size, cidrs, duration, durations, Rate};
use super::{invalid, longer_than_zero, SettingsError};

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
    pub(super) fn resolve_sqlite_path(&mut self, dir: &Path) {
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

    pub(super) fn validate(&self) -> Result<(), SettingsError> {
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
        longer_than_zero(&[
            ("queue.nats.duplicate_window", self.duplicate_window),
            ("queue.nats.connect_timeout", self.connect_timeout),
            ("queue.nats.publish_timeout", self.publish_timeout),
        ])?;
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
