//! Spans of the message path: one trace per message, from the HTTP request to the provider
//! call (SPEC §12). Every call is a no-op that allocates nothing unless OTLP export is on.
//!
//! ```text
//! POST /api/messages/sms     server    continues the request's W3C `traceparent`
//! └─ enqueue                 producer  its context travels in the event's `traceparent`
//!    ├─ process              consumer  one per attempt, in whichever process runs the worker
//!    └─ deliver              consumer  outbound: one per delivery attempt (the delivery stage)
//!       └─ provider send     client
//! ```
//!
//! Retries and dead-letter replays carry the same event, so every attempt of a message is a
//! `process` span of the same trace.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};

use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use uuid::Uuid;

use crate::domain::Event;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Starts the spans of one application; cheap to clone.
#[derive(Clone, Default)]
pub struct Tracer {
    tracer: Option<SdkTracer>,
    // Kept to flush and stop the export thread at shutdown.
    provider: Option<SdkTracerProvider>,
}

impl Tracer {
    /// A tracer whose spans go to `provider`'s exporter; `None` = tracing off.
    pub fn new(provider: Option<SdkTracerProvider>) -> Self {
        Tracer {
            tracer: provider.as_ref().map(|p| p.tracer("messaging-server")),
            provider,
        }
    }

    pub fn is_on(&self) -> bool {
        self.tracer.is_some()
    }

    /// The server span of an API request, continuing the caller's trace when its
    /// `traceparent` is valid (a new trace otherwise). Named by its route once known.
    pub fn request(
        &self,
        method: &'static str,
        path: &str,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> TraceSpan {
        let Some(tracer) = &self.tracer else {
            return TraceSpan::off();
        };
        let carrier = Carrier {
            traceparent,
            tracestate,
        };
        let parent = TraceContextPropagator::new().extract(&carrier);
        let span = tracer
            .span_builder(method)
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("url.path", path.to_string()),
            ])
            .start_with_context(tracer, &parent);
        TraceSpan(Some(parent.with_span(span)))
    }

    /// The producer span of putting `event` on the queue, as a child of `parent` (the
    /// request's span). Writes the span's context into the event, where the worker finds it.
    pub fn enqueue(&self, parent: &Context, event: &mut Event, system: &'static str) -> TraceSpan {
        let Some(tracer) = &self.tracer else {
            return TraceSpan::off();
        };
        let span = tracer
            .span_builder("enqueue")
            .with_kind(SpanKind::Producer)
            .with_attributes(message_attributes(event, system, "send"))
            .start_with_context(tracer, parent);
        let cx = parent.with_span(span);
        event.traceparent = traceparent_of(&cx);
        TraceSpan(Some(cx))
    }

    /// One `process` span per event of a batch (a child of the span that enqueued it), to be
    /// made reachable to [`record_outcome`] and [`provider_call`] with [`BatchTrace::around`].
    pub fn batch<'a>(
        &self,
        system: &'static str,
        events: impl ExactSizeIterator<Item = &'a Event>,
    ) -> BatchTrace {
        self.consumer_spans("process", system, events)
    }

    /// The `deliver` span of one delivery attempt of a stored outbound message (the
    /// delivery stage), a sibling of its `process` span under the span that enqueued it;
    /// reachable to [`record_outcome`] and [`provider_call`] the same way.
    pub fn delivery(&self, event: &Event) -> BatchTrace {
        self.consumer_spans("deliver", "database", std::iter::once(event))
    }

    fn consumer_spans<'a>(
        &self,
        name: &'static str,
        system: &'static str,
        events: impl ExactSizeIterator<Item = &'a Event>,
    ) -> BatchTrace {
        let Some(tracer) = &self.tracer else {
            return BatchTrace(None);
        };
        let size = events.len() as i64;
        let propagator = TraceContextPropagator::new();
        let mut spans = HashMap::with_capacity(events.len());
        for event in events {
            let carrier = Carrier {
                traceparent: event.traceparent.as_deref(),
                tracestate: None,
            };
            let parent = propagator.extract(&carrier);
            let mut attributes = message_attributes(event, system, "process");
            attributes.push(KeyValue::new("messaging.batch.message_count", size));
            // The same event twice in one batch (a double replay) shares the first span.
            spans.entry(event.event_id).or_insert_with(|| {
                let span = tracer
                    .span_builder(name)
                    .with_kind(SpanKind::Consumer)
                    .with_attributes(attributes)
                    .start_with_context(tracer, &parent);
                parent.with_span(span)
            });
        }
        BatchTrace(Some(Arc::new(BatchSpans {
            tracer: tracer.clone(),
            spans,
            outcomes: Mutex::new(HashMap::new()),
        })))
    }

    /// Sends what is buffered and stops the export thread (at shutdown).
    pub fn shutdown(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.shutdown();
        }
    }
}

/// A span that ends when dropped (or with [`TraceSpan::end`]); inert when tracing is off.
pub struct TraceSpan(Option<Context>);

impl TraceSpan {
    pub fn off() -> Self {
        TraceSpan(None)
    }

    /// The context to start child spans in (empty when tracing is off).
    pub fn context(&self) -> Context {
        self.0.clone().unwrap_or_default()
    }

    /// The trace id as 32 hex digits, for log lines.
    pub fn trace_id(&self) -> Option<String> {
        let cx = self.0.as_ref()?;
        let span = cx.span();
        let span_context = span.span_context();
        span_context
            .is_valid()
            .then(|| span_context.trace_id().to_string())
    }

    pub fn set(&self, attribute: KeyValue) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(attribute);
        }
    }

    /// Names a server span `METHOD route` and records the answer's status; a 5xx marks
    /// the span as failed (a 4xx is the client's error, not the server's).
    pub fn answered(&self, method: &'static str, route: &str, status: u16) {
        if let Some(cx) = &self.0 {
            let span = cx.span();
            span.update_name(format!("{method} {route}"));
            span.set_attribute(KeyValue::new("http.route", route.to_string()));
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_status(Status::error(status.to_string()));
            }
        }
    }

    pub fn fail(&self, error: impl Display) {
        if let Some(cx) = &self.0 {
            cx.span().set_status(Status::error(error.to_string()));
        }
    }

    pub fn end(self) {}
}

impl Drop for TraceSpan {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

/// The `process` spans of one batch, by event id; they end when the batch is done.
pub struct BatchTrace(Option<Arc<BatchSpans>>);

struct BatchSpans {
    tracer: SdkTracer,
    spans: HashMap<Uuid, Context>,
    /// The last outcome of each event, written on its span when the batch ends: a message
    /// that was stored and then failed at the provider ends `failed`.
    outcomes: Mutex<HashMap<Uuid, String>>,
}

impl BatchSpans {
    fn outcome(&self, event: &Event, outcome: &str) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        outcomes.insert(event.event_id, outcome.to_string());
    }
}

impl BatchTrace {
    /// Runs a batch's processing with these spans as the current OpenTelemetry context
    /// value, so the worker's outcome and provider-call code finds an event's span from
    /// the event alone instead of passing the spans through every function.
    pub async fn around<F: Future>(self, work: F) -> F::Output {
        let Some(batch) = self.0.clone() else {
            return work.await;
        };
        let output = work.with_context(Context::current_with_value(self)).await;
        let outcomes = batch.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        for (event_id, cx) in &batch.spans {
            let span = cx.span();
            if let Some(outcome) = outcomes.get(event_id) {
                span.set_attribute(KeyValue::new("message.outcome", outcome.clone()));
            }
            span.end();
        }
        output
    }

    /// The current batch's spans (while [`BatchTrace::around`] runs) and `event`'s span.
    fn span_of(event: &Event) -> Option<(Arc<BatchSpans>, Context)> {
        Context::map_current(|cx| {
            let batch = cx.get::<BatchTrace>()?.0.clone()?;
            let span = batch.spans.get(&event.event_id)?.clone();
            Some((batch, span))
        })
    }
}

/// Records what became of `event` on its `process` span, as a span event: `stored`,
/// `duplicate`, or `failed` with the error and its kind (transient or permanent), which
/// also marks the span as failed. The span's `message.outcome` is the last of them (or
/// `sent`, see [`provider_call`]).
pub fn record_outcome(event: &Event, outcome: &str, error: Option<(&str, &dyn Display)>) {
    let Some((batch, cx)) = BatchTrace::span_of(event) else {
        return;
    };
    let span = cx.span();
    match error {
        None => span.add_event(outcome.to_string(), Vec::new()),
        Some((kind, error)) => {
            let message = error.to_string();
            span.add_event(
                outcome.to_string(),
                vec![
                    KeyValue::new("error.type", kind.to_string()),
                    KeyValue::new("exception.message", message.clone()),
                ],
            );
            span.set_attribute(KeyValue::new("error.type", kind.to_string()));
            span.set_status(Status::error(message));
        }
    }
    batch.outcome(event, outcome);
}

/// A failed call, as a span records it: the `outcome` label it is counted under
/// (`providers::ProviderError` is one).
pub trait CallFailure: Display {
    fn outcome(&self) -> &'static str;
}

/// Runs one provider call inside a `provider send` span, a child of the event's `process`
/// span, recording the outcome (the `outcome` label of messaging_provider_requests_total).
pub async fn provider_call<T, E: CallFailure>(
    event: &Event,
    provider: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Some((batch, parent)) = BatchTrace::span_of(event) else {
        return call.await;
    };
    let span = batch
        .tracer
        .span_builder("provider send")
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("provider.name", provider)])
        .start_with_context(&batch.tracer, &parent);
    let span = TraceSpan(Some(parent.with_span(span)));
    let result = call.await;
    let outcome = match &result {
        Ok(_) => "sent",
        Err(e) => e.outcome(),
    };
    span.set(KeyValue::new("provider.outcome", outcome));
    match &result {
        Ok(_) => batch.outcome(event, "sent"),
        Err(e) => span.fail(e),
    }
    result
}

fn message_attributes(
    event: &Event,
    system: &'static str,
    operation: &'static str,
) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", system),
        KeyValue::new("messaging.operation.type", operation),
        KeyValue::new("messaging.message.id", event.event_id.to_string()),
        KeyValue::new("message.channel", event.channel.as_str()),
        KeyValue::new("message.direction", event.direction.as_str()),
        KeyValue::new("message.attempt", i64::from(event.attempt)),
    ]
}

/// The W3C `traceparent` of the span in `cx` (none when it is not valid).
fn traceparent_of(cx: &Context) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut InjectInto(&mut carrier));
    carrier.remove(TRACEPARENT)
}

/// Extracts from a `traceparent` (and `tracestate`) without copying them.
struct Carrier<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent,
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

struct InjectInto<'a>(&'a mut HashMap<&'static str, String>);

impl Injector for InjectInto<'_> {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0.insert(TRACEPARENT, value);
        }
    }
}
