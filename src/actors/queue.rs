//! QueueActor: the single entry point of events, and the dispatcher of the worker pool.
//!
//! Handlers send `Enqueue`; the actor publishes to the configured backend. For each worker
//! it runs a pump: take up to `batch_size` ready events, hand them to the worker, wait for
//! it to finish, repeat. A worker whose mailbox is closed (it died) is replaced, and the
//! events it held go to the RetryScheduler as failures, so none is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::retry::{Failed, RetryScheduler};
use super::worker::{PersistenceWorker, ProcessBatch, WorkerDeps};
use super::ProcessingError;
use crate::domain::Event;
use crate::queue::{DeliveryId, QueueBackend, QueueError};
use crate::telemetry::Metrics;

/// How long one `receive` waits for work before the pump checks whether it should stop.
const RECEIVE_WAIT: Duration = Duration::from_millis(250);

/// Accept a newly received event.
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct Enqueue(pub Event);

/// Resolves `true` once every accepted event is finished (stored or dead-lettered), or
/// `false` when `timeout` passes first.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct WaitUntilDrained(pub Duration);

/// Stop handing out events and return the ones not yet finished (for a graceful shutdown).
#[derive(Message)]
#[rtype(result = "Vec<Event>")]
pub struct Close;

pub struct WorkerPool {
    pub concurrency: usize,
    pub batch_size: usize,
    pub deps: WorkerDeps,
}

pub struct QueueActor {
    backend: Arc<dyn QueueBackend>,
    metrics: Arc<Metrics>,
    pool: Option<WorkerPool>,
}

impl QueueActor {
    /// `pool` is `None` for an API-only process (events wait for workers elsewhere).
    pub fn new(
        backend: Arc<dyn QueueBackend>,
        metrics: Arc<Metrics>,
        pool: Option<WorkerPool>,
    ) -> Self {
        QueueActor {
            backend,
            metrics,
            pool,
        }
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Handlers wait (rather than fail) when the mailbox is momentarily full; the
        // backend's capacity is the limit that turns into 503s.
        ctx.set_mailbox_capacity(1024);
        let Some(pool) = &self.pool else { return };
        for index in 0..pool.concurrency {
            let pump = Pump {
                index,
                backend: self.backend.clone(),
                metrics: self.metrics.clone(),
                batch_size: pool.batch_size,
                deps: pool.deps.clone(),
                retry: pool.deps.retry.clone(),
            };
            ctx.spawn(pump.run().into_actor(self));
        }
    }
}

impl Handler<Enqueue> for QueueActor {
    type Result = ResponseFuture<Result<(), QueueError>>;

    fn handle(&mut self, Enqueue(event): Enqueue, _: &mut Self::Context) -> Self::Result {
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
            let deadline = Instant::now() + timeout;
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
        MessageResult(self.backend.close_and_take())
    }
}

/// Feeds one worker slot.
struct Pump {
    index: usize,
    backend: Arc<dyn QueueBackend>,
    metrics: Arc<Metrics>,
    batch_size: usize,
    deps: WorkerDeps,
    retry: Addr<RetryScheduler>,
}

impl Pump {
    async fn run(self) {
        let mut worker = PersistenceWorker::start_supervised(self.index, self.deps.clone());
        loop {
            let batch = match self.backend.receive(self.batch_size, RECEIVE_WAIT).await {
                Ok(batch) => batch,
                Err(QueueError::Closed) => return,
                Err(err) => {
                    tracing::warn!(worker = self.index, error = %err, "queue receive failed");
                    tokio::time::sleep(RECEIVE_WAIT).await;
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            self.metrics.dequeued.add(batch.len() as u64, &[]);
            if !worker.connected() {
                worker = PersistenceWorker::start_supervised(self.index, self.deps.clone());
            }
            let held: Vec<DeliveryId> = batch.iter().map(|d| d.id).collect();
            let lost = match worker.send(ProcessBatch(batch)).await {
                Ok(Ok(())) => continue,
                // The worker caught a panic and stopped; its Supervisor restarts it.
                Ok(Err(panic)) => format!("panicked: {panic}"),
                // The worker is gone for good: replace it.
                Err(err) => {
                    tracing::error!(worker = self.index, error = %err, "worker lost; replacing it");
                    worker = PersistenceWorker::start_supervised(self.index, self.deps.clone());
                    err.to_string()
                }
            };
            // What the worker had not finished goes through the RetryScheduler (the queue
            // still holds it: nothing the worker held is lost).
            for delivery in self.backend.unfinished(&held) {
                self.retry.do_send(Failed {
                    delivery,
                    error: ProcessingError::WorkerStopped(lost.clone()),
                });
            }
        }
    }
}
