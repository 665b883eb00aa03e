//! Metrics (OpenTelemetry, exposed in Prometheus text format) and logs (tracing).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry::metrics::{Counter, Histogram, MeterProvider};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};

use crate::config::{LogFormat, LogSettings};

/// Reads the current queue depth at scrape time.
pub type DepthProbe = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Every instrument of SPEC §8. One instance per running application (tests start several
/// in one process, each with its own registry).
pub struct Metrics {
    registry: prometheus::Registry,
    // Dropping the provider shuts the exporter down and empties every scrape.
    _provider: SdkMeterProvider,
    pub enqueued: Counter<u64>,
    pub enqueue_rejected: Counter<u64>,
    pub dequeued: Counter<u64>,
    pub processed: Counter<u64>,
    pub failed: Counter<u64>,
    pub retries: Counter<u64>,
    pub dead_lettered: Counter<u64>,
    pub processing_latency: Histogram<f64>,
    pub provider_requests: Counter<u64>,
    pub http_requests: Counter<u64>,
    pub http_duration: Histogram<f64>,
    /// Dead letters not yet replayed; refreshed from the database before each scrape.
    pub dlq_size: Arc<AtomicU64>,
    /// PersistenceWorker actors currently running.
    pub workers_active: Arc<AtomicI64>,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Metrics {
    pub fn new(queue_depth: DepthProbe) -> Arc<Self> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .expect("a fresh registry accepts the exporter");
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("messaging-server");
        let dlq_size = Arc::new(AtomicU64::new(0));
        let workers_active = Arc::new(AtomicI64::new(0));

        let counter = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let seconds = |name: &'static str, help: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(help)
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build()
        };
        meter
            .u64_observable_gauge("messaging_queue_depth")
            .with_description("Events accepted and not yet finished (waiting, retrying, in flight)")
            .with_callback(move |gauge| gauge.observe(queue_depth(), &[]))
            .build();
        let size = dlq_size.clone();
        meter
            .u64_observable_gauge("messaging_dlq_size")
            .with_description("Dead letters waiting (not replayed)")
            .with_callback(move |gauge| gauge.observe(size.load(Ordering::Relaxed), &[]))
            .build();
        let active = workers_active.clone();
        meter
            .i64_observable_gauge("messaging_workers_active")
            .with_description("PersistenceWorker actors running")
            .with_callback(move |gauge| gauge.observe(active.load(Ordering::Relaxed), &[]))
            .build();

        let metrics = Metrics {
            enqueued: counter("messaging_queue_enqueued", "Events accepted into the queue"),
            enqueue_rejected: counter(
                "messaging_queue_enqueue_rejected",
                "Events refused by the queue (full or unavailable)",
            ),
            dequeued: counter("messaging_queue_dequeued", "Events handed to workers"),
            processed: counter(
                "messaging_worker_processed",
                "Events persisted, by outcome (stored, duplicate)",
            ),
            failed: counter(
                "messaging_worker_failed",
                "Failed processing attempts, by kind (transient, permanent)",
            ),
            retries: counter("messaging_retries", "Retries scheduled"),
            dead_lettered: counter("messaging_dlq", "Events moved to the dead-letter queue"),
            processing_latency: seconds(
                "messaging_processing_latency",
                "From acceptance to the committed write",
            ),
            provider_requests: counter(
                "messaging_provider_requests",
                "Provider calls, by provider and outcome",
            ),
            http_requests: counter("http_server_requests", "HTTP requests, by route and status"),
            http_duration: seconds(
                "http_server_request_duration",
                "HTTP request duration, by route and status",
            ),
            dlq_size,
            workers_active,
            registry,
            _provider: provider,
        };
        metrics.expose_zeroes();
        Arc::new(metrics)
    }

    /// A counter appears in the exposition only once touched; starting every series an
    /// operator alerts on at 0 makes `rate()` and absence checks work from the first scrape.
    fn expose_zeroes(&self) {
        for counter in [
            &self.enqueued,
            &self.enqueue_rejected,
            &self.dequeued,
            &self.retries,
            &self.dead_lettered,
        ] {
            counter.add(0, &[]);
        }
        for outcome in ["stored", "duplicate"] {
            self.processed(outcome, 0);
        }
        for kind in ["transient", "permanent"] {
            self.failed.add(0, &[KeyValue::new("kind", kind)]);
        }
        for provider in ["sms", "email"] {
            self.provider_requests.add(
                0,
                &[
                    KeyValue::new("provider", provider),
                    KeyValue::new("outcome", "sent"),
                ],
            );
        }
    }

    /// The Prometheus text exposition and its content type.
    pub fn render(&self) -> (String, String) {
        let encoder = TextEncoder::new();
        let mut buffer = Vec::new();
        encoder
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding to a Vec cannot fail");
        (
            String::from_utf8_lossy(&buffer).into_owned(),
            encoder.format_type().to_string(),
        )
    }

    pub fn processed(&self, outcome: &'static str, n: u64) {
        self.processed.add(n, &[KeyValue::new("outcome", outcome)]);
    }

    pub fn failed(&self, kind: &'static str) {
        self.failed.add(1, &[KeyValue::new("kind", kind)]);
    }

    pub fn provider_request(&self, provider: &'static str, outcome: &'static str) {
        self.provider_requests.add(
            1,
            &[
                KeyValue::new("provider", provider),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    pub fn http_request(&self, route: String, status: u16, seconds: f64) {
        let labels = [
            KeyValue::new("route", route),
            KeyValue::new("status", i64::from(status)),
        ];
        self.http_requests.add(1, &labels);
        self.http_duration.record(seconds, &labels);
    }
}

/// Installs the global log subscriber; a second call (tests) keeps the first.
pub fn init_logging(settings: &LogSettings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            // The enclosing spans too: a request's request_id on every line written in it.
            .with_span_list(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// An address as logs may show it: enough to tell numbers apart, not enough to contact
/// anyone. `+12016661234` → `+1201*****34`; `contact@gmail.com` → `c*****@gmail.com`.
pub fn mask_address(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}*****@{domain}")
        }
        None => {
            let chars: Vec<char> = address.chars().collect();
            if chars.len() <= 6 {
                return "*****".to_string();
            }
            let head: String = chars[..5].iter().collect();
            let tail: String = chars[chars.len() - 2..].iter().collect();
            format!("{head}*****{tail}")
        }
    }
}

/// The span every log line about one event is written in (HTTP handler and worker alike),
/// so `event_id` ties the request to the outcome. The lines themselves carry the rest.
pub fn event_span(event: &crate::domain::Event) -> tracing::Span {
    tracing::info_span!("event", event_id = %event.event_id)
}

#[cfg(test)]
mod tests {
    use super::mask_address;

    #[test]
    fn addresses_are_masked() {
        assert_eq!(mask_address("+12016661234"), "+1201*****34");
        assert_eq!(mask_address("contact@gmail.com"), "c*****@gmail.com");
        assert_eq!(mask_address("+1234"), "*****");
    }
}
