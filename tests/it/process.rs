//! The real binary as an operator runs it: configuration errors, real signals, restarts,
//! and what reaches the logs.

use crate::common;

use std::cell::RefCell;
use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use common::server::{binary_on, capture};
use common::stub::{Answer, StubProvider};
use common::{databases, eventually, scalar_at, sms, until_count_at, Db, TestDatabase};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_messaging-server");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

#[test]
fn invalid_settings_stop_start_up_with_exit_code_2_naming_the_key() {
    let cases = [
        ("PORT", "eighty", "server.port"),
        ("RETRY_MAX_AGE", "soon", "retry.max_age"),
        ("QUEUE_BACKEND", "kafka", "queue.backend"),
        ("WORKER_CONCURRENCY", "0", "worker.concurrency"),
        ("DLQ_RETENTION", "forever", "dlq.retention"),
        ("LOG_LEVEL", "loud!", "log.level"),
        ("AUTH_REQUIRED", "maybe", "auth.required"),
        (
            "MESSAGING__RATE_LIMIT__PER_KEY",
            "fast",
            "rate_limit.per_key",
        ),
        (
            "MESSAGING__PROVIDERS__SMS__MOCK_ERROR_RATE",
            "2",
            "providers.sms.mock_error_rate",
        ),
    ];
    for (name, value, key) in cases {
        for args in [&[][..], &["config", "check"][..]] {
            let out = run(args, &[(name, value)]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{name}={value} {args:?}: {stderr}"
            );
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
            assert!(
                stderr.contains(key),
                "{name}={value}: names {key}: {stderr}"
            );
        }
    }
}

#[test]
fn config_check_validates_files_and_usage_errors_exit_2() {
    let out = run(&["config", "check"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration ok"));

    let file = std::env::temp_dir().join(format!("ms-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&file, "[worker]\nbatch_size = 0\n").unwrap();
    let out = run(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("worker.batch_size"));
    let out = run(
        &["config", "check"],
        &[("MESSAGING_CONFIG", file.to_str().unwrap())],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "MESSAGING_CONFIG names the file too"
    );
    std::fs::remove_file(file).ok();

    let out = run(&["config", "check", "--config", "/nonexistent.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2), "unknown command");
}

/// A running server process.
struct Server {
    child: Child,
    port: u16,
    client: awc::Client,
    /// Everything the process printed on stdout so far (read by a thread).
    stdout: Arc<Mutex<String>>,
    stdout_reader: Option<std::thread::JoinHandle<()>>,
    /// The API key requests are sent with.
    key: RefCell<Option<String>>,
}

const KEY_LINE: &str = "initial operator API key: ";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    async fn start(database_url: &str, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let child = binary_on(port)
            .env("DATABASE_URL", database_url)
            .env("MESSAGING__SERVER__HTTP_WORKERS", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let mut child = child;
        let (stdout, stdout_reader) = capture(child.stdout.take().unwrap());
        let mut server = Server {
            child,
            port,
            client: awc::Client::default(),
            stdout,
            stdout_reader: Some(stdout_reader),
            key: RefCell::new(None),
        };
        // Up when /healthz answers. One that exits first failed to start: its stderr says
        // why. The deadline is generous: several starts at once, beside the rest of the
        // suite, can take a while (seen: over 20 s).
        let deadline = Instant::now() + Duration::from_secs(60);
        while server
            .client
            .get(server.url("/healthz"))
            .send()
            .await
            .is_err()
        {
            if let Some(status) = server.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut pipe) = server.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("the server exited before it served ({status}):\n{stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "the server did not answer /healthz within 60 s"
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits for the admin key the first start prints, and sends it from now on.
    async fn printed_key(&self) -> String {
        eventually(Duration::from_secs(10), "the admin key printed", || async {
            self.stdout().contains(KEY_LINE)
        })
        .await;
        let key = printed_keys(&self.stdout()).remove(0);
        self.use_key(&key);
        key
    }

    fn use_key(&self, key: &str) {
        *self.key.borrow_mut() = Some(key.to_string());
    }

    fn authorized(&self, request: awc::ClientRequest) -> awc::ClientRequest {
        match self.key.borrow().as_deref() {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> StatusCode {
        self.authorized(self.client.post(self.url(path)))
            .send_json(body)
            .await
            .expect("reachable")
            .status()
    }

    async fn get_json(&self, path: &str) -> Value {
        let mut response = self
            .authorized(self.client.get(self.url(path)))
            .send()
            .await
            .expect("reachable");
        response.json().await.expect("json")
    }

    /// SIGKILL: no shutdown, no spill; what the memory queue held is gone.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }

    /// [`Self::terminate`] within 30 s, asserting a graceful exit (0); returns the log.
    fn stop(self) -> String {
        let (code, logs) = self.terminate(Duration::from_secs(30));
        assert_eq!(code, Some(0), "graceful exit:\n{logs}");
        logs
    }

    /// Sends a real SIGTERM and waits for the exit; returns (exit code, stderr).
    fn terminate(mut self, within: Duration) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        if let Some(reader) = self.stdout_reader.take() {
            reader.join().unwrap();
        }
        (status.code(), stderr)
    }
}

/// The keys in `initial operator API key: …` lines.
fn printed_keys(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix(KEY_LINE))
        .map(|key| key.trim().to_string())
        .collect()
}

#[actix_web::test]
async fn sigterm_drains_the_queue_and_exits_0_and_logs_never_hold_a_body() {
    let database = TestDatabase::create(Db::Sqlite).await;
    let server = Server::start(
        &database.url,
        &[
            ("MESSAGING__PROVIDERS__SMS__MOCK_LATENCY", "300ms"),
            ("MESSAGING__LOG__FORMAT", "json"),
            ("LOG_LEVEL", "debug"),
            ("WORKER_CONCURRENCY", "2"),
        ],
    )
    .await;
    let key = server.printed_key().await;
    let secret = format!("secret-body-{}", uuid::Uuid::new_v4());
    for i in 0..30 {
        let status = server
            .post(
                "/api/messages/sms",
                &sms(
                    &format!("+1201666{i:04}"),
                    "+18045559876",
                    &format!("{secret} {i}"),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let logs = server.stop();
    assert_eq!(
        scalar_at(
            &database.url,
            "SELECT COUNT(*) FROM messages WHERE status = 'sent'"
        )
        .await,
        30
    );
    assert_eq!(
        scalar_at(&database.url, "SELECT COUNT(*) FROM pending_events").await,
        0
    );

    // Every line is JSON; outcomes carry the fields operators filter on.
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let outcomes: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "event processed")
        .collect();
    assert_eq!(outcomes.len(), 30, "one outcome line per event");
    for field in [
        "event_id",
        "idempotency_key",
        "channel",
        "direction",
        "attempt",
        "outcome",
        "duration_ms",
        "body_sha256",
    ] {
        assert!(
            !outcomes[0][field].is_null(),
            "outcome lines carry {field}: {}",
            outcomes[0]
        );
    }
    assert!(!logs.contains(&secret), "a message body reached the logs");
    assert!(!logs.contains(&key), "an API key reached the logs");
    assert!(
        !logs.contains(&key[12..]),
        "no part of an API key beyond its public prefix reached the logs"
    );
    assert!(
        !logs.contains("+18045559876"),
        "an unmasked address reached the logs"
    );
    assert!(logs.contains("+1804*****76"), "addresses appear masked");
    let accepted: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "event accepted")
        .collect();
    assert_eq!(accepted.len(), 30);
    let id = &accepted[0]["span"]["event_id"];
    assert!(
        outcomes.iter().any(|o| &o["event_id"] == id),
        "the event's span id ties the request to its outcome"
    );
}

/// `last_used_at` is written about once a second in the background; a shutdown writes the
/// last uses first, and no background query of it is cut off as the process exits (one
/// was: sqlx panicked dropping its connection outside the runtime, on stderr at exit).
#[actix_web::test]
async fn sigterm_records_the_last_use_of_api_keys() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let server = Server::start(&database.url, &[]).await;
        let key = server.printed_key().await;
        // A connection that closes after the answer, so the shutdown does not wait for it.
        let used = server
            .authorized(server.client.get(server.url("/api/conversations")))
            .force_close()
            .send()
            .await
            .expect("reachable");
        assert_eq!(used.status(), StatusCode::OK);
        let (code, logs) = server.terminate(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{db:?}: graceful exit:\n{logs}");
        assert!(!logs.contains("panicked"), "{db:?}:\n{logs}");
        let prefix = &key[..messaging_server::store::keys::PREFIX_LEN];
        assert_eq!(
            scalar_at(
                &database.url,
                &format!(
                    "SELECT COUNT(*) FROM api_keys WHERE prefix = '{prefix}' AND last_used_at IS NOT NULL"
                )
            )
            .await,
            1,
            "{db:?}: the key's use before the shutdown is recorded"
        );
    }
}

#[actix_web::test]
async fn a_graceful_restart_loses_nothing_the_queue_held() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        // API only: everything accepted stays queued until the shutdown writes it out.
        let api = Server::start(&database.url, &[("WORKER_ENABLED", "false")]).await;
        api.printed_key().await;
        let ready = api.get_json("/readyz").await;
        assert_eq!(ready["checks"]["workers"], "disabled");
        for i in 0..10 {
            let body = sms("+12016661234", "+18045551234", &format!("kept {i}"));
            assert_eq!(
                api.post("/api/messages/sms", &body).await,
                StatusCode::ACCEPTED
            );
        }
        api.stop();
        assert_eq!(
            scalar_at(&database.url, "SELECT COUNT(*) FROM pending_events").await,
            10,
            "{db:?}"
        );
        assert_eq!(
            scalar_at(&database.url, "SELECT COUNT(*) FROM messages").await,
            0
        );

        // The next start re-enqueues them and the workers store them.
        let server = Server::start(&database.url, &[("WORKER_CONCURRENCY", "3")]).await;
        eventually(Duration::from_secs(10), "three workers ready", || async {
            server.get_json("/readyz").await["checks"]["workers"] == "3 running"
        })
        .await;
        until_count_at(
            &database.url,
            "SELECT COUNT(*) FROM messages WHERE status = 'sent'",
            10,
            Duration::from_secs(20),
            "restored events stored",
        )
        .await;
        assert_eq!(
            scalar_at(&database.url, "SELECT COUNT(*) FROM pending_events").await,
            0
        );
        server.stop();
    }
}

/// A PostgreSQL connection belongs to the runtime that opened it, and each HTTP worker runs
/// a runtime of its own that stops with the server. The backlog saved at shutdown must not
/// depend on connections the HTTP handlers opened: it once saved 1,000 of 3,000 events,
/// then failed with "A Tokio 1.x context was found, but it is being shutdown".
#[actix_web::test]
async fn a_backlog_of_many_chunks_is_saved_whole_after_busy_http_workers() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let spill_dir = std::env::temp_dir().join(format!("ms-spill-{}", uuid::Uuid::new_v4()));
        let api = Server::start(
            &database.url,
            &[
                ("WORKER_ENABLED", "false"),
                ("MESSAGING__SERVER__HTTP_WORKERS", "2"),
                ("MESSAGING__QUEUE__SPILL_DIR", spill_dir.to_str().unwrap()),
            ],
        )
        .await;
        api.printed_key().await;
        // Concurrent reads on both HTTP workers: the handlers' pool opens connections there.
        let reads = (0..32).map(|_| api.get_json("/api/conversations"));
        futures_util::future::join_all(reads).await;
        // Four chunks of the shutdown spill (500 events each).
        const EVENTS: usize = 1_600;
        let server = &api;
        for batch in (0..EVENTS).collect::<Vec<_>>().chunks(32) {
            let sends = batch.iter().map(|i| {
                let body = sms("+12016661234", "+18045551234", &format!("backlog {i}"));
                async move { server.post("/api/messages/sms", &body).await }
            });
            for status in futures_util::future::join_all(sends).await {
                assert_eq!(status, StatusCode::ACCEPTED);
            }
        }
        let (code, logs) = api.terminate(Duration::from_secs(60));
        assert_eq!(code, Some(0), "{db:?}: {logs}");
        assert_eq!(
            scalar_at(&database.url, "SELECT COUNT(*) FROM pending_events").await,
            EVENTS as i64,
            "{db:?}: every queued event saved in the database: {logs}"
        );
        let spilled = std::fs::read_dir(&spill_dir).map_or(0, |d| d.count());
        assert_eq!(spilled, 0, "{db:?}: nothing needed a spill file");
        std::fs::remove_dir_all(&spill_dir).ok();
    }
}

#[actix_web::test]
async fn calls_in_flight_at_the_shutdown_deadline_are_given_back_for_the_next_start() {
    let database = TestDatabase::create(Db::Sqlite).await;
    let slow = Server::start(
        &database.url,
        &[
            ("MESSAGING__PROVIDERS__SMS__MOCK_LATENCY", "10s"),
            ("MESSAGING__SERVER__SHUTDOWN_TIMEOUT", "1s"),
        ],
    )
    .await;
    slow.printed_key().await;
    for i in 0..5 {
        let body = sms("+12016661234", "+18045551234", &format!("slow {i}"));
        assert_eq!(
            slow.post("/api/messages/sms", &body).await,
            StatusCode::ACCEPTED
        );
    }
    let started = Instant::now();
    let (code, logs) = slow.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the deadline is kept"
    );
    // Each one is kept for the next start: stored (ingest ends at the commit) with its
    // provider call cut off by the deadline and the message given back, due at once; or,
    // not stored yet, saved with the queue.
    let given_back = scalar_at(
        &database.url,
        "SELECT COUNT(*) FROM messages WHERE status = 'queued' AND lease_token IS NULL",
    )
    .await;
    let saved = scalar_at(&database.url, "SELECT COUNT(*) FROM pending_events").await;
    assert_eq!(given_back + saved, 5, "{logs}");
    if given_back > 0 {
        assert!(logs.contains("given_back"), "{logs}");
    }

    let server = Server::start(&database.url, &[]).await;
    until_count_at(
        &database.url,
        "SELECT COUNT(*) FROM messages WHERE status = 'sent'",
        5,
        Duration::from_secs(20),
        "kept events sent after the restart",
    )
    .await;
    assert_eq!(
        scalar_at(&database.url, "SELECT COUNT(*) FROM messages").await,
        5,
        "none doubled"
    );
    server.terminate(Duration::from_secs(30));
}

#[actix_web::test]
async fn dlq_commands_list_replay_and_purge() {
    let database = TestDatabase::create(Db::Sqlite).await;
    let env = [
        ("MESSAGING__PROVIDERS__SMS__MOCK_ERROR_RATE", "1.0"),
        ("RETRY_MAX_ATTEMPTS", "1"),
    ];
    let server = Server::start(&database.url, &env).await;
    let key = server.printed_key().await;
    let body = sms("+12016661234", "+18045551234", "dead on arrival");
    assert_eq!(
        server.post("/api/messages/sms", &body).await,
        StatusCode::ACCEPTED
    );
    until_count_at(
        &database.url,
        "SELECT COUNT(*) FROM dead_letters",
        1,
        Duration::from_secs(10),
        "dead letter written",
    )
    .await;

    let db_env = [("DATABASE_URL", database.url.as_str())];
    let list = run(&["dlq", "list"], &db_env);
    assert_eq!(list.status.code(), Some(0));
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.starts_with("1 dead letter(s)"), "{listed}");
    assert!(listed.contains("attempts=1"), "{listed}");

    let server_url = server.url("");
    let unauthorized = run(&["dlq", "replay", "1", "--server", &server_url], &db_env);
    assert_eq!(
        unauthorized.status.code(),
        Some(1),
        "replay needs an admin key"
    );
    assert!(String::from_utf8_lossy(&unauthorized.stderr).contains("401"));
    let db_env = [
        ("DATABASE_URL", database.url.as_str()),
        ("MESSAGING_API_KEY", key.as_str()),
    ];
    let replay = run(&["dlq", "replay", "1", "--server", &server_url], &db_env);
    assert_eq!(
        replay.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let again = run(&["dlq", "replay", "1", "--server", &server_url], &db_env);
    assert_eq!(again.status.code(), Some(1), "a replayed letter is refused");
    let none = run(&["dlq", "replay"], &db_env);
    assert_eq!(none.status.code(), Some(2), "replay needs an id or --all");

    // The replayed event fails again (the provider always fails): a second dead letter.
    until_count_at(
        &database.url,
        "SELECT COUNT(*) FROM dead_letters",
        2,
        Duration::from_secs(10),
        "replayed event dead again",
    )
    .await;
    server.terminate(Duration::from_secs(30));

    // Purge with a zero retention removes everything dead before now: both, and says so.
    let purge_env = [
        ("DATABASE_URL", database.url.as_str()),
        ("DLQ_RETENTION", "0s"),
    ];
    let purge = run(&["dlq", "purge"], &purge_env);
    assert_eq!(
        purge.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&purge.stderr)
    );
    let said = String::from_utf8_lossy(&purge.stdout);
    assert!(said.starts_with("purged 2 dead letter(s)"), "{said}");
    assert_eq!(
        scalar_at(&database.url, "SELECT COUNT(*) FROM dead_letters").await,
        0,
        "the purged dead letters are gone"
    );
    let again = run(&["dlq", "purge"], &purge_env);
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(said.starts_with("purged 0 dead letter(s)"), "{said}");
}

#[test]
fn migrate_commands_apply_and_report() {
    let path = std::env::temp_dir().join(format!("ms-migrate-{}.db", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let env = [("DATABASE_URL", url.as_str())];
    for action in ["up", "status", "down", "up"] {
        let out = run(&["migrate", action], &env);
        assert_eq!(
            out.status.code(),
            Some(0),
            "migrate {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for suffix in ["", "-wal", "-shm"] {
        std::fs::remove_file(format!("{}{suffix}", path.display())).ok();
    }
}

/// A client without any key.
fn anonymous() -> awc::Client {
    awc::Client::default()
}

#[actix_web::test]
async fn the_first_start_prints_one_admin_key_that_the_api_needs_and_logs_never_show() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let server = Server::start(
            &database.url,
            &[("MESSAGING__LOG__FORMAT", "json"), ("LOG_LEVEL", "debug")],
        )
        .await;
        let key = server.printed_key().await;
        assert!(key.starts_with("msk_") && key.len() == 68, "{key}");

        // Without the key, reads and writes are refused.
        let response = anonymous()
            .get(server.url("/api/conversations"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{db:?}");
        assert!(response
            .headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let body = sms("+12016661234", "+18045551234", "with the printed key");
        let response = anonymous()
            .post(server.url("/api/messages/sms"))
            .send_json(&body)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        // With it, they work; the request id we send comes back and tags the log lines.
        let response = anonymous()
            .post(server.url("/api/messages/sms"))
            .bearer_auth(&key)
            .insert_header(("X-Request-Id", "process-test-request-1"))
            .send_json(&body)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(
            response.headers().get("x-request-id").unwrap(),
            "process-test-request-1"
        );
        until_count_at(
            &database.url,
            "SELECT COUNT(*) FROM messages",
            1,
            Duration::from_secs(10),
            "the message stored",
        )
        .await;
        assert_eq!(
            server.get_json("/api/conversations").await["meta"]["total"],
            1
        );

        let stdout = server.stdout.clone();
        let logs = server.stop();
        let stdout = stdout.lock().unwrap().clone();
        assert_eq!(printed_keys(&stdout), std::slice::from_ref(&key), "{db:?}");
        assert_eq!(stdout.matches(&key).count(), 1, "{stdout}");
        assert!(stdout.contains("will not be shown again"), "{stdout}");
        assert!(!logs.contains(&key), "{db:?}: the key reached the logs");
        let tagged = logs
            .lines()
            .filter(|l| l.contains("\"request_id\":\"process-test-request-1\""))
            .count();
        assert!(tagged >= 1, "the request's log lines carry its id:\n{logs}");

        // The next start prints nothing, and the key still works.
        let again = Server::start(&database.url, &[]).await;
        again.use_key(&key);
        assert_eq!(
            again.get_json("/api/conversations").await["meta"]["total"],
            1
        );
        let stdout = again.stdout.clone();
        again.stop();
        let stdout = stdout.lock().unwrap().clone();
        assert!(
            printed_keys(&stdout).is_empty(),
            "{db:?}: only the first start prints a key: {stdout}"
        );
        assert_eq!(
            scalar_at(&database.url, "SELECT COUNT(*) FROM api_keys").await,
            1
        );
    }
}

/// In production the first key goes to `auth.bootstrap_key_file`, readable by its owner
/// only, and neither to stdout (the log stream under systemd or Kubernetes) nor to the log.
#[actix_web::test]
async fn the_bootstrap_key_file_gets_the_first_key_with_mode_0600_and_stdout_none() {
    use std::os::unix::fs::PermissionsExt;
    let database = TestDatabase::create(Db::Sqlite).await;
    let dir = std::env::temp_dir().join(format!("ms-bootstrap-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("operator.key");
    let path = file.display().to_string();
    let server = Server::start(
        &database.url,
        &[("MESSAGING__AUTH__BOOTSTRAP_KEY_FILE", path.as_str())],
    )
    .await;
    eventually(Duration::from_secs(10), "the key file written", || async {
        std::fs::read_to_string(&file).is_ok_and(|k| k.ends_with('\n'))
    })
    .await;
    let key = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(key.starts_with("msk_") && key.len() == 68, "{key}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    server.use_key(&key);
    let dlq = server
        .authorized(server.client.get(server.url("/api/dlq")))
        .send()
        .await
        .unwrap();
    assert_eq!(dlq.status(), StatusCode::OK, "an operator's key");
    let stdout = server.stdout.clone();
    let logs = server.stop();
    let stdout = stdout.lock().unwrap().clone();
    assert!(
        !stdout.contains(&key) && printed_keys(&stdout).is_empty(),
        "{stdout}"
    );
    assert!(!logs.contains(&key), "the key reached the logs");
    assert!(
        logs.contains(&path),
        "the log says where the key is: {logs}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// As an orchestrator rolls out a deployment: four processes start at the same moment on
/// an empty database. Their migrations take turns (they used to race and two of three
/// exited with "duplicate key value violates unique constraint pg_type_typname_nsp_index"),
/// all four serve, and one admin key is printed.
#[actix_web::test]
async fn four_servers_starting_at_once_on_an_empty_database_all_serve_and_print_one_key() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let servers =
            futures_util::future::join_all((0..4).map(|_| Server::start(&database.url, &[]))).await;
        for server in &servers {
            let status = anonymous()
                .get(server.url("/readyz"))
                .send()
                .await
                .expect("reachable")
                .status();
            assert_eq!(status, StatusCode::OK, "{db:?}");
        }
        let outputs: Vec<_> = servers.iter().map(|s| s.stdout.clone()).collect();
        for server in servers {
            let (code, logs) = server.terminate(Duration::from_secs(30));
            assert_eq!(code, Some(0), "{db:?}: {logs}");
        }
        let printed: Vec<String> = outputs
            .iter()
            .flat_map(|out| printed_keys(&out.lock().unwrap()))
            .collect();
        assert_eq!(printed.len(), 1, "{db:?}: {printed:?}");
        assert_eq!(
            scalar_at(&database.url, "SELECT COUNT(*) FROM api_keys").await,
            1
        );
    }
}

#[actix_web::test]
async fn with_auth_off_nothing_is_printed_the_api_is_open_and_every_start_warns() {
    let database = TestDatabase::create(Db::Sqlite).await;
    let server = Server::start(&database.url, &[("AUTH_REQUIRED", "false")]).await;
    let status = anonymous()
        .get(server.url("/api/conversations"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    let stdout = server.stdout.clone();
    let logs = server.stop();
    assert!(printed_keys(&stdout.lock().unwrap()).is_empty());
    assert!(logs.contains("auth.required = false"), "{logs}");
    assert_eq!(
        scalar_at(&database.url, "SELECT COUNT(*) FROM api_keys").await,
        0
    );
}

#[actix_web::test]
async fn customer_and_key_commands_print_what_scripts_need_and_revocation_takes_effect() {
    let database = TestDatabase::create(Db::Sqlite).await;
    let env = [("DATABASE_URL", database.url.as_str())];
    let stdout = |out: &Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // Works before the first start, once `migrate up` has created the database (the other
    // commands never create a SQLite file: tests/it/cli.rs).
    let up = run(&["migrate", "up"], &env);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let created = run(&["customers", "create", "--name", "Acme"], &env);
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let customer = stdout(&created);
    assert_eq!(customer.lines().count(), 1, "the id alone: {customer}");
    let customer = uuid::Uuid::parse_str(customer.trim()).expect("a UUID");
    let listed = stdout(&run(&["customers", "list"], &env));
    assert!(listed.contains(&customer.to_string()) && listed.contains("Acme"));

    let customer_arg = customer.to_string();
    let create = |name: &str, scopes: &[&str]| {
        let mut args = vec![
            "keys",
            "create",
            "--customer",
            &customer_arg,
            "--name",
            name,
        ];
        for scope in scopes {
            args.extend(["--scope", scope]);
        }
        run(&args, &env)
    };
    let out = create("acme-sender", &["send"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let key = stdout(&out).trim().to_string();
    assert_eq!(stdout(&out).lines().count(), 1);
    assert!(key.starts_with("msk_") && key.len() == 68, "{key}");
    assert!(!stderr(&out).contains(&key), "the key only on stdout");
    let prefix = &key[..12];
    assert!(stderr(&out).contains(prefix));
    let both = create("acme-both", &["send", "webhook"]);
    assert_eq!(both.status.code(), Some(0));

    // Mistakes are usage errors, with one line saying what is wrong. Each command is
    // written as typed (no argument has a space).
    let c = &customer_arg;
    for (command, says) in [
        (
            format!("keys create --customer {c} --name x --scope root"),
            "root",
        ),
        (format!("keys create --customer {c} --name x"), "--scope"),
        (
            "keys create --customer 00000000-0000-0000-0000-0000000000ff --name x --scope send"
                .to_string(),
            "no customer",
        ),
        ("keys revoke msk_ffffffff".to_string(), "no API key"),
        ("keys revoke msk_".to_string(), "neither"),
        // `admin` is an operator's scope, never a customer's.
        (
            format!("keys create --customer {c} --name x --scope admin"),
            "--operator",
        ),
        (
            format!("keys create --operator --customer {c} --name x"),
            "cannot be used with",
        ),
    ] {
        let args: Vec<&str> = command.split_whitespace().collect();
        let out = run(&args, &env);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{command}: {}", stderr(&out));
    }

    // An operator's key belongs to no customer.
    let out = run(&["keys", "create", "--operator", "--name", "ops"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let operator = stdout(&out).trim().to_string();
    assert!(stderr(&out).contains("operators"), "{}", stderr(&out));

    let list = stdout(&run(&["keys", "list"], &env));
    assert!(
        list.contains(prefix) && list.contains("acme-sender"),
        "{list}"
    );
    let ops = list.lines().find(|l| l.contains(&operator[..12])).unwrap();
    assert!(ops.contains("\toperator\tadmin\t"), "{ops}");
    assert!(list.contains("send,webhook"), "{list}");
    assert!(!list.contains(&key), "keys list never shows a key");

    // A database with keys gets no bootstrap key; the created key works as its scope says.
    let server = Server::start(&database.url, &[("MESSAGING__AUTH__CACHE_TTL", "500ms")]).await;
    server.use_key(&key);
    let body = sms("+12016661234", "+18045551234", "from acme");
    assert_eq!(
        server.post("/api/messages/sms", &body).await,
        StatusCode::ACCEPTED
    );
    let dlq = server
        .authorized(server.client.get(server.url("/api/dlq")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        dlq.status(),
        StatusCode::FORBIDDEN,
        "dead letters are admin-only"
    );
    let dlq = server
        .client
        .get(server.url("/api/dlq"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(dlq.status(), StatusCode::OK, "an operator reads them");

    let revoked = run(&["keys", "revoke", prefix], &env);
    assert_eq!(revoked.status.code(), Some(0), "{}", stderr(&revoked));
    assert!(stdout(&revoked).contains("revoked"));
    eventually(
        Duration::from_secs(3),
        "the revoked key refused",
        || async {
            server
                .authorized(server.client.get(server.url("/api/conversations")))
                .send()
                .await
                .unwrap()
                .status()
                == StatusCode::UNAUTHORIZED
        },
    )
    .await;
    let again = run(&["keys", "revoke", &key], &env);
    assert!(stdout(&again).contains("already revoked"));
    let list = stdout(&run(&["keys", "list"], &env));
    let line = list.lines().find(|l| l.contains(prefix)).unwrap();
    assert!(!line.ends_with("\t-"), "revoked time listed: {line}");

    // The operator's HTTP action and the commands above are in the audit log, once each:
    // a repeated revoke and the refused commands changed nothing and are not.
    let purged = server
        .client
        .delete(server.url("/api/dlq"))
        .bearer_auth(&operator)
        .insert_header(("X-Request-Id", "purge-by-ops"))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), StatusCode::OK);
    let audit = run(&["audit"], &env);
    assert_eq!(audit.status.code(), Some(0), "{}", stderr(&audit));
    let log = stdout(&audit);
    let entries: Vec<Vec<&str>> = log
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    let count = |action: &str| entries.iter().filter(|e| e[2] == action).count();
    assert_eq!(count("customer.create"), 1, "{log}");
    assert_eq!(count("key.create"), 3, "acme-sender, acme-both, ops: {log}");
    assert_eq!(count("key.revoke"), 1, "{log}");
    assert_eq!(count("dead_letter.delete_all"), 1, "{log}");
    assert_eq!(entries.len(), 6, "{log}");
    let newest = &entries[0];
    assert_eq!(newest[1], format!("key:{}", &operator[..12]), "{log}");
    assert_eq!(newest[4], "purge-by-ops", "{log}");
    assert!(
        entries[1..]
            .iter()
            .all(|e| e[1].starts_with("cli:") && e[4] == "-"),
        "commands are the command line's: {log}"
    );
    let revokes = stdout(&run(&["audit", "--action", "key.revoke"], &env));
    assert!(revokes.contains(&format!("key:{prefix}")), "{revokes}");
    assert!(
        !log.contains(&key) && !log.contains(&operator),
        "never a key: {log}"
    );
    let bad = run(&["audit", "--action", "key.explode"], &env);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    let out = server.stdout.clone();
    let logs = server.stop();
    assert!(printed_keys(&out.lock().unwrap()).is_empty());
    assert!(!logs.contains(&key));
}

/// The spill files in `dir`, with their lines.
fn spill_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, usize)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| {
            let lines = std::fs::read_to_string(&p).unwrap().lines().count();
            (p, lines)
        })
        .collect()
}

#[actix_web::test]
async fn a_shutdown_the_database_refuses_spills_to_a_file_that_the_next_start_loads() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let spill = database.spill_dir();
        let spill_env = spill.display().to_string();
        let env = [
            ("WORKER_ENABLED", "false"),
            ("MESSAGING__QUEUE__SPILL_DIR", spill_env.as_str()),
            ("MESSAGING__DATABASE__BUSY_TIMEOUT", "200ms"),
        ];
        // API only: everything accepted stays queued until the shutdown saves it.
        let api = Server::start(&database.url, &env).await;
        let key = api.printed_key().await;
        for i in 0..10 {
            let body = sms("+12016661234", "+18045551234", &format!("spilled {i}"));
            assert_eq!(
                api.post("/api/messages/sms", &body).await,
                StatusCode::ACCEPTED
            );
        }
        // The database refuses the shutdown's writes: PostgreSQL, the service's role loses
        // INSERT on pending_events; SQLite, another process holds the write lock.
        let mut lock = None;
        match db {
            Db::Postgres => {
                let role = database.role.clone().unwrap();
                database
                    .admin_execute(&format!("REVOKE INSERT ON pending_events FROM {role}"))
                    .await;
            }
            Db::Sqlite => {
                let mut options = sea_orm::ConnectOptions::new(database.url.clone());
                options.max_connections(1).min_connections(1);
                let conn = Database::connect(options).await.unwrap();
                conn.execute_unprepared("BEGIN EXCLUSIVE").await.unwrap();
                lock = Some(conn);
            }
        }
        let (code, logs) = api.terminate(Duration::from_secs(30));
        assert_eq!(
            code,
            Some(0),
            "{db:?}: nothing accepted was dropped:\n{logs}"
        );
        assert!(logs.contains("spill file"), "{logs}");
        match lock {
            Some(conn) => {
                conn.execute_unprepared("COMMIT").await.unwrap();
                conn.close().await.unwrap();
            }
            None => {
                let role = database.role.clone().unwrap();
                database
                    .admin_execute(&format!("GRANT INSERT ON pending_events TO {role}"))
                    .await;
            }
        }
        assert_eq!(
            scalar_at(&database.url, "SELECT COUNT(*) FROM pending_events").await,
            0
        );
        let files = spill_files(&spill);
        assert_eq!(files.len(), 1, "{db:?}: {files:?}");
        assert_eq!(files[0].1, 10, "{db:?}: every queued event in the file");

        // The next start (with workers) re-enqueues the file and removes it.
        let server = Server::start(&database.url, &env[1..]).await;
        server.use_key(&key);
        until_count_at(
            &database.url,
            "SELECT COUNT(*) FROM messages WHERE status = 'sent'",
            10,
            Duration::from_secs(20),
            "spilled events stored",
        )
        .await;
        assert!(
            spill_files(&spill).is_empty(),
            "{db:?}: the file is removed"
        );
        server.stop();
    }
}

#[actix_web::test]
async fn messages_left_queued_by_a_killed_process_are_sent_once_after_the_restart() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        // A slow provider: the process is killed while it waits for the answers, with every
        // message stored and none sent.
        let stub = StubProvider::start(vec![], Answer::Slow(Duration::from_secs(20)));
        let spill = database.spill_dir().display().to_string();
        let env = [
            ("MESSAGING__PROVIDERS__SMS__KIND", "http"),
            ("MESSAGING__PROVIDERS__SMS__URL", stub.url.as_str()),
            ("MESSAGING__PROVIDERS__SMS__TIMEOUT", "5s"),
            ("MESSAGING__QUEUE__SPILL_DIR", spill.as_str()),
            // The messages the killed process held are due again when their lease ends.
            ("MESSAGING__DELIVERY__LEASE", "15s"),
        ];
        let server = Server::start(&database.url, &env).await;
        let key = server.printed_key().await;
        let sends = (0..50).map(|i| {
            let body = common::sms_from_many(i, "stuck");
            let server = &server;
            async move { server.post("/api/messages/sms", &body).await }
        });
        for status in futures_util::future::join_all(sends).await {
            assert_eq!(status, StatusCode::ACCEPTED);
        }
        // Stored messages are claimed by the sender, which waits for the provider; what is
        // not stored yet waits in the memory queue (and is lost with it: the memory
        // backend's limit).
        let url = database.url.clone();
        eventually(Duration::from_secs(20), "batches stored, unsent", || {
            let url = url.clone();
            async move {
                scalar_at(
                    &url,
                    "SELECT COUNT(*) FROM messages WHERE status = 'queued'",
                )
                .await
                    >= 4
            }
        })
        .await;
        server.kill();
        let killed_at = Instant::now();
        stub.set_fallback(Answer::Accept);
        let stored = scalar_at(&database.url, "SELECT COUNT(*) FROM messages").await;
        assert_eq!(
            scalar_at(
                &database.url,
                "SELECT COUNT(*) FROM messages WHERE status = 'queued'"
            )
            .await,
            stored,
            "{db:?}: none sent before the kill"
        );

        let server = Server::start(&database.url, &env).await;
        server.use_key(&key);
        until_count_at(
            &url,
            "SELECT COUNT(*) FROM messages WHERE status = 'sent'",
            stored,
            Duration::from_secs(30),
            "every stuck message sent",
        )
        .await;
        let db_conn = Database::connect(database.url.as_str()).await.unwrap();
        let keys: Vec<String> = db_conn
            .query_all_raw(Statement::from_string(
                db_conn.get_database_backend(),
                "SELECT idempotency_key FROM messages".to_string(),
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get_by_index::<String>(0).unwrap())
            .collect();
        db_conn.close().await.ok();
        assert_eq!(keys.len() as i64, stored);
        let after: Vec<_> = stub
            .calls()
            .into_iter()
            .filter(|c| c.at > killed_at)
            .collect();
        assert_eq!(
            after.len(),
            keys.len(),
            "{db:?}: one call per message after the restart"
        );
        for key in &keys {
            let calls = after.iter().filter(|c| &c.idempotency_key == key).count();
            assert_eq!(calls, 1, "{db:?}: {key} sent once");
        }
        let mut metrics = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap();
        let text = String::from_utf8(metrics.body().await.unwrap().to_vec()).unwrap();
        assert!(
            text.lines().any(|l| l == "messaging_delivery_due 0"),
            "{db:?}: nothing left due"
        );
        server.stop();
    }
}

/// A client's malformed request is the client's error: answered 400 with a problem, and
/// never logged as a server error (actix-http logs it at error level on its own).
#[actix_web::test]
async fn malformed_http_is_answered_and_not_logged_as_an_error() {
    use std::io::Write;
    let database = TestDatabase::create(Db::Sqlite).await;
    let server = Server::start(
        &database.url,
        &[("LOG_LEVEL", "info"), ("MESSAGING__LOG__FORMAT", "json")],
    )
    .await;
    server.printed_key().await;
    let heads: [&[u8]; 2] = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ];
    for head in heads {
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        socket.write_all(head).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        let _ = socket.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
    }
    let logs = server.stop();
    assert!(
        !logs.contains("\"level\":\"ERROR\""),
        "a client's mistake is not a server error:\n{logs}"
    );
}
