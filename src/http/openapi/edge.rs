//! What the route table puts around every handler, added to each operation of the
//! document: the keys and scopes its guard accepts, and the answers its layers give before
//! (or instead of) the handler: 401/403/429/503 from authentication, 406/415 from the
//! `/api` scope, 413/408 from reading a JSON body, and the connection's own refusals
//! (400/408/431). Plus the headers every answer carries.

use serde_json::{json, Map, Value};

use crate::http::routes::{Endpoint, Guard};

const BEARER: &str = "apiKey";
const SIGNATURE: &str = "webhookSignature";
const TWILIO_SIGNATURE: &str = "twilioSignature";

pub fn add(doc: &mut Value, table: &[Endpoint]) {
    add_components(doc);
    for_each_operation(doc, table, |operation, endpoint| {
        add_to_operation(operation, endpoint)
    });
}

/// The security requirements as a server with these settings enforces them: with
/// `auth.required = false` no key is needed (one given is still checked); a provider
/// webhook with a secret takes its signature only.
pub fn secure_as_served(doc: &mut Value, table: &[Endpoint], served: Served) {
    for_each_operation(doc, table, |operation, endpoint| {
        operation["security"] = security(endpoint.guard, served);
    });
}

fn for_each_operation(
    doc: &mut Value,
    table: &[Endpoint],
    mut f: impl FnMut(&mut Value, &Endpoint),
) {
    for endpoint in table {
        for method in endpoint.methods() {
            let pointer = format!(
                "/paths/{}/{}",
                endpoint.path.replace('~', "~0").replace('/', "~1"),
                method.as_str().to_ascii_lowercase()
            );
            // A route missing from the document is reported by tests/it/openapi.rs.
            if let Some(operation) = doc.pointer_mut(&pointer) {
                f(operation, endpoint);
            }
        }
    }
}

/// Which of a route's guards a server enforces (see [`secure_as_served`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Served {
    pub keys_required: bool,
    pub sms_signed: bool,
    pub email_signed: bool,
}

impl Default for Served {
    /// The defaults: keys required, provider webhooks unsigned.
    fn default() -> Self {
        Served {
            keys_required: true,
            sms_signed: false,
            email_signed: false,
        }
    }
}

/// An operation's `security`: any one requirement of the list lets a request through; an
/// empty list, none needed.
fn security(guard: Guard, served: Served) -> Value {
    let signed = match guard {
        Guard::SmsWebhook => served.sms_signed,
        Guard::EmailWebhook => served.email_signed,
        _ => false,
    };
    if guard == Guard::Twilio {
        return json!([{ TWILIO_SIGNATURE: [] }]);
    }
    if signed {
        return json!([{ SIGNATURE: [] }]);
    }
    if !guard.takes_keys() || !served.keys_required {
        return json!([]);
    }
    let mut requirements: Vec<Value> = guard
        .scopes()
        .iter()
        .map(|scope| json!({ BEARER: [scope] }))
        .collect();
    if guard.signed_webhook() {
        requirements.push(json!({ SIGNATURE: [] }));
    }
    Value::Array(requirements)
}

fn add_components(doc: &mut Value) {
    let components = doc["components"]
        .as_object_mut()
        .expect("the document has components");
    components.insert(
        "securitySchemes".into(),
        json!({
            BEARER: {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "msk_<64 hex digits>",
                "description": "An API key, `Authorization: Bearer msk_…`. Its scopes decide what it may do: `send` (send messages, read its customer's conversations), `webhook` (provider webhooks), `admin` (everything, every customer). Each operation lists the scopes that pass, any one of them. Create keys with `messaging-server keys create`.",
            },
            SIGNATURE: {
                "type": "apiKey",
                "in": "header",
                "name": "X-Messaging-Signature",
                "description": "A provider's signature, when `providers.<p>.webhook_secret` is set (keys are then not accepted on that provider's webhook): `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`, the timestamp within `providers.<p>.webhook_tolerance` (5m) of the server's clock. Several `v1=` values may be given while a secret is rotated.",
            },
            TWILIO_SIGNATURE: {
                "type": "apiKey",
                "in": "header",
                "name": "X-Twilio-Signature",
                "description": "Twilio's signature of its webhook, as Twilio computes it: base64 HMAC-SHA1, keyed with the account's auth token (`providers.sms.auth_token`), of `providers.sms.public_url` + the request's path and query, followed by each form parameter's name and value, sorted by name. Twilio's helper libraries (`RequestValidator`) compute and check it.",
            },
        }),
    );
    let headers = components
        .entry("headers")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("an object");
    let seconds = json!({"type": "string", "pattern": "^[0-9]+$"});
    for (name, description, schema) in [
        (
            "X-Request-Id",
            "The request's id, in every answer and log line: the client's `X-Request-Id` when it is 1 to 128 visible ASCII characters, else a new one.",
            json!({"type": "string", "pattern": "^[!-~]{1,128}$"}),
        ),
        (
            "Retry-After",
            "Seconds to wait before retrying.",
            seconds.clone(),
        ),
        (
            "RateLimit-Limit",
            "Requests allowed at once (the burst).",
            seconds.clone(),
        ),
        (
            "RateLimit-Remaining",
            "Requests left now: 0.",
            seconds.clone(),
        ),
        (
            "RateLimit-Reset",
            "Seconds until the next request is allowed.",
            seconds,
        ),
        (
            "WWW-Authenticate",
            "What to send: `Bearer realm=\"messaging-server\"` (with `error=\"invalid_token\"` for a bad key), or `X-Messaging-Signature` on a signed webhook.",
            json!({"type": "string"}),
        ),
        (
            "Accept-Encoding",
            "`identity` when a request body is compressed.",
            json!({"type": "string"}),
        ),
    ] {
        headers.insert(
            name.into(),
            json!({"description": description, "required": true, "schema": schema}),
        );
    }
    // Optional where it appears: only on an unsupported content encoding.
    headers["Accept-Encoding"]["required"] = json!(false);
}

fn add_to_operation(operation: &mut Value, endpoint: &Endpoint) {
    let guard = endpoint.guard;
    let api = endpoint.json_api();
    // `web::Json` needs a body: without one the answer is a 415 or a 400.
    let json_body = match operation.get_mut("requestBody") {
        Some(body) => {
            body["required"] = json!(true);
            api
        }
        None => false,
    };
    // Open operations say so (`security: []`): no key is needed, as opposed to unstated.
    operation["security"] = security(guard, Served::default());
    let responses = operation["responses"]
        .as_object_mut()
        .expect("an operation has responses");

    // The connection refuses a request head it cannot parse or that is too large or slow,
    // before any route is chosen.
    problem(
        responses,
        400,
        "`malformed-request`: the request head is not valid HTTP/1.1 (such as a control character in a header)",
        &[],
    );
    problem(
        responses,
        431,
        "`request-header-fields-too-large`: the request head is over 128 KiB",
        &[],
    );
    problem(
        responses,
        408,
        "`request-timeout`: the request head did not arrive within 5 s",
        &[],
    );
    if json_body {
        problem(
            responses,
            408,
            "`request-timeout`: the body did not arrive within `server.body_timeout`; the connection is closed",
            &[],
        );
        problem(
            responses,
            413,
            "`payload-too-large`: the body is over `server.body_limit` (512 KiB by default)",
            &[],
        );
        problem(
            responses,
            415,
            "`unsupported-media-type`: the body is not `Content-Type: application/json`",
            &[],
        );
    }
    if api {
        problem(
            responses,
            406,
            "`not-acceptable`: the `Accept` header admits no JSON",
            &[],
        );
        problem(
            responses,
            415,
            "`unsupported-encoding`: the body has a `Content-Encoding` other than identity (with `Accept-Encoding: identity`)",
            &["Accept-Encoding"],
        );
    }
    if guard.takes_keys() {
        problem(
            responses,
            401,
            "`unauthorized`: no valid API key (missing, malformed, unknown or revoked) or, on a signed webhook, no valid signature",
            &["WWW-Authenticate"],
        );
        problem(
            responses,
            403,
            "`forbidden`: the key lacks the scope, or cannot act for the `customer_id` named",
            &[],
        );
        problem(
            responses,
            429,
            "`rate-limited`: over the key's rate limit (`rate_limit.per_key`, `rate_limit.burst`), or the client's for requests without a valid key (`rate_limit.per_ip`)",
            &[
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
        );
        problem(
            responses,
            503,
            "`unavailable` (the database or the queue backend is unavailable, or the server is shutting down) or `queue-full`",
            &["Retry-After"],
        );
    }
    for response in responses.values_mut() {
        let headers = response
            .as_object_mut()
            .expect("a response is an object")
            .entry("headers")
            .or_insert_with(|| json!({}));
        headers["X-Request-Id"] = header_ref("X-Request-Id");
    }
}

/// Adds a problem answer for `status`, or adds `description` to the one there.
fn problem(responses: &mut Map<String, Value>, status: u16, description: &str, headers: &[&str]) {
    let response = responses
        .entry(status.to_string())
        .or_insert_with(|| {
            json!({
                "description": "",
                "content": {
                    "application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/Problem"}
                    }
                },
            })
        })
        .as_object_mut()
        .expect("a response is an object");
    let text = match response.get("description").and_then(Value::as_str) {
        Some(existing) if !existing.is_empty() => format!("{existing}; or {description}"),
        _ => description.to_string(),
    };
    response.insert("description".into(), Value::String(text));
    if !headers.is_empty() {
        let map = response
            .entry("headers")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("headers are an object");
        for name in headers {
            map.insert(name.to_string(), header_ref(name));
        }
    }
}

fn header_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}
