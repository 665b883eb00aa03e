//! The checks of ranges and relations between settings, run once they are loaded.

use std::time::Duration;

use super::providers::{validate_smtp, validate_twilio, web_url, ProviderKind};
use super::{at_least_one, invalid, longer_than_zero, Settings, SettingsError};

impl Settings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        at_least_one("queue.capacity", self.queue.capacity)?;
        at_least_one("queue.max_bytes", self.queue.max_bytes)?;
        self.queue.nats.validate()?;
        at_least_one("worker.concurrency", self.worker.concurrency)?;
        at_least_one("server.body_limit", self.server.body_limit)?;
        // Keeps one multi-row INSERT under SQLite's 32766 bound parameters.
        if !(1..=1000).contains(&self.worker.batch_size) {
            return Err(invalid("worker.batch_size", "accepts 1 to 1000"));
        }
        at_least_one("retry.max_attempts", self.retry.max_attempts)?;
        if self.retry.base_delay > self.retry.max_delay {
            return Err(invalid(
                "retry.base_delay",
                "must not exceed retry.max_delay",
            ));
        }
        let hooks = &self.webhooks;
        longer_than_zero(&[
            ("server.body_timeout", self.server.body_timeout),
            ("server.stall_timeout", self.server.stall_timeout),
            ("delivery.poll_interval", self.delivery.poll_interval),
            ("webhooks.timeout", hooks.timeout),
            ("webhooks.poll_interval", hooks.poll_interval),
            ("webhooks.disable_after", hooks.disable_after),
        ])?;
        at_least_one(
            "webhooks.concurrency_per_endpoint",
            hooks.concurrency_per_endpoint,
        )?;
        if hooks.lease <= hooks.timeout {
            return Err(invalid(
                "webhooks.lease",
                "must be longer than webhooks.timeout (a delivery is held while it is called)",
            ));
        }
        longer_than_zero(&[("dlq.purge_interval", self.dlq.purge_interval)])?;
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
            if !p.fallback_url.is_empty() && web_url(&p.fallback_url).is_none() {
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
                crate::tls::client_config(&p.ca_file)
                    .map_err(|e| invalid(&format!("providers.{name}.ca_file"), e))?;
            }
            at_least_one(&format!("providers.{name}.concurrency"), p.concurrency)?;
            at_least_one(
                &format!("providers.{name}.breaker_failures"),
                p.breaker_failures,
            )?;
            longer_than_zero(&[(
                &format!("providers.{name}.breaker_cooldown"),
                p.breaker_cooldown,
            )])?;
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
        longer_than_zero(&[("auth.cache_ttl", self.auth.cache_ttl)])?;
        at_least_one("rate_limit.burst", self.rate_limit.burst)?;
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
            longer_than_zero(&[(
                &format!("providers.{name}.webhook_tolerance"),
                p.webhook_tolerance,
            )])?;
        }
        let telemetry = &self.telemetry;
        if telemetry.otlp_enabled() && web_url(&telemetry.otlp_endpoint).is_none() {
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

/// A filter tracing-subscriber's `EnvFilter` takes, whose bare words are levels: to
/// `EnvFilter` a bare word is a target enabled at every level, which in `LOG_LEVEL` is a
/// misspelt level (`inf`), not a wish for trace logs of a crate.
pub(super) fn valid_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    // ... and whose targets are module paths, without spaces (`a b=info` is a typo).
    let bare_words_are_levels =
        filter
            .split(',')
            .map(str::trim)
            .all(|directive| match directive.split_once('=') {
                Some((target, _)) => !target.trim().contains(char::is_whitespace),
                None => {
                    directive.contains('[')
                        || LEVELS.contains(&directive.to_ascii_lowercase().as_str())
                }
            });
    !filter.trim().is_empty()
        && bare_words_are_levels
        && tracing_subscriber::EnvFilter::builder()
            .parse(filter)
            .is_ok()
}
