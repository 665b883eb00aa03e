//! Storage outages under load, with the real binary: a full disk and a read-only
//! filesystem under SQLite, a database refusing writes (SQLSTATE 53100, disk_full) under
//! PostgreSQL. What a user depends on: every 202 ends as a stored message, sent to the
//! provider exactly once; while writes fail, new requests get 503 with Retry-After and
//! `/readyz` says so; the service recovers by itself once writes succeed again; a
//! shutdown that cannot save what it holds says so and exits non-zero.
//!
//! The filesystems are real ones mounted for the test (a small tmpfs; ext4 on a loop
//! device), which needs root: CI runs as root; elsewhere these tests say so and skip.

use crate::common;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use common::server::ServerProcess;
use common::stub::{Answer, StubProvider};
use common::{eventually, postgres_configured, Db, TestDatabase};
use serde_json::{json, Value};

/// A filesystem mounted for one test, unmounted when dropped.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    /// A tmpfs of `size` at `dir`; `None` (after saying why) when this user cannot mount.
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let options = format!("size={size}");
        mount(&["-t", "tmpfs", "-o", &options, "tmpfs"], dir)
    }

    /// A fresh ext4 on a loop device backed by `image`, that turns read-only on its first
    /// error (`errors=remount-ro`, the setting of most Linux root filesystems).
    fn ext4(dir: &Path, image: &Path) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        if !image.exists() {
            let file = std::fs::File::create(image).unwrap();
            file.set_len(32 << 20).unwrap();
            run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        }
        let source = image.to_str().unwrap();
        mount(&["-o", "loop,errors=remount-ro", source], dir)
    }

    /// Makes ext4 fail as it does on a disk error: it turns itself read-only at once.
    fn fail_ext4(&self) {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let device = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == self.dir.to_str())
            .and_then(|l| l.split(' ').next())
            .and_then(|d| d.strip_prefix("/dev/"))
            .expect("the loop device of the mount")
            .to_string();
        std::fs::write(format!("/sys/fs/ext4/{device}/trigger_fs_error"), "test\n")
            .expect("ext4's trigger_fs_error");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn mount(args: &[&str], dir: &Path) -> Option<Mount> {
    let out = Command::new("mount").args(args).arg(dir).output();
    match out {
        Ok(out) if out.status.success() => Some(Mount {
            dir: dir.to_path_buf(),
        }),
        other => {
            let why = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
            assert!(!ci, "CI must run these tests as root; mount failed: {why}");
            eprintln!("skipped: mounting a test filesystem needs root ({why}); run the suite as root (CI does)");
            None
        }
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().expect(program);
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// Fills the filesystem of `dir` but for `room` bytes; returns the file to remove.
fn fill(dir: &Path, room: u64) -> PathBuf {
    let path = dir.join("ballast");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    while file.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = file.sync_all();
    file.set_len(written.saturating_sub(room)).unwrap();
    path
}

/// What clients saw: the status URL of every 202, and how many 503s.
#[derive(Default)]
struct Tally {
    accepted: Vec<(String, String)>,
    refused: usize,
    sent: usize,
}

/// Sends distinct 1.4 KB SMS, eight at a time, until `enough` or `within` passes. Every
/// answer must be 202, or 503 with Retry-After.
async fn send_until(
    server: &ServerProcess,
    tally: &mut Tally,
    within: Duration,
    enough: impl Fn(&Tally) -> bool,
) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let deadline = Instant::now() + within;
    while !enough(tally) && Instant::now() < deadline {
        let round = (0..8).map(|_| {
            tally.sent += 1;
            let n = tally.sent;
            let body = format!("{n:06} {}", "x".repeat(1393));
            let request = client
                .post(format!("{}/api/messages/sms", server.url))
                .bearer_auth(&server.key)
                .insert_header(("Idempotency-Key", format!("outage-{n}")))
                .send_json(&json!({
                    "from": "+12016661234", "to": format!("+1800555{:04}", n % 10_000),
                    "type": "sms", "body": body, "attachments": null,
                    "timestamp": "2024-11-01T14:00:00Z"
                }));
            async move {
                let mut response = request
                    .await
                    .expect("an answer, never a dropped connection");
                let status = response.status();
                let retry_after = response.headers().contains_key("retry-after");
                let body: Value = response.json().limit(1 << 20).await.expect("a JSON body");
                (status, retry_after, body)
            }
        });
        for (status, retry_after, body) in futures_util::future::join_all(round).await {
            match status {
                StatusCode::ACCEPTED => tally.accepted.push((
                    body["idempotency_key"].as_str().unwrap().to_string(),
                    body["status_url"].as_str().unwrap().to_string(),
                )),
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(retry_after, "a 503 says when to retry: {body}");
                    tally.refused += 1;
                }
                other => panic!("only 202 or 503 under an outage, got {other}: {body}"),
            }
        }
    }
}

async fn readyz(server: &ServerProcess) -> StatusCode {
    awc::Client::default()
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::BAD_GATEWAY)
}

/// Every accepted message ends up stored and sent, and the provider had exactly one call
/// for each, none for anything else; but for the keys in `resent`, which a log said would
/// be sent again.
async fn assert_every_acceptance_kept(
    server: &ServerProcess,
    stub: &StubProvider,
    tally: &Tally,
    resent: &[String],
) {
    let client = awc::Client::default();
    let mut pending: Vec<&(String, String)> = tally.accepted.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !pending.is_empty() {
        let mut left = Vec::new();
        // What the status resource last said of each one not sent yet: the failure names it.
        let mut said = Vec::new();
        for entry in pending {
            let mut response = client
                .get(format!("{}{}", server.url, entry.1))
                .bearer_auth(&server.key)
                .send()
                .await
                .expect("status resource");
            let body: Value = response.json().await.unwrap_or_default();
            if response.status() != StatusCode::OK || body["status"] != "sent" {
                said.push(format!("{}: {} {body}", entry.0, response.status()));
                left.push(entry);
            }
        }
        pending = left;
        assert!(
            pending.is_empty() || Instant::now() < deadline,
            "{} of {} accepted messages not stored and sent: {said:#?}",
            pending.len(),
            tally.accepted.len(),
        );
        if !pending.is_empty() {
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut calls: HashMap<String, usize> = HashMap::new();
    for call in stub.calls() {
        *calls.entry(call.idempotency_key).or_default() += 1;
    }
    for (key, _) in &tally.accepted {
        let expected = if resent.contains(key) { 2 } else { 1 };
        assert_eq!(
            calls.remove(key),
            Some(expected),
            "provider calls for {key}"
        );
    }
    assert!(
        calls.is_empty(),
        "provider called for messages never accepted: {calls:?}"
    );
}

fn provider_env(stub: &StubProvider) -> Vec<(&'static str, String)> {
    vec![
        ("MESSAGING__PROVIDERS__SMS__KIND", "http".into()),
        ("MESSAGING__PROVIDERS__SMS__URL", stub.url.clone()),
    ]
}

/// Which of `keys` the database at `url` holds as sent.
async fn sent_on_disk(url: &str, keys: &[String]) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    let db = Database::connect(url).await.expect("connect");
    let sql = "SELECT idempotency_key FROM messages WHERE status = 'sent'";
    let rows = db
        .query_all_raw(Statement::from_string(DbBackend::Sqlite, sql))
        .await
        .expect(sql);
    db.close().await.ok();
    let sent: Vec<String> = rows
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("a key"))
        .collect();
    keys.iter().filter(|k| sent.contains(k)).cloned().collect()
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("messages.db").display())
}

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ms-outage-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Readiness turns 200 by itself once writes work again, and requests are accepted.
async fn recovered(server: &ServerProcess, tally: &mut Tally) {
    eventually(
        Duration::from_secs(30),
        "/readyz 200 once writes work again",
        || async { readyz(server).await == StatusCode::OK },
    )
    .await;
    let before = tally.accepted.len();
    send_until(server, tally, Duration::from_secs(30), |t| {
        t.accepted.len() >= before + 50
    })
    .await;
    assert!(tally.accepted.len() >= before + 50, "accepting again");
}

/// Sends until 20 requests were refused and `/readyz`, asked right after a refused round,
/// answered 503; returns what was accepted. (Readiness is not asked once the load stops:
/// on a nearly full disk SQLite commits now and then, into pages that deleted rows or a
/// checkpoint freed, so the pipeline may drain what it holds and be rightly ready again.)
async fn load_into_outage(server: &ServerProcess) -> Tally {
    let mut tally = Tally::default();
    let mut unready = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    while (tally.refused < 20 || !unready) && Instant::now() < deadline {
        let (sent, refused) = (tally.sent, tally.refused);
        send_until(server, &mut tally, Duration::from_secs(30), |t| {
            t.sent > sent
        })
        .await;
        if tally.refused > refused {
            unready |= readyz(server).await == StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    assert!(tally.refused >= 20, "no 503 after {} requests", tally.sent);
    assert!(!tally.accepted.is_empty());
    assert!(
        unready,
        "/readyz never answered 503 right after {} refused requests",
        tally.refused
    );
    // Reported, not asserted (timings belong to bench/): readiness answers from the
    // writer's state, so it stays fast while the writer is stuck.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        readyz(server).await;
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("/readyz during the outage: slowest of 20 answers {slowest:?}");
    tally
}

/// Sends until one more request is refused (30 s at most): the disk is still full and a
/// failed write is held at that moment.
async fn refused_once_more(server: &ServerProcess, tally: &mut Tally) {
    let refused = tally.refused;
    send_until(server, tally, Duration::from_secs(30), |t| {
        t.refused > refused
    })
    .await;
}

/// Terminates `server` (60 s at most), asserting it exits with `code` (else: `why`) and
/// that nothing panicked; returns its log.
fn terminate_expecting(server: ServerProcess, code: i32, why: &str) -> String {
    let (exit, log) = server.terminate(Duration::from_secs(60));
    assert_eq!(exit, Some(code), "{why}:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    log
}

#[actix_web::test]
async fn a_full_disk_on_sqlite_refuses_new_work_and_loses_nothing_it_accepted() {
    full_disk("full", Vec::new()).await;
}

/// The same with the durable queue: what waits is unacked in JetStream, held by workers
/// that report it in progress.
#[actix_web::test]
async fn a_full_disk_with_the_nats_queue_loses_nothing_it_accepted() {
    if common::require_tool("nats-server").is_none() {
        return;
    }
    let nats = common::nats::NatsServer::start().await;
    let env = vec![
        ("QUEUE_BACKEND", "nats".to_string()),
        ("NATS_URL", nats.url()),
    ];
    full_disk("full-nats", env).await;
}

async fn full_disk(name: &str, mut env: Vec<(&'static str, String)>) {
    let dir = test_dir(name);
    let Some(disk) = Mount::tmpfs(&dir.join("disk"), "8m") else {
        return;
    };
    let stub = StubProvider::start(vec![], Answer::Accept);
    env.extend(provider_env(&stub));
    env.push(("DATABASE_URL", sqlite_url(&disk.dir)));
    let server = ServerProcess::start(&dir, &env);
    let ballast = fill(&disk.dir, 1 << 20);

    let mut tally = load_into_outage(&server).await;
    // Still refusing while full, without a restart.
    let refused = tally.refused;
    refused_once_more(&server, &mut tally).await;
    assert!(tally.refused > refused, "refusing while the disk is full");

    std::fs::remove_file(ballast).unwrap();
    recovered(&server, &mut tally).await;
    assert_every_acceptance_kept(&server, &stub, &tally, &[]).await;
    let log = server.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[actix_web::test]
async fn sigterm_on_a_full_disk_reports_what_it_could_not_save_and_exits_non_zero() {
    let dir = test_dir("full-sigterm");
    let Some(disk) = Mount::tmpfs(&dir.join("disk"), "8m") else {
        return;
    };
    let stub = StubProvider::start(vec![], Answer::Accept);
    let mut env = provider_env(&stub);
    env.push(("DATABASE_URL", sqlite_url(&disk.dir)));
    env.push(("MESSAGING__SERVER__SHUTDOWN_TIMEOUT", "2s".into()));
    let server = ServerProcess::start(&dir, &env);
    let _ballast = fill(&disk.dir, 1 << 20);
    let mut tally = load_into_outage(&server).await;
    // The SIGTERM comes right after a refusal, while the write that failed is held.
    refused_once_more(&server, &mut tally).await;

    let log = terminate_expecting(server, 1, "a shutdown that could not save is a failure");
    let report = log
        .lines()
        .find(|l| l.contains("queued events could be saved neither"))
        .unwrap_or_else(|| panic!("the shutdown names what it could not save:\n{log}"));
    let unsaved: usize = report
        .split("\"message\":\"")
        .nth(1)
        .and_then(|m| m.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in: {report}"));
    assert!(unsaved > 0 && unsaved <= tally.accepted.len(), "{report}");
    let logged = log
        .lines()
        .filter(|l| l.contains("queued event could not be saved anywhere; it is logged here"))
        .count();
    assert_eq!(logged, unsaved, "each unsaved event is in the log, whole");
}

#[actix_web::test]
async fn a_filesystem_turned_read_only_loses_nothing_across_a_restart() {
    let dir = test_dir("read-only");
    let image = dir.join("ext4.img");
    if common::require_tool("mkfs.ext4").is_none() {
        return;
    }
    let Some(disk) = Mount::ext4(&dir.join("disk"), &image) else {
        return;
    };
    let stub = StubProvider::start(vec![], Answer::Accept);
    let mut env = provider_env(&stub);
    env.push(("DATABASE_URL", sqlite_url(&disk.dir)));
    // What the database cannot take at shutdown goes to a filesystem that still works.
    let spill = dir.join("spill");
    env.push(("MESSAGING__QUEUE__SPILL_DIR", spill.display().to_string()));
    env.push(("MESSAGING__SERVER__SHUTDOWN_TIMEOUT", "2s".into()));
    // A filesystem error drops what was written and not synced, as a power loss does:
    // committed means on disk only with "full" (see database.sqlite_synchronous).
    env.push(("MESSAGING__DATABASE__SQLITE_SYNCHRONOUS", "full".into()));
    let server = ServerProcess::start(&dir, &env);
    let key = server.key.clone();

    let mut tally = Tally::default();
    send_until(&server, &mut tally, Duration::from_secs(30), |t| {
        t.accepted.len() >= 100
    })
    .await;
    disk.fail_ext4();
    send_until(&server, &mut tally, Duration::from_secs(90), |t| {
        t.refused >= 20
    })
    .await;
    assert!(tally.refused >= 20, "no 503 after {} requests", tally.sent);
    eventually(
        Duration::from_secs(5),
        "/readyz 503 on a read-only filesystem",
        || async { readyz(&server).await == StatusCode::SERVICE_UNAVAILABLE },
    )
    .await;
    let log = terminate_expecting(server, 0, "everything saved in the spill directory");
    // Sent, but recording it failed: said in the log, and sent again unless the record
    // reached the disk after all (below).
    let resent: Vec<String> = log
        .lines()
        .filter(|l| l.contains("but recording it as sent failed"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l["idempotency_key"].as_str().map(str::to_string))
        .collect();

    // An operator's repair: unmount, check, mount again; then the same service restarts.
    drop(disk);
    // Exit 1: errors were corrected (the error this test triggered).
    let fsck = Command::new("fsck.ext4")
        .args(["-p", image.to_str().unwrap()])
        .status()
        .expect("fsck.ext4");
    assert!(matches!(fsck.code(), Some(0 | 1)), "fsck: {fsck}");
    let disk = Mount::ext4(&dir.join("disk"), &image).expect("mounted again");
    // A commit that failed on the sync may have reached the disk all the same (SQLite had
    // written the transaction to its WAL before the sync failed): those are found sent and
    // must not be sent again; the rest must be, once more.
    let on_disk = sent_on_disk(&sqlite_url(&disk.dir), &resent).await;
    let resent: Vec<String> = resent
        .into_iter()
        .filter(|k| !on_disk.contains(k))
        .collect();
    let server = ServerProcess::start_with_key(&dir, &env, &key);
    assert_every_acceptance_kept(&server, &stub, &tally, &resent).await;
    drop(server);
    drop(disk);
}

#[actix_web::test]
async fn postgres_refusing_writes_refuses_new_work_and_loses_nothing_it_accepted() {
    if !postgres_configured() {
        eprintln!("skipped: TEST_DATABASE_URL is not set");
        return;
    }
    let database = TestDatabase::create(Db::Postgres).await;
    let dir = test_dir("postgres");
    let stub = StubProvider::start(vec![], Answer::Accept);
    let mut env = provider_env(&stub);
    env.push(("DATABASE_URL", database.url.clone()));
    let server = ServerProcess::start(&dir, &env);

    // What PostgreSQL answers when its disk is full (no quota or small tablespace here).
    database
        .admin_execute(
            "CREATE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; \
             END $$; \
             CREATE TRIGGER disk_full BEFORE INSERT ON messages \
             FOR EACH STATEMENT EXECUTE FUNCTION refuse_writes()",
        )
        .await;
    let mut tally = load_into_outage(&server).await;
    database
        .admin_execute("DROP TRIGGER disk_full ON messages")
        .await;
    recovered(&server, &mut tally).await;
    assert_every_acceptance_kept(&server, &stub, &tally, &[]).await;
}
