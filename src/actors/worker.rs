//! PersistenceWorker: stores a batch of events in one transaction and acks them.
//!
//! Ingest ends at the commit: successes are acked on the queue then, outbound messages
//! included, which are stored leased for this process's senders (`Take`: they call the
//! providers at once, no claim needed) and are due work for any sender should this one
//! not settle them before the lease ends. Each failure is claimed and
//! goes to the RetryScheduler, which settles it. A panic
//! while processing is caught (actix would otherwise kill the actor for good): the worker
//! reports the batch as failed and stops itself, and its Supervisor restarts it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use chrono::Utc;
use futures_util::FutureExt;

use super::faults::{Faults, Site};
use super::retry::{Failed, RetryScheduler};
use super::sender::Senders;
use super::supervision::{self, Ping};
use super::ProcessingError;
use crate::domain::{Direction, Event};
use crate::queue::Delivery;
use crate::store::delivery::{Held, NewLease};
use crate::store::outage::Hold;
use crate::store::status::MessageStatus;
use crate::store::writer::{MessageWriter, Persisted};
use crate::store::StoreError;
use crate::telemetry::{self, mask_address, Metrics};

/// The label of these actors in `messaging_actor_restarts_total`.
const ACTOR: &str = "worker";

#[derive(Clone)]
pub struct WorkerDeps {
    pub writer: MessageWriter,
    pub retry: Addr<RetryScheduler>,
    pub metrics: Arc<Metrics>,
    /// The delivery stage's senders, handed the outbound messages this worker stores.
    pub senders: Senders,
    /// `retry.max_attempts`: an event delivered this often already is not processed again.
    pub max_attempts: u32,
    /// The queue backend's name (`memory`, `nats`), for trace attributes.
    pub queue: &'static str,
    pub faults: Faults,
}

/// Process these deliveries. `Err` carries a panic message: the worker has stopped and
/// none of the deliveries can be assumed done.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct ProcessBatch(pub Vec<Delivery>);

pub struct PersistenceWorker {
    index: usize,
    deps: WorkerDeps,
}

impl PersistenceWorker {
    /// Starts it on `thread` under a Supervisor.
    pub fn start_supervised(index: usize, deps: WorkerDeps, thread: &ArbiterHandle) -> Addr<Self> {
        Supervisor::start_in_arbiter(thread, move |_| PersistenceWorker { index, deps })
    }
}

/// The thread the workers run on. Storing a batch is CPU work between its queries
/// (building the statements, encoding 18,000 values, decoding the returned rows): on the
/// thread of the queue actor it held up the actor's answers to HTTP handlers, i.e. the
/// accept latency. Stops when dropped, with the pool that owns it.
pub struct WorkerThread(Arbiter);

impl WorkerThread {
    pub fn start() -> Self {
        WorkerThread(Arbiter::new())
    }

    pub fn handle(&self) -> ArbiterHandle {
        self.0.handle()
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl Actor for PersistenceWorker {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        self.deps
            .metrics
            .workers_active
            .fetch_add(1, Ordering::Relaxed);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.deps
            .metrics
            .workers_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Supervised for PersistenceWorker {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(worker = self.index, "persistence worker restarting");
    }
}

impl Handler<ProcessBatch> for PersistenceWorker {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(
        &mut self,
        ProcessBatch(batch): ProcessBatch,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        let first = batch.first().map(|d| d.event.as_ref());
        match supervision::caught(|| self.deps.faults.at(Site::Worker, first)) {
            Ok(Some(stall)) => ctx.wait(stall.into_actor(self)),
            Ok(None) => {}
            Err(reason) => {
                // The pump fails what the batch held; the Supervisor restarts this worker.
                tracing::error!(worker = self.index, reason, "persistence worker panicked");
                supervision::restart(ACTOR, &reason, &self.deps.metrics, ctx);
                return Box::pin(fut::ready(Err(reason)));
            }
        }
        let (deps, events) = (&self.deps, batch.iter().map(|d| d.event.as_ref()));
        let trace = deps.metrics.tracer.batch(deps.queue, events);
        let work = AssertUnwindSafe(trace.around(process(self.deps.clone(), batch))).catch_unwind();
        Box::pin(work.into_actor(self).map(|result, act, ctx| {
            result.map_err(|panic| {
                let reason = supervision::panic_message(panic);
                tracing::error!(worker = act.index, reason, "persistence worker panicked");
                supervision::restart(ACTOR, &reason, &act.deps.metrics, ctx);
                reason
            })
        }))
    }
}

impl Handler<Ping> for PersistenceWorker {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

async fn process(deps: WorkerDeps, batch: Vec<Delivery>) {
    let started = Instant::now();
    if let Some(stall) = deps.faults.at_batch(Site::Persist, &batch) {
        stall.await;
    }
    let mut valid = Vec::with_capacity(batch.len());
    for delivery in batch {
        // Delivered this often without an outcome, every earlier holder died with it (a
        // durable queue redelivers after ack_wait): dead-letter it rather than die again.
        if delivery.event.attempt >= deps.max_attempts {
            let reason = format!(
                "delivered {} times without an outcome (the workers holding it stopped)",
                delivery.event.attempt + 1
            );
            fail(
                &deps,
                delivery,
                ProcessingError::WorkerStopped(reason),
                started,
            );
            continue;
        }
        match delivery.event.revalidate() {
            Ok(()) => valid.push(delivery),
            Err(errors) => fail(
                &deps,
                delivery,
                ProcessingError::InvalidEvent(format!("{:?}", errors.0)),
                started,
            ),
        }
    }
    let lease = NewLease::new(deps.senders.lease);
    let stored = store(&deps.writer, &valid, &lease).await;
    let mut held = Vec::new();
    let mut done = Vec::new();
    for (delivery, result) in valid.into_iter().zip(stored) {
        match result {
            Ok(persisted) if persisted.conflicts_with(&delivery.event) => {
                fail(&deps, delivery, ProcessingError::KeyReused, started)
            }
            Ok(persisted) => {
                record_stored(&deps, &delivery.event, &persisted, started);
                // Only what this batch inserted is under its lease (a repeat is not).
                let outbound = delivery.event.direction == Direction::Outbound;
                if outbound && persisted.inserted && persisted.status == MessageStatus::Queued {
                    let mut event = delivery.event.as_ref().clone();
                    // Its first provider attempt.
                    event.attempt = 0;
                    held.push(Held {
                        id: persisted.message_id,
                        lease_token: lease.token.clone(),
                        event: Ok(event),
                    });
                }
                done.push(delivery);
            }
            Err(err) => fail(&deps, delivery, err.into(), started),
        }
    }
    // Acked first: ingest is done at the commit, whatever the providers do.
    ack_all(&done).await;
    deps.senders.hand_over(held);
}

/// Acks what is finished. A lost ack only means a redelivery, which stores nothing twice.
async fn ack_all(deliveries: &[Delivery]) {
    let acks = deliveries.iter().map(Delivery::ack);
    for result in futures_util::future::join_all(acks).await {
        if let Err(err) = result {
            tracing::warn!(error = %err, "ack failed; the event will be delivered again");
        }
    }
}

/// Stores the batch in one transaction. When the database rejects the batch outright (a
/// permanent error), each event is retried alone so one bad event cannot sink the others.
/// While the database takes no writes at all (a full disk, a read-only file, a lost
/// server), the batch waits for it, unacked, instead of spending its attempts.
async fn store(
    writer: &MessageWriter,
    batch: &[Delivery],
    lease: &NewLease,
) -> Vec<Result<Persisted, StoreError>> {
    let events: Vec<&Event> = batch.iter().map(|d| d.event.as_ref()).collect();
    let wanted = || batch.iter().any(Delivery::is_open);
    let stored = writer
        .health()
        .hold(Hold::WhileNothingCommits, wanted, || {
            writer.persist_leased(&events, Some(lease))
        })
        .await;
    match stored {
        Ok(persisted) => persisted.into_iter().map(Ok).collect(),
        Err(err) if err.is_transient() || events.len() == 1 => {
            events.iter().map(|_| Err(err.clone())).collect()
        }
        Err(_) => {
            let mut results = Vec::with_capacity(events.len());
            for event in events {
                let one = writer.persist_leased(&[event], Some(lease)).await;
                results.push(one.map(|mut p| p.remove(0)));
            }
            results
        }
    }
}

fn record_stored(deps: &WorkerDeps, event: &Event, persisted: &Persisted, started: Instant) {
    let outcome = if persisted.inserted {
        "stored"
    } else {
        "duplicate"
    };
    // A retry (attempt > 0) finding its own message is not a duplicate of anything: the
    // event was counted when it was stored, and the retry in messaging_retries_total.
    if persisted.inserted || event.attempt == 0 {
        deps.metrics.processed(outcome, 1);
    }
    if persisted.inserted {
        let latency = (Utc::now() - event.accepted_at)
            .num_microseconds()
            .unwrap_or(0);
        deps.metrics
            .processing_latency
            .record(latency.max(0) as f64 / 1e6, &[]);
    }
    log_outcome(event, outcome, started, None);
}

/// One line per outcome, inside the event's span: successes at `debug` (`info` has a
/// summary every 10 s, see `telemetry::summary`), failures at `warn`. Bodies are never
/// logged (their sha256 is) and addresses are masked.
fn log_outcome(event: &Event, outcome: &str, started: Instant, error: Option<&ProcessingError>) {
    telemetry::record_outcome(event, outcome, error.map(|e| (e.kind().as_str(), e as _)));
    let _span = telemetry::event_span(event).entered();
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    // Field values are computed only when the line is written (not at all below `debug`).
    match error {
        None => tracing::debug!(
            event_id = %event.event_id,
            idempotency_key = %event.idempotency_key,
            channel = event.channel.as_str(),
            direction = event.direction.as_str(),
            attempt = event.attempt,
            outcome,
            duration_ms,
            from = mask_address(&event.from),
            to = mask_address(&event.to),
            body_sha256 = %event.body_sha256(),
            "event processed"
        ),
        Some(err) => tracing::warn!(
            event_id = %event.event_id,
            idempotency_key = %event.idempotency_key,
            channel = event.channel.as_str(),
            direction = event.direction.as_str(),
            attempt = event.attempt,
            outcome,
            error_kind = err.kind().as_str(),
            error = %err,
            duration_ms,
            from = mask_address(&event.from),
            to = mask_address(&event.to),
            body_sha256 = %event.body_sha256(),
            "event failed"
        ),
    }
}

fn fail(deps: &WorkerDeps, delivery: Delivery, error: ProcessingError, started: Instant) {
    // Claimed here, so the pump cannot fail it again should this worker die next.
    let Some(claim) = delivery.claim() else {
        tracing::debug!(event_id = %delivery.event.event_id, "failure of an already settled delivery ignored");
        return;
    };
    deps.metrics.failed(error.kind().as_str());
    log_outcome(&delivery.event, "failed", started, Some(&error));
    deps.retry.do_send(Failed { claim, error });
}
