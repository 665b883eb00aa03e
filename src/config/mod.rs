//! Settings: `config/default.toml` (compiled in) < `--config FILE` < environment.
//!
//! Every key is documented in `config/default.toml`; this module only gives them types and
//! checks their ranges, so an operator sees one line naming the key that is wrong.

mod providers;
mod sections;
mod validate;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use providers::{ProviderKind, ProviderSettings, ProvidersSettings, SmtpTls};
pub use sections::*;
pub use values::{Rate, Secret};

/// The defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

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

/// Refuses a count of 0 where something must happen, or be allowed, at least once.
fn at_least_one<N: PartialEq + From<u8>>(key: &str, value: N) -> Result<(), SettingsError> {
    if value == N::from(0) {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(())
}

/// Refuses the first of these waits, timeouts and intervals that is 0s.
fn longer_than_zero(values: &[(&str, Duration)]) -> Result<(), SettingsError> {
    match values.iter().find(|(_, value)| value.is_zero()) {
        Some((key, _)) => Err(invalid(key, "must be longer than 0s")),
        None => Ok(()),
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
    use config::ConfigError;
    let (key, what) = match err {
        ConfigError::Type {
            key: Some(key),
            expected,
            unexpected,
            ..
        } => (key, format!("expected {expected}, got {unexpected}")),
        // A value serde refused, at `key`: serde's own message says why.
        ConfigError::At {
            error,
            key: Some(key),
            ..
        } => match *error {
            ConfigError::Type {
                expected,
                unexpected,
                ..
            } => (key, format!("expected {expected}, got {unexpected}")),
            ConfigError::Message(message) => (key, message),
            other => (key, other.to_string()),
        },
        // Deserializing the top level: an unknown section.
        ConfigError::Message(message) if message.starts_with("unknown field") => {
            (String::new(), message)
        }
        other => return SettingsError::Load(other.to_string()),
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

#[cfg(test)]
mod tests;
