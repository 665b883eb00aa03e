//! Events a graceful shutdown could not finish: written at shutdown, re-enqueued at start,
//! so a restart loses nothing the memory queue held. What the database refuses here goes
//! to a spill file (see [`crate::queue::spill`]).

use chrono::Utc;
use entity::pending_events::{ActiveModel, Column, Entity};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
};

use super::StoreError;
use crate::domain::Event;

/// Rows per insert (and per transaction): under every backend's parameter limit.
const CHUNK: usize = 500;

/// What [`spill`] could not save.
#[derive(Debug, Default)]
pub struct Unsaved {
    pub events: Vec<Event>,
    /// Why not (the first error), for the log.
    pub error: Option<StoreError>,
}

/// Saves `events`, one transaction per chunk. A chunk the database refuses as permanent is
/// saved event by event, so one event it cannot store (a NUL character on PostgreSQL)
/// keeps only itself out; after a transient failure (the database is down) nothing more is
/// tried. Returns what was not saved, for the caller to keep elsewhere.
pub async fn spill(db: &DatabaseConnection, events: Vec<Event>) -> Unsaved {
    let mut unsaved = Unsaved::default();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let chunk: Vec<Event> = events.by_ref().take(CHUNK).collect();
        match insert(db, &chunk).await {
            Ok(()) => continue,
            Err(err) if err.is_transient() => {
                unsaved.error.get_or_insert(err);
                unsaved.events.extend(chunk);
                unsaved.events.extend(events);
                return unsaved;
            }
            Err(err) => {
                unsaved.error.get_or_insert(err);
            }
        }
        for event in chunk {
            match insert(db, std::slice::from_ref(&event)).await {
                Ok(()) => {}
                Err(err) => {
                    let transient = err.is_transient();
                    unsaved.error.get_or_insert(err);
                    unsaved.events.push(event);
                    if transient {
                        unsaved.events.extend(events);
                        return unsaved;
                    }
                }
            }
        }
    }
    unsaved
}

/// One transaction.
async fn insert(db: &DatabaseConnection, events: &[Event]) -> Result<(), StoreError> {
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
    let txn = super::begin_write(db).await?;
    Entity::insert_many(rows).exec(&txn).await?;
    txn.commit().await?;
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
