//! Limits on what a request body may cost before a handler sees it: how long it may take
//! to arrive (`server.body_timeout`, 408) and which content codings are accepted (415).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{web, Error, HttpMessage, ResponseError};
use futures_util::{Stream, StreamExt};
use tokio::time::Sleep;

use super::{ApiError, AppState};

/// Refuses content codings other than `identity` (415) and gives the body a deadline.
///
/// Compressed request bodies are refused rather than decoded: clients of this API send
/// small JSON documents, and decoding would need a second limit on the decoded size
/// (a few KiB of gzip can expand to gigabytes). 415 with `Accept-Encoding: identity` is
/// what RFC 9110 §15.5.16 prescribes.
pub async fn limit_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if let Some(coding) = req.headers().get(header::CONTENT_ENCODING) {
        if !is_identity(coding.as_bytes()) {
            let response = ApiError::UnsupportedEncoding.error_response();
            return Ok(req.into_response(response));
        }
    }
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    let timeout = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.settings.server.body_timeout)
        .filter(|_| has_body);
    if let Some(timeout) = timeout {
        let payload = Deadline::new(req.take_payload(), timeout);
        req.set_payload(Payload::Stream {
            payload: Box::pin(payload),
        });
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// `identity` (or nothing) in every listed coding.
fn is_identity(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(|v| {
        v.split(',')
            .map(str::trim)
            .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"))
    })
}

/// A request payload that fails with [`timed_out`] once its deadline passes: a client
/// that trickles its body or stops sending cannot hold a connection longer.
struct Deadline {
    payload: Payload,
    timer: Pin<Box<Sleep>>,
    expired: bool,
}

impl Deadline {
    fn new(payload: Payload, timeout: Duration) -> Self {
        Deadline {
            payload,
            timer: Box::pin(tokio::time::sleep_until(crate::time::tokio_deadline(
                timeout,
            ))),
            expired: false,
        }
    }
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.payload).poll_next(cx) {
            Poll::Ready(item) => Poll::Ready(item),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.expired = true;
                    Poll::Ready(Some(Err(PayloadError::Io(timed_out()))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "request body timeout")
}

/// Whether a payload error is the body deadline passing.
pub fn is_body_timeout(err: &PayloadError) -> bool {
    matches!(err, PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut)
}

/// Reads the whole body, refusing more than `limit` bytes with 413 as the JSON extractor
/// would.
pub(crate) async fn read_body(req: &mut ServiceRequest, limit: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identity_is_accepted() {
        for ok in [
            "identity",
            "IDENTITY",
            " identity ",
            "identity, identity",
            "",
        ] {
            assert!(is_identity(ok.as_bytes()), "{ok:?}");
        }
        for refused in ["gzip", "br", "identity, gzip", "deflate", "x-gzip"] {
            assert!(!is_identity(refused.as_bytes()), "{refused:?}");
        }
        assert!(!is_identity(b"\xff"));
    }

    #[actix_web::test]
    async fn a_stalled_body_fails_at_its_deadline() {
        use futures_util::StreamExt;
        let (_sender, stalled) = actix_http::h1::Payload::create(false);
        let mut body = Deadline::new(Payload::from(stalled), Duration::from_millis(20));
        match body.next().await {
            Some(Err(e)) => assert!(is_body_timeout(&e), "{e}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(
            body.next().await.is_none(),
            "the stream ends after the timeout"
        );
    }
}
