//! Examples of the owned-address operations, and of an inbound message nobody owns (see
//! [`super::examples`]).

use serde_json::{json, Value};

use super::examples::{not_found, page, set, set_answers, Where, AT, JSON};

fn address() -> Value {
    json!({
        "id": 1,
        "customer_id": "00000000-0000-0000-0000-000000000001",
        "kind": "phone",
        "address": "+12016661234",
        "created_at": AT,
    })
}

pub fn add(doc: &mut Value) {
    set(
        doc,
        "addAddress",
        Where::Request,
        JSON,
        &[
            (
                "phone",
                "A phone number",
                json!({"address": "+12016661234"}),
            ),
            (
                "domain",
                "An email domain, for a customer (operators)",
                json!({"address": "example.com", "customer_id": "00000000-0000-0000-0000-000000000001"}),
            ),
        ],
    );
    let answers = [
        ("addAddress", 201, ("owned", "Owned", address())),
        (
            "listAddresses",
            200,
            ("page", "A page of addresses", page(vec![address()])),
        ),
        ("getAddress", 200, ("address", "An address", address())),
    ];
    set_answers(doc, answers);
    for operation in ["getAddress", "removeAddress"] {
        not_found(doc, operation, "address 1");
    }
    for operation in ["receiveSms", "receiveEmail"] {
        set(
            doc,
            operation,
            Where::Response(200),
            JSON,
            &[(
                "unrouted",
                "To an address no customer owns",
                json!({"status": "unrouted"}),
            )],
        );
    }
}
