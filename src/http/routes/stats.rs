//! `GET /api/stats` (admin): the counters and gauges the ops console and `messaging-server
//! status` show, as JSON. Counters are totals since this process started, so a client
//! computes rates from two samples (`sampled_at` tells how far apart they are).

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use prometheus::proto::MetricFamily;
use serde::{Deserialize, Serialize};

use super::operations;
use crate::http::{ApiError, AppState};
use crate::store;
use crate::telemetry::DeliveryGauges;

/// This process's counters and the gauges an operator watches.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stats {
    pub sampled_at: DateTime<Utc>,
    #[schema(schema_with = operations::queue_backend)]
    pub queue_backend: String,
    /// Events accepted and not finished (waiting, retrying, in flight); shared by every
    /// process with `nats`.
    pub queue_depth: u64,
    /// Dead letters not replayed (from the database: the same in every process); null
    /// while the database does not answer.
    pub dlq_size: Option<u64>,
    /// Persistence workers running in this process.
    pub workers_active: i64,
    /// Outbound messages due for a provider call and not held by a sender (from the
    /// database: the same in every process); null while the database does not answer.
    pub delivery_due: Option<u64>,
    /// Outbound messages not sent or dead-lettered yet: due, waiting for a retry, or in a
    /// provider call (from the database); null while the database does not answer.
    pub delivery_unsent: Option<u64>,
    /// This process's senders, one per provider (none in an API-only process).
    pub providers: Vec<ProviderState>,
    /// What `/readyz` says of this process.
    pub ready: bool,
    /// Why it is not ready, when it is not.
    pub not_ready: Option<String>,
    /// Counters of this process since it started.
    pub totals: Totals,
}

/// A provider's sender in this process.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderState {
    /// `sms` or `email`.
    pub provider: String,
    /// The circuit breaker: `closed` (calls flow), `half_open` (one trial call), `open`
    /// (no calls; messages wait, spending no attempts).
    #[schema(pattern = "^(closed|half_open|open)$")]
    pub circuit: String,
    /// Provider calls in flight.
    pub in_flight: i64,
}

/// Counters since this process started.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Totals {
    /// Events accepted into the queue (202s, replays and retries excluded).
    pub accepted: u64,
    /// Requests the queue refused (full or unavailable: 503).
    pub rejected: u64,
    /// Messages stored (a first write, not a duplicate).
    pub stored: u64,
    pub duplicates: u64,
    /// Provider calls that delivered.
    pub sent: u64,
    /// Failed processing attempts (each is retried or dead-lettered).
    pub failed: u64,
    pub retries: u64,
    pub dead_lettered: u64,
}

/// Operator summary
///
/// The counters and gauges the ops console and `messaging-server status` show. Counters
/// are this process's totals since it started: compute rates from two samples.
#[utoipa::path(
    get,
    path = "/api/stats",
    operation_id = "getStats",
    responses((status = 200, description = "The summary", body = Stats)),
)]
pub async fn get(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // Read upstream first: an event moving on between the reads is then counted twice
    // (queued, and stored unsent), never missed, so "queue empty and nothing unsent" means
    // settled (read the other way round, an event stored and acked between the reads was
    // in neither).
    let queue_depth = state.backend.depth() as u64;
    let (dlq_size, readiness, (due, unsent)) = futures_util::future::join3(
        store::dead_letters::count_pending(&state.db),
        operations::readyz(state.clone()),
        futures_util::future::join(
            store::delivery::count_due(&state.db),
            store::delivery::count_unsent(&state.db),
        ),
    )
    .await;
    let delivery = &state.metrics.delivery;
    let providers = if state.pipeline.senders.is_empty() {
        Vec::new()
    } else {
        ["sms", "email"]
            .into_iter()
            .map(|provider| {
                let slot = DeliveryGauges::slot(provider);
                let circuit = match delivery.circuit[slot].load(Ordering::Relaxed) {
                    0 => "closed",
                    1 => "half_open",
                    _ => "open",
                };
                ProviderState {
                    provider: provider.to_string(),
                    circuit: circuit.to_string(),
                    in_flight: delivery.in_flight[slot].load(Ordering::Relaxed),
                }
            })
            .collect()
    };
    // During an outage the rest still says what is going on.
    let dlq_size = match dlq_size {
        Ok(n) => {
            state.metrics.dlq_size.store(n, Ordering::Relaxed);
            Some(n)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot count dead letters for /api/stats");
            None
        }
    };
    let families = state.metrics.gather();
    let total = |name: &str, label: Option<(&str, &str)>| sum(&families, name, label);
    let stats = Stats {
        sampled_at: Utc::now(),
        queue_backend: state.backend.name().to_string(),
        queue_depth,
        dlq_size,
        workers_active: state.metrics.workers_active.load(Ordering::Relaxed),
        delivery_due: due.ok(),
        delivery_unsent: unsent.ok(),
        providers,
        ready: readiness.is_ok(),
        not_ready: readiness.err().map(|e| e.to_string()),
        totals: Totals {
            accepted: total("messaging_queue_enqueued_total", None),
            rejected: total("messaging_queue_enqueue_rejected_total", None),
            stored: total(
                "messaging_worker_processed_total",
                Some(("outcome", "stored")),
            ),
            duplicates: total(
                "messaging_worker_processed_total",
                Some(("outcome", "duplicate")),
            ),
            sent: total(
                "messaging_provider_requests_total",
                Some(("outcome", "sent")),
            ),
            failed: total("messaging_worker_failed_total", None),
            retries: total("messaging_retries_total", None),
            dead_lettered: total("messaging_dlq_total", None),
        },
    };
    Ok(HttpResponse::Ok().json(stats))
}

/// The sum of a counter's series, those with `label` only when given.
fn sum(families: &[MetricFamily], name: &str, label: Option<(&str, &str)>) -> u64 {
    families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            label.is_none_or(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v)
            })
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}
