//! Fault injection for tests, compiled in with the `testing` cargo feature only: a hook
//! the pipeline's actors call at the start of their work, which may panic (a crash) or
//! hand back a future the actor must wait for before it takes another message (a wedge).
//! Without the feature (every release build) [`Faults`] is empty and its calls are no-ops.

use futures_util::future::BoxFuture;

use crate::domain::Event;
use crate::queue::Delivery;

/// Where the hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// QueueActor, accepting an event (`Enqueue`).
    Enqueue,
    /// QueueActor's dispatcher, handing a batch to a worker (the batch's first event).
    Dispatch,
    /// A PersistenceWorker, taking a batch (its first event).
    Worker,
    /// A PersistenceWorker's batch as its storing starts (every event of it): a panic here
    /// is one an event of the batch causes, and the batch is split to find it.
    Persist,
    /// RetryScheduler, deciding about a failure.
    Retry,
    /// DlqActor, parking an event.
    DeadLetter,
    /// A sender's settlement of the calls that finished together (no event at hand).
    Settle,
    /// A WebhookDeliverer's attempt at one delivery (no event at hand).
    WebhookDelivery,
}

/// What a wedged actor waits for.
pub type Stall = BoxFuture<'static, ()>;

/// The hook: where, and the events at hand (one, or a worker's whole batch).
#[cfg(feature = "testing")]
pub type FaultHook = std::sync::Arc<dyn Fn(Site, &[&Event]) -> Option<Stall> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Faults(#[cfg(feature = "testing")] Option<FaultHook>);

impl Faults {
    #[cfg(feature = "testing")]
    pub fn new(hook: Option<FaultHook>) -> Self {
        Faults(hook)
    }

    /// Calls the hook, if any (it may panic); returns what to wait for, if anything.
    pub fn at(&self, site: Site, event: Option<&Event>) -> Option<Stall> {
        #[cfg(feature = "testing")]
        {
            self.0
                .as_ref()
                .and_then(|hook| hook(site, event.as_slice()))
        }
        #[cfg(not(feature = "testing"))]
        {
            let _ = (site, event);
            None
        }
    }

    /// [`Faults::at`] with every event of a batch.
    pub fn at_batch(&self, site: Site, batch: &[Delivery]) -> Option<Stall> {
        #[cfg(feature = "testing")]
        {
            let hook = self.0.as_ref()?;
            let events: Vec<&Event> = batch.iter().map(|d| d.event.as_ref()).collect();
            hook(site, &events)
        }
        #[cfg(not(feature = "testing"))]
        {
            let _ = (site, batch);
            None
        }
    }
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(feature = "testing")]
        let hooked = self.0.is_some();
        #[cfg(not(feature = "testing"))]
        let hooked = false;
        f.write_str(if hooked {
            "Faults(hook)"
        } else {
            "Faults(none)"
        })
    }
}
