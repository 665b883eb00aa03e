//! A pump: feeds one worker slot of the pool with batches from the queue backend, and
//! hands back what a dead worker or an abandoned batch held.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};

use super::{Phase, ACTOR};
use crate::actors::dlq::{DeadLetterUndecodable, DlqActor};
use crate::actors::faults::{Faults, Site};
use crate::actors::health::{Progress, Workers};
use crate::actors::retry::{Failed, RetryScheduler};
use crate::actors::supervision;
use crate::actors::worker::{PersistenceWorker, ProcessBatch, WorkerDeps};
use crate::actors::ProcessingError;
use crate::queue::{Delivery, QueueBackend, QueueError, Settlement};
use crate::telemetry::Metrics;

/// How long one `receive` waits for work before the pump checks whether it should stop.
const RECEIVE_WAIT: Duration = Duration::from_millis(250);

/// Feeds one worker slot.
pub(super) struct Pump {
    pub(super) index: usize,
    pub(super) backend: Arc<dyn QueueBackend>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) batch_size: usize,
    pub(super) deps: WorkerDeps,
    pub(super) thread: ArbiterHandle,
    pub(super) retry: Addr<RetryScheduler>,
    pub(super) dlq: Addr<DlqActor>,
    pub(super) workers: Workers,
    pub(super) progress: Progress,
    pub(super) faults: Faults,
    pub(super) phase: watch::Receiver<Phase>,
    /// Dropped when the pump returns (see `QueueActor::pumps_done`).
    pub(super) _done: mpsc::Sender<()>,
}

impl Pump {
    pub(super) async fn run(mut self) {
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
