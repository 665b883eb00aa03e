//! The published contract, checked from outside: Schemathesis (from tests/requirements.txt,
//! installed by `make test` into a virtual environment) reads `/openapi.json` from the real binary and runs all its checks
//! against it with an admin key: no server error, no answer that breaks the document, every
//! schema-valid request accepted and every invalid one refused, 401 without the key, 405
//! with `Allow` for other methods. Then again with `auth.required = false`, where the
//! document declares no security and requests carry no key. On both databases.

use crate::common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::{binary_on, capture};
use common::{databases, TestDatabase};

const KEY_LINE: &str = "initial operator API key: ";
/// Test cases per operation and phase, and a fixed seed: a few minutes, the same cases
/// on every run.
const MAX_EXAMPLES: &str = "40";
const SEED: &str = "20261127";

struct Server {
    child: Child,
    port: u16,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(database_url: &str, auth_required: bool) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = binary_on(port)
            .env("DATABASE_URL", database_url)
            .env("LOG_LEVEL", "warn")
            .env("MESSAGING__LOG__FORMAT", "json")
            // Schemathesis sends thousands of requests without a valid key (to check the
            // 401s) from one address; the default 20/s would answer most of them 429.
            .env("MESSAGING__RATE_LIMIT__PER_IP", "100000/s")
            // Every email is refused by its provider and dead-lettered at once, so the
            // dead-letter routes have real ids to find, not only 404s.
            .env("MESSAGING__PROVIDERS__EMAIL__MOCK_ERROR_RATE", "1.0")
            .env("RETRY_MAX_ATTEMPTS", "1")
            // ... all of them at once: the circuit breaker must not pause the calls.
            .env("MESSAGING__PROVIDERS__EMAIL__BREAKER_FAILURES", "100000")
            // Twilio's webhooks take Twilio's signature, which hooks.py computes with
            // Twilio's own library over this URL and token.
            .env("MESSAGING__PROVIDERS__SMS__AUTH_TOKEN", TWILIO_TOKEN)
            .env("MESSAGING__PROVIDERS__SMS__PUBLIC_URL", TWILIO_PUBLIC_URL)
            .env("MESSAGING__AUTH__REQUIRED", auth_required.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server starts");
        let stdout = capture(child.stdout.take().unwrap()).0;
        let stderr = capture(child.stderr.take().unwrap()).0;
        Server {
            child,
            port,
            stdout,
            stderr,
        }
    }

    /// Waits until the server takes connections.
    fn wait_listening(&mut self) {
        self.poll(|server| {
            std::net::TcpStream::connect(("127.0.0.1", server.port))
                .map(drop)
                .map_err(|_| "the server is not listening".to_string())
        })
    }

    /// The admin key the first start prints.
    fn key(&mut self) -> String {
        self.poll(|server| {
            let out = server.stdout.lock().unwrap().clone();
            out.lines()
                .find_map(|l| l.strip_prefix(KEY_LINE))
                .map(|line| line.trim().to_string())
                .ok_or_else(|| format!("no admin key printed: {out}"))
        })
    }

    /// Asks `ready` every 50 ms, for up to 30 s, until it answers `Ok`; fails with the
    /// server's stderr if it exits meanwhile, or with `ready`'s last `Err` at the deadline.
    fn poll<T>(&mut self, ready: impl Fn(&Self) -> Result<T, String>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let not_yet = match ready(self) {
                Ok(value) => return value,
                Err(not_yet) => not_yet,
            };
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the server exited ({status}): {}",
                    self.stderr.lock().unwrap()
                );
            }
            assert!(Instant::now() < deadline, "{not_yet}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `request` with the key, if the server takes keys.
fn authorized(request: awc::ClientRequest, key: Option<&str>) -> awc::ClientRequest {
    match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    }
}

/// Sends one message so that status look-ups have a real message to find; returns its key.
async fn store_one_message(port: u16, key: Option<&str>) -> String {
    let mut response = authorized(
        awc::Client::default().post(format!("http://127.0.0.1:{port}/api/messages/sms")),
        key,
    )
    .send_json(&common::sms("+12016661234", "+18045551234", "seeded"))
    .await
    .expect("the server answers");
    assert_eq!(response.status().as_u16(), 202);
    let answer: serde_json::Value = response.json().await.expect("JSON");
    answer["idempotency_key"]
        .as_str()
        .expect("a key")
        .to_string()
}

/// Sends emails (their provider refuses every one: see `Server::start`) until dead letters
/// exist for the dead-letter routes to find; returns their ids, comma-separated.
async fn dead_letter_ids(port: u16, key: Option<&str>) -> String {
    let client = awc::Client::default();
    for i in 0..DEAD_LETTERS {
        let email = serde_json::json!({"from": "a@example.com", "to": "b@example.com",
                                       "body": format!("seeded {i}")});
        let response = authorized(
            client.post(format!("http://127.0.0.1:{port}/api/messages/email")),
            key,
        )
        .send_json(&email)
        .await
        .expect("the server answers");
        assert_eq!(response.status().as_u16(), 202);
    }
    let url = format!("http://127.0.0.1:{port}/api/dlq?pageSize=200");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut response = authorized(client.get(&url), key).send().await.unwrap();
        let page: serde_json::Value = response.json().await.unwrap();
        let ids: Vec<String> = common::items(&page)
            .map(|item| item["id"].to_string())
            .collect();
        if ids.len() >= DEAD_LETTERS {
            return ids.join(",");
        }
        assert!(
            Instant::now() < deadline,
            "dead letters did not appear: {page}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

const TWILIO_TOKEN: &str = "0123456789abcdef0123456789abcdef";
const TWILIO_PUBLIC_URL: &str = "https://msg.example.com";

/// Enough that the deletions among the generated requests do not use them all up.
const DEAD_LETTERS: usize = 40;

#[actix_web::test]
async fn schemathesis_finds_nothing_against_the_published_document() {
    let Some(schemathesis) = common::require_tool("schemathesis") else {
        return;
    };
    for db in databases() {
        for auth_required in [true, false] {
            run_schemathesis(&schemathesis, db, auth_required).await;
        }
    }
}

async fn run_schemathesis(schemathesis: &Path, db: common::Db, auth_required: bool) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let database = TestDatabase::create(db).await;
    let mut server = Server::start(&database.url, auth_required);
    let key = auth_required.then(|| server.key());
    server.wait_listening();
    let message_key = store_one_message(server.port, key.as_deref()).await;
    let dead_letters = dead_letter_ids(server.port, key.as_deref()).await;
    let report = std::env::temp_dir().join(format!("ms-schemathesis-{}", uuid::Uuid::new_v4()));
    let mut command = Command::new(schemathesis);
    command
        .arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .args(["--no-color", "run"])
        .arg(format!("http://127.0.0.1:{}/openapi.json", server.port))
        .args(["--checks", "all"]);
    match &key {
        Some(key) => {
            command.args(["-H", &format!("Authorization: Bearer {key}")]);
        }
        // Then the only operations that declare security are Twilio's, whose signature
        // hooks.py computes for every generated header: the check that a generated
        // credential is refused would fail on a signature that is valid by design. Their
        // refusals (missing, wrong) are sampled in tests/it/openapi.rs.
        None => {
            command.args(["--exclude-checks", "ignored_auth"]);
        }
    }
    let out = command
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--workers", "1", "--request-timeout", "10"])
        .args(["--wait-for-schema", "20"])
        // The email pattern is three patterns at once (see src/http/openapi/bodies.rs);
        // drawing from one and filtering by the others is expected here.
        .args(["--suppress-health-check", "filter_too_much"])
        // "Delete every dead letter" would wipe the dead letters the other dead-letter
        // operations are pointed at (see hooks.py) before they run; it is exercised in
        // tests/it/openapi.rs and tests/it/status.rs.
        .args(["--exclude-name", "DELETE /api/dlq"])
        .arg("--report-dir")
        .arg(&report)
        // Its cache (.schemathesis/) goes there too, not into the repository.
        .current_dir(std::env::temp_dir())
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &dir)
        .env(
            "MESSAGING_TEST_CUSTOMER_ID",
            "00000000-0000-0000-0000-000000000001",
        )
        .env("MESSAGING_TEST_MESSAGE_KEY", &message_key)
        .env("MESSAGING_TEST_DEAD_LETTER_IDS", &dead_letters)
        .env("MESSAGING_TEST_TWILIO_TOKEN", TWILIO_TOKEN)
        .env("MESSAGING_TEST_TWILIO_PUBLIC_URL", TWILIO_PUBLIC_URL)
        .output()
        .expect("schemathesis runs");
    let _ = std::fs::remove_dir_all(&report);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run = format!("{db:?}, auth.required = {auth_required}");
    assert!(
        out.status.success(),
        "schemathesis found problems on {run} ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("No issues found"),
        "{run}: schemathesis did not report a clean run:\n{stdout}"
    );
    let logs = server.stderr.lock().unwrap().clone() + &server.stdout.lock().unwrap();
    assert!(
        !logs.contains("panicked"),
        "{run}: the server panicked:\n{logs}"
    );
}
