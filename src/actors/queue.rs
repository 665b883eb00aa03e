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

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};

use super::dlq::{DeadLetterUndecodable, DlqActor};
use super::faults::{Faults, Site};
use super::health::{Progress, Workers};
use super::retry::{Failed, RetryScheduler};
use super::supervision::{self, Ping};
use super::worker::{PersistenceWorker, ProcessBatch, WorkerDeps, WorkerThread};
use super::ProcessingError;
use crate::domain::Event;
use crate::queue::{Delivery, MemoryQueue, QueueBackend, QueueError, Settlement};
use crate::telemetry::Metrics;

/// How long one `receive` waits for work before the pump checks whether it should stop.
const RECEIVE_WAIT: Duration = Duration::from_millis(250);
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

/// Feeds one worker slot.
struct Pump {
    index: usize,
    backend: Arc<dyn QueueBackend>,
    metrics: Arc<Metrics>,
    batch_size: usize,
    deps: WorkerDeps,
    thread: ArbiterHandle,
    retry: Addr<RetryScheduler>,
    dlq: Addr<DlqActor>,
    workers: Workers,
    progress: Progress,
    faults: Faults,
    phase: watch::Receiver<Phase>,
    /// Dropped when the pump returns (see `QueueActor::pumps_done`).
    _done: mpsc::Sender<()>,
}

impl Pump {
    async fn run(mut self) {
        let mut worker = self.start_worker();
        // Logged once per outage, not at every attempt.
        let mut failing = false;
        loop {
            if *self.phase.borrow() != Phase::Running {
                return;
            }
            let received = match self.backend.receive(self.batch_size, RECEIVE_WAIT).await {
                Ok(received) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!(worker = self.index, "queue receive works again");
                    }
                    received
                }
                Err(QueueError::Closed) => return,
                Err(err) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(worker = self.index, error = %err, "queue receive failed; retrying");
                    }
                    tokio::time::sleep(RECEIVE_WAIT).await;
                    continue;
                }
            };
            if received.is_empty() {
                continue;
            }
            self.progress.mark();
            if *self.phase.borrow() != Phase::Running {
                // Taken just as the stop came: hand it straight back.
                let deliveries = received.deliveries;
                hand_back(&deliveries).await;
                for letter in received.undecodable {
                    let _ = letter.settle.settle(Settlement::Nak(Duration::ZERO)).await;
                }
                return;
            }
            for letter in received.undecodable {
                self.dlq.do_send(DeadLetterUndecodable(letter));
            }
            let batch = received.deliveries;
            if batch.is_empty() {
                continue;
            }
            self.metrics.dequeued.add(batch.len() as u64, &[]);
            let held = batch.clone();
            // A panic here (in this pump's own code) must not take the batch with it.
            let dispatched = AssertUnwindSafe(self.dispatch(&mut worker, batch, &held))
                .catch_unwind()
                .await;
            self.progress.mark();
            let lost = match dispatched {
                Ok(Outcome::Done) => continue,
                Ok(Outcome::Abandoned) => {
                    hand_back(&held).await;
                    return;
                }
                // The worker caught a panic and stopped; its Supervisor restarts it. The
                // batch is split until the events that panic are alone: only they fail.
                Ok(Outcome::Panicked(panic)) => {
                    if !self.isolate(&mut worker, &held).await {
                        return;
                    }
                    format!("panicked: {panic}")
                }
                // The worker is gone for good: replace it.
                Ok(Outcome::Lost(err)) => {
                    tracing::error!(worker = self.index, error = %err, "worker lost; replacing it");
                    worker = self.start_worker();
                    err
                }
                Err(panic) => {
                    let reason = supervision::panic_message(panic);
                    supervision::record_panic(ACTOR, &reason, &self.metrics);
                    format!("the dispatcher panicked: {reason}")
                }
            };
            // What the worker left unsettled (and unclaimed: a failure it reported is the
            // RetryScheduler's already) is failed here, once.
            for delivery in &held {
                if let Some(claim) = delivery.claim() {
                    self.retry.do_send(Failed {
                        claim,
                        error: ProcessingError::WorkerStopped(lost.clone()),
                    });
                }
            }
        }
    }

    /// After a batch panicked: dispatches what it left open again in halves, and halves of
    /// those that panic again, until each event that panics is alone (left open, for the
    /// caller to fail); the others are processed on this attempt. Bisection costs about
    /// 2·log2(n) batches per poison event. Returns false when the pump must stop (the
    /// deliveries were handed back).
    async fn isolate(&mut self, worker: &mut Addr<PersistenceWorker>, held: &[Delivery]) -> bool {
        let mut parts = vec![open_ones(held)];
        while let Some(part) = parts.pop() {
            if part.len() < 2 {
                continue;
            }
            let (left, right) = part.split_at(part.len() / 2);
            for half in [left.to_vec(), right.to_vec()] {
                let outcome = self.dispatch(worker, half.clone(), &half).await;
                match outcome {
                    Outcome::Done => {}
                    Outcome::Panicked(_) => parts.push(open_ones(&half)),
                    Outcome::Lost(err) => {
                        tracing::error!(worker = self.index, error = %err, "worker lost; replacing it");
                        *worker = self.start_worker();
                        parts.push(open_ones(&half));
                    }
                    Outcome::Abandoned => {
                        hand_back(held).await;
                        return false;
                    }
                }
            }
        }
        true
    }

    fn start_worker(&self) -> Addr<PersistenceWorker> {
        let worker =
            PersistenceWorker::start_supervised(self.index, self.deps.clone(), &self.thread);
        self.workers.set(self.index, worker.clone());
        worker
    }

    /// Hands the batch to this pump's worker (replacing it first if it is gone).
    async fn dispatch(
        &mut self,
        worker: &mut Addr<PersistenceWorker>,
        batch: Vec<Delivery>,
        held: &[Delivery],
    ) -> Outcome {
        let first = batch.first().map(|d| d.event.as_ref());
        if let Some(stall) = self.faults.at(Site::Dispatch, first) {
            stall.await;
        }
        if !worker.connected() {
            *worker = self.start_worker();
        }
        self.process(worker, batch, held).await
    }

    /// Hands the batch to the worker and waits, reporting progress on what it holds so a
    /// slow batch is not redelivered to another worker meanwhile.
    async fn process(
        &mut self,
        worker: &Addr<PersistenceWorker>,
        batch: Vec<Delivery>,
        held: &[Delivery],
    ) -> Outcome {
        let work = worker.send(ProcessBatch(batch));
        tokio::pin!(work);
        let every = self
            .backend
            .progress_interval()
            .unwrap_or(Duration::from_secs(3600));
        let mut ticks = tokio::time::interval_at(crate::time::tokio_deadline(every), every);
        loop {
            tokio::select! {
                result = &mut work => return match result {
                    Ok(Ok(())) => Outcome::Done,
                    Ok(Err(panic)) => Outcome::Panicked(panic),
                    Err(err) => Outcome::Lost(err.to_string()),
                },
                _ = ticks.tick() => {
                    let open = held.iter().filter(|d| d.is_open());
                    let sent = futures_util::future::join_all(open.map(Delivery::progress)).await;
                    if let Some(Err(err)) = sent.into_iter().find(Result::is_err) {
                        tracing::warn!(worker = self.index, error = %err, "in-progress ack failed");
                    }
                }
                _ = abandoned(&mut self.phase) => return Outcome::Abandoned,
            }
        }
    }
}

enum Outcome {
    Done,
    Abandoned,
    Panicked(String),
    Lost(String),
}

/// Resolves when the pumps are told to give back what they hold.
async fn abandoned(phase: &mut watch::Receiver<Phase>) {
    if phase.wait_for(|p| *p == Phase::Abandon).await.is_err() {
        // The actor is gone, and this pump with it.
        std::future::pending::<()>().await;
    }
}

/// The deliveries nobody settled or claimed yet.
fn open_ones(deliveries: &[Delivery]) -> Vec<Delivery> {
    deliveries.iter().filter(|d| d.is_open()).cloned().collect()
}

/// Gives unsettled deliveries back to the queue for another worker, at once.
async fn hand_back(deliveries: &[Delivery]) {
    let naks = deliveries.iter().map(|d| d.nak(Duration::ZERO));
    for result in futures_util::future::join_all(naks).await {
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not hand an event back; it is redelivered after ack_wait");
        }
    }
}
