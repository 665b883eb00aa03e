//! Database migrations for the messaging server (SQLite and PostgreSQL).

use sea_orm_migration::{async_trait, MigrationTrait};

pub use sea_orm_migration::MigratorTrait;

mod m20261127_000001_create_tables;
mod m20261127_000002_create_pending_events;
mod m20261128_000001_create_api_keys;
mod m20261128_000002_add_request_fingerprint;
mod m20261129_000001_index_queued_messages;
mod m20261201_000001_create_event_failures;
mod m20261204_000001_schedule_deliveries;
mod m20261205_000001_delivery_receipts;
mod m20261205_000002_receipt_index_for_twilio;
mod m20261205_000003_webhooks;
mod m20261206_000001_operator_keys;
mod m20261206_000002_error_codes;
mod m20261206_000003_addresses;
mod m20261206_000004_audit_log;

/// Id of the customer row created by the initial migration (name `"default"`).
pub const DEFAULT_CUSTOMER_ID: &str = "00000000-0000-0000-0000-000000000001";

/// Runs all migrations of this crate, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_tables::Migration),
            Box::new(m20261127_000002_create_pending_events::Migration),
            Box::new(m20261128_000001_create_api_keys::Migration),
            Box::new(m20261128_000002_add_request_fingerprint::Migration),
            Box::new(m20261201_000001_create_event_failures::Migration),
            Box::new(m20261129_000001_index_queued_messages::Migration),
            Box::new(m20261204_000001_schedule_deliveries::Migration),
            Box::new(m20261205_000001_delivery_receipts::Migration),
            Box::new(m20261205_000002_receipt_index_for_twilio::Migration),
            Box::new(m20261205_000003_webhooks::Migration),
            Box::new(m20261206_000001_operator_keys::Migration),
            Box::new(m20261206_000002_error_codes::Migration),
            Box::new(m20261206_000003_addresses::Migration),
            Box::new(m20261206_000004_audit_log::Migration),
        ]
    }
}
