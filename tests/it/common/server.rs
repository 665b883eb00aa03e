//! The real `messaging-server serve` binary as a child process, on a free port, with the
//! admin key it prints at its first start. Killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::nats::free_port;

pub const BINARY: &str = env!("CARGO_BIN_EXE_messaging-server");

/// The binary over a clean environment (`PATH` only), to listen on loopback at `port`.
pub fn binary_on(port: u16) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("MESSAGING__SERVER__HOST", "127.0.0.1");
    command
}

/// Reads `pipe` to its end on a thread: the text grows as it arrives (join the thread to
/// have all of it).
pub fn capture(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    (text, reader)
}

pub struct ServerProcess {
    child: Child,
    pub log: PathBuf,
    pub url: String,
    pub key: String,
}

impl ServerProcess {
    /// Starts `serve` with `env` (over a clean environment) and a SQLite file in `dir`
    /// unless `env` names a `DATABASE_URL`; waits for the admin key a first start prints.
    pub fn start(dir: &Path, env: &[(&str, String)]) -> ServerProcess {
        let (mut server, keys) = Self::spawn(dir, env);
        server.key = keys
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "the server printed no admin key; its log:\n{}",
                    server.log_text()
                )
            });
        server
    }

    /// As [`Self::start`] on a database that has keys already: waits for `/healthz`.
    pub fn start_with_key(dir: &Path, env: &[(&str, String)], key: &str) -> ServerProcess {
        let (mut server, _) = Self::spawn(dir, env);
        server.key = key.to_string();
        let address = server.url.trim_start_matches("http://").to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&address).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "the server exited ({status}); its log:\n{}",
                    server.log_text()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server does not listen; its log:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn spawn(dir: &Path, env: &[(&str, String)]) -> (ServerProcess, mpsc::Receiver<String>) {
        let port = free_port();
        let log = dir.join(format!("server-{port}.log"));
        let mut command = binary_on(port);
        command
            .arg("serve")
            .env("MESSAGING__SERVER__HTTP_WORKERS", "2")
            .env(
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", dir.join("server.db").display()),
            )
            .env("LOG_LEVEL", "warn")
            .env("MESSAGING__LOG__FORMAT", "json");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("the server binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(key) = line.strip_prefix("initial operator API key: ") {
                    let _ = tx.send(key.trim().to_string());
                }
            }
        });
        let server = ServerProcess {
            child,
            log,
            url: format!("http://127.0.0.1:{port}"),
            key: String::new(),
        };
        (server, rx)
    }

    /// Sends a real SIGTERM and waits for the exit: its code and the log.
    pub fn terminate(mut self, within: Duration) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.expect("kill runs").success());
        let deadline = std::time::Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "no exit within {within:?} of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.code(), self.log_text())
    }

    /// The OpenAPI document the server serves (asserting it answers 200).
    pub async fn openapi_document(&self) -> actix_web::web::Bytes {
        let mut response = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish()
            .get(format!("{}/openapi.json", self.url))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status().as_u16(), 200);
        response.body().limit(4 << 20).await.expect("the document")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `client`, a program driving this server, to its end and returns its stdout;
    /// when it fails, panics naming `what`, with its output and this server's log. It runs
    /// on a blocking thread so that the test's runtime keeps serving what the client may
    /// also talk to (a stub provider).
    pub async fn run_client(&self, mut client: Command, what: &str) -> String {
        let output =
            actix_web::rt::task::spawn_blocking(move || client.stdin(Stdio::null()).output())
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{what}: does not run: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "{what} failed:\n{stdout}\n{stderr}\nserver log:\n{}",
            self.log_text()
        );
        stdout
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
