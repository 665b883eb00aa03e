//! Response hygiene for every answer, errors included: an `X-Request-Id` (the client's if
//! it is sane, else a new one) that every log line of the request carries through a span,
//! `X-Content-Type-Options: nosniff`, and `Cache-Control: no-store` on API answers (they
//! hold customer data and must not sit in shared caches). And one limit on the request
//! head for every request (see [`MAX_HEAD_BYTES`]).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, ResponseError};
use tracing::Instrument;

use super::ApiError;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, in its extensions, for what records it besides logs (the audit log).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);
/// Longest request id taken from a client.
const MAX_REQUEST_ID: usize = 128;
/// Largest request head (request line and headers) answered: actix-http's own limit. It
/// refuses a head it has buffered that much of before it is complete, but parses a larger
/// one that arrives in a single read; this refuses those too, so the limit holds however
/// the bytes arrive.
pub const MAX_HEAD_BYTES: usize = 128 * 1024;

pub async fn request_context<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map(str::to_owned)
        .unwrap_or_else(new_id);
    let api = req.path().starts_with("/api/");
    // Sane ids are visible ASCII, so always a valid header value.
    let header_value = HeaderValue::from_str(&id).ok();
    // `caller` and `client` are filled in by the authentication guard, `trace_id` when the
    // request is traced.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        caller = tracing::field::Empty,
        client = tracing::field::Empty,
        trace_id = tracing::field::Empty
    );
    req.extensions_mut().insert(RequestId(id));
    // Handlers' and guards' errors arrive here as responses (problems), so they get the
    // headers too. (Keeping a clone of the request to render an `Err` would break
    // routing, which needs the request to itself.)
    let mut response = if head_size(&req) > MAX_HEAD_BYTES {
        req.into_response(ApiError::HeadersTooLarge.error_response())
    } else {
        next.call(req).instrument(span).await?.map_into_boxed_body()
    };
    let headers = response.headers_mut();
    if let Some(value) = header_value {
        headers.insert(REQUEST_ID, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

/// The request head's size as sent: request line, then each header line with its CRLF.
fn head_size(req: &ServiceRequest) -> usize {
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n".len();
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + ": \r\n".len() + value.len())
        .sum();
    line + headers
}

/// Visible ASCII only (no spaces or control characters that could forge log lines), at
/// most [`MAX_REQUEST_ID`] characters.
fn is_sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Request ids need to be unique, not secret: a fast generator will do.
pub(super) fn new_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_request_ids_are_kept() {
        for ok in ["abc", "3f2a-11", &"x".repeat(128), "trace:1/2"] {
            assert!(is_sane(ok), "{ok}");
        }
        for bad in ["", "a b", "line\nbreak", &"x".repeat(129), "tab\t", "é"] {
            assert!(!is_sane(bad), "{bad:?}");
        }
        assert_eq!(new_id().len(), 32);
        assert_ne!(new_id(), new_id());
    }
}
