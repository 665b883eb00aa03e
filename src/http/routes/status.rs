//! The status resource (SPEC §12): `GET /api/messages/{idempotency_key}`, where every 202
//! points (`Location`, `status_url`).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{ErrorCode, IdempotencyKey};
use crate::http::errors::ProblemDoc as Problem;
use crate::http::{ApiError, AppState, Caller};
use crate::store::progress::{self, Progress, Queued, Resolved};

/// Where the status of the message accepted under `key` is read.
pub fn status_path(key: &IdempotencyKey) -> String {
    format!("/api/messages/{}", key.as_str())
}

/// What became of an accepted message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = MessageStatus)]
pub struct MessageStatusView {
    #[schema(inline)]
    pub status: Progress,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub idempotency_key: String,
    /// Processing attempts so far: the failed ones, plus the one that stored the message.
    pub attempts: u32,
    /// Why, while the status is `failed`, `dead_lettered` or `undelivered`: a stable code.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = error_code, required = false)]
    pub error_code: Option<&'static str>,
    /// The code's short public message (the carrier's error code when `undelivered`).
    /// The raw error is for operators (dead letters, logs).
    pub last_error: Option<String>,
    /// Once stored.
    pub message_id: Option<i64>,
    pub conversation_id: Option<i64>,
    /// Once sent.
    pub provider_message_id: Option<String>,
    /// Once sent: which provider accepted it, the channel's own (its kind: `mock`, `http`,
    /// `twilio`, `smtp`) or `fallback` (`providers.<channel>.fallback_url`, while the
    /// channel's provider was failing).
    #[schema(examples("twilio", "fallback"))]
    pub provider: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// While `failed` with a retry to follow: when the next delivery attempt is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl MessageStatusView {
    pub fn new(idempotency_key: String, r: Resolved) -> Self {
        MessageStatusView {
            status: r.status,
            idempotency_key,
            attempts: r.attempts,
            error_code: r.error_code.map(ErrorCode::as_str),
            last_error: r.last_error,
            message_id: r.message_id,
            conversation_id: r.conversation_id,
            provider_message_id: r.provider_message_id,
            provider: r.provider,
            updated_at: r.updated_at,
            next_attempt_at: r.next_attempt_at,
        }
    }
}

fn error_code() -> utoipa::openapi::schema::Object {
    crate::http::openapi::string_enum(
        "ErrorCode",
        ErrorCode::ALL.map(ErrorCode::as_str),
        "Why the message failed, for the customer: `provider_rejected`, `provider_unavailable`, `invalid_recipient`, `timeout`, `invalid_message`, `idempotency_key_reused`, `storage_unavailable`, `undelivered` (the carrier's receipt), `internal_error`.",
    )
}

/// A message's status
///
/// Where every 202 points (`Location`, `status_url`): what became of the message accepted
/// under this idempotency key. Scoped like the read API: another customer's message is a
/// 404, as an unknown key is; admin keys see every customer's.
#[utoipa::path(
    get,
    path = "/api/messages/{idempotency_key}",
    operation_id = "getMessageStatus",
    params(("idempotency_key" = String, Path, pattern = "^[0-9a-f]{64}$", description = "The `idempotency_key` a 202 answered (64 lower-case hex digits)")),
    responses(
        (status = 200, description = "The message's status", body = MessageStatusView),
        (status = 404, description = "`not-found`: no message accepted under this key for this customer (or not a key at all)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = IdempotencyKey::from_stored(key.into_inner());
    let not_found = || ApiError::NotFound("message with this idempotency key".into());
    // Every key is 64 lower-case hex digits; anything else names nothing.
    if !key.is_well_formed() {
        return Err(not_found());
    }
    let customer = caller.customer_scope();
    let mut facts = progress::facts(&state.db, key.as_str(), customer).await?;
    let mut queued = None;
    if !facts.settled() {
        queued = state
            .backend
            .find_queued(&key)
            .await?
            .filter(|q| customer.is_none() || q.customer_id == customer)
            .map(|q| Queued {
                accepted_at: q.accepted_at,
            });
        if queued.is_none() {
            // Workers commit before they settle: an event gone from the queue since the
            // first read is in the database now.
            facts = progress::facts(&state.db, key.as_str(), customer).await?;
        }
    }
    let resolved = progress::resolve(&facts, queued).ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(MessageStatusView::new(key.as_str().to_string(), resolved)))
}
