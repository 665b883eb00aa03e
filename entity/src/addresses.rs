//! `addresses`: a phone number (E.164) or an email domain a customer owns; inbound messages
//! to it are that customer's.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "addresses")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub customer_id: Uuid,
    /// `phone` or `email_domain`.
    pub kind: String,
    /// `+12016661234`, or `example.com` (lower case).
    pub address: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
