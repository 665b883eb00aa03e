//! Persistence on SeaORM, the same code for SQLite and PostgreSQL.

pub mod addresses;
pub mod audit;
pub mod checkpoint;
pub mod dead_letters;
pub mod delivery;
mod error;
pub mod failures;
pub mod health;
pub mod keys;
pub mod outage;
pub mod outbox;
pub mod pending;
pub mod progress;
pub mod read;
pub mod receipts;
mod reuse;
pub mod status;
mod transaction;
pub mod webhook_deliveries;
pub mod webhook_endpoints;
pub mod writer;

use migration::MigratorTrait;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

pub use checkpoint::Checkpointer;
pub use error::StoreError;
pub use transaction::begin_write;

use crate::config::DatabaseSettings;

/// Prepared statements kept per connection. Batched statements differ with the batch size,
/// so a large cache mostly holds big one-off statements (the default of 100 let memory
/// grow by hundreds of MB under load).
const STATEMENT_CACHE: usize = 4;

/// Opens the pool. For SQLite the file's directory is created and the connection tuned for
/// one writer at a time (WAL, `synchronous=NORMAL`, a busy timeout); writes then use
/// `BEGIN IMMEDIATE` (see [`writer`]).
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, StoreError> {
    open(settings, Checkpoints::Automatic).await
}

/// The server's pool: on SQLite its connections never checkpoint the WAL themselves; a
/// [`Checkpointer`] started with the pool's writer does (see [`checkpoint`]).
pub async fn connect_server(settings: &DatabaseSettings) -> Result<DatabaseConnection, StoreError> {
    match settings.is_sqlite() {
        true => open(settings, Checkpoints::Separate).await,
        false => connect(settings).await,
    }
}

/// The next placeholder of a raw statement at each call: `$1`, `$2`, … on PostgreSQL, `?`
/// on SQLite (the batched statements build their SQL text themselves).
pub(crate) fn placeholders(backend: DbBackend) -> impl FnMut() -> String {
    let mut next = 0;
    move || {
        next += 1;
        match backend {
            DbBackend::Postgres => format!("${next}"),
            _ => "?".to_string(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Checkpoints {
    /// SQLite's own, inside the commit that crosses 1,000 WAL pages.
    Automatic,
    /// By a [`Checkpointer`].
    Separate,
}

async fn open(
    settings: &DatabaseSettings,
    checkpoints: Checkpoints,
) -> Result<DatabaseConnection, StoreError> {
    let url = settings.url.as_str();
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(settings.pool_size())
        .min_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .connect_timeout(settings.acquire_timeout)
        .sqlx_logging(false);
    if !settings.is_sqlite() {
        options.map_sqlx_postgres_opts(|o| o.statement_cache_capacity(STATEMENT_CACHE));
        // sqlx (0.9.1 and later) sets TCP_NODELAY itself: without it every batched insert
        // waited for PostgreSQL's delayed ACK (about 40 ms a statement).
        options.map_sqlx_postgres_pool_opts(|pool| pool.after_release(reuse::postgres_reusable));
    }
    if settings.is_sqlite() {
        create_sqlite_directory(url)?;
        let busy_timeout = settings.busy_timeout;
        let synchronous = match settings.sqlite_synchronous {
            crate::config::SqliteSynchronous::Normal => {
                sea_orm::sqlx::sqlite::SqliteSynchronous::Normal
            }
            crate::config::SqliteSynchronous::Full => {
                sea_orm::sqlx::sqlite::SqliteSynchronous::Full
            }
        };
        options.map_sqlx_sqlite_pool_opts(|pool| pool.after_release(reuse::sqlite_reusable));
        options.map_sqlx_sqlite_opts(move |o| {
            use sea_orm::sqlx::sqlite::SqliteJournalMode;
            let o = o
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .busy_timeout(busy_timeout)
                .foreign_keys(true)
                .statement_cache_capacity(STATEMENT_CACHE)
                // Statement journals (one per multi-row upsert) in memory, not temp files.
                .pragma("temp_store", "memory");
            match checkpoints {
                Checkpoints::Automatic => o,
                // The WAL file is truncated back to 64 MiB after a checkpoint that emptied it.
                Checkpoints::Separate => o
                    .pragma("wal_autocheckpoint", "0")
                    .pragma("journal_size_limit", "67108864"),
            }
        });
    }
    Ok(Database::connect(options).await?)
}

/// Any fixed number: the key of the PostgreSQL advisory lock that migrations hold.
const MIGRATION_LOCK: i64 = 0x6d73_675f_6d69_6772; // "msg_migr"

/// Applies pending migrations, one process at a time: an orchestrator starts several
/// processes at once on a fresh database, and two migrators racing each other fail on
/// PostgreSQL's catalog ("duplicate key value violates unique constraint
/// pg_type_typname_nsp_index") or SQLite's ("table already exists"). All of it runs in one
/// write transaction that first takes a lock the others wait for: PostgreSQL's advisory
/// lock, SQLite's write lock (`BEGIN IMMEDIATE`, waiting up to `busy_timeout`). The last in
/// finds nothing left to apply.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), StoreError> {
    migrate_by(db, Migration::AllPending).await
}

/// How far [`migrate_by`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migration {
    AllPending,
    /// The next pending one (`migrate up`, one step at a time for its progress).
    NextUp,
    /// Roll back the last applied one.
    LastDown,
}

/// As [`migrate`], for one step up or down.
pub async fn migrate_by(db: &DatabaseConnection, how: Migration) -> Result<(), StoreError> {
    use sea_orm::{ConnectionTrait, DbBackend};
    let txn = begin_write(db).await?;
    if db.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
            .await?;
    }
    match how {
        Migration::AllPending => migration::Migrator::up(&txn, None).await?,
        Migration::NextUp => migration::Migrator::up(&txn, Some(1)).await?,
        Migration::LastDown => migration::Migrator::down(&txn, Some(1)).await?,
    }
    txn.commit().await?;
    Ok(())
}

/// Refuses to run on a schema that is behind (when migrations are not applied at start).
pub async fn require_migrated(db: &DatabaseConnection) -> Result<(), StoreError> {
    let pending = migration::Migrator::get_pending_migrations(db).await?;
    if pending.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = pending.iter().map(|m| m.name()).collect();
    Err(StoreError::SchemaBehind(format!(
        "the database schema is behind ({} pending: {}); run `messaging-server migrate up` or set database.auto_migrate = true",
        names.len(),
        names.join(", ")
    )))
}

fn create_sqlite_directory(url: &str) -> Result<(), StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        return Ok(());
    }
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
    }
    Ok(())
}
