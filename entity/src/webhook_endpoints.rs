//! `webhook_endpoints`: where a customer's events are pushed (SPEC §15).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub customer_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub url: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub description: Option<String>,
    /// The subscribed types between commas (`,message.sent,`), or "" for all.
    #[sea_orm(column_type = "Text")]
    pub event_types: String,
    /// `whsec_` + base64 of the key.
    #[sea_orm(column_type = "Text")]
    pub secret: String,
    /// The secret before the last rotation, signing too until `previous_secret_until`.
    #[sea_orm(column_type = "Text", nullable)]
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTimeUtc>,
    pub enabled: bool,
    /// Start of the current run of failed attempts; null after a success.
    pub failing_since: Option<DateTimeUtc>,
    /// Why the service disabled it (null when enabled, or disabled by its customer).
    #[sea_orm(column_type = "Text", nullable)]
    pub disabled_reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
