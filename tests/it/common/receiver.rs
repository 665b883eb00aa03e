//! A customer's webhook receiver (tests/peers/webhook_receiver.py), checking every delivery with
//! the Standard Webhooks reference library, and the settings and calls tests use with it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use messaging_server::config::Settings;
use serde_json::{json, Value};

use super::peer::{self, Peer, Reports};
use super::TestApp;

/// tests/peers/webhook_receiver.py, and what it reported.
pub struct Receiver {
    peer: Peer,
    pub port: u16,
    pub dir: PathBuf,
    seen: Reports,
}

impl Receiver {
    pub async fn start() -> Option<Receiver> {
        let dir = std::env::temp_dir().join(format!("ms-hooks-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_in(dir, 0, Arc::default()).await
    }

    /// Starts the receiver on `port` (0: a free one), adding its reports to `seen`.
    pub async fn start_in(dir: PathBuf, port: u16, seen: Reports) -> Option<Receiver> {
        let python = super::tools::python_with("standardwebhooks")?;
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/webhook_receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(&dir)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("stderr-{port}.log"))).unwrap())
            .spawn()
            .expect("python runs tests/peers/webhook_receiver.py");
        let started_before = peer::ready_count(&seen);
        peer::read_reports(child.stdout.take().unwrap(), seen.clone());
        let peer = Peer::new(child, "webhook receiver's files", dir.clone());
        let port = peer::ready_port(&seen, started_before, "the receiver listens").await;
        Some(Receiver {
            peer,
            port,
            dir,
            seen,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// Registers this receiver at `app` for all events and gives it the endpoint's secret,
    /// to verify deliveries with; returns the endpoint.
    pub async fn subscribe(&self, app: &TestApp) -> Value {
        let endpoint = register(app, &self.url()).await;
        self.set("secrets", endpoint["secret"].as_str().unwrap());
        endpoint
    }

    pub fn set(&self, file: &str, text: &str) {
        std::fs::write(self.dir.join(file), text).unwrap();
    }

    pub fn reports(&self, filter: impl Fn(&Value) -> bool) -> Vec<Value> {
        peer::matching(&self.seen, filter)
    }

    /// The deliveries it took (verified and answered 2xx).
    pub fn taken(&self) -> Vec<Value> {
        self.reports(|r| r["verified"] == true && r["answered"].as_u64().unwrap_or(0) < 300)
    }

    /// The first delivery it took of an event of type `event_type`.
    pub fn taken_event(&self, event_type: &str) -> Value {
        self.taken()
            .into_iter()
            .find(|r| r["event"]["type"] == event_type)
            .unwrap_or_else(|| panic!("no {event_type} taken"))
    }

    /// The requests it got at all.
    pub fn requests(&self) -> Vec<Value> {
        self.reports(|r| r.get("answered").is_some())
    }

    /// Stops it (the port is refused until [`Self::restart`]).
    pub fn stop(&mut self) {
        self.peer.stop();
    }

    /// Starts it again on its port, after [`Self::stop`]; one history across both lives.
    pub async fn restart(self) -> Receiver {
        let (port, seen) = (self.port, self.seen.clone());
        // Its files are the new one's.
        let dir = self.peer.hand_over_files();
        Receiver::start_in(dir, port, seen).await.unwrap()
    }
}

/// Short retries for tests: the schedule of SPEC §15 in seconds instead of hours.
pub fn webhook_settings(settings: &mut Settings) {
    let hooks = &mut settings.webhooks;
    hooks.allow_private = true;
    hooks.timeout = Duration::from_secs(2);
    hooks.lease = Duration::from_secs(5);
    hooks.poll_interval = Duration::from_millis(50);
    hooks.retry_schedule = [100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000, 1000]
        .map(Duration::from_millis)
        .to_vec();
}

/// Registers `url` for all events; returns the endpoint (with its secret).
pub async fn register(app: &TestApp, url: &str) -> Value {
    create_endpoint(app, &json!({"url": url, "description": "test"})).await
}

/// Creates the webhook endpoint `body` describes, asserting it is created; returns it
/// (with its id and secret).
pub async fn create_endpoint(app: &TestApp, body: &Value) -> Value {
    let (status, endpoint) = app.post_json("/api/webhook-endpoints", body).await;
    let db = app.database.kind;
    assert_eq!(status, StatusCode::CREATED, "{db:?} {body}: {endpoint}");
    endpoint
}

/// The events taken by `receiver`, as (type, idempotency key), with how many times.
pub fn events_by_message(receiver: &Receiver) -> HashMap<(String, String), usize> {
    let mut seen = HashMap::new();
    for r in receiver.taken() {
        let event = &r["event"];
        let key = (
            event["type"].as_str().unwrap().to_string(),
            event["data"]["idempotency_key"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}
