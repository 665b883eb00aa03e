//! The published document as other tools read it, fetched live from the real binary:
//! Redocly CLI's lint (with the repository's redocly.yaml) and openapi-spec-validator find
//! no error, and the TypeScript types openapi-typescript generates compile with
//! `tsc --strict` in tests/peers/openapi_types.ts. Also, without any tool: every operation has
//! examples and each one validates against its schema.
//!
//! The tools come from tests/requirements.txt and tests/ui/package.json (see
//! common::tools: a missing one skips its test, or fails it in CI).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::server::ServerProcess;
use common::tools;
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ms-{what}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the binary in `dir` and saves the document it serves as `dir/openapi.json`.
async fn live_document(dir: &Path) -> PathBuf {
    let server = ServerProcess::start(dir, &[]);
    let body = server.openapi_document().await;
    let path = dir.join("openapi.json");
    std::fs::write(&path, &body).expect("write the document");
    path
}

/// npm tools are node scripts: without node they are as missing as without the package.
fn require_node_tool(name: &str) -> Option<PathBuf> {
    tools::require_tool("node")?;
    tools::require_tool(name)
}

#[actix_web::test]
async fn redocly_lint_finds_no_problem() {
    let Some(redocly) = require_node_tool("redocly") else {
        return;
    };
    let dir = Scratch::new("redocly");
    let document = live_document(&dir.0).await;
    let out = tools::run_ok(
        Command::new(redocly)
            .arg("lint")
            .arg(&document)
            .arg("--config")
            .arg(root().join("redocly.yaml"))
            .args(["--format", "stylish"])
            // No usage reports, no update check: the run stays offline.
            .env("REDOCLY_TELEMETRY", "off")
            .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")
            .current_dir(&dir.0),
        "redocly lint",
    );
    // Warnings do not fail the command: each rule that would warn is off in redocly.yaml,
    // with its reason. A problem is a `line:column  severity  rule  message` line (other
    // lines may say "warning", such as Node.js version notices).
    let problems: Vec<&str> = out
        .lines()
        .filter(|line| {
            let mut words = line.split_whitespace();
            let position = words.next().unwrap_or_default();
            position.contains(':')
                && position.split(':').all(|n| n.parse::<u64>().is_ok())
                && matches!(words.next(), Some("error" | "warning"))
        })
        .collect();
    assert!(
        problems.is_empty() && out.contains("Your API description is valid"),
        "redocly lint reports problems:\n{out}"
    );
}

#[actix_web::test]
async fn openapi_spec_validator_finds_no_error() {
    let Some(validator) = tools::require_tool("openapi-spec-validator") else {
        return;
    };
    let dir = Scratch::new("spec-validator");
    let document = live_document(&dir.0).await;
    let out = tools::run_ok(
        Command::new(validator).arg(&document),
        "openapi-spec-validator",
    );
    assert!(out.contains("OK"), "openapi-spec-validator:\n{out}");
}

#[actix_web::test]
async fn typescript_types_compile_strictly() {
    let Some(generator) = require_node_tool("openapi-typescript") else {
        return;
    };
    let Some(tsc) = tools::require_tool("tsc") else {
        return;
    };
    let dir = Scratch::new("typescript");
    let document = live_document(&dir.0).await;
    tools::run_ok(
        Command::new(generator)
            .arg(&document)
            .arg("--output")
            .arg(dir.0.join("api.d.ts")),
        "openapi-typescript",
    );
    std::fs::copy(
        root().join("tests/peers/openapi_types.ts"),
        dir.0.join("usage.ts"),
    )
    .expect("copy the usage file");
    tools::run_ok(
        Command::new(tsc)
            .args([
                "--strict", "--noEmit", "--target", "es2022", "--module", "esnext",
            ])
            .args(["--moduleResolution", "bundler", "usage.ts"])
            .current_dir(&dir.0),
        "tsc --strict",
    );
}

/// The schema a media type's examples must match, as a validator over the whole document
/// (so that `#/components/...` references resolve).
fn validator(doc: &Value, pointer: &str) -> jsonschema::Validator {
    let mut root = doc.clone();
    root["$ref"] = json!(format!("#{pointer}/schema"));
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .expect("the schema compiles")
}

fn escape(segment: &str) -> String {
    segment
        .replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

#[test]
fn every_operation_has_examples_that_match_their_schemas() {
    let doc = messaging_server::http::openapi::json();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let id = op["operationId"].as_str().expect("an operationId");
            let base = format!("/paths/{}/{method}", escape(path));
            let mut media_types = Vec::new();
            if let Some(content) = op["requestBody"]["content"].as_object() {
                assert!(
                    content.values().all(|m| m["examples"].is_object()),
                    "{id}: a request body without examples"
                );
                media_types.extend(
                    content
                        .keys()
                        .map(|m| format!("{base}/requestBody/content/{}", escape(m))),
                );
            }
            let responses = op["responses"].as_object().expect("responses");
            let success = responses
                .iter()
                .find(|(status, _)| status.starts_with('2'))
                .unwrap_or_else(|| panic!("{id}: no 2xx answer"));
            let has_body = success.1.get("content").is_some();
            assert!(
                !has_body
                    || success.1["content"]
                        .as_object()
                        .unwrap()
                        .values()
                        .all(|m| m["examples"].is_object()),
                "{id}: its {} answer has no example",
                success.0
            );
            for (status, response) in responses {
                for (media, content) in response["content"].as_object().into_iter().flatten() {
                    if content.get("examples").is_some() {
                        media_types.push(format!(
                            "{base}/responses/{status}/content/{}",
                            escape(media)
                        ));
                    }
                }
            }
            for pointer in media_types {
                let content = doc.pointer(&pointer.replace("%7B", "{").replace("%7D", "}"));
                let content = content.expect("the media type");
                let validator = validator(doc, &pointer);
                for (name, example) in content["examples"].as_object().expect("examples") {
                    let errors: Vec<String> = validator
                        .iter_errors(&example["value"])
                        .map(|e| format!("{e} at {}", e.instance_path()))
                        .collect();
                    assert!(
                        errors.is_empty(),
                        "{id}: example {name} at {pointer} breaks its schema: {errors:?}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 40, "only {checked} examples checked");
}
