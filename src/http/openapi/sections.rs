//! The document's sections (OpenAPI `tags`): each operation is put in one by its path, so
//! a handler's annotation does not name its section and a new route cannot miss one.

use serde_json::{json, Value};

struct Section {
    name: &'static str,
    description: &'static str,
    /// The paths it holds: a path is in the first section one of these prefixes matches.
    prefixes: &'static [&'static str],
}

const SECTIONS: [Section; 8] = [
    Section {
        name: "messages",
        description: "Send messages",
        prefixes: &["/api/messages/"],
    },
    Section {
        name: "webhooks",
        description: "Receive messages from the providers",
        prefixes: &["/api/webhooks/", "/api/providers/"],
    },
    Section {
        name: "conversations",
        description: "Read conversations and their messages",
        prefixes: &["/api/conversations"],
    },
    Section {
        name: "webhook endpoints",
        description: "Events pushed to your endpoints, signed per Standard Webhooks",
        prefixes: &["/api/webhook-endpoints"],
    },
    Section {
        name: "addresses",
        description:
            "Phone numbers and email domains a customer owns: inbound messages to them are its",
        prefixes: &["/api/addresses"],
    },
    Section {
        name: "dead letters",
        description: "Events that could not be processed (admin)",
        prefixes: &["/api/dlq"],
    },
    Section {
        name: "audit",
        description: "Who changed what (admin)",
        prefixes: &["/api/audit"],
    },
    Section {
        name: "operations",
        description: "Health, readiness, metrics and this document (no key)",
        prefixes: &[
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/api/stats",
        ],
    },
];

/// Lists the sections and tags every operation with its own.
pub fn add(doc: &mut Value) {
    doc["tags"] = SECTIONS
        .iter()
        .map(|s| json!({"name": s.name, "description": s.description}))
        .collect();
    let paths = doc["paths"]
        .as_object_mut()
        .expect("the document has paths");
    for (path, item) in paths.iter_mut() {
        let section = SECTIONS
            .iter()
            .find(|s| s.prefixes.iter().any(|p| path.starts_with(p)))
            .unwrap_or_else(|| panic!("{path} is in no section of the document"));
        for operation in item
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            operation["tags"] = json!([section.name]);
        }
    }
}
