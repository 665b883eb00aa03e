//! Whether the database takes writes, as the writer last saw it, and what a write does
//! while it does not.
//!
//! The writer reports every commit that wrote something and every write that failed for
//! a reason of the database's (a full disk, a read-only file, an I/O error, a lost
//! connection). From that one state the edge refuses new requests (503), `/readyz` answers
//! at once (no probe queued behind the writer), and a batch whose write fails waits for
//! the database instead of spending its attempts: while nobody's write succeeds, failing
//! again says nothing about the batch. The batches held that way are the probes: the
//! first commit after the outage clears it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::StoreError;

/// The first wait of a held write; doubled after each failure up to [`HOLD_MAX`].
const HOLD_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two tries of a held write: how late recovery is noticed.
const HOLD_MAX: Duration = Duration::from_secs(1);

/// How long [`WriteHealth::hold`] waits for a failing write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// While no other write commits (a batch: retried, it costs only an attempt).
    WhileNothingCommits,
    /// Even while others commit: for a write whose retry would cost more than waiting (the
    /// record of a provider's acceptance: retried, the message would be sent again). On a
    /// nearly full disk some commits do succeed (into WAL pages a checkpoint freed).
    UntilWritten,
}

/// Shared by every clone of the writer.
#[derive(Clone, Default)]
pub struct WriteHealth(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// Commits that wrote something, since start.
    successes: AtomicU64,
    /// Whether `failing` holds an outage: read by every request, so no lock on that path.
    is_failing: AtomicBool,
    failing: Mutex<Option<Failing>>,
    /// Set at shutdown: held writes give up and take the ordinary failure path.
    released: AtomicBool,
}

/// An outage in progress.
#[derive(Debug, Clone)]
pub struct Failing {
    pub since: Instant,
    /// The last error, for operators (logs, readiness's log line); never for tenants.
    pub error: String,
}

impl WriteHealth {
    /// A commit that wrote rows.
    pub fn succeeded(&self) {
        self.0.successes.fetch_add(1, Ordering::Release);
        if !self.0.is_failing.load(Ordering::Acquire) {
            return;
        }
        let ended = {
            let mut failing = self.lock();
            self.0.is_failing.store(false, Ordering::Release);
            failing.take()
        };
        if let Some(outage) = ended {
            tracing::warn!(
                lasted_ms = u64::try_from(outage.since.elapsed().as_millis()).unwrap_or(u64::MAX),
                "database takes writes again"
            );
        }
    }

    /// A write failed. Only the database's own trouble counts (a transient error); a write
    /// the database rejects for its content says nothing about the database.
    pub fn failed(&self, err: &StoreError) {
        if !err.is_transient() {
            return;
        }
        let mut failing = self.lock();
        match failing.as_mut() {
            Some(outage) => outage.error = err.to_string(),
            None => {
                tracing::error!(error = %err, "database write failed; refusing new requests until a write succeeds");
                *failing = Some(Failing {
                    since: Instant::now(),
                    error: err.to_string(),
                });
                self.0.is_failing.store(true, Ordering::Release);
            }
        }
    }

    /// The outage in progress, if any.
    pub fn failing(&self) -> Option<Failing> {
        if !self.0.is_failing.load(Ordering::Acquire) {
            return None;
        }
        self.lock().clone()
    }

    /// Held writes stop waiting (shutdown): what they hold goes back to the queue.
    pub fn release_holds(&self) {
        self.0.released.store(true, Ordering::Release);
    }

    fn successes(&self) -> u64 {
        self.0.successes.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Failing>> {
        self.0.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `write` until it succeeds, or fails in a way waiting cannot fix: a permanent
    /// error, `wanted` turning false (what the write was for was settled elsewhere),
    /// [`Self::release_holds`], or (with [`Hold::WhileNothingCommits`]) another write
    /// succeeding meanwhile: then the trouble is this write's own, and the caller's retry
    /// policy decides.
    pub async fn hold<T, F, Fut>(
        &self,
        how: Hold,
        wanted: impl Fn() -> bool,
        mut write: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut wait = HOLD_MIN;
        let mut successes_at_failure = None;
        loop {
            let err = match write().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let others_succeeded = how == Hold::WhileNothingCommits
                && successes_at_failure.is_some_and(|n| n != self.successes());
            if !err.is_transient()
                || others_succeeded
                || !wanted()
                || self.0.released.load(Ordering::Acquire)
            {
                return Err(err);
            }
            successes_at_failure = Some(self.successes());
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(HOLD_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> StoreError {
        StoreError::Unavailable("disk full".into())
    }

    /// Whether other writes commit while the held one keeps failing.
    #[derive(Clone, Copy, PartialEq)]
    enum Meanwhile {
        /// The only write: it reports its own failures, as the store's writes do.
        NothingCommits,
        /// Another write commits before each try.
        OthersCommit,
    }

    /// Holds a write that fails with [`unavailable`] until its `succeeds_on`th try (`None`:
    /// it never succeeds); returns what the hold returned and how many tries there were.
    async fn hold_failing_write(
        health: &WriteHealth,
        hold: Hold,
        meanwhile: Meanwhile,
        succeeds_on: Option<u32>,
    ) -> (Result<(), StoreError>, u32) {
        let mut tries = 0;
        let result = health
            .hold(
                hold,
                || true,
                || {
                    tries += 1;
                    if meanwhile == Meanwhile::OthersCommit {
                        health.succeeded();
                    }
                    let outcome = match succeeds_on {
                        Some(n) if tries >= n => Ok(()),
                        _ => Err(unavailable()),
                    };
                    if let (Err(e), Meanwhile::NothingCommits) = (&outcome, meanwhile) {
                        health.failed(e);
                    }
                    std::future::ready(outcome)
                },
            )
            .await;
        (result, tries)
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_held_while_nothing_succeeds_and_stored_when_it_can_be() {
        let health = WriteHealth::default();
        let (result, tries) = hold_failing_write(
            &health,
            Hold::WhileNothingCommits,
            Meanwhile::NothingCommits,
            Some(5),
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(tries, 5);
        assert!(
            health.failing().is_some(),
            "the caller reports its own success"
        );
        health.succeeded();
        assert!(health.failing().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_failing_while_others_succeed_is_not_held() {
        let health = WriteHealth::default();
        let (result, tries) = hold_failing_write(
            &health,
            Hold::WhileNothingCommits,
            Meanwhile::OthersCommit,
            None,
        )
        .await;
        assert!(result.is_err());
        assert_eq!(tries, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_must_not_be_retried_waits_even_while_others_succeed() {
        let health = WriteHealth::default();
        let (result, tries) = hold_failing_write(
            &health,
            Hold::UntilWritten,
            Meanwhile::OthersCommit,
            Some(6),
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(tries, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_released_holds_and_settled_work_end_the_wait() {
        let health = WriteHealth::default();
        let rejected: Result<(), _> = health
            .hold(
                Hold::WhileNothingCommits,
                || true,
                || std::future::ready(Err(StoreError::Rejected("constraint".into()))),
            )
            .await;
        assert!(matches!(rejected, Err(StoreError::Rejected(_))));
        let unwanted: Result<(), _> = health
            .hold(
                Hold::WhileNothingCommits,
                || false,
                || std::future::ready(Err(unavailable())),
            )
            .await;
        assert!(unwanted.is_err());
        health.release_holds();
        let released: Result<(), _> = health
            .hold(
                Hold::WhileNothingCommits,
                || true,
                || std::future::ready(Err(unavailable())),
            )
            .await;
        assert!(released.is_err());
    }

    #[test]
    fn only_the_databases_own_trouble_is_an_outage() {
        let health = WriteHealth::default();
        health.failed(&StoreError::Rejected("constraint".into()));
        assert!(health.failing().is_none());
        health.failed(&unavailable());
        let outage = health.failing().expect("failing");
        assert!(outage.error.contains("disk full"));
    }
}
