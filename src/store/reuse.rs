//! Which pooled connections may be handed out again.
//!
//! A connection comes back to the pool after every use, and sqlx keeps it when a ping
//! answers. That is not enough: when a `COMMIT` fails (SQLite: `SQLITE_FULL` on a full
//! disk, an I/O error) the transaction is left open in sqlx's books (depth 1) and, when
//! the queued `ROLLBACK` fails too, in SQLite's as well. Reused, such a connection turns
//! the next `BEGIN IMMEDIATE` into a `SAVEPOINT` inside the dead transaction: every later
//! "commit" only releases the savepoint, reports success, holds SQLite's write lock (every
//! other connection then fails "database is locked"), and is thrown away at exit. That is
//! how a full disk once turned into 202s for messages that were never stored.
//!
//! So a connection goes back into the pool only when no transaction is open on it, by
//! sqlx's count and (SQLite) by the engine's own autocommit flag; any other is closed.

use sea_orm::sqlx::{self, Connection};

/// sqlx's `after_release` for SQLite: `Ok(false)` closes the connection.
pub fn sqlite_reusable(
    conn: &mut sqlx::SqliteConnection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if left_in_transaction(&*conn) {
            return Ok(false);
        }
        let mut handle = conn.lock_handle().await?;
        // SAFETY: the handle is locked for this call and stays valid while it is held;
        // sqlite3_get_autocommit only reads the connection's state.
        let autocommit =
            unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) };
        if autocommit == 0 {
            tracing::warn!("closing a SQLite connection whose transaction is still open in SQLite (a failed commit or rollback)");
            return Ok(false);
        }
        Ok(true)
    })
}

/// sqlx's `after_release` for PostgreSQL (a failed `COMMIT` ends the transaction on the
/// server, so sqlx's own count is the whole story).
pub fn postgres_reusable(
    conn: &mut sqlx::PgConnection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move { Ok(!left_in_transaction(&*conn)) })
}

/// By sqlx's count; said in the log, since it follows a failed commit or rollback.
fn left_in_transaction(conn: &impl Connection) -> bool {
    let left = conn.is_in_transaction();
    if left {
        tracing::warn!(
            "closing a database connection left inside a transaction (a failed commit or rollback)"
        );
    }
    left
}
