//! Test harness: starts the real application on a random port with a fresh database.
//!
//! Every test runs on SQLite, and on PostgreSQL too when `TEST_DATABASE_URL` points at a
//! server (each app gets its own database there, dropped afterwards).

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod nats;
pub mod otlp;
pub mod peer;
pub mod receiver;
pub mod responses;
pub mod server;
pub mod stub;
pub mod tls_stub;
pub mod tools;

pub use responses::{answer_of, header_text, items};
#[allow(unused_imports)] // each test binary uses a different part of the harness
pub use tools::{require_tool, require_tools};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use messaging_server::actors::faults::Site;
use messaging_server::actors::queue::{Enqueue, WaitUntilDrained};
use messaging_server::config::Settings;
use messaging_server::domain::Event;
use messaging_server::http::AppState;
use messaging_server::providers::{MockProvider, Providers};
use messaging_server::startup::{Application, Hooks};
use messaging_server::store::keys::{self, Scope};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// SQLite always; PostgreSQL when `TEST_DATABASE_URL` is set (which CI must do).
pub fn databases() -> Vec<Db> {
    let mut dbs = vec![Db::Sqlite];
    if postgres_configured() {
        dbs.push(Db::Postgres);
    }
    dbs
}

/// Whether the PostgreSQL half of the suite runs. Outside CI it is optional; in CI (`CI`
/// set, as CI services and `make test` do) a missing `TEST_DATABASE_URL` fails the test
/// instead of silently skipping half of it.
pub fn postgres_configured() -> bool {
    let configured = std::env::var("TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty());
    assert!(
        configured || !tools::ci(),
        "CI is set but TEST_DATABASE_URL is not: the PostgreSQL half of the suite would be skipped"
    );
    configured
}

/// A fresh, empty database; dropped (PostgreSQL) or deleted (SQLite) with the value.
pub struct TestDatabase {
    pub kind: Db,
    pub url: String,
    name: String,
    admin_url: Option<String>,
    /// PostgreSQL: the role the application connects as (it owns the database, so a test
    /// can revoke its privileges; a superuser's cannot be revoked).
    pub role: Option<String>,
}

impl TestDatabase {
    pub async fn create(kind: Db) -> Self {
        let name = format!("ms_test_{}", uuid::Uuid::new_v4().simple());
        match kind {
            Db::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                TestDatabase {
                    kind,
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    name,
                    admin_url: None,
                    role: None,
                }
            }
            Db::Postgres => {
                let admin_url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                for sql in [
                    format!("CREATE ROLE {name} LOGIN"),
                    format!("CREATE DATABASE {name} OWNER {name}"),
                ] {
                    admin.execute_unprepared(&sql).await.expect(&sql);
                }
                admin.close().await.ok();
                let (scheme, rest) = admin_url.split_once("://").expect("a URL");
                let host_and_path = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                let host = host_and_path.split('/').next().expect("a host");
                TestDatabase {
                    kind,
                    url: format!("{scheme}://{name}@{host}/{name}"),
                    name: name.clone(),
                    admin_url: Some(admin_url),
                    role: Some(name),
                }
            }
        }
    }

    /// Runs SQL on this database as the administrator (PostgreSQL only): fault injection.
    pub async fn admin_execute(&self, sql: &str) {
        let admin_url = self.admin_url.as_ref().expect("PostgreSQL test database");
        let url = format!("{}/{}", admin_url.rsplit_once('/').unwrap().0, self.name);
        let db = Database::connect(&url).await.expect("connect as admin");
        db.execute_unprepared(sql).await.expect(sql);
        db.close().await.ok();
    }
}

impl TestDatabase {
    /// This database's own directory for spill files (see [`spill_dir`]).
    pub fn spill_dir(&self) -> std::path::PathBuf {
        spill_dir(&self.url)
    }
}

/// A directory of spill files for the database at `url`, its own: the default (beside the
/// SQLite file) is the temp directory every test database shares.
pub fn spill_dir(url: &str) -> std::path::PathBuf {
    let name = url
        .rsplit('/')
        .next()
        .and_then(|last| last.split('?').next())
        .unwrap_or_default()
        .trim_end_matches(".db");
    std::env::temp_dir().join(format!("{name}-spill"))
}

/// Inserts into a table refused for a while (see [`TestDatabase::block_inserts`]).
pub struct InsertBlock {
    table: String,
    /// SQLite: the connection that holds the write lock.
    lock: Option<DatabaseConnection>,
}

impl TestDatabase {
    /// Refuses inserts into `table` until [`InsertBlock::release`]: on PostgreSQL the
    /// application's role loses INSERT on it; on SQLite another connection holds the write
    /// lock.
    pub async fn block_inserts(&self, table: &str) -> InsertBlock {
        let lock = match self.kind {
            Db::Postgres => {
                let role = self.role.clone().unwrap();
                self.admin_execute(&format!("REVOKE INSERT ON {table} FROM {role}"))
                    .await;
                None
            }
            Db::Sqlite => {
                let mut options = sea_orm::ConnectOptions::new(self.url.clone());
                options.max_connections(1).min_connections(1);
                let conn = Database::connect(options).await.unwrap();
                conn.execute_unprepared("BEGIN EXCLUSIVE").await.unwrap();
                Some(conn)
            }
        };
        InsertBlock {
            table: table.to_string(),
            lock,
        }
    }
}

impl InsertBlock {
    /// Takes inserts again: the privilege given back, or the lock released.
    pub async fn release(self, database: &TestDatabase) {
        match self.lock {
            Some(conn) => {
                conn.execute_unprepared("COMMIT").await.unwrap();
                conn.close().await.unwrap();
            }
            None => {
                let role = database.role.clone().unwrap();
                let table = &self.table;
                database
                    .admin_execute(&format!("GRANT INSERT ON {table} TO {role}"))
                    .await;
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.spill_dir());
        match &self.admin_url {
            None => {
                let path = self
                    .url
                    .trim_start_matches("sqlite://")
                    .trim_end_matches("?mode=rwc");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
            Some(admin_url) => {
                // Drop runs outside any runtime we may block on: use a private one.
                let (admin_url, name) = (admin_url.clone(), self.name.clone());
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async {
                        if let Ok(admin) = Database::connect(&admin_url).await {
                            for sql in [
                                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                                format!("DROP ROLE IF EXISTS {name}"),
                            ] {
                                let _ = admin.execute_unprepared(&sql).await;
                            }
                            admin.close().await.ok();
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// Settings for tests: a free port on loopback, short retry delays.
pub fn test_settings(database_url: &str) -> Settings {
    let mut settings = Settings::defaults();
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.server.http_workers = 1;
    settings.database.url = database_url.to_string();
    settings.database.max_connections = 5;
    settings.queue.spill_dir = spill_dir(database_url).display().to_string();
    settings.retry.base_delay = Duration::from_millis(10);
    settings.retry.max_delay = Duration::from_millis(50);
    settings.providers.sms.mock_retry_after = Duration::from_millis(10);
    settings.providers.email.mock_retry_after = Duration::from_millis(10);
    settings
}

pub struct TestApp {
    pub address: String,
    /// An admin key (the one the first start created): the request helpers send it, so
    /// every test runs with authentication on, the product's default.
    pub admin_key: String,
    pub state: AppState,
    pub sms: Arc<MockProvider>,
    pub email: Arc<MockProvider>,
    pub client: awc::Client,
    // Dropped last: the app's connections close with the test's System.
    pub database: TestDatabase,
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// [`spawn_app_with_hooks`] with the default hooks.
pub async fn spawn_app_with(db: Db, configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with_hooks(db, configure, Hooks::default()).await
}

/// An API-only app on SQLite (worker off: what is accepted stays queued), `configure` applied.
pub async fn spawn_api_only(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let configure = |s: &mut Settings| {
        s.worker.enabled = false;
        configure(s);
    };
    spawn_app_with(Db::Sqlite, configure).await
}

/// Hooks whose fault panics the first time `site` is reached (and never again); the flag
/// says whether it has.
pub fn panics_once_at(site: Site) -> (Hooks, Arc<AtomicBool>) {
    let panicked = Arc::new(AtomicBool::new(false));
    let flag = panicked.clone();
    let hooks = Hooks {
        fault: Some(Arc::new(move |at, _| {
            if at == site && !flag.swap(true, Ordering::SeqCst) {
                panic!("injected fault at {site:?}");
            }
            None
        })),
        ..Hooks::default()
    };
    (hooks, panicked)
}

/// Starts the application as the binary does, with `configure` applied to the settings.
/// Unless `hooks` brings its own providers, mocks built from the settings are used and
/// kept so the test can ask what they delivered.
pub async fn spawn_app_with_hooks(
    db: Db,
    configure: impl FnOnce(&mut Settings),
    hooks: Hooks,
) -> TestApp {
    let database = TestDatabase::create(db).await;
    spawn_on(database, configure, hooks).await
}

/// Hooks whose SMS provider is built from the settings (the `http` kind pointed at a stub),
/// beside the tests' mock email provider.
pub fn real_sms(settings: &Settings) -> Hooks {
    Hooks {
        providers: Some(Providers {
            sms: Providers::from_settings(&settings.providers).sms,
            email: Arc::new(MockProvider::new("email", &settings.providers.email)),
        }),
        ..Hooks::default()
    }
}

/// Hooks whose providers are all built from the settings, not the tests' mocks.
pub fn real_providers(settings: &Settings) -> Hooks {
    Hooks {
        providers: Some(Providers::from_settings(&settings.providers)),
        ..Hooks::default()
    }
}

/// An app on `database` whose SMS provider is `stub` (over HTTP, every provider built from
/// the settings); `configure` runs last.
pub async fn spawn_with_stub(
    database: TestDatabase,
    stub: &stub::StubProvider,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = test_settings(&database.url);
    stub::use_stub(&mut settings, stub);
    configure(&mut settings);
    let hooks = real_providers(&settings);
    spawn_on(database, move |s| *s = settings, hooks).await
}

pub async fn spawn_on(
    database: TestDatabase,
    configure: impl FnOnce(&mut Settings),
    mut hooks: Hooks,
) -> TestApp {
    let mut settings = test_settings(&database.url);
    configure(&mut settings);
    let sms = Arc::new(MockProvider::new("sms", &settings.providers.sms));
    let email = Arc::new(MockProvider::new("email", &settings.providers.email));
    if hooks.providers.is_none() {
        hooks.providers = Some(Providers {
            sms: sms.clone(),
            email: email.clone(),
        });
    }
    let mut app = Application::build_with(settings, hooks)
        .await
        .expect("application starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let admin_key = match app.take_initial_admin_key() {
        Some(key) => key,
        // A restart on a database that has keys (or auth.required = false).
        None => create_operator_key(&state.db).await,
    };
    own_test_addresses(&state.db, state.settings.api.default_customer_id).await;
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        admin_key,
        state,
        sms,
        email,
        // A pooled connection is reused only while the server still keeps it (actix-http
        // closes an idle one after 5 s; awc keeps it 15 s by default, and a request sent
        // on one the server is closing gets no answer: `Connect(Disconnected)`).
        client: awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(3)))
            .finish(),
        database,
    }
}

impl TestApp {
    pub fn db(&self) -> &DatabaseConnection {
        &self.state.db
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.request(self.client.post(self.url(path)), Some(body))
            .await
    }

    pub async fn post_json_with_key(
        &self,
        path: &str,
        key: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let request = self
            .client
            .post(self.url(path))
            .insert_header(("Idempotency-Key", key));
        self.request(request, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(self.client.get(self.url(path)), None).await
    }

    /// POSTs to `path` with no body (e.g. a dead letter's replay).
    pub async fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        self.request(self.client.post(self.url(path)), None).await
    }

    /// POSTs an SMS with `body` from +12016661234 to +18045551234 (both owned).
    pub async fn post_sms(&self, body: &str) -> (StatusCode, Value) {
        self.post_json(
            "/api/messages/sms",
            &sms("+12016661234", "+18045551234", body),
        )
        .await
    }

    /// [`Self::post_sms`], asserting it is accepted (202); returns the answer.
    pub async fn send_sms(&self, body: &str) -> Value {
        let (status, answer) = self.post_sms(body).await;
        let db = self.database.kind;
        assert_eq!(status, StatusCode::ACCEPTED, "{db:?}: {answer}");
        answer
    }

    /// Sends `request` (with a JSON body if given) with the admin key unless it carries an
    /// Authorization header of its own; returns the status and the JSON answer (a string
    /// when the answer is not JSON, null when empty).
    pub async fn request(
        &self,
        request: awc::ClientRequest,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let request = if request
            .headers()
            .contains_key(actix_web::http::header::AUTHORIZATION)
        {
            request
        } else {
            request.bearer_auth(&self.admin_key)
        };
        self.send(request, body).await
    }

    /// Sends `request` exactly as built (no key added).
    pub async fn send(
        &self,
        request: awc::ClientRequest,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let sent = match body {
            Some(body) => request.send_json(body).await,
            None => request.send().await,
        };
        answer_of(sent.expect("request reaches the server")).await
    }

    /// Puts events straight on the queue, as the HTTP handlers do.
    pub async fn enqueue(&self, events: Vec<Event>) {
        for event in events {
            self.state
                .queue
                .send(Enqueue(event))
                .await
                .expect("queue actor")
                .expect("queue accepts");
        }
    }

    /// The events the in-process queue holds (memory backend only).
    pub fn queued_events(&self) -> Vec<Event> {
        self.state
            .memory_queue
            .as_ref()
            .expect("the memory backend")
            .snapshot()
    }

    /// Waits until every accepted event is stored or dead-lettered.
    pub async fn drained(&self) {
        let drained = self
            .state
            .queue
            .send(WaitUntilDrained(Duration::from_secs(30)))
            .await
            .expect("queue actor");
        assert!(drained, "queue did not drain within 30 s");
        // Ingest ends at the commit; delivery goes on from the database until no outbound
        // message is left queued (sent, or dead-lettered after its retries).
        eventually(Duration::from_secs(30), "deliveries settled", || async {
            self.scalar("SELECT COUNT(*) FROM messages WHERE status = 'queued'")
                .await
                == 0
        })
        .await;
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        query_scalar(self.db(), sql).await
    }

    /// The exposition `/metrics` answers (empty when it is not text).
    pub async fn metrics_text(&self) -> String {
        let (_, text) = self.get("/metrics").await;
        text.as_str().unwrap_or_default().to_string()
    }

    /// Asserts `n` messages are stored and every conversation's count is right.
    pub async fn assert_stored(&self, n: i64) {
        let stored = self.scalar("SELECT COUNT(*) FROM messages").await;
        assert_eq!(stored, n, "messages stored");
        self.assert_counters_match().await;
    }

    /// How many messages are marked sent.
    pub async fn sent_count(&self) -> i64 {
        self.scalar("SELECT COUNT(*) FROM messages WHERE status = 'sent'")
            .await
    }

    /// Waits (10 s at most) until `/readyz` answers 503 with a detail that contains `detail`.
    pub async fn until_unready(&self, what: &str, detail: &str) {
        eventually(Duration::from_secs(10), what, || async {
            let (status, problem) = self.get("/readyz").await;
            status == StatusCode::SERVICE_UNAVAILABLE
                && problem["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(detail)
        })
        .await;
    }

    /// SPEC §5's invariant: every conversation's counter equals its number of messages.
    pub async fn assert_counters_match(&self) {
        let wrong = self
            .scalar(
                "SELECT COUNT(*) FROM conversations c WHERE c.message_count <> \
                 (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)",
            )
            .await;
        assert_eq!(wrong, 0, "conversations whose message_count is wrong");
    }
}

/// The integer `sql` selects (one row, first column) on `db`.
async fn query_scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_string(backend, sql.to_string()))
        .await
        .expect(sql)
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("an integer")
}

/// [`TestApp::scalar`] on a connection of its own to the database at `url` (e.g. another
/// process's).
pub async fn scalar_at(url: &str, sql: &str) -> i64 {
    let db = Database::connect(url).await.expect("connect");
    let n = query_scalar(&db, sql).await;
    db.close().await.ok();
    n
}

/// Serves an app made by `configure` on `listener` in the background (one worker; the
/// test's System stops it).
pub fn serve_on(
    listener: std::net::TcpListener,
    configure: impl Fn(&mut actix_web::web::ServiceConfig) + Send + Clone + 'static,
) {
    let server =
        actix_web::HttpServer::new(move || actix_web::App::new().configure(configure.clone()))
            .workers(1)
            .disable_signals()
            .listen(listener)
            .expect("listen")
            .run();
    actix_web::rt::spawn(server);
}

/// Waits up to `timeout` until `sql` counts `want` in the database at `url`.
pub async fn until_count_at(url: &str, sql: &str, want: i64, timeout: Duration, what: &str) {
    eventually(timeout, what, || async {
        scalar_at(url, sql).await == want
    })
    .await;
}

/// Creates an API key with `scopes` for `customer`; returns the key.
pub async fn create_key(db: &DatabaseConnection, customer: Uuid, scopes: &[Scope]) -> String {
    let scopes = scopes.iter().copied().collect();
    keys::create(db, customer, "test key", scopes)
        .await
        .expect("key created")
        .1
}

/// The recipients the tests' inbound messages go to, owned by `customer` (the default
/// one): an inbound message to an address nobody owns is stored nowhere (SPEC §16).
pub const TEST_ADDRESSES: [&str; 5] = [
    "+12016661234",
    "+18045551234",
    "usehatchapp.com",
    "gmail.com",
    "example.com",
];

/// Gives [`TEST_ADDRESSES`] to `customer` (those owned already stay as they are).
pub async fn own_test_addresses(db: &DatabaseConnection, customer: Uuid) {
    use messaging_server::domain::OwnedAddress;
    use messaging_server::store::addresses::{self, AddressError};
    for address in TEST_ADDRESSES {
        let address = OwnedAddress::parse(address).unwrap();
        match addresses::add(db, customer, &address).await {
            Ok(_) | Err(AddressError::Taken(_)) => {}
            Err(err) => panic!("owning {}: {err}", address.as_str()),
        }
    }
}

/// A new operator key (`admin`, every customer).
pub async fn create_operator_key(db: &DatabaseConnection) -> String {
    keys::create_operator(db, "test operator")
        .await
        .expect("operator key created")
        .1
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample `name{labels}` ("" for none; else in exposition order) in a
/// Prometheus exposition, if it is there.
pub fn find_sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

/// [`find_sample`], which must be there.
pub fn sample(text: &str, name: &str, labels: &str) -> f64 {
    find_sample(text, name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{{{labels}}} in:\n{text}"))
}

/// The event the API makes of an SMS with `body` from +12016661234 to +18045551234 for
/// `customer` (to put on the queue directly).
pub fn sms_event(customer: Uuid, body: &str) -> Event {
    use messaging_server::domain::{Accept, IntoEvent, SendSms};
    SendSms {
        from: Some("+12016661234".into()),
        to: Some("+18045551234".into()),
        r#type: Some("sms".into()),
        body: Some(body.into()),
        ..Default::default()
    }
    .into_event(&Accept {
        default_customer: customer,
        inbound_owner: None,
        idempotency_header: None,
        endpoint: "/api/messages/sms",
        now: chrono::Utc::now(),
    })
    .unwrap()
}

/// An SMS to +18045551234 from the `i`th of many senders (+1201666iiii), its body "`what` `i`".
pub fn sms_from_many(i: impl std::fmt::Display, what: &str) -> Value {
    sms(
        &format!("+1201666{i:04}"),
        "+18045551234",
        &format!("{what} {i}"),
    )
}

pub fn sms(from: &str, to: &str, body: &str) -> Value {
    serde_json::json!({
        "from": from, "to": to, "type": "sms", "body": body,
        "attachments": null, "timestamp": "2024-11-01T14:00:00Z"
    })
}
