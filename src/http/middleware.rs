//! Cross-cutting request handling: content negotiation, request metrics and spans.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{mime, web, Error, HttpMessage, HttpRequest, ResponseError};
use opentelemetry::Context;

use super::{ApiError, AppState};
use crate::telemetry::{self, TraceSpan};

/// 406 when the client's Accept header admits no JSON (the API only speaks JSON).
pub async fn require_json_accept(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if !admits_json(&req) {
        let response = ApiError::NotAcceptable.error_response();
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Whether the `Accept` header (as actix-web parses it, q-values included) names a JSON
/// type with a quality above 0. No header, an empty one or one nobody can read is no
/// reason to refuse an answer.
fn admits_json(req: &impl HttpMessage) -> bool {
    let Ok(header::Accept(ranges)) = <header::Accept as header::Header>::parse(req) else {
        return true;
    };
    ranges.is_empty()
        || ranges
            .iter()
            .any(|range| range.quality > header::Quality::ZERO && is_json(&range.item))
}

fn is_json(media: &mime::Mime) -> bool {
    media.type_() == mime::STAR
        || (media.type_() == mime::APPLICATION
            && (media.subtype() == mime::STAR
                || media.subtype() == mime::JSON
                || media.suffix() == Some(mime::JSON)))
}

/// Records every request in `http_server_request_duration_seconds` (by method, route
/// pattern and status) and, when tracing is on, opens the server span of each `/api`
/// request (continuing the caller's `traceparent`). Health checks and scrapes are not
/// traced: they would bury the messages' traces.
pub async fn observe_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let method = telemetry::http_method(req.method().as_str());
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.metrics.clone());
    let span = match &metrics {
        Some(m) if m.tracer.is_on() && req.path().starts_with("/api/") => {
            let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
            m.tracer.request(
                method,
                req.path(),
                header("traceparent"),
                header("tracestate"),
            )
        }
        _ => TraceSpan::off(),
    };
    if let Some(trace_id) = span.trace_id() {
        // On the request's log span (see hygiene.rs): its log lines name the trace.
        tracing::Span::current().record("trace_id", trace_id.as_str());
        req.extensions_mut().insert(RequestTrace(span.context()));
    }
    let response = next.call(req).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = response.status().as_u16();
    span.answered(method, &route, status);
    if let Some(metrics) = metrics {
        metrics.http_request(method, route, status, started.elapsed().as_secs_f64());
    }
    Ok(response)
}

/// The OpenTelemetry context of a traced request, for handlers' child spans.
#[derive(Clone)]
struct RequestTrace(Context);

/// The request's span context (empty when the request is not traced).
pub fn request_trace(req: &HttpRequest) -> Context {
    req.extensions()
        .get::<RequestTrace>()
        .map(|trace| trace.0.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::ACCEPT;
    use actix_web::test::TestRequest;

    fn admits_json(accept: &str) -> bool {
        super::admits_json(
            &TestRequest::default()
                .insert_header((ACCEPT, accept))
                .to_http_request(),
        )
    }

    #[test]
    fn accept_header_negotiation() {
        for ok in [
            "application/json",
            "*/*",
            "text/html, application/json;q=0.5",
            "application/*",
            "application/problem+json",
            "",
        ] {
            assert!(admits_json(ok), "{ok}");
        }
        for refused in [
            "text/html",
            "application/xml",
            "application/json;q=0",
            "application/json; q=0.000, text/html",
            "text/*",
        ] {
            assert!(!admits_json(refused), "{refused}");
        }
    }
}
