//! The in-process provider: configurable latency and failure rates, no network.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::{FutureExt, LocalBoxFuture};

use super::{OutboundMessage, Provider, ProviderError, Receipt};
use crate::config::ProviderSettings;

pub struct MockProvider {
    name: &'static str,
    latency: Duration,
    error_rate: f64,
    rate_limit_rate: f64,
    timeout_rate: f64,
    retry_after: Duration,
    timeout: Duration,
    rng: Mutex<fastrand::Rng>,
    /// idempotency key → (provider id, successful calls). Like a real provider, a repeated
    /// key returns the first id instead of delivering again.
    delivered: Mutex<HashMap<String, (String, u32)>>,
}

impl MockProvider {
    pub fn new(name: &'static str, settings: &ProviderSettings) -> Self {
        let rng = match settings.mock_seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        MockProvider {
            name,
            latency: settings.mock_latency,
            error_rate: settings.mock_error_rate,
            rate_limit_rate: settings.mock_rate_limit_rate,
            timeout_rate: settings.mock_timeout_rate,
            retry_after: settings.mock_retry_after,
            timeout: settings.timeout,
            rng: Mutex::new(rng),
            delivered: Mutex::new(HashMap::new()),
        }
    }

    /// How many calls for this key succeeded (1 means delivered exactly once).
    pub fn successful_calls(&self, idempotency_key: &str) -> u32 {
        self.lock().get(idempotency_key).map_or(0, |(_, n)| *n)
    }

    /// Distinct messages delivered.
    pub fn delivered(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, u32)>> {
        self.delivered.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn accept(&self, key: String) -> Receipt {
        let mut delivered = self.lock();
        let entry = delivered
            .entry(key)
            .or_insert_with(|| (format!("mock-{}", uuid::Uuid::new_v4()), 0));
        entry.1 += 1;
        Receipt {
            provider_message_id: entry.0.clone(),
        }
    }
}

enum Draw {
    ServerError,
    RateLimited,
    Timeout,
    Accept,
}

impl Provider for MockProvider {
    fn name(&self) -> &'static str {
        self.name
    }

    fn send(
        &self,
        message: OutboundMessage,
    ) -> LocalBoxFuture<'static, Result<Receipt, ProviderError>> {
        let roll = self.rng.lock().unwrap_or_else(|p| p.into_inner()).f64();
        let draw = if roll < self.error_rate {
            Draw::ServerError
        } else if roll < self.error_rate + self.rate_limit_rate {
            Draw::RateLimited
        } else if roll < self.error_rate + self.rate_limit_rate + self.timeout_rate {
            Draw::Timeout
        } else {
            Draw::Accept
        };
        let latency = self.latency;
        let (retry_after, timeout) = (self.retry_after, self.timeout);
        let result = match draw {
            Draw::Accept => Ok(self.accept(message.idempotency_key)),
            Draw::ServerError => Err(ProviderError::Status {
                status: 500,
                message: "mock provider error".into(),
                retry_after: None,
            }),
            Draw::RateLimited => Err(ProviderError::Status {
                status: 429,
                message: "mock provider rate limit".into(),
                retry_after: Some(retry_after),
            }),
            Draw::Timeout => Err(ProviderError::Timeout(timeout)),
        };
        async move {
            let wait = match draw {
                Draw::Timeout => timeout,
                _ => latency,
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            result
        }
        .boxed_local()
    }
}
