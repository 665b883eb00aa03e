//! Write transactions, the same way for every table.

use sea_orm::{
    DatabaseConnection, DatabaseTransaction, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};

use super::StoreError;

/// Starts a write transaction; on SQLite it takes the write lock up front (`BEGIN
/// IMMEDIATE`), because a deferred transaction that reads then writes gets SQLITE_BUSY
/// without the busy handler ever being consulted.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, StoreError> {
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    Ok(db.begin_with_options(options).await?)
}
