//! Webhooks to customers (SPEC §15).
//!
//! - `webhook_endpoints`: a customer's receivers, with the secret that signs for them (and
//!   the one it replaced, while it still signs).
//! - `webhook_deliveries`: the outbox. One row per event and endpoint, inserted in the
//!   transaction of the status change that causes the event, then claimed, sent and settled
//!   by the webhook deliverers like outbound messages are by the senders.
//! - `webhook_attempts`: each call made, for customers to see why an endpoint fails.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    CustomerId,
    Url,
    Description,
    EventTypes,
    Secret,
    PreviousSecret,
    PreviousSecretUntil,
    Enabled,
    FailingSince,
    DisabledReason,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EndpointId,
    CustomerId,
    MessageId,
    EventType,
    CreatedAt,
    State,
    Attempts,
    NextAttemptAt,
    LeaseToken,
    Payload,
    LastStatusCode,
    LastError,
    SettledAt,
}

#[derive(DeriveIden)]
enum WebhookAttempts {
    Table,
    Id,
    DeliveryId,
    EndpointId,
    AttemptedAt,
    StatusCode,
    LatencyMs,
    Response,
    Error,
}

fn ts<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn ts_null<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

fn id_pk<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use WebhookEndpoints as E;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(E::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(E::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(E::Url).text().not_null())
                    .col(ColumnDef::new(E::Description).text().null())
                    // `,message.sent,message.delivered,`, or "" for every type: matched
                    // with LIKE by the outbox insert on both databases.
                    .col(ColumnDef::new(E::EventTypes).text().not_null())
                    .col(ColumnDef::new(E::Secret).text().not_null())
                    .col(ColumnDef::new(E::PreviousSecret).text().null())
                    .col(ts_null(E::PreviousSecretUntil))
                    .col(ColumnDef::new(E::Enabled).boolean().not_null())
                    .col(ts_null(E::FailingSince))
                    .col(ColumnDef::new(E::DisabledReason).text().null())
                    .col(ts(E::CreatedAt))
                    .col(ts(E::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_endpoints_customer_id")
                    .table(E::Table)
                    .col(E::CustomerId)
                    .to_owned(),
            )
            .await?;

        use WebhookDeliveries as D;
        manager
            .create_table(
                Table::create()
                    .table(D::Table)
                    .if_not_exists()
                    .col(id_pk(D::Id))
                    .col(ColumnDef::new(D::EndpointId).uuid().not_null())
                    .col(ColumnDef::new(D::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(D::MessageId).big_integer().not_null())
                    .col(ColumnDef::new(D::EventType).string().not_null())
                    .col(ts(D::CreatedAt))
                    // pending | delivered | failed
                    .col(ColumnDef::new(D::State).string().not_null())
                    .col(ColumnDef::new(D::Attempts).integer().not_null().default(0))
                    // While pending: when it may be claimed (a claim moves it past its lease).
                    .col(ts_null(D::NextAttemptAt))
                    .col(ColumnDef::new(D::LeaseToken).string().null())
                    // The body as first sent, so every retry carries the same bytes.
                    .col(ColumnDef::new(D::Payload).text().null())
                    .col(ColumnDef::new(D::LastStatusCode).integer().null())
                    .col(ColumnDef::new(D::LastError).text().null())
                    .col(ts_null(D::SettledAt))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // The claim's index: only pending rows, by due time.
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_webhook_deliveries_due \
             ON webhook_deliveries (next_attempt_at) WHERE state = 'pending'",
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_deliveries_endpoint")
                    .table(D::Table)
                    .col(D::EndpointId)
                    .col(D::Id)
                    .to_owned(),
            )
            .await?;

        use WebhookAttempts as A;
        manager
            .create_table(
                Table::create()
                    .table(A::Table)
                    .if_not_exists()
                    .col(id_pk(A::Id))
                    .col(ColumnDef::new(A::DeliveryId).big_integer().not_null())
                    .col(ColumnDef::new(A::EndpointId).uuid().not_null())
                    .col(ts(A::AttemptedAt))
                    .col(ColumnDef::new(A::StatusCode).integer().null())
                    .col(ColumnDef::new(A::LatencyMs).big_integer().not_null())
                    .col(ColumnDef::new(A::Response).text().null())
                    .col(ColumnDef::new(A::Error).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_attempts_endpoint")
                    .table(A::Table)
                    .col(A::EndpointId)
                    .col(A::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookAttempts::Table.into_iden(),
            WebhookDeliveries::Table.into_iden(),
            WebhookEndpoints::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
