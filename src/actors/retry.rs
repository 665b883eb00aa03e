//! RetryScheduler: decides what happens to a failed event.
//!
//! Transient failures are delivered again after a capped exponential backoff with jitter
//! (never sooner than a provider's Retry-After): the delivery is nak'd with that delay and
//! the backend holds it (memory: a delay heap; NATS: JetStream redelivers), so a waiting
//! retry holds no worker. Permanent failures, and events out of attempts or age, go to the
//! DlqActor, which terminates the delivery once the dead letter is stored.
//!
//! Every `Failed` carries a claimed delivery: it was failed once, by one party.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use sea_orm::DatabaseConnection;

use super::dlq::{DeadLetter, DlqActor};
use super::{ErrorKind, ProcessingError};
use crate::config::RetrySettings;
use crate::domain::Event;
use crate::queue::Claimed;
use crate::store::failures::{self, Failure};
use crate::telemetry::Metrics;

/// Processing the claimed delivery failed with `error`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Failed {
    pub claim: Claimed,
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

impl RetryPolicy {
    /// The ceiling of the delay after failed attempt `n` (1-based):
    /// `min(max_delay, base_delay · 2^(n-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// A delay drawn from `[ceiling/2, ceiling]` ("equal jitter": spreads retries out while
    /// keeping the backoff's growth), raised to `retry_after` when the other side asked.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let jittered = ceiling / 2 + ceiling.mul_f64(unit.clamp(0.0, 1.0) / 2.0);
        jittered.max(retry_after.unwrap_or_default())
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
}

/// Failure records written at once, at most; past it a record is skipped (the status then
/// lags by one failure, the retry itself is unaffected).
const RECORDING_AT_ONCE: usize = 4;

impl RetryScheduler {
    pub fn new(
        policy: RetryPolicy,
        dlq: Addr<DlqActor>,
        metrics: Arc<Metrics>,
        db: DatabaseConnection,
    ) -> Self {
        RetryScheduler {
            policy,
            dlq,
            metrics,
            db,
            recording: Arc::new(tokio::sync::Semaphore::new(RECORDING_AT_ONCE)),
            rng: fastrand::Rng::new(),
        }
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
        let (error, kind) = (error.to_string(), error.kind().as_str());
        actix::spawn(async move {
            let failure = Failure {
                event: &event,
                attempts,
                error: &error,
                error_kind: kind,
                dead_lettered: dead,
            };
            if let Err(err) = failures::record(&db, failure).await {
                tracing::debug!(event_id = %event.event_id, error = %err, "could not record the failed attempt");
            }
            drop(permit);
        });
    }
}

impl Actor for RetryScheduler {
    type Context = Context<Self>;
}

impl Handler<Failed> for RetryScheduler {
    type Result = ();

    fn handle(&mut self, Failed { claim, error }: Failed, _: &mut Self::Context) {
        let event = claim.event().clone();
        let attempts = event.attempt + 1;
        let age = (Utc::now() - event.accepted_at)
            .to_std()
            .unwrap_or_default();
        let kind = error.kind();
        let out_of_attempts = attempts >= self.policy.max_attempts;
        let too_old = age >= self.policy.max_age;
        if kind == ErrorKind::Permanent || out_of_attempts || too_old {
            tracing::warn!(
                event_id = %event.event_id,
                idempotency_key = %event.idempotency_key,
                attempt = attempts,
                error_kind = kind.as_str(),
                error = %error,
                "event dead-lettered"
            );
            self.record(event, attempts, &error, true);
            self.dlq.do_send(DeadLetter {
                claim,
                attempts,
                last_error: error.to_string(),
                kind,
            });
            return;
        }
        let delay = self
            .policy
            .delay(attempts, error.retry_after(), self.rng.f64());
        tracing::info!(
            event_id = %event.event_id,
            idempotency_key = %event.idempotency_key,
            attempt = attempts,
            delay_ms = delay.as_millis() as u64,
            error = %error,
            "retry scheduled"
        );
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
}
