//! `dead_letters`: events that exhausted their retries or failed permanently.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "dead_letters")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The whole event as received.
    #[sea_orm(column_type = "JsonBinary")]
    pub event: Json,
    /// Indexed (`ix_dead_letters_idempotency_key`), not unique.
    #[sea_orm(indexed)]
    pub idempotency_key: String,
    pub attempts: i32,
    pub first_attempt_at: DateTimeUtc,
    pub last_attempt_at: DateTimeUtc,
    #[sea_orm(column_type = "Text")]
    pub last_error: String,
    /// `"transient"` or `"permanent"`.
    pub error_kind: String,
    /// What the customer is told (`domain::ErrorCode`); `None` on rows older than codes.
    pub error_code: Option<String>,
    #[sea_orm(indexed)]
    pub dead_at: DateTimeUtc,
    pub replayed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
