//! `addresses`: the phone numbers and email domains each customer owns (SPEC §16). An
//! inbound message belongs to the customer that owns its `to`; an address is owned by one
//! customer at most (a unique index).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Addresses {
    Table,
    Id,
    CustomerId,
    Kind,
    Address,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Addresses::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Addresses::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Addresses::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(Addresses::Kind).string().not_null())
                    .col(ColumnDef::new(Addresses::Address).string().not_null())
                    .col(
                        ColumnDef::new(Addresses::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_addresses_customer_id")
                            .from(Addresses::Table, Addresses::CustomerId)
                            .to(Customers::Table, Customers::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_addresses_address")
                    .table(Addresses::Table)
                    .col(Addresses::Address)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_addresses_customer_id")
                    .table(Addresses::Table)
                    .col(Addresses::CustomerId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Addresses::Table).to_owned())
            .await
    }
}
