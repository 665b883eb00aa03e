//! Health, readiness and metrics.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::http::{ApiError, AppState};
use crate::store;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// 200 when the database and queue answer and the workers run; otherwise 503 naming what
/// is not ready.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let database = store::ping(&state.db).await;
    let queue = state.backend.check().await;
    let workers = &state.settings.worker;
    let running = state.metrics.workers_active.load(Ordering::Relaxed).max(0) as usize;
    let workers_ok = !workers.enabled || running >= workers.concurrency;

    let mut down = Vec::new();
    if let Err(e) = &database {
        down.push(format!("database ({e})"));
    }
    if let Err(e) = &queue {
        down.push(format!("queue ({e})"));
    }
    if !workers_ok {
        down.push(format!(
            "workers ({running} of {} running)",
            workers.concurrency
        ));
    }
    if !down.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "not ready: {}",
            down.join(", ")
        )));
    }
    let worker_status = if workers.enabled {
        format!("{running} running")
    } else {
        "disabled".to_string()
    };
    Ok(HttpResponse::Ok().json(json!({
        "status": "ready",
        "checks": {
            "database": "ok",
            "queue": state.backend.name(),
            "workers": worker_status,
        }
    })))
}

/// Prometheus text exposition, its gauges refreshed first.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    refresh_gauges(state.clone()).await;
    let (text, content_type) = state.metrics.render();
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .body(text)
}

/// Reads what the gauges cannot compute themselves: the dead-letter count from the database
/// (right whichever process wrote the dead letters) and readiness, as `/readyz` sees it.
async fn refresh_gauges(state: web::Data<AppState>) {
    let (dead_letters, ready) = futures_util::future::join(
        store::dead_letters::count_pending(&state.db),
        readyz(state.clone()),
    )
    .await;
    match dead_letters {
        Ok(n) => state.metrics.dlq_size.store(n, Ordering::Relaxed),
        Err(e) => tracing::warn!(error = %e, "cannot count dead letters for the metrics"),
    }
    state.metrics.ready.store(ready.is_ok(), Ordering::Relaxed);
}

/// Refreshes the gauges every `period` for OTLP pushes, which no scrape precedes.
pub fn refresh_gauges_every(state: AppState, period: Duration) {
    let state = web::Data::new(state);
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(period);
        loop {
            tick.tick().await;
            refresh_gauges(state.clone()).await;
        }
    });
}
