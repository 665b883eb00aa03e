//! The delivery stage's schedule on each outbound message (SPEC §13): when it is due
//! (`next_attempt_at`), which sender holds it and until when (`lease_token`, `lease_until`),
//! how many provider attempts it has had (`delivery_attempts`), and the trace context it
//! was enqueued in (`traceparent`), so its delivery attempts join the message's trace.
//!
//! Messages still `queued` become due at once (they were stored but not sent). The old
//! partial index for the re-drive sweep gives way to one on the due time, which is what
//! senders claim by; both stay as small as the backlog.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    NextAttemptAt,
    LeaseUntil,
    LeaseToken,
    DeliveryAttempts,
    Traceparent,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        let columns = [
            ColumnDef::new(Messages::NextAttemptAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Messages::LeaseUntil)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Messages::LeaseToken)
                .string()
                .null()
                .to_owned(),
            ColumnDef::new(Messages::DeliveryAttempts)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(Messages::Traceparent)
                .string()
                .null()
                .to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Messages::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE messages SET next_attempt_at = updated_at \
             WHERE status = 'queued' AND direction = 'outbound'",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS ix_messages_queued")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_messages_due ON messages (next_attempt_at) \
             WHERE status = 'queued'",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS ix_messages_due")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_messages_queued ON messages (updated_at) \
             WHERE status = 'queued'",
        )
        .await?;
        for column in [
            Messages::NextAttemptAt,
            Messages::LeaseUntil,
            Messages::LeaseToken,
            Messages::DeliveryAttempts,
            Messages::Traceparent,
        ] {
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
