//! `error_code` beside `last_error` on failures and dead letters (SPEC §16): what the
//! message's customer is told (`provider_rejected`, `timeout`, …), while `last_error`
//! keeps the raw text for operators. NULL on rows written before codes existed.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventFailures {
    Table,
    ErrorCode,
}

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    ErrorCode,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EventFailures::Table)
                    .add_column(ColumnDef::new(EventFailures::ErrorCode).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(DeadLetters::Table)
                    .add_column(ColumnDef::new(DeadLetters::ErrorCode).string().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(DeadLetters::Table)
                    .drop_column(DeadLetters::ErrorCode)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(EventFailures::Table)
                    .drop_column(EventFailures::ErrorCode)
                    .to_owned(),
            )
            .await
    }
}
