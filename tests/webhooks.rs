//! Webhooks to customers (SPEC §15), against a receiver that checks every delivery with the
//! Standard Webhooks reference library (tests/webhook_receiver.py), on both databases and
//! both queue backends, in-process and as a real process killed with SIGKILL.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use common::{databases, eventually, sms, spawn_app_with, Db, TestApp};
use messaging_server::startup::Hooks;
use messaging_server::config::{QueueBackendKind, Settings};
use messaging_server::store::keys::{self, Scope};
use serde_json::{json, Value};

/// tests/webhook_receiver.py, and what it reported.
struct Receiver {
    child: Child,
    port: u16,
    dir: PathBuf,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start() -> Option<Receiver> {
        let dir = std::env::temp_dir().join(format!("ms-hooks-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_in(dir, 0).await
    }

    async fn start_in(dir: PathBuf, port: u16) -> Option<Receiver> {
        let python = common::tools::python_with("standardwebhooks")?;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/webhook_receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(&dir)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("stderr-{port}.log"))).unwrap())
            .spawn()
            .expect("python runs tests/webhook_receiver.py");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stdout, sink) = (child.stdout.take().unwrap(), seen.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(serde_json::from_str(&line).unwrap());
            }
        });
        let mut receiver = Receiver {
            child,
            port: 0,
            dir,
            seen,
        };
        eventually(Duration::from_secs(30), "the receiver listens", || {
            let ready = receiver.reports(|r| r["ready"].is_u64());
            async move { !ready.is_empty() }
        })
        .await;
        receiver.port = receiver.reports(|r| r["ready"].is_u64())[0]["ready"]
            .as_u64()
            .unwrap() as u16;
        Some(receiver)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    fn set(&self, file: &str, text: &str) {
        std::fs::write(self.dir.join(file), text).unwrap();
    }

    fn reports(&self, filter: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.seen.lock().unwrap().iter().filter(|r| filter(r)).cloned().collect()
    }

    /// The deliveries it took (verified and answered 2xx).
    fn taken(&self) -> Vec<Value> {
        self.reports(|r| r["verified"] == true && r["answered"].as_u64().unwrap_or(0) < 300)
    }

    /// The requests it got at all.
    fn requests(&self) -> Vec<Value> {
        self.reports(|r| r.get("answered").is_some())
    }

    /// Stops it (the port is refused until [`Self::restart`]).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(self) -> Receiver {
        let (dir, port, seen) = (self.dir.clone(), self.port, self.seen.clone());
        std::mem::forget(self);
        let mut again = Receiver::start_in(dir, port).await.unwrap();
        // One history across both lives.
        let newer = std::mem::take(&mut *again.seen.lock().unwrap());
        seen.lock().unwrap().extend(newer);
        again.seen = seen;
        again
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("webhook receiver's files: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Short retries for tests: the schedule of SPEC §15 in seconds instead of hours.
fn webhook_settings(settings: &mut Settings) {
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
async fn register(app: &TestApp, url: &str) -> Value {
    let (status, endpoint) = app
        .post_json("/api/webhook-endpoints", &json!({"url": url, "description": "test"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    endpoint
}

/// The events taken by `receiver`, as (type, idempotency key), with how many times.
fn events_by_message(receiver: &Receiver) -> HashMap<(String, String), usize> {
    let mut seen = HashMap::new();
    for r in receiver.taken() {
        let event = &r["event"];
        let key = (
            event["type"].as_str().unwrap().to_string(),
            event["data"]["idempotency_key"].as_str().unwrap_or("").to_string(),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

async fn backends() -> Vec<(Db, Option<common::nats::NatsServer>)> {
    let mut all: Vec<(Db, Option<common::nats::NatsServer>)> =
        databases().into_iter().map(|db| (db, None)).collect();
    all.push((Db::Sqlite, Some(common::nats::NatsServer::start().await)));
    all
}

#[actix_web::test]
async fn messages_in_and_out_reach_a_verifying_receiver_once_each() {
    for (db, nats) in backends().await {
        let Some(receiver) = Receiver::start().await else {
            return;
        };
        let app = spawn_app_with(
            db,
            |s| {
                webhook_settings(s);
                if let Some(nats) = &nats {
                    s.queue.backend = QueueBackendKind::Nats;
                    s.queue.nats.url = nats.url();
                }
            },
            Hooks::default(),
        )
        .await;
        let endpoint = register(&app, &receiver.url()).await;
        let secret = endpoint["secret"].as_str().unwrap();
        assert!(secret.starts_with("whsec_"), "{endpoint}");
        receiver.set("secrets", secret);
        let id = endpoint["id"].as_str().unwrap().to_string();
        let (status, shown) = app.get(&format!("/api/webhook-endpoints/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(shown.get("secret").is_none(), "the secret is shown once: {shown}");

        let inbound = json!({"from": "+18045551234", "to": "+12016661234", "type": "sms",
                             "messaging_provider_id": "in-1", "body": "hello"});
        let (status, received) = app.post_json("/api/webhooks/sms", &inbound).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, sent) = app
            .post_json("/api/messages/sms", &sms("+12016661234", "+18045551234", "hi back"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let key = |v: &Value| v["idempotency_key"].as_str().unwrap().to_string();
        let wanted = [
            ("message.received".to_string(), key(&received)),
            ("message.sent".to_string(), key(&sent)),
        ];
        eventually(Duration::from_secs(30), "both events delivered", || {
            let seen = events_by_message(&receiver);
            let all = wanted.iter().all(|w| seen.contains_key(w));
            async move { all }
        })
        .await;
        // Nothing else is due: the queue and the outbox are empty once the pending gauge
        // is 0; then each event arrived exactly once.
        eventually(Duration::from_secs(30), "no delivery pending", || async {
            let (_, text) = app.get("/metrics").await;
            text.as_str().unwrap().contains("messaging_webhook_pending 0")
        })
        .await;
        let seen = events_by_message(&receiver);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.values().all(|n| *n == 1), "{seen:?}");
        assert_eq!(receiver.requests().len(), 2, "no unverified or repeated call");
        let taken = receiver.taken();
        for r in &taken {
            let event = &r["event"];
            assert!(r["id"].as_str().unwrap().starts_with("msg_"));
            assert!(event["timestamp"].as_str().is_some());
            let status = event["data"]["status"].as_str().unwrap();
            match event["type"].as_str().unwrap() {
                "message.received" => assert_eq!(status, "received"),
                _ => assert_eq!(status, "sent"),
            }
        }

        // A delivery with its body changed does not verify.
        let first = &taken[0];
        let tampered = first["body"].as_str().unwrap().replace("hello", "hellO");
        let tampered = if tampered == first["body"] {
            first["body"].as_str().unwrap().replacen('{', "{ ", 1)
        } else {
            tampered
        };
        let answer = app
            .client
            .post(receiver.url())
            .insert_header(("webhook-id", first["id"].as_str().unwrap()))
            .insert_header(("webhook-timestamp", first["timestamp"].as_str().unwrap()))
            .insert_header(("webhook-signature", first["signature"].as_str().unwrap()))
            .send_body(tampered)
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);

        // The attempts, as the customer sees them.
        let (status, attempts) = app.get(&format!("/api/webhook-endpoints/{id}/attempts")).await;
        assert_eq!(status, StatusCode::OK, "{attempts}");
        let items = attempts["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{attempts}");
        for a in items {
            assert_eq!(a["status_code"], 204, "{a}");
            assert!(a["latency_ms"].as_i64().unwrap() >= 0);
            assert_eq!(a["response"], "ok");
            assert!(a["error"].is_null());
        }

        // Rotation: the old secret keeps verifying (both sign), then the new one alone.
        let (status, rotated) = app
            .post_json(&format!("/api/webhook-endpoints/{id}/rotate-secret"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        let new_secret = rotated["secret"].as_str().unwrap().to_string();
        assert_ne!(new_secret, secret);
        for (n, secrets) in [(1, secret.to_string()), (2, new_secret.clone())] {
            receiver.set("secrets", &secrets);
            let (_, more) = app
                .post_json("/api/messages/sms", &sms("+12016661234", "+18045551234", &format!("after rotation {n}")))
                .await;
            let wanted = ("message.sent".to_string(), key(&more));
            eventually(Duration::from_secs(30), "verified after rotation", || {
                let seen = events_by_message(&receiver);
                let ok = seen.contains_key(&wanted);
                async move { ok }
            })
            .await;
        }
        assert_eq!(
            receiver.reports(|r| r["verified"] == false).len(),
            1,
            "every delivery verified (the one refused is the tampered copy): {:?}",
            receiver.requests()
        );

        // Another customer neither sees nor changes it.
        let customer = keys::create_customer(app.db(), "other").await.unwrap();
        let other = common::create_key(app.db(), customer, &[Scope::Send]).await;
        let get = app
            .client
            .get(app.url(&format!("/api/webhook-endpoints/{id}")))
            .bearer_auth(&other);
        assert_eq!(app.send(get, None).await.0, StatusCode::NOT_FOUND);
        let list = app.client.get(app.url("/api/webhook-endpoints")).bearer_auth(&other);
        assert_eq!(app.send(list, None).await.1["items"], json!([]));

        let (_, text) = app.get("/metrics").await;
        assert!(
            text.as_str()
                .unwrap()
                .contains("messaging_webhook_deliveries_total{outcome=\"delivered\""),
            "{text}"
        );
    }
}
