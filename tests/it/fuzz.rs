//! Hostile requests, generated from a seed (a reproducible corpus): malformed JSON, wrong
//! types, huge numbers, deep nesting, invalid UTF-8, control characters, long strings, odd
//! content types and encodings, over every POST endpoint. Each must get a 202 (valid) or a
//! 4xx problem+json, never a 5xx, an empty reply or a panic; nothing is enqueued for a 4xx.
//! A run of 5,000 on each database then checks the pipeline settles: queue drained, every
//! accepted message stored once.

use crate::common;

use std::collections::HashSet;
use std::sync::{Mutex, Once};

use actix_web::http::StatusCode;
use common::{databases, spawn_api_only, spawn_app_with, TestApp};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// Panics in this process (handlers, actors, workers): the thread's name and the panic.
static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Starts recording panics in [`PANICS`] (once for the process; the default hook still
/// prints them).
fn record_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            if let Ok(mut seen) = PANICS.lock() {
                seen.push((thread, info.to_string()));
            }
            default(info);
        }));
    });
}

/// The panics of the service this test runs: on its own thread, on its System's arbiters
/// (`actix-rt|system:N|…`) or on an HTTP worker (`actix-server worker …`, named without
/// its System). Every test runs in this one process with a System of its own, and what
/// another test does wrong or on purpose happens on its threads: a failing assertion, an
/// injected fault, or its app dropped with a query in flight (sqlx then panics: "requires
/// a Tokio context"). A fault raised by test code (`tests/it/…`) is never the service's.
fn service_panics() -> Vec<String> {
    let me = std::thread::current().name().unwrap_or("").to_string();
    let own_system = format!("actix-rt|system:{}|", actix_web::rt::System::current().id());
    let seen = PANICS.lock().map(|p| p.clone()).unwrap_or_default();
    seen.into_iter()
        .filter(|(thread, _)| {
            *thread == me
                || thread.starts_with(&own_system)
                || thread.starts_with("actix-server worker")
        })
        .filter(|(_, panic)| !panic.starts_with("panicked at tests/it/"))
        .map(|(thread, panic)| format!("thread '{thread}': {panic}"))
        .collect()
}

const ENDPOINTS: [&str; 6] = [
    "/api/messages/sms",
    "/api/messages/email",
    "/api/webhooks/sms",
    "/api/webhooks/email",
    "/api/dlq/replay",
    "/api/dlq/1/replay",
];

/// One generated request.
struct Hostile {
    path: &'static str,
    content_type: Option<&'static str>,
    content_encoding: Option<&'static str>,
    idempotency_key: Option<String>,
    chunked: bool,
    body: Vec<u8>,
    /// Left as generated from a valid template: must be accepted.
    valid: bool,
    what: String,
}

fn template(path: &str, n: usize) -> Value {
    let body = format!("fuzz message {n}");
    match path {
        "/api/messages/sms" => json!({"from": "+12016661234", "to": "+18045551234",
            "type": "sms", "body": body, "attachments": null,
            "timestamp": "2024-11-01T14:00:00Z", "metadata": {"n": n}}),
        "/api/messages/email" => json!({"from": "user@usehatchapp.com",
            "to": "contact@gmail.com", "subject": "s", "body": body,
            "attachments": ["https://example.com/a.pdf"], "timestamp": "2024-11-01T14:00:00Z"}),
        "/api/webhooks/sms" => json!({"from": "+18045551234", "to": "+12016661234",
            "type": "mms", "messaging_provider_id": format!("p-{n}"), "body": body,
            "attachments": ["https://example.com/a.png"], "timestamp": "2024-11-01T14:00:00Z"}),
        "/api/webhooks/email" => json!({"from": "contact@gmail.com",
            "to": "user@usehatchapp.com", "xillio_id": format!("x-{n}"), "body": body,
            "attachments": [], "timestamp": "2024-11-01T14:00:00Z"}),
        _ => json!({}),
    }
}

fn deep(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

fn hostile_value(rng: &mut fastrand::Rng) -> Value {
    match rng.usize(0..16) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(1.7976931348623157e308),
        4 => json!(u64::MAX),
        5 => json!(""),
        6 => json!("   "),
        7 => json!("nul \u{0} inside"),
        8 => json!("\u{1b}[31mred\u{7}"),
        9 => json!("x".repeat(rng.usize(1000..20_000))),
        10 => json!("🎉é\u{202e}\u{feff}"),
        11 => json!([1, "two", {"three": 3}]),
        12 => json!({"nested": {"a": [null]}}),
        13 => Value::Object(
            (0..rng.usize(50..3000))
                .map(|i| (format!("k{i}"), json!(i)))
                .collect(),
        ),
        14 => json!(format!("+1{}", rng.u64(..))),
        _ => json!("https://example.com/\u{0}"),
    }
}

fn generate(rng: &mut fastrand::Rng, n: usize) -> Hostile {
    let path = ENDPOINTS[rng.usize(0..ENDPOINTS.len())];
    let mut value = template(path, n);
    let mut what = Vec::new();
    let fields: Vec<String> = value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    // Value-level mutations.
    for _ in 0..rng.usize(0..3) {
        if fields.is_empty() {
            break;
        }
        let field = &fields[rng.usize(0..fields.len())];
        match rng.usize(0..4) {
            0 => {
                value.as_object_mut().unwrap().remove(field);
                what.push(format!("drop {field}"));
            }
            1 | 2 => {
                value[field.as_str()] = hostile_value(rng);
                what.push(format!("{field} = hostile"));
            }
            _ => {
                value["metadata"] = hostile_value(rng);
                what.push("metadata = hostile".into());
            }
        }
    }
    let mut body = serde_json::to_vec(&value).unwrap();
    // Byte-level mutations.
    match rng.usize(0..14) {
        0 => {
            body.truncate(rng.usize(0..=body.len()));
            what.push("truncated".into());
        }
        1 => {
            let at = rng.usize(0..=body.len());
            body.insert(at, rng.u8(0x80..=0xff));
            what.push("invalid utf-8".into());
        }
        2 => {
            let junk: [&[u8]; 10] = [
                b"",
                b"null",
                b"[]",
                b"\"a string\"",
                b"{",
                b"}{",
                b"{\"from\":1}{\"to\":2}",
                b"1e999999",
                b"{\"body\": \"\\ud800\"}",
                b"{\"body\": \"\\x41\"}",
            ];
            body = junk[rng.usize(0..junk.len())].to_vec();
            what.push("junk".into());
        }
        3 => {
            let levels = [64, 200, 5000][rng.usize(0..3)];
            let text = String::from_utf8(body).unwrap();
            body = text
                .replacen('{', &format!("{{\"metadata\": {}, ", deep(levels)), 1)
                .into_bytes();
            what.push(format!("nesting {levels}"));
        }
        4 => {
            let text = String::from_utf8(body).unwrap();
            body = text
                .replacen('{', "{\"body\": 123456789012345678901234567890e12345, ", 1)
                .into_bytes();
            what.push("huge number".into());
        }
        5 if rng.usize(0..8) == 0 => {
            body = serde_json::to_vec(&json!({"body": "y".repeat(600 * 1024)})).unwrap();
            what.push("over the body limit".into());
        }
        _ => {}
    }
    let content_type = match rng.usize(0..20) {
        0 => None,
        1 => Some("text/plain"),
        2 => Some("application/x-www-form-urlencoded"),
        3 => Some("multipart/form-data; boundary=x"),
        4 => Some("application/json; charset=utf-8"),
        5 => Some("application/xml"),
        _ => Some("application/json"),
    };
    let content_encoding = match rng.usize(0..25) {
        0 => Some("gzip"),
        1 => Some("br"),
        2 => Some("identity"),
        _ => None,
    };
    let idempotency_key = match rng.usize(0..10) {
        0 => Some(format!("fuzz-{n}")),
        1 => Some("k".repeat(256)),
        2 => Some("clé".to_string()),
        _ => None,
    };
    let chunked = rng.usize(0..10) == 0;
    let valid = what.is_empty()
        && path.starts_with("/api/messages/") | path.starts_with("/api/webhooks/")
        && matches!(
            content_type,
            Some("application/json" | "application/json; charset=utf-8")
        )
        && matches!(content_encoding, None | Some("identity"))
        && idempotency_key
            .as_deref()
            .is_none_or(|k| k.starts_with("fuzz-"));
    if let Some(ct) = content_type {
        what.push(ct.to_string());
    }
    Hostile {
        path,
        content_type,
        content_encoding,
        idempotency_key,
        chunked,
        body,
        valid,
        what: what.join(", "),
    }
}

#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    refused: usize,
    failures: Vec<String>,
    /// 202s that enqueued an event (dead-letter replays answer 202 without a key).
    enqueued: usize,
    accepted_keys: HashSet<String>,
}

async fn fire(app: &TestApp, h: Hostile) -> Result<(StatusCode, Value, bool), String> {
    // With a valid key: what is hostile here is the request itself (auth has its own tests).
    let mut request = app.client.post(app.url(h.path)).bearer_auth(&app.admin_key);
    if let Some(ct) = h.content_type {
        request = request.insert_header(("Content-Type", ct));
    }
    if let Some(ce) = h.content_encoding {
        request = request.insert_header(("Content-Encoding", ce));
    }
    if let Some(key) = &h.idempotency_key {
        request = request.insert_header(("Idempotency-Key", key.as_str()));
    }
    let sent = if h.chunked {
        let chunks: Vec<Result<actix_web::web::Bytes, std::io::Error>> = h
            .body
            .chunks(7)
            .map(|c| Ok(actix_web::web::Bytes::copy_from_slice(c)))
            .collect();
        request
            .send_stream(futures_util::stream::iter(chunks))
            .await
    } else {
        request.send_body(h.body).await
    };
    let mut response = sent.map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json");
    let body = response
        .body()
        .limit(1 << 20)
        .await
        .map_err(|e| format!("unreadable answer: {e}"))?;
    if body.is_empty() {
        return Err(format!("{status} with an empty body"));
    }
    let json = serde_json::from_slice(&body)
        .map_err(|_| format!("{status} with a body that is not JSON"))?;
    Ok((status, json, problem))
}

/// Sends `count` generated requests, `parallel` at a time, and checks each answer.
async fn run(app: &TestApp, seed: u64, count: usize, parallel: usize) -> Tally {
    let mut rng = fastrand::Rng::with_seed(seed);
    let requests: Vec<Hostile> = (0..count).map(|n| generate(&mut rng, n)).collect();
    let answers = futures_util::stream::iter(requests.into_iter().map(|h| async move {
        let (path, valid, what) = (h.path, h.valid, h.what.clone());
        (path, valid, what, fire(app, h).await)
    }))
    .buffer_unordered(parallel)
    .collect::<Vec<_>>()
    .await;
    let mut tally = Tally::default();
    for (path, valid, what, answer) in answers {
        let context = format!("{path} [{what}]");
        match answer {
            Err(e) => tally.failures.push(format!("{context}: {e}")),
            Ok((status, body, _)) if status.is_server_error() => {
                tally.failures.push(format!("{context}: {status} {body}"))
            }
            Ok((status, body, problem)) if status.is_client_error() => {
                tally.refused += 1;
                if !problem || body["status"] != status.as_u16() || !body["type"].is_string() {
                    tally
                        .failures
                        .push(format!("{context}: {status} is not a problem: {body}"));
                }
                if valid {
                    tally
                        .failures
                        .push(format!("{context}: a valid request got {status}: {body}"));
                }
            }
            Ok((status, body, _)) if status == StatusCode::ACCEPTED => {
                tally.accepted += 1;
                if let Some(key) = body["idempotency_key"].as_str() {
                    tally.enqueued += 1;
                    tally.accepted_keys.insert(key.to_string());
                }
            }
            Ok((status, body, _)) => tally
                .failures
                .push(format!("{context}: unexpected {status} {body}")),
        }
    }
    tally
}

async fn enqueued(app: &TestApp) -> usize {
    let (_, text) = app.get("/metrics").await;
    text.as_str()
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("messaging_queue_enqueued_total ")?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0) as usize
}

#[actix_web::test]
async fn generated_hostile_requests_get_202_or_a_problem_and_4xx_enqueue_nothing() {
    record_panics();
    let app = spawn_api_only(|s| s.queue.capacity = 100_000).await;
    let tally = run(&app, 0x5eed, 1500, 8).await;
    assert!(
        tally.failures.is_empty(),
        "{:#?}",
        &tally.failures[..tally.failures.len().min(20)]
    );
    assert!(
        tally.accepted > 100,
        "the corpus has valid requests: {tally:?}"
    );
    assert!(tally.refused > 500, "and hostile ones: {}", tally.refused);
    // Exactly one event per 202 that named one; none for a 4xx.
    assert_eq!(app.queued_events().len(), tally.enqueued);
    assert_eq!(enqueued(&app).await, tally.enqueued);
    assert_eq!(service_panics(), Vec::<String>::new(), "no panic");
}

/// 5,000 hostile requests (any mix) per database: 0 5xx, 0 empty replies, 0 panics, and the
/// pipeline settles: queue drained, every accepted key stored once.
#[actix_web::test]
async fn five_thousand_hostile_requests_leave_a_drained_queue_on_both_databases() {
    record_panics();
    for db in databases() {
        let app = spawn_app_with(db, |s| s.server.http_workers = 2).await;
        let tally = run(&app, 0xbad_c0de, 5000, 16).await;
        assert!(
            tally.failures.is_empty(),
            "{db:?}: {:#?}",
            &tally.failures[..tally.failures.len().min(20)]
        );
        assert!(tally.accepted > 500, "{db:?}: {} accepted", tally.accepted);
        app.drained().await;
        assert_eq!(
            app.state.backend.depth(),
            0,
            "{db:?}: the queue drains to 0"
        );
        let stored = app.scalar("SELECT COUNT(*) FROM messages").await as usize;
        assert_eq!(
            stored,
            tally.accepted_keys.len(),
            "{db:?}: every accepted key stored"
        );
        // Hostile bodies can make two valid requests share a derived key with different
        // metadata: the second is dead-lettered as a reused key. Nothing else fails.
        let other_failures = app
            .scalar(
                "SELECT COUNT(*) FROM dead_letters \
                 WHERE last_error <> 'idempotency key reused with a different request'",
            )
            .await;
        assert_eq!(other_failures, 0, "{db:?}: no accepted event failed");
        app.assert_counters_match().await;
    }
    assert_eq!(
        service_panics(),
        Vec::<String>::new(),
        "no panic in the service"
    );
}
