//! External programs some tests drive (nats-server, promtool, chromium, schemathesis, …).
//!
//! `make test` (scripts/test.sh) installs all of them. A plain `cargo test` on a machine
//! without one skips the tests that need it, each with one line saying what is missing
//! and how to get it; with `CI` set (CI services, `make test`) a missing tool fails the
//! test instead, so CI never passes with half the suite skipped.

use std::path::{Path, PathBuf};

/// The virtual environment `make test` installs tests/requirements.txt into.
pub const DEFAULT_VENV: &str = "/var/tmp/messaging-server-venv";

/// Whether a missing tool or database must fail the test rather than skip it.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How to get `tool` without `make test`.
fn hint(tool: &str) -> String {
    match tool {
        "nats-server" => "apt-get install nats-server".into(),
        "promtool" => "apt-get install prometheus".into(),
        "openssl" => "apt-get install openssl".into(),
        "mkfs.ext4" => "apt-get install e2fsprogs".into(),
        "chromium" => "apt-get install chromium".into(),
        "node" | "npm" => "apt-get install nodejs npm".into(),
        "playwright-core" => "npm ci --prefix tests/ui".into(),
        _ if npm_tool(tool) => "npm ci --prefix tests/ui".into(),
        _ => format!(
            "python3 -m venv {venv} && {venv}/bin/pip install -r tests/requirements.txt",
            venv = venv().display()
        ),
    }
}

/// Tools that come from tests/ui/package.json rather than tests/requirements.txt.
fn npm_tool(tool: &str) -> bool {
    matches!(tool, "redocly" | "openapi-typescript" | "tsc" | "prism")
}

fn venv() -> PathBuf {
    std::env::var_os("MESSAGING_VENV").map_or_else(|| PathBuf::from(DEFAULT_VENV), PathBuf::from)
}

/// Where `tool` is, looking in order at: the environment variable named after it
/// (`SCHEMATHESIS`, `NATS_SERVER`, …: an explicit override), `PATH`, the test venv's
/// `bin`, and `tests/ui/node_modules/.bin` (the last two so that a plain `cargo test`
/// after one `make test` finds what it installed).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let var = tool.to_uppercase().replace('-', "_");
    if let Some(path) = std::env::var_os(var).map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(venv().join("bin"));
    dirs.push(repo().join("tests/ui/node_modules/.bin"));
    dirs.into_iter()
        .map(|dir| dir.join(tool))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `Some(path)` when `tool` is installed. Otherwise prints one line naming the test, the
/// tool and how to get it, and returns `None` for the test to return early; under `CI`
/// it panics with that line instead.
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    let found = if tool == "playwright-core" {
        Some(repo().join("tests/ui/node_modules/playwright-core")).filter(|p| p.is_dir())
    } else {
        find_tool(tool)
    };
    if found.is_none() {
        missing(tool);
    }
    found
}

fn missing(tool: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    let line = format!(
        "{test}: needs `{tool}`, which is not installed; `make test` installs it (or: {})",
        hint(tool)
    );
    assert!(!ci(), "{line} [a failure, not a skip: CI is set]");
    // Straight to stderr: libtest captures eprintln! of passing tests, and this line is
    // the only sign that a test did not really run.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {line}");
}

/// What `output` printed, stdout then stderr (tools report on either).
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` to its end and returns what it printed (see [`output_text`]), asserting
/// it succeeded; `what` names it in the failure.
pub fn run_ok(command: &mut std::process::Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: does not run: {e}"));
    let text = output_text(&output);
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

/// Every tool in `tools` (see [`require_tool`]); `false` when any is missing.
pub fn require_tools(tools: &[&str]) -> bool {
    // Each missing one gets its line, not only the first (so no short-circuiting `all`).
    let found: Vec<bool> = tools.iter().map(|t| require_tool(t).is_some()).collect();
    found.into_iter().all(|f| f)
}

/// The Python beside an installed Python tool (its virtual environment's, with the
/// packages the tool brought), else `python3` from PATH.
pub fn python_for(tool: &Path) -> PathBuf {
    let beside = tool.with_file_name("python3");
    if beside.is_file() {
        beside
    } else {
        PathBuf::from("python3")
    }
}

/// The test venv's Python when it can import `module` (a package of
/// tests/requirements.txt), else `None` after saying what is missing (see [`require_tool`]).
pub fn python_with(module: &str) -> Option<PathBuf> {
    let python = venv().join("bin/python3");
    let imports = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !imports {
        missing(&format!("{module} (Python)"));
    }
    imports.then_some(python)
}
