//! Handler contract: a valid request answers 202 with exactly one event in the queue; an
//! invalid one answers 4xx with a problem and enqueues nothing. Workers are disabled so the
//! queue keeps what the handlers put in it.

use crate::common;

use actix_web::http::StatusCode;
use common::{sms, spawn_api_only, TestApp};
use messaging_server::domain::{Channel, Direction};
use serde_json::{json, Value};

async fn api_only() -> TestApp {
    spawn_api_only(|_| {}).await
}

fn queued(app: &TestApp) -> usize {
    app.queued_events().len()
}

#[actix_web::test]
async fn each_valid_request_kind_enqueues_exactly_one_event() {
    let app = api_only().await;
    let cases = [
        (
            "/api/messages/sms",
            json!({"from": "+1 (201) 666-1234", "to": "+18045551234", "type": "sms",
                   "body": "text message", "attachments": null, "timestamp": "2024-11-01T14:00:00Z"}),
            Channel::Sms,
            Direction::Outbound,
        ),
        (
            "/api/messages/sms",
            json!({"from": "+12016661234", "to": "+18045551234", "type": "mms",
                   "body": "a picture", "attachments": ["https://example.com/a.png"],
                   "timestamp": "2024-11-01T14:00:00Z"}),
            Channel::Mms,
            Direction::Outbound,
        ),
        (
            "/api/messages/email",
            json!({"from": "User@UseHatchApp.com", "to": "contact@gmail.com", "subject": "hi",
                   "body": "<p>html allowed</p>", "attachments": ["https://example.com/a.pdf"],
                   "timestamp": "2024-11-01T14:00:00Z"}),
            Channel::Email,
            Direction::Outbound,
        ),
        (
            "/api/webhooks/sms",
            json!({"from": "+18045551234", "to": "+12016661234", "type": "sms",
                   "messaging_provider_id": "message-1", "body": "reply",
                   "attachments": null, "timestamp": "2024-11-01T14:00:00Z"}),
            Channel::Sms,
            Direction::Inbound,
        ),
        (
            "/api/webhooks/email",
            json!({"from": "contact@gmail.com", "to": "user@usehatchapp.com",
                   "xillio_id": "message-2", "body": "<p>reply</p>", "attachments": [],
                   "timestamp": "2024-11-01T14:00:00Z"}),
            Channel::Email,
            Direction::Inbound,
        ),
    ];
    for (i, (path, body, channel, direction)) in cases.into_iter().enumerate() {
        let (status, answer) = app.post_json(path, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{path}: {answer}");
        assert_eq!(answer["status"], "accepted");
        let events = app.queued_events();
        assert_eq!(events.len(), i + 1, "{path}: one more event in the queue");
        let event = events
            .iter()
            .find(|e| e.event_id.to_string() == answer["event_id"])
            .expect("the answered event is the queued one");
        assert_eq!(event.idempotency_key.as_str(), answer["idempotency_key"]);
        assert_eq!(event.channel, channel);
        assert_eq!(event.direction, direction);
        assert_eq!(event.schema_version, 1);
        assert_eq!(event.attempt, 0);
    }
    let events = app.queued_events();
    assert!(
        events.iter().any(|e| e.from == "+12016661234"),
        "phone numbers are normalized"
    );
    assert!(
        events.iter().any(|e| e.from == "user@usehatchapp.com"),
        "emails are lower-cased"
    );
}

#[actix_web::test]
async fn invalid_requests_get_a_problem_and_enqueue_nothing() {
    let app = api_only().await;
    let unknown_customer = uuid::Uuid::new_v4().to_string();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/api/messages/sms", json!({}), "from"),
        (
            "/api/messages/sms",
            sms("12345", "+18045551234", "x"),
            "from",
        ),
        (
            "/api/messages/sms",
            sms("+12016661234", "+0804555", "x"),
            "to",
        ),
        (
            "/api/messages/sms",
            sms("+12016661234", "+18045551234", "   "),
            "body",
        ),
        (
            "/api/messages/sms",
            sms("+12016661234", "+18045551234", &"x".repeat(1601)),
            "body",
        ),
        (
            "/api/messages/sms",
            json!({"from": "+12016661234", "to": "+18045551234", "type": "mms", "body": "x", "attachments": []}),
            "attachments",
        ),
        (
            "/api/messages/sms",
            json!({"from": "+12016661234", "to": "+18045551234", "type": "sms", "body": "x",
                   "attachments": ["https://example.com/a.png"]}),
            "attachments",
        ),
        (
            "/api/messages/sms",
            json!({"from": "+12016661234", "to": "+18045551234", "type": "fax", "body": "x"}),
            "type",
        ),
        (
            "/api/messages/sms",
            json!({"from": "+12016661234", "to": "+18045551234", "type": "sms", "body": "x", "timestamp": "yesterday"}),
            "timestamp",
        ),
        (
            "/api/messages/sms",
            json!({"from": "+12016661234", "to": "+18045551234", "type": "sms", "body": "x", "customer_id": unknown_customer}),
            "customer_id",
        ),
        (
            "/api/messages/email",
            json!({"from": "not-an-email", "to": "contact@gmail.com", "body": "x"}),
            "from",
        ),
        (
            "/api/messages/email",
            json!({"from": "a@b.com", "to": "contact@gmail.com", "body": "x", "attachments": ["ftp://x/y"]}),
            "attachments[0]",
        ),
        (
            "/api/webhooks/sms",
            json!({"from": "+18045551234", "to": "+12016661234", "type": "sms", "body": "x"}),
            "messaging_provider_id",
        ),
        (
            "/api/webhooks/email",
            json!({"from": "contact@gmail.com", "to": "user@usehatchapp.com", "body": "x"}),
            "xillio_id",
        ),
    ];
    for (path, body, field) in cases {
        let (status, problem) = app.post_json(path, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {problem}");
        assert_eq!(problem["status"], 400);
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .expect("validation problems list their errors")
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&field),
            "{path} {body}: expected an error on {field}, got {fields:?}"
        );
        assert_eq!(queued(&app), 0, "{path} {body}: nothing enqueued");
    }
}

#[actix_web::test]
async fn every_error_of_a_request_is_reported_at_once() {
    let app = api_only().await;
    let (status, problem) = app
        .post_json(
            "/api/messages/sms",
            &json!({"from": "x", "to": "y", "type": "sms", "body": ""}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["from", "to", "body"]);
}

#[actix_web::test]
async fn transport_errors_are_problems_and_enqueue_nothing() {
    let app = spawn_api_only(|s| s.server.body_limit = 1024).await;
    let url = app.url("/api/messages/sms");
    let valid = sms("+12016661234", "+18045551234", "hello");

    // Malformed JSON → 400
    let request = app
        .client
        .post(&url)
        .bearer_auth(&app.admin_key)
        .insert_header(("Content-Type", "application/json"));
    let sent = request.send_body("{\"from\": ").await.unwrap();
    assert_eq!(sent.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        sent.headers().get("content-type").unwrap(),
        "application/problem+json"
    );

    // No JSON content type → 415
    let sent = app
        .client
        .post(&url)
        .bearer_auth(&app.admin_key)
        .insert_header(("Content-Type", "text/plain"))
        .send_body(valid.to_string())
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Over the body limit → 413
    let big = sms("+12016661234", "+18045551234", &"x".repeat(2000));
    let (status, problem) = app.post_json("/api/messages/sms", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");

    // Accept admits no JSON → 406
    let request = app.client.post(&url).insert_header(("Accept", "text/html"));
    let (status, _) = app.request(request, Some(&valid)).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);

    // Wrong method → 405, unknown route → 404, both as problems
    let (status, problem) = app.request(app.client.put(&url), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(problem["status"], 405);
    let (status, problem) = app.get("/api/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["status"], 404);

    // A bad Idempotency-Key header → 400
    let long_key = "k".repeat(256);
    let (status, problem) = app
        .post_json_with_key("/api/messages/sms", &long_key, &valid)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");

    assert_eq!(queued(&app), 0, "no 4xx enqueues anything");
}

#[actix_web::test]
async fn idempotency_keys_are_stable_and_scoped() {
    let app = api_only().await;
    let body = sms("+12016661234", "+18045551234", "hello");

    let (_, first) = app.post_json("/api/messages/sms", &body).await;
    let (_, again) = app.post_json("/api/messages/sms", &body).await;
    assert_eq!(
        first["idempotency_key"], again["idempotency_key"],
        "derived keys are deterministic"
    );
    assert_ne!(first["event_id"], again["event_id"]);

    let mut later = body.clone();
    later["body"] = json!("another text");
    let (_, other) = app.post_json("/api/messages/sms", &later).await;
    assert_ne!(first["idempotency_key"], other["idempotency_key"]);

    let (_, a) = app
        .post_json_with_key("/api/messages/sms", "order-42", &body)
        .await;
    let (_, b) = app
        .post_json_with_key("/api/messages/sms", "order-42", &body)
        .await;
    assert_eq!(
        a["idempotency_key"], b["idempotency_key"],
        "the header decides the key"
    );
    let (status, _) = app
        .post_json_with_key("/api/messages/sms", "order-42", &later)
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the key of another request"
    );
    let email = json!({"from": "a@b.com", "to": "c@d.com", "body": "x"});
    let (_, c) = app
        .post_json_with_key("/api/messages/email", "order-42", &email)
        .await;
    assert_ne!(
        a["idempotency_key"], c["idempotency_key"],
        "keys are scoped to the endpoint"
    );

    let webhook = json!({"from": "+18045551234", "to": "+12016661234", "type": "sms",
                         "messaging_provider_id": "p-7", "body": "hi"});
    let (_, w1) = app.post_json("/api/webhooks/sms", &webhook).await;
    let (status, w2) = app.post_json("/api/webhooks/sms", &webhook).await;
    assert_eq!(status, StatusCode::ACCEPTED, "a redelivery is a repeat");
    assert_eq!(
        w1["idempotency_key"], w2["idempotency_key"],
        "webhooks are keyed by provider id"
    );
    // The same provider id with other content is refused at once: accepted, it could only
    // become a dead letter (any holder of a webhook key could fill the DLQ that way).
    for change in [
        json!({"body": "other"}),
        json!({"timestamp": "2024-11-02T00:00:00Z"}),
    ] {
        let mut other = webhook.clone();
        for (field, value) in change.as_object().unwrap() {
            other[field] = value.clone();
        }
        let (status, problem) = app.post_json("/api/webhooks/sms", &other).await;
        assert_eq!(status, StatusCode::CONFLICT, "{change}: {problem}");
        assert_eq!(problem["type"], "urn:messaging-server:problem:conflict");
    }
}

#[actix_web::test]
async fn a_webhook_repeating_a_provider_id_with_other_content_is_a_conflict_not_a_dead_letter() {
    for db in common::databases() {
        let app = common::spawn_app(db).await;
        let email =
            json!({"from": "a@b.com", "to": "c@example.com", "xillio_id": "x-1", "body": "hi"});
        let (status, _) = app.post_json("/api/webhooks/email", &email).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        app.drained().await;
        let (status, _) = app.post_json("/api/webhooks/email", &email).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{db:?}: a redelivery");
        let mut other = email.clone();
        other["body"] = json!("changed after it was stored");
        for _ in 0..20 {
            let (status, _) = app.post_json("/api/webhooks/email", &other).await;
            assert_eq!(status, StatusCode::CONFLICT, "{db:?}");
        }
        app.drained().await;
        assert_eq!(app.scalar("SELECT COUNT(*) FROM messages").await, 1);
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM dead_letters").await,
            0,
            "{db:?}: no dead letter for any of it"
        );
    }
}

#[actix_web::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let app = spawn_api_only(|s| s.queue.capacity = 2).await;
    for i in 0..2 {
        app.send_sms(&format!("m{i}")).await;
    }
    let response = app
        .client
        .post(app.url("/api/messages/sms"))
        .bearer_auth(&app.admin_key)
        .send_json(&sms("+12016661234", "+18045551234", "one too many"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    assert_eq!(queued(&app), 2);
}

#[actix_web::test]
async fn health_and_readiness() {
    let app = api_only().await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["workers"], "disabled");
}

/// PostgreSQL refuses NUL in text, SQLite stores it: control characters in an endpoint's
/// fields or an audit filter are a 400 on both, never a 500 on one (found by schemathesis).
#[actix_web::test]
async fn control_characters_in_endpoints_and_audit_filters_are_refused_on_both_databases() {
    for db in common::databases() {
        let app = common::spawn_app(db).await;
        let url = "https://hooks.example.com/messaging";
        for (body, field) in [
            (json!({"url": url, "description": "a\u{0}b"}), "description"),
            (
                json!({"url": url, "description": "bell\u{7}"}),
                "description",
            ),
            (json!({"url": "https://hooks.example.com/a\u{0}b"}), "url"),
            (json!({"url": "https://hooks.example.com/\tb"}), "url"),
        ] {
            let (status, problem) = app.post_json("/api/webhook-endpoints", &body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{db:?} {body}: {problem}");
            assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        }
        let body = json!({"url": url, "description": "line one\nline two\ttabbed"});
        let created = common::receiver::create_endpoint(&app, &body).await;
        let id = created["id"].as_str().unwrap();
        let change = app
            .client
            .patch(app.url(&format!("/api/webhook-endpoints/{id}")));
        let (status, problem) = app
            .request(change, Some(&json!({"description": "\u{0}"})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db:?}: {problem}");

        for filter in ["actor=key%3A%00", "target=dead_letter%3A%01"] {
            let (status, problem) = app.get(&format!("/api/audit?{filter}")).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{db:?} {filter}: {problem}"
            );
            assert_eq!(
                problem["type"], "urn:messaging-server:problem:invalid-query",
                "{problem}"
            );
        }
        let (status, _) = app.get("/api/audit?actor=key%3Amsk_x").await;
        assert_eq!(status, StatusCode::OK);
    }
}
