//! The webhook outbox (SPEC §15): events recorded in the transaction of the change that
//! causes them, so a committed change always has its events and a rolled-back one none.
//!
//! An event becomes one `webhook_deliveries` row per enabled endpoint of the message's
//! customer that subscribes to its type, in one `INSERT … SELECT`; with no endpoints it
//! inserts nothing, and costs one statement per batch.

use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};

use super::status::MessageStatus;
use super::StoreError;

/// What happened to a message, as a customer subscribes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum EventType {
    /// An inbound message was stored.
    #[serde(rename = "message.received")]
    Received,
    /// The provider accepted an outbound message.
    #[serde(rename = "message.sent")]
    Sent,
    /// The provider's receipt says it reached the recipient.
    #[serde(rename = "message.delivered")]
    Delivered,
    /// The provider's receipt says it could not be delivered.
    #[serde(rename = "message.failed")]
    Failed,
    /// Its delivery failed for good: it is in the dead-letter queue.
    #[serde(rename = "message.dead_lettered")]
    DeadLettered,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        Self::Received,
        Self::Sent,
        Self::Delivered,
        Self::Failed,
        Self::DeadLettered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "message.received",
            Self::Sent => "message.sent",
            Self::Delivered => "message.delivered",
            Self::Failed => "message.failed",
            Self::DeadLettered => "message.dead_lettered",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// The event a move into `status` causes (a replay back to `queued` causes none).
    pub fn of_status(status: MessageStatus) -> Option<Self> {
        match status {
            MessageStatus::Received => Some(Self::Received),
            MessageStatus::Sent => Some(Self::Sent),
            MessageStatus::Delivered => Some(Self::Delivered),
            MessageStatus::Undelivered => Some(Self::Failed),
            MessageStatus::Failed => Some(Self::DeadLettered),
            MessageStatus::Queued => None,
        }
    }

    /// How a set of types is stored in `webhook_endpoints.event_types`: between commas, so
    /// `LIKE '%,<type>,%'` finds one; "" (every type) for an empty set.
    pub fn store_set(types: &[EventType]) -> String {
        if types.is_empty() {
            return String::new();
        }
        let mut names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        format!(",{},", names.join(","))
    }

    /// The inverse of [`Self::store_set`] (unknown names skipped).
    pub fn load_set(stored: &str) -> Vec<EventType> {
        stored.split(',').filter_map(Self::parse).collect()
    }
}

/// Records `event` for the messages `ids` (just changed in `txn`).
pub async fn record(
    txn: &DatabaseTransaction,
    event: EventType,
    ids: &[i64],
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let backend = txn.get_database_backend();
    let (now, due) = match backend {
        DbBackend::Postgres => ("$1", "$2"),
        _ => ("?", "?"),
    };
    // The ids are integers from the database and the type a name from the enum: both are
    // written into the statement, which stays one prepared shape per batch size.
    let ids = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let kind = event.as_str();
    let sql = format!(
        "INSERT INTO webhook_deliveries \
         (endpoint_id, customer_id, message_id, event_type, created_at, state, attempts, next_attempt_at) \
         SELECT e.id, e.customer_id, m.id, '{kind}', {now}, 'pending', 0, {due} \
         FROM messages m JOIN webhook_endpoints e ON e.customer_id = m.customer_id \
         WHERE m.id IN ({ids}) AND e.enabled \
         AND (e.event_types = '' OR e.event_types LIKE '%,{kind},%')"
    );
    let at = Utc::now();
    let statement = Statement::from_sql_and_values(backend, sql, [at.into(), at.into()]);
    Ok(txn.execute_raw(statement).await?.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_sets_round_trip_through_their_stored_form() {
        use EventType::*;
        assert_eq!(EventType::store_set(&[]), "");
        let stored = EventType::store_set(&[Sent, Received, Sent]);
        assert_eq!(stored, ",message.received,message.sent,");
        assert_eq!(EventType::load_set(&stored), vec![Received, Sent]);
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn every_status_but_a_replay_causes_an_event() {
        for status in MessageStatus::ALL {
            assert_eq!(
                EventType::of_status(status).is_none(),
                status == MessageStatus::Queued
            );
        }
    }
}
