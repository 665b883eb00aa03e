//! The published document (`/openapi.json`) against the code: the route table and the
//! document list the same routes and methods with the same scopes, and real answers from
//! a running app (a sample of each kind per route) are documented for their status, carry
//! the documented headers and validate against the documented schema.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use actix_web::http::{header, Method, StatusCode};
use common::{create_key, databases, spawn_app_with, TestApp};
use messaging_server::config::Secret;
use messaging_server::http::{openapi, route_table, twilio, Guard};
use messaging_server::store::keys::Scope;
use serde_json::{json, Value};

const TWILIO_TOKEN: &str = "0123456789abcdef0123456789abcdef";
const TWILIO_PUBLIC_URL: &str = "https://msg.example.com";

/// A JSON Pointer segment, as it appears in a URI fragment.
fn escape(path: &str) -> String {
    path.replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

fn operation<'a>(doc: &'a Value, path: &str, method: &Method) -> Option<&'a Value> {
    doc["paths"]
        .get(path)?
        .get(method.as_str().to_ascii_lowercase())
}

#[test]
fn the_document_lists_exactly_the_route_table() {
    let doc = openapi::json();
    assert_eq!(doc["openapi"], "3.1.0");
    let table: BTreeSet<(String, String)> = route_table()
        .iter()
        .flat_map(|e| {
            e.methods()
                .into_iter()
                .map(|m| (e.path.to_string(), m.as_str().to_string()))
        })
        .collect();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete", "head"].contains(&k.as_str()))
                .map(|m| (path.clone(), m.to_ascii_uppercase()))
                .collect::<Vec<_>>()
        })
        .collect();
    let undocumented: Vec<_> = table.difference(&documented).collect();
    let phantom: Vec<_> = documented.difference(&table).collect();
    assert!(
        undocumented.is_empty(),
        "routes without a #[utoipa::path] listed in openapi::ApiDoc: {undocumented:?}"
    );
    assert!(
        phantom.is_empty(),
        "documented operations that no route serves: {phantom:?}"
    );
}

#[test]
fn each_operation_documents_the_scopes_its_guard_accepts() {
    let doc = openapi::json();
    for endpoint in route_table() {
        for method in endpoint.methods() {
            let op = operation(doc, endpoint.path, &method).expect("documented");
            let mut expected: Vec<Value> = endpoint
                .guard
                .scopes()
                .iter()
                .map(|s| json!({"apiKey": [s]}))
                .collect();
            if endpoint.guard.signed_webhook() {
                expected.push(json!({"webhookSignature": []}));
            }
            if endpoint.guard == Guard::Twilio {
                expected.push(json!({"twilioSignature": []}));
            }
            let documented = op.get("security").cloned().unwrap_or(json!([]));
            assert_eq!(
                documented,
                Value::Array(expected),
                "{method} {}",
                endpoint.path
            );
            let statuses = op["responses"].as_object().unwrap();
            assert_eq!(
                statuses.contains_key("401"),
                endpoint.guard.takes_keys(),
                "{method} {}: 401 documented exactly on guarded routes",
                endpoint.path
            );
        }
    }
}

/// One real answer.
struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    body: Vec<u8>,
}

async fn send(request: awc::ClientRequest, body: Option<Vec<u8>>) -> Answer {
    let sent = match body {
        Some(body) => request.send_body(body).await,
        None => request.send().await,
    };
    let mut response = sent.expect("the server answers");
    let body = response
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .expect("a body")
        .to_vec();
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body,
    }
}

/// Checks `answer` against the document's response for (`route`, `method`, its status);
/// returns its JSON body.
fn check(route: &str, method: &Method, answer: &Answer) -> Value {
    let doc = openapi::json();
    let what = format!("{method} {route} answered {}", answer.status.as_u16());
    let op = operation(doc, route, method).unwrap_or_else(|| panic!("{what}: not documented"));
    let response = op["responses"]
        .get(answer.status.as_str())
        .unwrap_or_else(|| panic!("{what}: status not documented"));
    for (name, reference) in response["headers"].as_object().into_iter().flatten() {
        let component = reference["$ref"]
            .as_str()
            .and_then(|r| doc.pointer(&r[1..]))
            .unwrap_or(reference);
        if component["required"] == true {
            assert!(
                answer.headers.contains_key(name.as_str()),
                "{what}: missing header {name}"
            );
        }
    }
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        assert!(
            answer.body.is_empty(),
            "{what}: a body where none is documented"
        );
        return Value::Null;
    };
    let content_type = common::header_text(&answer.headers, header::CONTENT_TYPE.as_str());
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let (media_pointer, _) = content
        .iter()
        .find(|(documented, _)| documented.as_str() == media)
        .unwrap_or_else(|| panic!("{what}: content type {content_type:?} not documented"));
    if !media.ends_with("json") {
        return Value::Null;
    }
    let instance: Value =
        serde_json::from_slice(&answer.body).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"));
    // The whole document as the root, so `#/components/...` references resolve; `$ref`
    // points at this response's schema.
    let mut root = doc.clone();
    root["$ref"] = json!(format!(
        "#/paths/{}/{}/responses/{}/content/{}/schema",
        escape(route),
        method.as_str().to_ascii_lowercase(),
        answer.status.as_str(),
        escape(media_pointer)
    ));
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the body breaks the documented schema: {errors:?}\n{instance}"
    );
    instance
}

struct Sampler<'a> {
    app: &'a TestApp,
    /// Statuses seen per (route, method).
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
}

impl Sampler<'_> {
    /// Sends `method path` (with `key`, a JSON `body` and extra `headers`) and checks the
    /// answer against `route`'s documentation; returns the JSON body.
    #[allow(clippy::too_many_arguments)] // one line per sample reads best
    async fn call(
        &mut self,
        method: Method,
        route: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
        expected: u16,
    ) -> Value {
        let mut request = self.app.client.request(method.clone(), self.app.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let has_content_type = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !has_content_type {
            request = request.insert_header((header::CONTENT_TYPE, "application/json"));
        }
        for (name, value) in headers {
            request = request.insert_header((*name, *value));
        }
        let bytes = body.map(|b| match b {
            Value::String(raw) => raw.into_bytes(),
            other => serde_json::to_vec(&other).unwrap(),
        });
        let answer = send(request, bytes).await;
        assert_eq!(
            answer.status.as_u16(),
            expected,
            "{method} {path}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let json = check(route, &method, &answer);
        self.seen
            .entry((route.to_string(), method.to_string()))
            .or_default()
            .insert(expected);
        json
    }
}

#[actix_web::test]
async fn real_answers_match_the_document() {
    for db in databases() {
        // Email is refused by its provider, once: every email becomes a dead letter.
        let app = spawn_app_with(db, |s| {
            s.providers.email.mock_error_rate = 1.0;
            s.retry.max_attempts = 1;
            s.providers.sms.auth_token = Secret::new(TWILIO_TOKEN);
            s.providers.sms.public_url = TWILIO_PUBLIC_URL.into();
        })
        .await;
        let admin = app.admin_key.clone();
        let customer = app.state.settings.api.default_customer_id;
        let send_key = create_key(app.db(), customer, &[Scope::Send]).await;
        let webhook_key = create_key(app.db(), customer, &[Scope::Webhook]).await;
        let mut s = Sampler {
            app: &app,
            seen: BTreeMap::new(),
        };
        let a = Some(admin.as_str());
        let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);

        // Operations (open).
        for route in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            s.call(get.clone(), route, route, None, None, &[], 200)
                .await;
        }

        // Sending and receiving.
        let sms = json!({"from": "+12016661234", "to": "+1 (804) 555-1234", "type": "sms",
                         "body": "hello", "timestamp": "2024-11-01T14:00:00Z",
                         "metadata": {"campaign": "x"}});
        let mms = json!({"from": "+12016661234", "to": "+18045551234", "type": "mms",
                         "body": "pic", "attachments": ["https://example.com/a.png"]});
        let email = json!({"from": "a@example.com", "to": "b@example.com", "subject": "s",
                           "body": "<p>hi</p>", "attachments": []});
        let sms_in = json!({"from": "+18045551234", "to": "+12016661234", "type": "sms",
                            "messaging_provider_id": "p-1", "body": "back"});
        let email_in = json!({"from": "b@example.com", "to": "a@example.com",
                              "xillio_id": "x-1", "body": "reply"});
        let route = "/api/messages/sms";
        for body in [&sms, &mms] {
            s.call(post.clone(), route, route, a, Some(body.clone()), &[], 202)
                .await;
        }
        let keyed = [("Idempotency-Key", "contract-1")];
        s.call(
            post.clone(),
            route,
            route,
            a,
            Some(sms.clone()),
            &keyed,
            202,
        )
        .await;
        // The status resource every 202 points at.
        let followed = json!({"from": "+12016661234", "to": "+18045551234", "type": "sms",
                              "body": "followed"});
        let answer = s
            .call(post.clone(), route, route, a, Some(followed), &[], 202)
            .await;
        let status_route = "/api/messages/{idempotency_key}";
        let status_url = answer["status_url"]
            .as_str()
            .expect("a status_url")
            .to_string();
        s.call(get.clone(), status_route, &status_url, a, None, &[], 200)
            .await;
        let unknown = format!("/api/messages/{}", "0".repeat(64));
        s.call(get.clone(), status_route, &unknown, a, None, &[], 404)
            .await;
        let mut other = sms.clone();
        other["body"] = json!("another");
        s.call(post.clone(), route, route, a, Some(other), &keyed, 422)
            .await;
        let problem = s
            .call(
                post.clone(),
                route,
                route,
                a,
                Some(json!({"type": "fax"})),
                &[],
                400,
            )
            .await;
        assert!(problem["errors"].as_array().is_some_and(|e| e.len() >= 4));
        s.call(post.clone(), route, route, a, Some(json!("{")), &[], 400)
            .await;
        s.call(
            post.clone(),
            route,
            route,
            None,
            Some(sms.clone()),
            &[],
            401,
        )
        .await;
        let webhook_only = Some(webhook_key.as_str());
        s.call(
            post.clone(),
            route,
            route,
            webhook_only,
            Some(sms.clone()),
            &[],
            403,
        )
        .await;
        s.call(
            post.clone(),
            route,
            route,
            a,
            Some(sms.clone()),
            &[("Accept", "text/html")],
            406,
        )
        .await;
        let plain = [("Content-Type", "text/plain")];
        s.call(
            post.clone(),
            route,
            route,
            a,
            Some(sms.clone()),
            &plain,
            415,
        )
        .await;
        let gzip = [("Content-Encoding", "gzip")];
        s.call(post.clone(), route, route, a, Some(sms.clone()), &gzip, 415)
            .await;
        let huge = json!({"body": "x".repeat(600 * 1024)});
        s.call(post.clone(), route, route, a, Some(huge), &[], 413)
            .await;

        let route = "/api/messages/email";
        s.call(post.clone(), route, route, a, Some(email.clone()), &[], 202)
            .await;
        s.call(
            post.clone(),
            route,
            route,
            a,
            Some(json!({"from": "x"})),
            &[],
            400,
        )
        .await;
        let route = "/api/webhooks/sms";
        s.call(post.clone(), route, route, a, Some(sms_in), &[], 202)
            .await;
        let send_only = Some(send_key.as_str());
        s.call(
            post.clone(),
            route,
            route,
            send_only,
            Some(json!({})),
            &[],
            403,
        )
        .await;
        let route = "/api/webhooks/email";
        s.call(post.clone(), route, route, a, Some(email_in), &[], 202)
            .await;
        s.call(
            post.clone(),
            route,
            route,
            a,
            Some(json!({"xillio_id": 1})),
            &[],
            400,
        )
        .await;
        // Twilio's webhooks: form bodies signed with the auth token, TwiML answers.
        for (route, form) in [
            (
                "/api/providers/twilio/sms",
                "MessageSid=SM0123456789abcdef0123456789abcdef&From=%2B18045551234&To=%2B12016661234&Body=hi&NumMedia=0",
            ),
            (
                "/api/providers/twilio/status",
                "MessageSid=SMffffffffffffffffffffffffffffffff&MessageStatus=delivered",
            ),
        ] {
            let params = twilio::form(form.as_bytes());
            let signature = twilio::sign(TWILIO_TOKEN, &format!("{TWILIO_PUBLIC_URL}{route}"), &params);
            let form_type = ("Content-Type", "application/x-www-form-urlencoded");
            let signed = [form_type, ("X-Twilio-Signature", signature.as_str())];
            let body = Some(Value::String(form.into()));
            s.call(post.clone(), route, route, None, body.clone(), &signed, 200)
                .await;
            s.call(post.clone(), route, route, None, body, &[form_type], 403)
                .await;
        }
        app.drained().await;

        // Reading.
        let route = "/api/conversations";
        let page = s.call(get.clone(), route, route, a, None, &[], 200).await;
        let id = page["items"][0]["id"].as_i64().expect("a conversation");
        s.call(
            get.clone(),
            route,
            "/api/conversations?page=0",
            a,
            None,
            &[],
            400,
        )
        .await;
        s.call(get.clone(), route, route, send_only, None, &[], 200)
            .await;
        let route = "/api/conversations/{id}";
        s.call(
            get.clone(),
            route,
            &format!("/api/conversations/{id}"),
            a,
            None,
            &[],
            200,
        )
        .await;
        s.call(
            get.clone(),
            route,
            "/api/conversations/x",
            a,
            None,
            &[],
            400,
        )
        .await;
        s.call(
            get.clone(),
            route,
            "/api/conversations/999999",
            a,
            None,
            &[],
            404,
        )
        .await;
        let route = "/api/conversations/{id}/messages";
        let path = format!("/api/conversations/{id}/messages?pageSize=1");
        s.call(get.clone(), route, &path, a, None, &[], 200).await;
        s.call(
            get.clone(),
            route,
            "/api/conversations/999999/messages",
            a,
            None,
            &[],
            404,
        )
        .await;

        // Webhook endpoints.
        let route = "/api/webhook-endpoints";
        let new = json!({"url": "https://hooks.example.com/messaging", "events": ["message.sent"]});
        let created = s
            .call(post.clone(), route, route, a, Some(new), &[], 201)
            .await;
        let private = json!({"url": "http://127.0.0.1/hooks"});
        s.call(post.clone(), route, route, a, Some(private), &[], 400)
            .await;
        s.call(get.clone(), route, route, a, None, &[], 200).await;
        let id = created["id"].as_str().expect("an endpoint id");
        let one = format!("/api/webhook-endpoints/{id}");
        let route = "/api/webhook-endpoints/{id}";
        s.call(get.clone(), route, &one, a, None, &[], 200).await;
        let unknown = "/api/webhook-endpoints/00000000-0000-0000-0000-000000000000";
        s.call(get.clone(), route, unknown, a, None, &[], 404).await;
        let change = json!({"enabled": false, "description": null});
        s.call(Method::PATCH, route, &one, a, Some(change), &[], 200)
            .await;
        let wrong = json!({"events": ["message.unknown"]});
        s.call(Method::PATCH, route, &one, a, Some(wrong), &[], 400)
            .await;
        let route = "/api/webhook-endpoints/{id}/rotate-secret";
        s.call(
            post.clone(),
            route,
            &format!("{one}/rotate-secret"),
            a,
            None,
            &[],
            200,
        )
        .await;
        let route = "/api/webhook-endpoints/{id}/attempts";
        s.call(
            get.clone(),
            route,
            &format!("{one}/attempts"),
            a,
            None,
            &[],
            200,
        )
        .await;
        let route = "/api/webhook-endpoints/{id}/replay";
        s.call(
            post.clone(),
            route,
            &format!("{one}/replay"),
            a,
            None,
            &[],
            202,
        )
        .await;
        s.call(
            post.clone(),
            route,
            &format!("{unknown}/replay"),
            a,
            None,
            &[],
            404,
        )
        .await;
        let route = "/api/webhook-endpoints/{id}";
        s.call(delete.clone(), route, &one, a, None, &[], 204).await;
        s.call(delete.clone(), route, &one, a, None, &[], 404).await;

        // Dead letters (the email above).
        let route = "/api/dlq";
        let letters = s.call(get.clone(), route, route, a, None, &[], 200).await;
        let id = letters["items"][0]["id"].as_i64().expect("a dead letter");
        s.call(get.clone(), route, route, send_only, None, &[], 403)
            .await;
        s.call(get.clone(), "/api/stats", "/api/stats", a, None, &[], 200)
            .await;
        s.call(
            get.clone(),
            "/api/stats",
            "/api/stats",
            send_only,
            None,
            &[],
            403,
        )
        .await;
        let route = "/api/dlq/{id}";
        let one = format!("/api/dlq/{id}");
        s.call(get.clone(), route, &one, a, None, &[], 200).await;
        s.call(get.clone(), route, "/api/dlq/999999", a, None, &[], 404)
            .await;
        let route = "/api/dlq/{id}/replay";
        let replay = format!("/api/dlq/{id}/replay");
        s.call(post.clone(), route, &replay, a, None, &[], 202)
            .await;
        s.call(post.clone(), route, &replay, a, None, &[], 409)
            .await;
        s.call(
            post.clone(),
            route,
            "/api/dlq/999999/replay",
            a,
            None,
            &[],
            404,
        )
        .await;
        let route = "/api/dlq/replay";
        s.call(post.clone(), route, route, a, None, &[], 202).await;
        app.drained().await;
        let route = "/api/dlq/{id}";
        s.call(delete.clone(), route, &one, a, None, &[], 204).await;
        s.call(delete.clone(), route, &one, a, None, &[], 404).await;
        s.call(delete.clone(), "/api/dlq", "/api/dlq", a, None, &[], 200)
            .await;

        let route = "/api/addresses";
        let number = || Some(json!({"address": "+14155550188"}));
        let owned = s
            .call(post.clone(), route, route, a, number(), &[], 201)
            .await;
        s.call(post.clone(), route, route, a, number(), &[], 409)
            .await;
        let bad = Some(json!({"address": "not an address"}));
        s.call(post.clone(), route, route, a, bad, &[], 400).await;
        s.call(get.clone(), route, route, a, None, &[], 200).await;
        let route = "/api/addresses/{id}";
        let one = format!("/api/addresses/{}", owned["id"]);
        s.call(get.clone(), route, &one, a, None, &[], 200).await;
        s.call(delete.clone(), route, &one, a, None, &[], 204).await;
        s.call(delete.clone(), route, &one, a, None, &[], 404).await;
        s.call(get.clone(), route, "/api/addresses/x", a, None, &[], 400)
            .await;
        // The audit log holds the address changes above.
        let route = "/api/audit";
        let log = s
            .call(
                get.clone(),
                route,
                "/api/audit?action=address.add",
                a,
                None,
                &[],
                200,
            )
            .await;
        assert_eq!(log["meta"]["total"], 1, "{log}");
        s.call(
            get.clone(),
            route,
            "/api/audit?since=soon",
            a,
            None,
            &[],
            400,
        )
        .await;
        // An inbound message to an address nobody owns: 200, stored nowhere.
        let unowned = json!({"from": "+18045551234", "to": "+14155550199", "type": "sms",
                             "messaging_provider_id": "nobody's", "body": "hi"});
        s.call(
            post.clone(),
            "/api/webhooks/sms",
            "/api/webhooks/sms",
            a,
            Some(unowned),
            &[],
            200,
        )
        .await;

        // Every route answered its success status at least once.
        for endpoint in route_table() {
            for method in endpoint.methods() {
                let seen = s
                    .seen
                    .get(&(endpoint.path.to_string(), method.to_string()))
                    .unwrap_or_else(|| panic!("{method} {} was not sampled", endpoint.path));
                assert!(
                    seen.iter().any(|status| (200..300).contains(status)),
                    "{method} {}: no success sampled",
                    endpoint.path
                );
            }
        }

        // Another method: 405 with the methods the path has.
        let answer = send(
            app.client.put(app.url("/api/dlq/1")).bearer_auth(&admin),
            None,
        )
        .await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers.get(header::ALLOW).unwrap(), "GET, DELETE");

        // The connection's own refusal, the same for every route: a head over 128 KiB.
        let answer = send(
            app.client
                .get(app.url("/healthz"))
                .insert_header(("X-Padding", "a".repeat(200 * 1024))),
            None,
        )
        .await;
        assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        for endpoint in route_table() {
            for method in endpoint.methods() {
                check(endpoint.path, &method, &answer);
            }
        }
    }
}

/// The served document says what the server enforces: with `auth.required = false` no
/// operation needs a key (Schemathesis and client generators would otherwise send one, or
/// flag every open answer); a provider webhook with a secret takes its signature only.
#[actix_web::test]
async fn the_served_document_declares_the_security_the_server_enforces() {
    let db = databases().remove(0);
    let open = spawn_app_with(db, |s| {
        s.auth.required = false;
        s.providers.sms.webhook_secret = Secret::new("whsec-test-0123456789");
    })
    .await;
    let (status, doc) = open.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for endpoint in route_table() {
        for method in endpoint.methods() {
            let op = operation(&doc, endpoint.path, &method).expect("documented");
            let expected = match endpoint.guard {
                Guard::Twilio => json!([{"twilioSignature": []}]),
                Guard::SmsWebhook => json!([{"webhookSignature": []}]),
                _ => json!([]),
            };
            assert_eq!(op["security"], expected, "{method} {}", endpoint.path);
        }
    }
    // And a key is indeed not needed.
    let answer = open
        .client
        .get(open.url("/api/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);

    // With keys required (the default), it is the published document.
    let closed = spawn_app_with(databases().remove(0), |_| {}).await;
    let (_, served) = closed.get("/openapi.json").await;
    assert_eq!(&served, openapi::json());
}
