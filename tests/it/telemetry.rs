//! OpenTelemetry export as an operator with a Collector sees it: a real OTLP/HTTP receiver
//! (tests/it/common/otlp.rs) decodes what the application pushes.

use crate::common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use common::nats::NatsServer;
use common::otlp::{OtlpReceiver, ReceivedSpan};
use common::server::{binary_on, capture};
use common::{eventually, sms, spawn_app_with, Db, TestApp, TestDatabase};
use messaging_server::config::Settings;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
// proto SpanKind values
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

fn export_to(receiver: &OtlpReceiver) -> impl FnOnce(&mut Settings) + '_ {
    move |s: &mut Settings| {
        s.telemetry.otlp_endpoint = receiver.url.clone();
        s.telemetry.otlp_interval = Duration::from_millis(100);
        s.telemetry.service_name = "messaging-test".into();
    }
}

async fn traced_app(receiver: &OtlpReceiver, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let export = export_to(receiver);
    spawn_app_with(Db::Sqlite, |s| {
        export(s);
        configure(s);
    })
    .await
}

/// Sends an SMS (with `traceparent` when given); returns its event id.
async fn send(app: &TestApp, body: &str, traceparent: Option<&str>) -> String {
    let mut request = app.client.post(app.url("/api/messages/sms"));
    if let Some(tp) = traceparent {
        request = request.insert_header(("traceparent", tp));
    }
    let (status, answer) = app
        .request(request, Some(&sms("+12016661234", "+18045551234", body)))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["event_id"].as_str().unwrap().to_string()
}

/// The spans of the trace whose `process` span handled `event_id`, once `expected` of
/// them have arrived.
async fn trace_of(receiver: &OtlpReceiver, event_id: &str, expected: usize) -> Vec<ReceivedSpan> {
    let find = || {
        let spans = receiver.spans();
        let trace_id = spans
            .iter()
            .find(|s| {
                s.name == "process"
                    && s.attribute("messaging.message.id").as_deref() == Some(event_id)
            })
            .map(|s| s.trace_id.clone())?;
        let trace: Vec<_> = spans
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        (trace.len() >= expected).then_some(trace)
    };
    eventually(WAIT, "the message's spans reach the receiver", || async {
        find().is_some()
    })
    .await;
    find().unwrap()
}

fn one<'a>(trace: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = trace.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name:?} span in {trace:#?}");
    found[0]
}

/// A message's five spans: request, enqueue, process, deliver and provider send.
fn stages(trace: &[ReceivedSpan]) -> [&ReceivedSpan; 5] {
    let names = [
        "POST /api/messages/sms",
        "enqueue",
        "process",
        "deliver",
        "provider send",
    ];
    names.map(|name| one(trace, name))
}

#[actix_web::test]
async fn one_message_is_one_trace_from_the_request_to_the_provider_call() {
    let receiver = OtlpReceiver::start();
    let app = traced_app(&receiver, |_| {}).await;
    let event_id = send(&app, "traced", None).await;
    app.drained().await;

    let trace = trace_of(&receiver, &event_id, 5).await;
    assert_eq!(trace.len(), 5, "{trace:#?}");
    let [request, enqueue, process, deliver, provider] = stages(&trace);

    // request → enqueue → {process (stored), deliver (the delivery stage) → provider send}.
    assert_eq!(
        request.parent_span_id, "",
        "a new trace starts at the request"
    );
    assert_eq!(enqueue.parent_span_id, request.span_id);
    assert_eq!(process.parent_span_id, enqueue.span_id);
    assert_eq!(deliver.parent_span_id, enqueue.span_id);
    assert_eq!(provider.parent_span_id, deliver.span_id);
    assert_eq!(
        [
            request.kind,
            enqueue.kind,
            process.kind,
            deliver.kind,
            provider.kind
        ],
        [SERVER, PRODUCER, CONSUMER, CONSUMER, CLIENT]
    );
    assert!(trace.iter().all(|s| s.service == "messaging-test"));

    request.assert_attribute("http.request.method", "POST");
    request.assert_attribute("http.route", "/api/messages/sms");
    request.assert_attribute("http.response.status_code", "202");
    for span in [enqueue, process] {
        span.assert_attribute("messaging.message.id", event_id.as_str());
        span.assert_attribute("messaging.system", "memory");
    }
    assert_eq!(process.events, ["stored"]);
    process.assert_attribute("message.outcome", "stored");
    deliver.assert_attribute("message.outcome", "sent");
    deliver.assert_attribute("messaging.system", "database");
    provider.assert_attribute("provider.name", "sms");
    provider.assert_attribute("provider.outcome", "sent");
    assert!(
        trace.iter().all(|s| s.status_code != 2),
        "nothing failed: {trace:#?}"
    );

    // Spans hold no message content or addresses (logs mask them; traces leave them out).
    let values: Vec<String> = trace
        .iter()
        .flat_map(|s| s.attributes.iter().map(|kv| format!("{:?}", kv.value)))
        .collect();
    assert!(
        values
            .iter()
            .all(|v| !v.contains("traced") && !v.contains("2016661234")),
        "{values:?}"
    );
}

#[actix_web::test]
async fn a_request_traceparent_continues_the_callers_trace() {
    let receiver = OtlpReceiver::start();
    let app = traced_app(&receiver, |_| {}).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let event_id = send(
        &app,
        "continued",
        Some(&format!("00-{trace_id}-{caller_span}-01")),
    )
    .await;
    // A malformed one is ignored: the request is served and starts a trace of its own.
    let other = send(&app, "malformed", Some("00-not-a-trace-01")).await;
    app.drained().await;

    let trace = trace_of(&receiver, &event_id, 5).await;
    assert!(trace.iter().all(|s| s.trace_id == trace_id), "{trace:#?}");
    assert_eq!(
        one(&trace, "POST /api/messages/sms").parent_span_id,
        caller_span
    );
    one(&trace, "provider send");

    let fresh = trace_of(&receiver, &other, 5).await;
    assert_ne!(fresh[0].trace_id, trace_id);
    assert_eq!(one(&fresh, "POST /api/messages/sms").parent_span_id, "");
}

#[actix_web::test]
async fn every_attempt_of_a_failing_message_is_marked_in_the_same_trace() {
    let receiver = OtlpReceiver::start();
    let app = traced_app(&receiver, |s| {
        s.providers.sms.mock_error_rate = 1.0;
        s.retry.max_attempts = 2;
    })
    .await;
    let event_id = send(&app, "doomed", None).await;
    app.drained().await;

    // request, enqueue, the process span that stored it, and per delivery attempt a
    // deliver and a provider span.
    let trace = trace_of(&receiver, &event_id, 7).await;
    assert_eq!(trace.len(), 7, "{trace:#?}");
    one(&trace, "enqueue");
    assert_eq!(one(&trace, "process").events, ["stored"]);
    let deliveries: Vec<_> = trace.iter().filter(|s| s.name == "deliver").collect();
    let attempts: BTreeSet<_> = deliveries
        .iter()
        .map(|s| s.attribute("message.attempt").unwrap())
        .collect();
    assert_eq!(attempts, BTreeSet::from(["0".to_string(), "1".to_string()]));
    let enqueue_id = &one(&trace, "enqueue").span_id;
    for deliver in &deliveries {
        assert_eq!(
            &deliver.parent_span_id, enqueue_id,
            "attempts hang off the enqueue"
        );
        assert_eq!(deliver.status_code, 2, "failed: {deliver:#?}");
        assert_eq!(deliver.events, ["failed"], "{deliver:#?}");
        deliver.assert_attribute("message.outcome", "failed");
        deliver.assert_attribute("error.type", "transient");
    }
    for provider in trace.iter().filter(|s| s.name == "provider send") {
        assert_eq!(provider.status_code, 2);
        provider.assert_attribute("provider.outcome", "server_error");
    }
}

#[actix_web::test]
async fn otlp_pushes_the_metrics_that_metrics_exposes() {
    let receiver = OtlpReceiver::start();
    let app = traced_app(&receiver, |_| {}).await;
    send(&app, "one", None).await;
    send(&app, "two", None).await;
    let (status, _) = app
        .post_json("/api/messages/sms", &serde_json::json!({"from": "x"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.drained().await;

    // A push taken after the traffic: every count is in it.
    eventually(WAIT, "a push with both messages stored", || async {
        receiver.points().iter().any(|p| {
            p.metric == "messaging_worker_processed"
                && p.attributes.contains(&("outcome".into(), "stored".into()))
                && p.value == 2.0
        })
    })
    .await;
    let points = receiver.points();
    assert!(points.iter().all(|p| p.service == "messaging-test"));
    let pushed: BTreeSet<String> = points.iter().map(|p| p.metric.clone()).collect();

    // Prometheus adds `_total` to counters and `_seconds` to second-valued instruments,
    // and writes dots as underscores; otherwise the names are the same.
    let (_, text) = app.get("/metrics").await;
    let scraped: BTreeSet<String> = text
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| rest.split(' ').next().unwrap().to_string())
        .collect();
    let as_prometheus = |name: &str| {
        let base = name.replace('.', "_");
        [
            base.clone(),
            format!("{base}_total"),
            format!("{base}_seconds"),
        ]
        .into_iter()
        .find(|candidate| scraped.contains(candidate))
    };
    let mapped: BTreeSet<String> = pushed.iter().filter_map(|n| as_prometheus(n)).collect();
    assert_eq!(mapped, scraped, "pushed: {pushed:?}");
    assert!(
        pushed.contains("http.server.request.duration"),
        "{pushed:?}"
    );

    let latest = |metric: &str, attributes: &[(&str, &str)]| {
        points
            .iter()
            .rev()
            .find(|p| {
                p.metric == metric
                    && attributes
                        .iter()
                        .all(|(k, v)| p.attributes.contains(&(k.to_string(), v.to_string())))
            })
            .map(|p| p.value)
    };
    assert_eq!(latest("messaging_queue_enqueued", &[]), Some(2.0));
    assert_eq!(latest("messaging_ready", &[]), Some(1.0));
    assert_eq!(
        latest(
            "http.server.request.duration",
            &[
                ("http.request.method", "POST"),
                ("http.route", "/api/messages/sms"),
                ("http.response.status_code", "400"),
            ]
        ),
        Some(1.0)
    );
}

/// The real binary, its stderr collected as it is written (a full pipe would block it).
struct Process {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    fn start(database: &TestDatabase, env: &[(&str, String)]) -> Process {
        Self::start_with(database, &[], env)
    }

    /// `messaging-server ARGS` (e.g. `serve --role worker`).
    fn start_with(database: &TestDatabase, args: &[&str], env: &[(&str, String)]) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = binary_on(port)
            .args(args)
            .env("DATABASE_URL", &database.url)
            .env("MESSAGING__SERVER__HTTP_WORKERS", "1")
            .env("MESSAGING__LOG__FORMAT", "json")
            // Each event's own line ("event processed") is at debug.
            .env("LOG_LEVEL", "info,messaging_server::actors::worker=debug")
            .env("AUTH_REQUIRED", "false")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let (stderr, reader) = capture(child.stderr.take().unwrap());
        Process {
            child,
            port,
            stderr,
            reader: Some(reader),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGTERM, then the log lines (JSON) once it has exited.
    fn terminate(mut self) -> Vec<Value> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.reader.take().unwrap().join().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        stderr
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|_| panic!("not JSON: {line:?} in\n{stderr}"))
            })
            .collect()
    }
}

/// A test that fails before `terminate` leaves no server running.
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn a_collector_in_trouble_costs_one_warning_and_never_holds_up_messages() {
    let receiver = OtlpReceiver::start();
    receiver.set_failing(Some(500));
    let database = TestDatabase::create(Db::Sqlite).await;
    let server = Process::start(
        &database,
        &[
            ("MESSAGING__TELEMETRY__OTLP_ENDPOINT", receiver.url.clone()),
            ("MESSAGING__TELEMETRY__OTLP_INTERVAL", "100ms".into()),
        ],
    );
    let client = awc::Client::default();
    eventually(WAIT, "the server answers", || async {
        client.get(server.url("/healthz")).send().await.is_ok()
    })
    .await;

    // Messages are accepted and stored while every push fails.
    for i in 0..3 {
        let response = client
            .post(server.url("/api/messages/sms"))
            .send_json(&sms("+12016661234", "+18045551234", &format!("m{i}")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    eventually(WAIT, "messages stored and many pushes refused", || async {
        let stored = match client.get(server.url("/metrics")).send().await {
            Ok(mut r) => String::from_utf8_lossy(&r.body().await.unwrap_or_default())
                .contains("messaging_worker_processed_total{outcome=\"stored\"} 3"),
            Err(_) => false,
        };
        stored && receiver.attempts().0 >= 5 && receiver.attempts().1 >= 1
    })
    .await;

    // The collector recovers: pushes are accepted again, with no restart.
    receiver.set_failing(None);
    eventually(WAIT, "a push accepted after the recovery", || async {
        receiver
            .points()
            .iter()
            .any(|p| p.metric == "messaging_queue_enqueued" && p.value == 3.0)
    })
    .await;

    let lines = server.terminate();
    let about = |message: &str, what: &str| {
        lines
            .iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
                    && l["what"] == what
            })
            .count()
    };
    assert_eq!(about("OTLP export failed", "metrics"), 1, "{lines:#?}");
    assert_eq!(about("OTLP export failed", "spans"), 1, "{lines:#?}");
    assert_eq!(about("OTLP export works again", "metrics"), 1, "{lines:#?}");
    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The log lines about a message name its trace.
    let processed: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "event processed")
        .collect();
    assert_eq!(processed.len(), 3, "{lines:#?}");
    for line in processed {
        let trace_id = line["span"]["trace_id"].as_str().unwrap_or_default();
        assert!(
            trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{line}"
        );
    }
}

/// With the NATS backend, the API and the workers are separate processes: the trace context
/// travels in the event, so the worker's spans continue the trace the API process started
/// (here from the caller's own `traceparent`).
#[actix_web::test]
async fn api_and_worker_processes_on_nats_join_one_trace() {
    if common::require_tool("nats-server").is_none() {
        return;
    }
    let receiver = OtlpReceiver::start();
    let nats = NatsServer::start().await;
    let database = TestDatabase::create(Db::Sqlite).await;
    let env = |service: &str| {
        vec![
            ("MESSAGING__TELEMETRY__OTLP_ENDPOINT", receiver.url.clone()),
            ("MESSAGING__TELEMETRY__OTLP_INTERVAL", "100ms".to_string()),
            ("MESSAGING__TELEMETRY__SERVICE_NAME", service.to_string()),
            ("QUEUE_BACKEND", "nats".to_string()),
            ("NATS_URL", nats.url()),
        ]
    };
    let client = awc::Client::default();
    let ready = |process: &Process| {
        let url = process.url("/readyz");
        let client = client.clone();
        async move {
            eventually(WAIT, "the process is ready", || async {
                matches!(client.get(&url).send().await, Ok(r) if r.status() == StatusCode::OK)
            })
            .await
        }
    };
    // One after the other: the first start migrates the database.
    let api = Process::start_with(
        &database,
        &["serve", "--role", "api"],
        &env("messaging-api"),
    );
    ready(&api).await;
    let worker = Process::start_with(
        &database,
        &["serve", "--role", "worker"],
        &env("messaging-worker"),
    );
    ready(&worker).await;

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut response = client
        .post(api.url("/api/messages/sms"))
        .insert_header(("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01")))
        .send_json(&sms("+12016661234", "+18045551234", "across processes"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let answer: Value = response.json().await.unwrap();
    let event_id = answer["event_id"].as_str().unwrap().to_string();

    let trace = trace_of(&receiver, &event_id, 5).await;
    assert!(trace.iter().all(|s| s.trace_id == trace_id), "{trace:#?}");
    let [request, enqueue, process, deliver, provider] = stages(&trace);
    assert_eq!(
        [&request.service, &enqueue.service],
        ["messaging-api", "messaging-api"]
    );
    assert_eq!(
        [&process.service, &deliver.service, &provider.service],
        ["messaging-worker", "messaging-worker", "messaging-worker"]
    );
    assert_eq!(
        process.parent_span_id, enqueue.span_id,
        "joined across processes"
    );
    assert_eq!(deliver.parent_span_id, enqueue.span_id);
    assert_eq!(provider.parent_span_id, deliver.span_id);
    process.assert_attribute("messaging.system", "nats");

    worker.terminate();
    api.terminate();
}
