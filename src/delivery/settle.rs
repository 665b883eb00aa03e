//! Where a delivery is settled, once: each provider call's outcome ends here and is
//! recorded with the others that finished at the same time (one statement per kind of
//! outcome, not one per message). Every write is fenced by the lease token, so a sender
//! whose lease ran out (it was presumed dead) changes nothing.
//!
//! - sent: `queued → sent` with the provider's id;
//! - failed: the RetryScheduler decides. Worth retrying: due again after its backoff
//!   (never sooner than the provider's `Retry-After`); failed for good (a 4xx, out of
//!   attempts or age): the DlqActor parks it (`queued → failed` and a dead letter, in one
//!   transaction);
//! - never called (the circuit opened while it waited): given back, the attempt refunded,
//!   due when the circuit lets a trial through.
//!
//! These writes wait out a database outage (the provider has answered: settling again
//! later is right, calling it again is not). A panic while settling (a bug) loses that
//! batch's record, as a crash would (its messages are due again when their lease runs
//! out), and nothing else: the settler goes on with every later call.

use std::mem;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::Lane;
use crate::actors::dlq_delivery::ParkDelivery;
use crate::actors::faults::Site;
use crate::actors::retry::{Decision, DeliveryFailed};
use crate::actors::supervision::caught_async;
use crate::actors::ProcessingError;
use crate::domain::Event;
use crate::store::delivery;
use crate::store::outage::Hold;
use crate::store::status::Delivered;
use crate::store::StoreError;

/// How one held message's call ended.
#[derive(Debug)]
pub enum Outcome {
    Sent {
        id: i64,
        lease_token: String,
        provider_message_id: String,
        /// Which provider accepted it (`messages.sent_by`).
        sent_by: &'static str,
        event: Event,
    },
    Failed {
        id: i64,
        lease_token: String,
        event: Event,
        error: ProcessingError,
    },
    NotCalled {
        id: i64,
        lease_token: String,
    },
    Unreadable {
        id: i64,
        lease_token: String,
        reason: String,
    },
}

impl Outcome {
    fn id(&self) -> i64 {
        match self {
            Outcome::Sent { id, .. }
            | Outcome::Failed { id, .. }
            | Outcome::NotCalled { id, .. }
            | Outcome::Unreadable { id, .. } => *id,
        }
    }
}

/// Takes an outcome from a finished call; the lane's settler records it.
pub fn hand_over(lane: Rc<Lane>, outcome: Outcome) {
    let (start, waiting) = {
        let mut state = lane.state.borrow_mut();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.holding.remove(&outcome.id());
        state.outcomes.push(outcome);
        let waiting = !state.pending.is_empty();
        (!mem::replace(&mut state.settling, true), waiting)
    };
    lane.publish_gauges();
    // Room for a handed-over message that waits.
    if waiting {
        actix::spawn(lane.clone().start_pending());
    }
    if start {
        actix::spawn(settler(lane));
    }
}

async fn settler(lane: Rc<Lane>) {
    loop {
        // Calls that finish together (a fast provider) settle together.
        tokio::task::yield_now().await;
        let batch = mem::take(&mut lane.state.borrow_mut().outcomes);
        if batch.is_empty() {
            lane.state.borrow_mut().settling = false;
            return;
        }
        let count = batch.len();
        if let Err(reason) = caught_async(settle(&lane, batch)).await {
            tracing::error!(
                provider = lane.name,
                count,
                reason,
                "settling panicked; {count} message(s) not recorded are due again when their lease runs out"
            );
            lane.deps.metrics.actor_restarted("sender");
        }
        // Room was freed: there may be more to claim.
        actix::spawn(lane.clone().claim());
    }
}

async fn settle(lane: &Lane, batch: Vec<Outcome>) {
    if let Some(stall) = lane.deps.faults.at(Site::Settle, None) {
        stall.await;
    }
    let now = Utc::now();
    let mut sent = Vec::new();
    let mut sent_keys = Vec::new();
    let mut later = Vec::new();
    let mut given_back = Vec::new();
    let mut unreadable = Vec::new();
    let reopen = lane
        .state
        .borrow()
        .breaker
        .reopens_at()
        .map(|at| now + at.saturating_duration_since(Instant::now()))
        .unwrap_or(now);
    for outcome in batch {
        match outcome {
            Outcome::Sent {
                id,
                lease_token,
                provider_message_id,
                sent_by,
                event,
            } => {
                tracing::debug!(provider = lane.name, idempotency_key = %event.idempotency_key, "message sent");
                sent_keys.push(event.idempotency_key.as_str().to_string());
                sent.push(Delivered {
                    id,
                    lease_token,
                    provider_message_id,
                    sent_by,
                });
            }
            Outcome::Failed {
                id,
                lease_token,
                event,
                error,
            } => {
                lane.deps.metrics.failed(error.kind().as_str());
                let event = Arc::new(event);
                let asked = lane.deps.retry.send(DeliveryFailed {
                    event: event.clone(),
                    error: error.clone(),
                });
                match asked.await {
                    Ok(Decision::Retry(delay)) => {
                        let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
                        later.push((id, lease_token, at));
                    }
                    Ok(Decision::DeadLetter(_)) => lane.deps.dlq.do_send(ParkDelivery {
                        id,
                        lease_token,
                        attempts: event.attempts_after_failure(),
                        last_error: error.to_string(),
                        kind: error.kind(),
                        code: error.code(),
                        event,
                        writer: lane.deps.writer.clone(),
                    }),
                    // Unreachable only while the system stops: the lease runs out and the
                    // message is due again then.
                    Err(err) => {
                        tracing::warn!(provider = lane.name, error = %err, "retry scheduler unreachable; the message is due again when its lease runs out")
                    }
                }
            }
            Outcome::NotCalled { id, lease_token } => given_back.push((id, lease_token, reopen)),
            Outcome::Unreadable {
                id,
                lease_token,
                reason,
            } => unreadable.push((id, lease_token, reason)),
        }
    }
    let writer = &lane.deps.writer;
    let health = writer.health();
    let always = || true;
    if !sent.is_empty() {
        match health
            .hold(Hold::UntilWritten, always, || writer.mark_sent(&sent))
            .await
        {
            Ok(moved) if moved < sent.len() as u64 => tracing::warn!(
                provider = lane.name,
                lost = sent.len() as u64 - moved,
                "sent messages whose lease had passed to another sender were not recorded by this one"
            ),
            Ok(_) => {}
            Err(err) => {
                for key in &sent_keys {
                    tracing::warn!(
                        provider = lane.name,
                        idempotency_key = %key,
                        error = %err,
                        "the provider accepted this message but recording it as sent failed; unless that record reached the disk anyway, its retry sends it again (when its lease runs out)"
                    );
                }
            }
        }
    }
    for (list, refund) in [(&later, false), (&given_back, true)] {
        if list.is_empty() {
            continue;
        }
        let rescheduled = health
            .hold(Hold::UntilWritten, always, || {
                delivery::reschedule(writer, list, refund)
            })
            .await;
        if let Err(err) = rescheduled {
            not_recorded(lane, "rescheduled", list.len(), &err);
        }
    }
    for (id, lease_token, reason) in unreadable {
        tracing::error!(
            message_id = id,
            reason,
            "an outbound message cannot be read; marked failed"
        );
        if let Err(err) = delivery::fail_unreadable(writer, id, &lease_token).await {
            not_recorded(lane, "failed", 1, &err);
        }
    }
}

/// A settlement that could not be written (shutdown during an outage, or a permanent
/// refusal): the lease runs out and the message is due again, so its provider may be
/// called a second time, with the same idempotency key.
fn not_recorded(lane: &Lane, what: &str, count: usize, err: &StoreError) {
    tracing::warn!(
        provider = lane.name,
        count,
        error = %err,
        "{count} message(s) could not be recorded as {what}; they are due again when their lease runs out"
    );
}
