//! QueueActor: the single entry point of events, and the dispatcher of the worker pool.
//!
//! Handlers send `Enqueue`; the actor publishes to the configured backend. For each worker
//! it runs a pump: take up to `batch_size` ready events, hand them to the worker, wait for
//! it to finish (sending in-progress acks meanwhile when the backend redelivers held
//! events), repeat. A worker whose mailbox is closed (it died) is replaced, and the
//! deliveries it held that nobody settled or claimed go to the RetryScheduler as
//! failures, so none is lost and none is failed twice.
//!
//! The actor is supervised (see [`super::supervision`]); the pumps are detached tasks,
//! started once, that a restart of the actor does not touch. A pump catches a panic in its
//! own dispatching the same way: the batch it held is failed to the RetryScheduler, and it
//! goes on with the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{mpsc, watch};

use super::dlq::DlqActor;
use super::faults::{Faults, Site};
use super::health::{Progress, Workers};
use super::supervision::{self, Ping};
use super::worker::{WorkerDeps, WorkerThread};
use crate::domain::Event;
use crate::queue::{MemoryQueue, QueueBackend, QueueError};
use crate::telemetry::Metrics;

mod pump;

use pump::Pump;

/// After the stop deadline, how long pumps get to hand back what they hold.
const ABANDON_GRACE: Duration = Duration::from_secs(5);
/// The label of this actor (and its pumps) in `messaging_actor_restarts_total`.
const ACTOR: &str = "queue";

/// Accept a newly received event.
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct Enqueue(pub Event);

/// Resolves `true` once every accepted event is finished (stored or dead-lettered), or
/// `false` when `timeout` passes first.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct WaitUntilDrained(pub Duration);

/// Memory backend: stop handing out events and return the ones not yet finished (for a
/// graceful shutdown). Other backends keep their events; this returns none.
#[derive(Message)]
#[rtype(result = "Vec<Event>")]
pub struct Close;

/// Graceful stop of the workers (a durable backend): stop fetching, let each worker finish
/// its batch until `.0` passes, then hand back (nak, no delay) whatever is still held, and
/// flush the settlements. Resolves `true` when every batch finished in time.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct StopWorkers(pub Duration);

pub struct WorkerPool {
    pub concurrency: usize,
    /// Where the workers run.
    pub thread: WorkerThread,
    pub batch_size: usize,
    pub deps: WorkerDeps,
    /// Where messages that are not events go.
    pub dlq: Addr<DlqActor>,
    /// Each pump's current worker, for readiness.
    pub workers: Workers,
    /// Marked whenever a pump moves the queue, for readiness.
    pub progress: Progress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Take nothing new; finish the batch in hand.
    Stopping,
    /// Give back what is held, now.
    Abandon,
}

pub struct QueueActor {
    backend: Arc<dyn QueueBackend>,
    /// The same queue when it is the in-process one (spilled at shutdown).
    memory: Option<MemoryQueue>,
    metrics: Arc<Metrics>,
    pool: Option<WorkerPool>,
    phase: watch::Sender<Phase>,
    /// Closes when every pump has returned.
    pumps_done: Option<mpsc::Receiver<()>>,
    /// Pumps start with the actor's first start, not again at a restart.
    pumps_started: bool,
    faults: Faults,
}

impl QueueActor {
    /// `pool` is `None` for an API-only process (events wait for workers elsewhere).
    pub fn new(
        backend: Arc<dyn QueueBackend>,
        memory: Option<MemoryQueue>,
        metrics: Arc<Metrics>,
        pool: Option<WorkerPool>,
    ) -> Self {
        QueueActor {
            backend,
            memory,
            metrics,
            pool,
            phase: watch::channel(Phase::Running).0,
            pumps_done: None,
            pumps_started: false,
            faults: Faults::default(),
        }
    }

    pub fn with_faults(self, faults: Faults) -> Self {
        QueueActor { faults, ..self }
    }

    /// Starts it under a Supervisor: the address handlers hold survives restarts.
    pub fn start_supervised(self) -> Addr<Self> {
        Supervisor::start(move |_| self)
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Handlers wait (rather than fail) when the mailbox is momentarily full; the
        // backend's capacity is the limit that turns into 503s.
        ctx.set_mailbox_capacity(1024);
        let Some(pool) = &self.pool else { return };
        if std::mem::replace(&mut self.pumps_started, true) {
            return;
        }
        let (done_tx, done_rx) = mpsc::channel(1);
        self.pumps_done = Some(done_rx);
        for index in 0..pool.concurrency {
            let pump = Pump {
                index,
                backend: self.backend.clone(),
                metrics: self.metrics.clone(),
                batch_size: pool.batch_size,
                deps: pool.deps.clone(),
                thread: pool.thread.handle(),
                retry: pool.deps.retry.clone(),
                dlq: pool.dlq.clone(),
                workers: pool.workers.clone(),
                progress: pool.progress.clone(),
                faults: self.faults.clone(),
                phase: self.phase.subscribe(),
                _done: done_tx.clone(),
            };
            // Detached: a restart of this actor drops its own futures, and the pumps hold
            // deliveries.
            actix::spawn(pump.run());
        }
    }
}

impl Supervised for QueueActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(actor = ACTOR, "queue actor restarting");
    }
}

impl Handler<Ping> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

impl Handler<Enqueue> for QueueActor {
    type Result = ResponseFuture<Result<(), QueueError>>;

    fn handle(&mut self, Enqueue(event): Enqueue, ctx: &mut Self::Context) -> Self::Result {
        let stall = match supervision::caught(|| self.faults.at(Site::Enqueue, Some(&event))) {
            Ok(stall) => stall,
            Err(panic) => {
                // Not accepted, so nothing is lost: the client gets a 503 and may resend.
                supervision::restart(ACTOR, &panic, &self.metrics, ctx);
                self.metrics.enqueue_rejected.add(1, &[]);
                let refused = QueueError::Unavailable("the queue restarted; try again".into());
                return Box::pin(std::future::ready(Err(refused)));
            }
        };
        if let Some(stall) = stall {
            ctx.wait(stall.into_actor(self));
        }
        let publish = self.backend.publish(event);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = publish.await;
            match &result {
                Ok(()) => metrics.enqueued.add(1, &[]),
                Err(_) => metrics.enqueue_rejected.add(1, &[]),
            }
            result
        })
    }
}

impl Handler<WaitUntilDrained> for QueueActor {
    type Result = ResponseFuture<bool>;

    fn handle(
        &mut self,
        WaitUntilDrained(timeout): WaitUntilDrained,
        _: &mut Self::Context,
    ) -> Self::Result {
        let backend = self.backend.clone();
        Box::pin(async move {
            let deadline = crate::time::deadline(timeout);
            while backend.depth() > 0 {
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            true
        })
    }
}

impl Handler<Close> for QueueActor {
    type Result = MessageResult<Close>;

    fn handle(&mut self, _: Close, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.memory
                .as_ref()
                .map(MemoryQueue::close_and_take)
                .unwrap_or_default(),
        )
    }
}

impl Handler<StopWorkers> for QueueActor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, StopWorkers(within): StopWorkers, _: &mut Self::Context) -> Self::Result {
        let phase = self.phase.clone();
        let done = self.pumps_done.take();
        let backend = self.backend.clone();
        Box::pin(async move {
            let _ = phase.send(Phase::Stopping);
            let mut finished = true;
            if let Some(mut done) = done {
                // `recv` returns None once every pump (each holding a sender) has returned.
                if tokio::time::timeout(within, done.recv()).await.is_err() {
                    finished = false;
                    tracing::warn!(
                        "workers still busy at the shutdown deadline; handing back what they hold"
                    );
                    let _ = phase.send(Phase::Abandon);
                    let _ = tokio::time::timeout(ABANDON_GRACE, done.recv()).await;
                }
            }
            backend.flush().await;
            finished
        })
    }
}
