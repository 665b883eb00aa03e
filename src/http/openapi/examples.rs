//! Examples for every operation's request body and main answers, as the media types'
//! `examples`: what documentation tools show and what clients (and Schemathesis' examples
//! phase) can send as they are. Each one validates against its schema (tests/it/openapi_tools.rs).

use serde_json::{json, Value};

pub(super) const KEY: &str = "3e1e155b5d991d2572e8448dfd785ad49f2418ba893f398a0b0d381c3c64807d";
const CUSTOMER: &str = "00000000-0000-0000-0000-000000000001";
pub(super) const AT: &str = "2024-11-01T14:00:00.120Z";
const PROBLEM: &str = "application/problem+json";
pub(super) const JSON: &str = "application/json";

pub fn add(doc: &mut Value) {
    requests(doc);
    sending(doc);
    reading(doc);
    dead_letters(doc);
    operations(doc);
    twilio(doc);
    super::webhook_examples::add(doc);
    super::address_examples::add(doc);
    super::audit_examples::add(doc);
}

/// Sets `examples` (name → summary and value) on an operation's request body or answer.
pub(super) fn set(
    doc: &mut Value,
    operation: &str,
    at: Where,
    media: &str,
    examples: &[(&str, &str, Value)],
) {
    let op = find(doc, operation);
    let content = match at {
        Where::Request => &mut op["requestBody"]["content"][media],
        Where::Response(status) => &mut op["responses"][status.to_string()]["content"][media],
    };
    assert!(
        content.is_object(),
        "{operation}: no {media} content at {at:?} for an example"
    );
    let examples: serde_json::Map<String, Value> = examples
        .iter()
        .map(|(name, summary, value)| {
            (
                name.to_string(),
                json!({"summary": summary, "value": value}),
            )
        })
        .collect();
    content["examples"] = Value::Object(examples);
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Where {
    Request,
    Response(u16),
}

/// The one JSON example of each `(operation, status, example)` answer: how most
/// operations' answers are given theirs.
pub(super) fn set_answers<'a>(
    doc: &mut Value,
    answers: impl IntoIterator<Item = (&'a str, u16, (&'a str, &'a str, Value))>,
) {
    for (operation, status, example) in answers {
        set(doc, operation, Where::Response(status), JSON, &[example]);
    }
}

fn find<'a>(doc: &'a mut Value, operation_id: &str) -> &'a mut Value {
    doc["paths"]
        .as_object_mut()
        .expect("paths")
        .values_mut()
        .flat_map(|item| item.as_object_mut().expect("a path item").values_mut())
        .find(|op| op["operationId"] == operation_id)
        .unwrap_or_else(|| panic!("no operation {operation_id}"))
}

fn sms(kind: &str) -> Value {
    let mut body = json!({
        "from": "+12016661234",
        "to": "+18045551234",
        "type": kind,
        "body": "Hello! This is a test SMS message.",
        "timestamp": "2024-11-01T14:00:00Z",
    });
    if kind == "mms" {
        body["body"] = json!("Hello! This is a test MMS message.");
        body["attachments"] = json!(["https://example.com/image.jpg"]);
    }
    body
}

fn email() -> Value {
    json!({
        "from": "user@usehatchapp.com",
        "to": "contact@gmail.com",
        "subject": "Hello",
        "body": "<html><body>Hello! This is a test email message with <b>HTML</b> formatting.</body></html>",
        "attachments": ["https://example.com/document.pdf"],
        "timestamp": "2024-11-01T14:00:00Z",
    })
}

fn requests(doc: &mut Value) {
    let with_metadata = {
        let mut body = sms("sms");
        body["customer_id"] = json!(CUSTOMER);
        body["metadata"] = json!({"campaign": "welcome", "tags": ["new"]});
        body
    };
    set(
        doc,
        "sendSms",
        Where::Request,
        JSON,
        &[
            ("sms", "An SMS", sms("sms")),
            ("mms", "An MMS (1 to 10 attachments)", sms("mms")),
            (
                "metadata",
                "With a customer and metadata kept with the message",
                with_metadata,
            ),
        ],
    );
    set(
        doc,
        "sendEmail",
        Where::Request,
        JSON,
        &[("email", "An email", email())],
    );
    let inbound = |kind: &str, id: &str| {
        let mut body = sms(kind);
        body["from"] = json!("+18045551234");
        body["to"] = json!("+12016661234");
        body["messaging_provider_id"] = json!(id);
        body
    };
    set(
        doc,
        "receiveSms",
        Where::Request,
        JSON,
        &[
            ("sms", "An inbound SMS", inbound("sms", "message-1")),
            ("mms", "An inbound MMS", inbound("mms", "message-2")),
        ],
    );
    let mut inbound_email = email();
    inbound_email["from"] = json!("contact@gmail.com");
    inbound_email["to"] = json!("user@usehatchapp.com");
    inbound_email["xillio_id"] = json!("message-3");
    set(
        doc,
        "receiveEmail",
        Where::Request,
        JSON,
        &[("email", "An inbound email", inbound_email)],
    );
}

fn problem(slug: &str, title: &str, status: u16, detail: &str) -> Value {
    json!({
        "type": format!("urn:messaging-server:problem:{slug}"),
        "title": title,
        "status": status,
        "detail": detail,
    })
}

fn sending(doc: &mut Value) {
    let accepted = json!({
        "status": "accepted",
        "idempotency_key": KEY,
        "event_id": "dfb0235c-11af-4fa5-bb64-1c9faf8d4b39",
        "status_url": format!("/api/messages/{KEY}"),
    });
    let mut invalid = problem(
        "validation-failed",
        "Invalid request",
        400,
        "the request has invalid fields",
    );
    invalid["errors"] = json!([
        {"field": "from", "message": "must be an E.164 phone number: + followed by 8 to 15 digits, the first not 0"},
        {"field": "body", "message": "must not be empty"},
    ]);
    let reused = problem(
        "idempotency-key-reused",
        "Idempotency key reused",
        422,
        "this Idempotency-Key was already used for a different request; use a new key for a new message",
    );
    for operation in ["sendSms", "sendEmail", "receiveSms", "receiveEmail"] {
        let answers = [
            (202, JSON, ("accepted", "Queued", accepted.clone())),
            (400, PROBLEM, ("invalid", "Invalid fields", invalid.clone())),
            (422, PROBLEM, ("reused", "A key reused", reused.clone())),
        ];
        for (status, media, example) in answers {
            set(doc, operation, Where::Response(status), media, &[example]);
        }
    }
    let in_progress = problem(
        "idempotency-key-in-progress",
        "Idempotency key in progress",
        409,
        "an earlier request with this Idempotency-Key is still being accepted; retry shortly for its answer",
    );
    for operation in ["sendSms", "sendEmail"] {
        set(
            doc,
            operation,
            Where::Response(409),
            PROBLEM,
            &[(
                "in_progress",
                "The key's first request not answered yet",
                in_progress.clone(),
            )],
        );
    }
    let status = |status: &str, provider_id: Value| {
        json!({
            "status": status,
            "idempotency_key": KEY,
            "attempts": 1,
            "last_error": null,
            "message_id": 1,
            "conversation_id": 1,
            "provider_message_id": provider_id,
            "updated_at": AT,
        })
    };
    let mut dead = status("dead_lettered", Value::Null);
    dead["attempts"] = json!(2);
    dead["error_code"] = json!("provider_unavailable");
    dead["last_error"] = json!("The provider was unavailable.");
    set(
        doc,
        "getMessageStatus",
        Where::Response(200),
        JSON,
        &[
            (
                "sent",
                "Sent by the provider",
                status("sent", json!("mock-7d1c0a0e")),
            ),
            ("dead_lettered", "In the dead-letter queue", dead),
        ],
    );
    not_found(doc, "getMessageStatus", "message with this idempotency key");
}

pub(super) fn not_found(doc: &mut Value, operation: &str, what: &str) {
    let value = problem("not-found", "Not found", 404, &format!("{what} not found"));
    set(
        doc,
        operation,
        Where::Response(404),
        PROBLEM,
        &[("not_found", "Not found", value)],
    );
}

pub(super) fn page(items: Vec<Value>) -> Value {
    let total = items.len();
    json!({"items": items, "meta": {"page": 1, "page_size": 50, "total": total}})
}

fn reading(doc: &mut Value) {
    let conversation = json!({
        "id": 1,
        "channel": "sms",
        "participants": ["+12016661234", "+18045551234"],
        "message_count": 2,
        "last_message_at": "2024-11-01T14:05:00Z",
        "created_at": AT,
    });
    let message = |id: i64, direction: &str, status: &str, provider_id: &str| {
        let (from, to) = match direction {
            "outbound" => ("+12016661234", "+18045551234"),
            _ => ("+18045551234", "+12016661234"),
        };
        json!({
            "id": id,
            "conversation_id": 1,
            "direction": direction,
            "channel": "sms",
            "from": from,
            "to": to,
            "subject": null,
            "body": "Hello! This is a test SMS message.",
            "attachments": [],
            "metadata": null,
            "sent_at": "2024-11-01T14:00:00Z",
            "status": status,
            "provider_message_id": provider_id,
            "idempotency_key": KEY,
            "created_at": AT,
        })
    };
    let messages = vec![
        message(1, "outbound", "sent", "mock-7d1c0a0e"),
        message(2, "inbound", "received", "message-1"),
    ];
    let one = |name: &'static str, summary: &'static str, value: Value| [(name, summary, value)];
    let answers = [
        (
            "listConversations",
            one(
                "page",
                "A page of conversations",
                page(vec![conversation.clone()]),
            ),
        ),
        (
            "getConversation",
            one("conversation", "A conversation", conversation),
        ),
        (
            "listConversationMessages",
            one("page", "A page of messages, oldest first", page(messages)),
        ),
    ];
    for (operation, examples) in answers {
        set(doc, operation, Where::Response(200), JSON, &examples);
    }
    for operation in ["getConversation", "listConversationMessages"] {
        not_found(doc, operation, "conversation 1");
    }
    let stats = json!({
        "sampled_at": AT,
        "queue_backend": "memory",
        "queue_depth": 0,
        "dlq_size": 0,
        "workers_active": 4,
        "delivery_due": 0,
        "delivery_unsent": 0,
        "providers": [
            {"provider": "sms", "circuit": "closed", "in_flight": 0},
            {"provider": "email", "circuit": "closed", "in_flight": 0},
        ],
        "ready": true,
        "not_ready": null,
        "totals": {"accepted": 2, "rejected": 0, "stored": 2, "duplicates": 0, "sent": 1,
                   "failed": 0, "retries": 0, "dead_lettered": 0},
    });
    set(
        doc,
        "getStats",
        Where::Response(200),
        JSON,
        &[("stats", "A sample", stats)],
    );
}

fn dead_letters(doc: &mut Value) {
    let letter = json!({
        "id": 1,
        "event": {
            "schema_version": 1,
            "event_id": "dfb0235c-11af-4fa5-bb64-1c9faf8d4b39",
            "idempotency_key": KEY,
            "customer_id": CUSTOMER,
            "direction": "outbound",
            "channel": "sms",
            "from": "+12016661234",
            "to": "+18045551234",
            "body": "this one will fail",
            "attachments": [],
            "sent_at": "2024-11-01T15:00:00Z",
            "accepted_at": AT,
            "attempt": 2,
        },
        "idempotency_key": KEY,
        "attempts": 2,
        "first_attempt_at": AT,
        "last_attempt_at": "2024-11-01T14:00:00.220Z",
        "last_error": "provider answered 500: mock provider error",
        "error_kind": "transient",
        "dead_at": "2024-11-01T14:00:00.220Z",
        "replayed_at": null,
    });
    let answers = [
        (
            "listDeadLetters",
            200,
            ("page", "A page of dead letters", page(vec![letter.clone()])),
        ),
        (
            "getDeadLetter",
            200,
            ("dead_letter", "A dead letter", letter),
        ),
        (
            "replayDeadLetter",
            202,
            (
                "replayed",
                "Queued again",
                json!({"status": "replayed", "id": 1}),
            ),
        ),
        (
            "replayAllDeadLetters",
            202,
            (
                "replayed",
                "Queued again",
                json!({"status": "replayed", "replayed": 3}),
            ),
        ),
        (
            "deleteDeadLetters",
            200,
            ("deleted", "Deleted", json!({"deleted": 3})),
        ),
    ];
    set_answers(doc, answers);
    for operation in ["getDeadLetter", "replayDeadLetter", "deleteDeadLetter"] {
        not_found(doc, operation, "dead letter 1");
    }
    let replayed = problem(
        "conflict",
        "Conflict",
        409,
        "dead letter 1 was already replayed",
    );
    set(
        doc,
        "replayDeadLetter",
        Where::Response(409),
        PROBLEM,
        &[("replayed", "Already replayed", replayed)],
    );
}

fn operations(doc: &mut Value) {
    set(
        doc,
        "health",
        Where::Response(200),
        JSON,
        &[("ok", "Up", json!({"status": "ok"}))],
    );
    let ready = json!({
        "status": "ready",
        "checks": {"database": "ok", "queue": "memory", "workers": "4 running"},
    });
    set(
        doc,
        "readiness",
        Where::Response(200),
        JSON,
        &[("ready", "Ready", ready)],
    );
    let down = problem(
        "unavailable",
        "Service unavailable",
        503,
        "not ready: database (unreachable)",
    );
    set(
        doc,
        "readiness",
        Where::Response(503),
        PROBLEM,
        &[("down", "The database is down", down)],
    );
    let metrics = "# HELP messaging_queue_enqueued_total Events accepted into the queue\n\
                   # TYPE messaging_queue_enqueued_total counter\n\
                   messaging_queue_enqueued_total 2\n";
    set(
        doc,
        "metrics",
        Where::Response(200),
        "text/plain",
        &[("metrics", "A few lines", json!(metrics))],
    );
    let document = json!({"openapi": "3.1.0", "info": {"title": "messaging-server", "version": "0.1.0"}, "paths": {}});
    set(
        doc,
        "openapi",
        Where::Response(200),
        JSON,
        &[("document", "The start of this document", document)],
    );
}

/// Twilio's webhooks, as Twilio posts them (its parameters beyond the documented ones
/// omitted) and the empty TwiML they are answered with.
fn twilio(doc: &mut Value) {
    const FORM: &str = "application/x-www-form-urlencoded";
    let twiml = [("twiml", "An empty TwiML response", json!("<Response/>"))];
    set(
        doc,
        "receiveTwilioSms",
        Where::Request,
        FORM,
        &[
            (
                "sms",
                "An inbound SMS",
                json!({"MessageSid": "SM0123456789abcdef0123456789abcdef", "From": "+18045551234",
                       "To": "+12016661234", "Body": "Hello back", "NumMedia": "0"}),
            ),
            (
                "mms",
                "An inbound MMS",
                json!({"MessageSid": "MM0123456789abcdef0123456789abcdef", "From": "+18045551234",
                       "To": "+12016661234", "Body": "A picture", "NumMedia": "1",
                       "MediaUrl0": "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages/MM0123456789abcdef0123456789abcdef/Media/ME0123456789abcdef0123456789abcdef"}),
            ),
        ],
    );
    set(
        doc,
        "receiveTwilioStatus",
        Where::Request,
        FORM,
        &[
            (
                "delivered",
                "Delivered",
                json!({"MessageSid": "SM0123456789abcdef0123456789abcdef", "MessageStatus": "delivered"}),
            ),
            (
                "undelivered",
                "Not delivered, with Twilio's error code",
                json!({"MessageSid": "SM0123456789abcdef0123456789abcdef", "MessageStatus": "undelivered", "ErrorCode": "30003"}),
            ),
        ],
    );
    for operation in ["receiveTwilioSms", "receiveTwilioStatus"] {
        set(doc, operation, Where::Response(200), "text/xml", &twiml);
    }
}
