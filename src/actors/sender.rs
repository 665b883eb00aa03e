//! Sender: one supervised actor per provider, on a thread of its own, running that
//! provider's delivery lane (see [`crate::delivery`]). Handed (`Take`) the outbound
//! messages this process's workers have just stored, leased for it in the same insert, and
//! looking every `delivery.poll_interval` for the rest (retries coming due, messages given
//! back or stored by another process, leases run out).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::supervision::Ping;
use crate::config::ProviderSettings;
use crate::delivery::{Lane, LaneDeps};
use crate::domain::Channel;
use crate::providers::Provider;
use crate::store::delivery::Held;

/// Outbound messages just stored under a lease for this sender: call them now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Take(pub Vec<Held>);

/// The senders of a process, by provider, for the workers that hand them messages.
#[derive(Clone)]
pub struct Senders {
    pub sms: Addr<Sender>,
    pub email: Addr<Sender>,
    /// `delivery.lease`: how long a handed-over message is held.
    pub lease: Duration,
}

impl Senders {
    /// Hands each held message to the sender of its channel. Should one not arrive (the
    /// sender restarting), the lease runs out and the message is due for any sender then.
    pub fn hand_over(&self, held: Vec<Held>) {
        let (email, sms): (Vec<Held>, Vec<Held>) = held
            .into_iter()
            .partition(|h| matches!(&h.event, Ok(e) if e.channel == Channel::Email));
        for (sender, held) in [(&self.sms, sms), (&self.email, email)] {
            if !held.is_empty() {
                sender.do_send(Take(held));
            }
        }
    }
}

/// Send what is due and wait (up to the deadline) for the calls in flight to settle, then
/// stop claiming; calls still in flight at the deadline are given back (due at once, for
/// another process). Returns how many were given back.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Drain(pub Instant);

/// How long past the shutdown deadline a settlement in progress may take to finish.
const SETTLE_GRACE: Duration = Duration::from_secs(5);

pub struct Sender {
    lane: Rc<Lane>,
    poll: Duration,
}

/// What a sender is built from (on its own thread: the lane is not `Send`).
#[derive(Clone)]
pub struct SenderSpec {
    pub name: &'static str,
    pub provider: Arc<dyn Provider>,
    pub settings: ProviderSettings,
    pub deps: LaneDeps,
    pub poll: Duration,
}

impl Sender {
    pub fn start_supervised(spec: SenderSpec, thread: &ArbiterHandle) -> Addr<Self> {
        Supervisor::start_in_arbiter(thread, move |_| Sender {
            lane: Lane::new(spec.name, spec.provider, &spec.settings, spec.deps),
            poll: spec.poll,
        })
    }

    fn kick(&self) {
        actix::spawn(self.lane.clone().claim());
    }
}

impl Actor for Sender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.kick();
        ctx.run_interval(self.poll, |act, _| act.kick());
    }
}

impl Supervised for Sender {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(provider = self.lane.name, "sender restarting");
    }
}

impl Handler<Take> for Sender {
    type Result = ();

    fn handle(&mut self, Take(held): Take, _: &mut Self::Context) {
        actix::spawn(self.lane.clone().take(held));
    }
}

impl Handler<Drain> for Sender {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, Drain(deadline): Drain, _: &mut Self::Context) -> Self::Result {
        let lane = self.lane.clone();
        Box::pin(async move {
            // What is due is still sent (the ingest queue was drained into the database
            // just before), unless the provider's circuit is open; then no claims.
            loop {
                if lane.idle() && (lane.cannot_send() || !lane.has_due().await) {
                    lane.stop();
                    // A claim may have started meanwhile: let it finish.
                    if lane.idle() {
                        return 0;
                    }
                }
                if Instant::now() >= deadline {
                    lane.stop();
                    let given_back = lane.give_back_in_flight().await;
                    // Calls that returned are being recorded: their holds were released, so
                    // this ends after one more write, and what it could not record is then
                    // logged by idempotency key (it will be sent again).
                    let grace = Instant::now() + SETTLE_GRACE;
                    while lane.settling() && Instant::now() < grace {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    return given_back;
                }
                actix::spawn(lane.clone().claim());
                actix::spawn(lane.clone().start_pending());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }
}

impl Handler<Ping> for Sender {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}
