//! `api_keys`: customers' and operators' API keys. The key itself is never stored, only its SHA-256
//! (hex) and its first characters (`prefix`), which identify it in listings and look-ups.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `None` for an operator's key, which belongs to no customer.
    pub customer_id: Option<Uuid>,
    pub name: String,
    pub prefix: String,
    pub key_sha256: String,
    /// Comma-separated scopes: `send`, `webhook`, `read` (customer keys) or `admin`
    /// (operator keys).
    pub scopes: String,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
