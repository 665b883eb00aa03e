//! What one process leaves the next: at a graceful shutdown, the events the memory queue
//! still holds are saved (in `pending_events`, else in a spill file); at start they are
//! re-enqueued.

use std::path::PathBuf;

use crate::domain::Event;
use crate::queue::spill::SpillDir;
use crate::queue::QueueBackend;
use crate::store::{self, StoreError};

/// Why what the last shutdown saved could not be re-enqueued.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("database: {0}")]
    Database(#[from] StoreError),
    #[error("cannot read the spill files in {dir}: {source}")]
    Spill { dir: String, source: std::io::Error },
}

/// Re-enqueues what the last graceful shutdown saved: rows of `pending_events`, then the
/// spill files (removed once re-enqueued; a file with unreadable lines is renamed
/// `*.unreadable` and kept for an operator).
pub(super) async fn restore(
    db: &sea_orm::DatabaseConnection,
    backend: &dyn QueueBackend,
    spill: &SpillDir,
) -> Result<(), RestoreError> {
    let republish = |events: Vec<Event>| async move {
        backend
            .republish(events)
            .await
            .map_err(|e| RestoreError::Database(StoreError::Unavailable(e.to_string())))
    };
    let rows = store::pending::load(db).await?;
    if !rows.is_empty() {
        let mut events = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for (id, json) in rows {
            match serde_json::from_value::<Event>(json) {
                Ok(event) => {
                    events.push(event);
                    ids.push(id);
                }
                // Left in the table for an operator to look at; never silently dropped.
                Err(err) => {
                    tracing::error!(pending_event_id = id, error = %err, "spilled event unreadable; left in pending_events")
                }
            }
        }
        let restored = events.len();
        republish(events).await?;
        store::pending::delete(db, ids).await?;
        tracing::info!(restored, "re-enqueued events spilled by the last shutdown");
    }
    let files = spill.load().map_err(|source| RestoreError::Spill {
        dir: spill.path().display().to_string(),
        source,
    })?;
    for file in files {
        let restored = file.events.len();
        republish(file.events).await?;
        let path = file.path.display().to_string();
        if file.unreadable == 0 {
            if let Err(err) = std::fs::remove_file(&file.path) {
                tracing::warn!(file = %path, error = %err, "cannot remove a re-enqueued spill file; its events may be enqueued again (harmless: same idempotency keys)");
            }
        } else {
            let kept = PathBuf::from(format!("{path}.unreadable"));
            let _ = std::fs::rename(&file.path, &kept);
            tracing::error!(file = %kept.display(), unreadable = file.unreadable, "spill file has lines that are not events; kept for an operator");
        }
        tracing::info!(restored, file = %path, "re-enqueued events from a spill file");
    }
    Ok(())
}

/// What a shutdown did with the events the memory queue still held.
#[derive(Debug, Default)]
pub struct Saved {
    /// Rows written to `pending_events`.
    pub in_database: usize,
    /// The spill file holding the rest, and how many it holds.
    pub in_file: Option<(PathBuf, usize)>,
}

/// Events a shutdown could save nowhere.
#[derive(Debug)]
pub struct Unsaved {
    pub count: usize,
    /// Why the spill file could not be written.
    pub error: std::io::Error,
}

/// Saves what the memory queue still holds for the next start: in `pending_events`, and
/// what the database refuses (it is down, or cannot store an event) in a spill file. `Err`
/// only when even the file cannot be written; every event left unsaved has then been
/// logged whole at error level, the last copy there is.
pub async fn save_unfinished(
    db: &sea_orm::DatabaseConnection,
    spill: &SpillDir,
    events: Vec<Event>,
) -> Result<Saved, Unsaved> {
    let total = events.len();
    let unsaved = store::pending::spill(db, events).await;
    let mut saved = Saved {
        in_database: total - unsaved.events.len(),
        in_file: None,
    };
    if unsaved.events.is_empty() {
        return Ok(saved);
    }
    if let Some(err) = &unsaved.error {
        tracing::error!(error = %err, unsaved = unsaved.events.len(), dir = %spill.path().display(), "the database refused queued events at shutdown; writing them to a spill file");
    }
    match spill.write(&unsaved.events) {
        Ok(path) => {
            saved.in_file = Some((path, unsaved.events.len()));
            Ok(saved)
        }
        Err(err) => {
            for event in &unsaved.events {
                let json = serde_json::to_string(event).unwrap_or_default();
                tracing::error!(event_id = %event.event_id, event = %json, "queued event could not be saved anywhere; it is logged here");
            }
            Err(Unsaved {
                count: unsaved.events.len(),
                error: err,
            })
        }
    }
}
