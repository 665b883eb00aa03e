//! `pending_events`: events a graceful shutdown could not finish, re-enqueued at start.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PendingEvents {
    Table,
    Id,
    Event,
    SpilledAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PendingEvents::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(PendingEvents::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(PendingEvents::Event)
                            .json_binary()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PendingEvents::SpilledAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PendingEvents::Table).to_owned())
            .await
    }
}
