//! A provider's circuit breaker: after `failures` transient failures in a row the circuit
//! opens and no call is made for `cooldown`; then one trial call (half-open) closes it
//! again on success or reopens it on failure. A permanent refusal (a 4xx) is an answer,
//! so it counts as the provider being up.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    HalfOpen,
    Open,
}

impl Circuit {
    /// The value of `messaging_provider_circuit_state`.
    pub fn gauge(self) -> i64 {
        match self {
            Circuit::Closed => 0,
            Circuit::HalfOpen => 1,
            Circuit::Open => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::HalfOpen => "half_open",
            Circuit::Open => "open",
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    consecutive: u32,
    opened_at: Option<Instant>,
    /// The half-open trial call is out.
    trial: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            consecutive: 0,
            opened_at: None,
            trial: false,
        }
    }

    pub fn state(&self, now: Instant) -> Circuit {
        match self.opened_at {
            None => Circuit::Closed,
            Some(at) if now < at + self.cooldown => Circuit::Open,
            Some(_) => Circuit::HalfOpen,
        }
    }

    /// When an open circuit lets a trial through.
    pub fn reopens_at(&self) -> Option<Instant> {
        self.opened_at.map(|at| at + self.cooldown)
    }

    /// How many of `wanted` calls may start now: all while closed, one trial once
    /// half-open, none while open. A granted trial must end in [`Self::succeeded`],
    /// [`Self::failed`] or [`Self::unused`].
    pub fn allow(&mut self, wanted: usize, now: Instant) -> usize {
        match self.state(now) {
            Circuit::Closed => wanted,
            Circuit::HalfOpen if !self.trial && wanted > 0 => {
                self.trial = true;
                1
            }
            _ => 0,
        }
    }

    pub fn succeeded(&mut self) {
        self.consecutive = 0;
        self.opened_at = None;
        self.trial = false;
    }

    /// A transient failure. Returns true when it opened the circuit.
    pub fn failed(&mut self, now: Instant) -> bool {
        self.consecutive = self.consecutive.saturating_add(1);
        let half_open = self.opened_at.is_some();
        self.trial = false;
        if half_open || self.consecutive >= self.threshold {
            let was_open = self.state(now) == Circuit::Open;
            self.opened_at = Some(now);
            return !was_open;
        }
        false
    }

    /// A granted trial that made no call (nothing was due).
    pub fn unused(&mut self) {
        self.trial = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_lets_one_trial_through_after_the_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        assert_eq!(b.allow(100, t0), 100);
        assert!(!b.failed(t0));
        assert!(!b.failed(t0));
        assert!(b.failed(t0), "the third failure in a row opens it");
        assert_eq!(b.state(t0), Circuit::Open);
        assert_eq!(b.allow(100, t0 + Duration::from_secs(9)), 0);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.state(later), Circuit::HalfOpen);
        assert_eq!(b.allow(100, later), 1, "one trial");
        assert_eq!(b.allow(100, later), 0, "and only one");
        b.succeeded();
        assert_eq!(b.state(later), Circuit::Closed);
        assert_eq!(b.allow(100, later), 100);
    }

    #[test]
    fn a_failed_trial_reopens_for_another_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(5));
        b.failed(t0);
        let trial = t0 + Duration::from_secs(5);
        assert_eq!(b.allow(10, trial), 1);
        assert!(b.failed(trial));
        assert_eq!(b.state(trial + Duration::from_secs(4)), Circuit::Open);
        assert_eq!(b.reopens_at(), Some(trial + Duration::from_secs(5)));
    }

    #[test]
    fn a_success_between_failures_resets_the_count_and_an_unused_trial_is_given_back() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(5));
        b.failed(t0);
        b.succeeded();
        assert!(!b.failed(t0), "not two in a row");
        b.failed(t0);
        let trial = t0 + Duration::from_secs(5);
        assert_eq!(b.allow(10, trial), 1);
        b.unused();
        assert_eq!(b.allow(10, trial), 1, "the trial is available again");
    }
}
