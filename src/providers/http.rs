//! A provider reached over HTTP or HTTPS: POSTs the message as JSON to the configured URL.
//! HTTPS uses rustls with the Mozilla roots (webpki-roots) plus, optionally, the CAs of
//! `providers.<p>.ca_file` (a private CA, or a test's).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
        // The settings were validated at load, ca_file included; should the file have
        // changed since, the provider still works with the public roots.
        let tls = tls_config(&settings.ca_file).unwrap_or_else(|err| {
            tracing::error!(provider = name, error = %err, "ignoring providers.{name}.ca_file");
            tls_config("").expect("the public roots load")
        });
        HttpProvider {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name,
            url: settings.url.clone(),
            timeout: settings.timeout,
            tls: Arc::new(tls),
        }
    }

    fn client(&self) -> awc::Client {
        CLIENTS.with(|clients| {
            clients
                .borrow_mut()
                .entry(self.id)
                .or_insert_with(|| {
                    awc::Client::builder()
                        .disable_timeout()
                        .connector(awc::Connector::new().rustls_0_23(self.tls.clone()))
                        .finish()
                })
                .clone()
        })
    }
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
            let mut response = request.send_json(&message).await.map_err(|err| match err {
                awc::error::SendRequestError::Timeout => ProviderError::Timeout(timeout),
                other => ProviderError::Unreachable(other.to_string()),
            })?;
            let status = response.status();
            let body = response
                .body()
                .limit(64 * 1024)
                .await
                .map_err(|e| ProviderError::BadResponse(e.to_string()))?;
            if !status.is_success() {
                return Err(ProviderError::Status {
                    status: status.as_u16(),
                    message: String::from_utf8_lossy(&body).chars().take(200).collect(),
                    retry_after: retry_after(response.headers()),
                });
            }
            let accepted: Accepted = serde_json::from_slice(&body)
                .map_err(|e| ProviderError::BadResponse(e.to_string()))?;
            Ok(Receipt {
                provider_message_id: accepted.id,
            })
        }
        .boxed_local()
    }
}
