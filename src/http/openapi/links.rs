//! OpenAPI links: where values in an answer are the parameters of another operation, so a
//! client (or a stateful tester such as Schemathesis) can follow them: a 202 to the
//! message's status, a list to its items.

use serde_json::{json, Value};

pub fn add(doc: &mut Value) {
    let status = json!({
        "status": {
            "operationId": "getMessageStatus",
            "parameters": { "idempotency_key": "$response.body#/idempotency_key" },
            "description": "The status resource of the accepted message (also in `Location`)",
        }
    });
    for path in [
        "/api/messages/sms",
        "/api/messages/email",
        "/api/webhooks/sms",
        "/api/webhooks/email",
    ] {
        link(doc, path, "post", "202", status.clone());
    }
    let first = "$response.body#/items/0/id";
    let each = |operations: &[&str]| -> Value {
        operations
            .iter()
            .map(|op| {
                (
                    op.to_string(),
                    json!({ "operationId": op, "parameters": { "id": first } }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    link(
        doc,
        "/api/dlq",
        "get",
        "200",
        each(&["getDeadLetter", "replayDeadLetter", "deleteDeadLetter"]),
    );
    link(
        doc,
        "/api/conversations",
        "get",
        "200",
        each(&["getConversation", "listConversationMessages"]),
    );
}

fn link(doc: &mut Value, path: &str, method: &str, status: &str, links: Value) {
    let pointer = format!(
        "/paths/{}/{method}/responses/{status}",
        path.replace('/', "~1")
    );
    let response = doc
        .pointer_mut(&pointer)
        .unwrap_or_else(|| panic!("{method} {path} documents a {status}"));
    response["links"] = links;
}
