//! A Python client generated from the live /openapi.json does the whole API: the real
//! binary serves the document, `openapi-python-client` generates a client from it (every
//! operation, no warning), and tests/peers/generated_client.py uses that client against the same
//! server: sends, webhooks, statuses followed to the end, conversations and messages, the
//! dead-letter queue, stats.
//!
//! On SQLite, and on PostgreSQL when `TEST_DATABASE_URL` is set. The SMS provider is a stub
//! over HTTP (tests/it/common/stub.rs) that the script switches to refusing (a permanent 400)
//! while it sends a message, so that dead letters exist to read, replay (once the stub
//! accepts again) and delete. The tools come from tests/requirements.txt (see
//! common::tools: a missing one skips this test, or fails it in CI).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::server::ServerProcess;
use common::stub::{Answer, StubProvider};
use common::tools;
use common::{databases, TestDatabase};
use serde_json::Value;

const SCRIPT: &str = "tests/peers/generated_client.py";
/// The package `openapi-python-client` names after the document's title.
const PACKAGE: &str = "messaging_server_client";

/// `sendSms` → `send_sms`: the module each operation gets.
fn snake_case(operation_id: &str) -> String {
    let mut out = String::new();
    for c in operation_id.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn operation_ids(doc: &Value) -> Vec<String> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().expect("a path item").values())
        .filter_map(|op| op["operationId"].as_str().map(str::to_string))
        .collect()
}

/// Where each operation's module is, by module name (`api/<tag>/<operation>.py`).
fn generated_modules(package: &Path) -> Vec<String> {
    let mut modules = Vec::new();
    for tag in std::fs::read_dir(package.join("api")).expect("an api package") {
        let tag = tag.unwrap().path();
        if !tag.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&tag).unwrap() {
            let name = file.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(module) = name.strip_suffix(".py") {
                modules.push(module.to_string());
            }
        }
    }
    modules
}

/// Generates the client from `document` into `dir/<PACKAGE>`; checks that every operation
/// is there and that the generator warned of nothing.
fn generate(generator: &Path, dir: &Path, doc: &Value) {
    // Its formatter (ruff, installed with it) is found on PATH: without it, a warning.
    let tool_dir = generator.parent().expect("a directory").to_path_buf();
    let path = std::env::join_paths(std::iter::once(tool_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("a PATH");
    let out = tools::run_ok(
        Command::new(generator)
            .env("PATH", path)
            .args(["generate", "--path", "openapi.json", "--meta", "none"])
            .args(["--output-path", PACKAGE, "--fail-on-warning"])
            .current_dir(dir),
        "openapi-python-client",
    );
    // It skips what it cannot generate with only a warning: none may be left.
    assert!(
        !out.to_ascii_lowercase().contains("warning"),
        "openapi-python-client warned:\n{out}"
    );
    let modules = generated_modules(&dir.join(PACKAGE));
    let missing: Vec<String> = operation_ids(doc)
        .into_iter()
        .filter(|id| !modules.contains(&snake_case(id)))
        .collect();
    assert!(
        missing.is_empty(),
        "operations not generated: {missing:?} (generated: {modules:?})\n{out}"
    );
}

/// The server with the stub as its SMS provider, on `database`.
fn start(dir: &Path, stub: &StubProvider, database: &TestDatabase) -> ServerProcess {
    ServerProcess::start(
        dir,
        &[
            ("DATABASE_URL", database.url.clone()),
            ("MESSAGING__PROVIDERS__SMS__KIND", "http".into()),
            ("MESSAGING__PROVIDERS__SMS__URL", stub.url.clone()),
        ],
    )
}

#[actix_web::test]
async fn a_generated_python_client_does_the_whole_api() {
    let Some(generator) = tools::require_tool("openapi-python-client") else {
        return;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("ms-client-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let stub = StubProvider::start(Vec::new(), Answer::Accept);
    let mut generated = false;
    for db in databases() {
        let database = TestDatabase::create(db).await;
        let server = start(&dir, &stub, &database);
        if !generated {
            let document = server.openapi_document().await;
            std::fs::write(dir.join("openapi.json"), &document).unwrap();
            let doc: Value = serde_json::from_slice(&document).expect("JSON");
            generate(&generator, &dir, &doc);
            generated = true;
        }

        let mut script = Command::new(tools::python_for(&generator));
        script
            .arg(root.join(SCRIPT))
            .env("MESSAGING_URL", &server.url)
            .env("MESSAGING_API_KEY", &server.key)
            .env("PROVIDER_CONTROL_URL", stub.control_url())
            .env("PYTHONPATH", &dir)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let what = format!("{db:?}: the script through the generated client");
        let stdout = server.run_client(script, &what).await;
        assert!(
            stdout.contains("the generated client did everything"),
            "{db:?}: {stdout}"
        );
        drop(server);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
