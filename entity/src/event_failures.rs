//! `event_failures`: the last failed attempt of each event that failed at least once.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "event_failures")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub idempotency_key: String,
    pub customer_id: Uuid,
    /// Failed attempts so far (the count the RetryScheduler decided on).
    pub attempts: i32,
    #[sea_orm(column_type = "Text")]
    pub last_error: String,
    /// `"transient"` or `"permanent"`.
    pub error_kind: String,
    /// What the customer is told (`domain::ErrorCode`); `None` on rows older than codes.
    pub error_code: Option<String>,
    /// This failure sent the event to the dead-letter queue (no retry follows).
    pub dead_lettered: bool,
    pub failed_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
