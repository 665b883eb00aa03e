//! Builds the whole service from settings. The binary and the tests start the same thing.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Arc, RwLock};

use actix::Actor;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App};

use crate::actors::queue::WorkerPool;
use crate::actors::retry::RetryPolicy;
use crate::actors::worker::{BeforePersist, WorkerDeps};
use crate::actors::{DlqActor, QueueActor, RetryScheduler};
use crate::config::{QueueBackendKind, Settings};
use crate::domain::Event;
use crate::http::idempotency::RecentKeys;
use crate::http::{self, observe_request, request_context, AppState, Auth};
use crate::providers::Providers;
use crate::queue::{MemoryQueue, NatsQueue, QueueBackend};
use crate::store::writer::MessageWriter;
use crate::store::{self, StoreError};
use crate::telemetry::Metrics;

/// `Idempotency-Key`s remembered per process (~200 bytes each).
const RECENT_KEYS: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Database(#[from] StoreError),
    #[error("queue: {0}")]
    Queue(#[from] crate::queue::SetupError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("telemetry: {0}")]
    Telemetry(#[from] crate::telemetry::ExportError),
}

/// What this process runs (SPEC §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTP API and the workers.
    All,
    /// The HTTP API only: events wait in the queue for workers elsewhere.
    Api,
    /// Workers, with only `/healthz`, `/readyz` and `/metrics` over HTTP.
    Worker,
}

/// Replaceable parts, for tests that inject faults or count provider calls.
#[derive(Clone, Default)]
pub struct Hooks {
    pub before_persist: Option<BeforePersist>,
    pub providers: Option<Providers>,
}

pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    /// The admin key created at this start (first start, no key yet), to be shown once.
    initial_admin_key: Option<String>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, Hooks::default()).await
    }

    /// Connects (and migrates) the database, starts the actors, and binds the listener
    /// (port 0 picks a free one). Must run inside an actix System.
    pub async fn build_with(settings: Settings, hooks: Hooks) -> Result<Self, StartupError> {
        let role = if settings.worker.enabled {
            Role::All
        } else {
            Role::Api
        };
        Self::build_role(settings, role, hooks).await
    }

    /// As [`Self::build_with`], for one role: `api` runs no workers, `worker` runs them
    /// (and only the operations routes), `all` follows `worker.enabled`.
    pub async fn build_role(
        mut settings: Settings,
        role: Role,
        hooks: Hooks,
    ) -> Result<Self, StartupError> {
        match role {
            Role::Api => settings.worker.enabled = false,
            Role::Worker => settings.worker.enabled = true,
            Role::All => {}
        }
        let settings = Arc::new(settings);
        // Bound first: a taken port fails start-up before anything else has started.
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let bind_error = |source| StartupError::Bind {
            address: address.clone(),
            source,
        };
        let listener = TcpListener::bind(&address).map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();

        let db = store::connect(&settings.database).await?;
        if settings.database.auto_migrate {
            store::migrate(&db).await?;
        } else {
            store::require_migrated(&db).await?;
        }
        let (backend, memory_queue): (Arc<dyn QueueBackend>, _) = match settings.queue.backend {
            QueueBackendKind::Memory => {
                let queue =
                    MemoryQueue::new(settings.queue.capacity, settings.queue.enqueue_timeout);
                (Arc::new(queue.clone()), Some(queue))
            }
            QueueBackendKind::Nats => (
                Arc::new(NatsQueue::connect(&settings.queue.nats).await?),
                None,
            ),
        };
        let initial_admin_key = if settings.auth.required {
            store::keys::bootstrap_admin(&db, settings.api.default_customer_id).await?
        } else {
            tracing::warn!(
                "auth.required = false: the API is open, anyone who can reach this port can send \
                 messages and read every customer's data; set auth.required = true outside local experiments"
            );
            None
        };
        restore_spilled(&db, backend.as_ref()).await?;
        let probe = backend.clone();
        let metrics = Metrics::new(Arc::new(move || probe.depth() as u64), &settings.telemetry)?;
        let providers = hooks
            .providers
            .unwrap_or_else(|| Providers::from_settings(&settings.providers));

        let dlq = DlqActor::new(
            db.clone(),
            backend.clone(),
            metrics.clone(),
            settings.dlq.retention,
            settings.dlq.purge_interval,
        )
        .start();
        let retry = RetryScheduler::new(
            RetryPolicy::from(&settings.retry),
            dlq.clone(),
            metrics.clone(),
            db.clone(),
        )
        .start();
        let pool = settings.worker.enabled.then(|| WorkerPool {
            concurrency: settings.worker.concurrency,
            batch_size: settings.worker.batch_size,
            deps: WorkerDeps {
                writer: MessageWriter::new(db.clone()),
                retry: retry.clone(),
                metrics: metrics.clone(),
                providers,
                before_persist: hooks.before_persist,
                max_attempts: settings.retry.max_attempts,
                queue: backend.name(),
            },
            dlq: dlq.clone(),
        });
        let queue =
            QueueActor::new(backend.clone(), memory_queue.clone(), metrics.clone(), pool).start();
        let auth = Auth::new(&settings, db.clone());
        Auth::spawn_upkeep(&auth);

        let state = AppState {
            settings: settings.clone(),
            db,
            queue,
            backend,
            memory_queue,
            dlq,
            metrics,
            auth,
            customers: Arc::new(RwLock::new(HashSet::new())),
            recent_keys: Arc::new(RecentKeys::new(RECENT_KEYS)),
        };
        if settings.telemetry.otlp_enabled() {
            http::refresh_gauges_every(state.clone(), settings.telemetry.otlp_interval);
        }
        let data = web::Data::new(state.clone());
        let body_limit = settings.server.body_limit;
        // Signals are handled by the binary (see `run_until_signalled`), which must drain
        // the queue after the server stops accepting.
        let server = http::connection::serve(
            listener,
            settings.server.http_workers,
            settings.server.shutdown_timeout,
            move || {
                let app = App::new()
                    .app_data(data.clone())
                    .wrap(from_fn(observe_request))
                    // Outermost: its span and headers cover everything below, errors included.
                    .wrap(from_fn(request_context));
                match role {
                    Role::Worker => app.configure(http::configure_operations()),
                    Role::All | Role::Api => app.configure(http::configure(body_limit)),
                }
            },
        )
        .map_err(bind_error)?;
        tracing::info!(
            port,
            role = ?role,
            queue = state.backend.name(),
            database = %redact_url(&settings.database.url),
            "listening"
        );
        Ok(Application {
            port,
            server,
            state,
            initial_admin_key,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Handles on the running parts (database, queue, metrics), for tests and the CLI.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The admin key created by this start, if any: the caller shows it once (it is not
    /// logged, and only its hash is stored).
    pub fn take_initial_admin_key(&mut self) -> Option<String> {
        self.initial_admin_key.take()
    }

    pub fn server_handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Re-enqueues what the last graceful shutdown wrote to `pending_events`.
async fn restore_spilled(
    db: &sea_orm::DatabaseConnection,
    backend: &dyn QueueBackend,
) -> Result<(), StartupError> {
    let rows = store::pending::load(db).await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut events = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    for (id, json) in rows {
        match serde_json::from_value::<Event>(json) {
            Ok(event) => {
                events.push(event);
                ids.push(id);
            }
            // Left in the table for an operator to look at; never silently dropped.
            Err(err) => {
                tracing::error!(pending_event_id = id, error = %err, "spilled event unreadable; left in pending_events")
            }
        }
    }
    let restored = events.len();
    backend
        .republish(events)
        .await
        .map_err(|e| StartupError::Database(StoreError::Unavailable(e.to_string())))?;
    store::pending::delete(db, ids).await?;
    tracing::info!(restored, "re-enqueued events spilled by the last shutdown");
    Ok(())
}

/// Hides a password in a database URL before it is logged.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
