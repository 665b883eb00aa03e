//! Health, readiness and metrics.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::openapi::schema::Object;
use utoipa::ToSchema;

use crate::http::errors::ProblemDoc as Problem;
use crate::http::openapi::string_enum;
use crate::http::{ApiError, AppState};
use crate::queue::QueueError;
use crate::store;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum HealthStatus {
    Ok,
}

/// The process is up.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    status: HealthStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ReadyStatus {
    Ready,
}

/// What was checked.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReadyChecks {
    #[schema(schema_with = database_ok)]
    database: &'static str,
    #[schema(schema_with = queue_backend)]
    queue: &'static str,
    /// `<n> running`, or `disabled` when this process runs no workers.
    #[schema(pattern = "^([0-9]+ running|disabled)$")]
    workers: String,
}

fn database_ok() -> Object {
    string_enum("Database", ["ok"], "The database answered.")
}

/// The queue backends' names (`QueueBackend::name`).
pub(crate) fn queue_backend() -> Object {
    string_enum(
        "QueueBackend",
        ["memory", "nats"],
        "The queue backend's name.",
    )
}

/// Every check passed.
#[derive(Serialize, ToSchema)]
pub(crate) struct Ready {
    status: ReadyStatus,
    checks: ReadyChecks,
}

/// Liveness
///
/// 200 while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "health",
    responses((status = 200, description = "The process runs", body = Health)),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: HealthStatus::Ok,
    })
}

/// Readiness
///
/// 200 when the database can be read and written, the queue backend answers, and the
/// pipeline can make progress (every actor answers, the workers run, the queue moves);
/// otherwise 503 naming what is not ready. The detail names the part, never raw error text
/// (that goes to the log).
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readiness",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "`unavailable`: not ready; `detail` names what is down", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let checks = readiness(&state).await.map_err(ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(Ready {
        status: ReadyStatus::Ready,
        checks,
    }))
}

/// What `/readyz` answers: the checks, or the detail of a 503.
async fn readiness(state: &AppState) -> Result<ReadyChecks, String> {
    let (database, queue, pipeline) = futures_util::future::join3(
        store::health::check(&state.db, &state.writer),
        state.backend.check(),
        state.pipeline.check(state.backend.as_ref()),
    )
    .await;
    let mut down = Vec::new();
    if let Err(problem) = &database {
        tracing::warn!(error = %problem.error, "not ready: database {}", problem.what);
        down.push(format!("database ({})", problem.what));
    }
    if let Err(e) = &queue {
        tracing::warn!(error = %e, "not ready: queue backend");
        down.push(format!("queue ({})", queue_problem(e)));
    }
    if !pipeline.down.is_empty() {
        tracing::warn!(down = ?pipeline.down, "not ready: pipeline");
        down.extend(pipeline.down);
    }
    if !down.is_empty() {
        return Err(format!("not ready: {}", down.join(", ")));
    }
    let workers = match pipeline.workers_alive {
        Some(alive) => format!("{alive} running"),
        None => "disabled".to_string(),
    };
    Ok(ReadyChecks {
        database: "ok",
        queue: state.backend.name(),
        workers,
    })
}

/// A queue error in a few words.
fn queue_problem(err: &QueueError) -> &'static str {
    match err {
        QueueError::Full { .. } => "full",
        QueueError::Refused(_) => "refusing events",
        QueueError::Closed => "closed",
        QueueError::Unavailable(_) => "unavailable",
    }
}

/// Prometheus metrics
///
/// The text exposition format. Keep this endpoint private (it is open, like /healthz).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")),
)]
// Its gauges are refreshed first.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    refresh_gauges(&state).await;
    let (text, content_type) = state.metrics.render();
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .body(text)
}

/// Reads what the gauges cannot compute themselves: the dead-letter count from the database
/// and the due deliveries (right whichever process wrote them) and readiness, as `/readyz` sees it.
async fn refresh_gauges(state: &AppState) {
    let (dead_letters, ready, due, webhooks) = futures_util::future::join4(
        store::dead_letters::count_pending(&state.db),
        readiness(state),
        store::delivery::count_due(&state.db),
        store::webhook_deliveries::count_pending(&state.db),
    )
    .await;
    match webhooks {
        Ok(n) => state.metrics.webhook_pending.store(n, Ordering::Relaxed),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count pending webhook deliveries for the metrics")
        }
    }
    match due {
        Ok(n) => state.metrics.delivery.due.store(n, Ordering::Relaxed),
        Err(e) => tracing::warn!(error = %e, "cannot count due messages for the metrics"),
    }
    match dead_letters {
        Ok(n) => state.metrics.dlq_size.store(n, Ordering::Relaxed),
        Err(e) => tracing::warn!(error = %e, "cannot count dead letters for the metrics"),
    }
    state.metrics.ready.store(ready.is_ok(), Ordering::Relaxed);
}

/// Refreshes the gauges every `period` for OTLP pushes, which no scrape precedes.
pub fn refresh_gauges_every(state: AppState, period: Duration) -> GaugeRefresh {
    let looping = state.clone();
    // On tokio's runtime rather than the System's local set: a runtime drops its tasks with
    // its context entered, so a query cut off there returns its connection (a local set
    // drops them after, where sqlx panics; in-process tests end that way).
    let task = tokio::spawn(async move {
        let mut tick = actix_web::rt::time::interval(period);
        loop {
            tick.tick().await;
            refresh_gauges(&looping).await;
        }
    });
    GaugeRefresh { task, state }
}

/// The OTLP gauge refresher; stopped by `serve` before the database pools close.
pub struct GaugeRefresh {
    task: tokio::task::JoinHandle<()>,
    state: AppState,
}

impl GaugeRefresh {
    /// Ends the loop (inside the runtime: a pooled connection it held is returned, not
    /// dropped after the runtime, where sqlx panics) and refreshes once more for the
    /// last push.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        refresh_gauges(&self.state).await;
    }
}
