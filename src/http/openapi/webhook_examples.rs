//! Examples of the webhook endpoint operations (see [`super::examples`]).

use serde_json::{json, Value};

use super::examples::{not_found, page, set, set_answers, Where, AT, JSON};

const ID: &str = "6f1c2b9e-3c1a-4a55-9d0e-2f0b7f4e8a10";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn endpoint() -> Value {
    json!({
        "id": ID,
        "customer_id": "00000000-0000-0000-0000-000000000001",
        "url": "https://example.com/hooks/messaging",
        "description": "Replies and delivery failures",
        "events": ["message.received", "message.failed"],
        "enabled": true,
        "disabled_reason": null,
        "failing_since": null,
        "created_at": AT,
        "updated_at": AT,
    })
}

fn with_secret() -> Value {
    let mut e = endpoint();
    e["secret"] = json!(SECRET);
    e
}

pub fn add(doc: &mut Value) {
    set(
        doc,
        "createWebhookEndpoint",
        Where::Request,
        JSON,
        &[
            (
                "some",
                "Two event types",
                json!({
                    "url": "https://example.com/hooks/messaging",
                    "events": ["message.received", "message.failed"],
                    "description": "Replies and delivery failures",
                }),
            ),
            (
                "all",
                "Every event type",
                json!({"url": "https://example.com/hooks/all"}),
            ),
        ],
    );
    set(
        doc,
        "updateWebhookEndpoint",
        Where::Request,
        JSON,
        &[
            ("disable", "Disable it", json!({"enabled": false})),
            (
                "events",
                "Change its event types",
                json!({"events": ["message.sent", "message.delivered"]}),
            ),
        ],
    );
    let attempt = json!({
        "id": 7,
        "webhook_id": "msg_42",
        "event_type": "message.received",
        "attempted_at": AT,
        "status_code": 503,
        "latency_ms": 48,
        "response": "Service Unavailable",
        "error": "the endpoint answered 503",
    });
    let answers = [
        (
            "createWebhookEndpoint",
            201,
            ("created", "Registered", with_secret()),
        ),
        (
            "listWebhookEndpoints",
            200,
            ("page", "A page of endpoints", page(vec![endpoint()])),
        ),
        (
            "getWebhookEndpoint",
            200,
            ("endpoint", "An endpoint", endpoint()),
        ),
        (
            "updateWebhookEndpoint",
            200,
            ("endpoint", "As changed", endpoint()),
        ),
        (
            "rotateWebhookEndpointSecret",
            200,
            ("rotated", "Its new secret", with_secret()),
        ),
        (
            "listWebhookAttempts",
            200,
            ("page", "A page of attempts", page(vec![attempt])),
        ),
        (
            "replayWebhookDeliveries",
            202,
            ("replayed", "Due again", json!({"replayed": 3})),
        ),
    ];
    set_answers(doc, answers);
    for operation in [
        "getWebhookEndpoint",
        "updateWebhookEndpoint",
        "deleteWebhookEndpoint",
        "rotateWebhookEndpointSecret",
        "listWebhookAttempts",
        "replayWebhookDeliveries",
    ] {
        not_found(doc, operation, &format!("webhook endpoint {ID}"));
    }
}
