//! Rate limits (SPEC §11): one budget per API key (and per provider for signed webhooks),
//! and a smaller one per client IP for requests without valid credentials, so a flood of
//! bad keys costs at most that many database look-ups. Looking up a key that turns out
//! valid costs nothing, so a restart (every key uncached) does not 429 real clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::ApiError;
use crate::config::{Rate, RateLimitSettings};

/// Who spends from the per-key budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Key(i64),
    /// A provider's signed webhooks (no key).
    Provider(&'static str),
    /// A client without a key when `auth.required = false`.
    Open(IpAddr),
}

pub struct RateLimits {
    per_key: DefaultKeyedRateLimiter<Subject>,
    per_key_burst: u32,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_ip_burst: u32,
    /// Clients over their per-IP budget, until when: they get no key look-ups meanwhile.
    over_budget: Mutex<HashMap<IpAddr, Instant>>,
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        let per_ip_burst = settings.per_ip.count;
        RateLimits {
            per_key: DefaultKeyedRateLimiter::keyed(quota(settings.per_key, settings.burst)),
            per_key_burst: settings.burst,
            per_ip: DefaultKeyedRateLimiter::keyed(quota(settings.per_ip, per_ip_burst)),
            per_ip_burst,
            over_budget: Mutex::default(),
            clock: DefaultClock::default(),
        }
    }

    /// Spends one request from `subject`'s budget, or answers 429.
    pub fn check(&self, subject: &Subject) -> Result<(), ApiError> {
        self.per_key
            .check_key(subject)
            .map_err(|not_until| self.refused(self.per_key_burst, &not_until))
    }

    /// Spends one request from the budget of a client without valid credentials.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.per_ip.check_key(&ip).map_err(|not_until| {
            let refused = self.refused(self.per_ip_burst, &not_until);
            if let ApiError::RateLimited { retry_after, .. } = &refused {
                self.over_budget().insert(ip, Instant::now() + *retry_after);
            }
            refused
        })
    }

    /// Whether a key this process does not know may be looked up for `ip`: not while the
    /// client is over its budget of refused credentials (a flood of made-up keys costs at
    /// most that many queries). Spends nothing: valid keys are never charged.
    pub fn may_look_up(&self, ip: IpAddr) -> Result<(), ApiError> {
        let until = match self.over_budget().get(&ip) {
            Some(until) => *until,
            None => return Ok(()),
        };
        let now = Instant::now();
        if until <= now {
            self.over_budget().remove(&ip);
            return Ok(());
        }
        Err(ApiError::RateLimited {
            limit: self.per_ip_burst,
            retry_after: until - now,
        })
    }

    fn over_budget(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.over_budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refused(
        &self,
        limit: u32,
        not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>,
    ) -> ApiError {
        ApiError::RateLimited {
            limit,
            retry_after: not_until.wait_time_from(self.clock.now()),
        }
    }

    /// Forgets budgets that are full again, so the maps hold only recent clients.
    pub fn forget_idle(&self) {
        self.per_key.retain_recent();
        self.per_ip.retain_recent();
        self.per_key.shrink_to_fit();
        self.per_ip.shrink_to_fit();
        let now = Instant::now();
        self.over_budget().retain(|_, until| *until > now);
    }
}

/// `rate` steady, up to `burst` at once.
fn quota(rate: Rate, burst: u32) -> Quota {
    // The period per request, at least 1 ns (a rate above 10^9/s is no limit anyway).
    let period = (rate.per / rate.count).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("a period of at least 1 ns")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least 1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_key: &str, burst: u32, per_ip: &str) -> RateLimits {
        RateLimits::new(&RateLimitSettings {
            per_key: per_key.parse().unwrap(),
            burst,
            per_ip: per_ip.parse().unwrap(),
        })
    }

    #[test]
    fn a_burst_passes_then_the_next_request_waits() {
        let limits = limits("1/h", 3, "2/h");
        let key = Subject::Key(1);
        for _ in 0..3 {
            limits.check(&key).unwrap();
        }
        match limits.check(&key) {
            Err(ApiError::RateLimited { limit, retry_after }) => {
                assert_eq!(limit, 3);
                assert!(retry_after > Duration::from_secs(3500), "{retry_after:?}");
            }
            other => panic!("{other:?}"),
        }
        // Budgets are per subject.
        limits.check(&Subject::Key(2)).unwrap();
        limits.check(&Subject::Provider("sms")).unwrap();

        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        limits.check_ip(ip).unwrap();
        limits.check_ip(ip).unwrap();
        assert!(matches!(
            limits.check_ip(ip),
            Err(ApiError::RateLimited { limit: 2, .. })
        ));
        limits.check_ip("192.0.2.2".parse().unwrap()).unwrap();
        // Over its budget, a client gets no look-ups of unknown keys; others still do.
        assert!(matches!(
            limits.may_look_up(ip),
            Err(ApiError::RateLimited { limit: 2, .. })
        ));
        limits.may_look_up("192.0.2.2".parse().unwrap()).unwrap();
    }
}
