//! What became of an accepted event, by idempotency key (SPEC §12): the facts the database
//! holds about it, and the one function that turns those facts (and whether the queue
//! still holds the event) into the progress the status resource reports. (The status a
//! stored message has, and its changes, are `super::status`.)

use chrono::{DateTime, Utc};
use entity::{dead_letters, event_failures, messages};
use sea_orm::{
    AccessMode, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    IsolationLevel, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use serde::Serialize;
use uuid::Uuid;

use super::read::of_customer;
use super::status::MessageStatus;
use super::{failures, StoreError};
use crate::domain::ErrorCode;

/// How far an accepted message got, as the status resource reports it (its `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// Accepted and queued; not stored yet.
    Pending,
    /// Outbound, stored, not sent yet.
    Stored,
    /// Outbound, accepted by the provider.
    Sent,
    /// Outbound, and the provider's receipt says it reached the recipient.
    Delivered,
    /// Outbound, and the provider's receipt says it could not be delivered (`last_error`
    /// holds the provider's error).
    Undelivered,
    /// Inbound, stored.
    Received,
    /// An attempt failed and another will follow.
    Failed,
    /// Parked in the dead-letter queue (not replayed).
    DeadLettered,
}

impl Progress {
    pub fn as_str(self) -> &'static str {
        match self {
            Progress::Pending => "pending",
            Progress::Stored => "stored",
            Progress::Sent => "sent",
            Progress::Delivered => "delivered",
            Progress::Undelivered => "undelivered",
            Progress::Received => "received",
            Progress::Failed => "failed",
            Progress::DeadLettered => "dead_lettered",
        }
    }
}

/// What the database knows about one key, limited to what the caller may see.
#[derive(Debug, Default)]
pub struct Facts {
    pub message: Option<messages::Model>,
    pub failure: Option<event_failures::Model>,
    /// The latest dead letter of the key.
    pub dead_letter: Option<dead_letters::Model>,
}

/// The event as the queue holds it.
#[derive(Debug, Clone, Copy)]
pub struct Queued {
    pub accepted_at: DateTime<Utc>,
}

/// A resolved status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub status: Progress,
    /// Processing attempts so far: failed ones, plus the one that stored the message.
    pub attempts: u32,
    /// Why, while the status is `failed`, `dead_lettered` or `undelivered`.
    pub error_code: Option<ErrorCode>,
    /// The code's public message (the raw error is for operators: dead letters, logs);
    /// the carrier's error code, when `undelivered`.
    pub last_error: Option<String>,
    pub message_id: Option<i64>,
    pub conversation_id: Option<i64>,
    pub provider_message_id: Option<String>,
    /// Once sent: which provider accepted it.
    pub provider: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// When the next delivery attempt is due, while a failed one is waiting for it.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Reads the facts about `key` that belong to `customer` (`None`: any customer's). Three
/// indexed point reads; nothing here is on the message path.
///
/// The three reads see one snapshot (a read-only transaction, REPEATABLE READ on
/// PostgreSQL): read one by one, a dead letter committed between them showed its message
/// `failed` without the dead letter that says why (attempts 0, no error).
pub async fn facts(
    db: &DatabaseConnection,
    key: &str,
    customer: Option<Uuid>,
) -> Result<Facts, StoreError> {
    let txn = match db.get_database_backend() {
        DbBackend::Postgres => {
            db.begin_with_config(
                Some(IsolationLevel::RepeatableRead),
                Some(AccessMode::ReadOnly),
            )
            .await?
        }
        // A SQLite read transaction is a snapshot from its first read on.
        _ => db.begin().await?,
    };
    let facts = read_facts(&txn, key, customer).await?;
    txn.commit().await?;
    Ok(facts)
}

async fn read_facts<C: ConnectionTrait>(
    db: &C,
    key: &str,
    customer: Option<Uuid>,
) -> Result<Facts, StoreError> {
    let dead_letter = dead_letters::Entity::find()
        .filter(dead_letters::Column::IdempotencyKey.eq(key))
        .order_by_desc(dead_letters::Column::Id)
        .limit(1)
        .one(db)
        .await?
        // The customer is inside the stored event; a payload that is no event belongs to
        // nobody but the operators.
        .filter(|d| customer.is_none_or(|c| event_customer(&d.event) == Some(c)));
    let failure = failures::get(db, key)
        .await?
        .filter(|f| customer.is_none_or(|c| f.customer_id == c));
    let of_key = messages::Entity::find().filter(messages::Column::IdempotencyKey.eq(key));
    let message = of_customer(of_key, messages::Column::CustomerId, customer)
        .one(db)
        .await?;
    Ok(Facts {
        message,
        failure,
        dead_letter,
    })
}

fn event_customer(event: &serde_json::Value) -> Option<Uuid> {
    event.get("customer_id")?.as_str()?.parse().ok()
}

impl Facts {
    /// Whether the database alone settles the status (the queue need not be asked).
    pub fn settled(&self) -> bool {
        self.message.is_some()
            || self
                .dead_letter
                .as_ref()
                .is_some_and(|d| d.replayed_at.is_none())
    }
}

/// The one mapping from facts to a status; `None` when nothing is known of the key.
pub fn resolve(facts: &Facts, queued: Option<Queued>) -> Option<Resolved> {
    // A failure recorded since the message last changed, with a retry to follow.
    let retrying = |since: Option<DateTime<Utc>>| {
        facts
            .failure
            .as_ref()
            .filter(|f| !f.dead_lettered && since.is_none_or(|t| f.failed_at >= t))
    };
    let attempts_after_success = facts
        .failure
        .as_ref()
        .filter(|f| !f.dead_lettered)
        .map_or(1, |f| f.attempts.max(0) as u32 + 1);
    let public = |code: &Option<String>| {
        let code = ErrorCode::parse(code.as_deref());
        (Some(code), Some(code.public_message().to_string()))
    };
    let failed = |f: &event_failures::Model, base: Resolved| {
        let (error_code, last_error) = public(&f.error_code);
        Resolved {
            status: Progress::Failed,
            attempts: f.attempts.max(0) as u32,
            error_code,
            last_error,
            updated_at: f.failed_at,
            ..base
        }
    };
    let dead = |base: Resolved| {
        let (attempts, (error_code, last_error), at) = match (&facts.dead_letter, &facts.failure) {
            (Some(d), _) => (d.attempts, public(&d.error_code), d.dead_at),
            (None, Some(f)) => (f.attempts, public(&f.error_code), f.failed_at),
            (None, None) => (0, (None, None), base.updated_at),
        };
        Resolved {
            status: Progress::DeadLettered,
            attempts: attempts.max(0) as u32,
            error_code,
            last_error,
            updated_at: at,
            ..base
        }
    };

    if let Some(m) = &facts.message {
        let base = Resolved {
            status: Progress::Stored,
            attempts: attempts_after_success,
            error_code: None,
            last_error: None,
            message_id: Some(m.id),
            conversation_id: Some(m.conversation_id),
            provider_message_id: m.provider_message_id.clone(),
            provider: m.sent_by.clone(),
            updated_at: m.updated_at,
            next_attempt_at: None,
        };
        return Some(match MessageStatus::parse(&m.status) {
            Some(MessageStatus::Received) => Resolved {
                status: Progress::Received,
                ..base
            },
            Some(MessageStatus::Sent) => Resolved {
                status: Progress::Sent,
                ..base
            },
            Some(MessageStatus::Delivered) => Resolved {
                status: Progress::Delivered,
                ..base
            },
            Some(MessageStatus::Undelivered) => Resolved {
                status: Progress::Undelivered,
                error_code: Some(ErrorCode::Undelivered),
                last_error: m.delivery_error.clone(),
                ..base
            },
            // A message is `failed` once its event is dead-lettered; a replay moves it back.
            Some(MessageStatus::Failed) => dead(base),
            Some(MessageStatus::Queued) | None => match retrying(Some(m.updated_at)) {
                Some(f) => Resolved {
                    // Not while a sender holds it (then the lease's end is no schedule).
                    next_attempt_at: m.next_attempt_at.filter(|_| m.lease_token.is_none()),
                    ..failed(f, base)
                },
                None => base,
            },
        });
    }
    let nothing = Resolved {
        status: Progress::Pending,
        attempts: 0,
        error_code: None,
        last_error: None,
        message_id: None,
        conversation_id: None,
        provider_message_id: None,
        provider: None,
        updated_at: Utc::now(),
        next_attempt_at: None,
    };
    if facts
        .dead_letter
        .as_ref()
        .is_some_and(|d| d.replayed_at.is_none())
    {
        return Some(dead(nothing));
    }
    if let Some(q) = queued {
        let base = Resolved {
            updated_at: q.accepted_at,
            ..nothing
        };
        return Some(match retrying(None) {
            Some(f) => failed(f, base),
            None => base,
        });
    }
    // Dead-lettered, and the dead letter since deleted (or purged).
    match &facts.failure {
        Some(f) if f.dead_lettered => Some(dead(nothing)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, second).unwrap()
    }

    fn message(status: MessageStatus, updated: u32) -> messages::Model {
        messages::Model {
            id: 7,
            conversation_id: 3,
            customer_id: Uuid::nil(),
            direction: "outbound".into(),
            channel: "sms".into(),
            from_address: "+12016661234".into(),
            to_address: "+18045551234".into(),
            subject: None,
            body_id: 1,
            attachments: serde_json::json!([]),
            metadata: None,
            sent_at: at(0),
            received_at: at(0),
            status: status.as_str().into(),
            provider_message_id: None,
            idempotency_key: "k".into(),
            created_at: at(0),
            updated_at: at(updated),
            next_attempt_at: None,
            lease_until: None,
            lease_token: None,
            delivery_attempts: 0,
            traceparent: None,
            sent_by: None,
            delivery_error: None,
            request_fingerprint: None,
        }
    }

    fn failure(attempts: i32, when: u32, dead_lettered: bool) -> event_failures::Model {
        event_failures::Model {
            idempotency_key: "k".into(),
            customer_id: Uuid::nil(),
            attempts,
            last_error: "provider said 503".into(),
            error_kind: "transient".into(),
            error_code: Some("provider_unavailable".into()),
            dead_lettered,
            failed_at: at(when),
        }
    }

    /// What a tenant reads for the failure above: its code's public message, never the
    /// provider's words.
    const UNAVAILABLE: &str = "The provider was unavailable.";

    /// The facts of a key with this message and failure record, and nothing else.
    fn facts(message: Option<messages::Model>, failure: Option<event_failures::Model>) -> Facts {
        Facts {
            message,
            failure,
            ..Facts::default()
        }
    }

    fn status(facts: Facts, queued: bool) -> Option<(Progress, u32, Option<String>)> {
        let queued = queued.then_some(Queued { accepted_at: at(0) });
        resolve(&facts, queued).map(|r| (r.status, r.attempts, r.last_error))
    }

    #[test]
    fn a_failure_counts_only_when_it_is_newer_than_the_message() {
        // The provider failed after the message was stored: failed, retry to come.
        let provider_failed = facts(
            Some(message(MessageStatus::Queued, 1)),
            Some(failure(2, 5, false)),
        );
        assert_eq!(
            status(provider_failed, true),
            Some((Progress::Failed, 2, Some(UNAVAILABLE.into())))
        );
        // The database failed before the message was stored, then the retry stored it.
        let stored_since = facts(
            Some(message(MessageStatus::Queued, 9)),
            Some(failure(1, 5, false)),
        );
        assert_eq!(
            status(stored_since, true),
            Some((Progress::Stored, 2, None))
        );
    }

    #[test]
    fn a_replayed_dead_letter_starts_over() {
        let replayed = facts(None, Some(failure(10, 5, true)));
        assert_eq!(status(replayed, true), Some((Progress::Pending, 0, None)));
        let sent_after_replay = facts(
            Some(message(MessageStatus::Sent, 9)),
            Some(failure(10, 5, true)),
        );
        assert_eq!(
            status(sent_after_replay, false),
            Some((Progress::Sent, 1, None))
        );
    }

    #[test]
    fn unknown_keys_resolve_to_nothing() {
        assert_eq!(status(Facts::default(), false), None);
        let retrying_elsewhere = facts(None, Some(failure(1, 5, false)));
        assert_eq!(status(retrying_elsewhere, false), None);
        let dead_and_deleted = facts(None, Some(failure(3, 5, true)));
        assert_eq!(
            status(dead_and_deleted, false),
            Some((Progress::DeadLettered, 3, Some(UNAVAILABLE.into())))
        );
    }
}
