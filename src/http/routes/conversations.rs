//! Read API: conversations and their messages.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::schema::Object;
use utoipa::ToSchema;

use super::paging::{PageQuery, Paged};
use crate::domain::{Channel, Direction};
use crate::http::errors::ProblemDoc as Problem;
use crate::http::openapi::string_enum;
use crate::http::{ApiError, AppState, Caller};
use crate::store::read::{self, MessageWithBody};
use crate::store::status::MessageStatus;

/// The messages between two addresses on one channel family, for one customer.
#[derive(Serialize, ToSchema)]
#[schema(as = Conversation)]
pub(crate) struct ConversationView {
    id: i64,
    #[schema(schema_with = conversation_channel)]
    channel: String,
    /// The two normalized addresses, sorted.
    #[schema(min_items = 2, max_items = 2)]
    participants: [String; 2],
    #[schema(minimum = 0)]
    message_count: i64,
    /// When the latest message was sent; null before the first is stored.
    last_message_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<entity::conversations::Model> for ConversationView {
    fn from(c: entity::conversations::Model) -> Self {
        ConversationView {
            id: c.id,
            channel: c.channel,
            participants: [c.participant_a, c.participant_b],
            message_count: c.message_count,
            last_message_at: c.last_message_at,
            created_at: c.created_at,
        }
    }
}

/// A stored message.
#[derive(Serialize, ToSchema)]
#[schema(as = Message)]
pub(crate) struct MessageView {
    id: i64,
    conversation_id: i64,
    #[schema(schema_with = direction)]
    direction: String,
    #[schema(schema_with = message_channel)]
    channel: String,
    from: String,
    to: String,
    /// Email only; null otherwise.
    subject: Option<String>,
    body: String,
    /// Attachment URLs.
    #[schema(value_type = Vec<String>)]
    attachments: serde_json::Value,
    /// The `metadata` object sent with the message, or null.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    sent_at: DateTime<Utc>,
    #[schema(schema_with = message_status)]
    status: String,
    /// The provider's id: from the provider once sent, or the webhook's id for inbound.
    provider_message_id: Option<String>,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    idempotency_key: String,
    created_at: DateTime<Utc>,
}

// The values the stored strings take (their enums in `domain` and `store`).
fn conversation_channel() -> Object {
    // A conversation's channel is the family: sms and mms share conversations.
    string_enum(
        "Channel",
        [Channel::Sms.family(), Channel::Email.family()],
        "`sms` (SMS and MMS) or `email`.",
    )
}

fn message_channel() -> Object {
    string_enum(
        "Channel",
        Channel::ALL.map(Channel::as_str),
        "`sms`, `mms` (an SMS with attachments) or `email`.",
    )
}

fn direction() -> Object {
    string_enum(
        "Direction",
        Direction::ALL.map(Direction::as_str),
        "`outbound` (sent through the API) or `inbound` (received by a webhook).",
    )
}

fn message_status() -> Object {
    string_enum(
        "StoredStatus",
        MessageStatus::ALL.map(MessageStatus::as_str),
        "`queued` (stored, not handed to the provider yet), `sent`, `failed` (dead-lettered) or `received` (inbound).",
    )
}

impl From<MessageWithBody> for MessageView {
    fn from(MessageWithBody { message: m, body }: MessageWithBody) -> Self {
        MessageView {
            id: m.id,
            conversation_id: m.conversation_id,
            direction: m.direction,
            channel: m.channel,
            from: m.from_address,
            to: m.to_address,
            subject: m.subject,
            body,
            attachments: m.attachments,
            metadata: m.metadata,
            sent_at: m.sent_at,
            status: m.status,
            provider_message_id: m.provider_message_id,
            idempotency_key: m.idempotency_key,
            created_at: m.created_at,
        }
    }
}

/// List conversations
///
/// Most recent activity first. A key sees its own customer's conversations; an admin key
/// sees every customer's.
#[utoipa::path(
    get,
    path = "/api/conversations",
    operation_id = "listConversations",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of conversations", body = Paged<ConversationView>),
        (status = 400, description = "`invalid-query`: page or pageSize is not a whole number, or page is 0 or too large", body = Problem, content_type = "application/problem+json"),
    ),
)]
// Reads are scoped to the caller's customer (admins see all): another customer's
// conversations are not listed, and asking for one by id is a 404 like an unknown id.
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page()?;
    let rows = read::conversations(&state.db, caller.customer_scope(), page).await?;
    Ok(Paged::<ConversationView>::answer(rows, page))
}

/// One conversation
#[utoipa::path(
    get,
    path = "/api/conversations/{id}",
    operation_id = "getConversation",
    params(("id" = i64, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The conversation", body = ConversationView),
        (status = 400, description = "`invalid-query`: the id is not a whole number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such conversation for this key's customer", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let conversation = read::conversation(&state.db, caller.customer_scope(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("conversation {id}")))?;
    Ok(HttpResponse::Ok().json(ConversationView::from(conversation)))
}

/// A conversation's messages
///
/// Oldest first (by `sent_at`, then `id`).
#[utoipa::path(
    get,
    path = "/api/conversations/{id}/messages",
    operation_id = "listConversationMessages",
    params(("id" = i64, Path, description = "The conversation's id"), PageQuery),
    responses(
        (status = 200, description = "One page of the conversation's messages", body = Paged<MessageView>),
        (status = 400, description = "`invalid-query`: the id, page or pageSize is not a whole number, or page is 0 or too large", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such conversation for this key's customer", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn messages(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<i64>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let page = query.page()?;
    let customer = caller.customer_scope();
    if read::conversation(&state.db, customer, id).await?.is_none() {
        return Err(ApiError::NotFound(format!("conversation {id}")));
    }
    let rows = read::messages(&state.db, customer, id, page).await?;
    Ok(Paged::<MessageView>::answer(rows, page))
}
