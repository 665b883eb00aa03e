//! The `dead_letters` table.

use chrono::{DateTime, Utc};
use entity::dead_letters::{self, ActiveModel, Column, Entity, Model};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::read::Page;
use super::status::{self, MessageStatus, Which};
use super::{writer, StoreError};
use crate::domain::Event;

/// A failure to park.
pub struct NewDeadLetter<'a> {
    pub event: &'a Event,
    pub attempts: u32,
    pub last_error: &'a str,
    pub error_kind: &'a str,
}

/// The key under which the encoded form of an event is kept (see [`insert_encoded`]).
pub const ENCODED_EVENT: &str = "event_json_hex";

/// Stores the dead letter and marks its message `failed`, atomically.
pub async fn insert(db: &DatabaseConnection, new: NewDeadLetter<'_>) -> Result<Model, StoreError> {
    let event = serde_json::to_value(new.event)
        .map_err(|e| StoreError::Rejected(format!("event cannot be encoded: {e}")))?;
    let row = row(event, new.event.idempotency_key.as_str().to_string(), &new);
    let txn = writer::begin_write(db).await?;
    let model = Entity::insert(row).exec_with_returning(&txn).await?;
    status::transition(
        &txn,
        Which::OfEvent(new.event),
        MessageStatus::Queued,
        MessageStatus::Failed,
    )
    .await?;
    txn.commit().await?;
    Ok(model)
}

/// The last resort when the database refuses [`insert`] as permanent (data it cannot
/// store, such as a NUL character on PostgreSQL): the event is kept as the hex of its JSON
/// (`{"event_json_hex": …}`, which every database stores), with its key and error made
/// printable. Its message is then marked `failed` if it can be.
pub async fn insert_encoded(
    db: &DatabaseConnection,
    new: NewDeadLetter<'_>,
) -> Result<Model, StoreError> {
    let json = serde_json::to_vec(new.event)
        .map_err(|e| StoreError::Rejected(format!("event cannot be encoded: {e}")))?;
    let event = serde_json::json!({ ENCODED_EVENT: hex::encode(json) });
    let key = new.event.idempotency_key.as_str();
    let storable_key = is_storable(key);
    let model = Entity::insert(row(event, stored_key(key), &new))
        .exec_with_returning(db)
        .await?;
    if storable_key {
        if let Err(err) = status::transition(
            db,
            Which::OfEvent(new.event),
            MessageStatus::Queued,
            MessageStatus::Failed,
        )
        .await
        {
            tracing::warn!(dead_letter_id = model.id, error = %err, "cannot mark the message of an encoded dead letter failed");
        }
    }
    Ok(model)
}

/// The event a dead letter holds, in either form ([`insert`] or [`insert_encoded`]).
pub fn event_of(row: &Model) -> Result<Event, String> {
    let value = match row.event.get(ENCODED_EVENT).and_then(|v| v.as_str()) {
        Some(hex_json) => {
            let bytes = hex::decode(hex_json).map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())?
        }
        None => row.event.clone(),
    };
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn row(event: serde_json::Value, key: String, new: &NewDeadLetter<'_>) -> ActiveModel {
    let now = Utc::now();
    ActiveModel {
        id: NotSet,
        event: Set(event),
        idempotency_key: Set(key),
        attempts: Set(i32::try_from(new.attempts).unwrap_or(i32::MAX)),
        first_attempt_at: Set(new.event.accepted_at),
        last_attempt_at: Set(now),
        last_error: Set(printable(new.last_error)),
        error_kind: Set(new.error_kind.to_string()),
        dead_at: Set(now),
        replayed_at: Set(None),
    }
}

/// Text every database stores as it is: no control characters besides tab and newlines.
fn is_storable(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// A key as stored: as it is, or hex-encoded (`x…`) when it holds control characters.
fn stored_key(key: &str) -> String {
    if is_storable(key) {
        key.to_string()
    } else {
        format!("x{}", hex::encode(key))
    }
}

/// An error text made storable: control characters (a provider's answer may hold any)
/// become U+FFFD.
fn printable(text: &str) -> String {
    if is_storable(text) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && !matches!(c, '\t' | '\n' | '\r') {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// Stores a queue message that is not an event, as it came (JSON if it is JSON, else its
/// text), so an operator can look at it. There is no message row to mark `failed`.
pub async fn insert_undecodable(
    db: &DatabaseConnection,
    key: &str,
    payload: &[u8],
    attempts: u32,
    published_at: DateTime<Utc>,
    error: &str,
) -> Result<Model, StoreError> {
    let now = Utc::now();
    let kept = serde_json::from_slice::<serde_json::Value>(payload).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
    });
    let mut event = serde_json::json!({ "undecodable_payload": kept });
    // PostgreSQL's jsonb refuses NUL characters: keep such a payload as hex instead.
    if event.to_string().contains("\\u0000") {
        event = serde_json::json!({ "undecodable_payload_hex": hex::encode(payload) });
    }
    let row = ActiveModel {
        id: NotSet,
        event: Set(event),
        idempotency_key: Set(stored_key(key)),
        attempts: Set(i32::try_from(attempts).unwrap_or(i32::MAX)),
        first_attempt_at: Set(published_at),
        last_attempt_at: Set(now),
        last_error: Set(printable(error)),
        error_kind: Set("permanent".to_string()),
        dead_at: Set(now),
        replayed_at: Set(None),
    };
    Ok(Entity::insert(row).exec_with_returning(db).await?)
}

/// Newest first.
pub async fn list(db: &DatabaseConnection, page: Page) -> Result<(Vec<Model>, u64), StoreError> {
    let total = Entity::find().count(db).await?;
    let items = Entity::find()
        .order_by_desc(Column::DeadAt)
        .order_by_desc(Column::Id)
        .offset(page.offset())
        .limit(page.size)
        .all(db)
        .await?;
    Ok((items, total))
}

pub async fn get(db: &DatabaseConnection, id: i64) -> Result<Option<Model>, StoreError> {
    Ok(Entity::find_by_id(id).one(db).await?)
}

/// Dead letters not replayed yet, oldest first.
pub async fn pending(db: &DatabaseConnection) -> Result<Vec<Model>, StoreError> {
    Ok(Entity::find()
        .filter(Column::ReplayedAt.is_null())
        .order_by_asc(Column::Id)
        .all(db)
        .await?)
}

pub async fn count_pending(db: &DatabaseConnection) -> Result<u64, StoreError> {
    Ok(Entity::find()
        .filter(Column::ReplayedAt.is_null())
        .count(db)
        .await?)
}

/// Records that the dead letter was replayed.
pub async fn mark_replayed(db: &DatabaseConnection, id: i64) -> Result<(), StoreError> {
    Entity::update_many()
        .col_expr(Column::ReplayedAt, Utc::now().into())
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn delete(db: &DatabaseConnection, id: i64) -> Result<bool, StoreError> {
    Ok(Entity::delete_by_id(id).exec(db).await?.rows_affected > 0)
}

/// Deletes every dead letter; returns how many.
pub async fn delete_all(db: &DatabaseConnection) -> Result<u64, StoreError> {
    Ok(Entity::delete_many().exec(db).await?.rows_affected)
}

/// When dead letters kept for `retention` died at the latest (checked: a retention longer
/// than the calendar reaches keeps everything).
pub fn cutoff(retention: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(retention)
        .ok()
        .and_then(|kept| Utc::now().checked_sub_signed(kept))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Deletes dead letters that died before `cutoff`; returns how many.
pub async fn purge<C: ConnectionTrait>(db: &C, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    Ok(Entity::delete_many()
        .filter(dead_letters::Column::DeadAt.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_made_storable() {
        assert_eq!(printable("provider answered 500"), "provider answered 500");
        assert_eq!(printable("a\0b\tc\u{1b}"), "a\u{fffd}b\tc\u{fffd}");
        assert!(!is_storable("k\0"));
        assert!(is_storable("line\nline"));
    }
}
