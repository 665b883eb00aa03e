//! Private `nats-server -js` processes for tests: one server on a random port with a
//! temporary store directory, or a 3-node JetStream cluster on localhost. Servers are
//! killed (SIGKILL) or stopped (SIGTERM) for real, and restarted on the same port and
//! store, so what they had acknowledged must survive.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{databases, eventually, require_tool, Db};

/// The databases a NATS test runs on ([`databases`]): none when `nats-server` is missing
/// ([`require_tool`] says so).
pub fn nats_databases() -> Vec<Db> {
    match require_tool("nats-server") {
        Some(_) => databases(),
        None => Vec::new(),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .unwrap()
        .port()
}

pub struct NatsServer {
    pub name: String,
    pub port: u16,
    monitor_port: u16,
    store: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    /// A single JetStream server.
    pub async fn start() -> NatsServer {
        let server = Self::spawn(format!("n-{}", free_port()), free_port(), Vec::new());
        server.wait_healthy().await;
        server
    }

    fn spawn(name: String, port: u16, extra: Vec<String>) -> NatsServer {
        let store = std::env::temp_dir().join(format!("ms-nats-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&store).expect("store dir");
        let mut server = NatsServer {
            name,
            port,
            monitor_port: free_port(),
            store,
            extra,
            child: None,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-n", &self.name])
            .args(["-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .arg("-sd")
            .arg(&self.store)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (Debian package nats-server; make test installs it)");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits until the server reports JetStream healthy (in a cluster: a meta leader).
    pub async fn wait_healthy(&self) {
        let client = awc::Client::default();
        let url = format!("http://127.0.0.1:{}/healthz", self.monitor_port);
        eventually(Duration::from_secs(30), "nats-server healthy", || async {
            matches!(client.get(&url).send().await, Ok(r) if r.status().is_success())
        })
        .await;
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill it first");
        self.launch();
        self.wait_healthy().await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Three JetStream servers routed to each other on localhost.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub async fn start() -> NatsCluster {
        let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let cluster_name = format!("c{}", cluster_ports[0]);
        let nodes: Vec<NatsServer> = (0..3)
            .map(|i| {
                let routes: Vec<String> = cluster_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                    .collect();
                let extra = vec![
                    "--cluster_name".to_string(),
                    cluster_name.clone(),
                    "--cluster".to_string(),
                    format!("nats://127.0.0.1:{}", cluster_ports[i]),
                    "--routes".to_string(),
                    routes.join(","),
                ];
                NatsServer::spawn(format!("{cluster_name}-n{i}"), free_port(), extra)
            })
            .collect();
        for node in &nodes {
            node.wait_healthy().await;
        }
        NatsCluster { nodes }
    }

    /// Every node's URL, comma-separated (as `queue.nats.url`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&mut self, name: &str) -> &mut NatsServer {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }
}
