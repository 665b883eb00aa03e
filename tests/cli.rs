//! CLI comfort (issue 12): `messaging-server status` against real server processes (ready,
//! not ready after its NATS server is killed, unreachable), and the plain one-line-per-step
//! output of `migrate up|down` and `dlq replay --all` when stdout is not a terminal (here:
//! a pipe), where a progress bar would only be noise.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::nats::{free_port, NatsServer};
use common::server::{ServerProcess, BINARY};
use common::{eventually, sms};
use migration::{Migrator, MigratorTrait};

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ms-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn names() -> Vec<String> {
    Migrator::migrations()
        .iter()
        .map(|m| m.name().to_string())
        .collect()
}

#[test]
fn migrate_up_and_down_print_one_line_per_migration_off_a_terminal() {
    let dir = temp_dir();
    let url = format!("sqlite://{}?mode=rwc", dir.join("m.db").display());
    let env = [("DATABASE_URL", url.as_str())];
    let names = names();
    let total = names.len();

    let up = run(&["migrate", "up"], &env);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let text = stdout(&up);
    assert!(
        !text.contains('\u{1b}'),
        "no terminal codes in a pipe: {text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            lines[i],
            format!("[{}/{total}] applied {name}", i + 1),
            "{text}"
        );
    }
    assert_eq!(
        lines[total],
        format!("{total} migration(s) applied"),
        "{text}"
    );

    let down = run(&["migrate", "down", "--steps", "2"], &env);
    assert_eq!(down.status.code(), Some(0), "{}", stderr(&down));
    let text = stdout(&down);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("[1/2] rolled back {}", names[total - 1]),
        "{text}"
    );
    assert_eq!(
        lines[1],
        format!("[2/2] rolled back {}", names[total - 2]),
        "{text}"
    );
    assert_eq!(lines[2], "2 migration(s) rolled back", "{text}");
    assert!(
        text.contains(&format!("{}\tPending", names[total - 1])),
        "{text}"
    );

    let again = run(&["migrate", "up"], &env);
    let text = stdout(&again);
    assert!(
        text.starts_with(&format!("[1/2] applied {}\n", names[total - 2])),
        "{text}"
    );
    assert!(text.contains("2 migration(s) applied"), "{text}");
    let nothing = run(&["migrate", "up"], &env);
    assert!(
        stdout(&nothing).starts_with("0 migration(s) applied"),
        "{}",
        stdout(&nothing)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_web::test]
async fn dlq_replay_all_and_status_against_a_running_server() {
    let dir = temp_dir();
    // Every SMS fails once and is dead-lettered at once.
    let server = ServerProcess::start(
        &dir,
        &[
            ("MESSAGING__PROVIDERS__SMS__MOCK_ERROR_RATE", "1.0".into()),
            ("RETRY_MAX_ATTEMPTS", "1".into()),
        ],
    );
    let client = awc::Client::default();
    for i in 0..3 {
        let response = client
            .post(format!("{}/api/messages/sms", server.url))
            .bearer_auth(&server.key)
            .send_json(&sms("+12016661234", "+18045551234", &format!("m{i}")))
            .await
            .expect("the server answers");
        assert_eq!(response.status().as_u16(), 202);
    }
    let dead = || async {
        let mut response = client
            .get(format!("{}/api/dlq?pageSize=200", server.url))
            .bearer_auth(&server.key)
            .send()
            .await
            .unwrap();
        let page: serde_json::Value = response.json().await.unwrap();
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["replayed_at"].is_null())
            .count()
    };
    eventually(Duration::from_secs(30), "3 dead letters", || async {
        dead().await == 3
    })
    .await;

    let with_key = [("MESSAGING_API_KEY", server.key.as_str())];
    let replay = run(
        &["dlq", "replay", "--all", "--server", &server.url],
        &with_key,
    );
    assert_eq!(replay.status.code(), Some(0), "{}", stderr(&replay));
    let text = stdout(&replay);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "[1/3] replayed dead letter 1",
            "[2/3] replayed dead letter 2",
            "[3/3] replayed dead letter 3",
            "replayed 3 dead letter(s)",
        ],
        "{text}"
    );
    // The replayed events fail again: three new dead letters, none lost.
    eventually(Duration::from_secs(30), "3 new dead letters", || async {
        dead().await == 3
    })
    .await;

    let status = run(&["status", "--server", &server.url], &with_key);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let text = stdout(&status);
    for expected in [
        format!("server        {}", server.url),
        "ready         yes (".to_string(),
        "queue         memory, depth 0".to_string(),
        "dead letters  3 waiting".to_string(),
        "rates         accepted 0.0/s  stored 0.0/s  sent 0.0/s  failed 0.0/s".to_string(),
        "workers       4 active".to_string(),
    ] {
        assert!(text.contains(&expected), "{expected:?} in:\n{text}");
    }
    let keyless = run(&["status", "--server", &server.url], &[]);
    assert_eq!(keyless.status.code(), Some(1));
    assert!(
        stderr(&keyless).contains("needs an admin key"),
        "{}",
        stderr(&keyless)
    );

    let nobody = format!("http://127.0.0.1:{}", free_port());
    let unreachable = run(&["status", "--server", &nobody], &with_key);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        stderr(&unreachable).contains("cannot reach"),
        "{}",
        stderr(&unreachable)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_web::test]
async fn status_exits_1_when_the_deployment_is_not_ready() {
    let dir = temp_dir();
    let mut nats = NatsServer::start().await;
    let server = ServerProcess::start(
        &dir,
        &[
            ("QUEUE_BACKEND", "nats".into()),
            ("NATS_URL", nats.url()),
            ("MESSAGING__QUEUE__NATS__CONNECT_TIMEOUT", "2s".into()),
            ("MESSAGING__QUEUE__NATS__PUBLISH_TIMEOUT", "1s".into()),
        ],
    );
    let with_key = [("MESSAGING_API_KEY", server.key.as_str())];
    let ready = run(&["status", "--server", &server.url], &with_key);
    assert_eq!(
        ready.status.code(),
        Some(0),
        "{}{}",
        stdout(&ready),
        stderr(&ready)
    );
    assert!(
        stdout(&ready).contains("queue         nats, depth 0"),
        "{}",
        stdout(&ready)
    );

    nats.kill();
    let url = server.url.clone();
    let mut last = String::new();
    eventually(
        Duration::from_secs(30),
        "status to report not ready",
        || {
            let out = run(&["status", "--server", &url], &with_key);
            last = format!("{}{}", stdout(&out), stderr(&out));
            let not_ready =
                out.status.code() == Some(1) && stdout(&out).contains("ready         NO:");
            async move { not_ready }
        },
    )
    .await;
    assert!(last.contains("queue"), "names what is not ready: {last}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
