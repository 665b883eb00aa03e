//! The NATS JetStream backend against real `nats-server -js` processes (SPEC §10): no
//! mocks. In-process applications for what one process shows (on SQLite and PostgreSQL);
//! the real binary for API and worker processes killed with SIGKILL (PostgreSQL).

use crate::common;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use common::nats::{free_port, nats_databases, NatsCluster, NatsServer};
use common::server::binary_on;
use common::stub::{Answer, StubProvider};
use common::{
    databases, eventually, sample, scalar_at, sms, spawn_on, test_settings, Db, TestApp,
    TestDatabase,
};
use messaging_server::config::{QueueBackendKind, Settings};
use messaging_server::domain::IdempotencyKey;
use messaging_server::http::AppState;
use messaging_server::startup::{Application, Hooks, StartupError};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_messaging-server");

fn use_nats(settings: &mut Settings, url: &str) {
    settings.queue.backend = QueueBackendKind::Nats;
    settings.queue.nats.url = url.to_string();
    // Redelivery after a lost worker is awaited in some tests: keep it short.
    settings.queue.nats.ack_wait = Duration::from_secs(2);
}

/// The application on a new `db` database, queueing on `nats`, with `configure` applied
/// after [`use_nats`].
async fn spawn_on_nats(
    db: Db,
    nats: &NatsServer,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let url = nats.url();
    let configure = |s: &mut Settings| {
        use_nats(s, &url);
        configure(s);
    };
    spawn_on(TestDatabase::create(db).await, configure, Hooks::default()).await
}

/// Starts another application (e.g. workers) on an existing database.
async fn start_app(settings: Settings, hooks: Hooks) -> AppState {
    let app = Application::build_with(settings, hooks)
        .await
        .expect("application starts");
    let state = app.state().clone();
    actix_web::rt::spawn(app.run_until_stopped());
    state
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::from_stored(text.to_string())
}

#[actix_web::test]
async fn events_wait_durably_are_deduplicated_and_stored_once_by_workers() {
    for db in nats_databases() {
        let nats = NatsServer::start().await;
        let api = spawn_on_nats(db, &nats, |s| s.worker.enabled = false).await;
        let mut keys = Vec::new();
        for i in 0..10 {
            let body = sms(&format!("+1201666{i:04}"), "+18045551234", &format!("n{i}"));
            let (status, answer) = api.post_json("/api/messages/sms", &body).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{db:?}: {answer}");
            keys.push(answer["idempotency_key"].as_str().unwrap().to_string());
        }
        // A client retry of the first: answered 202 again, queued once (Nats-Msg-Id).
        let (status, answer) = api
            .post_json(
                "/api/messages/sms",
                &sms("+12016660000", "+18045551234", "n0"),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(answer["idempotency_key"], keys[0].as_str());
        for k in &keys {
            assert!(
                api.state.backend.is_queued(&key(k)).await.unwrap(),
                "{k} queued"
            );
        }
        assert!(!api
            .state
            .backend
            .is_queued(&key(&"0".repeat(64)))
            .await
            .unwrap());
        eventually(Duration::from_secs(10), "depth 10 (not 11)", || async {
            api.state.backend.depth() == 10
        })
        .await;
        let (_, text) = api.get("/metrics").await;
        assert_eq!(
            sample(text.as_str().unwrap(), "messaging_queue_depth", ""),
            10.0
        );
        assert_eq!(api.scalar("SELECT COUNT(*) FROM messages").await, 0);
        let (status, ready) = api.get("/readyz").await;
        assert_eq!(status, StatusCode::OK, "{ready}");
        assert_eq!(ready["checks"]["queue"], "nats");

        // Workers in another application on the same stream and database store them.
        let mut settings = test_settings(&api.database.url);
        use_nats(&mut settings, &nats.url());
        let workers = start_app(settings, Hooks::default()).await;
        eventually(Duration::from_secs(20), "all stored", || async {
            api.sent_count().await == 10
        })
        .await;
        eventually(Duration::from_secs(10), "stream drained", || async {
            workers.backend.depth() == 0
        })
        .await;
        for k in &keys {
            assert!(
                !workers.backend.is_queued(&key(k)).await.unwrap(),
                "{k} done"
            );
        }
        api.assert_stored(10).await;
    }
}

#[actix_web::test]
async fn a_transient_failure_is_redelivered_after_its_nak_delay() {
    for db in nats_databases() {
        let nats = NatsServer::start().await;
        let stub = StubProvider::start(vec![Answer::Status(503, None)], Answer::Accept);
        let database = TestDatabase::create(db).await;
        let app = common::spawn_with_stub(database, &stub, |settings| {
            use_nats(settings, &nats.url());
            // Jittered delay in [0.5 s, 1 s]; ack_wait (2 s) would be later still.
            settings.retry.base_delay = Duration::from_secs(1);
            settings.retry.max_delay = Duration::from_secs(1);
        })
        .await;
        let answer = app.send_sms("retried").await;
        let k = answer["idempotency_key"].as_str().unwrap().to_string();
        eventually(Duration::from_secs(20), "sent", || async {
            app.sent_count().await == 1
        })
        .await;
        let calls = stub.calls();
        assert_eq!(calls.len(), 2, "{db:?}: one failure, one success");
        let gap = calls[1].at - calls[0].at;
        assert!(
            gap >= Duration::from_millis(500),
            "{db:?}: redelivered after {gap:?}, before the nak delay"
        );
        assert_eq!(stub.accepted(&k), 1);
        let (_, text) = app.get("/metrics").await;
        assert_eq!(
            sample(text.as_str().unwrap(), "messaging_retries_total", ""),
            1.0
        );
    }
}

#[actix_web::test]
async fn a_batch_slower_than_ack_wait_is_kept_by_in_progress_acks() {
    for db in nats_databases() {
        let nats = NatsServer::start().await;
        let app = spawn_on_nats(db, &nats, |s| {
            s.queue.nats.ack_wait = Duration::from_secs(1);
            // Twice ack_wait: without progress acks NATS would hand it to the other worker.
            s.providers.sms.mock_latency = Duration::from_millis(2500);
            s.worker.concurrency = 2;
        })
        .await;
        let (_, answer) = app.post_sms("slow provider").await;
        let k = answer["idempotency_key"].as_str().unwrap().to_string();
        eventually(Duration::from_secs(20), "sent", || async {
            app.sent_count().await == 1
        })
        .await;
        let (_, text) = app.get("/metrics").await;
        let text = text.as_str().unwrap();
        assert_eq!(
            sample(text, "messaging_queue_dequeued_total", ""),
            1.0,
            "{db:?}: delivered once"
        );
        assert_eq!(app.sms.successful_calls(&k), 1, "{db:?}: sent once");
    }
}

#[actix_web::test]
async fn a_message_that_is_not_an_event_is_dead_lettered_once_and_terminated() {
    for db in nats_databases() {
        let nats = NatsServer::start().await;
        let app = spawn_on_nats(db, &nats, |_| {}).await;
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        for (token, payload) in [("garbage", "not json"), ("json", r#"{"hello":1}"#)] {
            js.publish(format!("messaging.events.{token}"), payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        eventually(Duration::from_secs(10), "two dead letters", || async {
            app.scalar("SELECT COUNT(*) FROM dead_letters").await == 2
        })
        .await;
        let (_, page) = app.get("/api/dlq").await;
        let items = page["items"].as_array().unwrap();
        let garbage = items
            .iter()
            .find(|l| l["idempotency_key"] == "garbage")
            .expect("kept under its subject's key");
        assert_eq!(garbage["event"]["undecodable_payload"], "not json");
        assert_eq!(garbage["error_kind"], "permanent");
        let json = items
            .iter()
            .find(|l| l["idempotency_key"] == "json")
            .unwrap();
        assert_eq!(json["event"]["undecodable_payload"]["hello"], 1);
        // Terminated: gone from the stream.
        eventually(Duration::from_secs(10), "stream empty", || async {
            app.state.backend.depth() == 0
        })
        .await;
        // (A work-queue stream deletes a message once terminated: nothing left to redeliver.)
        assert!(!app.state.backend.is_queued(&key("garbage")).await.unwrap());
        assert_eq!(
            app.scalar("SELECT COUNT(*) FROM dead_letters").await,
            2,
            "{db:?}: one dead letter each"
        );
        let id = garbage["id"].as_i64().unwrap();
        let (status, _) = app.post_empty(&format!("/api/dlq/{id}/replay")).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "not an event: cannot be replayed"
        );
    }
}

#[actix_web::test]
async fn nats_down_gives_fast_503s_and_the_service_recovers_by_itself() {
    for db in nats_databases() {
        let mut nats = NatsServer::start().await;
        let app = spawn_on_nats(db, &nats, |s| {
            s.queue.nats.publish_timeout = Duration::from_secs(1);
        })
        .await;
        let send = |i: u32| sms("+12016661234", "+18045551234", &format!("outage {i}"));
        for i in 0..5 {
            assert_eq!(
                app.post_json("/api/messages/sms", &send(i)).await.0,
                StatusCode::ACCEPTED
            );
        }
        nats.kill();
        app.until_unready("readyz names the queue", "queue").await;
        for i in 5..10 {
            let started = Instant::now();
            let mut response = app
                .client
                .post(app.url("/api/messages/sms"))
                .bearer_auth(&app.admin_key)
                .send_json(&send(i))
                .await
                .unwrap();
            let elapsed = started.elapsed();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{db:?}");
            assert!(response.headers().contains_key("retry-after"));
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["status"], 503);
            assert!(
                elapsed < Duration::from_secs(3),
                "answered within publish_timeout, not after {elapsed:?}"
            );
        }
        nats.restart().await;
        eventually(Duration::from_secs(30), "readyz 200 again", || async {
            app.get("/readyz").await.0 == StatusCode::OK
        })
        .await;
        for i in 10..15 {
            assert_eq!(
                app.post_json("/api/messages/sms", &send(i)).await.0,
                StatusCode::ACCEPTED,
                "{db:?}"
            );
        }
        eventually(Duration::from_secs(30), "every 202 stored", || async {
            app.sent_count().await == 10
        })
        .await;
        app.assert_stored(10).await;
    }
}

#[actix_web::test]
async fn a_replayed_dead_letter_is_republished_even_within_the_duplicate_window() {
    for db in nats_databases() {
        let nats = NatsServer::start().await;
        let stub = StubProvider::start(vec![], Answer::Status(400, None));
        let database = TestDatabase::create(db).await;
        let app =
            common::spawn_with_stub(database, &stub, |settings| use_nats(settings, &nats.url()))
                .await;
        let (_, answer) = app.post_sms("refused, then fixed").await;
        let k = answer["idempotency_key"].as_str().unwrap().to_string();
        eventually(Duration::from_secs(10), "dead-lettered", || async {
            app.scalar("SELECT COUNT(*) FROM dead_letters").await == 1
        })
        .await;
        stub.set_fallback(Answer::Accept);
        let id = app.scalar("SELECT MAX(id) FROM dead_letters").await;
        let (status, _) = app.post_empty(&format!("/api/dlq/{id}/replay")).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        eventually(Duration::from_secs(10), "sent after the replay", || async {
            app.sent_count().await == 1
        })
        .await;
        assert_eq!(stub.accepted(&k), 1, "{db:?}");
    }
}

#[actix_web::test]
async fn a_full_stream_refuses_with_503_and_a_mismatched_stream_stops_start_up() {
    if common::require_tool("nats-server").is_none() {
        return;
    }
    let nats = NatsServer::start().await;
    let app = spawn_on_nats(Db::Sqlite, &nats, |s| {
        s.worker.enabled = false;
        s.queue.nats.max_bytes = 4096;
    })
    .await;
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..50 {
        let body = sms("+12016661234", "+18045551234", &format!("fill {i}"));
        let mut response = app
            .client
            .post(app.url("/api/messages/sms"))
            .bearer_auth(&app.admin_key)
            .send_json(&body)
            .await
            .unwrap();
        if response.status() == StatusCode::ACCEPTED {
            accepted += 1;
            continue;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        refused = Some(response.json::<Value>().await.unwrap());
        break;
    }
    let problem = refused.expect("a full stream refuses");
    assert_eq!(problem["type"], "urn:messaging-server:problem:queue-full");
    assert!(accepted > 0);
    eventually(
        Duration::from_secs(10),
        "nothing accepted was dropped",
        || async { app.state.backend.depth() == accepted },
    )
    .await;

    // A stream of another retention cannot become a work queue in place: start-up stops.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "OTHER".into(),
        subjects: vec!["other.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut settings = test_settings(&app.database.url);
    use_nats(&mut settings, &nats.url());
    settings.queue.nats.stream = "OTHER".into();
    settings.queue.nats.subject_prefix = "other".into();
    match Application::build(settings).await {
        Err(StartupError::Queue(err)) => {
            let line = err.to_string();
            assert!(
                line.contains("OTHER") && line.contains("retention"),
                "{line}"
            );
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a mismatched stream must stop start-up"),
    }

    // No NATS at all: start-up stops with a line naming it (the binary exits 1).
    let mut settings = test_settings(&app.database.url);
    use_nats(&mut settings, &format!("nats://127.0.0.1:{}", free_port()));
    match Application::build(settings).await {
        Err(StartupError::Queue(err)) => {
            assert!(err.to_string().contains("cannot connect to NATS"), "{err}")
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("start-up without NATS must fail"),
    }
}

// ---- real processes --------------------------------------------------------------------

/// PostgreSQL: what several processes share in production; `None` (the test is skipped)
/// where nats-server is not installed.
async fn postgres_with_nats() -> Option<TestDatabase> {
    common::require_tool("nats-server")?;
    assert!(
        databases().contains(&Db::Postgres),
        "these tests need PostgreSQL: set TEST_DATABASE_URL (CI does)"
    );
    Some(TestDatabase::create(Db::Postgres).await)
}

/// An admin key on the shared database (migrated by the first process started), for the
/// clients of the API processes: authentication is on, as in production.
async fn admin_key(database_url: &str) -> String {
    let db = Database::connect(database_url).await.expect("connect");
    let key = common::create_operator_key(&db).await;
    db.close().await.ok();
    key
}

/// A `messaging-server serve --role ROLE` process.
struct Proc {
    role: &'static str,
    port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Proc {
    async fn start(role: &'static str, env: &[(&str, String)]) -> Proc {
        let mut proc = Proc {
            role,
            port: free_port(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            child: None,
        };
        proc.launch().await;
        proc
    }

    async fn launch(&mut self) {
        let child = binary_on(self.port)
            .args(["serve", "--role", self.role])
            .env("MESSAGING__SERVER__HTTP_WORKERS", "1")
            .env("QUEUE_BACKEND", "nats")
            .env("LOG_LEVEL", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(self.log_file())
            .spawn()
            .expect("the binary runs");
        self.child = Some(child);
        let client = awc::Client::default();
        let url = self.url("/readyz");
        eventually(Duration::from_secs(30), "process ready", || async {
            matches!(client.get(&url).send().await, Ok(r) if r.status() == StatusCode::OK)
        })
        .await;
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Its /metrics text, or `None` while it does not answer (e.g. restarting).
    async fn metrics(&self, client: &awc::Client) -> Option<String> {
        let mut response = client.get(self.url("/metrics")).send().await.ok()?;
        Some(String::from_utf8(response.body().await.unwrap().to_vec()).unwrap())
    }

    /// The process's log, in the temp dir: kept when the test fails, to explain it.
    fn log_path(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("ms-nats-test-{}-{}.log", self.role, self.port))
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file")
    }

    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }

    /// SIGTERM, then the exit code.
    fn terminate(&mut self, within: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not exit within {within:?} of SIGTERM", self.role);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{} process log: {}", self.role, self.log_path().display());
        } else {
            let _ = std::fs::remove_file(self.log_path());
        }
    }
}

async fn stored_keys(url: &str) -> BTreeSet<String> {
    let db = Database::connect(url).await.expect("connect");
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT idempotency_key FROM messages".to_string(),
        ))
        .await
        .unwrap();
    db.close().await.ok();
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect()
}

/// Sends `total` distinct messages over `apis` (`concurrency` at a time) as a careful
/// client does: a 503 or a dead API is retried (on the next API) after a short pause, so
/// every message is eventually accepted once the service recovers. Returns the keys
/// answered 202 through `accepted`.
async fn load(
    apis: &[u16],
    key: &str,
    total: usize,
    concurrency: usize,
    accepted: Rc<RefCell<Vec<String>>>,
) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let senders = (0..concurrency).map(|lane| {
        let client = client.clone();
        let accepted = accepted.clone();
        async move {
            for i in (lane..total).step_by(concurrency) {
                let body = sms(
                    &format!("+1201666{:04}", i % 25),
                    "+18045551234",
                    &format!("load {i} {}", uuid::Uuid::new_v4()),
                );
                for attempt in 0..300 {
                    let port = apis[(i + attempt) % apis.len()];
                    let sent = client
                        .post(format!("http://127.0.0.1:{port}/api/messages/sms"))
                        .bearer_auth(key)
                        .send_json(&body)
                        .await;
                    if let Ok(mut response) = sent {
                        if response.status() == StatusCode::ACCEPTED {
                            let answer: Value = response.json().await.unwrap();
                            let k = answer["idempotency_key"].as_str().unwrap().to_string();
                            accepted.borrow_mut().push(k);
                            break;
                        }
                        assert_eq!(
                            response.status(),
                            StatusCode::SERVICE_UNAVAILABLE,
                            "only 503s while something is down"
                        );
                    }
                    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    futures_util::future::join_all(senders).await;
}

async fn until_accepted(accepted: &Rc<RefCell<Vec<String>>>, n: usize) {
    eventually(Duration::from_secs(60), "load under way", || async {
        accepted.borrow().len() >= n
    })
    .await;
}

/// Every 202 stored exactly once, conversation counters exact.
async fn assert_every_202_stored_once(url: &str, accepted: &[String]) {
    let expected: BTreeSet<String> = accepted.iter().cloned().collect();
    assert_eq!(expected.len(), accepted.len(), "distinct messages");
    eventually(
        Duration::from_secs(60),
        "every accepted message stored",
        || async {
            scalar_at(url, "SELECT COUNT(*) FROM messages WHERE status = 'sent'").await
                == expected.len() as i64
        },
    )
    .await;
    let stored = stored_keys(url).await;
    assert_eq!(stored, expected, "stored = accepted, none lost, none extra");
    let wrong = scalar_at(
        url,
        "SELECT COUNT(*) FROM conversations c WHERE c.message_count <> \
         (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)",
    )
    .await;
    assert_eq!(wrong, 0, "conversation counters exact");
    let counted = scalar_at(
        url,
        "SELECT COALESCE(SUM(message_count), 0)::BIGINT FROM conversations",
    )
    .await;
    assert_eq!(counted, expected.len() as i64);
}

fn process_env(database_url: &str, nats_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url.to_string()),
        ("NATS_URL", nats_url.to_string()),
        ("MESSAGING__QUEUE__NATS__ACK_WAIT", "2s".to_string()),
        ("MESSAGING__QUEUE__NATS__PUBLISH_TIMEOUT", "2s".to_string()),
        ("WORKER_CONCURRENCY", "2".to_string()),
        // Workers hold their batches for a while: a kill finds messages in flight.
        (
            "MESSAGING__PROVIDERS__SMS__MOCK_LATENCY",
            "50ms".to_string(),
        ),
    ]
}

#[actix_web::test]
async fn api_and_worker_processes_killed_mid_load_lose_nothing() {
    let Some(database) = postgres_with_nats().await else {
        return;
    };
    let nats = NatsServer::start().await;
    let env = process_env(&database.url, &nats.url());
    let mut api_a = Proc::start("api", &env).await;
    let api_b = Proc::start("api", &env).await;
    let mut worker_a = Proc::start("worker", &env).await;
    let _worker_b = Proc::start("worker", &env).await;
    let key = admin_key(&database.url).await;

    let accepted = Rc::new(RefCell::new(Vec::new()));
    let apis = [api_a.port, api_b.port];
    let chaos = async {
        until_accepted(&accepted, 150).await;
        // While it holds messages it has not finished (taken, not yet sent).
        let client = awc::Client::default();
        eventually(
            Duration::from_secs(30),
            "worker A holds messages",
            || async {
                let Some(text) = worker_a.metrics(&client).await else {
                    return false;
                };
                let sent = common::find_sample(
                    &text,
                    "messaging_provider_requests_total",
                    "outcome=\"sent\",provider=\"sms\"",
                )
                .unwrap_or(0.0);
                sample(&text, "messaging_queue_dequeued_total", "") > sent
            },
        )
        .await;
        api_a.kill();
        worker_a.kill();
        api_a.launch().await;
        worker_a.launch().await;
    };
    futures_util::future::join(load(&apis, &key, 600, 8, accepted.clone()), chaos).await;
    let accepted = accepted.borrow().clone();
    assert_eq!(accepted.len(), 600, "every message accepted in the end");
    assert_every_202_stored_once(&database.url, &accepted).await;
}

#[actix_web::test]
async fn losing_a_node_of_a_three_node_cluster_mid_load_loses_nothing() {
    let Some(database) = postgres_with_nats().await else {
        return;
    };
    let mut cluster = NatsCluster::start().await;
    let mut env = process_env(&database.url, &cluster.urls());
    env.push(("MESSAGING__QUEUE__NATS__REPLICAS", "3".to_string()));
    // Stream creation waits for the replicas to agree.
    env.push(("MESSAGING__QUEUE__NATS__CONNECT_TIMEOUT", "20s".to_string()));
    let api_a = Proc::start("api", &env).await;
    let api_b = Proc::start("api", &env).await;
    let _worker_a = Proc::start("worker", &env).await;
    let _worker_b = Proc::start("worker", &env).await;
    let key = admin_key(&database.url).await;

    let urls: Vec<String> = cluster.nodes.iter().map(NatsServer::url).collect();
    let client = async_nats::connect(urls).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("MESSAGING").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a stream leader");

    let accepted = Rc::new(RefCell::new(Vec::new()));
    let apis = [api_a.port, api_b.port];
    let chaos = async {
        until_accepted(&accepted, 150).await;
        // The stream leader: the node whose loss forces an election.
        cluster.node(&leader).kill();
    };
    futures_util::future::join(load(&apis, &key, 500, 8, accepted.clone()), chaos).await;
    let accepted = accepted.borrow().clone();
    assert_eq!(
        accepted.len(),
        500,
        "the cluster accepts again after the election"
    );
    assert_every_202_stored_once(&database.url, &accepted).await;
}

#[actix_web::test]
async fn a_worker_stopped_with_sigterm_hands_back_what_it_holds_and_exits_0() {
    let Some(database) = postgres_with_nats().await else {
        return;
    };
    let nats = NatsServer::start().await;
    let mut env = process_env(&database.url, &nats.url());
    // A long ack_wait: only a hand-back (nak) lets another worker have the events soon.
    env.retain(|(k, _)| !k.ends_with("ACK_WAIT") && !k.ends_with("MOCK_LATENCY"));
    env.push(("MESSAGING__QUEUE__NATS__ACK_WAIT", "60s".to_string()));
    let api = Proc::start("api", &env).await;
    let key = admin_key(&database.url).await;
    let mut slow = env.clone();
    slow.push(("MESSAGING__PROVIDERS__SMS__MOCK_LATENCY", "30s".to_string()));
    slow.push(("MESSAGING__SERVER__SHUTDOWN_TIMEOUT", "1s".to_string()));
    let client = awc::Client::default();
    // Queued before the worker starts, so its first pull takes all five.
    for i in 0..5 {
        let body = sms("+12016661234", "+18045551234", &format!("held {i}"));
        let response = client
            .post(format!("http://127.0.0.1:{}/api/messages/sms", api.port))
            .bearer_auth(&key)
            .send_json(&body)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let mut worker = Proc::start("worker", &slow).await;
    // The worker role answers operations only.
    let response = client
        .get(worker.url("/api/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    eventually(
        Duration::from_secs(20),
        "the worker holds all five",
        || async {
            let text = worker.metrics(&client).await.unwrap_or_default();
            sample(&text, "messaging_queue_dequeued_total", "") >= 5.0
        },
    )
    .await;
    assert_eq!(worker.terminate(Duration::from_secs(15)), Some(0));

    let _next = Proc::start("worker", &env).await;
    // Well within the 60 s ack_wait: they were handed back, not left to time out.
    eventually(
        Duration::from_secs(20),
        "stored by the next worker",
        || async {
            scalar_at(
                &database.url,
                "SELECT COUNT(*) FROM messages WHERE status = 'sent'",
            )
            .await
                == 5
        },
    )
    .await;
}

#[test]
fn the_worker_role_needs_a_shared_queue() {
    let out = Command::new(BINARY)
        .args(["serve", "--role", "worker"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("QUEUE_BACKEND", "memory")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--role worker"));
}

/// Posts one SMS with a client `Idempotency-Key` through `api` as a careful client does (a
/// 503 or an unreachable API is retried after a short pause); returns the key answered.
async fn post_keyed(
    client: &awc::Client,
    api: u16,
    key: &str,
    client_key: &str,
    text: &str,
) -> String {
    let body = sms("+12016661234", "+18045551234", text);
    for _ in 0..300 {
        let sent = client
            .post(format!("http://127.0.0.1:{api}/api/messages/sms"))
            .bearer_auth(key)
            .insert_header(("Idempotency-Key", client_key))
            .send_json(&body)
            .await;
        if let Ok(mut response) = sent {
            if response.status() == StatusCode::ACCEPTED {
                let answer: Value = response.json().await.unwrap();
                return answer["idempotency_key"].as_str().unwrap().to_string();
            }
            assert!(
                response.status() == StatusCode::SERVICE_UNAVAILABLE
                    || response.status() == StatusCode::CONFLICT,
                "only 503 or 409 (in progress) while something is down: {}",
                response.status()
            );
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{client_key} never accepted");
}

/// The delivery stage under chaos (SPEC §13): two worker processes on one database, a
/// provider taking 2 s per call (its first answers refuse for good, to make dead letters),
/// one worker killed with SIGKILL mid-call, NATS stopped and restarted, the API restarted
/// and every key sent again (its in-memory keys gone, the duplicate window past), and two
/// concurrent replays of every dead letter. The provider accepts every key exactly once,
/// except keys whose call was in flight in the killed worker: at most twice, and only
/// those.
#[actix_web::test]
async fn under_chaos_every_message_is_accepted_by_its_provider_once_postgres() {
    if let Some(database) = postgres_with_nats().await {
        chaos(database).await;
    }
}

/// The same with the three processes on one SQLite file (its single writer serializes the
/// senders' claims instead of `SKIP LOCKED`).
#[actix_web::test]
async fn under_chaos_every_message_is_accepted_by_its_provider_once_sqlite() {
    if common::require_tool("nats-server").is_none() {
        return;
    }
    chaos(TestDatabase::create(Db::Sqlite).await).await;
}

async fn chaos(database: TestDatabase) {
    let mut nats = NatsServer::start().await;
    let rejected = 10;
    let call_takes = Duration::from_secs(2);
    let stub = StubProvider::start(
        vec![Answer::Status(422, None); rejected],
        Answer::Slow(call_takes),
    );
    let mut env = process_env(&database.url, &nats.url());
    env.retain(|(k, _)| !k.ends_with("MOCK_LATENCY"));
    env.extend([
        ("MESSAGING__PROVIDERS__SMS__KIND", "http".to_string()),
        ("MESSAGING__PROVIDERS__SMS__URL", stub.url.clone()),
        ("MESSAGING__PROVIDERS__SMS__TIMEOUT", "5s".to_string()),
        // A killed sender's messages are due again this long after their claim.
        ("MESSAGING__DELIVERY__LEASE", "15s".to_string()),
        ("MESSAGING__QUEUE__NATS__DUPLICATE_WINDOW", "1s".to_string()),
        ("MESSAGING__RETRY__BASE_DELAY", "100ms".to_string()),
        ("MESSAGING__RETRY__MAX_DELAY", "1s".to_string()),
    ]);
    let mut api = Proc::start("api", &env).await;
    let mut worker_a = Proc::start("worker", &env).await;
    let _worker_b = Proc::start("worker", &env).await;
    let key = admin_key(&database.url).await;
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();

    let total = 200;
    let api_port = api.port;
    let sends = (0..total).map(|i| {
        let (client, key) = (&client, &key);
        async move {
            post_keyed(
                client,
                api_port,
                key,
                &format!("chaos-{i}"),
                &format!("chaos {i}"),
            )
            .await
        }
    });
    let keys: Vec<String> = futures_util::future::join_all(sends).await;

    // The refused ones are dead letters before the kill: a refusal the killed worker had
    // not recorded yet would be called again when its lease ran out, and accepted.
    eventually(
        Duration::from_secs(30),
        "the refused dead-lettered",
        || async {
            scalar_at(&database.url, "SELECT COUNT(*) FROM dead_letters").await == rejected as i64
        },
    )
    .await;
    // SIGKILL one worker while calls are in flight (the provider takes `call_takes` each).
    eventually(Duration::from_secs(30), "calls in flight", || async {
        stub.calls().len() >= rejected + 20
    })
    .await;
    worker_a.kill();
    let killed_at = Instant::now();
    nats.kill();
    nats.restart().await;
    worker_a.launch().await;
    // The API forgets its recent keys; every key is sent again, past the duplicate window
    // (each repeat is checked against the database and enqueued: the worker finds it stored).
    api.kill();
    api.launch().await;
    for (i, stored) in keys.iter().enumerate() {
        let again = post_keyed(
            &client,
            api.port,
            &key,
            &format!("chaos-{i}"),
            &format!("chaos {i}"),
        )
        .await;
        assert_eq!(&again, stored);
    }

    // Each dead letter is replayed twice at once: one replay wins.
    let letters: Value = client
        .get(api.url("/api/dlq?pageSize=100"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for letter in letters["items"].as_array().unwrap() {
        let url = api.url(&format!("/api/dlq/{}/replay", letter["id"]));
        let replay = || async {
            client
                .post(&url)
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .status()
        };
        let (a, b) = futures_util::future::join(replay(), replay()).await;
        let mut answers = [a.as_u16(), b.as_u16()];
        answers.sort();
        assert_eq!(answers, [202, 409], "one replay wins, the other is refused");
    }

    eventually(Duration::from_secs(90), "every message sent", || async {
        scalar_at(
            &database.url,
            "SELECT COUNT(*) FROM messages WHERE status = 'sent'",
        )
        .await
            == total as i64
    })
    .await;
    let calls = stub.calls();
    let mut twice = 0;
    for key in &keys {
        let accepted: Vec<&common::stub::Call> = calls
            .iter()
            .filter(|c| &c.idempotency_key == key && matches!(c.answer, Answer::Slow(_)))
            .collect();
        match accepted.len() {
            1 => {}
            2 => {
                // Only a call that was in flight when its worker was killed is made again:
                // its answer was not recorded yet. The stub stamps a call when it has read
                // it, which can lag the worker's sending (this process runs other tests
                // too): a little after the kill is still before it. And the worker records
                // an answer a moment after the call returns, longer on a busy machine (seen:
                // a call stamped 2.12 s before the kill, answered 0.12 s before it).
                let first = accepted[0].at;
                let stamp_lag = Duration::from_millis(500);
                let record_lag = Duration::from_secs(1);
                assert!(
                    first <= killed_at + stamp_lag
                        && killed_at.saturating_duration_since(first) <= call_takes + record_lag,
                    "{key}: a second call whose first was not cut off by the kill (calls at {:?} and {:?} from the kill)",
                    first.checked_duration_since(killed_at).map(|d| d.as_secs_f64()).unwrap_or_else(|| -(killed_at - first).as_secs_f64()),
                    accepted[1].at.checked_duration_since(killed_at).map(|d| d.as_secs_f64()).unwrap_or_else(|| -(killed_at - accepted[1].at).as_secs_f64()),
                );
                twice += 1;
            }
            n => panic!("{key}: accepted {n} times"),
        }
    }
    eprintln!("{total} messages: {twice} called twice (their worker was killed mid-call)");
    let wrong = scalar_at(
        &database.url,
        "SELECT COUNT(*) FROM conversations c WHERE c.message_count <> \
         (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)",
    )
    .await;
    assert_eq!(wrong, 0);
}
