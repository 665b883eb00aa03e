//! Read API: conversations and their messages.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::paging::{PageQuery, Paged};
use crate::http::{ApiError, AppState, Caller};
use crate::store::read::{self, MessageWithBody};

#[derive(Serialize)]
struct ConversationView {
    id: i64,
    channel: String,
    participants: [String; 2],
    message_count: i64,
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

#[derive(Serialize)]
struct MessageView {
    id: i64,
    conversation_id: i64,
    direction: String,
    channel: String,
    from: String,
    to: String,
    subject: Option<String>,
    body: String,
    attachments: serde_json::Value,
    metadata: Option<serde_json::Value>,
    sent_at: DateTime<Utc>,
    status: String,
    provider_message_id: Option<String>,
    idempotency_key: String,
    created_at: DateTime<Utc>,
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

/// Reads are scoped to the caller's customer (admins see all): another customer's
/// conversations are not listed, and asking for one by id is a 404 like an unknown id.
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page()?;
    let (items, total) = read::conversations(&state.db, caller.customer_scope(), page).await?;
    let items = items.into_iter().map(ConversationView::from).collect();
    Ok(HttpResponse::Ok().json(Paged::new(items, page, total)))
}

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
    let (items, total) = read::messages(&state.db, customer, id, page).await?;
    let items = items.into_iter().map(MessageView::from).collect();
    Ok(HttpResponse::Ok().json(Paged::new(items, page, total)))
}
