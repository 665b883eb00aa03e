//! A message's status (SPEC §6), and the one function that changes it.
//!
//! ```text
//! outbound: queued ──provider accepted──> sent ──receipt──> delivered
//!             │  ^                            └───receipt──> undelivered
//!  dead-lettered  replayed
//!             v  │
//!            failed
//! inbound:  received (never changes)
//! ```
//! Every change is conditional on the status it starts from, so a late or repeated change
//! (a second provider acceptance, a replay racing a dead letter, a `sent` receipt after
//! `delivered`) leaves the message alone.

use std::fmt;

use chrono::Utc;
use entity::messages::{self, Column};
use sea_orm::sea_query::{ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityName, Statement,
    Value,
};

use super::outbox::{self, EventType};
use super::{begin_write, StoreError};
use crate::domain::{Direction, Event};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// Stored, not yet accepted by the provider.
    Queued,
    /// Accepted by the provider.
    Sent,
    /// The provider's receipt says it reached the recipient.
    Delivered,
    /// The provider's receipt says it could not be delivered (its error kept).
    Undelivered,
    /// Dead-lettered.
    Failed,
    /// An inbound message.
    Received,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 6] = [
        Self::Queued,
        Self::Sent,
        Self::Delivered,
        Self::Undelivered,
        Self::Failed,
        Self::Received,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
            Self::Failed => "failed",
            Self::Received => "received",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The status a newly stored message starts in.
    pub fn initial(direction: Direction) -> Self {
        match direction {
            Direction::Outbound => Self::Queued,
            Direction::Inbound => Self::Received,
        }
    }

    /// The moves of the diagram above.
    pub fn may_become(self, to: Self) -> bool {
        matches!(
            (self, to),
            (Self::Queued, Self::Sent)
                | (Self::Sent, Self::Delivered)
                | (Self::Sent, Self::Undelivered)
                | (Self::Queued, Self::Failed)
                | (Self::Failed, Self::Queued)
        )
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which messages a status change applies to.
#[derive(Debug, Clone, Copy)]
pub enum Which<'a> {
    /// Messages a sender holds, each with the id its provider gave it (recorded with the
    /// change). Fenced: a message whose lease passed to another sender is left alone.
    Delivered(&'a [Delivered]),
    /// One message a sender holds (fenced the same way).
    Held { id: i64, lease_token: &'a str },
    /// The message stored for this event: its idempotency key, unless the event reused
    /// the key of another request (another fingerprint), whose message it is not.
    OfEvent(&'a Event),
    /// The message its provider knows as `provider_message_id` (a delivery receipt), with
    /// the provider's error when it could not deliver it.
    Receipt {
        /// The provider the receipt comes from, as `messages.sent_by` names it.
        sent_by: &'static str,
        provider_message_id: &'a str,
        error: Option<&'a str>,
    },
}

/// A provider's acceptance of a message held under `lease_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub id: i64,
    pub lease_token: String,
    pub provider_message_id: String,
    /// Which provider accepted it (see `messages.sent_by`).
    pub sent_by: &'static str,
}

/// [`transition`] in a write transaction of its own, committed before it returns.
pub async fn transition_committed(
    db: &DatabaseConnection,
    which: Which<'_>,
    from: MessageStatus,
    to: MessageStatus,
) -> Result<u64, StoreError> {
    let txn = begin_write(db).await?;
    let moved = transition(&txn, which, from, to).await?;
    txn.commit().await?;
    Ok(moved)
}

/// Moves the selected messages from `from` to `to`, leaving any message in another status
/// alone, and records the webhook event the move causes (see [`outbox`]) in the same
/// transaction. Returns how many moved.
pub async fn transition(
    db: &DatabaseTransaction,
    which: Which<'_>,
    from: MessageStatus,
    to: MessageStatus,
) -> Result<u64, StoreError> {
    if !from.may_become(to) {
        return Err(StoreError::Rejected(format!(
            "a message cannot go from {from} to {to}"
        )));
    }
    let moved = match which {
        Which::Delivered(sent) => delivered(db, sent, from, to).await?,
        _ => update(db, which, from, to).await?,
    };
    if let Some(event) = EventType::of_status(to) {
        outbox::record(db, event, &moved).await?;
    }
    Ok(moved.len() as u64)
}

/// The `UPDATE` of every case but [`Which::Delivered`]; returns the ids it moved.
async fn update(
    db: &DatabaseTransaction,
    which: Which<'_>,
    from: MessageStatus,
    to: MessageStatus,
) -> Result<Vec<i64>, StoreError> {
    let now = Utc::now();
    let mut update = Query::update()
        .table(messages::Entity.table_ref())
        .value(Column::Status, to.as_str())
        .value(Column::UpdatedAt, now)
        .and_where(Column::Status.eq(from.as_str()))
        .to_owned();
    // The delivery schedule lives only while a message is queued: a replay makes it due at
    // once with fresh attempts; leaving `queued` ends any sender's claim.
    if to == MessageStatus::Queued {
        update
            .value(Column::NextAttemptAt, now)
            .value(Column::DeliveryAttempts, 0)
            .value(Column::LeaseUntil, Option::<chrono::DateTime<Utc>>::None)
            .value(Column::LeaseToken, Option::<String>::None);
    } else {
        update
            .value(Column::NextAttemptAt, Option::<chrono::DateTime<Utc>>::None)
            .value(Column::LeaseUntil, Option::<chrono::DateTime<Utc>>::None)
            .value(Column::LeaseToken, Option::<String>::None);
    }
    if let Which::Held { id, lease_token } = which {
        update
            .and_where(Column::Id.eq(id))
            .and_where(Column::LeaseToken.eq(lease_token));
    }
    if let Which::Receipt {
        sent_by,
        provider_message_id,
        error,
    } = which
    {
        update
            .and_where(receipted_by(sent_by))
            .and_where(Column::ProviderMessageId.eq(provider_message_id))
            .value(Column::DeliveryError, error.map(str::to_string));
    }
    if let Which::OfEvent(event) = which {
        update.and_where(Column::IdempotencyKey.eq(event.idempotency_key.as_str()));
        if let Some(fingerprint) = &event.request_fingerprint {
            update.cond_where(
                Column::RequestFingerprint
                    .is_null()
                    .or(Column::RequestFingerprint.eq(fingerprint.as_str())),
            );
        }
    }
    update.returning_col(Column::Id);
    ids(db.query_all(&update).await?)
}

fn ids(rows: Vec<sea_orm::QueryResult>) -> Result<Vec<i64>, StoreError> {
    rows.iter()
        .map(|row| Ok(row.try_get_by_index::<i64>(0)?))
        .collect()
}

/// `sent_by = '<provider>'` as a literal: the index receipts use is partial on it, and
/// SQLite only uses a partial index when the query spells its condition the same way (a
/// bound value is not). `provider` comes from the code, never from a request.
pub(super) fn receipted_by(provider: &'static str) -> sea_orm::sea_query::SimpleExpr {
    debug_assert!(provider.bytes().all(|b| b.is_ascii_lowercase()));
    sea_orm::sea_query::Expr::cust(format!("sent_by = '{provider}'"))
}

/// The messages of `sent` with their provider ids, as one `UPDATE … FROM (VALUES …)` (both
/// databases take it), each only while its sender's lease token is still the message's.
/// Not a `CASE id WHEN …` per message: that is compiled and evaluated in O(n²) for a batch
/// of n. The statuses are written as literals (they come from the enum): a bound status
/// next to the partial index on queued messages made SQLite compile the statement twice.
async fn delivered(
    db: &DatabaseTransaction,
    sent: &[Delivered],
    from: MessageStatus,
    to: MessageStatus,
) -> Result<Vec<i64>, StoreError> {
    if sent.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let mut param = super::placeholders(backend);
    let mut values: Vec<Value> = Vec::with_capacity(1 + 4 * sent.len());
    let updated_at = param();
    values.push(Utc::now().into());
    let mut rows = String::with_capacity(sent.len() * 16);
    for (i, d) in sent.iter().enumerate() {
        if i > 0 {
            rows.push(',');
        }
        let row = format!("({}, {}, {}, {})", param(), param(), param(), param());
        rows.push_str(&row);
        values.push(d.id.into());
        values.push(d.lease_token.clone().into());
        values.push(d.provider_message_id.clone().into());
        values.push(d.sent_by.into());
    }
    let sql = format!(
        "UPDATE messages SET status = '{to}', updated_at = {updated_at}, \
         provider_message_id = v.column3, sent_by = v.column4, next_attempt_at = NULL, \
         lease_until = NULL, \
         lease_token = NULL FROM (VALUES {rows}) AS v \
         WHERE messages.id = v.column1 AND messages.lease_token = v.column2 \
         AND messages.status = '{from}' RETURNING messages.id"
    );
    let statement = Statement::from_sql_and_values(backend, sql, values);
    ids(db.query_all_raw(statement).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(MessageStatus::parse("QUEUED"), None);
    }

    #[test]
    fn only_the_moves_of_the_diagram_are_allowed() {
        use MessageStatus::*;
        let allowed: Vec<(MessageStatus, MessageStatus)> = MessageStatus::ALL
            .into_iter()
            .flat_map(|a| MessageStatus::ALL.map(|b| (a, b)))
            .filter(|(a, b)| a.may_become(*b))
            .collect();
        assert_eq!(
            allowed,
            [
                (Queued, Sent),
                (Queued, Failed),
                (Sent, Delivered),
                (Sent, Undelivered),
                (Failed, Queued)
            ]
        );
        assert_eq!(MessageStatus::initial(Direction::Outbound), Queued);
        assert_eq!(MessageStatus::initial(Direction::Inbound), Received);
    }
}
