//! `conversations`: one row per (customer, channel family, participant pair).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub customer_id: Uuid,
    /// Channel family: `"sms"` (covers sms and mms) or `"email"`.
    pub channel: String,
    /// Lexicographically smaller normalized address (`participant_a <= participant_b`).
    pub participant_a: String,
    /// Lexicographically larger normalized address.
    pub participant_b: String,
    #[sea_orm(default_value = 0)]
    pub message_count: i64,
    pub last_message_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::messages::Entity")]
    Messages,
}

impl Related<super::messages::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Messages.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
