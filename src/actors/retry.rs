//! RetryScheduler: decides what happens to a failed event.
//!
//! Transient failures are delivered again after a capped exponential backoff with jitter
//! (never sooner than a provider's Retry-After, itself capped at `retry.max_delay`): the
//! delivery is nak'd with that delay and the backend holds it (memory: a delay heap; NATS:
//! JetStream redelivers), so a waiting retry holds no worker. Permanent failures, events
//! out of attempts or age, and events whose next attempt would come after `retry.max_age`
//! go to the DlqActor, which terminates the delivery once the dead letter is stored.
//!
//! Every `Failed` carries a claimed delivery: it was failed once, by one party. The actor
//! is supervised (see [`super::supervision`]): should deciding panic, the delivery is still
//! retried (or dead-lettered when out of attempts) by a path without the code that panicked.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use sea_orm::DatabaseConnection;

use super::dlq::{DeadLetter, DlqActor};
use super::faults::{Faults, Site};
use super::supervision::{self, Ping};
use super::{ErrorKind, ProcessingError};
use crate::config::RetrySettings;
use crate::domain::Event;
use crate::queue::Claimed;
use crate::store::failures::{self, Failure};
use crate::telemetry::Metrics;

/// The label of this actor in `messaging_actor_restarts_total`.
const ACTOR: &str = "retry_scheduler";

/// Processing the claimed delivery failed with `error`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Failed {
    pub claim: Claimed,
    pub error: ProcessingError,
}

/// A provider call for a stored outbound message failed with `error` (the delivery
/// stage): retry it after the returned delay, or park it. The sender settles it.
#[derive(Message)]
#[rtype(result = "Decision")]
pub struct DeliveryFailed {
    pub event: Arc<Event>,
    pub error: ProcessingError,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub max_age: Duration,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl From<&RetrySettings> for RetryPolicy {
    fn from(s: &RetrySettings) -> Self {
        RetryPolicy {
            max_attempts: s.max_attempts,
            max_age: s.max_age,
            base_delay: s.base_delay,
            max_delay: s.max_delay,
        }
    }
}

/// What becomes of a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Deliver it again after this delay.
    Retry(Duration),
    /// Park it, for this reason.
    DeadLetter(&'static str),
}

impl RetryPolicy {
    /// The ceiling of the delay after failed attempt `n` (1-based):
    /// `min(max_delay, base_delay · 2^(n-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// A delay drawn from `[ceiling/2, ceiling]` ("equal jitter": spreads retries out while
    /// keeping the backoff's growth), raised to `retry_after` when the other side asked,
    /// but never beyond `max_delay`: a provider's `Retry-After: 99999999999` must not park
    /// a message for millennia.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let jittered = ceiling / 2 + ceiling.mul_f64(unit.clamp(0.0, 1.0) / 2.0);
        let asked = retry_after.unwrap_or_default().min(self.max_delay);
        jittered.max(asked)
    }

    /// Retry or dead-letter: after `attempts` attempts (this one included), `age` since the
    /// event was accepted, failing with an error of `kind`.
    pub fn decide(
        &self,
        kind: ErrorKind,
        attempts: u32,
        age: Duration,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Decision {
        if kind == ErrorKind::Permanent {
            return Decision::DeadLetter("permanent failure");
        }
        if attempts >= self.max_attempts {
            return Decision::DeadLetter("out of attempts (retry.max_attempts)");
        }
        let delay = self.delay(attempts, retry_after, unit);
        if age.saturating_add(delay) > self.max_age {
            // Waiting would take it past its age limit: no point in holding it that long.
            return Decision::DeadLetter("next attempt would come after retry.max_age");
        }
        Decision::Retry(delay)
    }

    /// What a path without the deciding code decides (after a panic while deciding): the
    /// plain backoff ceiling, or the dead-letter queue for a permanent failure or when out
    /// of attempts.
    pub fn fallback(&self, kind: ErrorKind, attempts: u32) -> Decision {
        if kind == ErrorKind::Permanent {
            Decision::DeadLetter("permanent failure")
        } else if attempts >= self.max_attempts {
            Decision::DeadLetter("out of attempts (retry.max_attempts)")
        } else {
            Decision::Retry(self.ceiling(attempts))
        }
    }
}

/// Whose failure a decision is about, for its log line.
#[derive(Clone, Copy)]
enum Stage {
    /// Storing an event off the queue.
    Persist,
    /// A provider call for a stored outbound message.
    Delivery,
}

/// Logs `decision` on `event`, whose attempt `attempts` failed with `error`.
fn log_decision(
    stage: Stage,
    event: &Event,
    attempts: u32,
    error: &ProcessingError,
    decision: Decision,
) {
    match decision {
        Decision::Retry(delay) => tracing::info!(
            event_id = %event.event_id,
            idempotency_key = %event.idempotency_key,
            attempt = attempts,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error = %error,
            "{}",
            match stage {
                Stage::Persist => "retry scheduled",
                Stage::Delivery => "delivery retry scheduled",
            }
        ),
        Decision::DeadLetter(reason) => tracing::warn!(
            event_id = %event.event_id,
            idempotency_key = %event.idempotency_key,
            attempt = attempts,
            error_kind = error.kind().as_str(),
            error = %error,
            reason,
            "{}",
            match stage {
                Stage::Persist => "event dead-lettered",
                Stage::Delivery => "delivery dead-lettered",
            }
        ),
    }
}

pub struct RetryScheduler {
    policy: RetryPolicy,
    dlq: Addr<DlqActor>,
    metrics: Arc<Metrics>,
    /// Where each failure is recorded for the status resource.
    db: DatabaseConnection,
    /// Bounds the recording writes in flight: in a database outage every event fails, and
    /// recording must not pile up waiting connections that compete with the retries.
    recording: Arc<tokio::sync::Semaphore>,
    rng: fastrand::Rng,
    faults: Faults,
}

/// Failure records written at once, at most; past it a record is skipped (the status then
/// lags by one failure, the retry itself is unaffected).
const RECORDING_AT_ONCE: usize = 4;

impl RetryScheduler {
    /// Started under a Supervisor: the address survives restarts.
    pub fn start(
        policy: RetryPolicy,
        dlq: Addr<DlqActor>,
        metrics: Arc<Metrics>,
        db: DatabaseConnection,
        faults: Faults,
    ) -> Addr<Self> {
        let recording = Arc::new(tokio::sync::Semaphore::new(RECORDING_AT_ONCE));
        Supervisor::start(move |_| RetryScheduler {
            policy,
            dlq,
            metrics,
            db,
            recording,
            rng: fastrand::Rng::new(),
            faults,
        })
    }

    /// Records the failure for the status resource (`failed`, `attempts`, `last_error`),
    /// beside the retry or dead letter and never in its way: the retry does not wait for
    /// it, and a failed write (the database is often why the attempt failed) is only logged.
    fn record(&self, event: Arc<Event>, attempts: u32, error: &ProcessingError, dead: bool) {
        let Ok(permit) = self.recording.clone().try_acquire_owned() else {
            tracing::debug!(event_id = %event.event_id, "failure not recorded: too many writes in flight");
            return;
        };
        let db = self.db.clone();
        let (error, kind, code) = (error.to_string(), error.kind().as_str(), error.code());
        actix::spawn(async move {
            let failure = Failure {
                event: &event,
                attempts,
                error: &error,
                error_kind: kind,
                error_code: code.as_str(),
            };
            if let Err(err) = failures::record(&db, &failure, dead).await {
                tracing::debug!(event_id = %event.event_id, error = %err, "could not record the failed attempt");
            }
            drop(permit);
        });
    }

    /// Retry or dead-letter `event`, whose latest attempt failed with `error`.
    fn decide(&mut self, event: &Event, error: &ProcessingError) -> Decision {
        let attempts = event.attempts_after_failure();
        let age = (Utc::now() - event.accepted_at)
            .to_std()
            .unwrap_or_default();
        self.policy.decide(
            error.kind(),
            attempts,
            age,
            error.retry_after(),
            self.rng.f64(),
        )
    }

    fn carry_out(&self, Failed { claim, error }: Failed, decision: Decision) {
        let event = claim.event().clone();
        let attempts = event.attempts_after_failure();
        log_decision(Stage::Persist, &event, attempts, &error, decision);
        match decision {
            Decision::DeadLetter(_) => {
                self.record(event, attempts, &error, true);
                self.dlq.do_send(DeadLetter {
                    claim,
                    attempts,
                    last_error: error.to_string(),
                    kind: error.kind(),
                    code: error.code(),
                });
            }
            Decision::Retry(delay) => {
                self.metrics.retries.add(1, &[]);
                self.record(event.clone(), attempts, &error, false);
                actix::spawn(async move {
                    if let Err(err) = claim.nak(delay).await {
                        // Not lost: an unsettled delivery comes back by itself (after ack_wait).
                        tracing::warn!(event_id = %event.event_id, error = %err, "could not schedule the retry");
                    }
                });
            }
        }
    }

    /// After a panic while deciding: [`RetryPolicy::fallback`], with none of the deciding
    /// code.
    fn fallback(&self, failed: Failed) {
        let attempts = failed.claim.event().attempts_after_failure();
        let decision = self.policy.fallback(failed.error.kind(), attempts);
        self.carry_out(failed, decision);
    }
}

impl Actor for RetryScheduler {
    type Context = Context<Self>;
}

impl Supervised for RetryScheduler {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(actor = ACTOR, "retry scheduler restarting");
    }
}

impl Handler<Failed> for RetryScheduler {
    type Result = ();

    fn handle(&mut self, failed: Failed, ctx: &mut Self::Context) {
        let decided = supervision::caught(|| {
            let stall = self.faults.at(Site::Retry, Some(failed.claim.event()));
            (self.decide(failed.claim.event(), &failed.error), stall)
        });
        match decided {
            Ok((decision, stall)) => {
                self.carry_out(failed, decision);
                if let Some(stall) = stall {
                    ctx.wait(stall.into_actor(self));
                }
            }
            Err(panic) => {
                supervision::restart(ACTOR, &panic, &self.metrics, ctx);
                self.fallback(failed);
            }
        }
    }
}

impl RetryScheduler {
    fn report_delivery(&self, failed: &DeliveryFailed, decision: Decision) {
        let event = &failed.event;
        let attempts = event.attempts_after_failure();
        log_decision(Stage::Delivery, event, attempts, &failed.error, decision);
        if matches!(decision, Decision::Retry(_)) {
            self.metrics.retries.add(1, &[]);
            self.record(event.clone(), attempts, &failed.error, false);
        }
    }
}

impl Handler<DeliveryFailed> for RetryScheduler {
    type Result = MessageResult<DeliveryFailed>;

    fn handle(&mut self, failed: DeliveryFailed, ctx: &mut Self::Context) -> Self::Result {
        let decided = supervision::caught(|| {
            let stall = self.faults.at(Site::Retry, Some(&failed.event));
            (self.decide(&failed.event, &failed.error), stall)
        });
        let decision = match decided {
            Ok((decision, stall)) => {
                if let Some(stall) = stall {
                    ctx.wait(stall.into_actor(self));
                }
                decision
            }
            Err(panic) => {
                supervision::restart(ACTOR, &panic, &self.metrics, ctx);
                let attempts = failed.event.attempts_after_failure();
                self.policy.fallback(failed.error.kind(), attempts)
            }
        };
        self.report_delivery(&failed, decision);
        MessageResult(decision)
    }
}

impl Handler<Ping> for RetryScheduler {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            max_age: Duration::from_secs(72 * 3600),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy();
        let ceilings: Vec<u64> = (1..=8).map(|n| p.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.ceiling(200), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_between_half_and_the_ceiling() {
        let p = policy();
        assert_eq!(p.delay(4, None, 0.0), Duration::from_secs(4));
        assert_eq!(p.delay(4, None, 1.0), Duration::from_secs(8));
        let mid = p.delay(4, None, 0.5);
        assert!(mid > Duration::from_secs(4) && mid < Duration::from_secs(8));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(30)), 1.0),
            Duration::from_secs(30)
        );
        assert_eq!(
            p.delay(7, Some(Duration::from_secs(1)), 1.0),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn retry_after_is_capped_at_max_delay() {
        let p = policy();
        for asked in [u64::MAX, 99_999_999_999, 61] {
            assert_eq!(
                p.delay(1, Some(Duration::from_secs(asked)), 0.0),
                Duration::from_secs(60),
                "Retry-After: {asked}"
            );
        }
    }

    #[test]
    fn a_retry_that_would_come_after_max_age_is_a_dead_letter_now() {
        use ErrorKind::{Permanent, Transient};
        let p = RetryPolicy {
            max_age: Duration::from_secs(100),
            ..policy()
        };
        let retry_after = Some(Duration::from_secs(u64::MAX));
        assert_eq!(
            p.decide(Transient, 1, Duration::from_secs(30), retry_after, 0.5),
            Decision::Retry(Duration::from_secs(60))
        );
        assert!(matches!(
            p.decide(Transient, 1, Duration::from_secs(50), retry_after, 0.5),
            Decision::DeadLetter(_)
        ));
        assert!(matches!(
            p.decide(Transient, 10, Duration::ZERO, None, 0.5),
            Decision::DeadLetter(_)
        ));
        assert!(matches!(
            p.decide(Permanent, 1, Duration::ZERO, None, 0.5),
            Decision::DeadLetter(_)
        ));
    }
}
