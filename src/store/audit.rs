//! The `audit_log` table (SPEC §16): appended to, read newest first, never changed.

use chrono::{DateTime, Utc};
use entity::audit_log::{ActiveModel, Column, Entity, Model};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QueryTrait,
};

use super::read::Page;
use super::StoreError;
use crate::domain::audit::{Action, Entry};

/// Appends `entry`, stamped now.
pub async fn record<C: ConnectionTrait>(db: &C, entry: &Entry) -> Result<Model, StoreError> {
    let row = ActiveModel {
        id: NotSet,
        at: Set(Utc::now()),
        actor: Set(entry.actor.name.clone()),
        customer_id: Set(entry.actor.customer_id),
        action: Set(entry.action.as_str().to_string()),
        target: Set(entry.target.clone()),
        request_id: Set(entry.request_id.clone()),
        detail: Set(entry.detail.clone()),
    };
    Ok(Entity::insert(row).exec_with_returning(db).await?)
}

/// Which entries to list; every field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub action: Option<Action>,
    /// `key:<prefix>`, `cli:<user>` or `open`, exactly.
    pub actor: Option<String>,
    /// `<resource>:<id>`, exactly.
    pub target: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
}

/// Newest first, with the number of entries the filter matches.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    filter: &Filter,
    page: Page,
) -> Result<(Vec<Model>, u64), StoreError> {
    let query = Entity::find()
        .apply_if(filter.action, |q, a| {
            q.filter(Column::Action.eq(a.as_str()))
        })
        .apply_if(filter.actor.clone(), |q, a| q.filter(Column::Actor.eq(a)))
        .apply_if(filter.target.clone(), |q, t| q.filter(Column::Target.eq(t)))
        .apply_if(filter.since, |q, t| q.filter(Column::At.gte(t)))
        .apply_if(filter.until, |q, t| q.filter(Column::At.lt(t)));
    page.fetch(db, query, |q| q.order_by_desc(Column::Id)).await
}
