//! The HTTP/1 connection edge: requests that actix-http refuses before any handler runs.
//!
//! When a request head cannot be parsed (a header value with a control character such as
//! `Idempotency-Key: k\x7f`) or is too large (over actix-http's 128 KiB), actix-http answers
//! a fixed, empty 400 or 431 and closes the socket at once; with request bytes still
//! unread, the kernel then sends a reset and the client often sees no answer at all. Each
//! connection's socket is therefore wrapped so that such an answer leaves as a problem+json
//! body and the connection closes gracefully: write side first, then the rest of the
//! request is read and discarded (bounded in time and bytes) so no reset is sent.

use std::io;
use std::net::TcpListener;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::HttpService;
use actix_server::Server;
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::App;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::ApiError;

/// How long and how much of a refused request is read and discarded before closing.
const DRAIN_TIME: Duration = Duration::from_secs(2);
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
/// actix-web's `HttpServer` defaults.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` as `HttpServer` would (HTTP/1.1), each connection wrapped
/// in [`Guarded`]. Signals are left to the caller.
pub fn serve<F, T, B>(
    listener: TcpListener,
    workers: usize,
    shutdown_timeout: Duration,
    app: F,
) -> io::Result<Server>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let local = listener.local_addr()?;
    let mut builder = Server::build()
        .disable_signals()
        .shutdown_timeout(shutdown_timeout.as_secs());
    if workers > 0 {
        builder = builder.workers(workers);
    }
    let server = builder
        .listen("messaging-http", listener, move || {
            let app = app().into_factory().map_err(|err| err.error_response());
            fn_service(|io: TcpStream| async move {
                let _ = io.set_nodelay(true);
                let peer = io.peer_addr().ok();
                Ok((Guarded::new(io), peer))
            })
            .and_then(
                HttpService::build()
                    .client_request_timeout(HEAD_TIMEOUT)
                    .client_disconnect_timeout(DISCONNECT_TIMEOUT)
                    .local_addr(local)
                    .h1(map_config(app, |_| AppConfig::default())),
            )
        })?
        .run();
    Ok(server)
}

/// A connection's socket: passes bytes through, except actix-http's own empty error
/// answers, which it rewrites as problems and follows with a graceful close.
pub struct Guarded {
    /// Always `Some` until dropped.
    io: Option<TcpStream>,
    /// A rewritten answer and how much of it is written.
    rewritten: Vec<u8>,
    written: usize,
    /// Set once an answer was rewritten: the connection is closing on a refused request,
    /// and the close is left to [`linger`] when actix-http drops the connection (it drops
    /// it right after such an answer, without shutting it down).
    refused: bool,
}

impl Guarded {
    fn new(io: TcpStream) -> Self {
        Guarded {
            io: Some(io),
            rewritten: Vec::new(),
            written: 0,
            refused: false,
        }
    }

    fn io(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.io.as_mut().expect("present until dropped"))
    }

    fn poll_rewritten(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.rewritten.len() {
            let (io, rest) = (
                Pin::new(self.io.as_mut().expect("present until dropped")),
                &self.rewritten[self.written..],
            );
            let n = std::task::ready!(io.poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_rewritten(cx))?;
        match protocol_error_at(buf) {
            // Earlier answers first, written as they are.
            Some(start) if start > 0 => self.io().poll_write(cx, &buf[..start]),
            Some(_) => {
                self.rewritten = rewrite(buf);
                self.written = 0;
                self.refused = true;
                // Taken whole; it goes out on this and the next polls.
                let _ = self.poll_rewritten(cx)?;
                Poll::Ready(Ok(buf.len()))
            }
            None => self.io().poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_rewritten(cx))?;
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.refused {
            // Left to `linger` at drop.
            return Poll::Ready(Ok(()));
        }
        self.io().poll_shutdown(cx)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !self.refused {
            return;
        }
        let (Some(io), Ok(runtime)) = (self.io.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let unsent = self
            .rewritten
            .split_off(self.written.min(self.rewritten.len()));
        runtime.spawn(linger(io, unsent));
    }
}

/// Closes a refused connection gracefully: the rest of the answer, the write side, then
/// whatever the client still sends is read and discarded until it closes, the time is up
/// or enough was read. Closing with unread bytes would reset the connection, and a client
/// still sending its body would then lose the answer.
async fn linger(mut io: TcpStream, unsent: Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let close = async {
        io.write_all(&unsent).await?;
        io.shutdown().await?;
        let mut scratch = vec![0u8; 16 * 1024];
        let mut read = 0;
        while read < DRAIN_BYTES {
            match io.read(&mut scratch).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(DRAIN_TIME, close).await;
}

/// Where in `buf` an answer of actix-http's own starts: a complete 4xx/5xx head with
/// `content-length: 0` that ends the buffer (the dispatcher closes after it, so it is the
/// last thing written). The application never answers an error without a problem body.
fn protocol_error_at(buf: &[u8]) -> Option<usize> {
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let start = buf.windows(7).rposition(|w| w == b"HTTP/1.")?;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&buf[start..]) {
        Ok(httparse::Status::Complete(len)) if start + len == buf.len() => {}
        _ => return None,
    }
    let error = response.code.is_some_and(|c| c >= 400);
    let empty = response
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("content-length") && h.value == b"0");
    (error && empty).then_some(start)
}

/// The same answer with a problem body (and `connection: close`).
fn rewrite(head: &[u8]) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let _ = response.parse(head);
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    let problem = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ApiError::HeadersTooLarge,
        StatusCode::REQUEST_TIMEOUT => ApiError::HeadTimeout,
        _ => ApiError::MalformedRequest,
    };
    let body = problem.problem_json(status);
    let request_id = super::hygiene::new_id();
    // The client's mistake, not the server's: actix-http's own line for it (level error)
    // is filtered out (see `telemetry::init_logging`); this one is at debug, like every
    // other refusal of a client's request (see `http::auth`).
    tracing::debug!(status = status.as_u16(), request_id = %request_id, "request refused before routing: {problem}");
    // The request's id, like every answer (no request could be read, so a new one).
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: {}\r\nx-content-type-options: nosniff\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len(),
        request_id,
    )
    .into_bytes();
    for h in response
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("date"))
    {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: Fri, 27 Nov 2026 18:59:57 GMT\r\n\r\n";

    #[test]
    fn finds_the_dispatchers_own_error_answers_only() {
        assert_eq!(protocol_error_at(BAD), Some(0));
        let ok = b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}";
        let both = [&ok[..], BAD].concat();
        assert_eq!(protocol_error_at(&both), Some(ok.len()));
        assert_eq!(protocol_error_at(ok), None);
        let no_content = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(protocol_error_at(no_content), None);
        let problem = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n\r\n";
        assert_eq!(
            protocol_error_at(problem),
            None,
            "head of an answer with a body"
        );
        assert_eq!(protocol_error_at(&BAD[..BAD.len() - 2]), None);
    }

    #[test]
    fn rewrites_as_a_problem() {
        let out = String::from_utf8(rewrite(BAD)).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("content-type: application/problem+json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("date: Fri, 27 Nov 2026"));
        assert!(head.contains("x-request-id: "), "{head}");
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 400);
        let large = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let out = String::from_utf8(rewrite(large)).unwrap();
        assert!(out.contains("\"status\":431"), "{out}");
    }
}
