//! A partial index of the messages still `queued`, for the re-drive sweep that looks for
//! stored-but-unsent messages every minute (without it, each sweep scans every message).
//! Rows leave it when they are sent, so it stays as small as the backlog. The same SQL
//! works on SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS ix_messages_queued ON messages (updated_at) \
                 WHERE status = 'queued'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS ix_messages_queued")
            .await?;
        Ok(())
    }
}
