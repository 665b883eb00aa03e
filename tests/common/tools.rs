//! External tools some tests run (Python and npm packages that `make test` installs): found
//! on PATH, in the suite's virtual environment or in tests/ui/node_modules/.bin. Without
//! one, such a test is skipped with one line, except in CI, where it fails.

use std::path::{Path, PathBuf};

/// The virtual environment `make test` installs tests/requirements.txt into.
pub const VENV_BIN: &str = "/var/tmp/messaging-server-venv/bin";

fn node_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/node_modules/.bin")
}

/// Where `name` is: PATH first, then the virtual environment, then tests/ui's packages.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from(VENV_BIN), node_bin()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Like `common::postgres_configured`: any value but empty, `0` or `false` means CI.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// `name`'s path, or `None` after saying that it is missing (the caller returns: skipped).
/// In CI a missing tool is a failure: a skipped contract check would pass silently.
pub fn require(name: &str) -> Option<PathBuf> {
    let found = find(name);
    if found.is_none() {
        assert!(
            !in_ci(),
            "{name} is not installed (CI is set, so this fails instead of skipping): make test installs it"
        );
        eprintln!("skipped: {name} is not installed; make test installs it");
    }
    found
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
