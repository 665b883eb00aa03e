//! OTLP/HTTP export (protobuf) to an OpenTelemetry Collector: the metrics /metrics exposes
//! every `telemetry.otlp_interval`, and the message spans in batches.
//!
//! Nothing here runs on a request or a worker. The SDK collects metrics on a timer thread
//! and sends spans from a batch thread; a finished span is handed to a bounded queue and
//! dropped, never waited for, when the queue is full. A collector that is down or refuses
//! the data costs one warning, then at most one a minute while it stays that way.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{
    MetricExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig,
};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, Temporality};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData,
};
use opentelemetry_sdk::Resource;

use crate::config::TelemetrySettings;

/// Longest one export may take, retries included. Short, because shutdown waits for the
/// last export (of spans and metrics) before the process exits.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// While exports keep failing, how often the failure is logged again.
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[error("cannot set up OTLP export to {endpoint}: {message}")]
pub struct ExportError {
    endpoint: String,
    message: String,
}

/// What every exported metric and span says about its origin.
pub fn resource(settings: &TelemetrySettings) -> Resource {
    Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A reader that pushes the meter provider's metrics (the same instruments the Prometheus
/// exporter reads) every `otlp_interval`.
pub fn metric_reader(
    settings: &TelemetrySettings,
) -> Result<PeriodicReader<Reported<MetricExporter>>, ExportError> {
    let url = signal_url(settings, "/v1/metrics");
    let exporter = over_http(MetricExporter::builder().with_http(), &url)
        // Cumulative, like Prometheus: a lost push loses nothing but resolution.
        .with_temporality(Temporality::Cumulative)
        .build()
        .map_err(|e| build_error(settings, e))?;
    Ok(
        PeriodicReader::builder(Reported::new(exporter, "metrics", url))
            .with_interval(settings.otlp_interval)
            .build(),
    )
}

/// A tracer provider whose spans are sent in batches, at the latest `otlp_interval` after
/// they end.
pub fn tracer_provider(settings: &TelemetrySettings) -> Result<SdkTracerProvider, ExportError> {
    let url = signal_url(settings, "/v1/traces");
    let exporter = over_http(SpanExporter::builder().with_http(), &url)
        .build()
        .map_err(|e| build_error(settings, e))?;
    let batches = BatchSpanProcessor::builder(Reported::new(exporter, "spans", url))
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(settings.otlp_interval)
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.trace_sample_ratio,
        ))))
        .with_resource(resource(settings))
        .build())
}

/// How both exporters send: protobuf over HTTP to `url`, each export within [`EXPORT_TIMEOUT`].
fn over_http<B: WithExportConfig + WithHttpConfig>(builder: B, url: &str) -> B {
    builder
        .with_http_client(UreqClient::new())
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
}

fn signal_url(settings: &TelemetrySettings, path: &str) -> String {
    format!(
        "{}{path}",
        settings.otlp_endpoint.trim().trim_end_matches('/')
    )
}

fn build_error(settings: &TelemetrySettings, error: impl std::fmt::Display) -> ExportError {
    ExportError {
        endpoint: settings.otlp_endpoint.clone(),
        message: error.to_string(),
    }
}

/// The exporters' HTTP client. Blocking is right here: the SDK drives each export with
/// `block_on` on its own export thread, where no async runtime runs.
#[derive(Debug)]
struct UreqClient(ureq::Agent);

impl UreqClient {
    fn new() -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(EXPORT_TIMEOUT))
            // The exporter reads the status itself (and retries 429/502/503/504).
            .http_status_as_error(false)
            .build();
        UreqClient(ureq::Agent::new_with_config(config))
    }
}

#[async_trait::async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, body.to_vec());
        let response = self.0.run(request)?;
        let (parts, mut body) = response.into_parts();
        // A collector answers with a small protobuf; anything large is not one.
        let body = body.with_config().limit(1024 * 1024).read_to_vec()?;
        Ok(Response::from_parts(parts, Bytes::from(body)))
    }
}

/// An exporter that reports its failures itself, sparingly, and says when exports work
/// again. It answers Ok to the SDK even after a failure: the SDK would log an error at every
/// failed export (and does nothing else with it), while the data is lost either way.
#[derive(Debug)]
pub struct Reported<E> {
    inner: E,
    what: &'static str,
    url: String,
    failing: Mutex<Option<Failing>>,
}

#[derive(Debug)]
struct Failing {
    last_warned: Instant,
    unreported: u64,
}

impl<E> Reported<E> {
    fn new(inner: E, what: &'static str, url: String) -> Self {
        Reported {
            inner,
            what,
            url,
            failing: Mutex::new(None),
        }
    }

    fn record(&self, result: OTelSdkResult) -> OTelSdkResult {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match (&result, failing.as_mut()) {
            (Ok(()), None) => {}
            (Ok(()), Some(_)) => {
                *failing = None;
                tracing::info!(what = self.what, url = %self.url, "OTLP export works again");
            }
            (Err(error), Some(state)) if state.last_warned.elapsed() < WARN_EVERY => {
                state.unreported += 1;
                tracing::debug!(what = self.what, url = %self.url, error = %error, "OTLP export failed");
            }
            (Err(error), state) => {
                let failed_since_last_warning = state.map_or(0, |s| s.unreported);
                tracing::warn!(
                    what = self.what,
                    url = %self.url,
                    error = %error,
                    failed_since_last_warning,
                    "OTLP export failed; the data is dropped and the next export tried on schedule"
                );
                *failing = Some(Failing {
                    last_warned: Instant::now(),
                    unreported: 0,
                });
            }
        }
        Ok(())
    }
}

impl PushMetricExporter for Reported<MetricExporter> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.record(self.inner.export(metrics).await)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

impl opentelemetry_sdk::trace::SpanExporter for Reported<SpanExporter> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.record(self.inner.export(batch).await)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
