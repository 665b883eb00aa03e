//! A local OTLP/HTTP receiver (what an OpenTelemetry Collector listens with on :4318):
//! accepts `POST /v1/metrics` and `POST /v1/traces` in protobuf, decodes them, and keeps
//! what arrived for the test to inspect.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpRequest, HttpResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, Gauge, Sum};
use prost::Message;

/// One span as received, flattened with its resource's service name.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    /// 32 lower-case hex digits, as in a `traceparent`.
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// `opentelemetry_proto::tonic::trace::v1::span::SpanKind` as a number.
    pub kind: i32,
    pub attributes: Vec<KeyValue>,
    /// `status.code`: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// The names of the span's events, in order.
    pub events: Vec<String>,
}

impl ReceivedSpan {
    /// An attribute's value as text (numbers formatted), if present.
    pub fn attribute(&self, key: &str) -> Option<String> {
        self.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .map(text)
    }

    /// Asserts the attribute `key` is `want`.
    #[track_caller]
    pub fn assert_attribute(&self, key: &str, want: &str) {
        assert_eq!(self.attribute(key).as_deref(), Some(want), "{key}");
    }
}

/// One metric data point as received: the metric's name and its point's attributes.
#[derive(Debug, Clone)]
pub struct ReceivedPoint {
    pub service: String,
    pub metric: String,
    pub attributes: Vec<(String, String)>,
    /// Sum and gauge points: the value; histograms: the count.
    pub value: f64,
}

/// One signal's export requests: how many arrived, answered or refused, and those kept.
#[derive(Default)]
struct Signal<R> {
    attempts: usize,
    kept: Vec<R>,
}

#[derive(Default)]
struct Received {
    metrics: Signal<ExportMetricsServiceRequest>,
    traces: Signal<ExportTraceServiceRequest>,
    /// Requests whose body did not decode (the test fails on any).
    undecodable: Vec<String>,
    /// While set, every request is answered with this status and not kept.
    failing: Option<u16>,
}

#[derive(Clone)]
pub struct OtlpReceiver {
    /// Base URL, as `telemetry.otlp_endpoint` takes it.
    pub url: String,
    received: Arc<Mutex<Received>>,
}

impl OtlpReceiver {
    /// Starts the receiver on a free port, in the current actix System.
    pub fn start() -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind OTLP receiver");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = received.clone();
        super::serve_on(listener, move |app| {
            app.app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .route("/v1/metrics", export(shared.clone(), |r| &mut r.metrics))
                .route("/v1/traces", export(shared.clone(), |r| &mut r.traces));
        });
        OtlpReceiver { url, received }
    }

    /// Answers every request with `status` from now on (a collector in trouble), or
    /// accepts them again with `None`.
    pub fn set_failing(&self, status: Option<u16>) {
        self.received.lock().unwrap().failing = status;
    }

    /// Requests that arrived so far, accepted or not: (metrics, traces).
    pub fn attempts(&self) -> (usize, usize) {
        let received = self.received.lock().unwrap();
        (received.metrics.attempts, received.traces.attempts)
    }

    /// What arrived, once it is sure every request decoded (the test fails if any did not).
    fn decoded(&self) -> std::sync::MutexGuard<'_, Received> {
        let received = self.received.lock().unwrap();
        assert!(
            received.undecodable.is_empty(),
            "undecodable OTLP requests: {:?}",
            received.undecodable
        );
        received
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let received = self.decoded();
        received
            .traces
            .kept
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|resource_spans| {
                let service = service_name(resource_spans.resource.as_ref().map(|r| &r.attributes));
                let spans = resource_spans.scope_spans.iter().flat_map(|s| &s.spans);
                spans.map(move |span| ReceivedSpan {
                    service: service.clone(),
                    name: span.name.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    kind: span.kind,
                    attributes: span.attributes.clone(),
                    status_code: span.status.as_ref().map_or(0, |s| s.code),
                    events: span.events.iter().map(|e| e.name.clone()).collect(),
                })
            })
            .collect()
    }

    /// Every metric data point received so far, oldest first.
    pub fn points(&self) -> Vec<ReceivedPoint> {
        let received = self.decoded();
        let mut points = Vec::new();
        for resource_metrics in received
            .metrics
            .kept
            .iter()
            .flat_map(|r| &r.resource_metrics)
        {
            let service = service_name(resource_metrics.resource.as_ref().map(|r| &r.attributes));
            for m in resource_metrics
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
            {
                let mut push = |attributes: &[KeyValue], value: f64| {
                    points.push(ReceivedPoint {
                        service: service.clone(),
                        metric: m.name.clone(),
                        attributes: attributes
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key.clone(),
                                    kv.value.as_ref().map(text).unwrap_or_default(),
                                )
                            })
                            .collect(),
                        value,
                    })
                };
                match &m.data {
                    Some(
                        metric::Data::Sum(Sum { data_points, .. })
                        | metric::Data::Gauge(Gauge { data_points, .. }),
                    ) => {
                        for p in data_points {
                            push(&p.attributes, number(p.value))
                        }
                    }
                    Some(metric::Data::Histogram(h)) => {
                        for p in &h.data_points {
                            push(&p.attributes, p.count as f64)
                        }
                    }
                    _ => {}
                }
            }
        }
        points
    }
}

/// One signal's export route: every request is counted, refused while the receiver is
/// failing, else decoded and kept (one that does not decode fails the test when read).
fn export<R: Message + Default + 'static>(
    received: Arc<Mutex<Received>>,
    signal: fn(&mut Received) -> &mut Signal<R>,
) -> actix_web::Route {
    web::post().to(move |request: HttpRequest, body: web::Bytes| {
        let mut received = received.lock().unwrap();
        signal(&mut received).attempts += 1;
        let response = match received.failing {
            Some(status) => refuse(status),
            None => {
                match R::decode(body.as_ref()) {
                    Ok(decoded) => signal(&mut received).kept.push(decoded),
                    Err(e) => received
                        .undecodable
                        .push(format!("{}: {e}", request.path())),
                }
                // An Export*ServiceResponse of full success has every field at its
                // default, which protobuf encodes as no bytes at all.
                protobuf(Vec::new())
            }
        };
        std::future::ready(response)
    })
}

fn refuse(status: u16) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("a status")).finish()
}

fn protobuf(body: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(body)
}

fn service_name(attributes: Option<&Vec<KeyValue>>) -> String {
    attributes
        .and_then(|a| a.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .map(text)
        .unwrap_or_default()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn number(value: Option<opentelemetry_proto::tonic::metrics::v1::number_data_point::Value>) -> f64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    match value {
        Some(Value::AsDouble(d)) => d,
        Some(Value::AsInt(i)) => i as f64,
        None => f64::NAN,
    }
}
