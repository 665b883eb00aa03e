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
use super::StoreError;
use crate::domain::{ErrorCode, Event};

/// A failure to park: its event's last failed attempt.
pub type NewDeadLetter<'a> = super::failures::Failure<'a>;

/// The key under which the encoded form of an event is kept (see [`insert_encoded`]).
pub const ENCODED_EVENT: &str = "event_json_hex";

/// The refusal of an event serde cannot encode, the same for the plain and encoded forms.
fn unencodable(err: serde_json::Error) -> StoreError {
    StoreError::Rejected(format!("event cannot be encoded: {err}"))
}

/// Stores the dead letter row alone (the caller changes the message's status with it).
pub async fn insert_row<C: ConnectionTrait>(
    db: &C,
    new: &NewDeadLetter<'_>,
) -> Result<Model, StoreError> {
    let event = serde_json::to_value(new.event).map_err(unencodable)?;
    let row = row(event, new.event.idempotency_key.as_str().to_string(), new);
    Ok(Entity::insert(row).exec_with_returning(db).await?)
}

/// Stores the dead letter and marks its message `failed`, atomically.
pub async fn insert(db: &DatabaseConnection, new: NewDeadLetter<'_>) -> Result<Model, StoreError> {
    let txn = super::begin_write(db).await?;
    let model = insert_row(&txn, &new).await?;
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
    let model = insert_encoded_row(db, &new).await?;
    if is_storable(new.event.idempotency_key.as_str()) {
        if let Err(err) = fail_message_of(db, new.event).await {
            tracing::warn!(dead_letter_id = model.id, error = %err, "cannot mark the message of an encoded dead letter failed");
        }
    }
    Ok(model)
}

/// Marks the message stored for `event` (if any) `failed`: dead-lettered.
pub async fn fail_message_of(db: &DatabaseConnection, event: &Event) -> Result<u64, StoreError> {
    status::transition_committed(
        db,
        Which::OfEvent(event),
        MessageStatus::Queued,
        MessageStatus::Failed,
    )
    .await
}

/// The row of [`insert_encoded`] alone.
pub async fn insert_encoded_row<C: ConnectionTrait>(
    db: &C,
    new: &NewDeadLetter<'_>,
) -> Result<Model, StoreError> {
    let json = serde_json::to_vec(new.event).map_err(unencodable)?;
    let event = serde_json::json!({ ENCODED_EVENT: hex::encode(json) });
    let key = new.event.idempotency_key.as_str();
    Ok(Entity::insert(row(event, stored_key(key), new))
        .exec_with_returning(db)
        .await?)
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
        last_error: Set(printable(new.error)),
        error_kind: Set(new.error_kind.to_string()),
        error_code: Set(Some(new.error_code.to_string())),
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
        error_code: Set(Some(ErrorCode::InvalidMessage.as_str().to_string())),
        dead_at: Set(now),
        replayed_at: Set(None),
    };
    Ok(Entity::insert(row).exec_with_returning(db).await?)
}

/// Newest first.
pub async fn list(db: &DatabaseConnection, page: Page) -> Result<(Vec<Model>, u64), StoreError> {
    page.fetch(db, Entity::find(), |q| {
        q.order_by_desc(Column::DeadAt).order_by_desc(Column::Id)
    })
    .await
}

pub async fn get(db: &DatabaseConnection, id: i64) -> Result<Option<Model>, StoreError> {
    Ok(Entity::find_by_id(id).one(db).await?)
}

/// The newest dead letter's id (0 when there is none).
pub async fn last_id(db: &DatabaseConnection) -> Result<i64, StoreError> {
    let last: Option<i64> = Entity::find()
        .select_only()
        .column(Column::Id)
        .order_by_desc(Column::Id)
        .into_tuple()
        .one(db)
        .await?;
    Ok(last.unwrap_or(0))
}

/// Up to `limit` dead letters not replayed yet with an id above `after` and at most
/// `upto`, oldest first (replay-all walks them page by page instead of loading them whole,
/// and stops at those that existed when it began: a replay that fails again must not feed
/// the walk forever).
pub async fn pending_after(
    db: &DatabaseConnection,
    after: i64,
    upto: i64,
    limit: u64,
) -> Result<Vec<Model>, StoreError> {
    Ok(Entity::find()
        .filter(Column::ReplayedAt.is_null())
        .filter(Column::Id.gt(after))
        .filter(Column::Id.lte(upto))
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

pub async fn count_pending(db: &DatabaseConnection) -> Result<u64, StoreError> {
    Ok(Entity::find()
        .filter(Column::ReplayedAt.is_null())
        .count(db)
        .await?)
}

/// Takes the dead letter for a replay: true for exactly one of several concurrent
/// callers (a conditional update), false when it was replayed already.
pub async fn claim_replay(db: &DatabaseConnection, id: i64) -> Result<bool, StoreError> {
    let moved = Entity::update_many()
        .col_expr(Column::ReplayedAt, Utc::now().into())
        .filter(Column::Id.eq(id))
        .filter(Column::ReplayedAt.is_null())
        .exec(db)
        .await?
        .rows_affected;
    Ok(moved == 1)
}

/// Gives a claimed replay back (its event could not be re-enqueued): replayable again.
pub async fn unclaim_replay(db: &DatabaseConnection, id: i64) -> Result<(), StoreError> {
    Entity::update_many()
        .col_expr(Column::ReplayedAt, Option::<DateTime<Utc>>::None.into())
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
