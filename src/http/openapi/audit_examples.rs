//! Examples of the audit log (see [`super::examples`]).

use serde_json::json;

use super::examples::{page, set, Where, AT, JSON};

pub fn add(doc: &mut serde_json::Value) {
    let entry = json!({
        "id": 7,
        "at": AT,
        "actor": "key:msk_1a2b3c4d",
        "customer_id": null,
        "action": "dead_letter.delete",
        "target": "dead_letter:42",
        "request_id": "5f0c6b1e9a7d4c2b8e3f1a0d6c9b7e24",
        "detail": null,
    });
    set(
        doc,
        "listAuditEntries",
        Where::Response(200),
        JSON,
        &[(
            "page",
            "An operator deleted a dead letter",
            page(vec![entry]),
        )],
    );
}
