//! Send (outbound) and webhook (inbound) endpoints: validate, enqueue, answer 202.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::body::JsonObject;
use super::status::status_path;
use crate::actors::queue::Enqueue;
use crate::domain::{
    Accept, EmailWebhook, Event, FieldError, IdempotencyKey, IntoEvent, SendEmail, SendSms,
    SmsWebhook,
};
use crate::http::errors::ProblemDoc as Problem;
use crate::http::idempotency::Seen;
use crate::http::{request_trace, ApiError, AppState, Caller};
use crate::store::{self, addresses};
use crate::telemetry;
use tracing::Instrument;

/// The message is queued: it will be stored (and, outbound, sent) by a worker.
#[derive(Serialize, ToSchema)]
#[schema(as = Accepted)]
pub(crate) struct Accepted<'a> {
    status: AcceptedStatus,
    /// The message's idempotency key (hex SHA-256): the client's `Idempotency-Key` scoped
    /// to its customer and route, or derived from the message (SPEC §3.4).
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    idempotency_key: &'a str,
    /// This request's event; a repeat of an accepted request answers the original one's.
    event_id: uuid::Uuid,
    /// The message's status resource (`GET` it to follow the message); also in the
    /// `Location` header.
    #[schema(example = "/api/messages/6f1c…")]
    status_url: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum AcceptedStatus {
    Accepted,
}

/// `Idempotency-Key`: a repeat with the same key and request is accepted again without a
/// second message; the same key with another request is a 422.
#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read from the request by `accept`; this type only documents it
pub(crate) struct IdempotencyKeyHeader {
    /// 1 to 255 printable ASCII characters (spaces inside only), scoped to the customer and
    /// the route. Without it the key is derived from the message.
    // Optional (serde's default) but not nullable: a header is absent or has a value.
    #[serde(rename = "Idempotency-Key", default)]
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]([ -~]*[!-~])?$",
        example = "order-1234-sms"
    )]
    key: String,
}

/// Declares one of the four accepting routes: they differ only in path, body and wording,
/// and share their handler ([`accept`]) and most of their answers. A `send` can find its
/// key in progress; a `webhook` can find its recipient unowned (200) and its provider's
/// message id reused (409).
macro_rules! accept_route {
    ($(#[doc = $doc:literal])* send $name:ident($request:ident) at $path:literal as $operation:literal, body: $body:literal) => {
        accept_route! {
            @route $(#[doc = $doc])* $name($request) at $path as $operation, body: $body,
            queued: "Queued (or a repeat of an accepted request)",
            responses(
                (status = 409, description = "`idempotency-key-in-progress`: an earlier request with this Idempotency-Key is still being accepted; retry after `Retry-After`", body = Problem, content_type = "application/problem+json"),
            )
        }
    };
    ($(#[doc = $doc:literal])* webhook $name:ident($request:ident) at $path:literal as $operation:literal, body: $body:literal) => {
        accept_route! {
            @route $(#[doc = $doc])* $name($request) at $path as $operation, body: $body,
            queued: "Queued for the customer owning `to` (or a repeat of an accepted webhook)",
            responses(
                (status = 200, description = "`to` is an address no customer owns (`/api/addresses`): answered so that the provider does not send it again, stored nowhere", body = Unrouted),
                (status = 409, description = "`conflict`: a message with this provider message id was already received with other content", body = Problem, content_type = "application/problem+json"),
            )
        }
    };
    (
        @route $(#[doc = $doc:literal])*
        $name:ident($request:ident) at $path:literal as $operation:literal,
        body: $body:literal,
        queued: $queued:literal,
        responses($($response:tt)*)
    ) => {
        $(#[doc = $doc])*
        #[utoipa::path(
            post,
            path = $path,
            operation_id = $operation,
            params(IdempotencyKeyHeader),
            request_body(content = ref(concat!("#/components/schemas/", stringify!($request))), content_type = "application/json", description = concat!($body, " Every listed field is checked and all invalid ones are reported at once; unknown fields are ignored.")),
            responses(
                (status = 202, description = $queued, body = Accepted, headers(("Location" = String, description = "The message's status resource, as `status_url`"))),
                (status = 400, description = "`validation-failed` (with `errors`, one per invalid field or header) or `malformed-json`", body = Problem, content_type = "application/problem+json"),
                (status = 422, description = "`idempotency-key-reused`: this Idempotency-Key was used for another request", body = Problem, content_type = "application/problem+json"),
                $($response)*
            ),
        )]
        pub async fn $name(
            state: web::Data<AppState>,
            caller: Caller,
            req: HttpRequest,
            body: web::Json<JsonObject<$request>>,
        ) -> Result<HttpResponse, ApiError> {
            accept(&state, &caller, &req, body.into_inner().into_inner()).await
        }
    };
}

accept_route! {
    /// Send an SMS or MMS
    ///
    /// Validates the message and queues it (202); a worker stores it in its conversation and
    /// hands it to the SMS provider. `type: "mms"` needs 1 to 10 attachments, `sms` none.
    send send_sms(SendSms) at "/api/messages/sms" as "sendSms", body: "The message."
}

accept_route! {
    /// Send an email
    ///
    /// Validates the message and queues it (202); a worker stores it in its conversation and
    /// hands it to the email provider.
    send send_email(SendEmail) at "/api/messages/email" as "sendEmail", body: "The message."
}

accept_route! {
    /// Receive an SMS or MMS (provider webhook)
    ///
    /// An inbound message from the SMS provider, for the customer owning `to` (a body's
    /// `customer_id` does not choose it). `messaging_provider_id` makes it idempotent: the
    /// same webhook delivered twice stores one message.
    webhook sms_webhook(SmsWebhook) at "/api/webhooks/sms" as "receiveSms", body: "The inbound message."
}

accept_route! {
    /// Receive an email (provider webhook)
    ///
    /// An inbound email from the email provider, for the customer owning the domain of `to`
    /// (a body's `customer_id` does not choose it). `xillio_id` makes it idempotent: the same
    /// webhook delivered twice stores one message.
    webhook email_webhook(EmailWebhook) at "/api/webhooks/email" as "receiveEmail", body: "The inbound email."
}

/// The event is in the queue when this answers 202; nothing is enqueued on any error.
async fn accept(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    request: impl IntoEvent,
) -> Result<HttpResponse, ApiError> {
    match enqueue(state, caller, req, request).await? {
        Enqueued::Queued(queued) => Ok(accepted(&queued.idempotency_key, queued.event_id)),
        Enqueued::Unrouted => Ok(HttpResponse::Ok().json(Unrouted {
            status: UnroutedStatus::Unrouted,
        })),
    }
}

/// What became of a request.
pub(super) enum Enqueued {
    Queued(Queued),
    /// An inbound message to an address no customer owns: stored nowhere.
    Unrouted,
}

/// An inbound message no customer owns: answered 200, so that the provider does not send
/// it again, and stored nowhere (counted in `messaging_inbound_unrouted_total`).
#[derive(Serialize, ToSchema)]
pub(crate) struct Unrouted {
    status: UnroutedStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UnroutedStatus {
    Unrouted,
}

/// A request whose event is in the queue (or a repeat of one that is).
pub(super) struct Queued {
    pub idempotency_key: IdempotencyKey,
    pub event_id: uuid::Uuid,
}

/// Validates `request` and puts its event in the queue; nothing is enqueued on any error.
pub(super) async fn enqueue(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    request: impl IntoEvent,
) -> Result<Enqueued, ApiError> {
    let header = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::Validation(vec![FieldError::new(
                "Idempotency-Key",
                "must be 1 to 255 printable ASCII characters",
            )])
        })?),
    };
    // Scoped by the matched route, so `/api/messages/%73ms` is `/api/messages/sms`.
    let route = req.match_pattern();
    let mut ctx = Accept {
        // The customer comes from the key; a body naming another one is refused below.
        default_customer: caller.customer_id,
        inbound_owner: None,
        idempotency_header: header,
        endpoint: route.as_deref().unwrap_or(req.path()),
        now: Utc::now(),
    };
    // An inbound message is its recipient's owner's (SPEC §16), whatever the body's
    // `customer_id` says: the owner is part of its idempotency key.
    let recipient = request.recipient();
    if let Some(address) = &recipient {
        ctx.inbound_owner = addresses::owner(&state.db, address).await?;
    }
    let mut event = request
        .into_event(&ctx)
        .map_err(|errors| ApiError::Validation(errors.0))?;
    if recipient.is_some() && ctx.inbound_owner.is_none() {
        state.metrics.inbound_unrouted.add(1, &[]);
        tracing::warn!(
            to = %event.to,
            channel = event.channel.as_str(),
            provider_message_id = event.provider_message_id.as_deref().unwrap_or(""),
            "inbound message to an address no customer owns; not stored"
        );
        return Ok(Enqueued::Unrouted);
    }
    caller.authorize_customer(event.customer_id)?;
    state.require_customer(event.customer_id).await?;
    // Accepting while nothing can be stored would only grow what an outage holds back.
    if state.writer.health().failing().is_some() {
        return Err(ApiError::Unavailable(
            "the database is not taking writes; retry later".into(),
        ));
    }
    let event_id = event.event_id;
    let idempotency_key = event.idempotency_key.clone();
    // A key the client chose, or one derived from the provider's message id (a webhook):
    // both are checked here, so a reused one is refused now rather than dead-lettered later.
    let derived = header.is_none() && event.provider_message_id.is_some();
    let reserved = match header.is_some() || derived {
        true => match check_header_key(state, &event).await? {
            // A provider's redelivery is enqueued again (the worker finds it stored): its
            // 202 is then backed by this event, not by another request still in flight.
            Seen::Repeat(_) | Seen::InProgress if derived => false,
            // A true repeat: the original answer, nothing enqueued.
            Seen::Repeat(original) => {
                return Ok(Enqueued::Queued(Queued {
                    idempotency_key,
                    event_id: original,
                }))
            }
            Seen::Conflict if derived => return Err(ApiError::Conflict(
                "a message with this provider message id was already received with other content"
                    .into(),
            )),
            Seen::Conflict => return Err(ApiError::IdempotencyKeyReused),
            // The first request has not been answered yet: a 202 now could point at an
            // event that its enqueue then fails to create.
            Seen::InProgress => return Err(ApiError::IdempotencyKeyInProgress),
            Seen::New => true,
        },
        false => false,
    };
    let tracer = &state.metrics.tracer;
    let enqueue = tracer.enqueue(&request_trace(req), &mut event, state.backend.name());
    let span = telemetry::event_span(&event);
    let enqueued = match state
        .queue
        .send(Enqueue(event))
        .instrument(span.clone())
        .await
    {
        Ok(result) => result.map_err(ApiError::from),
        Err(mailbox) => Err(ApiError::from(mailbox)),
    };
    if let Err(err) = enqueued {
        enqueue.fail(&err);
        if reserved {
            state.recent_keys.release(&idempotency_key, event_id);
        }
        return Err(err);
    }
    if reserved {
        state.recent_keys.confirm(&idempotency_key, event_id);
    }
    span.in_scope(|| {
        tracing::debug!(
            endpoint = req.path(),
            idempotency_key = %idempotency_key,
            "event accepted"
        )
    });
    Ok(Enqueued::Queued(Queued {
        idempotency_key,
        event_id,
    }))
}

fn accepted(idempotency_key: &IdempotencyKey, event_id: uuid::Uuid) -> HttpResponse {
    let status_url = status_path(idempotency_key);
    HttpResponse::Accepted()
        .insert_header((header::LOCATION, status_url.clone()))
        .json(Accepted {
            status: AcceptedStatus::Accepted,
            idempotency_key: idempotency_key.as_str(),
            event_id,
            status_url,
        })
}

/// A client's `Idempotency-Key`: this process's recent keys first, then the database (a
/// read). A key stored for another request is a conflict; one stored for the same request
/// is enqueued again, which the worker treats as a duplicate (the original event id is not
/// kept in the database).
async fn check_header_key(state: &AppState, event: &Event) -> Result<Seen, ApiError> {
    let fingerprint = event.request_fingerprint.as_deref().unwrap_or_default();
    let key = &event.idempotency_key;
    let seen = state
        .recent_keys
        .check_and_reserve(key, fingerprint, event.event_id);
    if seen != Seen::New {
        return Ok(seen);
    }
    match store::read::request_fingerprint(&state.db, key.as_str()).await {
        Ok(Some(Some(stored))) if stored != fingerprint => {
            state.recent_keys.release(key, event.event_id);
            Ok(Seen::Conflict)
        }
        Ok(_) => Ok(Seen::New),
        Err(err) => {
            state.recent_keys.release(key, event.event_id);
            Err(err.into())
        }
    }
}
