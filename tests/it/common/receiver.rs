//! A customer's webhook receiver (tests/peers/webhook_receiver.py), checking every delivery with
//! the Standard Webhooks reference library, and the settings and calls tests use with it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use messaging_server::config::Settings;
use serde_json::{json, Value};

use super::{eventually, TestApp};

/// tests/peers/webhook_receiver.py, and what it reported.
pub struct Receiver {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    pub async fn start() -> Option<Receiver> {
        let dir = std::env::temp_dir().join(format!("ms-hooks-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_in(dir, 0, Arc::default()).await
    }

    /// Starts the receiver on `port` (0: a free one), adding its reports to `seen`.
    pub async fn start_in(
        dir: PathBuf,
        port: u16,
        seen: Arc<Mutex<Vec<Value>>>,
    ) -> Option<Receiver> {
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
        let is_ready = |r: &Value| r["ready"].is_u64();
        let started_before = seen.lock().unwrap().iter().filter(|r| is_ready(r)).count();
        let (stdout, sink) = (child.stdout.take().unwrap(), seen.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        let mut receiver = Receiver {
            child,
            port: 0,
            dir,
            seen,
        };
        eventually(Duration::from_secs(30), "the receiver listens", || {
            let started = receiver.reports(is_ready).len();
            async move { started > started_before }
        })
        .await;
        receiver.port = receiver.reports(is_ready).last().unwrap()["ready"]
            .as_u64()
            .unwrap() as u16;
        Some(receiver)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    pub fn set(&self, file: &str, text: &str) {
        std::fs::write(self.dir.join(file), text).unwrap();
    }

    pub fn reports(&self, filter: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| filter(r))
            .cloned()
            .collect()
    }

    /// The deliveries it took (verified and answered 2xx).
    pub fn taken(&self) -> Vec<Value> {
        self.reports(|r| r["verified"] == true && r["answered"].as_u64().unwrap_or(0) < 300)
    }

    /// The requests it got at all.
    pub fn requests(&self) -> Vec<Value> {
        self.reports(|r| r.get("answered").is_some())
    }

    /// Stops it (the port is refused until [`Self::restart`]).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on its port, after [`Self::stop`]; one history across both lives.
    pub async fn restart(mut self) -> Receiver {
        let (dir, port, seen) = (self.dir.clone(), self.port, self.seen.clone());
        // Its files are the new one's.
        self.dir = PathBuf::new();
        drop(self);
        Receiver::start_in(dir, port, seen).await.unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if std::thread::panicking() {
            eprintln!("webhook receiver's files: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
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
    let (status, endpoint) = app
        .post_json(
            "/api/webhook-endpoints",
            &json!({"url": url, "description": "test"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
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
