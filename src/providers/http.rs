//! A provider reached over HTTP or HTTPS: POSTs the message as JSON to the configured URL.
//! HTTPS uses rustls with the Mozilla roots (webpki-roots) plus, optionally, the CAs of
//! `providers.<p>.ca_file` (a private CA, or a test's).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::future::FutureExt;

use super::{OutboundMessage, Provider, ProviderError, Receipt, Sending};
use crate::config::ProviderSettings;

pub struct HttpProvider {
    /// Distinguishes providers (and their TLS settings) in the per-thread client cache.
    id: u64,
    name: &'static str,
    url: String,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
}

thread_local! {
    // awc's client is tied to its thread; one per thread and provider keeps connections
    // pooled (each provider may trust other CAs).
    static CLIENTS: RefCell<HashMap<u64, awc::Client>> = RefCell::default();
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

#[derive(serde::Deserialize)]
struct Accepted {
    #[serde(alias = "provider_message_id", alias = "message_id")]
    id: String,
}

impl HttpProvider {
    pub fn new(name: &'static str, settings: &ProviderSettings) -> Self {
        HttpProvider {
            id: next_id(),
            name,
            url: settings.url.clone(),
            timeout: settings.timeout,
            tls: provider_tls(name, &settings.ca_file),
        }
    }

    fn client(&self) -> awc::Client {
        pooled_client(self.id, &self.tls)
    }
}

/// The TLS configuration of provider `name`. The settings were validated at load,
/// `ca_file` included; should the file have changed since, the provider still works with
/// the public roots.
pub(super) fn provider_tls(name: &str, ca_file: &str) -> Arc<rustls::ClientConfig> {
    let tls = crate::tls::client_config(ca_file).unwrap_or_else(|err| {
        tracing::error!(provider = name, error = %err, "ignoring providers.{name}.ca_file");
        crate::tls::client_config("").expect("the public roots load")
    });
    Arc::new(tls)
}

/// A provider's id for the per-thread client cache.
pub(super) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// This thread's client of the provider `id` (its connections pooled).
pub(super) fn pooled_client(id: u64, tls: &Arc<rustls::ClientConfig>) -> awc::Client {
    CLIENTS.with(|clients| {
        clients
            .borrow_mut()
            .entry(id)
            .or_insert_with(|| {
                awc::Client::builder()
                    .disable_timeout()
                    .connector(awc::Connector::new().rustls_0_23(tls.clone()))
                    .finish()
            })
            .clone()
    })
}

/// What a provider answered: its status, its `Retry-After`, and its body (64 KiB at most).
pub(super) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text for an error message (200 characters at most).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(200)
            .collect()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| ProviderError::BadResponse(e.to_string()))
    }
}

/// Sends a request (its timeout set to `timeout`) and reads the answer.
pub(super) async fn answer_of(
    sent: awc::SendClientRequest,
    timeout: Duration,
) -> Result<Answer, ProviderError> {
    let mut response = sent.await.map_err(|err| match err {
        awc::error::SendRequestError::Timeout => ProviderError::Timeout(timeout),
        other => ProviderError::Unreachable(other.to_string()),
    })?;
    let body = response
        .body()
        .limit(64 * 1024)
        .await
        .map_err(|e| ProviderError::BadResponse(e.to_string()))?;
    Ok(Answer {
        status: response.status().as_u16(),
        retry_after: retry_after(response.headers()),
        body,
    })
}

/// `Retry-After` in either of its forms (RFC 9110 §10.2.3): seconds, or an HTTP date
/// (a date already past means now).
fn retry_after(headers: &awc::http::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(awc::http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

impl Provider for HttpProvider {
    fn name(&self) -> &'static str {
        self.name
    }

    fn send(&self, message: OutboundMessage) -> Sending {
        let request = self
            .client()
            .post(&self.url)
            .insert_header(("Idempotency-Key", message.idempotency_key.clone()))
            .timeout(self.timeout);
        let timeout = self.timeout;
        async move {
            let answer = answer_of(request.send_json(&message), timeout).await?;
            if !answer.is_success() {
                return Err(ProviderError::Status {
                    status: answer.status,
                    message: answer.text(),
                    retry_after: answer.retry_after,
                });
            }
            let accepted: Accepted = answer.json()?;
            Ok(Receipt {
                provider_message_id: accepted.id,
            })
        }
        .boxed_local()
    }
}

#[cfg(test)]
mod retry_after_tests {
    use std::time::{Duration, SystemTime};

    use awc::http::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    fn after(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        super::retry_after(&headers)
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(after("120"), Some(Duration::from_secs(120)));
        let soon = SystemTime::now() + Duration::from_secs(90);
        let waited = after(&httpdate::fmt_http_date(soon)).unwrap();
        assert!(
            waited > Duration::from_secs(80) && waited <= Duration::from_secs(90),
            "{waited:?}"
        );
        assert_eq!(after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(after("soon"), None);
    }
}
