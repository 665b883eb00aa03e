//! Checked instant arithmetic. A duration that comes from outside (a provider's
//! `Retry-After`, a setting) must never overflow an `Instant`: `Instant + Duration` panics
//! when it does, and a panic in the pipeline once dropped an event and killed an actor.

use std::time::{Duration, Instant};

/// Later than anything this service ever waits for, and still far from overflowing.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `from + wait`, or a far future when that does not fit.
pub fn after(from: Instant, wait: Duration) -> Instant {
    from.checked_add(wait)
        .or_else(|| from.checked_add(FAR_FUTURE))
        .unwrap_or(from)
}

/// `now + wait`, checked.
pub fn deadline(wait: Duration) -> Instant {
    after(Instant::now(), wait)
}

/// `now + wait` as a tokio instant, checked.
pub fn tokio_deadline(wait: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(deadline(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_waits_do_not_overflow() {
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > now);
        assert!(after(now, Duration::from_secs(u64::MAX)) > now);
        assert_eq!(
            after(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
        let _ = tokio_deadline(Duration::MAX);
    }
}
