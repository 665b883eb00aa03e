//! The README's examples, run in order against the real binary on a fresh SQLite database
//! and compared with the answers the README shows: a reader who follows them gets exactly
//! those answers. Covered: the sections from "## Quick start" to "## Idempotency".
//!
//! Conventions the README follows (they render as ordinary code blocks):
//! - A ```sh block made only of `curl` commands is run, command by command. curl's options
//!   are read by this test (`-X`, `-H`, `-d`, `-i`, `-s`, `-o`); `$KEY` is the admin key
//!   the first start printed, `localhost:8080` the server under test. `export KEY=…` lines
//!   are the reader's own and skipped.
//! - A ```sh block whose only command is `NAME=value … cargo run --release` restarts the
//!   server on the same database with those variables.
//! - Other ```sh blocks (`make test`, …) are not run.
//! - The block right after a run block is the answer of its last command:
//!   - ```json STATUS: the status code, and the JSON, compared whole;
//!   - ```http: `curl -i` output: the status line, the headers shown (others may follow),
//!     a blank line and the JSON body if any;
//!   - ```text: lines the answer must contain, in any order (`...` lines are skipped).
//!
//!   A value that differs between runs is written as a placeholder, `"<timestamp>"`,
//!   `"<event id>"` (in text, `<…>` stands for a run of characters without a space).
//!   Derived idempotency keys, ids, counts and statuses are compared exactly.
//! - Before each command the test waits (polling, with a deadline) until the server's queue
//!   is empty and no message waits for its provider, as a reader typing the commands one
//!   by one would: statuses and counts are then final.

use crate::common;

mod example;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::nats::free_port;
use common::server::binary_on;
use example::{Block, Request};
use serde_json::Value;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` on `database` with `env`; returns it and, on a first start (`first`), the
/// admin key it printed.
async fn start(
    dir: &Path,
    database: &str,
    env: &[(String, String)],
    first: bool,
) -> (Server, Option<String>) {
    let port = free_port();
    let mut command = binary_on(port);
    command
        .arg("serve")
        .env("DATABASE_URL", database)
        .env("LOG_LEVEL", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join(format!("server-{port}.log"))).unwrap());
    let mut child = command.spawn().expect("the server binary starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(key) = line.strip_prefix("initial operator API key: ") {
                let _ = tx.send(key.to_string());
            }
        }
    });
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = awc::Client::default();
    let health = format!("{}/healthz", server.url);
    common::eventually(Duration::from_secs(60), "the server answers", || async {
        matches!(client.get(&health).send().await, Ok(r) if r.status().is_success())
    })
    .await;
    // Printed before the server answers, but read by another thread: wait for it.
    let key = first.then(|| rx.recv_timeout(Duration::from_secs(10)).ok());
    (server, key.flatten())
}

/// Polls `/api/stats` until nothing is queued, retrying or in flight, and no outbound
/// message waits for its provider (the delivery stage runs after the commit).
async fn settle(client: &awc::Client, server: &Server, key: &str) {
    let url = format!("{}/api/stats", server.url);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut response) = client.get(&url).bearer_auth(key).send().await {
            let stats: Value = response.json().await.unwrap_or_default();
            if stats["queue_depth"] == 0 && stats["delivery_unsent"] == 0 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the queue and the deliveries did not settle in 30 s"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

async fn send(client: &awc::Client, server: &Server, request: &Request) -> Answer {
    let method = request.method.parse().expect("an HTTP method");
    let mut builder = client.request(method, format!("{}{}", server.url, request.path));
    for (name, value) in &request.headers {
        builder = builder.insert_header((name.as_str(), value.as_str()));
    }
    let sent = match &request.body {
        Some(body) => builder.send_body(body.clone()).await,
        None => builder.send().await,
    };
    let mut response = sent.expect("the server answers");
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = response.body().limit(1 << 24).await.expect("a body");
    Answer {
        status: response.status().as_u16(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Differences between the answer `shown` in the README and the `real` one.
fn compare(shown: &Block, real: &Answer) -> Vec<String> {
    let mut out = Vec::new();
    let json = |text: &str, out: &mut Vec<String>| {
        serde_json::from_str::<Value>(text)
            .map_err(|e| out.push(format!("not JSON ({e}): {text}")))
            .ok()
    };
    let (kind, status) = shown.info.split_once(' ').unwrap_or((&shown.info, ""));
    match kind {
        "json" => {
            if status != real.status.to_string() {
                out.push(format!(
                    "status: shown {status:?}, answered {}",
                    real.status
                ));
            }
            if let (Some(a), Some(b)) = (json(&shown.text, &mut out), json(&real.body, &mut out)) {
                example::compare_json(&a, &b, "$", &mut out);
            }
        }
        "http" => {
            let (head, body) = shown.text.split_once("\n\n").unwrap_or((&shown.text, ""));
            let mut lines = head.lines();
            let status_line = lines.next().unwrap_or_default();
            if status_line.split(' ').nth(1) != Some(&real.status.to_string()) {
                out.push(format!("{status_line:?}, answered {}", real.status));
            }
            for line in lines {
                let (name, value) = line.split_once(": ").expect("name: value");
                let found = real
                    .headers
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case(name) && example::matches_line(value, v));
                if !found {
                    out.push(format!("header {line:?} not in {:?}", real.headers));
                }
            }
            if !body.trim().is_empty() {
                if let (Some(a), Some(b)) = (json(body, &mut out), json(&real.body, &mut out)) {
                    example::compare_json(&a, &b, "$", &mut out);
                }
            }
        }
        "text" => {
            for line in shown.text.lines().filter(|l| *l != "...") {
                if !real.body.lines().any(|r| example::matches_line(line, r)) {
                    out.push(format!("line {line:?} not in the answer"));
                }
            }
        }
        other => out.push(format!(
            "an answer block must be json, http or text, not {other:?}"
        )),
    }
    out
}

/// `NAME=value … cargo run --release`: the variables, or `None` for another command.
fn restart_env(command: &[String]) -> Option<Vec<(String, String)>> {
    let (assignments, run) = command.split_at(command.len().checked_sub(3)?);
    if run != ["cargo", "run", "--release"] {
        return None;
    }
    assignments
        .iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[actix_web::test]
async fn the_readme_examples_give_the_answers_it_shows() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = example::blocks(&readme, "## Quick start", "## Idempotency");
    let dir = std::env::temp_dir().join(format!("ms-readme-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite://{}?mode=rwc", dir.join("readme.db").display());

    let (mut server, key) = start(&dir, &database, &[], true).await;
    let key = key.expect("the first start prints an admin key");
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut failures = Vec::new();
    let (mut run, mut last) = (0, None);
    for (i, block) in blocks.iter().enumerate() {
        if block.info != "sh" {
            continue;
        }
        let commands: Vec<Vec<String>> = example::commands(&block.text, &key)
            .into_iter()
            .filter(|c| c[0] != "export")
            .collect();
        if let [only] = commands.as_slice() {
            if let Some(env) = restart_env(only) {
                // Stopped once idle, as a reader would before typing the next start.
                settle(&client, &server, &key).await;
                drop(server);
                server = start(&dir, &database, &env, false).await.0;
                continue;
            }
        }
        if commands.is_empty() || commands.iter().any(|c| c[0] != "curl") {
            continue;
        }
        for command in &commands {
            settle(&client, &server, &key).await;
            last = Some(send(&client, &server, &example::curl(command)).await);
            run += 1;
        }
        let answer = blocks.get(i + 1).filter(|b| b.info != "sh");
        if let (Some(shown), Some(real)) = (answer, &last) {
            for difference in compare(shown, real) {
                // The start of the answer is enough to see what changed (/metrics is long).
                let answered: String = real.body.chars().take(600).collect();
                failures.push(format!(
                    "README.md line {} (answer of the block at line {}): {difference}\n  answered: {answered}",
                    shown.line, block.line
                ));
            }
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        run >= 30,
        "only {run} commands found: did the conventions change?"
    );
    assert!(
        failures.is_empty(),
        "{} difference(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The README's layout map (the block under "## Development") and `src/`: every entry of
/// `src/` and of its directories is on the map, and every file the map names exists.
#[test]
fn the_layout_map_matches_the_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Development")
        .expect("a Development section")..];
    let start = section.find("```\n").expect("the map's block") + 4;
    let map = &section[start..start + section[start..].find("```").unwrap()];
    // The lines from `src/` to the next top-level entry.
    let map = &map[map.find("\nsrc/").expect("src/ on the map")..];
    let map = &map[..map.find("\nentity/").expect("entity/ after src/")];
    let words: Vec<&str> = map
        .split(|c: char| c.is_whitespace() || ",;()".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    // `x/` is named by `x/` or by a path in it (`routes/mod.rs`).
    let named = |name: &str| {
        words.iter().any(|w| {
            let w = w.trim_end_matches(':');
            w == name || (name.ends_with('/') && w.starts_with(name))
        })
    };

    let mut missing = Vec::new();
    let mut files = Vec::new();
    let src = root.join("src");
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.push(name.clone());
            if path.is_dir() {
                // `src/x/` and its subdirectories: each on the map as `x/`.
                if !named(&format!("{name}/")) {
                    missing.push(format!("{}/", path.strip_prefix(root).unwrap().display()));
                }
                dirs.push(path);
            } else if dir == src && !named(&name) {
                missing.push(format!("src/{name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not on the README's layout map: {missing:?}"
    );
    let stale: Vec<&str> = words
        .iter()
        .map(|w| w.trim_end_matches(['.', ':']))
        .filter(|w| w.ends_with(".rs") || w.ends_with(".js"))
        .filter(|w| !files.iter().any(|f| f == w.rsplit('/').next().unwrap()))
        .collect();
    assert!(stale.is_empty(), "on the map but not in src/: {stale:?}");
}
