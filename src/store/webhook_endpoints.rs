//! A customer's webhook endpoints (SPEC §15): registration, changes, secret rotation, and
//! the failure streak that disables one.

use chrono::{DateTime, Utc};
use entity::webhook_endpoints::{ActiveModel, Column, Entity, Model};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

use super::begin_write;
use super::outbox::EventType;
use super::read::{of_customer, Page};
use super::writer::MessageWriter;
use super::StoreError;
use crate::webhooks::signing;

/// What a customer registers.
pub struct NewEndpoint {
    pub customer_id: Uuid,
    pub url: String,
    pub description: Option<String>,
    pub types: Vec<EventType>,
}

/// A change to an endpoint; `None` leaves a field as it is.
#[derive(Default)]
pub struct Change {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub types: Option<Vec<EventType>>,
    pub enabled: Option<bool>,
}

pub async fn create<C: ConnectionTrait>(db: &C, new: NewEndpoint) -> Result<Model, StoreError> {
    let now = Utc::now();
    let row = ActiveModel {
        id: Set(Uuid::new_v4()),
        customer_id: Set(new.customer_id),
        url: Set(new.url),
        description: Set(new.description),
        event_types: Set(EventType::store_set(&new.types)),
        secret: Set(signing::new_secret()),
        previous_secret: Set(None),
        previous_secret_until: Set(None),
        enabled: Set(true),
        failing_since: Set(None),
        disabled_reason: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    };
    Ok(row.insert(db).await?)
}

/// Newest first; `customer` `None` for every customer's (an operator).
pub async fn list<C: ConnectionTrait>(
    db: &C,
    customer: Option<Uuid>,
    page: Page,
) -> Result<(Vec<Model>, u64), StoreError> {
    let query = of_customer(Entity::find(), Column::CustomerId, customer);
    page.fetch(db, query, |q| {
        q.order_by_desc(Column::CreatedAt).order_by_desc(Column::Id)
    })
    .await
}

/// The endpoint `id` if `customer` may see it.
pub async fn get<C: ConnectionTrait>(
    db: &C,
    customer: Option<Uuid>,
    id: Uuid,
) -> Result<Option<Model>, StoreError> {
    Ok(
        of_customer(Entity::find_by_id(id), Column::CustomerId, customer)
            .one(db)
            .await?,
    )
}

pub async fn update<C: ConnectionTrait>(
    db: &C,
    customer: Option<Uuid>,
    id: Uuid,
    change: Change,
) -> Result<Option<Model>, StoreError> {
    let Some(found) = get(db, customer, id).await? else {
        return Ok(None);
    };
    let mut row: ActiveModel = found.into();
    if let Some(url) = change.url {
        row.url = Set(url);
    }
    if let Some(description) = change.description {
        row.description = Set(description);
    }
    if let Some(types) = change.types {
        row.event_types = Set(EventType::store_set(&types));
    }
    if let Some(enabled) = change.enabled {
        row.enabled = Set(enabled);
        // Enabled again: a fresh start, whoever disabled it.
        row.failing_since = Set(None);
        row.disabled_reason = Set(None);
    }
    row.updated_at = Set(Utc::now());
    Ok(Some(row.update(db).await?))
}

/// Deletes the endpoint with its deliveries and attempts, in one transaction (in turn
/// with the other writes on SQLite). Returns whether it existed.
pub async fn delete(
    writer: &MessageWriter,
    customer: Option<Uuid>,
    id: Uuid,
) -> Result<bool, StoreError> {
    let _turn = writer.take_turn().await;
    let txn = begin_write(writer.connection()).await?;
    let db = &txn;
    if get(db, customer, id).await?.is_none() {
        return Ok(false);
    }
    use entity::{webhook_attempts, webhook_deliveries};
    webhook_attempts::Entity::delete_many()
        .filter(webhook_attempts::Column::EndpointId.eq(id))
        .exec(db)
        .await?;
    webhook_deliveries::Entity::delete_many()
        .filter(webhook_deliveries::Column::EndpointId.eq(id))
        .exec(db)
        .await?;
    let deleted = Entity::delete_by_id(id).exec(db).await?.rows_affected > 0;
    txn.commit().await?;
    Ok(deleted)
}

/// A new secret; the old one keeps signing (beside it) for `grace`.
pub async fn rotate_secret<C: ConnectionTrait>(
    db: &C,
    customer: Option<Uuid>,
    id: Uuid,
    grace: chrono::Duration,
) -> Result<Option<Model>, StoreError> {
    let Some(found) = get(db, customer, id).await? else {
        return Ok(None);
    };
    let now = Utc::now();
    let old = found.secret.clone();
    let mut row: ActiveModel = found.into();
    row.previous_secret = Set(Some(old));
    row.previous_secret_until = Set(Some(now + grace));
    row.secret = Set(signing::new_secret());
    row.updated_at = Set(now);
    Ok(Some(row.update(db).await?))
}

/// The secrets that sign for `endpoint` at `now`: its own, and the one it replaced during
/// the grace period.
pub fn signing_secrets(endpoint: &Model, now: DateTime<Utc>) -> Vec<&str> {
    let mut secrets = vec![endpoint.secret.as_str()];
    if let (Some(old), Some(until)) = (&endpoint.previous_secret, endpoint.previous_secret_until) {
        if now < until {
            secrets.push(old.as_str());
        }
    }
    secrets
}

/// The endpoint's failure streak after an attempt: a success ends it; a failure starts it
/// or, once it has lasted `disable_after`, disables the endpoint. Returns whether this
/// call disabled it.
pub async fn record_attempt<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    succeeded: bool,
    now: DateTime<Utc>,
    disable_after: chrono::Duration,
) -> Result<bool, StoreError> {
    if succeeded {
        Entity::update_many()
            .col_expr(
                Column::FailingSince,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(Column::Id.eq(id))
            .filter(Column::FailingSince.is_not_null())
            .exec(db)
            .await?;
        return Ok(false);
    }
    Entity::update_many()
        .col_expr(Column::FailingSince, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::FailingSince.is_null())
        .exec(db)
        .await?;
    let reason = format!(
        "disabled by the service: every delivery failed for {}",
        humantime::format_duration(disable_after.to_std().unwrap_or_default())
    );
    let disabled = Entity::update_many()
        .col_expr(Column::Enabled, Expr::value(false))
        .col_expr(Column::DisabledReason, Expr::value(reason))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::Enabled.eq(true))
        .filter(Column::FailingSince.lte(now - disable_after))
        .exec(db)
        .await?;
    Ok(disabled.rows_affected > 0)
}
