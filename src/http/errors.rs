//! The one place where errors become HTTP responses: RFC 9457 problem+json.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::dlq::DlqError;
use crate::domain::FieldError;
use crate::queue::QueueError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("the request body is not valid JSON for this endpoint: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    BadQuery(String),
    #[error("{0} not found")]
    NotFound(String),
    /// 401; `challenge` is the `WWW-Authenticate` value telling the client what to send.
    #[error("{detail}")]
    Unauthorized {
        detail: String,
        challenge: &'static str,
    },
    #[error("{0}")]
    Forbidden(String),
    /// 429: `limit` requests at once, the next allowed after `retry_after`.
    #[error("too many requests; retry after {} s", whole_seconds(*retry_after))]
    RateLimited {
        limit: u32,
        retry_after: std::time::Duration,
    },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("this endpoint answers with application/json; the Accept header admits no JSON")]
    NotAcceptable,
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the request body must not be compressed (Content-Encoding: identity only)")]
    UnsupportedEncoding,
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// Answered at the connection level (src/http/connection.rs): the head is not HTTP/1.1.
    #[error("the request is not valid HTTP/1.1: a header has a character that is not allowed (such as a control character) or the framing is invalid")]
    MalformedRequest,
    #[error("the request head (request line and headers) is too large")]
    HeadersTooLarge,
    #[error("the request head did not arrive in time")]
    HeadTimeout,
    #[error("{0}")]
    Conflict(String),
    #[error("this Idempotency-Key was already used for a different request; use a new key for a new message")]
    IdempotencyKeyReused,
    #[error("an earlier request with this Idempotency-Key is still being accepted; retry shortly for its answer")]
    IdempotencyKeyInProgress,
    #[error("the queue is full; retry later")]
    QueueFull,
    #[error("{0}")]
    Unavailable(String),
    /// Details are logged, never sent.
    #[error("internal error")]
    Internal(String),
}

/// An error (RFC 9457 problem details), answered as `application/problem+json`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub(crate) struct Problem<'a> {
    /// `urn:messaging-server:problem:<slug>`; one slug per kind of error (see each
    /// response's description).
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^urn:messaging-server:problem:[a-z-]+$",
             example = "urn:messaging-server:problem:validation-failed")]
    kind: &'a str,
    /// A short, fixed summary of the kind of error.
    #[schema(value_type = String, example = "Invalid request")]
    title: &'a str,
    /// The HTTP status code of the answer.
    #[schema(minimum = 400, maximum = 599, example = 400)]
    status: u16,
    /// What went wrong with this request, for a person to read.
    #[schema(example = "the request has invalid fields")]
    detail: String,
    /// Validation failures only (`validation-failed`): every invalid field at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<FieldError>>, nullable = false, min_items = 1)]
    errors: Option<&'a [FieldError]>,
}

/// The problem document's schema, for `#[utoipa::path]` responses (`body = Problem`).
pub(crate) type ProblemDoc = Problem<'static>;

impl ApiError {
    /// The problem's `type` slug and `title`.
    pub(crate) fn problem_type(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Validation(_) => ("validation-failed", "Invalid request"),
            ApiError::MalformedJson(_) => ("malformed-json", "Malformed request body"),
            ApiError::BadQuery(_) => ("invalid-query", "Invalid query parameters"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::Unauthorized { .. } => ("unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => ("forbidden", "Forbidden"),
            ApiError::RateLimited { .. } => ("rate-limited", "Too many requests"),
            ApiError::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
            ApiError::NotAcceptable => ("not-acceptable", "Not acceptable"),
            ApiError::PayloadTooLarge(_) => ("payload-too-large", "Payload too large"),
            ApiError::UnsupportedMediaType => ("unsupported-media-type", "Unsupported media type"),
            ApiError::UnsupportedEncoding => {
                ("unsupported-encoding", "Unsupported content encoding")
            }
            ApiError::BodyTimeout(_) => ("request-timeout", "Request body timeout"),
            ApiError::MalformedRequest => ("malformed-request", "Malformed request"),
            ApiError::HeadersTooLarge => (
                "request-header-fields-too-large",
                "Request header fields too large",
            ),
            ApiError::HeadTimeout => ("request-timeout", "Request timeout"),
            ApiError::Conflict(_) => ("conflict", "Conflict"),
            ApiError::IdempotencyKeyReused => ("idempotency-key-reused", "Idempotency key reused"),
            ApiError::IdempotencyKeyInProgress => {
                ("idempotency-key-in-progress", "Idempotency key in progress")
            }
            ApiError::QueueFull => ("queue-full", "Queue full"),
            ApiError::Unavailable(_) => ("unavailable", "Service unavailable"),
            ApiError::Internal(_) => ("internal", "Internal server error"),
        }
    }

    /// Seconds a client should wait before retrying a 503 or a 429.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::QueueFull | ApiError::IdempotencyKeyInProgress => Some(1),
            ApiError::Unavailable(_) => Some(5),
            ApiError::RateLimited { retry_after, .. } => Some(whole_seconds(*retry_after)),
            _ => None,
        }
    }
}

impl ApiError {
    /// The RFC 9457 document for this error, answered with `status`.
    pub fn problem_json(&self, status: StatusCode) -> String {
        let (slug, title) = self.problem_type();
        let kind = format!("urn:messaging-server:problem:{slug}");
        let body = Problem {
            kind: &kind,
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match self {
                ApiError::Validation(errors) => Some(errors),
                _ => None,
            },
        };
        serde_json::to_string(&body).expect("a problem always serializes")
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::MalformedJson(_) | ApiError::BadQuery(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType | ApiError::UnsupportedEncoding => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::BodyTimeout(_) | ApiError::HeadTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::MalformedRequest => StatusCode::BAD_REQUEST,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Conflict(_) | ApiError::IdempotencyKeyInProgress => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::QueueFull | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ApiError::Internal(details) = self {
            tracing::error!(error = %details, "request failed");
        }
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if let Some(seconds) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        match self {
            ApiError::Unauthorized { challenge, .. } => {
                response.insert_header((header::WWW_AUTHENTICATE, *challenge));
            }
            ApiError::RateLimited { limit, retry_after } => {
                let reset = whole_seconds(*retry_after).to_string();
                response.insert_header(("RateLimit-Limit", limit.to_string()));
                response.insert_header(("RateLimit-Remaining", "0"));
                response.insert_header(("RateLimit-Reset", reset));
            }
            // RFC 9110 §15.5.16: say which coding is acceptable.
            ApiError::UnsupportedEncoding => {
                response.insert_header((header::ACCEPT_ENCODING, "identity"));
            }
            // The rest of the body may never come: do not wait for it on this connection.
            ApiError::BodyTimeout(_) => {
                response.force_close();
            }
            _ => {}
        }
        response.body(self.problem_json(status))
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable("the database is unavailable".into())
            }
            StoreError::Rejected(e) | StoreError::SchemaBehind(e) => ApiError::Internal(e),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Full { .. } => ApiError::QueueFull,
            QueueError::Refused(e) => {
                tracing::warn!(error = %e, "queue refused an event");
                ApiError::QueueFull
            }
            QueueError::Closed => ApiError::Unavailable("the service is shutting down".into()),
            QueueError::Unavailable(e) => {
                tracing::warn!(error = %e, "queue backend unavailable");
                ApiError::Unavailable("the queue backend is unavailable".into())
            }
        }
    }
}

impl From<DlqError> for ApiError {
    fn from(err: DlqError) -> Self {
        match err {
            DlqError::NotFound(id) => ApiError::NotFound(format!("dead letter {id}")),
            DlqError::AlreadyReplayed(_) => ApiError::Conflict(err.to_string()),
            DlqError::Unreadable(..) => ApiError::Conflict(err.to_string()),
            DlqError::Store(e) => e.into(),
            DlqError::Queue(e) => e.into(),
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(err: actix::MailboxError) -> Self {
        tracing::error!(error = %err, "actor unavailable");
        ApiError::Unavailable("the service is shutting down".into())
    }
}

/// Seconds for Retry-After and RateLimit-Reset: rounded up, at least 1 (0 invites a
/// client to retry at once and be refused again).
fn whole_seconds(d: std::time::Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// Maps actix-web's JSON extractor errors to problems (413, 415, 408, 400).
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    limit: usize,
    body_timeout: Option<std::time::Duration>,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::PayloadTooLarge(limit),
        E::ContentType => ApiError::UnsupportedMediaType,
        E::Payload(e) if crate::http::limits::is_body_timeout(&e) => {
            ApiError::BodyTimeout(body_timeout.map_or(0, |t| t.as_secs()))
        }
        E::Deserialize(e) => ApiError::MalformedJson(e.to_string()),
        other => ApiError::MalformedJson(other.to_string()),
    }
    .into()
}
