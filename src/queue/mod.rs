//! Queue backends behind one interface.
//!
//! The semantics are those of a work queue with explicit acknowledgement (the shape of a
//! JetStream pull consumer): a received event stays owned by the backend until it is
//! acked (done), retried later (`retry_later`) or the process spills it at shutdown.
//! So an event a worker held when it died is never lost: it is still in flight here.

mod memory;

use std::time::Duration;

use futures_util::future::BoxFuture;

pub use memory::MemoryQueue;

use crate::domain::Event;

/// Identifies one delivery of an event, to ack or retry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryId(pub u64);

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: DeliveryId,
    pub event: Event,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("the queue is full ({capacity} events waiting)")]
    Full { capacity: usize },
    #[error("the queue is closed")]
    Closed,
    #[error("the queue backend is unavailable: {0}")]
    Unavailable(String),
}

pub trait QueueBackend: Send + Sync + 'static {
    /// A short name for logs and readiness (`memory`, …).
    fn name(&self) -> &'static str;

    /// Adds a newly accepted event; fails when the backend is full or down.
    fn publish(&self, event: Event) -> BoxFuture<'static, Result<(), QueueError>>;

    /// Adds events that were already accepted once (dead-letter replay, a restart's
    /// spilled backlog): they bypass the capacity limit, since refusing them would lose them.
    fn republish(&self, events: Vec<Event>) -> BoxFuture<'static, Result<(), QueueError>>;

    /// Waits until at least one event is ready (or `wait` passes) and takes up to `max`.
    fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'static, Result<Vec<Delivery>, QueueError>>;

    /// The delivery is done: stored, or parked as a dead letter.
    fn ack(&self, id: DeliveryId);

    /// Delivers `event` (the same event, its attempt counter moved on) again after `delay`.
    fn retry_later(&self, id: DeliveryId, event: Event, delay: Duration);

    /// Which of these deliveries are still in flight (neither acked nor retried), with their
    /// events: what a worker that died was holding.
    fn unfinished(&self, ids: &[DeliveryId]) -> Vec<Delivery>;

    /// Events accepted and not yet done: waiting, delayed for a retry, or in flight.
    fn depth(&self) -> usize;

    /// Whether the backend answers (for /readyz).
    fn check(&self) -> BoxFuture<'static, Result<(), QueueError>>;

    /// Stops handing out events and returns every event not yet done, so a graceful
    /// shutdown can store them for the next start.
    fn close_and_take(&self) -> Vec<Event>;

    /// A copy of the events not yet done (tests and diagnostics).
    fn snapshot(&self) -> Vec<Event>;
}
