//! `event_failures`: the last failed attempt of each event that failed at least once, by
//! idempotency key, so the status resource (SPEC §12) can say `failed` with `attempts` and
//! `last_error` from whichever process answers. Written only when an attempt fails: the
//! success path never touches it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventFailures {
    Table,
    IdempotencyKey,
    CustomerId,
    Attempts,
    LastError,
    ErrorKind,
    DeadLettered,
    FailedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EventFailures::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(EventFailures::IdempotencyKey)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(EventFailures::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(EventFailures::Attempts).integer().not_null())
                    .col(ColumnDef::new(EventFailures::LastError).text().not_null())
                    .col(ColumnDef::new(EventFailures::ErrorKind).string().not_null())
                    .col(
                        ColumnDef::new(EventFailures::DeadLettered)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(EventFailures::FailedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // For the purge of old records with the dead letters.
        manager
            .create_index(
                Index::create()
                    .name("ix_event_failures_failed_at")
                    .table(EventFailures::Table)
                    .col(EventFailures::FailedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EventFailures::Table).to_owned())
            .await
    }
}
