//! WebhookDeliverer: the supervised actor that runs this process's webhook deliveries
//! ([`crate::webhooks::deliverer`]), on the senders' thread. It looks for due deliveries
//! every `webhooks.poll_interval`; events are recorded by whichever process changed a
//! message, so polling is how every process finds them.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::faults::Faults;
use super::sender::Drain;
use super::supervision::Ping;
use crate::config::WebhookSettings;
use crate::store::writer::MessageWriter;
use crate::telemetry::Metrics;
use crate::webhooks::deliverer::Deliverer;

pub struct WebhookDeliverer {
    deliverer: Rc<Deliverer>,
    poll: Duration,
}

impl WebhookDeliverer {
    pub fn start_supervised(
        writer: MessageWriter,
        settings: WebhookSettings,
        metrics: Arc<Metrics>,
        faults: Faults,
        thread: &ArbiterHandle,
    ) -> Addr<Self> {
        Supervisor::start_in_arbiter(thread, move |_| WebhookDeliverer {
            poll: settings.poll_interval,
            deliverer: Rc::new(Deliverer::new(writer, settings, metrics, faults)),
        })
    }
}

impl Actor for WebhookDeliverer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        actix::spawn(self.deliverer.clone().claim());
        ctx.run_interval(self.poll, |act, _| {
            actix::spawn(act.deliverer.clone().claim());
        });
    }
}

impl Supervised for WebhookDeliverer {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!("webhook deliverer restarting");
    }
}

impl Handler<Drain> for WebhookDeliverer {
    type Result = ResponseFuture<usize>;

    /// Stops claiming and waits (up to the deadline) for the calls in flight; what is
    /// still in flight then is given back, due at once for another process.
    fn handle(&mut self, Drain(deadline): Drain, _: &mut Self::Context) -> Self::Result {
        let deliverer = self.deliverer.clone();
        Box::pin(async move {
            deliverer.stop();
            while !deliverer.idle() {
                if Instant::now() >= deadline {
                    return deliverer.give_back_in_flight().await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            0
        })
    }
}

impl Handler<Ping> for WebhookDeliverer {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}
