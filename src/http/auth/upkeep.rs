//! The authentication upkeep: re-reading cached keys (so a revocation is seen within
//! `auth.cache_ttl`), writing `last_used_at`, trimming rate-limit state; and its stop.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Auth;

pub(super) struct Upkeep {
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

/// How long a shutdown waits for the last usage write.
const LAST_USAGE_WRITE: Duration = Duration::from_secs(5);

impl Auth {
    /// Starts the background upkeep: re-reading cached keys (twice per `cache_ttl`, so a
    /// revocation is seen within it), writing `last_used_at`, trimming rate-limit state.
    /// Ends at [`Auth::stop_upkeep`], or when the last handle on `auth` is gone.
    pub fn spawn_upkeep(auth: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(auth);
        let tick = (auth.ttl / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let refresh_every = auth.ttl / 2;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let done = actix_web::rt::spawn(async move {
            let mut ticker = actix_web::rt::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut refreshed = tokio::time::Instant::now();
            let mut trimmed = tokio::time::Instant::now();
            loop {
                let stopping = tokio::select! {
                    biased;
                    _ = &mut stopped => true,
                    _ = ticker.tick() => false,
                };
                let Some(auth) = weak.upgrade() else { return };
                if stopping {
                    auth.write_usage().await;
                    return;
                }
                if refreshed.elapsed() >= refresh_every {
                    refreshed = tokio::time::Instant::now();
                    if let Err(e) = auth.keys.refresh().await {
                        tracing::warn!(error = %e, "cannot re-read API keys; keeping the cached ones");
                    }
                }
                auth.write_usage().await;
                if trimmed.elapsed() >= Duration::from_secs(60) {
                    trimmed = tokio::time::Instant::now();
                    auth.limits.forget_idle();
                }
            }
        });
        *auth.upkeep.lock().unwrap_or_else(|p| p.into_inner()) = Some(Upkeep { stop, done });
    }

    /// Stops the upkeep after one last write of `last_used_at`, so that a shutdown records
    /// the keys' latest use and no upkeep query is left holding a database connection when
    /// the runtime goes away (dropping one then panics inside sqlx). Called as a shutdown
    /// begins, while every runtime the key pool's connections belong to still runs; uses
    /// after it are not recorded.
    pub async fn stop_upkeep(&self) {
        let upkeep = self.upkeep.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(Upkeep { stop, mut done }) = upkeep else {
            return;
        };
        let _ = stop.send(());
        if tokio::time::timeout(LAST_USAGE_WRITE, &mut done)
            .await
            .is_err()
        {
            tracing::warn!("the last write of API keys' last use did not finish in time");
            done.abort();
        }
    }

    async fn write_usage(&self) {
        if let Err(e) = self.keys.write_usage().await {
            tracing::warn!(error = %e, "cannot record when API keys were last used");
        }
    }
}
