//! Where a delivery is settled, once: each provider call's outcome ends here and is
//! recorded with the others that finished at the same time (one statement per kind of
//! outcome, not one per message). Every write is fenced by the lease token, so a sender
//! whose lease ran out (it was presumed dead) changes nothing.
//!
//! - sent: `queued → sent` with the provider's id;
//! - failed, worth retrying: due again after the retry policy's backoff (never sooner
//!   than the provider's `Retry-After`), the failure recorded for the status resource;
//! - failed for good (a 4xx, out of attempts or age): `queued → failed` and a dead letter,
//!   in one transaction;
//! - never called (the circuit opened while it waited): given back, the attempt refunded,
//!   due when the circuit lets a trial through.
//!
//! These writes wait out a database outage (the provider has answered: settling again
//! later is right, calling it again is not).

use std::mem;
use std::rc::Rc;
use std::time::Instant;

use chrono::Utc;

use super::Lane;
use crate::actors::retry::Decision;
use crate::actors::ProcessingError;
use crate::domain::Event;
use crate::store::dead_letters::NewDeadLetter;
use crate::store::delivery::{self, Form};
use crate::store::failures::{self, Failure};
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

/// Takes an outcome from a finished call; the lane's settler records it.
pub fn hand_over(lane: Rc<Lane>, outcome: Outcome) {
    let start = {
        let mut state = lane.state.borrow_mut();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.outcomes.push(outcome);
        !mem::replace(&mut state.settling, true)
    };
    lane.publish_gauges();
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
        settle(&lane, batch).await;
        // Room was freed: there may be more to claim.
        actix::spawn(lane.clone().claim());
    }
}

async fn settle(lane: &Lane, batch: Vec<Outcome>) {
    let now = Utc::now();
    let mut sent = Vec::new();
    let mut later = Vec::new();
    let mut given_back = Vec::new();
    let mut dead = Vec::new();
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
                event,
            } => {
                tracing::debug!(provider = lane.name, idempotency_key = %event.idempotency_key, "message sent");
                sent.push(Delivered {
                    id,
                    lease_token,
                    provider_message_id,
                });
            }
            Outcome::Failed {
                id,
                lease_token,
                event,
                error,
            } => {
                let attempts = event.attempt.saturating_add(1);
                let age = (now - event.accepted_at).to_std().unwrap_or_default();
                let decision = lane.deps.policy.decide(
                    error.kind(),
                    attempts,
                    age,
                    error.retry_after(),
                    fastrand::f64(),
                );
                lane.deps.metrics.failed(error.kind().as_str());
                match decision {
                    Decision::Retry(delay) => {
                        tracing::info!(
                            provider = lane.name,
                            idempotency_key = %event.idempotency_key,
                            attempt = attempts,
                            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            error = %error,
                            "delivery retry scheduled"
                        );
                        lane.deps.metrics.retries.add(1, &[]);
                        let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
                        later.push((id, lease_token, at));
                        record(lane, &event, attempts, &error, false).await;
                    }
                    Decision::DeadLetter(reason) => {
                        dead.push((id, lease_token, event, error, attempts, reason))
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
            Err(err) => not_recorded(lane, "sent", sent.len(), &err),
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
    for (id, lease_token, event, error, attempts, reason) in dead {
        dead_letter(lane, id, &lease_token, &event, &error, attempts, reason).await;
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

#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    lane: &Lane,
    id: i64,
    lease_token: &str,
    event: &Event,
    error: &ProcessingError,
    attempts: u32,
    reason: &'static str,
) {
    let last_error = error.to_string();
    let kind = error.kind();
    let new = NewDeadLetter {
        event,
        attempts,
        last_error: &last_error,
        error_kind: kind.as_str(),
    };
    let writer = &lane.deps.writer;
    let mut form = Form::Plain;
    let stored = loop {
        let stored = writer
            .health()
            .hold(
                Hold::UntilWritten,
                || true,
                || delivery::dead_letter(writer, id, lease_token, &new, form),
            )
            .await;
        // Refused for its content: kept encoded, or, refused even so, logged whole here.
        form = match (stored, form) {
            (Err(err), Form::Plain) if !err.is_transient() => {
                tracing::warn!(idempotency_key = %event.idempotency_key, error = %err, "dead letter refused as it is; storing it encoded");
                Form::Encoded
            }
            (Err(err), Form::Encoded) if !err.is_transient() => {
                tracing::error!(
                    idempotency_key = %event.idempotency_key,
                    error = %err,
                    event = %serde_json::to_string(event).unwrap_or_default(),
                    "the database refused a dead letter even encoded; it is logged here and its message marked failed"
                );
                lane.deps.metrics.dlq_write_failures.add(1, &[]);
                Form::Nowhere
            }
            (stored, _) => break stored,
        };
    };
    match stored {
        Ok(true) => {
            tracing::warn!(
                provider = lane.name,
                idempotency_key = %event.idempotency_key,
                attempt = attempts,
                error_kind = kind.as_str(),
                error = %error,
                reason,
                "message dead-lettered"
            );
            if form != Form::Nowhere {
                lane.deps.metrics.dead_lettered.add(1, &[]);
            }
            record(lane, event, attempts, error, true).await;
        }
        Ok(false) => {
            tracing::warn!(provider = lane.name, idempotency_key = %event.idempotency_key, "not dead-lettered: its lease had passed to another sender")
        }
        Err(err) => not_recorded(lane, "dead-lettered", 1, &err),
    }
}

/// The failure, for the status resource (`attempts`, `last_error`); best effort.
async fn record(lane: &Lane, event: &Event, attempts: u32, error: &ProcessingError, dead: bool) {
    let error_text = error.to_string();
    let failure = Failure {
        event,
        attempts,
        error: &error_text,
        error_kind: error.kind().as_str(),
        dead_lettered: dead,
    };
    if let Err(err) = failures::record(lane.deps.writer.connection(), failure).await {
        tracing::debug!(idempotency_key = %event.idempotency_key, error = %err, "could not record the failed attempt");
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
