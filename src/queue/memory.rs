//! The in-process, bounded backend (the default).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::{self, BoxFuture, FutureExt};
use std::sync::Arc;
use tokio::sync::Notify;

use super::{Delivery, DeliveryId, QueueBackend, QueueError};
use crate::domain::Event;

#[derive(Clone)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    state: Mutex<State>,
    ready_signal: Notify,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Event>,
    /// Retries waiting for their time, earliest first.
    delayed: BinaryHeap<Reverse<Delayed>>,
    in_flight: HashMap<DeliveryId, Event>,
    next_id: u64,
    closed: bool,
}

struct Delayed {
    due: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl State {
    fn depth(&self) -> usize {
        self.ready.len() + self.delayed.len() + self.in_flight.len()
    }

    /// Moves retries whose time has come to the ready queue; returns when the next is due.
    fn promote_due(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse(next)) = self.delayed.peek() {
            if next.due > now {
                return Some(next.due);
            }
            let Reverse(due) = self.delayed.pop().expect("peeked");
            self.ready.push_back(due.event);
        }
        None
    }

    fn take(&mut self, max: usize) -> Vec<Delivery> {
        let n = max.min(self.ready.len());
        let mut out = Vec::with_capacity(n);
        for event in self.ready.drain(..n) {
            self.next_id += 1;
            let id = DeliveryId(self.next_id);
            self.in_flight.insert(id, event.clone());
            out.push(Delivery { id, event });
        }
        out
    }
}

impl MemoryQueue {
    pub fn new(capacity: usize) -> Self {
        MemoryQueue {
            shared: Arc::new(Shared {
                capacity,
                state: Mutex::new(State::default()),
                ready_signal: Notify::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State half-updated in a way that
        // loses events (every method moves an event in one step), so poisoning is ignored.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn try_take(&self, max: usize) -> Result<(Vec<Delivery>, Option<Instant>), QueueError> {
        let mut state = self.state();
        if state.closed {
            return Err(QueueError::Closed);
        }
        let next_due = state.promote_due(Instant::now());
        Ok((state.take(max), next_due))
    }
}

impl QueueBackend for MemoryQueue {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn publish(&self, event: Event) -> BoxFuture<'static, Result<(), QueueError>> {
        let result = {
            let mut state = self.state();
            if state.closed {
                Err(QueueError::Closed)
            } else if state.depth() >= self.shared.capacity {
                Err(QueueError::Full {
                    capacity: self.shared.capacity,
                })
            } else {
                state.ready.push_back(event);
                Ok(())
            }
        };
        if result.is_ok() {
            self.shared.ready_signal.notify_one();
        }
        future::ready(result).boxed()
    }

    fn republish(&self, events: Vec<Event>) -> BoxFuture<'static, Result<(), QueueError>> {
        let result = {
            let mut state = self.state();
            if state.closed {
                Err(QueueError::Closed)
            } else {
                state.ready.extend(events);
                Ok(())
            }
        };
        self.shared.ready_signal.notify_waiters();
        future::ready(result).boxed()
    }

    fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'static, Result<Vec<Delivery>, QueueError>> {
        let this = self.clone();
        async move {
            let deadline = Instant::now() + wait;
            loop {
                // Register interest before looking, so a publish in between is not missed.
                let signal = this.shared.ready_signal.notified();
                let (batch, next_due) = this.try_take(max)?;
                if !batch.is_empty() {
                    return Ok(batch);
                }
                let now = Instant::now();
                if now >= deadline {
                    return Ok(batch);
                }
                let until = next_due.map_or(deadline, |due| due.min(deadline));
                let _ = tokio::time::timeout(until - now, signal).await;
            }
        }
        .boxed()
    }

    fn ack(&self, id: DeliveryId) {
        self.state().in_flight.remove(&id);
    }

    fn retry_later(&self, id: DeliveryId, event: Event, delay: Duration) {
        let mut state = self.state();
        state.in_flight.remove(&id);
        state.next_id += 1;
        let seq = state.next_id;
        state.delayed.push(Reverse(Delayed {
            due: Instant::now() + delay,
            seq,
            event,
        }));
        drop(state);
        // A receiver sleeping until a later retry must recompute its wake-up time.
        self.shared.ready_signal.notify_waiters();
    }

    fn depth(&self) -> usize {
        self.state().depth()
    }

    fn check(&self) -> BoxFuture<'static, Result<(), QueueError>> {
        let closed = self.state().closed;
        future::ready(if closed { Err(QueueError::Closed) } else { Ok(()) }).boxed()
    }

    fn close_and_take(&self) -> Vec<Event> {
        let mut state = self.state();
        state.closed = true;
        let mut events: Vec<Event> = state.in_flight.drain().map(|(_, e)| e).collect();
        events.extend(state.ready.drain(..));
        events.extend(state.delayed.drain().map(|Reverse(d)| d.event));
        drop(state);
        self.shared.ready_signal.notify_waiters();
        events
    }

    fn snapshot(&self) -> Vec<Event> {
        let state = self.state();
        let mut events: Vec<Event> = state.ready.iter().cloned().collect();
        events.extend(state.in_flight.values().cloned());
        events.extend(state.delayed.iter().map(|Reverse(d)| d.event.clone()));
        events
    }
}
