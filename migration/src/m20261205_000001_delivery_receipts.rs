//! Real providers (SPEC §14): which provider sent a message (`sent_by`: the channel's own or
//! its fallback), the provider's error for a message it could not deliver
//! (`delivery_error`, e.g. Twilio's 30003 with `undelivered`), and an index to find a
//! message by the id its provider gave it, which is all a delivery receipt names.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    SentBy,
    DeliveryError,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [Messages::SentBy, Messages::DeliveryError] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Messages::Table)
                        .add_column(ColumnDef::new(column).string().null())
                        .to_owned(),
                )
                .await?;
        }
        // Partial: messages not yet sent (and most inbound ones) have no provider id.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS ix_messages_provider_message_id \
                 ON messages (provider_message_id) WHERE provider_message_id IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS ix_messages_provider_message_id")
            .await?;
        for column in [Messages::DeliveryError, Messages::SentBy] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Messages::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
