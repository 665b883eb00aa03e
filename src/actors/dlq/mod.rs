//! DlqActor: parks events that cannot be processed, replays them on request, and purges
//! those older than the retention.
//!
//! A dead letter is always settled. When the database refuses it as permanent (data it
//! cannot store), it is stored encoded (the event's JSON as hex), and if even that is
//! refused, the event is logged whole at error level, counted in
//! `messaging_dlq_write_failures_total`, and terminated: one bad event can never hold its
//! place in the queue forever. A transient refusal (the database is down) is retried every
//! second, the event staying owned by the queue meanwhile.
//!
//! Writes run in detached tasks, so a restart of the actor (see [`super::supervision`])
//! never drops a dead letter in the middle of being written.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use sea_orm::DatabaseConnection;

use super::faults::{Faults, Site};
use super::supervision::{self, Ping};
use super::ErrorKind;
use crate::domain::{ErrorCode, Event};
use crate::queue::{Claimed, QueueBackend, QueueError, Undecodable};
use crate::store::dead_letters;
use crate::store::status::{self, MessageStatus, Which};
use crate::store::StoreError;
use crate::telemetry::Metrics;

mod writer;

use writer::Writer;

/// The label of this actor in `messaging_actor_restarts_total`.
pub(super) const ACTOR: &str = "dlq";

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
    pub code: ErrorCode,
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
    pub(super) metrics: Arc<Metrics>,
    retention: Duration,
    purge_interval: Duration,
    pub(super) faults: Faults,
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
            faults: Faults::default(),
        }
    }

    pub fn with_faults(self, faults: Faults) -> Self {
        DlqActor { faults, ..self }
    }

    /// Starts it under a Supervisor: the address survives restarts.
    pub fn start_supervised(self) -> Addr<Self> {
        Supervisor::start(move |_| self)
    }

    fn writer(&self, ctx: &Context<Self>) -> Writer {
        Writer {
            db: self.db.clone(),
            metrics: self.metrics.clone(),
            again: ctx.address(),
        }
    }
}

impl Actor for DlqActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.purge_interval, |act, _| {
            let (db, retention) = (act.db.clone(), act.retention);
            // Detached: a purge that fails (or panics) is the purge's problem alone.
            actix::spawn(async move {
                if let Err(err) = purge(&db, retention).await {
                    tracing::warn!(error = %err, "dead-letter purge failed");
                }
            });
        });
    }
}

impl Supervised for DlqActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(actor = ACTOR, "dead-letter actor restarting");
    }
}

async fn purge(db: &DatabaseConnection, retention: Duration) -> Result<u64, DlqError> {
    let cutoff = dead_letters::cutoff(retention);
    let purged = dead_letters::purge(db, cutoff).await?;
    // Records of failed attempts are kept as long as dead letters, then go with them.
    crate::store::failures::purge(db, cutoff).await?;
    // So are settled webhook deliveries and the attempts made for them.
    crate::store::webhook_deliveries::purge(db, cutoff).await?;
    if purged > 0 {
        tracing::info!(purged, "dead letters past retention purged");
    }
    Ok(purged)
}

impl Handler<DeadLetter> for DlqActor {
    type Result = ();

    fn handle(&mut self, letter: DeadLetter, ctx: &mut Self::Context) {
        let stall =
            supervision::caught(|| self.faults.at(Site::DeadLetter, Some(letter.claim.event())));
        // The write never depends on the code that may have panicked.
        actix::spawn(self.writer(ctx).write(letter));
        match stall {
            Ok(Some(stall)) => ctx.wait(stall.into_actor(self)),
            Ok(None) => {}
            Err(panic) => supervision::restart(ACTOR, &panic, &self.metrics, ctx),
        }
    }
}

impl Handler<DeadLetterUndecodable> for DlqActor {
    type Result = ();

    fn handle(
        &mut self,
        DeadLetterUndecodable(letter): DeadLetterUndecodable,
        ctx: &mut Self::Context,
    ) {
        actix::spawn(self.writer(ctx).write_undecodable(letter));
    }
}

impl Handler<Ping> for DlqActor {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

/// Puts a dead letter's event back on the queue as a new first attempt. Atomic: of two
/// replays at once, one takes the dead letter (a conditional update) and the other gets
/// [`DlqError::AlreadyReplayed`]; a failed re-enqueue gives it back, replayable.
async fn replay(
    db: &DatabaseConnection,
    backend: &dyn QueueBackend,
    row: entity::dead_letters::Model,
) -> Result<(), DlqError> {
    if row.replayed_at.is_some() {
        return Err(DlqError::AlreadyReplayed(row.id));
    }
    let mut event: Event =
        dead_letters::event_of(&row).map_err(|e| DlqError::Unreadable(row.id, e))?;
    event.attempt = 0;
    event.accepted_at = Utc::now();
    if !dead_letters::claim_replay(db, row.id).await? {
        return Err(DlqError::AlreadyReplayed(row.id));
    }
    let requeued = async {
        // The message goes back to `queued`, due at once with fresh attempts (the delivery
        // stage sends it); the event is published too, for a dead letter whose event was
        // never stored (the idempotency key makes a stored one's repeat a no-op).
        status::transition_committed(
            db,
            Which::OfEvent(&event),
            MessageStatus::Failed,
            MessageStatus::Queued,
        )
        .await?;
        backend.republish(vec![event]).await?;
        Ok::<(), DlqError>(())
    };
    if let Err(err) = requeued.await {
        if let Err(undo) = dead_letters::unclaim_replay(db, row.id).await {
            tracing::warn!(dead_letter_id = row.id, error = %undo, "a failed replay could not be given back; it shows as replayed");
        }
        return Err(err);
    }
    Ok(())
}

/// Dead letters replay-all takes per page.
const REPLAY_PAGE: u64 = 500;

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
            let (mut replayed, mut after) = (0, 0);
            let upto = dead_letters::last_id(&db).await?;
            loop {
                let page = dead_letters::pending_after(&db, after, upto, REPLAY_PAGE).await?;
                let Some(last) = page.last() else {
                    return Ok(replayed);
                };
                after = last.id;
                for row in page {
                    match replay(&db, backend.as_ref(), row).await {
                        Ok(()) => replayed += 1,
                        // Taken by a concurrent replay meanwhile: theirs, not an error.
                        Err(DlqError::AlreadyReplayed(_)) => {}
                        Err(err) => return Err(err),
                    }
                }
            }
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
