//! SQLite WAL checkpoints off the write path.
//!
//! By default SQLite checkpoints inside the commit that crosses 1,000 WAL pages, so one
//! batch transaction in a few pays for copying the WAL into the database file while it
//! holds the only write lock: ~11% of the writer thread in the load benchmark. The server
//! turns that off on its pool (`wal_autocheckpoint = 0`, see [`super::connect_server`]) and
//! runs passive checkpoints from a connection of its own instead, beside the writers (a
//! passive checkpoint never blocks a writer). Command-line tools keep SQLite's automatic
//! checkpoints.
//!
//! Passive checkpoints alone never let the WAL start over while writers keep appending
//! (it grew to 1.9 GB in a 15 s benchmark). So once the WAL holds [`RESTART_FRAMES`], the
//! checkpointer takes the writers' turn and runs a RESTART checkpoint, which copies what
//! the passive ones have not yet and makes the next writer start the file from the top.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio::task::JoinHandle;

use super::writer::MessageWriter;
use super::StoreError;
use crate::config::DatabaseSettings;

/// How often the WAL is copied back into the database file.
const INTERVAL: Duration = Duration::from_millis(100);
/// WAL pages (4 KiB) past which the WAL is started over: about 64 MiB.
const RESTART_FRAMES: i64 = 16_384;

/// The checkpoint task; stops when dropped.
pub struct Checkpointer {
    task: JoinHandle<()>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Checkpointer {
    /// On SQLite, opens the checkpoint connection and starts checkpointing every
    /// [`INTERVAL`]; the restarts take turns with `writer`'s transactions. `None` on
    /// PostgreSQL, which checkpoints by itself.
    pub async fn start(
        settings: &DatabaseSettings,
        writer: MessageWriter,
    ) -> Result<Option<Self>, StoreError> {
        if !settings.is_sqlite() {
            return Ok(None);
        }
        let own = DatabaseSettings {
            max_connections: 1,
            ..settings.clone()
        };
        let db = super::connect(&own).await?;
        let task = actix_web::rt::spawn(run(db, writer));
        Ok(Some(Checkpointer { task }))
    }
}

/// One checkpoint; returns the WAL's size in pages.
async fn checkpoint(db: &DatabaseConnection, mode: &str) -> Result<i64, StoreError> {
    let sql = format!("PRAGMA wal_checkpoint({mode})");
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Sqlite, sql))
        .await?;
    // (busy, pages in the WAL, pages copied); -1 when the database is not in WAL mode.
    Ok(match row {
        Some(row) => row.try_get_by_index::<i64>(1)?,
        None => 0,
    })
}

async fn run(db: DatabaseConnection, writer: MessageWriter) {
    let mut ticker = actix_web::rt::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        let done = match checkpoint(&db, "PASSIVE").await {
            Ok(pages) if pages >= RESTART_FRAMES => {
                let _turn = writer.take_turn().await;
                checkpoint(&db, "RESTART").await.map(drop)
            }
            other => other.map(drop),
        };
        match done {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("SQLite WAL checkpoints work again");
            }
            Ok(_) => {}
            // Once per outage: the WAL grows meanwhile and is copied back when this works
            // again (or by SQLite when the last connection closes).
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "SQLite WAL checkpoint failed; the WAL file grows until one succeeds");
            }
            Err(_) => {}
        }
    }
}
