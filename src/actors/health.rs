//! Whether the pipeline can make progress, for `/readyz` (SPEC §3.6): every actor answers a
//! [`Ping`] within [`PING_TIMEOUT`] (a dead actor's mailbox is closed, a wedged one does not
//! answer), the workers configured here are all alive, and the queue moves: events waiting
//! or in flight are taken and finished, not left untouched for `server.stall_timeout`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;

use super::sender::Drain;
use super::supervision::Ping;
use super::webhooks::WebhookDeliverer;
use super::worker::WorkerThread;
use super::{DlqActor, PersistenceWorker, QueueActor, RetryScheduler, Sender};
use crate::queue::QueueBackend;

/// How long an actor may take to answer a ping before it counts as wedged.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// When the dispatchers last moved the queue (took events from it, or finished a batch).
#[derive(Clone)]
pub struct Progress {
    since: Instant,
    /// Milliseconds after `since`.
    last: Arc<AtomicU64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            since: Instant::now(),
            last: Arc::default(),
        }
    }
}

impl Progress {
    pub fn mark(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// How long since the last mark (or since it was made).
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }
}

/// The workers of this process, one slot per dispatcher; each dispatcher keeps its slot up
/// to date when it replaces its worker.
#[derive(Clone, Default)]
pub struct Workers(Arc<Mutex<Vec<Option<Addr<PersistenceWorker>>>>>);

impl Workers {
    pub fn set(&self, index: usize, worker: Addr<PersistenceWorker>) {
        let mut slots = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() <= index {
            slots.resize(index + 1, None);
        }
        slots[index] = Some(worker);
    }

    fn all(&self) -> Vec<Option<Addr<PersistenceWorker>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The actors of this process and how to tell whether they work.
pub struct Pipeline {
    pub queue: Addr<QueueActor>,
    pub retry: Addr<RetryScheduler>,
    pub dlq: Addr<DlqActor>,
    /// The delivery stage's senders, one per provider (none in an API-only role), and the
    /// thread they run on.
    pub senders: Vec<Addr<Sender>>,
    /// The webhook deliverer, on the senders' thread (none in an API-only role).
    pub webhooks: Option<Addr<WebhookDeliverer>>,
    pub sender_thread: Option<WorkerThread>,
    /// Configured workers (0 without workers here).
    pub worker_count: usize,
    pub workers: Workers,
    pub progress: Progress,
    pub stall_timeout: Duration,
}

/// What [`Pipeline::check`] found.
#[derive(Debug, Default)]
pub struct Report {
    /// What is not working, for the readiness problem's detail (no raw error text).
    pub down: Vec<String>,
    /// Workers answering, when this process runs workers.
    pub workers_alive: Option<usize>,
}

impl Pipeline {
    pub async fn check(&self, backend: &dyn QueueBackend) -> Report {
        let mut report = Report::default();
        let names = ["queue actor", "retry scheduler", "dead-letter actor"];
        let pings = async {
            let (queue, retry, dlq) =
                futures_util::future::join3(ping(&self.queue), ping(&self.retry), ping(&self.dlq))
                    .await;
            [queue, retry, dlq]
        };
        let senders = join_all(self.senders.iter().map(ping));
        let workers = join_all(self.workers.all().into_iter().map(|slot| async move {
            match slot {
                Some(worker) => ping(&worker).await.is_ok(),
                None => false,
            }
        }));
        let (answers, senders, workers) =
            futures_util::future::join3(pings, senders, workers).await;
        for (name, answer) in names.into_iter().zip(answers) {
            if let Err(why) = answer {
                report.down.push(format!("{name} ({why})"));
            }
        }
        for why in senders.into_iter().filter_map(Result::err) {
            report.down.push(format!("sender ({why})"));
        }
        if self.worker_count > 0 {
            let alive = workers.into_iter().filter(|ok| *ok).count();
            report.workers_alive = Some(alive);
            if alive < self.worker_count {
                report.down.push(format!(
                    "workers ({alive} of {} running)",
                    self.worker_count
                ));
            }
            let idle = self.progress.idle();
            let waiting = backend.runnable();
            if waiting > 0 && idle >= self.stall_timeout {
                report.down.push(format!(
                    "queue stalled ({waiting} events waiting, none taken or finished for {}s)",
                    idle.as_secs()
                ));
            }
        }
        report
    }
}

impl Pipeline {
    /// Stops the senders claiming and waits, until `deadline`, for their calls in flight to
    /// settle. Returns how many calls were still in flight then (their messages were given
    /// back, due at once).
    pub async fn drain_senders(&self, deadline: std::time::Instant) -> usize {
        let drains = self.senders.iter().map(|s| s.send(Drain(deadline)));
        let webhooks = async {
            match &self.webhooks {
                Some(w) => w.send(Drain(deadline)).await.unwrap_or(0),
                None => 0,
            }
        };
        let (senders, webhooks) = futures_util::future::join(join_all(drains), webhooks).await;
        senders
            .into_iter()
            .map(|left| left.unwrap_or(0))
            .sum::<usize>()
            + webhooks
    }
}

/// `Ok` when the actor answers in time; else why not, in a few words.
async fn ping<A>(addr: &Addr<A>) -> Result<(), &'static str>
where
    A: Actor + Handler<Ping>,
    A::Context: actix::dev::ToEnvelope<A, Ping>,
{
    match tokio::time::timeout(PING_TIMEOUT, addr.send(Ping)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("down"),
        Err(_) => Err("not responding"),
    }
}
