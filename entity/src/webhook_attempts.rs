//! `webhook_attempts`: every call made to a webhook endpoint.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_attempts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub delivery_id: i64,
    pub endpoint_id: Uuid,
    pub attempted_at: DateTimeUtc,
    /// The endpoint's HTTP status; null when no answer came (refused, timed out).
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    /// The start of the answer's body (at most 1 KiB).
    #[sea_orm(column_type = "Text", nullable)]
    pub response: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
