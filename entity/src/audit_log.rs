//! `audit_log`: one row per state-changing action on keys, customers, dead letters, webhook
//! endpoints and addresses (SPEC §16). Rows are only ever appended.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTimeUtc,
    /// `key:<prefix>` for an API key, `cli:<user>` for the command line, `open` without
    /// authentication.
    pub actor: String,
    /// The actor's customer; `None` for operators and the command line.
    pub customer_id: Option<Uuid>,
    /// `dead_letter.replay`, `key.create`, … (`domain::audit::Action`).
    pub action: String,
    /// `dead_letter:42`, `key:msk_ab12cd34`, `dead_letters` (all of them), …
    pub target: String,
    /// The request's `X-Request-Id`; `None` from the command line.
    pub request_id: Option<String>,
    /// What else an operator needs to read the entry (a count, a URL); never a secret.
    pub detail: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
