//! A provider reached over HTTP: POSTs the message as JSON to the configured URL.

use std::time::Duration;

use futures_util::future::{FutureExt, LocalBoxFuture};

use super::{OutboundMessage, Provider, ProviderError, Receipt};
use crate::config::ProviderSettings;

pub struct HttpProvider {
    name: &'static str,
    url: String,
    timeout: Duration,
}

thread_local! {
    // awc's client is tied to its thread; one per thread keeps connections pooled.
    static CLIENT: awc::Client = awc::Client::builder().disable_timeout().finish();
}

#[derive(serde::Deserialize)]
struct Accepted {
    #[serde(alias = "provider_message_id", alias = "message_id")]
    id: String,
}

impl HttpProvider {
    pub fn new(name: &'static str, settings: &ProviderSettings) -> Self {
        HttpProvider {
            name,
            url: settings.url.clone(),
            timeout: settings.timeout,
        }
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
        let request = CLIENT.with(|client| {
            client
                .post(&self.url)
                .insert_header(("Idempotency-Key", message.idempotency_key.clone()))
                .timeout(self.timeout)
        });
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
