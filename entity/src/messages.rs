//! `messages`: individual inbound/outbound messages.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub conversation_id: i64,
    pub customer_id: Uuid,
    /// `"inbound"` or `"outbound"`.
    pub direction: String,
    /// `"sms"`, `"mms"` or `"email"`.
    pub channel: String,
    pub from_address: String,
    pub to_address: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub subject: Option<String>,
    pub body_id: i64,
    /// JSON array of attachment URL strings.
    #[sea_orm(column_type = "JsonBinary")]
    pub attachments: Json,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub metadata: Option<Json>,
    pub sent_at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    /// `"queued"`, `"sent"`, `"delivered"`, `"undelivered"`, `"failed"` or `"received"`.
    pub status: String,
    pub provider_message_id: Option<String>,
    /// Unique (`ux_messages_idempotency_key`).
    #[sea_orm(unique)]
    pub idempotency_key: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Hash of the request the message was accepted from; null for messages stored before
    /// fingerprints existed.
    pub request_fingerprint: Option<String>,
    /// Outbound and `queued`: when a sender may next claim it (the delivery stage).
    pub next_attempt_at: Option<DateTimeUtc>,
    /// The claim of the sender holding it, until `lease_until`; only that sender settles it.
    pub lease_until: Option<DateTimeUtc>,
    pub lease_token: Option<String>,
    /// Provider attempts so far (claims), reset by a dead-letter replay.
    pub delivery_attempts: i32,
    /// The W3C trace context the message was enqueued in (tracing on), for its delivery.
    pub traceparent: Option<String>,
    /// Once sent: which provider accepted it, the channel's (its kind, e.g. `"twilio"`) or
    /// `"fallback"`.
    pub sent_by: Option<String>,
    /// `undelivered`: the provider's error from its delivery receipt.
    pub delivery_error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::conversations::Entity",
        from = "Column::ConversationId",
        to = "super::conversations::Column::Id"
    )]
    Conversation,
    #[sea_orm(
        belongs_to = "super::message_bodies::Entity",
        from = "Column::BodyId",
        to = "super::message_bodies::Column::Id"
    )]
    MessageBody,
}

impl Related<super::conversations::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Conversation.def()
    }
}

impl Related<super::message_bodies::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::MessageBody.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
