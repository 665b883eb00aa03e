//! The delivery stage (SPEC §13): outbound messages are sent from the database, apart from
//! ingest, one lane per provider.
//!
//! A lane claims due messages (a lease per claim, see [`crate::store::delivery`]), up to
//! its free `concurrency` and what its circuit breaker allows; calls the provider once per
//! message, paced by its `rate`; and hands each outcome to [`settle`], which records them
//! in batches. A slow call holds only itself: each message settles on its own, and a claim
//! round starts again as soon as calls finish. While the circuit is open the lane claims
//! nothing, so a provider outage spends no attempts and holds up no other lane, nor ingest.

pub mod breaker;
pub mod settle;

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use actix::Addr;

use crate::actors::ProcessingError;
use crate::actors::{DlqActor, RetryScheduler};
use crate::config::{ProviderSettings, Rate};
use crate::domain::Channel;
use crate::providers::{OutboundMessage, Provider};
use crate::store::delivery::{self, Held};
use crate::store::writer::MessageWriter;
use crate::telemetry::{self, DeliveryGauges, Metrics};
use breaker::{Breaker, Circuit};
use settle::Outcome;

/// Most messages one claim takes (one statement), whatever the free concurrency.
const CLAIM_AT_MOST: usize = 1000;

/// What every lane shares.
#[derive(Clone)]
pub struct LaneDeps {
    pub writer: MessageWriter,
    pub metrics: Arc<Metrics>,
    /// Decides what becomes of a failed attempt.
    pub retry: Addr<RetryScheduler>,
    /// Parks what is out of attempts.
    pub dlq: Addr<DlqActor>,
    pub lease: Duration,
}

/// One provider's sending: its calls, pacing, breaker and settlement.
pub struct Lane {
    pub name: &'static str,
    channels: Vec<Channel>,
    provider: Arc<dyn Provider>,
    concurrency: usize,
    limiter: Option<DefaultDirectRateLimiter>,
    pub(crate) deps: LaneDeps,
    pub(crate) state: RefCell<State>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub breaker: Breaker,
    pub in_flight: usize,
    /// The messages whose calls are in flight, with their lease tokens.
    pub holding: HashMap<i64, String>,
    /// Messages handed over by the workers, leased, waiting for room (see [`Lane::take`]).
    pub pending: Vec<Held>,
    /// A claim round is running; `again` asks it for one more pass.
    claiming: bool,
    again: bool,
    /// Outcomes waiting for the settler, which is running when `settling`.
    pub outcomes: Vec<Outcome>,
    pub settling: bool,
    /// Shutting down: no more claims.
    pub stopping: bool,
}

impl Lane {
    pub fn new(
        name: &'static str,
        provider: Arc<dyn Provider>,
        settings: &ProviderSettings,
        deps: LaneDeps,
    ) -> Rc<Self> {
        let channels = match name {
            "sms" => vec![Channel::Sms, Channel::Mms],
            _ => vec![Channel::Email],
        };
        Rc::new(Lane {
            name,
            channels,
            provider,
            concurrency: settings.concurrency.max(1),
            limiter: settings.rate.map(limiter),
            deps,
            state: RefCell::new(State {
                breaker: Breaker::new(settings.breaker_failures, settings.breaker_cooldown),
                in_flight: 0,
                holding: HashMap::new(),
                pending: Vec::new(),
                claiming: false,
                again: false,
                outcomes: Vec::new(),
                settling: false,
                stopping: false,
            }),
        })
    }

    fn slot(&self) -> usize {
        DeliveryGauges::slot(self.name)
    }

    /// The circuit as the gauge and the console show it.
    pub fn circuit(&self) -> Circuit {
        self.state.borrow().breaker.state(Instant::now())
    }

    /// No claim, call or settlement under way.
    pub fn idle(&self) -> bool {
        let state = self.state.borrow();
        state.in_flight == 0 && !state.claiming && !state.settling && state.pending.is_empty()
    }

    pub fn circuit_open(&self) -> bool {
        self.circuit() == Circuit::Open
    }

    /// Whether messages of this lane are due now (an unreadable answer counts as none).
    pub async fn has_due(&self) -> bool {
        let db = self.deps.writer.connection();
        delivery::count_due_on(db, &self.channels)
            .await
            .unwrap_or(0)
            > 0
    }

    pub(crate) fn publish_gauges(&self) {
        let gauges = &self.deps.metrics.delivery;
        let state = self.state.borrow();
        gauges.in_flight[self.slot()].store(state.in_flight as i64, Ordering::Relaxed);
        let circuit = state.breaker.state(Instant::now());
        gauges.circuit[self.slot()].store(circuit.gauge(), Ordering::Relaxed);
    }

    /// Stops claiming; calls in flight finish and settle.
    pub fn stop(&self) {
        self.state.borrow_mut().stopping = true;
    }

    /// At the shutdown deadline: the messages whose calls have not returned are made due
    /// now, for another process, as if this one had died mid-call (their provider may get
    /// a second call, with the same idempotency key). Returns how many.
    pub async fn give_back_in_flight(&self) -> usize {
        let now = chrono::Utc::now();
        let held: Vec<(i64, String, chrono::DateTime<chrono::Utc>)> = {
            let mut state = self.state.borrow_mut();
            let pending: Vec<Held> = std::mem::take(&mut state.pending);
            state
                .holding
                .drain()
                .chain(pending.into_iter().map(|h| (h.id, h.lease_token)))
                .map(|(id, token)| (id, token, now))
                .collect()
        };
        if held.is_empty() {
            return 0;
        }
        if let Err(err) = delivery::reschedule(&self.deps.writer, &held, false).await {
            tracing::warn!(provider = self.name, error = %err, "could not give back the messages whose calls are in flight; they are due when their lease runs out");
        }
        held.len()
    }

    /// Claims and starts calls while there is room and work. Several callers at once make
    /// one round, which runs again when asked meanwhile.
    pub async fn claim(self: Rc<Self>) {
        {
            let mut state = self.state.borrow_mut();
            if state.claiming {
                state.again = true;
                return;
            }
            state.claiming = true;
        }
        let rounds = AssertUnwindSafe(self.clone().claim_rounds()).catch_unwind();
        if let Err(panic) = rounds.await {
            let reason = crate::actors::supervision::panic_message(panic);
            tracing::error!(
                provider = self.name,
                reason,
                "claiming due messages panicked; the next poll claims again"
            );
            self.deps.metrics.actor_restarted("sender");
        }
        self.state.borrow_mut().claiming = false;
    }

    async fn claim_rounds(self: Rc<Self>) {
        loop {
            let (wanted, trial) = {
                let mut state = self.state.borrow_mut();
                state.again = false;
                let free = self.concurrency.saturating_sub(state.in_flight);
                let wanted = if state.stopping {
                    0
                } else {
                    free.min(CLAIM_AT_MOST)
                };
                let before = state.breaker.state(Instant::now());
                let allowed = state.breaker.allow(wanted, Instant::now());
                (allowed, before == Circuit::HalfOpen && allowed > 0)
            };
            self.publish_gauges();
            if wanted == 0 {
                break;
            }
            let claimed = delivery::claim(
                &self.deps.writer,
                &self.channels,
                wanted as u64,
                self.deps.lease,
            )
            .await;
            let held = match claimed {
                Ok(held) => held,
                Err(err) => {
                    tracing::warn!(provider = self.name, error = %err, "cannot claim due messages; trying again at the next poll");
                    Vec::new()
                }
            };
            if trial && held.is_empty() {
                self.state.borrow_mut().breaker.unused();
            }
            let full = held.len() == wanted;
            self.clone().start(held);
            if !full && !self.state.borrow().again {
                break;
            }
        }
    }

    /// Starts one call per held message.
    fn start(self: Rc<Self>, held: Vec<Held>) {
        {
            let mut state = self.state.borrow_mut();
            state.in_flight += held.len();
            for message in &held {
                state
                    .holding
                    .insert(message.id, message.lease_token.clone());
            }
        }
        for message in held {
            actix::spawn(self.clone().call(message));
        }
        self.publish_gauges();
    }

    /// Messages this process has just stored under a lease for this lane (the worker's
    /// insert): called at once, no claim needed, as far as the free concurrency and the
    /// circuit allow; the others wait here for room (see [`Self::start_pending`]).
    pub async fn take(self: Rc<Self>, held: Vec<Held>) {
        self.state.borrow_mut().pending.extend(held);
        self.start_pending().await;
    }

    /// Starts the waiting handed-over messages that the free concurrency and the circuit
    /// allow. At most one more round of calls (`concurrency`) keeps waiting, so none waits
    /// longer than about one provider timeout, well inside its lease; the rest, and all of
    /// them while the circuit is not closed or the lane stops, are given back: due now,
    /// their attempt refunded, for a claim.
    pub async fn start_pending(self: Rc<Self>) {
        let now = Instant::now();
        let (start, back) = {
            let mut state = self.state.borrow_mut();
            let free = match state.stopping {
                true => 0,
                false => self.concurrency.saturating_sub(state.in_flight),
            };
            let wanted = free.min(state.pending.len());
            let allowed = state.breaker.allow(wanted, now).min(wanted);
            let start: Vec<Held> = state.pending.drain(..allowed).collect();
            let closed = state.breaker.state(now) == Circuit::Closed;
            let keep = if closed && !state.stopping {
                self.concurrency
            } else {
                0
            };
            let back = match state.pending.len() > keep {
                true => state.pending.split_off(keep),
                false => Vec::new(),
            };
            (start, back)
        };
        self.clone().start(start);
        if back.is_empty() {
            return;
        }
        let due = chrono::Utc::now();
        let back: Vec<_> = back
            .into_iter()
            .map(|h| (h.id, h.lease_token, due))
            .collect();
        if let Err(err) = delivery::reschedule(&self.deps.writer, &back, true).await {
            tracing::warn!(provider = self.name, error = %err, "could not give back messages this sender had no room for; they are due when their lease runs out");
        }
    }

    /// One provider call for one held message, and its outcome handed to the settler.
    async fn call(self: Rc<Self>, held: Held) {
        let Held {
            id,
            lease_token,
            event,
        } = held;
        let outcome = match event {
            Err(reason) => Outcome::Unreadable {
                id,
                lease_token,
                reason,
            },
            Ok(event) => {
                if let Some(limiter) = &self.limiter {
                    limiter.until_ready().await;
                }
                let open = self.state.borrow().breaker.state(Instant::now()) == Circuit::Open;
                if open || self.state.borrow().stopping {
                    // Never called: the circuit opened (or shutdown began) while it waited.
                    Outcome::NotCalled { id, lease_token }
                } else {
                    let result = self.send(&event).await;
                    self.observe(&result);
                    match result {
                        Ok(provider_message_id) => Outcome::Sent {
                            id,
                            lease_token,
                            provider_message_id,
                            event,
                        },
                        Err(error) => Outcome::Failed {
                            id,
                            lease_token,
                            event,
                            error,
                        },
                    }
                }
            }
        };
        settle::hand_over(self, outcome);
    }

    /// The call itself, in the attempt's `deliver` span; a panic in the provider fails this
    /// message alone, permanently.
    async fn send(&self, event: &crate::domain::Event) -> Result<String, ProcessingError> {
        let trace = self.deps.metrics.tracer.delivery(event);
        trace.around(self.call_provider(event)).await
    }

    async fn call_provider(&self, event: &crate::domain::Event) -> Result<String, ProcessingError> {
        let provider = self.provider.clone();
        let attempt = AssertUnwindSafe(async {
            let message = OutboundMessage::from_event(event);
            telemetry::provider_call(event, provider.name(), provider.send(message)).await
        });
        let result = match attempt.catch_unwind().await {
            Ok(Ok(receipt)) => {
                self.deps.metrics.provider_request(self.name, "sent");
                Ok(receipt.provider_message_id)
            }
            Ok(Err(err)) => {
                self.deps.metrics.provider_request(self.name, err.outcome());
                Err(err.into())
            }
            Err(panic) => {
                let reason = crate::actors::supervision::panic_message(panic);
                tracing::error!(provider = self.name, idempotency_key = %event.idempotency_key, reason, "provider call panicked");
                self.deps.metrics.actor_restarted("sender");
                Err(ProcessingError::InvalidEvent(format!(
                    "the provider call panicked: {reason}"
                )))
            }
        };
        if let Err(err) = &result {
            telemetry::record_outcome(event, "failed", Some((err.kind().as_str(), err as _)));
        }
        result
    }

    fn observe(&self, result: &Result<String, ProcessingError>) {
        let mut state = self.state.borrow_mut();
        match result {
            Err(err) if err.kind() == crate::actors::ErrorKind::Transient => {
                if state.breaker.failed(Instant::now()) {
                    tracing::warn!(provider = self.name, error = %err, "circuit opened: no calls to this provider until its cooldown ends");
                }
            }
            _ => {
                if state.breaker.state(Instant::now()) != Circuit::Closed {
                    tracing::info!(
                        provider = self.name,
                        "circuit closed: the provider answers again"
                    );
                }
                state.breaker.succeeded()
            }
        }
    }
}

fn limiter(rate: Rate) -> DefaultDirectRateLimiter {
    let count = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
    let period = rate.per / count.get();
    // Spread evenly, with a burst of one period's share at most.
    let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
        .expect("a positive period")
        .allow_burst(count);
    RateLimiter::direct(quota)
}
