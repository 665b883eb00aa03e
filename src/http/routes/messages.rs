//! Send (outbound) and webhook (inbound) endpoints: validate, enqueue, answer 202.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Serialize;

use crate::actors::queue::Enqueue;
use crate::domain::{Accept, EmailWebhook, FieldError, IntoEvent, SendEmail, SendSms, SmsWebhook};
use crate::http::{request_trace, ApiError, AppState, Caller};
use crate::telemetry;
use tracing::Instrument;

#[derive(Serialize)]
struct Accepted<'a> {
    status: &'static str,
    idempotency_key: &'a str,
    event_id: uuid::Uuid,
}

pub async fn send_sms(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: web::Json<SendSms>,
) -> Result<HttpResponse, ApiError> {
    accept(&state, &caller, &req, body.into_inner()).await
}

pub async fn send_email(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: web::Json<SendEmail>,
) -> Result<HttpResponse, ApiError> {
    accept(&state, &caller, &req, body.into_inner()).await
}

pub async fn sms_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: web::Json<SmsWebhook>,
) -> Result<HttpResponse, ApiError> {
    accept(&state, &caller, &req, body.into_inner()).await
}

pub async fn email_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: web::Json<EmailWebhook>,
) -> Result<HttpResponse, ApiError> {
    accept(&state, &caller, &req, body.into_inner()).await
}

/// The event is in the queue when this answers 202; nothing is enqueued on any error.
async fn accept(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    request: impl IntoEvent,
) -> Result<HttpResponse, ApiError> {
    let header = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::Validation(vec![FieldError::new(
                "Idempotency-Key",
                "must be 1 to 255 printable ASCII characters",
            )])
        })?),
    };
    let ctx = Accept {
        // The customer comes from the key; a body naming another one is refused below.
        default_customer: caller.customer_id,
        idempotency_header: header,
        endpoint: req.path(),
        now: Utc::now(),
    };
    let mut event = request
        .into_event(&ctx)
        .map_err(|errors| ApiError::Validation(errors.0))?;
    caller.authorize_customer(event.customer_id)?;
    state.require_customer(event.customer_id).await?;
    let tracer = &state.metrics.tracer;
    let enqueue = tracer.enqueue(&request_trace(req), &mut event, state.backend.name());
    let event_id = event.event_id;
    let idempotency_key = event.idempotency_key.clone();
    let span = telemetry::event_span(&event);
    let enqueued = state
        .queue
        .send(Enqueue(event))
        .instrument(span.clone())
        .await?;
    if let Err(refused) = &enqueued {
        enqueue.fail(refused);
    }
    enqueue.end();
    enqueued?;
    span.in_scope(|| {
        tracing::debug!(
            endpoint = req.path(),
            idempotency_key = %idempotency_key,
            "event accepted"
        )
    });
    Ok(HttpResponse::Accepted().json(Accepted {
        status: "accepted",
        idempotency_key: idempotency_key.as_str(),
        event_id,
    }))
}
