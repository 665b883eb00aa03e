//! The `dead_letters` table.

use chrono::{DateTime, Utc};
use entity::dead_letters::{self, ActiveModel, Column, Entity, Model};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::read::Page;
use super::{writer, StoreError};
use crate::domain::Event;

/// A failure to park.
pub struct NewDeadLetter<'a> {
    pub event: &'a Event,
    pub attempts: u32,
    pub last_error: &'a str,
    pub error_kind: &'a str,
}

/// Stores the dead letter and marks its message `failed`, atomically.
pub async fn insert(db: &DatabaseConnection, new: NewDeadLetter<'_>) -> Result<Model, StoreError> {
    let now = Utc::now();
    let event = serde_json::to_value(new.event)
        .map_err(|e| StoreError::Rejected(format!("event cannot be encoded: {e}")))?;
    let row = ActiveModel {
        id: NotSet,
        event: Set(event),
        idempotency_key: Set(new.event.idempotency_key.as_str().to_string()),
        attempts: Set(new.attempts as i32),
        first_attempt_at: Set(new.event.accepted_at),
        last_attempt_at: Set(now),
        last_error: Set(new.last_error.to_string()),
        error_kind: Set(new.error_kind.to_string()),
        dead_at: Set(now),
        replayed_at: Set(None),
    };
    let txn = writer::begin_write(db).await?;
    let model = Entity::insert(row).exec_with_returning(&txn).await?;
    writer::transition_status(
        &txn,
        new.event,
        writer::STATUS_QUEUED,
        writer::STATUS_FAILED,
    )
    .await?;
    txn.commit().await?;
    Ok(model)
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
        idempotency_key: Set(key.to_string()),
        attempts: Set(i32::try_from(attempts).unwrap_or(i32::MAX)),
        first_attempt_at: Set(published_at),
        last_attempt_at: Set(now),
        last_error: Set(error.to_string()),
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

/// Deletes dead letters that died before `cutoff`; returns how many.
pub async fn purge<C: ConnectionTrait>(db: &C, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    Ok(Entity::delete_many()
        .filter(dead_letters::Column::DeadAt.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected)
}
