//! What the workers did, summed up in one `info` line every [`INTERVAL`].
//!
//! A line per stored event at `info` cost 15–22% of the end-to-end rate (formatting and
//! writing ~10,000 JSON lines a second on the thread the workers run on; see bench/README.md,
//! Results). So each event's own line is at `debug`, failures stay at `warn` one by
//! one, and `info` gets this summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Metrics;

const INTERVAL: Duration = Duration::from_secs(10);

/// Outcomes since the last summary.
#[derive(Default)]
pub struct Tally {
    stored: AtomicU64,
    duplicates: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    pub(super) fn processed(&self, outcome: &str, n: u64) {
        let counter = match outcome {
            "stored" => &self.stored,
            _ => &self.duplicates,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since the last call, which start again from zero.
    fn take(&self) -> [u64; 3] {
        [&self.stored, &self.duplicates, &self.failed].map(|c| c.swap(0, Ordering::Relaxed))
    }
}

/// Writes the summary every [`INTERVAL`] while anything happened, as long as `metrics` lives.
pub fn spawn(metrics: &Arc<Metrics>) {
    let metrics: Weak<Metrics> = Arc::downgrade(metrics);
    actix_web::rt::spawn(async move {
        let mut ticker = actix_web::rt::time::interval(INTERVAL);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(metrics) = metrics.upgrade() else {
                return;
            };
            let [stored, duplicates, failed] = metrics.tally.take();
            if stored + duplicates + failed > 0 {
                tracing::info!(
                    stored,
                    duplicates,
                    failed,
                    seconds = INTERVAL.as_secs(),
                    "events processed"
                );
            }
        }
    });
}
