//! The in-process, bounded backend (the default).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::{self, BoxFuture, FutureExt};
use std::sync::Arc;
use tokio::sync::Notify;

use super::{
    Delivery, QueueBackend, QueueError, QueuedEvent, Received, Settle, Settlement, Settler,
};
use crate::domain::{Event, IdempotencyKey};

/// Identifies one delivery in `in_flight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DeliveryId(u64);

#[derive(Clone)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    /// Most bytes of events held (see [`Event::approx_bytes`]): with large emails the
    /// count alone would let the queue hold gigabytes.
    max_bytes: usize,
    /// How long a publish may wait for room before the queue counts as full.
    enqueue_wait: Duration,
    state: Mutex<State>,
    ready_signal: Notify,
    space_signal: Notify,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Event>,
    /// Retries waiting for their time, earliest first.
    delayed: BinaryHeap<Reverse<Delayed>>,
    in_flight: HashMap<DeliveryId, Event>,
    /// Idempotency keys of the events in flight. Another event with the same key waits
    /// until that one is done, so two workers never race on one message (and never both
    /// hand it to the provider).
    busy_keys: HashSet<String>,
    next_id: u64,
    closed: bool,
    /// `approx_bytes` of every event held (ready, delayed or in flight).
    bytes: usize,
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

    fn take(&mut self, max: usize) -> Vec<(DeliveryId, Event)> {
        let mut out = Vec::with_capacity(max.min(self.ready.len()));
        let mut waiting = Vec::new();
        while out.len() < max {
            let Some(event) = self.ready.pop_front() else {
                break;
            };
            if !self
                .busy_keys
                .insert(event.idempotency_key.as_str().to_string())
            {
                waiting.push(event);
                continue;
            }
            self.next_id += 1;
            let id = DeliveryId(self.next_id);
            self.in_flight.insert(id, event.clone());
            out.push((id, event));
        }
        // Same-key events keep their place at the front, in order.
        for event in waiting.into_iter().rev() {
            self.ready.push_front(event);
        }
        out
    }

    /// The delivery is finished here (done, or moved to the delayed heap).
    fn release(&mut self, id: DeliveryId) -> Option<Event> {
        let event = self.in_flight.remove(&id)?;
        self.busy_keys.remove(event.idempotency_key.as_str());
        Some(event)
    }

    fn find(&self, key: &str) -> Option<&Event> {
        let same = |e: &&Event| e.idempotency_key.as_str() == key;
        self.ready
            .iter()
            .find(same)
            .or_else(|| self.in_flight.values().find(same))
            .or_else(|| self.delayed.iter().map(|Reverse(d)| &d.event).find(same))
    }

    fn holds(&self, key: &str) -> bool {
        let same = |e: &Event| e.idempotency_key.as_str() == key;
        self.busy_keys.contains(key)
            || self.ready.iter().any(same)
            || self.delayed.iter().any(|Reverse(d)| same(&d.event))
    }
}

/// Settles one delivery of a [`MemoryQueue`].
struct MemorySettler {
    queue: MemoryQueue,
    id: DeliveryId,
}

impl Settler for MemorySettler {
    fn settle(&self, how: Settlement) -> BoxFuture<'static, Result<(), QueueError>> {
        match how {
            Settlement::Ack | Settlement::Term => self.queue.finish(self.id),
            Settlement::Nak(delay) => self.queue.retry_later(self.id, delay),
        }
        future::ready(Ok(())).boxed()
    }

    fn progress(&self) -> BoxFuture<'static, Result<(), QueueError>> {
        // Nothing here is ever redelivered behind a worker's back.
        future::ready(Ok(())).boxed()
    }
}

impl MemoryQueue {
    /// A queue bounded by the number of events only.
    pub fn new(capacity: usize, enqueue_wait: Duration) -> Self {
        Self::bounded(capacity, usize::MAX, enqueue_wait)
    }

    /// A queue bounded by the number of events and by their bytes (`queue.max_bytes`,
    /// see [`Event::approx_bytes`]).
    pub fn bounded(capacity: usize, max_bytes: usize, enqueue_wait: Duration) -> Self {
        MemoryQueue {
            shared: Arc::new(Shared {
                capacity,
                max_bytes,
                enqueue_wait,
                state: Mutex::new(State::default()),
                ready_signal: Notify::new(),
                space_signal: Notify::new(),
            }),
        }
    }

    /// Adds the event if there is room; gives it back if not. An event larger than
    /// `max_bytes` still goes into an empty queue (the body limit bounds it).
    fn try_publish(&self, event: Event) -> Result<Result<(), Event>, QueueError> {
        let mut state = self.state();
        if state.closed {
            return Err(QueueError::Closed);
        }
        let size = event.approx_bytes();
        let depth = state.depth();
        let over_bytes = depth > 0 && state.bytes.saturating_add(size) > self.shared.max_bytes;
        if depth >= self.shared.capacity || over_bytes {
            return Ok(Err(event));
        }
        state.bytes += size;
        state.ready.push_back(event);
        drop(state);
        self.shared.ready_signal.notify_one();
        Ok(Ok(()))
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
        let taken = state.take(max);
        drop(state);
        let deliveries = taken
            .into_iter()
            .map(|(id, event)| {
                let settler = MemorySettler {
                    queue: self.clone(),
                    id,
                };
                Delivery::new(event, Settle::new(settler))
            })
            .collect();
        Ok((deliveries, next_due))
    }

    /// The delivery is done (stored, or dead-lettered).
    fn finish(&self, id: DeliveryId) {
        let mut state = self.state();
        if let Some(event) = state.release(id) {
            state.bytes = state.bytes.saturating_sub(event.approx_bytes());
        }
        let waiting = !state.ready.is_empty();
        drop(state);
        self.shared.space_signal.notify_one();
        if waiting {
            // An event may have been waiting for this one's key.
            self.shared.ready_signal.notify_one();
        }
    }

    /// Delivers the event again, as its next attempt, after `delay`.
    fn retry_later(&self, id: DeliveryId, delay: Duration) {
        let mut state = self.state();
        // Not in flight any more: the queue was closed and its events spilled.
        let Some(mut event) = state.release(id) else {
            return;
        };
        event.attempt += 1;
        state.next_id += 1;
        let seq = state.next_id;
        state.delayed.push(Reverse(Delayed {
            due: crate::time::deadline(delay),
            seq,
            event,
        }));
        drop(state);
        // A receiver sleeping until a later retry must recompute its wake-up time.
        self.shared.ready_signal.notify_waiters();
    }

    /// Stops handing out events and returns every event not yet done, so a graceful
    /// shutdown can store them for the next start.
    pub fn close_and_take(&self) -> Vec<Event> {
        let mut state = self.state();
        state.closed = true;
        state.busy_keys.clear();
        state.bytes = 0;
        let mut events: Vec<Event> = state.in_flight.drain().map(|(_, e)| e).collect();
        events.extend(state.ready.drain(..));
        events.extend(state.delayed.drain().map(|Reverse(d)| d.event));
        drop(state);
        self.shared.ready_signal.notify_waiters();
        self.shared.space_signal.notify_waiters();
        events
    }

    /// A copy of the events not yet done (tests and diagnostics).
    pub fn snapshot(&self) -> Vec<Event> {
        let state = self.state();
        let mut events: Vec<Event> = state.ready.iter().cloned().collect();
        events.extend(state.in_flight.values().cloned());
        events.extend(state.delayed.iter().map(|Reverse(d)| d.event.clone()));
        events
    }
}

impl QueueBackend for MemoryQueue {
    fn name(&self) -> &'static str {
        "memory"
    }

    /// Waits up to the enqueue timeout for room: under a burst, clients are slowed to the
    /// rate the workers store at instead of being turned away at once.
    fn publish(&self, event: Event) -> BoxFuture<'static, Result<(), QueueError>> {
        let this = self.clone();
        async move {
            let deadline = crate::time::deadline(this.shared.enqueue_wait);
            let mut event = event;
            loop {
                // Registered before looking, so room made in between is not missed.
                let room = this.shared.space_signal.notified();
                match this.try_publish(event)? {
                    Ok(()) => return Ok(()),
                    Err(back) => event = back,
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(QueueError::Full {
                        capacity: this.shared.capacity,
                    });
                }
                let _ = tokio::time::timeout(deadline - now, room).await;
            }
        }
        .boxed()
    }

    fn republish(&self, events: Vec<Event>) -> BoxFuture<'static, Result<(), QueueError>> {
        let result = {
            let mut state = self.state();
            if state.closed {
                Err(QueueError::Closed)
            } else {
                // Counted like published events, or finishing them would drive the byte
                // count below what the queue holds (a restore then admitted too much).
                let bytes: usize = events.iter().map(Event::approx_bytes).sum();
                state.bytes = state.bytes.saturating_add(bytes);
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
    ) -> BoxFuture<'static, Result<Received, QueueError>> {
        let this = self.clone();
        async move {
            let deadline = crate::time::deadline(wait);
            loop {
                // Register interest before looking, so a publish in between is not missed.
                let signal = this.shared.ready_signal.notified();
                let (deliveries, next_due) = this.try_take(max)?;
                let now = Instant::now();
                if !deliveries.is_empty() || now >= deadline {
                    return Ok(Received {
                        deliveries,
                        undecodable: Vec::new(),
                    });
                }
                let until = next_due.map_or(deadline, |due| due.min(deadline));
                let _ = tokio::time::timeout(until - now, signal).await;
            }
        }
        .boxed()
    }

    fn progress_interval(&self) -> Option<Duration> {
        None
    }

    fn depth(&self) -> usize {
        self.state().depth()
    }

    fn runnable(&self) -> usize {
        let state = self.state();
        let now = Instant::now();
        let due = state.delayed.iter().filter(|d| d.0.due <= now).count();
        state.ready.len() + state.in_flight.len() + due
    }

    fn check(&self) -> BoxFuture<'static, Result<(), QueueError>> {
        let closed = self.state().closed;
        future::ready(if closed {
            Err(QueueError::Closed)
        } else {
            Ok(())
        })
        .boxed()
    }

    fn is_queued(&self, key: &IdempotencyKey) -> BoxFuture<'static, Result<bool, QueueError>> {
        future::ready(Ok(self.state().holds(key.as_str()))).boxed()
    }

    fn find_queued(
        &self,
        key: &IdempotencyKey,
    ) -> BoxFuture<'static, Result<Option<QueuedEvent>, QueueError>> {
        let found = self.state().find(key.as_str()).map(|e| QueuedEvent {
            customer_id: Some(e.customer_id),
            accepted_at: e.accepted_at,
        });
        future::ready(Ok(found)).boxed()
    }

    fn flush(&self) -> BoxFuture<'static, ()> {
        future::ready(()).boxed()
    }
}

#[cfg(test)]
mod tests;
