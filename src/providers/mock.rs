//! The in-process provider: configurable latency and failure rates, no network.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::FutureExt;

use super::{OutboundMessage, Provider, ProviderError, Receipt, Sending};
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
    /// Like a real provider, a repeated key returns the first id instead of delivering again.
    delivered: Mutex<Remembered>,
}

/// Keys remembered, at most; a real provider also forgets a key after its idempotency window.
/// Unbounded, the default (mock) configuration grew by ~150 bytes per message sent for as
/// long as the server ran.
const REMEMBERED: usize = 100_000;

/// idempotency key → (provider id, successful calls), in two generations of at most
/// `REMEMBERED / 2`: when the young one fills it becomes the old one, and the old one is
/// dropped. A key is remembered for at least `REMEMBERED / 2` later sends.
#[derive(Default)]
struct Remembered {
    young: HashMap<String, (String, u32)>,
    old: HashMap<String, (String, u32)>,
}

impl Remembered {
    fn get(&self, key: &str) -> Option<&(String, u32)> {
        self.young.get(key).or_else(|| self.old.get(key))
    }

    /// Counts a successful call for `key` and returns its provider id.
    fn accept(&mut self, key: String) -> String {
        let entry = match self.old.remove(&key) {
            Some(seen) => seen,
            None => self
                .young
                .remove(&key)
                .unwrap_or_else(|| (format!("mock-{}", uuid::Uuid::new_v4()), 0)),
        };
        if self.young.len() >= REMEMBERED / 2 {
            self.old = std::mem::take(&mut self.young);
        }
        let entry = self.young.entry(key).or_insert(entry);
        entry.1 += 1;
        entry.0.clone()
    }
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
            delivered: Mutex::default(),
        }
    }

    /// How many calls for this key succeeded (1 means delivered exactly once), among the
    /// last `REMEMBERED / 2` keys at least.
    pub fn successful_calls(&self, idempotency_key: &str) -> u32 {
        self.lock().get(idempotency_key).map_or(0, |(_, n)| *n)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.delivered.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn accept(&self, key: String) -> Receipt {
        Receipt {
            provider_message_id: self.lock().accept(key),
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

    fn send(&self, message: OutboundMessage) -> Sending {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_gets_its_first_id_and_memory_is_bounded() {
        let mut keys = Remembered::default();
        let first = keys.accept("k".into());
        assert_eq!(keys.accept("k".into()), first);
        assert_eq!(keys.get("k").map(|e| e.1), Some(2));
        for n in 0..REMEMBERED * 3 {
            keys.accept(n.to_string());
        }
        assert!(keys.young.len() + keys.old.len() <= REMEMBERED);
        // The last half of the capacity is still known, with one call each.
        for n in REMEMBERED * 3 - REMEMBERED / 2..REMEMBERED * 3 {
            assert_eq!(keys.get(&n.to_string()).map(|e| e.1), Some(1), "{n}");
        }
        assert_eq!(keys.get("k"), None, "forgotten long ago");
    }
}
