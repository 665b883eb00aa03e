//! Operator keys apart from customer keys (SPEC §16): `api_keys.customer_id` may be NULL
//! (an operator's key belongs to no customer), and every key that had the `admin` scope
//! becomes an operator key with that scope alone.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match db.get_database_backend() {
            DbBackend::Sqlite => {
                rebuild_sqlite(db, |column| column.replace("NOT NULL", "NULL")).await?
            }
            _ => {
                db.execute_unprepared(
                    "ALTER TABLE api_keys ALTER COLUMN customer_id DROP NOT NULL",
                )
                .await?;
            }
        }
        db.execute_unprepared(
            "UPDATE api_keys SET customer_id = NULL, scopes = 'admin' WHERE scopes LIKE '%admin%'",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // Operator keys go back to the first customer (the default one), as before.
        db.execute_unprepared(
            "UPDATE api_keys SET customer_id = \
             (SELECT id FROM customers ORDER BY created_at LIMIT 1) WHERE customer_id IS NULL",
        )
        .await?;
        match db.get_database_backend() {
            DbBackend::Sqlite => {
                rebuild_sqlite(db, |column| column.replace("NULL", "NOT NULL")).await
            }
            _ => db
                .execute_unprepared("ALTER TABLE api_keys ALTER COLUMN customer_id SET NOT NULL")
                .await
                .map(|_| ()),
        }
    }
}

/// SQLite cannot change a column's constraint: the table is made again from its own
/// definition with `customer_id`'s declaration changed by `change`, its rows copied, and
/// its indexes recreated.
async fn rebuild_sqlite(
    db: &SchemaManagerConnection<'_>,
    change: impl Fn(&str) -> String,
) -> Result<(), DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'api_keys'",
        ))
        .await?
        .ok_or_else(|| DbErr::Migration("no api_keys table".into()))?;
    let sql: String = row.try_get("", "sql")?;
    let start = sql
        .find("\"customer_id\"")
        .ok_or_else(|| DbErr::Migration(format!("no customer_id column in {sql}")))?;
    let end = start + sql[start..].find(',').unwrap_or(sql.len() - start);
    let column = &sql[start..end];
    let create = format!("{}{}{}", &sql[..start], change(column), &sql[end..]).replacen(
        "\"api_keys\"",
        "\"api_keys_new\"",
        1,
    );
    for statement in [
        create.as_str(),
        "INSERT INTO api_keys_new SELECT * FROM api_keys",
        "DROP TABLE api_keys",
        "ALTER TABLE api_keys_new RENAME TO api_keys",
        "CREATE UNIQUE INDEX ux_api_keys_key_sha256 ON api_keys (key_sha256)",
        "CREATE INDEX ix_api_keys_prefix ON api_keys (prefix)",
    ] {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}
