//! DlqActor: parks events that cannot be processed, replays them on request, and purges
//! those older than the retention.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use sea_orm::DatabaseConnection;

use super::ErrorKind;
use crate::domain::Event;
use crate::queue::{Claimed, QueueBackend, QueueError, Settlement, Undecodable};
use crate::store::dead_letters::{self, NewDeadLetter};
use crate::store::{writer, StoreError};
use crate::telemetry::Metrics;

/// How long to wait before writing a dead letter again when the database refused it.
const REWRITE_DELAY: Duration = Duration::from_secs(1);

/// Park this delivery: it failed `attempts` times, last with `last_error`. It is
/// terminated on the queue once the dead letter is stored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeadLetter {
    pub claim: Claimed,
    pub attempts: u32,
    pub last_error: String,
    pub kind: ErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("dead letter {0} not found")]
    NotFound(i64),
    #[error("dead letter {0} was already replayed")]
    AlreadyReplayed(i64),
    #[error("dead letter {0} holds an event that cannot be read: {1}")]
    Unreadable(i64, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Park a message that is not an event, as it is, so an operator can see it; then
/// terminate it on the queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeadLetterUndecodable(pub Undecodable);

/// Re-enqueue one dead letter with a fresh attempt count.
#[derive(Message)]
#[rtype(result = "Result<(), DlqError>")]
pub struct Replay(pub i64);

/// Re-enqueue every dead letter not replayed yet; returns how many.
#[derive(Message)]
#[rtype(result = "Result<u64, DlqError>")]
pub struct ReplayAll;

/// Delete dead letters older than the retention now; returns how many.
#[derive(Message)]
#[rtype(result = "Result<u64, DlqError>")]
pub struct Purge;

pub struct DlqActor {
    db: DatabaseConnection,
    backend: Arc<dyn QueueBackend>,
    metrics: Arc<Metrics>,
    retention: Duration,
    purge_interval: Duration,
}

impl DlqActor {
    pub fn new(
        db: DatabaseConnection,
        backend: Arc<dyn QueueBackend>,
        metrics: Arc<Metrics>,
        retention: Duration,
        purge_interval: Duration,
    ) -> Self {
        DlqActor {
            db,
            backend,
            metrics,
            retention,
            purge_interval,
        }
    }
}

impl Actor for DlqActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.purge_interval, |act, ctx| {
            let (db, retention) = (act.db.clone(), act.retention);
            ctx.spawn(
                async move {
                    if let Err(err) = purge(&db, retention).await {
                        tracing::warn!(error = %err, "dead-letter purge failed");
                    }
                }
                .into_actor(act),
            );
        });
    }
}

async fn purge(db: &DatabaseConnection, retention: Duration) -> Result<u64, DlqError> {
    let cutoff =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let purged = dead_letters::purge(db, cutoff).await?;
    // Records of failed attempts are kept as long as dead letters, then go with them.
    crate::store::failures::purge(db, cutoff).await?;
    if purged > 0 {
        tracing::info!(purged, "dead letters past retention purged");
    }
    Ok(purged)
}

impl Handler<DeadLetter> for DlqActor {
    type Result = ();

    fn handle(&mut self, letter: DeadLetter, ctx: &mut Self::Context) {
        let db = self.db.clone();
        let write = async move {
            let result = dead_letters::insert(
                &db,
                NewDeadLetter {
                    event: letter.claim.event(),
                    attempts: letter.attempts,
                    last_error: &letter.last_error,
                    error_kind: letter.kind.as_str(),
                },
            )
            .await;
            (letter, result)
        };
        ctx.spawn(write.into_actor(self).map(|(letter, result), act, ctx| match result {
            Ok(row) => {
                act.metrics.dead_lettered.add(1, &[]);
                let event_id = letter.claim.event().event_id;
                tracing::warn!(dead_letter_id = row.id, event_id = %event_id, "dead letter stored");
                actix::spawn(async move {
                    if let Err(err) = letter.claim.term().await {
                        tracing::warn!(event_id = %event_id, error = %err, "could not terminate the dead-lettered event");
                    }
                });
            }
            // The event stays in flight on the queue (so a shutdown still spills it) and
            // the write is tried again: a dead letter is never dropped.
            Err(err) => {
                tracing::error!(error = %err, event_id = %letter.claim.event().event_id, "cannot store dead letter; will retry");
                ctx.notify_later(letter, REWRITE_DELAY);
            }
        }));
    }
}

impl Handler<DeadLetterUndecodable> for DlqActor {
    type Result = ();

    fn handle(
        &mut self,
        DeadLetterUndecodable(letter): DeadLetterUndecodable,
        ctx: &mut Self::Context,
    ) {
        let db = self.db.clone();
        let write = async move {
            let result = dead_letters::insert_undecodable(
                &db,
                &letter.key,
                &letter.payload,
                letter.attempts,
                letter.published_at,
                &letter.error,
            )
            .await;
            (letter, result)
        };
        ctx.spawn(write.into_actor(self).map(|(letter, result), act, ctx| match result {
            Ok(row) => {
                act.metrics.dead_lettered.add(1, &[]);
                tracing::warn!(dead_letter_id = row.id, key = %letter.key, error = %letter.error, "undecodable message stored as a dead letter");
                actix::spawn(async move {
                    if let Err(err) = letter.settle.settle(Settlement::Term).await {
                        tracing::warn!(error = %err, "could not terminate the undecodable message");
                    }
                });
            }
            Err(err) => {
                tracing::error!(error = %err, key = %letter.key, "cannot store an undecodable message; will retry");
                ctx.notify_later(DeadLetterUndecodable(letter), REWRITE_DELAY);
            }
        }));
    }
}

/// Puts a dead letter's event back on the queue as a new first attempt.
async fn replay(
    db: &DatabaseConnection,
    backend: &dyn QueueBackend,
    row: entity::dead_letters::Model,
) -> Result<(), DlqError> {
    if row.replayed_at.is_some() {
        return Err(DlqError::AlreadyReplayed(row.id));
    }
    let mut event: Event = serde_json::from_value(row.event.clone())
        .map_err(|e| DlqError::Unreadable(row.id, e.to_string()))?;
    event.attempt = 0;
    event.accepted_at = Utc::now();
    // Order matters. The message goes back to `queued` first, or the worker would find it
    // `failed` and not send it; the event is published before the dead letter is marked
    // replayed, so a failed publish leaves it replayable (a repeated replay is harmless:
    // the idempotency key makes the second one a no-op).
    writer::transition_status(db, &event, writer::STATUS_FAILED, writer::STATUS_QUEUED).await?;
    backend.republish(vec![event]).await?;
    dead_letters::mark_replayed(db, row.id).await?;
    Ok(())
}

impl Handler<Replay> for DlqActor {
    type Result = ResponseFuture<Result<(), DlqError>>;

    fn handle(&mut self, Replay(id): Replay, _: &mut Self::Context) -> Self::Result {
        let (db, backend) = (self.db.clone(), self.backend.clone());
        Box::pin(async move {
            let row = dead_letters::get(&db, id)
                .await?
                .ok_or(DlqError::NotFound(id))?;
            replay(&db, backend.as_ref(), row).await
        })
    }
}

impl Handler<ReplayAll> for DlqActor {
    type Result = ResponseFuture<Result<u64, DlqError>>;

    fn handle(&mut self, _: ReplayAll, _: &mut Self::Context) -> Self::Result {
        let (db, backend) = (self.db.clone(), self.backend.clone());
        Box::pin(async move {
            let mut replayed = 0;
            for row in dead_letters::pending(&db).await? {
                replay(&db, backend.as_ref(), row).await?;
                replayed += 1;
            }
            Ok(replayed)
        })
    }
}

impl Handler<Purge> for DlqActor {
    type Result = ResponseFuture<Result<u64, DlqError>>;

    fn handle(&mut self, _: Purge, _: &mut Self::Context) -> Self::Result {
        let (db, retention) = (self.db.clone(), self.retention);
        Box::pin(async move { purge(&db, retention).await })
    }
}
