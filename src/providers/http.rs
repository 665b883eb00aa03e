//! A provider reached over HTTP or HTTPS: POSTs the message as JSON to the configured URL.
//! HTTPS uses rustls with the Mozilla roots (webpki-roots) plus, optionally, the CAs of
//! `providers.<p>.ca_file` (a private CA, or a test's).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::future::{FutureExt, LocalBoxFuture};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::{OutboundMessage, Provider, ProviderError, Receipt};
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

/// Reads the certificates of a PEM file (at least one).
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The TLS client configuration: Mozilla's roots and the extra CAs.
pub fn tls_config(ca_file: &str) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if !ca_file.is_empty() {
        for cert in load_ca_file(Path::new(ca_file))? {
            roots
                .add(cert)
                .map_err(|e| format!("{ca_file}: not a usable CA certificate: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // awc speaks HTTP/1.1 here.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

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
    let tls = tls_config(ca_file).unwrap_or_else(|err| {
        tracing::error!(provider = name, error = %err, "ignoring providers.{name}.ca_file");
        tls_config("").expect("the public roots load")
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

fn retry_after(headers: &awc::http::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(awc::http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Provider for HttpProvider {
    fn name(&self) -> &'static str {
        self.name
    }

    fn send(
        &self,
        message: OutboundMessage,
    ) -> LocalBoxFuture<'static, Result<Receipt, ProviderError>> {
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
