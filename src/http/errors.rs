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
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("this endpoint answers with application/json; the Accept header admits no JSON")]
    NotAcceptable,
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{0}")]
    Conflict(String),
    #[error("the queue is full; retry later")]
    QueueFull,
    #[error("{0}")]
    Unavailable(String),
    /// Details are logged, never sent.
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    fn problem_type(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Validation(_) => ("validation-failed", "Invalid request"),
            ApiError::MalformedJson(_) => ("malformed-json", "Malformed request body"),
            ApiError::BadQuery(_) => ("invalid-query", "Invalid query parameters"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
            ApiError::NotAcceptable => ("not-acceptable", "Not acceptable"),
            ApiError::PayloadTooLarge(_) => ("payload-too-large", "Payload too large"),
            ApiError::UnsupportedMediaType => ("unsupported-media-type", "Unsupported media type"),
            ApiError::Conflict(_) => ("conflict", "Conflict"),
            ApiError::QueueFull => ("queue-full", "Queue full"),
            ApiError::Unavailable(_) => ("unavailable", "Service unavailable"),
            ApiError::Internal(_) => ("internal", "Internal server error"),
        }
    }

    /// Seconds a client should wait before retrying a 503.
    fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::QueueFull => Some(1),
            ApiError::Unavailable(_) => Some(5),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::MalformedJson(_) | ApiError::BadQuery(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::QueueFull | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ApiError::Internal(details) = self {
            tracing::error!(error = %details, "request failed");
        }
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
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if let Some(seconds) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.body(serde_json::to_string(&body).expect("a problem always serializes"))
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

/// Maps actix-web's JSON extractor errors to problems (413, 415, 400).
pub fn json_error(err: actix_web::error::JsonPayloadError, limit: usize) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::PayloadTooLarge(limit),
        E::ContentType => ApiError::UnsupportedMediaType,
        E::Deserialize(e) => ApiError::MalformedJson(e.to_string()),
        other => ApiError::MalformedJson(other.to_string()),
    }
    .into()
}
