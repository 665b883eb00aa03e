//! `api_keys`: API keys per customer (only a SHA-256 of each key is stored), and an index
//! for the customer-scoped conversation list that keys bring.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    CustomerId,
    Name,
    Prefix,
    KeySha256,
    Scopes,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    CustomerId,
    LastMessageAt,
    Id,
}

const CUSTOMER_ACTIVITY_INDEX: &str = "ix_conversations_customer_activity";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(
                        ColumnDef::new(ApiKeys::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ApiKeys::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(ApiKeys::Name).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Prefix).string().not_null())
                    .col(ColumnDef::new(ApiKeys::KeySha256).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Scopes).string().not_null())
                    .col(
                        ColumnDef::new(ApiKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ApiKeys::LastUsedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ApiKeys::RevokedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_api_keys_customer_id")
                            .from(ApiKeys::Table, ApiKeys::CustomerId)
                            .to(Customers::Table, Customers::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_api_keys_key_sha256")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::KeySha256)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Keys are looked up by their public prefix, then compared in constant time.
        manager
            .create_index(
                Index::create()
                    .name("ix_api_keys_prefix")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::Prefix)
                    .to_owned(),
            )
            .await?;
        // A customer's conversation list, most recent activity first, without a sort.
        manager
            .create_index(
                Index::create()
                    .name(CUSTOMER_ACTIVITY_INDEX)
                    .table(Conversations::Table)
                    .col(Conversations::CustomerId)
                    .col(Conversations::LastMessageAt)
                    .col(Conversations::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(CUSTOMER_ACTIVITY_INDEX)
                    .table(Conversations::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}
