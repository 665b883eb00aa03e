//! The index receipts use, narrowed to the messages Twilio sent (the one provider that
//! sends receipts). The first version covered every message with a provider id, so every
//! send paid for it; now sends through SMTP, HTTP providers or a fallback stay off it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS ix_messages_provider_message_id")
            .await?;
        // Queries must spell `sent_by = 'twilio'` as a literal for SQLite to use it.
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_messages_twilio_sid \
             ON messages (provider_message_id) WHERE sent_by = 'twilio'",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS ix_messages_twilio_sid")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_messages_provider_message_id \
             ON messages (provider_message_id) WHERE provider_message_id IS NOT NULL",
        )
        .await?;
        Ok(())
    }
}
