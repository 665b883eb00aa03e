//! Writing dead letters: plain, else encoded, else to the log; again later when the
//! database is down. Writes run detached, so a restart of the actor never cuts one short.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::FutureExt;
use sea_orm::DatabaseConnection;

use super::{DeadLetter, DeadLetterUndecodable, DlqActor, ACTOR, REWRITE_DELAY};
use crate::actors::supervision;
use crate::domain::Event;
use crate::queue::{Claimed, Settlement, Undecodable};
use crate::store::dead_letters::{self, NewDeadLetter};
use crate::store::StoreError;
use crate::telemetry::Metrics;

/// What a detached write needs.
pub(super) struct Writer {
    pub(super) db: DatabaseConnection,
    pub(super) metrics: Arc<Metrics>,
    /// Where a letter goes to be written again after a transient failure.
    pub(super) again: Addr<DlqActor>,
}

/// How a dead letter ended up stored.
enum Stored {
    Plain(i64),
    Encoded(i64),
}

impl Writer {
    pub(super) async fn write(self, letter: DeadLetter) {
        let result = AssertUnwindSafe(self.store(&letter)).catch_unwind().await;
        let event = letter.claim.event().clone();
        match result {
            Ok(Ok(stored)) => {
                self.metrics.dead_lettered.add(1, &[]);
                let (id, encoded) = match stored {
                    Stored::Plain(id) => (id, false),
                    Stored::Encoded(id) => (id, true),
                };
                tracing::warn!(dead_letter_id = id, event_id = %event.event_id, encoded, "dead letter stored");
                terminate(letter.claim).await;
            }
            Ok(Err(err)) if err.is_transient() => {
                // The event stays in flight on the queue (so a shutdown still spills it)
                // and the write is tried again: a dead letter is never dropped.
                tracing::error!(error = %err, event_id = %event.event_id, "cannot store dead letter; will retry");
                self.retry_later(letter);
            }
            Ok(Err(err)) => {
                self.give_up(&event, &letter, &err.to_string()).await;
                terminate(letter.claim).await;
            }
            Err(panic) => {
                let reason = supervision::panic_message(panic);
                supervision::record_panic(ACTOR, &reason, &self.metrics);
                self.retry_later(letter);
            }
        }
    }

    /// Plain first; encoded when the plain form is refused as permanent.
    async fn store(&self, letter: &DeadLetter) -> Result<Stored, StoreError> {
        let new = || NewDeadLetter {
            event: letter.claim.event(),
            attempts: letter.attempts,
            error: &letter.last_error,
            error_kind: letter.kind.as_str(),
            error_code: letter.code.as_str(),
        };
        match dead_letters::insert(&self.db, new()).await {
            Ok(row) => Ok(Stored::Plain(row.id)),
            Err(err) if err.is_transient() => Err(err),
            Err(err) => {
                tracing::warn!(error = %err, event_id = %letter.claim.event().event_id, "dead letter refused as it is; storing it encoded");
                let row = dead_letters::insert_encoded(&self.db, new()).await?;
                Ok(Stored::Encoded(row.id))
            }
        }
    }

    /// The last resort: the event goes to the log, whole, since the database keeps no copy.
    async fn give_up(&self, event: &Event, letter: &DeadLetter, error: &str) {
        let json = serde_json::to_string(event).unwrap_or_else(|e| format!("{event:?} ({e})"));
        tracing::error!(
            event_id = %event.event_id,
            attempts = letter.attempts,
            last_error = %letter.last_error,
            error,
            event = %json,
            "the database refused the dead letter even encoded; the event is logged here and dropped from the queue"
        );
        self.metrics.dlq_write_failures.add(1, &[]);
        // So its message is not re-driven as stuck: it has an outcome, if only in the log.
        if let Err(err) = dead_letters::fail_message_of(&self.db, event).await {
            tracing::warn!(event_id = %event.event_id, error = %err, "cannot mark the message failed");
        }
    }

    /// Hands the letter back to the actor after [`REWRITE_DELAY`], from a detached timer (an
    /// actor's own timers die with a restart, and the letter with them).
    fn retry_later(self, letter: DeadLetter) {
        actix::spawn(async move {
            tokio::time::sleep(REWRITE_DELAY).await;
            if let Err(err) = self.again.try_send(letter) {
                tracing::error!(error = %err, "dead-letter actor unreachable; the event comes back when the queue redelivers it");
            }
        });
    }

    /// An undecodable message (not an event): its payload is stored as it came.
    pub(super) async fn write_undecodable(self, letter: Undecodable) {
        let write = dead_letters::insert_undecodable(
            &self.db,
            &letter.key,
            &letter.payload,
            letter.attempts,
            letter.published_at,
            &letter.error,
        );
        let result = AssertUnwindSafe(write)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let reason = supervision::panic_message(panic);
                supervision::record_panic(ACTOR, &reason, &self.metrics);
                Err(StoreError::Unavailable(format!("panicked: {reason}")))
            });
        match result {
            Ok(row) => {
                self.metrics.dead_lettered.add(1, &[]);
                tracing::warn!(dead_letter_id = row.id, key = %letter.key, error = %letter.error, "undecodable message stored as a dead letter");
            }
            Err(err) if err.is_transient() => {
                tracing::error!(error = %err, key = %letter.key, "cannot store an undecodable message; will retry");
                tokio::time::sleep(REWRITE_DELAY).await;
                if let Err(err) = self.again.try_send(DeadLetterUndecodable(letter)) {
                    tracing::error!(error = %err, "dead-letter actor unreachable; the message comes back when the queue redelivers it");
                }
                return;
            }
            Err(err) => {
                tracing::error!(
                    key = %letter.key,
                    error = %err,
                    payload_hex = %hex::encode(&letter.payload),
                    "the database refused an undecodable message; it is logged here and dropped from the queue"
                );
                self.metrics.dlq_write_failures.add(1, &[]);
            }
        }
        if let Err(err) = letter.settle.settle(Settlement::Term).await {
            tracing::warn!(error = %err, "could not terminate the undecodable message");
        }
    }
}

pub(super) async fn terminate(claim: Claimed) {
    let event_id = claim.event().event_id;
    if let Err(err) = claim.term().await {
        tracing::warn!(event_id = %event_id, error = %err, "could not terminate the dead-lettered event");
    }
}
