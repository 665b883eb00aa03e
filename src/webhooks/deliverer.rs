//! Delivering webhooks: claims due rows of the outbox, calls each endpoint once per
//! attempt, and settles each attempt in one place ([`webhook_deliveries::settle`]).
//!
//! Isolation: each endpoint has `webhooks.concurrency_per_endpoint` calls in flight at
//! most, and a claim never takes more than an endpoint's free slots, so a slow or failing
//! endpoint holds its own slots and nobody else's. A failed attempt is retried on the
//! schedule of `webhooks.retry_schedule` (plus up to 10% jitter); at-least-once, since a
//! deliverer that dies mid-call leaves its claim to run out and be taken again.
//!
//! A panic (a bug) is caught where the work runs, in detached tasks the actor's restart
//! would not reach: claiming goes on at the next poll, and a delivery whose attempt
//! panicked is settled as a failed attempt, retried on the schedule like any other, so it
//! never holds its endpoint's slot or loops on the same panic.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use chrono::Utc;
use entity::webhook_deliveries::Model as Delivery;
use entity::webhook_endpoints::Model as Endpoint;
use futures_util::StreamExt;

use super::address::{check_url, GuardedResolver};
use super::{payload, signing};
use crate::actors::faults::{Faults, Site};
use crate::actors::supervision::{caught_async, record_panic};
use crate::config::WebhookSettings;
use crate::store::webhook_deliveries::{self, Attempt, Next};
use crate::store::writer::MessageWriter;
use crate::store::{webhook_endpoints, StoreError};
use crate::telemetry::Metrics;

/// Calls in flight per process, all endpoints together.
const MAX_IN_FLIGHT: usize = 256;
/// How much of an endpoint's answer is kept (and read).
const RESPONSE_BYTES: usize = 1024;

pub struct Deliverer {
    writer: MessageWriter,
    settings: WebhookSettings,
    metrics: Arc<Metrics>,
    faults: Faults,
    client: awc::Client,
    /// This deliverer's claims (one token per process life).
    token: String,
    /// Calls in flight, by endpoint, and the deliveries they are for.
    busy: RefCell<HashMap<uuid::Uuid, usize>>,
    held: RefCell<HashSet<i64>>,
    claiming: Cell<bool>,
    stopped: Cell<bool>,
}

impl Deliverer {
    pub fn new(
        writer: MessageWriter,
        settings: WebhookSettings,
        metrics: Arc<Metrics>,
        faults: Faults,
    ) -> Self {
        let tls = crate::tls::client_config("").expect("the public roots load");
        let tcp = actix_tls::connect::Connector::new(actix_tls::connect::Resolver::custom(
            GuardedResolver {
                allow_private: settings.allow_private,
            },
        ))
        .service();
        let client = awc::Client::builder()
            .disable_redirects()
            .timeout(settings.timeout)
            .connector(
                awc::Connector::new()
                    .connector(tcp)
                    .rustls_0_23(Arc::new(tls))
                    .timeout(settings.timeout),
            )
            .finish();
        Deliverer {
            writer,
            settings,
            metrics,
            faults,
            client,
            token: uuid::Uuid::new_v4().to_string(),
            busy: RefCell::default(),
            held: RefCell::default(),
            claiming: Cell::new(false),
            stopped: Cell::new(false),
        }
    }

    /// Whether no call is in flight.
    pub fn idle(&self) -> bool {
        self.held.borrow().is_empty()
    }

    /// Stops claiming; calls in flight finish.
    pub fn stop(&self) {
        self.stopped.set(true);
    }

    /// Gives what is still in flight back (due at once). Returns how many.
    pub async fn give_back_in_flight(&self) -> usize {
        let held = self.held.borrow().clone();
        match webhook_deliveries::give_back(&self.writer, &self.token, &held).await {
            Ok(n) => n as usize,
            Err(err) => {
                tracing::warn!(error = %err, "cannot give webhook deliveries back; their claims run out instead");
                0
            }
        }
    }

    /// Claims what is due (within the free slots) and starts a call for each.
    pub async fn claim(self: Rc<Self>) {
        if self.stopped.get() || self.claiming.replace(true) {
            return;
        }
        if let Err(reason) = caught_async(self.clone().claim_rounds()).await {
            self.panicked("claiming due deliveries", &reason);
        }
        self.claiming.set(false);
    }

    async fn claim_rounds(self: Rc<Self>) {
        loop {
            let room = MAX_IN_FLIGHT.saturating_sub(self.held.borrow().len());
            if room == 0 || self.stopped.get() {
                break;
            }
            let lease_until = Utc::now() + chrono_duration(self.settings.lease);
            let busy = self.busy.borrow().clone();
            let claimed = webhook_deliveries::claim(
                &self.writer,
                &self.token,
                lease_until,
                room,
                self.settings.concurrency_per_endpoint,
                &busy,
            )
            .await;
            let claimed = match claimed {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot claim webhook deliveries");
                    break;
                }
            };
            if claimed.is_empty() {
                break;
            }
            for delivery in claimed {
                *self
                    .busy
                    .borrow_mut()
                    .entry(delivery.endpoint_id)
                    .or_insert(0) += 1;
                self.held.borrow_mut().insert(delivery.id);
                actix::spawn(self.clone().deliver(delivery));
            }
        }
    }

    async fn deliver(self: Rc<Self>, delivery: Delivery) {
        let (id, endpoint) = (delivery.id, delivery.endpoint_id);
        let settled = match caught_async(self.attempt(&delivery)).await {
            Ok(settled) => settled,
            Err(reason) => {
                self.panicked("a webhook delivery", &reason);
                let attempt = Attempt {
                    error: Some(format!("the delivery panicked: {reason}")),
                    ..Attempt::none_at(Utc::now())
                };
                let (next, outcome) = self.after_failure(&delivery);
                self.settle(&delivery, None, Some(attempt), next, outcome)
                    .await
            }
        };
        if let Err(err) = settled {
            // Left to its claim running out: due again then.
            tracing::warn!(delivery_id = id, error = %err, "webhook delivery not settled");
        }
        self.held.borrow_mut().remove(&id);
        let mut busy = self.busy.borrow_mut();
        if let Some(n) = busy.get_mut(&endpoint) {
            *n -= 1;
            if *n == 0 {
                busy.remove(&endpoint);
            }
        }
        drop(busy);
        // A slot is free: more of this endpoint's may be due.
        actix::spawn(self.clone().claim());
    }

    /// Logs and counts a caught panic, as the actors' own are.
    fn panicked(&self, during: &str, reason: &str) {
        record_panic("webhook", &format!("{during}: {reason}"), &self.metrics);
    }

    /// What follows a failed attempt: another on the schedule, or none.
    fn after_failure(&self, delivery: &Delivery) -> (Next, &'static str) {
        let attempts_made = delivery.attempts as usize + 1;
        match self.settings.retry_schedule.get(attempts_made - 1) {
            Some(wait) => (
                Next::RetryAt(Utc::now() + chrono_duration(jitter(*wait))),
                "retry",
            ),
            None => (Next::Failed, "failed"),
        }
    }

    /// One attempt, settled.
    async fn attempt(&self, delivery: &Delivery) -> Result<(), StoreError> {
        if let Some(stall) = self.faults.at(Site::WebhookDelivery, None) {
            stall.await;
        }
        let db = self.writer.connection();
        let found = webhook_endpoints::get(db, None, delivery.endpoint_id).await?;
        let endpoint = match found {
            Some(e) if e.enabled => e,
            found => {
                let why = match found {
                    None => "its endpoint was deleted",
                    Some(_) => "its endpoint is disabled",
                };
                tracing::info!(delivery_id = delivery.id, why, "webhook delivery not made");
                return self
                    .settle(delivery, None, None, Next::Failed, "failed")
                    .await;
            }
        };
        let body = match &delivery.payload {
            Some(body) => body.clone(),
            None => payload::render(db, delivery).await?,
        };
        let attempt = self.call(&endpoint, delivery, &body).await;
        let succeeded = matches!(attempt.status_code, Some(200..=299));
        let (next, outcome) = if succeeded {
            (Next::Delivered, "delivered")
        } else {
            self.after_failure(delivery)
        };
        tracing::debug!(
            delivery_id = delivery.id,
            endpoint_id = %endpoint.id,
            status = ?attempt.status_code,
            outcome,
            "webhook attempt"
        );
        self.settle(delivery, Some(&body), Some(attempt), next, outcome)
            .await
    }

    async fn settle(
        &self,
        delivery: &Delivery,
        body: Option<&str>,
        attempt: Option<Attempt>,
        next: Next,
        outcome: &'static str,
    ) -> Result<(), StoreError> {
        let first = delivery.payload.is_none();
        let settled = webhook_deliveries::settle(
            &self.writer,
            delivery,
            &self.token,
            body.filter(|_| first),
            attempt,
            next,
            chrono_duration(self.settings.disable_after),
        )
        .await?;
        if settled.applied {
            self.metrics.webhook_delivery(outcome);
        }
        if settled.disabled_endpoint {
            self.metrics.webhook_endpoint_disabled();
            tracing::warn!(
                endpoint_id = %delivery.endpoint_id,
                customer_id = %delivery.customer_id,
                "webhook endpoint disabled: its deliveries failed for webhooks.disable_after"
            );
        }
        Ok(())
    }

    /// The HTTP call, signed; never follows a redirect, reads at most [`RESPONSE_BYTES`].
    async fn call(&self, endpoint: &Endpoint, delivery: &Delivery, body: &str) -> Attempt {
        let at = Utc::now();
        let started = Instant::now();
        let mut attempt = Attempt::none_at(at);
        // Checked again at each call: the setting may have changed since registration.
        if let Err(why) = check_url(&endpoint.url, self.settings.allow_private) {
            attempt.error = Some(format!("the URL {why}"));
            return attempt;
        }
        let id = message_id(delivery.id);
        let timestamp = at.timestamp();
        let secrets = webhook_endpoints::signing_secrets(endpoint, at);
        let signature = signing::signature_header(secrets, &id, timestamp, body.as_bytes());
        let request = self
            .client
            .post(endpoint.url.as_str())
            .insert_header((CONTENT_TYPE, "application/json"))
            .insert_header((
                USER_AGENT,
                concat!("messaging-server/", env!("CARGO_PKG_VERSION")),
            ))
            .insert_header(header("webhook-id", &id))
            .insert_header(header("webhook-timestamp", &timestamp.to_string()))
            .insert_header(header("webhook-signature", &signature));
        let call = async {
            let mut response = request
                .send_body(body.to_string())
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let mut kept: Vec<u8> = Vec::new();
            while kept.len() < RESPONSE_BYTES {
                match response.next().await {
                    Some(Ok(chunk)) => kept.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            kept.truncate(RESPONSE_BYTES);
            Ok::<_, String>((status, String::from_utf8_lossy(&kept).into_owned()))
        };
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(Ok((status, text))) => {
                attempt.status_code = Some(status);
                attempt.response = Some(text);
                if !(200..300).contains(&status) {
                    attempt.error = Some(format!("the endpoint answered {status}"));
                }
            }
            Ok(Err(err)) => attempt.error = Some(err),
            Err(_) => {
                attempt.error = Some(format!(
                    "no answer within {}",
                    humantime::format_duration(self.settings.timeout)
                ))
            }
        }
        attempt.latency_ms = started.elapsed().as_millis().min(i64::MAX as u128) as i64;
        attempt
    }
}

/// The `webhook-id` of a delivery: the same for each of its attempts, so a receiver can
/// drop a repeat.
pub fn message_id(delivery_id: i64) -> String {
    format!("msg_{delivery_id}")
}

fn header(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
    )
}

/// `wait` plus up to 10% more, so deliveries failed together are not retried together.
fn jitter(wait: Duration) -> Duration {
    wait + wait.mul_f64(fastrand::f64() * 0.1)
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
