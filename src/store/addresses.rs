//! The addresses customers own (SPEC §16): who an inbound message belongs to.

use chrono::Utc;
use entity::addresses::{ActiveModel, Column, Entity, Model};
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter, QueryOrder, Set, SqlErr,
};
use uuid::Uuid;

use super::read::{of_customer, Page};
use super::StoreError;
use crate::domain::OwnedAddress;

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// Owned already (by this customer or another: which one is not said).
    #[error("{0} is already owned")]
    Taken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Gives `address` to `customer`; an address has one owner at most.
pub async fn add<C: ConnectionTrait>(
    db: &C,
    customer: Uuid,
    address: &OwnedAddress,
) -> Result<Model, AddressError> {
    let row = ActiveModel {
        id: NotSet,
        customer_id: Set(customer),
        kind: Set(address.kind().to_string()),
        address: Set(address.as_str().to_string()),
        created_at: Set(Utc::now()),
    };
    row.insert(db).await.map_err(|err: DbErr| {
        if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
            AddressError::Taken(address.as_str().to_string())
        } else {
            AddressError::Store(err.into())
        }
    })
}

/// Oldest first; `customer` `None` for every customer's (an operator).
pub async fn list<C: ConnectionTrait>(
    db: &C,
    customer: Option<Uuid>,
    page: Page,
) -> Result<(Vec<Model>, u64), StoreError> {
    let query = of_customer(Entity::find(), Column::CustomerId, customer);
    page.fetch(db, query, |q| q.order_by_asc(Column::Id)).await
}

/// The address `id` if `customer` may see it.
pub async fn get<C: ConnectionTrait>(
    db: &C,
    customer: Option<Uuid>,
    id: i64,
) -> Result<Option<Model>, StoreError> {
    Ok(
        of_customer(Entity::find_by_id(id), Column::CustomerId, customer)
            .one(db)
            .await?,
    )
}

/// Gives the address up; `None` when `customer` has no address `id`.
pub async fn remove<C: ConnectionTrait>(
    db: &C,
    customer: Option<Uuid>,
    id: i64,
) -> Result<Option<Model>, StoreError> {
    let Some(row) = get(db, customer, id).await? else {
        return Ok(None);
    };
    Entity::delete_by_id(row.id).exec(db).await?;
    Ok(Some(row))
}

/// The customer owning `address`, if any (one indexed read).
pub async fn owner<C: ConnectionTrait>(
    db: &C,
    address: &OwnedAddress,
) -> Result<Option<Uuid>, StoreError> {
    Ok(Entity::find()
        .filter(Column::Address.eq(address.as_str()))
        .one(db)
        .await?
        .map(|row| row.customer_id))
}
