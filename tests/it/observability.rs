//! What an operator sees: metric values after known traffic, and readiness that names what
//! is down.

use crate::common;

use std::time::Duration;

use actix_web::http::StatusCode;
use common::{
    eventually, sample, spawn_api_only, spawn_app_with, spawn_on, Db, TestApp, TestDatabase,
};
use messaging_server::actors::queue::Close;
use messaging_server::startup::Hooks;
use serde_json::json;

async fn scrape(app: &TestApp) -> String {
    let response = app.client.get(app.url("/metrics")).send().await;
    let mut response = response.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    String::from_utf8(response.body().await.unwrap().to_vec()).unwrap()
}

#[actix_web::test]
async fn metrics_count_known_traffic() {
    let app = spawn_app_with(Db::Sqlite, |s| s.worker.concurrency = 3).await;
    for i in 0..3 {
        app.send_sms(&format!("m{i}")).await;
    }
    // A duplicate of the first, and one invalid request.
    app.post_sms("m0").await;
    let (status, _) = app
        .post_json("/api/messages/sms", &json!({"from": "nobody"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.drained().await;
    app.get("/api/conversations").await;
    // Unknown ids and paths must not mint label values: the pattern, or `unmatched`.
    app.get("/api/conversations/987654").await;
    app.get("/no/such/path/42").await;
    app.request(
        app.client.request(
            actix_web::http::Method::from_bytes(b"PROPFIND").unwrap(),
            app.url("/api/conversations"),
        ),
        None,
    )
    .await;

    let text = scrape(&app).await;
    for name in [
        "messaging_queue_enqueued_total",
        "messaging_queue_enqueue_rejected_total",
        "messaging_queue_dequeued_total",
        "messaging_queue_depth",
        "messaging_worker_processed_total",
        "messaging_worker_failed_total",
        "messaging_workers_active",
        "messaging_retries_total",
        "messaging_dlq_total",
        "messaging_dlq_size",
        "messaging_processing_latency_seconds",
        "messaging_provider_requests_total",
        "messaging_ready",
        "http_server_request_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} is exposed:\n{text}"
        );
    }
    assert_eq!(sample(&text, "messaging_queue_enqueued_total", ""), 4.0);
    assert_eq!(sample(&text, "messaging_queue_dequeued_total", ""), 4.0);
    assert_eq!(sample(&text, "messaging_queue_depth", ""), 0.0);
    assert_eq!(
        sample(
            &text,
            "messaging_worker_processed_total",
            "outcome=\"stored\""
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "messaging_worker_processed_total",
            "outcome=\"duplicate\""
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "messaging_processing_latency_seconds_count", ""),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "messaging_provider_requests_total",
            "outcome=\"sent\",provider=\"sms\""
        ),
        3.0
    );
    assert_eq!(sample(&text, "messaging_workers_active", ""), 3.0);
    assert_eq!(sample(&text, "messaging_dlq_size", ""), 0.0);
    assert_eq!(sample(&text, "messaging_ready", ""), 1.0);
    // OpenTelemetry semantic conventions; the histogram's _count is the request count.
    let requests = |method: &str, route: &str, status: u16| {
        sample(
            &text,
            "http_server_request_duration_seconds_count",
            &format!(
                "http_request_method=\"{method}\",http_response_status_code=\"{status}\",http_route=\"{route}\""
            ),
        )
    };
    assert_eq!(requests("POST", "/api/messages/sms", 202), 4.0);
    assert_eq!(requests("POST", "/api/messages/sms", 400), 1.0);
    assert_eq!(requests("GET", "/api/conversations", 200), 1.0);
    assert_eq!(requests("GET", "/api/conversations/{id}", 404), 1.0);
    assert_eq!(requests("GET", "unmatched", 404), 1.0);
    assert_eq!(requests("_OTHER", "/api/conversations", 405), 1.0);
    assert!(
        !text.contains("987654") && !text.contains("/no/such") && !text.contains("PROPFIND"),
        "raw paths and methods stay out of the labels:\n{text}"
    );
    assert!(
        !text.contains("http_server_requests_total"),
        "the request count is the histogram's _count"
    );
}

#[actix_web::test]
async fn backlog_and_dead_letter_gauges_are_right_at_every_scrape() {
    let app = spawn_api_only(|s| s.queue.capacity = 3).await;
    for i in 0..4 {
        app.post_sms(&format!("m{i}")).await;
    }
    let text = scrape(&app).await;
    assert_eq!(
        sample(&text, "messaging_queue_depth", ""),
        3.0,
        "the backlog waits for workers"
    );
    assert_eq!(
        sample(&text, "messaging_queue_enqueue_rejected_total", ""),
        1.0
    );
    assert_eq!(sample(&text, "messaging_workers_active", ""), 0.0);

    let failing = spawn_app_with(Db::Sqlite, |s| {
        s.providers.sms.mock_error_rate = 1.0;
        s.retry.max_attempts = 2;
    })
    .await;
    failing.post_sms("doomed").await;
    failing.drained().await;
    let text = scrape(&failing).await;
    assert_eq!(sample(&text, "messaging_dlq_size", ""), 1.0);
    assert_eq!(sample(&text, "messaging_dlq_total", ""), 1.0);
    assert_eq!(sample(&text, "messaging_retries_total", ""), 1.0);
    assert_eq!(
        sample(&text, "messaging_worker_failed_total", "kind=\"transient\""),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "messaging_provider_requests_total",
            "outcome=\"server_error\",provider=\"sms\""
        ),
        2.0
    );
    failing.post_empty("/api/dlq/replay").await;
    let text = scrape(&failing).await;
    assert_eq!(
        sample(&text, "messaging_dlq_size", ""),
        0.0,
        "replayed letters leave the gauge"
    );
}

#[actix_web::test]
async fn readiness_names_a_closed_queue() {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["workers"], "4 running");

    app.state.queue.send(Close).await.unwrap();
    let (status, problem) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        problem["detail"].as_str().unwrap().contains("queue"),
        "{problem}"
    );
    let (status, _) = app.post_sms("too late").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a closed queue accepts nothing"
    );
}

#[actix_web::test]
async fn readiness_names_an_unreachable_database() {
    // Needs a server whose connections can be cut; required in CI (see postgres_configured).
    if !common::postgres_configured() {
        return;
    }
    let database = TestDatabase::create(Db::Postgres).await;
    let app = spawn_on(
        database,
        |s| s.database.acquire_timeout = Duration::from_millis(500),
        Hooks::default(),
    )
    .await;
    let role = app.database.role.clone().unwrap();
    app.database
        .admin_execute(&format!(
            "ALTER ROLE {role} NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
        ))
        .await;
    app.until_unready("readyz reports the database", "database")
        .await;
    app.database
        .admin_execute(&format!("ALTER ROLE {role} LOGIN"))
        .await;
    eventually(Duration::from_secs(10), "readyz recovers", || async {
        app.get("/readyz").await.0 == StatusCode::OK
    })
    .await;
}
