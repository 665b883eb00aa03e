//! CLI comfort (issue 12): `messaging-server status` against real server processes (ready,
//! not ready after its NATS server is killed, unreachable), and the plain one-line-per-step
//! output of `migrate up|down` and `dlq replay --all` when stdout is not a terminal (here:
//! a pipe), where a progress bar would only be noise.

use crate::common;

use std::path::{Path, PathBuf};
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
    run_in(&std::env::temp_dir(), args, env)
}

/// `args` run from the directory `cwd`, over a clean environment plus `env`.
fn run_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BINARY);
    command
        .current_dir(cwd)
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
            // Six failures in a row: the circuit stays closed, so the replays fail at once.
            ("MESSAGING__PROVIDERS__SMS__BREAKER_FAILURES", "100".into()),
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
        common::items(&page)
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
        "delivery      0 due; sms closed (0 in flight), email closed (0 in flight)".to_string(),
    ] {
        assert!(text.contains(&expected), "{expected:?} in:\n{text}");
    }
    // Without a key, or with one the server does not know: one line naming the variable.
    for (args, env) in [
        (vec!["status"], vec![]),
        (vec!["dlq", "replay", "1"], vec![]),
        (
            vec!["dlq", "replay", "--all"],
            vec![("MESSAGING_API_KEY", "msk_0123")],
        ),
    ] {
        let args = [args, vec!["--server", &server.url]].concat();
        let refused = run(&args, &env);
        assert_eq!(refused.status.code(), Some(1), "{args:?}");
        let text = stderr(&refused);
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        assert!(text.contains("401"), "{args:?}: {text}");
        let hint = match env.is_empty() {
            true => "needs an admin API key: set MESSAGING_API_KEY",
            false => "does not know the API key in MESSAGING_API_KEY",
        };
        assert!(text.contains(hint), "{args:?}: {text}");
    }

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
    if common::require_tool("nats-server").is_none() {
        return;
    }
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
    // The server answers before its NATS workers have all started (CI once saw "1 of 4
    // running" at the first look): ready within a deadline.
    let mut ready = run(&["status", "--server", &server.url], &with_key);
    eventually(Duration::from_secs(30), "status to report ready", || {
        ready = run(&["status", "--server", &server.url], &with_key);
        let is_ready = ready.status.code() == Some(0);
        async move { is_ready }
    })
    .await;
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

/// Database commands run from a directory other than the server's must not quietly start
/// an empty database there (the default URL's path is relative): they refuse, naming the
/// file and the setting. `migrate up` is the command that creates one.
#[test]
fn database_commands_refuse_a_missing_sqlite_file_instead_of_creating_it() {
    let elsewhere = temp_dir();
    for args in [
        vec!["keys", "list"],
        vec!["customers", "create", "--name", "Acme"],
        vec!["dlq", "list"],
        vec!["migrate", "status"],
    ] {
        let out = run_in(&elsewhere, &args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let text = stderr(&out);
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        let expected = format!(
            "no database at {}",
            elsewhere.join("data/messaging.db").display()
        );
        assert!(text.contains(&expected), "{args:?}: {text}");
        assert!(text.contains("DATABASE_URL"), "{args:?}: {text}");
        assert!(
            !elsewhere.join("data").exists(),
            "{args:?} created a database"
        );
    }
    let _ = std::fs::remove_dir_all(&elsewhere);
}

/// A relative SQLite path in a config file is taken from the file's directory: with the
/// same `--config`, commands run from anywhere share one database. Their stderr stays
/// empty (sea-orm-migration's INFO lines are below the default `info`).
#[test]
fn a_config_files_relative_sqlite_path_is_beside_the_file_wherever_commands_run() {
    let deployment = temp_dir();
    let config = deployment.join("messaging.toml");
    std::fs::write(
        &config,
        "[database]\nurl = \"sqlite://data/m.db?mode=rwc\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (a, b) = (temp_dir(), temp_dir());

    let up = run_in(&a, &["migrate", "up", "--config", config], &[]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    assert!(deployment.join("data/m.db").is_file());
    let created = run_in(
        &b,
        &["customers", "create", "--name", "Acme", "--config", config],
        &[],
    );
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    assert_eq!(
        stderr(&created),
        "",
        "no migration INFO lines, nothing but the id"
    );
    let id = stdout(&created).trim().to_string();
    let listed = run_in(&a, &["customers", "list", "--config", config], &[]);
    assert!(
        stdout(&listed).contains(&format!("{id}\tAcme")),
        "{}",
        stdout(&listed)
    );
    assert_eq!(stderr(&listed), "");
    for dir in [&a, &b] {
        assert!(
            !dir.join("data").exists(),
            "a database in {}",
            dir.display()
        );
    }
    for dir in [deployment, a, b] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A customer's name where its id belongs: one line saying what an id is, exit 2.
#[test]
fn a_customer_name_instead_of_an_id_is_explained_in_one_line() {
    let dir = temp_dir();
    let url = format!("sqlite://{}?mode=rwc", dir.join("k.db").display());
    let env = [("DATABASE_URL", url.as_str())];
    assert_eq!(run(&["migrate", "up"], &env).status.code(), Some(0));
    let out = run(
        &[
            "keys",
            "create",
            "--customer",
            "Acme",
            "--name",
            "k",
            "--scope",
            "send",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("a customer id is a UUID"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
