//! Metrics (OpenTelemetry, exposed in Prometheus text format and optionally pushed over
//! OTLP), traces of the message path (OTLP only), and logs (tracing).

mod otlp;
pub mod summary;
mod traces;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};

use crate::config::{LogFormat, LogSettings, TelemetrySettings};

pub use otlp::ExportError;
pub use traces::{provider_call, record_outcome, BatchTrace, CallFailure, TraceSpan, Tracer};

/// Reads the current queue depth at scrape time.
pub type DepthProbe = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Every instrument of SPEC §8 and §12, and the tracer of the message path (everything that
/// records metrics also opens spans, so they travel together). One instance per running
/// application (tests start several in one process, each with its own registry and export).
pub struct Metrics {
    registry: prometheus::Registry,
    // Dropping the provider shuts the exporters down and empties every scrape.
    provider: SdkMeterProvider,
    /// Spans of the message path; inert unless `telemetry.otlp_endpoint` is set.
    pub tracer: Tracer,
    pub enqueued: Counter<u64>,
    pub enqueue_rejected: Counter<u64>,
    pub dequeued: Counter<u64>,
    pub processed: Counter<u64>,
    pub failed: Counter<u64>,
    pub retries: Counter<u64>,
    pub dead_lettered: Counter<u64>,
    pub processing_latency: Histogram<f64>,
    pub provider_requests: Counter<u64>,
    /// Delivery receipts from providers, by the status they report and what they did.
    pub delivery_receipts: Counter<u64>,
    /// Panics caught in a pipeline actor (which was restarted), by actor.
    pub actor_restarts: Counter<u64>,
    /// Dead letters the database refused even in their encoded form: logged whole instead.
    pub dlq_write_failures: Counter<u64>,
    /// Webhook attempts settled, by outcome (delivered, retry, failed).
    pub webhook_deliveries: Counter<u64>,
    /// Webhook endpoints the service disabled (failing for `webhooks.disable_after`).
    pub webhook_endpoints_disabled: Counter<u64>,
    /// Inbound messages to an address no customer owns: answered, stored nowhere.
    pub inbound_unrouted: Counter<u64>,
    /// Webhook deliveries not settled yet; refreshed from the database before each scrape.
    pub webhook_pending: Arc<AtomicU64>,
    /// Provider receipts and the delivery stage's gauges.
    pub delivery: Arc<DeliveryGauges>,
    /// `http.server.request.duration` (OpenTelemetry semantic conventions); its `_count`
    /// is the request count.
    pub http_duration: Histogram<f64>,
    /// Dead letters not yet replayed; refreshed from the database before each scrape.
    pub dlq_size: Arc<AtomicU64>,
    /// PersistenceWorker actors currently running.
    pub workers_active: Arc<AtomicI64>,
    /// What `/readyz` said last; refreshed before each scrape and each OTLP push.
    pub ready: Arc<AtomicBool>,
    /// Outcomes for the periodic log summary (see [`summary`]).
    tally: summary::Tally,
}

/// The `actor` label values of `messaging_actor_restarts_total`.
pub const ACTORS: [&str; 6] = [
    "queue",
    "worker",
    "retry_scheduler",
    "dlq",
    "sender",
    "webhook",
];

/// The delivery stage's gauges (SPEC §13), per provider where labelled.
#[derive(Debug, Default)]
pub struct DeliveryGauges {
    /// Outbound messages due and not held by a sender; refreshed from the database before
    /// each scrape (right whichever process stored them).
    pub due: AtomicU64,
    /// Provider calls in flight: sms, email.
    pub in_flight: [AtomicI64; 2],
    /// Circuit state (0 closed, 1 half-open, 2 open): sms, email.
    pub circuit: [AtomicI64; 2],
}

impl DeliveryGauges {
    /// The index of a provider (`sms`, `email`) in the arrays above.
    pub fn slot(provider: &str) -> usize {
        usize::from(provider != "sms")
    }

    /// A gauge of one series per provider, read from the array `of` picks.
    fn per_provider_gauge(
        self: &Arc<Self>,
        meter: &Meter,
        name: &'static str,
        description: &'static str,
        of: fn(&DeliveryGauges) -> &[AtomicI64; 2],
    ) {
        let gauges = self.clone();
        meter
            .i64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |gauge| {
                for provider in ["sms", "email"] {
                    let n = of(&gauges)[Self::slot(provider)].load(Ordering::Relaxed);
                    gauge.observe(n, &[KeyValue::new("provider", provider)]);
                }
            })
            .build();
    }
}

/// A gauge reporting what `read` says at each collection (a scrape or an OTLP push).
fn u64_gauge(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    read: impl Fn() -> u64 + Send + Sync + 'static,
) {
    meter
        .u64_observable_gauge(name)
        .with_description(description)
        .with_callback(move |gauge| gauge.observe(read(), &[]))
        .build();
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Metrics {
    /// The instruments, exposed to Prometheus and, when `settings.otlp_endpoint` is set,
    /// pushed over OTLP along with the spans.
    pub fn new(
        queue_depth: DepthProbe,
        settings: &TelemetrySettings,
    ) -> Result<Arc<Self>, ExportError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .expect("a fresh registry accepts the exporter");
        let mut builder = SdkMeterProvider::builder().with_reader(exporter);
        let mut tracer = Tracer::default();
        if settings.otlp_enabled() {
            builder = builder
                .with_reader(otlp::metric_reader(settings)?)
                .with_resource(otlp::resource(settings));
            tracer = Tracer::new(Some(otlp::tracer_provider(settings)?));
        }
        let provider = builder.build();
        let meter = provider.meter("messaging-server");
        let dlq_size = Arc::new(AtomicU64::new(0));
        let webhook_pending = Arc::new(AtomicU64::new(0));
        let workers_active = Arc::new(AtomicI64::new(0));
        let ready = Arc::new(AtomicBool::new(false));

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
        u64_gauge(
            &meter,
            "messaging_queue_depth",
            "Events accepted and not yet finished (waiting, retrying, in flight)",
            move || queue_depth(),
        );
        // Counts refreshed from the database before each scrape; the gauges only read them.
        for (name, description, value) in [
            (
                "messaging_dlq_size",
                "Dead letters waiting (not replayed)",
                &dlq_size,
            ),
            (
                "messaging_webhook_pending",
                "Webhook deliveries not settled yet (due, waiting for a retry, or in a call)",
                &webhook_pending,
            ),
        ] {
            let value = value.clone();
            u64_gauge(&meter, name, description, move || {
                value.load(Ordering::Relaxed)
            });
        }
        let active = workers_active.clone();
        meter
            .i64_observable_gauge("messaging_workers_active")
            .with_description("PersistenceWorker actors running")
            .with_callback(move |gauge| gauge.observe(active.load(Ordering::Relaxed), &[]))
            .build();
        let delivery = Arc::new(DeliveryGauges::default());
        let gauges = delivery.clone();
        u64_gauge(
            &meter,
            "messaging_delivery_due",
            "Outbound messages due for a provider call and not held by a sender",
            move || gauges.due.load(Ordering::Relaxed),
        );
        delivery.per_provider_gauge(
            &meter,
            "messaging_delivery_in_flight",
            "Provider calls in flight, by provider",
            |g| &g.in_flight,
        );
        delivery.per_provider_gauge(
            &meter,
            "messaging_provider_circuit_state",
            "A provider's circuit breaker: 0 closed, 1 half-open, 2 open",
            |g| &g.circuit,
        );
        let is_ready = ready.clone();
        u64_gauge(
            &meter,
            "messaging_ready",
            "1 when /readyz answers 200 (database, queue and workers up), else 0",
            move || is_ready.load(Ordering::Relaxed).into(),
        );

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
            delivery_receipts: counter(
                "messaging_delivery_receipts",
                "Delivery receipts from providers, by status and outcome (applied, ignored: already final or not sent yet, unknown: no such message)",
            ),
            actor_restarts: counter(
                "messaging_actor_restarts",
                "Panics caught in a pipeline actor, which was restarted, by actor",
            ),
            dlq_write_failures: counter(
                "messaging_dlq_write_failures",
                "Dead letters the database refused even encoded; the event was logged whole instead",
            ),
            webhook_deliveries: counter(
                "messaging_webhook_deliveries",
                "Webhook deliveries settled, by outcome (delivered; retry: failed, another attempt follows; failed: no attempt left, or its endpoint is gone)",
            ),
            webhook_endpoints_disabled: counter(
                "messaging_webhook_endpoints_disabled",
                "Webhook endpoints disabled by the service after failing for webhooks.disable_after",
            ),
            inbound_unrouted: counter(
                "messaging_inbound_unrouted",
                "Inbound messages to an address no customer owns (see /api/addresses): answered, stored nowhere",
            ),
            webhook_pending,
            delivery,
            http_duration: seconds(
                "http.server.request.duration",
                "Duration of HTTP server requests, by method, route and status",
            ),
            dlq_size,
            workers_active,
            ready,
            tally: summary::Tally::default(),
            registry,
            provider,
            tracer,
        };
        metrics.expose_zeroes();
        Ok(Arc::new(metrics))
    }

    /// Pushes the last metrics and spans and stops the export threads (at shutdown; the
    /// Prometheus exposition is empty afterwards).
    pub fn shutdown(&self) {
        self.tracer.shutdown();
        let _ = self.provider.shutdown();
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
            &self.dlq_write_failures,
        ] {
            counter.add(0, &[]);
        }
        for outcome in ["stored", "duplicate"] {
            self.processed(outcome, 0);
        }
        for actor in ACTORS {
            self.actor_restarts.add(0, &[KeyValue::new("actor", actor)]);
        }
        for kind in ["transient", "permanent"] {
            self.failed.add(0, &[KeyValue::new("kind", kind)]);
        }
        for outcome in ["delivered", "retry", "failed"] {
            self.webhook_deliveries
                .add(0, &[KeyValue::new("outcome", outcome)]);
        }
        self.webhook_endpoints_disabled.add(0, &[]);
        self.inbound_unrouted.add(0, &[]);
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

    /// The current values of every instrument, as `/metrics` would expose them (for the
    /// operators' JSON summary, `GET /api/stats`).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    pub fn processed(&self, outcome: &'static str, n: u64) {
        self.processed.add(n, &[KeyValue::new("outcome", outcome)]);
        self.tally.processed(outcome, n);
    }

    /// A panic was caught in `actor` (one of [`ACTORS`]).
    pub fn actor_restarted(&self, actor: &'static str) {
        self.actor_restarts.add(1, &[KeyValue::new("actor", actor)]);
    }

    pub fn failed(&self, kind: &'static str) {
        self.failed.add(1, &[KeyValue::new("kind", kind)]);
        self.tally.failed();
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

    /// One webhook delivery settled: `delivered`, `retry` or `failed`.
    pub fn webhook_delivery(&self, outcome: &'static str) {
        self.webhook_deliveries
            .add(1, &[KeyValue::new("outcome", outcome)]);
    }

    pub fn webhook_endpoint_disabled(&self) {
        self.webhook_endpoints_disabled.add(1, &[]);
    }

    /// One delivery receipt: `status` as the provider reported it (bounded by the caller),
    /// `outcome` what it did to the message.
    pub fn delivery_receipt(&self, status: &'static str, outcome: &'static str) {
        self.delivery_receipts.add(
            1,
            &[
                KeyValue::new("status", status),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    /// One answered request. `route` is the matched pattern (never the raw path, which
    /// would make a series per id), `method` one of [`http_method`]'s values.
    pub fn http_request(&self, method: &'static str, route: String, status: u16, seconds: f64) {
        self.http_duration.record(
            seconds,
            &[
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", route),
                KeyValue::new("http.response.status_code", i64::from(status)),
            ],
        );
    }
}

/// A request method as `http.request.method` allows: the known methods, and `_OTHER` for
/// anything else (so a client cannot mint label values).
pub fn http_method(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("_OTHER")
}

/// Installs the global log subscriber; a second call (tests) keeps the first.
pub fn init_logging(settings: &LogSettings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(log_filter(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new(log_filter("info")));
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

/// `level` with two libraries' misplaced lines filtered:
/// - sea-orm-migration logs two `info` lines ("Applying all pending migrations", "No
///   pending migrations") at every start and every CLI database command, which say nothing
///   the CLI does not; they show with a `debug` or `trace` filter, or one that names
///   `sea_orm_migration`;
/// - actix-http's dispatcher logs every unparsable request head at `error` ("stream error:
///   request parse error"): a client's mistake, which src/http/connection.rs answers and
///   logs at `debug`. The dispatcher's few other lines (payload stream errors) go with it,
///   unless the filter names `actix_http`.
pub fn log_filter(level: &str) -> String {
    let level = match level.trim() {
        "" => "info",
        level => level,
    };
    let verbose = ["debug", "trace", "sea_orm_migration"]
        .iter()
        .any(|word| level.contains(word));
    let mut filter = level.to_string();
    if !verbose {
        filter.push_str(",sea_orm_migration=warn");
    }
    if !level.contains("actix_http") {
        filter.push_str(",actix_http::h1::dispatcher=off");
    }
    filter
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
/// so `event_id` ties the request to the outcome, and `trace_id` (when traced) the lines to
/// the trace. The lines themselves carry the rest.
pub fn event_span(event: &crate::domain::Event) -> tracing::Span {
    // traceparent = "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"
    let trace_id = event.traceparent.as_deref().and_then(|tp| tp.get(3..35));
    match trace_id {
        Some(trace_id) => tracing::info_span!("event", event_id = %event.event_id, trace_id),
        None => tracing::info_span!("event", event_id = %event.event_id),
    }
}

#[cfg(test)]
mod tests {
    use super::{http_method, log_filter, mask_address};

    #[test]
    fn misplaced_library_lines_are_filtered_unless_asked_for() {
        let off = "actix_http::h1::dispatcher=off";
        assert_eq!(
            log_filter("info"),
            format!("info,sea_orm_migration=warn,{off}")
        );
        assert_eq!(
            log_filter("warn,sqlx=error"),
            format!("warn,sqlx=error,sea_orm_migration=warn,{off}")
        );
        assert_eq!(log_filter("debug"), format!("debug,{off}"));
        assert_eq!(
            log_filter("info,sea_orm_migration=info"),
            format!("info,sea_orm_migration=info,{off}")
        );
        assert_eq!(
            log_filter("info,actix_http=warn"),
            "info,actix_http=warn,sea_orm_migration=warn"
        );
    }

    #[test]
    fn unknown_methods_share_one_label_value() {
        assert_eq!(http_method("POST"), "POST");
        assert_eq!(http_method("PROPFIND"), "_OTHER");
        assert_eq!(http_method("get"), "_OTHER");
    }

    #[test]
    fn addresses_are_masked() {
        assert_eq!(mask_address("+12016661234"), "+1201*****34");
        assert_eq!(mask_address("contact@gmail.com"), "c*****@gmail.com");
        assert_eq!(mask_address("+1234"), "*****");
    }
}
