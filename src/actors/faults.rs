//! Fault injection for tests: a hook the pipeline's actors call at the start of their
//! work, which may panic (a crash) or hand back a future the actor must wait for before
//! it takes another message (a wedge). Production runs without a hook.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::domain::Event;

/// Where the hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// QueueActor, accepting an event (`Enqueue`).
    Enqueue,
    /// QueueActor's dispatcher, handing a batch to a worker (the batch's first event).
    Dispatch,
    /// A PersistenceWorker, taking a batch (its first event).
    Worker,
    /// RetryScheduler, deciding about a failure.
    Retry,
    /// DlqActor, parking an event.
    DeadLetter,
}

/// What a wedged actor waits for.
pub type Stall = BoxFuture<'static, ()>;

pub type FaultHook = Arc<dyn Fn(Site, Option<&Event>) -> Option<Stall> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Faults(Option<FaultHook>);

impl Faults {
    pub fn new(hook: Option<FaultHook>) -> Self {
        Faults(hook)
    }

    /// Calls the hook, if any (it may panic); returns what to wait for, if anything.
    pub fn at(&self, site: Site, event: Option<&Event>) -> Option<Stall> {
        self.0.as_ref().and_then(|hook| hook(site, event))
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Faults(hook)"
        } else {
            "Faults(none)"
        })
    }
}
