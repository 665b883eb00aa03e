//! Queue backends behind one interface.
//!
//! The semantics are those of a work queue with explicit acknowledgement (the shape of a
//! JetStream pull consumer): a received event stays owned by the backend until its
//! delivery is settled — acked (done), nak'd (deliver again after a delay) or terminated
//! (dead-lettered). A delivery is settled at most once: the first settlement wins and any
//! later one is a no-op that says so, so a worker's own failure report and the pump's
//! "the worker died, fail what it held" can never both retry or dead-letter one delivery.
//!
//! Memory-only concerns (shutdown spill, snapshots) are [`MemoryQueue`]'s own API, and
//! [`spill`] keeps on disk what a shutdown could not save in the database.

mod memory;
mod nats;
pub mod spill;

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

pub use memory::MemoryQueue;
pub use nats::{NatsQueue, SetupError};

use crate::domain::{Event, IdempotencyKey};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("the queue is full ({capacity} events waiting)")]
    Full { capacity: usize },
    /// The backend is up but will not take more (a full stream).
    #[error("the queue refused the event: {0}")]
    Refused(String),
    #[error("the queue is closed")]
    Closed,
    #[error("the queue backend is unavailable: {0}")]
    Unavailable(String),
}

/// What a settlement call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// This call settled the delivery.
    Now,
    /// It was settled (or claimed for settling) before: nothing was done.
    AlreadySettled,
}

/// How a delivery ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Done: stored (and sent), or parked as a dead letter by someone else.
    Ack,
    /// Deliver it again, as the next attempt, after this delay.
    Nak(Duration),
    /// Never deliver it again (it was dead-lettered).
    Term,
}

/// A backend's way to settle one of its deliveries. [`Settle`] calls `settle` at most once.
pub trait Settler: Send + Sync + 'static {
    fn settle(&self, how: Settlement) -> BoxFuture<'static, Result<(), QueueError>>;
    /// "Still working on it": keeps the delivery from being redelivered meanwhile.
    fn progress(&self) -> BoxFuture<'static, Result<(), QueueError>>;
}

const OPEN: u8 = 0;
const CLAIMED: u8 = 1;
const SETTLED: u8 = 2;

struct Handle<S: ?Sized> {
    state: AtomicU8,
    settler: S,
}

/// The settlement state of one delivery, shared by every clone of it.
#[derive(Clone)]
pub struct Settle(Arc<Handle<dyn Settler>>);

impl Settle {
    pub fn new(settler: impl Settler) -> Self {
        Settle(Arc::new(Handle {
            state: AtomicU8::new(OPEN),
            settler,
        }))
    }

    /// Neither settled nor claimed by anyone.
    pub fn is_open(&self) -> bool {
        self.0.state.load(Ordering::Acquire) == OPEN
    }

    fn try_claim(&self) -> bool {
        self.0
            .state
            .compare_exchange(OPEN, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Settles unless someone settled or claimed it first.
    pub async fn settle(&self, how: Settlement) -> Result<Settled, QueueError> {
        if !self.try_claim() {
            return Ok(Settled::AlreadySettled);
        }
        self.settle_claimed(how).await
    }

    async fn settle_claimed(&self, how: Settlement) -> Result<Settled, QueueError> {
        self.0.state.store(SETTLED, Ordering::Release);
        self.0.settler.settle(how).await.map(|()| Settled::Now)
    }

    /// An in-progress ack; nothing once settled.
    pub async fn progress(&self) -> Result<(), QueueError> {
        if self.0.state.load(Ordering::Acquire) == SETTLED {
            return Ok(());
        }
        self.0.settler.progress().await
    }
}

impl fmt::Debug for Settle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.0.state.load(Ordering::Acquire) {
            OPEN => "open",
            CLAIMED => "claimed",
            _ => "settled",
        };
        f.write_str(state)
    }
}

/// One delivery of an event. Clones share the settlement state.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `attempt` counts the earlier deliveries of this event.
    pub event: Arc<Event>,
    settle: Settle,
}

impl Delivery {
    pub fn new(event: Event, settle: Settle) -> Self {
        Delivery {
            event: Arc::new(event),
            settle,
        }
    }

    pub async fn ack(&self) -> Result<Settled, QueueError> {
        self.settle.settle(Settlement::Ack).await
    }

    pub async fn nak(&self, delay: Duration) -> Result<Settled, QueueError> {
        self.settle.settle(Settlement::Nak(delay)).await
    }

    pub async fn term(&self) -> Result<Settled, QueueError> {
        self.settle.settle(Settlement::Term).await
    }

    pub async fn progress(&self) -> Result<(), QueueError> {
        self.settle.progress().await
    }

    /// Neither settled nor claimed.
    pub fn is_open(&self) -> bool {
        self.settle.is_open()
    }

    /// Takes the sole right to decide how this delivery ends (for a failure, whose outcome
    /// — retry or dead letter — is decided elsewhere and later). `None` when someone else
    /// settled or claimed it first.
    pub fn claim(&self) -> Option<Claimed> {
        self.settle.try_claim().then(|| Claimed {
            delivery: Some(self.clone()),
        })
    }
}

/// A delivery its holder alone may settle. Dropped unsettled (its holder died), the
/// delivery is open again, so it can still be failed or nak'd by whoever holds it next.
#[derive(Debug)]
pub struct Claimed {
    delivery: Option<Delivery>,
}

impl Claimed {
    pub fn event(&self) -> &Arc<Event> {
        &self.delivery.as_ref().expect("unsettled").event
    }

    pub async fn ack(self) -> Result<Settled, QueueError> {
        self.settle(Settlement::Ack).await
    }

    pub async fn nak(self, delay: Duration) -> Result<Settled, QueueError> {
        self.settle(Settlement::Nak(delay)).await
    }

    pub async fn term(self) -> Result<Settled, QueueError> {
        self.settle(Settlement::Term).await
    }

    async fn settle(mut self, how: Settlement) -> Result<Settled, QueueError> {
        let delivery = self.delivery.take().expect("settled once");
        delivery.settle.settle_claimed(how).await
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if let Some(delivery) = &self.delivery {
            let _ = delivery.settle.0.state.compare_exchange(
                CLAIMED,
                OPEN,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}

/// A message whose payload is not an [`Event`]: it is dead-lettered as it is (so an
/// operator can see it) and terminated, never redelivered forever.
#[derive(Debug)]
pub struct Undecodable {
    /// The idempotency key it was published under (the last token of its subject).
    pub key: String,
    pub payload: Vec<u8>,
    pub error: String,
    /// How many times it has been delivered, this time included.
    pub attempts: u32,
    pub published_at: DateTime<Utc>,
    pub settle: Settle,
}

/// What the status resource needs of a queued event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedEvent {
    /// `None` when the queued payload is not a readable event (only operators see it).
    pub customer_id: Option<uuid::Uuid>,
    pub accepted_at: DateTime<Utc>,
}

/// What one `receive` took.
#[derive(Debug, Default)]
pub struct Received {
    pub deliveries: Vec<Delivery>,
    pub undecodable: Vec<Undecodable>,
}

impl Received {
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.undecodable.is_empty()
    }
}

pub trait QueueBackend: Send + Sync + 'static {
    /// A short name for logs and readiness (`memory`, `nats`).
    fn name(&self) -> &'static str;

    /// Adds a newly accepted event; resolves once the backend holds it (for NATS: after
    /// the publish ack). Fails when the backend is full or down.
    fn publish(&self, event: Event) -> BoxFuture<'static, Result<(), QueueError>>;

    /// Adds events that were already accepted once (dead-letter replay, a restart's
    /// spilled backlog): they bypass the capacity limit and any de-duplication window.
    fn republish(&self, events: Vec<Event>) -> BoxFuture<'static, Result<(), QueueError>>;

    /// Waits until at least one event is ready (or `wait` passes) and takes up to `max`.
    fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'static, Result<Received, QueueError>>;

    /// How often a holder of deliveries must report progress so they are not redelivered
    /// to someone else; `None` when they never are.
    fn progress_interval(&self) -> Option<Duration>;

    /// Events accepted and not yet done: waiting, delayed for a retry, or in flight. Never
    /// blocks (a metrics callback reads it); a remote backend reports its last reading.
    fn depth(&self) -> usize;

    /// Events a worker could take now or holds: waiting or in flight, but not retries
    /// waiting for their time (for the stall check of /readyz). Never blocks either; a
    /// remote backend reports what it can see (NATS: not yet delivered).
    fn runnable(&self) -> usize;

    /// Whether the backend answers (for /readyz).
    fn check(&self) -> BoxFuture<'static, Result<(), QueueError>>;

    /// Whether an event with this idempotency key is still queued (waiting, retrying or
    /// in flight).
    fn is_queued(&self, key: &IdempotencyKey) -> BoxFuture<'static, Result<bool, QueueError>>;

    /// The event with this idempotency key while it is still queued (as [`Self::is_queued`]):
    /// whose it is and when it was accepted, for the status resource.
    fn find_queued(
        &self,
        key: &IdempotencyKey,
    ) -> BoxFuture<'static, Result<Option<QueuedEvent>, QueueError>>;

    /// Sends whatever settlements are still buffered (before the process exits).
    fn flush(&self) -> BoxFuture<'static, ()>;
}

/// An SMS event with `body`, for the queues' unit tests.
#[cfg(test)]
fn test_event(body: &str) -> Event {
    use crate::domain::{Accept, IntoEvent, SendSms};
    SendSms {
        from: Some("+12016661234".into()),
        to: Some("+18045551234".into()),
        r#type: Some("sms".into()),
        body: Some(body.into()),
        timestamp: Some("2024-11-01T14:00:00Z".into()),
        ..Default::default()
    }
    .into_event(&Accept {
        default_customer: uuid::Uuid::nil(),
        inbound_owner: None,
        idempotency_header: None,
        endpoint: "/api/messages/sms",
        now: Utc::now(),
    })
    .unwrap()
}
