//! The in-process, bounded backend (the default).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
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
            out.push(Delivery { id, event });
        }
        // Same-key events keep their place at the front, in order.
        for event in waiting.into_iter().rev() {
            self.ready.push_front(event);
        }
        out
    }

    /// The delivery is finished here (done, or moved to the delayed heap).
    fn release(&mut self, id: DeliveryId) {
        if let Some(event) = self.in_flight.remove(&id) {
            self.busy_keys.remove(event.idempotency_key.as_str());
        }
    }
}

impl MemoryQueue {
    pub fn new(capacity: usize, enqueue_wait: Duration) -> Self {
        MemoryQueue {
            shared: Arc::new(Shared {
                capacity,
                enqueue_wait,
                state: Mutex::new(State::default()),
                ready_signal: Notify::new(),
                space_signal: Notify::new(),
            }),
        }
    }

    /// Adds the event if there is room; gives it back if not.
    fn try_publish(&self, event: Event) -> Result<Result<(), Event>, QueueError> {
        let mut state = self.state();
        if state.closed {
            return Err(QueueError::Closed);
        }
        if state.depth() >= self.shared.capacity {
            return Ok(Err(event));
        }
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
        Ok((state.take(max), next_due))
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
            let deadline = Instant::now() + this.shared.enqueue_wait;
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
        let mut state = self.state();
        state.release(id);
        let waiting = !state.ready.is_empty();
        drop(state);
        self.shared.space_signal.notify_one();
        if waiting {
            // An event may have been waiting for this one's key.
            self.shared.ready_signal.notify_one();
        }
    }

    fn retry_later(&self, id: DeliveryId, event: Event, delay: Duration) {
        let mut state = self.state();
        state.release(id);
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

    fn unfinished(&self, ids: &[DeliveryId]) -> Vec<Delivery> {
        let state = self.state();
        ids.iter()
            .filter_map(|id| {
                state.in_flight.get(id).map(|event| Delivery {
                    id: *id,
                    event: event.clone(),
                })
            })
            .collect()
    }

    fn depth(&self) -> usize {
        self.state().depth()
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

    fn close_and_take(&self) -> Vec<Event> {
        let mut state = self.state();
        state.closed = true;
        state.busy_keys.clear();
        let mut events: Vec<Event> = state.in_flight.drain().map(|(_, e)| e).collect();
        events.extend(state.ready.drain(..));
        events.extend(state.delayed.drain().map(|Reverse(d)| d.event));
        drop(state);
        self.shared.ready_signal.notify_waiters();
        self.shared.space_signal.notify_waiters();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Accept, IntoEvent, SendSms};

    fn event(body: &str) -> Event {
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
            idempotency_header: None,
            endpoint: "/api/messages/sms",
            now: chrono::Utc::now(),
        })
        .unwrap()
    }

    async fn take(queue: &MemoryQueue, max: usize) -> Vec<Delivery> {
        queue.receive(max, Duration::ZERO).await.unwrap()
    }

    #[actix_web::test]
    async fn a_full_queue_makes_publishers_wait_for_room() {
        let queue = MemoryQueue::new(1, Duration::from_secs(5));
        queue.publish(event("first")).await.unwrap();
        let waiting = queue.publish(event("second"));
        let taken = take(&queue, 1).await;
        let consumer = queue.clone();
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            consumer.ack(taken[0].id);
        });
        let started = Instant::now();
        waiting.await.expect("room was made");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(queue.depth(), 1);
    }

    #[actix_web::test]
    async fn capacity_counts_everything_not_finished() {
        let queue = MemoryQueue::new(2, Duration::ZERO);
        queue.publish(event("a")).await.unwrap();
        queue.publish(event("b")).await.unwrap();
        assert_eq!(
            queue.publish(event("c")).await,
            Err(QueueError::Full { capacity: 2 })
        );
        let taken = take(&queue, 10).await;
        assert_eq!(taken.len(), 2);
        assert_eq!(queue.depth(), 2, "in flight still counts");
        queue.ack(taken[0].id);
        assert_eq!(queue.depth(), 1);
        queue.publish(event("c")).await.unwrap();
    }

    #[actix_web::test]
    async fn one_idempotency_key_is_in_flight_at_most_once() {
        let queue = MemoryQueue::new(10, Duration::ZERO);
        queue.publish(event("same")).await.unwrap();
        queue.publish(event("same")).await.unwrap();
        queue.publish(event("other")).await.unwrap();
        let first = take(&queue, 10).await;
        let bodies: Vec<&str> = first.iter().map(|d| d.event.body.as_str()).collect();
        assert_eq!(bodies, ["same", "other"], "the second 'same' waits");
        assert!(take(&queue, 10).await.is_empty());
        queue.ack(first[0].id);
        let second = take(&queue, 10).await;
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].event.body, "same");
    }

    #[actix_web::test]
    async fn a_retry_comes_back_after_its_delay() {
        let queue = MemoryQueue::new(10, Duration::ZERO);
        queue.publish(event("later")).await.unwrap();
        let taken = take(&queue, 1).await;
        let mut again = taken[0].event.clone();
        again.attempt = 1;
        queue.retry_later(taken[0].id, again, Duration::from_millis(50));
        assert!(take(&queue, 1).await.is_empty(), "not before its time");
        assert_eq!(queue.depth(), 1, "a waiting retry is part of the backlog");
        let started = Instant::now();
        let back = queue.receive(1, Duration::from_secs(2)).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(back[0].event.attempt, 1);
    }

    #[actix_web::test]
    async fn closing_returns_every_unfinished_event() {
        let queue = MemoryQueue::new(10, Duration::ZERO);
        for body in ["in flight", "delayed", "ready"] {
            queue.publish(event(body)).await.unwrap();
        }
        let taken = take(&queue, 2).await;
        queue.retry_later(taken[1].id, taken[1].event.clone(), Duration::from_secs(60));
        let mut left: Vec<String> = queue.close_and_take().into_iter().map(|e| e.body).collect();
        left.sort();
        assert_eq!(left, ["delayed", "in flight", "ready"]);
        assert_eq!(queue.publish(event("late")).await, Err(QueueError::Closed));
        assert_eq!(
            queue.receive(1, Duration::ZERO).await.unwrap_err(),
            QueueError::Closed
        );
    }
}
