//! What the peer programs tests run beside the server (tests/peers/*.py, prism) have in
//! common: a child process that must not outlive the test, files worth reading when the
//! test fails, and, for the Python ones, a JSON report a line on stdout.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::eventually;

/// A peer's reports, oldest first, shared with the thread that reads them.
pub type Reports = Arc<Mutex<Vec<Value>>>;

/// A running peer: killed when dropped, its `files` (a log or a directory) then named on
/// stderr if the test failed, removed otherwise.
pub struct Peer {
    child: Option<Child>,
    /// What the peer is, in the line naming its files.
    what: &'static str,
    pub files: PathBuf,
}

impl Peer {
    pub fn new(child: Child, what: &'static str, files: PathBuf) -> Peer {
        Peer {
            child: Some(child),
            what,
            files,
        }
    }

    /// Kills it now; its files stay until it is dropped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and hands its files to the caller (for a new peer on them): dropping it
    /// then leaves them alone.
    pub fn hand_over_files(mut self) -> PathBuf {
        self.stop();
        std::mem::take(&mut self.files)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
        if self.files.as_os_str().is_empty() {
            return;
        }
        if std::thread::panicking() {
            eprintln!("{}: {}", self.what, self.files.display());
        } else if self.files.is_dir() {
            let _ = std::fs::remove_dir_all(&self.files);
        } else {
            let _ = std::fs::remove_file(&self.files);
        }
    }
}

/// Adds each line `stdout` prints to `reports`, as JSON (`{"line": …}` when it is not).
pub fn read_reports(stdout: ChildStdout, reports: Reports) {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let report = serde_json::from_str(&line).unwrap_or(json!({ "line": line }));
            reports.lock().unwrap().push(report);
        }
    });
}

/// The reports that match `filter`.
pub fn matching(reports: &Reports, filter: impl Fn(&Value) -> bool) -> Vec<Value> {
    let reports = reports.lock().unwrap();
    reports.iter().filter(|r| filter(r)).cloned().collect()
}

/// Waits for a peer's `{"ready": port}` report beyond the first `before` (those of its
/// earlier lives, when it shares their reports); its port.
pub async fn ready_port(reports: &Reports, before: usize, what: &str) -> u16 {
    let is_ready = |r: &Value| r["ready"].is_u64();
    eventually(Duration::from_secs(30), what, || {
        let started = matching(reports, is_ready).len();
        async move { started > before }
    })
    .await;
    matching(reports, is_ready).last().unwrap()["ready"]
        .as_u64()
        .unwrap() as u16
}

/// How many `{"ready": port}` reports there are: a restarted peer's `before`.
pub fn ready_count(reports: &Reports) -> usize {
    matching(reports, |r| r["ready"].is_u64()).len()
}
