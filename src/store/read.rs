//! Queries behind the read API.

use std::collections::HashMap;

use entity::{conversations, message_bodies, messages};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Select,
};
use uuid::Uuid;

use super::StoreError;

/// A page request: `page` counts from 1.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: u64,
    pub size: u64,
}

impl Page {
    /// Clamped to what the databases take (a signed 64-bit offset): the HTTP layer refuses
    /// larger pages, and here a page past the end is simply empty instead of a panic.
    pub(crate) fn offset(&self) -> u64 {
        (self.page.max(1) - 1)
            .saturating_mul(self.size)
            .min(i64::MAX as u64)
    }

    /// This page of `query`, in the order `order` gives it, and how many rows `query`
    /// matches in all: every paged list of the API is read this way.
    pub(crate) async fn fetch<E, C>(
        &self,
        db: &C,
        query: Select<E>,
        order: impl FnOnce(Select<E>) -> Select<E>,
    ) -> Result<(Vec<E::Model>, u64), StoreError>
    where
        E: EntityTrait,
        E::Model: Sync,
        C: ConnectionTrait,
    {
        let total = query.clone().count(db).await?;
        let items = order(query)
            .offset(self.offset())
            .limit(self.size)
            .all(db)
            .await?;
        Ok((items, total))
    }
}

/// Narrows `query` to `customer`'s rows when one is given (`None`: every customer's, for an
/// operator): how every customer-scoped read is limited.
pub(crate) fn of_customer<E: EntityTrait>(
    query: Select<E>,
    column: E::Column,
    customer: Option<Uuid>,
) -> Select<E> {
    query.apply_if(customer, |q, c| q.filter(column.eq(c)))
}

/// The bodies with these ids, by id: messages share their (de-duplicated) bodies.
pub(crate) async fn bodies<C: ConnectionTrait>(
    db: &C,
    ids: Vec<i64>,
) -> Result<HashMap<i64, String>, StoreError> {
    Ok(message_bodies::Entity::find()
        .filter(message_bodies::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|b| (b.id, b.body))
        .collect())
}

pub struct MessageWithBody {
    pub message: messages::Model,
    pub body: String,
}

/// Conversations, most recent activity first; `customer` limits them to one customer
/// (`None`: every customer's).
pub async fn conversations(
    db: &DatabaseConnection,
    customer: Option<Uuid>,
    page: Page,
) -> Result<(Vec<conversations::Model>, u64), StoreError> {
    use conversations::Column;
    let scoped = of_customer(conversations::Entity::find(), Column::CustomerId, customer);
    page.fetch(db, scoped, |q| {
        q.order_by_desc(Column::LastMessageAt)
            .order_by_desc(Column::Id)
    })
    .await
}

/// One conversation, if it exists and belongs to `customer` (when given).
pub async fn conversation(
    db: &DatabaseConnection,
    customer: Option<Uuid>,
    id: i64,
) -> Result<Option<conversations::Model>, StoreError> {
    let found = conversations::Entity::find_by_id(id);
    Ok(
        of_customer(found, conversations::Column::CustomerId, customer)
            .one(db)
            .await?,
    )
}

/// A conversation's messages, oldest first, with their bodies; only `customer`'s (when
/// given), which every message of a conversation of theirs is.
pub async fn messages(
    db: &DatabaseConnection,
    customer: Option<Uuid>,
    conversation_id: i64,
    page: Page,
) -> Result<(Vec<MessageWithBody>, u64), StoreError> {
    use messages::Column;
    let in_conversation =
        messages::Entity::find().filter(Column::ConversationId.eq(conversation_id));
    let in_conversation = of_customer(in_conversation, Column::CustomerId, customer);
    let (items, total) = page
        .fetch(db, in_conversation, |q| {
            q.order_by_asc(Column::SentAt).order_by_asc(Column::Id)
        })
        .await?;
    let body_ids: Vec<i64> = items.iter().map(|m| m.body_id).collect();
    let bodies = bodies(db, body_ids).await?;
    let items = items
        .into_iter()
        .map(|message| MessageWithBody {
            // Bodies are shared between messages (de-duplicated), so look up, don't take.
            body: bodies.get(&message.body_id).cloned().unwrap_or_default(),
            message,
        })
        .collect();
    Ok((items, total))
}

/// Whether a customer exists (requests may name one).
pub async fn customer_exists(db: &DatabaseConnection, id: uuid::Uuid) -> Result<bool, StoreError> {
    Ok(entity::customers::Entity::find_by_id(id)
        .one(db)
        .await?
        .is_some())
}

/// The request fingerprint stored with the message of this idempotency key: `None` when no
/// message has the key, `Some(None)` for a message stored before fingerprints existed.
pub async fn request_fingerprint(
    db: &DatabaseConnection,
    idempotency_key: &str,
) -> Result<Option<Option<String>>, StoreError> {
    use messages::Column;
    let found: Option<Option<String>> = messages::Entity::find()
        .select_only()
        .column(Column::RequestFingerprint)
        .filter(Column::IdempotencyKey.eq(idempotency_key))
        .into_tuple()
        .one(db)
        .await?;
    Ok(found)
}
