//! The `event_failures` table: the last failed attempt of each event that failed, for the
//! status resource. Written by the RetryScheduler on the failure path only.

use chrono::{DateTime, Utc};
use entity::event_failures::{ActiveModel, Column, Entity, Model};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::StoreError;
use crate::domain::Event;

/// One failed attempt of `event`: recorded for the status resource, and what a dead
/// letter keeps of the last one ([`super::dead_letters::NewDeadLetter`]).
pub struct Failure<'a> {
    pub event: &'a Event,
    /// Failed attempts so far, this one included.
    pub attempts: u32,
    pub error: &'a str,
    pub error_kind: &'a str,
    /// What the customer is told (`domain::ErrorCode`).
    pub error_code: &'a str,
}

/// Records the failure, replacing the event's earlier one; `dead_lettered` when no retry
/// follows (the event goes to the dead-letter queue). Events whose key is not a
/// well-formed key (an invalid event off the queue) are not recorded: no status URL can
/// name them.
pub async fn record<C: ConnectionTrait>(
    db: &C,
    failure: &Failure<'_>,
    dead_lettered: bool,
) -> Result<(), StoreError> {
    let key = &failure.event.idempotency_key;
    if !key.is_well_formed() {
        return Ok(());
    }
    let row = ActiveModel {
        idempotency_key: Set(key.as_str().to_string()),
        customer_id: Set(failure.event.customer_id),
        attempts: Set(i32::try_from(failure.attempts).unwrap_or(i32::MAX)),
        // Bounded: a provider's error text can be long, and this is shown, not analysed.
        last_error: Set(truncate(failure.error, 2000)),
        error_kind: Set(failure.error_kind.to_string()),
        error_code: Set(Some(failure.error_code.to_string())),
        dead_lettered: Set(dead_lettered),
        failed_at: Set(Utc::now()),
    };
    Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::IdempotencyKey)
                .update_columns([
                    Column::CustomerId,
                    Column::Attempts,
                    Column::LastError,
                    Column::ErrorKind,
                    Column::ErrorCode,
                    Column::DeadLettered,
                    Column::FailedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn get<C: ConnectionTrait>(db: &C, key: &str) -> Result<Option<Model>, StoreError> {
    Ok(Entity::find_by_id(key.to_string()).one(db).await?)
}

/// Deletes records of failures older than `cutoff` (with the dead letters' retention).
pub async fn purge<C: ConnectionTrait>(db: &C, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    Ok(Entity::delete_many()
        .filter(Column::FailedAt.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected)
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééééé", 2), "éé…");
    }
}
