//! `api_keys`: a customer's API keys. The key itself is never stored, only its SHA-256
//! (hex) and its first characters (`prefix`), which identify it in listings and look-ups.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub customer_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub key_sha256: String,
    /// Comma-separated scopes: `send`, `webhook`, `admin`.
    pub scopes: String,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
