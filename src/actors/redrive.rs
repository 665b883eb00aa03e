//! Redriver: sends again what was stored but never sent.
//!
//! An outbound message is stored (`queued`) before its provider call; if the process dies
//! in between with the memory queue holding its event, nothing would ever send it. At start
//! and every `worker.redrive_interval`, messages `queued` for longer than
//! `worker.redrive_after` whose event is not in the queue (waiting, retrying or in flight)
//! are claimed (see [`crate::store::redrive`]: one process per message) and their events
//! published again. The normal path then finds the stored message still `queued` and calls
//! the provider once, with the message's idempotency key; `queued → sent` stays
//! conditional. Each one is counted in `messaging_redriven_total`.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use futures_util::FutureExt;
use sea_orm::DatabaseConnection;

use super::faults::{Faults, Site};
use super::supervision::{self, Ping};
use crate::queue::QueueBackend;
use crate::store::{redrive, StoreError};
use crate::telemetry::Metrics;

/// The label of this actor in `messaging_actor_restarts_total`.
const ACTOR: &str = "redriver";
/// Messages claimed per round; a sweep goes on while rounds come back full.
const ROUND: u64 = 500;
/// Rounds per sweep at most, so one sweep never floods the queue.
const MAX_ROUNDS: usize = 20;

#[derive(Message)]
#[rtype(result = "()")]
struct Sweep;

pub struct Redriver {
    db: DatabaseConnection,
    backend: Arc<dyn QueueBackend>,
    metrics: Arc<Metrics>,
    after: Duration,
    every: Duration,
    /// A sweep is under way (sweeps never overlap).
    sweeping: Arc<AtomicBool>,
    faults: Faults,
}

impl Redriver {
    /// Starts it under a Supervisor; the first sweep runs at once.
    pub fn start(
        db: DatabaseConnection,
        backend: Arc<dyn QueueBackend>,
        metrics: Arc<Metrics>,
        after: Duration,
        every: Duration,
        faults: Faults,
    ) -> Addr<Self> {
        Supervisor::start(move |_| Redriver {
            db,
            backend,
            metrics,
            after,
            every,
            sweeping: Arc::default(),
            faults,
        })
    }
}

impl Actor for Redriver {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Sweep);
        ctx.run_interval(self.every, |_, ctx| ctx.notify(Sweep));
    }
}

impl Supervised for Redriver {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(actor = ACTOR, "re-driver restarting");
    }
}

impl Handler<Ping> for Redriver {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

impl Handler<Sweep> for Redriver {
    type Result = ();

    fn handle(&mut self, _: Sweep, ctx: &mut Self::Context) {
        match supervision::caught(|| self.faults.at(Site::Redrive, None)) {
            Ok(Some(stall)) => ctx.wait(stall.into_actor(self)),
            Ok(None) => {}
            Err(panic) => {
                // The next sweep (at the restart) does this one's work.
                supervision::restart(ACTOR, &panic, &self.metrics, ctx);
                return;
            }
        }
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let sweeping = self.sweeping.clone();
        let (db, backend, metrics) = (self.db.clone(), self.backend.clone(), self.metrics.clone());
        let after = self.after;
        // Detached: a sweep survives a restart of the actor, and its panic is its own.
        actix::spawn(async move {
            let swept = AssertUnwindSafe(sweep(&db, backend.as_ref(), &metrics, after))
                .catch_unwind()
                .await;
            match swept {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::warn!(
                    redriven = n,
                    "stored messages left unsent were handed to the queue again"
                ),
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "re-drive sweep failed; trying again at the next")
                }
                Err(panic) => {
                    supervision::record_panic(ACTOR, &supervision::panic_message(panic), &metrics)
                }
            }
            sweeping.store(false, Ordering::Release);
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
}

/// Claims stale `queued` messages and publishes the events of those not in the queue;
/// returns how many.
async fn sweep(
    db: &DatabaseConnection,
    backend: &dyn QueueBackend,
    metrics: &Metrics,
    after: Duration,
) -> Result<usize, SweepError> {
    let stale_before = chrono::Duration::from_std(after)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
    let mut redriven = 0;
    for _ in 0..MAX_ROUNDS {
        let claimed = redrive::claim_stale(db, stale_before, ROUND).await?;
        let full = claimed.len() as u64 == ROUND;
        let mut lost = Vec::with_capacity(claimed.len());
        for event in claimed {
            // Waiting for a retry, or being sent right now: the normal path has it.
            if !backend.is_queued(&event.idempotency_key).await? {
                lost.push(event);
            }
        }
        if !lost.is_empty() {
            for event in &lost {
                tracing::info!(event_id = %event.event_id, idempotency_key = %event.idempotency_key, "re-driving a stored message left unsent");
            }
            let n = lost.len();
            backend.republish(lost).await?;
            metrics.redriven.add(n as u64, &[]);
            redriven += n;
        }
        if !full {
            break;
        }
    }
    Ok(redriven)
}
