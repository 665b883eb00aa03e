//! The real binary as an operator runs it: configuration errors, real signals, restarts,
//! and what reaches the logs.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use common::{databases, eventually, sms, Db, TestDatabase};
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
}

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
        let child = Command::new(BINARY)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("PORT", port.to_string())
            .env("MESSAGING__SERVER__HOST", "127.0.0.1")
            .env("MESSAGING__SERVER__HTTP_WORKERS", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let server = Server {
            child,
            port,
            client: awc::Client::default(),
        };
        eventually(
            Duration::from_secs(20),
            "server answers /healthz",
            || async {
                server
                    .client
                    .get(server.url("/healthz"))
                    .send()
                    .await
                    .is_ok()
            },
        )
        .await;
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn post(&self, path: &str, body: &Value) -> StatusCode {
        self.client
            .post(self.url(path))
            .send_json(body)
            .await
            .expect("reachable")
            .status()
    }

    async fn get_json(&self, path: &str) -> Value {
        let mut response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("reachable");
        response.json().await.expect("json")
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
        (status.code(), stderr)
    }
}

async fn count(url: &str, sql: &str) -> i64 {
    let db = Database::connect(url).await.expect("connect");
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_string(),
        ))
        .await
        .expect(sql)
        .expect("a row");
    let n = row.try_get_by_index::<i64>(0).unwrap();
    db.close().await.ok();
    n
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
    let (code, logs) = server.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "graceful exit:\n{logs}");
    assert_eq!(
        count(
            &database.url,
            "SELECT COUNT(*) FROM messages WHERE status = 'sent'"
        )
        .await,
        30
    );
    assert_eq!(
        count(&database.url, "SELECT COUNT(*) FROM pending_events").await,
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

#[actix_web::test]
async fn a_graceful_restart_loses_nothing_the_queue_held() {
    for db in databases() {
        let database = TestDatabase::create(db).await;
        // API only: everything accepted stays queued until the shutdown writes it out.
        let api = Server::start(&database.url, &[("WORKER_ENABLED", "false")]).await;
        let ready = api.get_json("/readyz").await;
        assert_eq!(ready["checks"]["workers"], "disabled");
        for i in 0..10 {
            let body = sms("+12016661234", "+18045551234", &format!("kept {i}"));
            assert_eq!(
                api.post("/api/messages/sms", &body).await,
                StatusCode::ACCEPTED
            );
        }
        let (code, logs) = api.terminate(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{logs}");
        assert_eq!(
            count(&database.url, "SELECT COUNT(*) FROM pending_events").await,
            10,
            "{db:?}"
        );
        assert_eq!(
            count(&database.url, "SELECT COUNT(*) FROM messages").await,
            0
        );

        // The next start re-enqueues them and the workers store them.
        let server = Server::start(&database.url, &[("WORKER_CONCURRENCY", "3")]).await;
        eventually(Duration::from_secs(10), "three workers ready", || async {
            server.get_json("/readyz").await["checks"]["workers"] == "3 running"
        })
        .await;
        let url = database.url.clone();
        eventually(Duration::from_secs(20), "restored events stored", || {
            let url = url.clone();
            async move { count(&url, "SELECT COUNT(*) FROM messages WHERE status = 'sent'").await == 10 }
        })
        .await;
        assert_eq!(
            count(&database.url, "SELECT COUNT(*) FROM pending_events").await,
            0
        );
        let (code, _) = server.terminate(Duration::from_secs(30));
        assert_eq!(code, Some(0));
    }
}

#[actix_web::test]
async fn events_in_flight_at_the_shutdown_deadline_are_kept_for_the_next_start() {
    let database = TestDatabase::create(Db::Sqlite).await;
    let slow = Server::start(
        &database.url,
        &[
            ("MESSAGING__PROVIDERS__SMS__MOCK_LATENCY", "10s"),
            ("MESSAGING__SERVER__SHUTDOWN_TIMEOUT", "1s"),
        ],
    )
    .await;
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
    assert_eq!(
        count(&database.url, "SELECT COUNT(*) FROM pending_events").await,
        5
    );

    let server = Server::start(&database.url, &[]).await;
    let url = database.url.clone();
    eventually(Duration::from_secs(20), "kept events sent after the restart", || {
        let url = url.clone();
        async move { count(&url, "SELECT COUNT(*) FROM messages WHERE status = 'sent'").await == 5 }
    })
    .await;
    assert_eq!(
        count(&database.url, "SELECT COUNT(*) FROM messages").await,
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
    let body = sms("+12016661234", "+18045551234", "dead on arrival");
    assert_eq!(
        server.post("/api/messages/sms", &body).await,
        StatusCode::ACCEPTED
    );
    let url = database.url.clone();
    eventually(Duration::from_secs(10), "dead letter written", || {
        let url = url.clone();
        async move { count(&url, "SELECT COUNT(*) FROM dead_letters").await == 1 }
    })
    .await;

    let db_env = [("DATABASE_URL", database.url.as_str())];
    let list = run(&["dlq", "list"], &db_env);
    assert_eq!(list.status.code(), Some(0));
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.starts_with("1 dead letter(s)"), "{listed}");
    assert!(listed.contains("attempts=1"), "{listed}");

    let server_url = server.url("");
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
    eventually(Duration::from_secs(10), "replayed event dead again", || {
        let url = url.clone();
        async move { count(&url, "SELECT COUNT(*) FROM dead_letters").await == 2 }
    })
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
        count(&database.url, "SELECT COUNT(*) FROM dead_letters").await,
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
