//! `providers.sms` and `providers.email`: which provider, and what each kind needs.

use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, optional_rate, optional_seed, Rate, Secret};
use super::{invalid, SettingsError};

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

/// A Twilio provider needs its account, a token, and URLs that are URLs.
pub(super) fn validate_twilio(name: &str, p: &ProviderSettings) -> Result<(), SettingsError> {
    let key = |field: &str| format!("providers.{name}.{field}");
    kind_only_for(
        "sms",
        name,
        "accepts \"twilio\" for sms only (email: mock, http, smtp)",
    )?;
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

/// Refuses a kind made for the other channel's provider; `message` says which kinds
/// provider `name` takes.
fn kind_only_for(channel: &str, name: &str, message: &str) -> Result<(), SettingsError> {
    if name != channel {
        return Err(invalid(&format!("providers.{name}.kind"), message));
    }
    Ok(())
}

/// `text` parsed as an http:// or https:// URL with a host.
pub(super) fn web_url(text: &str) -> Option<url::Url> {
    url::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// An SMTP provider needs its server, and credentials whole and never in clear over a
/// network.
pub(super) fn validate_smtp(name: &str, p: &ProviderSettings) -> Result<(), SettingsError> {
    let key = |field: &str| format!("providers.{name}.{field}");
    kind_only_for(
        "email",
        name,
        "accepts \"smtp\" for email only (sms: mock, http, twilio)",
    )?;
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
