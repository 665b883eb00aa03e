//! Events a graceful shutdown could not finish: written at shutdown, re-enqueued at start,
//! so a restart loses nothing the memory queue held.

use chrono::Utc;
use entity::pending_events::{ActiveModel, Column, Entity};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
};

use super::StoreError;
use crate::domain::Event;

pub async fn spill(db: &DatabaseConnection, events: &[Event]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let json = serde_json::to_value(event)
            .map_err(|e| StoreError::Rejected(format!("event cannot be encoded: {e}")))?;
        rows.push(ActiveModel {
            event: Set(json),
            spilled_at: Set(now),
            ..Default::default()
        });
    }
    // Chunked: one statement per 500 rows stays under every backend's parameter limit.
    for chunk in rows.chunks(500) {
        Entity::insert_many(chunk.to_vec()).exec(db).await?;
    }
    Ok(())
}

/// The spilled events, oldest first, with the ids to delete once they are re-enqueued.
/// A row that no longer reads as an event is returned as a raw value for a dead letter.
pub async fn load(db: &DatabaseConnection) -> Result<Vec<(i64, serde_json::Value)>, StoreError> {
    Ok(Entity::find()
        .order_by_asc(Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(|row| (row.id, row.event))
        .collect())
}

pub async fn delete(db: &DatabaseConnection, ids: Vec<i64>) -> Result<(), StoreError> {
    for chunk in ids.chunks(500) {
        Entity::delete_many()
            .filter(Column::Id.is_in(chunk.to_vec()))
            .exec(db)
            .await?;
    }
    Ok(())
}
