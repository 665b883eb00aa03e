//! A local OTLP/HTTP receiver (what an OpenTelemetry Collector listens with on :4318):
//! accepts `POST /v1/metrics` and `POST /v1/traces` in protobuf, decodes them, and keeps
//! what arrived for the test to inspect.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric;
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

#[derive(Default)]
struct Received {
    metrics: Vec<ExportMetricsServiceRequest>,
    traces: Vec<ExportTraceServiceRequest>,
    /// Requests whose body did not decode (the test fails on any).
    undecodable: Vec<String>,
    /// While set, every request is answered with this status and not kept.
    failing: Option<u16>,
    /// Requests that arrived, answered or refused: (metrics, traces).
    attempts: (usize, usize),
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
            app.app_data(web::Data::new(shared.clone()))
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .route("/v1/metrics", web::post().to(metrics))
                .route("/v1/traces", web::post().to(traces));
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
        self.received.lock().unwrap().attempts
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let received = self.received.lock().unwrap();
        assert!(
            received.undecodable.is_empty(),
            "undecodable OTLP requests: {:?}",
            received.undecodable
        );
        let mut spans = Vec::new();
        for request in &received.traces {
            for resource_spans in &request.resource_spans {
                let service = service_name(resource_spans.resource.as_ref().map(|r| &r.attributes));
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        spans.push(ReceivedSpan {
                            service: service.clone(),
                            name: span.name.clone(),
                            trace_id: hex::encode(&span.trace_id),
                            span_id: hex::encode(&span.span_id),
                            parent_span_id: hex::encode(&span.parent_span_id),
                            kind: span.kind,
                            attributes: span.attributes.clone(),
                            status_code: span.status.as_ref().map_or(0, |s| s.code),
                            events: span.events.iter().map(|e| e.name.clone()).collect(),
                        });
                    }
                }
            }
        }
        spans
    }

    /// Every metric data point received so far, oldest first.
    pub fn points(&self) -> Vec<ReceivedPoint> {
        let received = self.received.lock().unwrap();
        assert!(
            received.undecodable.is_empty(),
            "undecodable OTLP requests: {:?}",
            received.undecodable
        );
        let mut points = Vec::new();
        for request in &received.metrics {
            for resource_metrics in &request.resource_metrics {
                let service =
                    service_name(resource_metrics.resource.as_ref().map(|r| &r.attributes));
                for scope in &resource_metrics.scope_metrics {
                    for m in &scope.metrics {
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
                            Some(metric::Data::Sum(sum)) => {
                                for p in &sum.data_points {
                                    push(&p.attributes, number(p.value))
                                }
                            }
                            Some(metric::Data::Gauge(gauge)) => {
                                for p in &gauge.data_points {
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
            }
        }
        points
    }
}

async fn metrics(state: web::Data<Arc<Mutex<Received>>>, body: web::Bytes) -> HttpResponse {
    let mut received = state.lock().unwrap();
    received.attempts.0 += 1;
    if let Some(status) = received.failing {
        return refuse(status);
    }
    match ExportMetricsServiceRequest::decode(body.as_ref()) {
        Ok(request) => received.metrics.push(request),
        Err(e) => received.undecodable.push(format!("/v1/metrics: {e}")),
    }
    protobuf(ExportMetricsServiceResponse::default().encode_to_vec())
}

async fn traces(state: web::Data<Arc<Mutex<Received>>>, body: web::Bytes) -> HttpResponse {
    let mut received = state.lock().unwrap();
    received.attempts.1 += 1;
    if let Some(status) = received.failing {
        return refuse(status);
    }
    match ExportTraceServiceRequest::decode(body.as_ref()) {
        Ok(request) => received.traces.push(request),
        Err(e) => received.undecodable.push(format!("/v1/traces: {e}")),
    }
    protobuf(ExportTraceServiceResponse::default().encode_to_vec())
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
