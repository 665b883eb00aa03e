//! Outbound messages stored but never handed to their provider: their event was lost (a
//! process killed with the memory queue holding it) between the commit and `queued → sent`.
//!
//! A sweep claims such messages with a conditional update of `updated_at`: of several
//! processes sweeping at once, exactly one moves a given row (the others' condition no
//! longer holds once it committed), and a claimed message looks fresh to every sweep for
//! another `worker.redrive_after`. The claimed messages are rebuilt as events for the queue.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{message_bodies, messages};
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityName, EntityTrait};
use sea_orm::{QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::status::MessageStatus;
use super::StoreError;
use crate::domain::{Channel, Direction, Event, IdempotencyKey, SCHEMA_VERSION};

/// Claims up to `limit` outbound messages `queued` since before `stale_before` (oldest
/// first) and returns them as events, as a first attempt accepted now.
pub async fn claim_stale(
    db: &DatabaseConnection,
    stale_before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Event>, StoreError> {
    use messages::Column;
    let stale = || {
        messages::Entity::find()
            .filter(Column::Status.eq(MessageStatus::Queued.as_str()))
            .filter(Column::Direction.eq(Direction::Outbound.as_str()))
            .filter(Column::UpdatedAt.lt(stale_before))
    };
    let candidates: Vec<i64> = stale()
        .select_only()
        .column(Column::Id)
        .order_by_asc(Column::UpdatedAt)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let claim = Query::update()
        .table(messages::Entity.table_ref())
        .value(Column::UpdatedAt, Utc::now())
        .and_where(Column::Id.is_in(candidates))
        .and_where(Column::Status.eq(MessageStatus::Queued.as_str()))
        .and_where(Column::UpdatedAt.lt(stale_before))
        .returning(Query::returning().column(Column::Id))
        .to_owned();
    let mut claimed = Vec::new();
    for row in db.query_all(&claim).await? {
        claimed.push(row.try_get::<i64>("", "id")?);
    }
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let rows = messages::Entity::find()
        .filter(Column::Id.is_in(claimed))
        .order_by_asc(Column::Id)
        .all(db)
        .await?;
    let body_ids: Vec<i64> = rows.iter().map(|m| m.body_id).collect();
    let bodies: HashMap<i64, String> = message_bodies::Entity::find()
        .filter(message_bodies::Column::Id.is_in(body_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|b| (b.id, b.body))
        .collect();
    rows.into_iter()
        .map(|m| {
            let body = bodies.get(&m.body_id).cloned().unwrap_or_default();
            event_of(m, body)
        })
        .collect()
}

/// The event a stored outbound message came from, as a first attempt accepted now.
fn event_of(m: messages::Model, body: String) -> Result<Event, StoreError> {
    let unreadable = |what: &str| StoreError::Rejected(format!("message {}: {what}", m.id));
    let channel: Channel = m.channel.parse().map_err(|e: String| unreadable(&e))?;
    let attachments: Vec<String> =
        serde_json::from_value(m.attachments.clone()).map_err(|e| unreadable(&e.to_string()))?;
    Ok(Event {
        schema_version: SCHEMA_VERSION,
        event_id: Uuid::new_v4(),
        direction: Direction::Outbound,
        channel,
        customer_id: m.customer_id,
        from: m.from_address,
        to: m.to_address,
        subject: m.subject,
        body,
        attachments,
        sent_at: m.sent_at,
        idempotency_key: IdempotencyKey::from_stored(m.idempotency_key),
        provider_message_id: m.provider_message_id,
        metadata: m.metadata,
        accepted_at: Utc::now(),
        attempt: 0,
        request_fingerprint: m.request_fingerprint,
        traceparent: None,
    })
}
