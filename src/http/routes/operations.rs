//! Health, readiness and metrics.

use std::sync::atomic::Ordering;

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

/// Prometheus text exposition. The dead-letter gauge is read from the database first so
/// that it is right at every scrape, whichever process wrote the dead letters.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    match store::dead_letters::count_pending(&state.db).await {
        Ok(n) => state.metrics.dlq_size.store(n, Ordering::Relaxed),
        Err(e) => tracing::warn!(error = %e, "cannot count dead letters for /metrics"),
    }
    let (text, content_type) = state.metrics.render();
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .body(text)
}
