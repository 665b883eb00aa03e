//! The webhook outbox's rows after they are recorded (see [`super::outbox`]): claimed with
//! a lease by a deliverer, settled once per attempt (delivered, retried later, or failed
//! for good), and replayed by their customer.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use entity::webhook_attempts;
use entity::webhook_deliveries::{Column, Entity, Model};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Set,
};
use uuid::Uuid;

use super::begin_write;
use super::read::Page;
use super::writer::MessageWriter;
use super::{webhook_endpoints, StoreError};

/// Candidates looked at per claim.
const CANDIDATES: u64 = 512;

/// A delivery's states, as stored.
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// Claims due deliveries under `token` until `lease_until`: at most `room` in all and, per
/// endpoint, at most its free slots (`slots` minus `busy[endpoint]`), so an endpoint with
/// a backlog cannot take the room of the others.
pub async fn claim(
    writer: &MessageWriter,
    token: &str,
    lease_until: DateTime<Utc>,
    room: usize,
    slots: usize,
    busy: &HashMap<Uuid, usize>,
) -> Result<Vec<Model>, StoreError> {
    let now = Utc::now();
    let full: Vec<Uuid> = busy
        .iter()
        .filter(|(_, n)| **n >= slots)
        .map(|(id, _)| *id)
        .collect();
    let candidates: Vec<(i64, Uuid)> = Entity::find()
        .select_only()
        .columns([Column::Id, Column::EndpointId])
        .filter(Column::State.eq(PENDING))
        .filter(Column::NextAttemptAt.lte(now))
        .apply_if((!full.is_empty()).then_some(full), |q, full| {
            q.filter(Column::EndpointId.is_not_in(full))
        })
        .order_by_asc(Column::NextAttemptAt)
        .limit(CANDIDATES)
        .into_tuple()
        .all(writer.connection())
        .await?;
    let mut taken: HashMap<Uuid, usize> = HashMap::new();
    let mut chosen = Vec::new();
    for (id, endpoint) in candidates {
        if chosen.len() >= room {
            break;
        }
        let n = taken.entry(endpoint).or_insert(0);
        if busy.get(&endpoint).copied().unwrap_or(0) + *n < slots {
            *n += 1;
            chosen.push(id);
        }
    }
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    {
        let _turn = writer.take_turn().await;
        // Another process may have claimed some since: the conditions are checked again.
        Entity::update_many()
            .col_expr(Column::NextAttemptAt, Expr::value(lease_until))
            .col_expr(Column::LeaseToken, Expr::value(token))
            .filter(Column::Id.is_in(chosen.clone()))
            .filter(Column::State.eq(PENDING))
            .filter(Column::NextAttemptAt.lte(now))
            .exec(writer.connection())
            .await?;
    }
    Ok(Entity::find()
        .filter(Column::Id.is_in(chosen))
        .filter(Column::LeaseToken.eq(token))
        .filter(Column::State.eq(PENDING))
        .all(writer.connection())
        .await?)
}

/// One call to an endpoint, as its customer sees it.
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub response: Option<String>,
    pub error: Option<String>,
}

impl Attempt {
    /// An attempt started at `at` that has no answer (yet).
    pub fn none_at(at: DateTime<Utc>) -> Self {
        Attempt {
            at,
            status_code: None,
            latency_ms: 0,
            response: None,
            error: None,
        }
    }
}

/// What becomes of a delivery after an attempt.
pub enum Next {
    Delivered,
    RetryAt(DateTime<Utc>),
    /// No retry left, or its endpoint is gone or disabled.
    Failed,
}

/// What [`settle`] did.
pub struct Settled {
    /// false when the lease had passed to another deliverer (nothing was written).
    pub applied: bool,
    /// The attempt disabled the endpoint.
    pub disabled_endpoint: bool,
}

/// Settles a delivery held under `token`, exactly once: the attempt recorded (when one
/// was made), the delivery moved on, the endpoint's failure streak updated, in one
/// transaction.
pub async fn settle(
    writer: &MessageWriter,
    delivery: &Model,
    token: &str,
    payload: Option<&str>,
    attempt: Option<Attempt>,
    next: Next,
    disable_after: chrono::Duration,
) -> Result<Settled, StoreError> {
    let now = Utc::now();
    let (state, due) = match next {
        Next::Delivered => (DELIVERED, None),
        Next::RetryAt(at) => (PENDING, Some(at)),
        Next::Failed => (FAILED, None),
    };
    let _turn = writer.take_turn().await;
    let txn = begin_write(writer.connection()).await?;
    let mut update = Entity::update_many()
        .col_expr(Column::State, Expr::value(state))
        .col_expr(Column::NextAttemptAt, Expr::value(due))
        .col_expr(Column::LeaseToken, Expr::value(Option::<String>::None))
        .col_expr(
            Column::SettledAt,
            Expr::value((state != PENDING).then_some(now)),
        );
    if let Some(payload) = payload {
        update = update.col_expr(Column::Payload, Expr::value(payload));
    }
    if let Some(a) = &attempt {
        update = update
            .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
            .col_expr(
                Column::LastStatusCode,
                Expr::value(a.status_code.map(i32::from)),
            )
            .col_expr(Column::LastError, Expr::value(a.error.clone()));
    }
    let moved = update
        .filter(Column::Id.eq(delivery.id))
        .filter(Column::LeaseToken.eq(token))
        .filter(Column::State.eq(PENDING))
        .exec(&txn)
        .await?
        .rows_affected;
    if moved == 0 {
        return Ok(Settled {
            applied: false,
            disabled_endpoint: false,
        });
    }
    let mut disabled_endpoint = false;
    if let Some(a) = attempt {
        let succeeded = matches!(a.status_code, Some(200..=299));
        webhook_attempts::ActiveModel {
            delivery_id: Set(delivery.id),
            endpoint_id: Set(delivery.endpoint_id),
            attempted_at: Set(a.at),
            status_code: Set(a.status_code.map(i32::from)),
            latency_ms: Set(a.latency_ms),
            response: Set(a.response),
            error: Set(a.error),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        disabled_endpoint = webhook_endpoints::record_attempt(
            &txn,
            delivery.endpoint_id,
            succeeded,
            now,
            disable_after,
        )
        .await?;
    }
    txn.commit().await?;
    Ok(Settled {
        applied: true,
        disabled_endpoint,
    })
}

/// Makes the deliveries held under `token` due again at once (a deliverer stopping with
/// calls in flight). Returns how many.
pub async fn give_back(
    writer: &MessageWriter,
    token: &str,
    ids: &HashSet<i64>,
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let _turn = writer.take_turn().await;
    Ok(Entity::update_many()
        .col_expr(Column::NextAttemptAt, Expr::value(Utc::now()))
        .col_expr(Column::LeaseToken, Expr::value(Option::<String>::None))
        .filter(Column::Id.is_in(ids.iter().copied()))
        .filter(Column::LeaseToken.eq(token))
        .filter(Column::State.eq(PENDING))
        .exec(writer.connection())
        .await?
        .rows_affected)
}

/// An endpoint's attempts, newest first.
pub async fn attempts<C: ConnectionTrait>(
    db: &C,
    endpoint: Uuid,
    page: Page,
) -> Result<(Vec<(webhook_attempts::Model, String)>, u64), StoreError> {
    use webhook_attempts::Column as A;
    let query = webhook_attempts::Entity::find().filter(A::EndpointId.eq(endpoint));
    let (items, total) = page.fetch(db, query, |q| q.order_by_desc(A::Id)).await?;
    let ids: Vec<i64> = items.iter().map(|a| a.delivery_id).collect();
    let types: HashMap<i64, String> = Entity::find()
        .select_only()
        .columns([Column::Id, Column::EventType])
        .filter(Column::Id.is_in(ids))
        .into_tuple::<(i64, String)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let items = items
        .into_iter()
        .map(|a| {
            let event_type = types.get(&a.delivery_id).cloned().unwrap_or_default();
            (a, event_type)
        })
        .collect();
    Ok((items, total))
}

/// Makes an endpoint's failed deliveries pending again, due at once with fresh attempts.
/// Returns how many.
pub async fn replay_failed(writer: &MessageWriter, endpoint: Uuid) -> Result<u64, StoreError> {
    let _turn = writer.take_turn().await;
    Ok(Entity::update_many()
        .col_expr(Column::State, Expr::value(PENDING))
        .col_expr(Column::NextAttemptAt, Expr::value(Utc::now()))
        .col_expr(Column::Attempts, Expr::value(0))
        .col_expr(
            Column::SettledAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(Column::EndpointId.eq(endpoint))
        .filter(Column::State.eq(FAILED))
        .exec(writer.connection())
        .await?
        .rows_affected)
}

/// Deletes deliveries settled before `cutoff` (`dlq.retention`) and attempts made before
/// it; pending deliveries stay whatever their age. Returns how many deliveries went.
pub async fn purge<C: ConnectionTrait>(db: &C, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    webhook_attempts::Entity::delete_many()
        .filter(webhook_attempts::Column::AttemptedAt.lt(cutoff))
        .exec(db)
        .await?;
    Ok(Entity::delete_many()
        .filter(Column::State.ne(PENDING))
        .filter(Column::SettledAt.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected)
}

/// Deliveries not settled yet, whoever holds them (`messaging_webhook_pending`).
pub async fn count_pending<C: ConnectionTrait>(db: &C) -> Result<u64, StoreError> {
    Ok(Entity::find()
        .filter(Column::State.eq(PENDING))
        .count(db)
        .await?)
}

/// An endpoint's deliveries by state: pending, delivered, failed.
pub async fn counts<C: ConnectionTrait>(
    db: &C,
    endpoint: Uuid,
) -> Result<HashMap<String, u64>, StoreError> {
    let rows: Vec<(String, i64)> = Entity::find()
        .select_only()
        .column(Column::State)
        .column_as(Column::Id.count(), "n")
        .filter(Column::EndpointId.eq(endpoint))
        .group_by(Column::State)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(state, n)| (state, u64::try_from(n).unwrap_or(0)))
        .collect())
}
