//! The delivery stage (SPEC §13): outbound messages are sent from the database, apart from
//! ingest, one lane per provider.
//!
//! A lane claims due messages (a lease per claim, see [`crate::store::delivery`]), up to
//! its free `concurrency` and what its circuit breaker allows; calls the provider once per
//! message, paced by its `rate`; and hands each outcome to [`settle`], which records them
//! in batches. A slow call holds only itself: each message settles on its own, and a claim
//! round starts again as soon as calls finish. While the circuit is open the lane claims
//! nothing, so a provider outage spends no attempts and holds up no other lane, nor ingest;
//! with a fallback provider (`fallback_url`), the lane calls that one instead while the
//! circuit is open, under a breaker of its own.

pub mod breaker;
pub mod settle;

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use actix::Addr;

use crate::actors::faults::Faults;
use crate::actors::supervision::caught_async;
use crate::actors::ProcessingError;
use crate::actors::{DlqActor, RetryScheduler};
use crate::config::{ProviderSettings, Rate};
use crate::domain::Channel;
use crate::providers::{HttpProvider, OutboundMessage, Provider};
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
    pub faults: Faults,
}

/// One provider's sending: its calls, pacing, breaker and settlement.
pub struct Lane {
    pub name: &'static str,
    channels: Vec<Channel>,
    provider: Arc<dyn Provider>,
    /// How the status resource names `provider`: its kind.
    kind: &'static str,
    /// Called while `provider`'s circuit is open (`fallback_url`).
    fallback: Option<Arc<dyn Provider>>,
    concurrency: usize,
    limiter: Option<DefaultDirectRateLimiter>,
    pub(crate) deps: LaneDeps,
    pub(crate) state: RefCell<State>,
}

/// Which of a lane's providers a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Primary,
    Fallback,
}

#[derive(Debug)]
pub(crate) struct State {
    pub breaker: Breaker,
    /// The fallback provider's breaker, when there is one.
    pub fallback: Option<Breaker>,
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

impl State {
    /// Where calls go now: the provider unless its circuit is open, then the fallback
    /// unless its own circuit is open; `None` while neither may be called.
    fn route(&self, now: Instant) -> Option<Route> {
        if self.breaker.state(now) != Circuit::Open {
            return Some(Route::Primary);
        }
        match &self.fallback {
            Some(fallback) if fallback.state(now) != Circuit::Open => Some(Route::Fallback),
            _ => None,
        }
    }

    fn breaker(&self, route: Route) -> &Breaker {
        match (route, &self.fallback) {
            (Route::Fallback, Some(fallback)) => fallback,
            _ => &self.breaker,
        }
    }

    fn breaker_mut(&mut self, route: Route) -> &mut Breaker {
        match (route, &mut self.fallback) {
            (Route::Fallback, Some(fallback)) => fallback,
            _ => &mut self.breaker,
        }
    }

    /// How many of `wanted` calls may start now, on which route, and whether they are a
    /// half-open circuit's trial.
    fn grant(&mut self, wanted: usize, now: Instant) -> (usize, Route, bool) {
        let Some(route) = self.route(now) else {
            return (0, Route::Primary, false);
        };
        let breaker = self.breaker_mut(route);
        let half_open = breaker.state(now) == Circuit::HalfOpen;
        let allowed = breaker.allow(wanted, now);
        (allowed, route, half_open && allowed > 0)
    }

    /// Whether calls flow freely (the route's circuit is closed, not merely trying).
    fn flowing(&self, now: Instant) -> bool {
        self.route(now)
            .is_some_and(|route| self.breaker(route).state(now) == Circuit::Closed)
    }
}

impl Lane {
    pub fn new(
        name: &'static str,
        provider: Arc<dyn Provider>,
        settings: &ProviderSettings,
        deps: LaneDeps,
    ) -> Rc<Self> {
        let (channels, fallback_name) = match name {
            "sms" => (vec![Channel::Sms, Channel::Mms], "sms_fallback"),
            _ => (vec![Channel::Email], "email_fallback"),
        };
        let fallback = (!settings.fallback_url.is_empty()).then(|| {
            let mut http = settings.clone();
            http.url = settings.fallback_url.clone();
            Arc::new(HttpProvider::new(fallback_name, &http)) as Arc<dyn Provider>
        });
        let breaker = || Breaker::new(settings.breaker_failures, settings.breaker_cooldown);
        let fallback_breaker = fallback.as_ref().map(|_| breaker());
        Rc::new(Lane {
            name,
            channels,
            provider,
            kind: settings.kind.as_str(),
            fallback,
            concurrency: settings.concurrency.max(1),
            limiter: settings.rate.map(limiter),
            deps,
            state: RefCell::new(State {
                breaker: breaker(),
                fallback: fallback_breaker,
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

    /// Outcomes of returned calls are being recorded.
    pub fn settling(&self) -> bool {
        self.state.borrow().settling
    }

    /// No provider may be called now: the circuit is open, and the fallback's too (or
    /// there is none).
    pub fn cannot_send(&self) -> bool {
        self.state.borrow().route(Instant::now()).is_none()
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
        if let Err(reason) = caught_async(self.clone().claim_rounds()).await {
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
            let (wanted, route, trial) = {
                let mut state = self.state.borrow_mut();
                state.again = false;
                let free = self.concurrency.saturating_sub(state.in_flight);
                let wanted = if state.stopping {
                    0
                } else {
                    free.min(CLAIM_AT_MOST)
                };
                state.grant(wanted, Instant::now())
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
                self.state.borrow_mut().breaker_mut(route).unused();
            }
            let full = held.len() == wanted;
            self.clone().start(held, route);
            if !full && !self.state.borrow().again {
                break;
            }
        }
    }

    /// Starts one call per held message, on `route`.
    fn start(self: Rc<Self>, held: Vec<Held>, route: Route) {
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
            actix::spawn(self.clone().call(message, route));
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
        let (start, back, route) = {
            let mut state = self.state.borrow_mut();
            let free = match state.stopping {
                true => 0,
                false => self.concurrency.saturating_sub(state.in_flight),
            };
            let wanted = free.min(state.pending.len());
            let (allowed, route, _) = state.grant(wanted, now);
            let start: Vec<Held> = state.pending.drain(..allowed.min(wanted)).collect();
            let keep = if state.flowing(now) && !state.stopping {
                self.concurrency
            } else {
                0
            };
            let back = match state.pending.len() > keep {
                true => state.pending.split_off(keep),
                false => Vec::new(),
            };
            (start, back, route)
        };
        self.clone().start(start, route);
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

    /// One provider call for one held message, on `route`, and its outcome handed to the
    /// settler.
    async fn call(self: Rc<Self>, held: Held, route: Route) {
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
                let open = {
                    let state = self.state.borrow();
                    state.breaker(route).state(Instant::now()) == Circuit::Open
                };
                if open || self.state.borrow().stopping {
                    // Never called: the circuit opened (or shutdown began) while it waited.
                    Outcome::NotCalled { id, lease_token }
                } else {
                    let result = self.send(&event, route).await;
                    self.observe(route, &result);
                    match result {
                        Ok(provider_message_id) => Outcome::Sent {
                            id,
                            lease_token,
                            provider_message_id,
                            sent_by: match route {
                                Route::Primary => self.kind,
                                Route::Fallback => "fallback",
                            },
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
    async fn send(
        &self,
        event: &crate::domain::Event,
        route: Route,
    ) -> Result<String, ProcessingError> {
        let trace = self.deps.metrics.tracer.delivery(event);
        trace.around(self.call_provider(event, route)).await
    }

    async fn call_provider(
        &self,
        event: &crate::domain::Event,
        route: Route,
    ) -> Result<String, ProcessingError> {
        let provider = match (route, &self.fallback) {
            (Route::Fallback, Some(fallback)) => fallback.clone(),
            _ => self.provider.clone(),
        };
        // Metrics name the lane's provider by its channel, the fallback as itself.
        let label = match route {
            Route::Primary => self.name,
            Route::Fallback => provider.name(),
        };
        let attempt = caught_async(async {
            let message = OutboundMessage::from_event(event);
            telemetry::provider_call(event, provider.name(), provider.send(message)).await
        });
        let result = match attempt.await {
            Ok(Ok(receipt)) => {
                self.deps.metrics.provider_request(label, "sent");
                Ok(receipt.provider_message_id)
            }
            Ok(Err(err)) => {
                self.deps.metrics.provider_request(label, err.outcome());
                Err(err.into())
            }
            Err(reason) => {
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

    fn observe(&self, route: Route, result: &Result<String, ProcessingError>) {
        let mut state = self.state.borrow_mut();
        let breaker = state.breaker_mut(route);
        let provider = match route {
            Route::Primary => self.name,
            Route::Fallback => "fallback",
        };
        match result {
            Err(err) if err.kind() == crate::actors::ErrorKind::Transient => {
                if breaker.failed(Instant::now()) {
                    tracing::warn!(provider = self.name, route = provider, error = %err, "circuit opened: no calls to this provider until its cooldown ends");
                }
            }
            _ => {
                if breaker.state(Instant::now()) != Circuit::Closed {
                    tracing::info!(
                        provider = self.name,
                        route = provider,
                        "circuit closed: the provider answers again"
                    );
                }
                breaker.succeeded()
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
