//! Builds the whole service from settings. The binary and the tests start the same thing.

mod handover;

pub use handover::{save_unfinished, Saved, Unsaved};

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Arc, RwLock};

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App};

#[cfg(feature = "testing")]
use crate::actors::faults::FaultHook;
use crate::actors::faults::Faults;
use crate::actors::health::{Pipeline, Progress, Workers};
use crate::actors::queue::WorkerPool;
use crate::actors::retry::RetryPolicy;
use crate::actors::sender::{SenderSpec, Senders};
use crate::actors::webhooks::WebhookDeliverer;
use crate::actors::worker::{WorkerDeps, WorkerThread};
use crate::actors::{DlqActor, QueueActor, RetryScheduler, Sender};
use crate::config::{QueueBackendKind, Settings};
use crate::delivery::LaneDeps;
use crate::http::idempotency::RecentKeys;
use crate::http::{self, observe_request, request_context, AppState, Auth};
use crate::providers::Providers;
use crate::queue::spill::SpillDir;
use crate::queue::{MemoryQueue, NatsQueue, QueueBackend};
use crate::store::writer::MessageWriter;
use crate::store::Checkpointer;
use crate::store::{self, StoreError};
use crate::telemetry::{self, Metrics};

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
    #[error(transparent)]
    Restore(#[from] handover::RestoreError),
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
    pub providers: Option<Providers>,
    /// Called by every pipeline actor at the start of its work: may panic or wedge it
    /// (the `testing` feature only).
    #[cfg(feature = "testing")]
    pub fault: Option<FaultHook>,
}

pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    /// The admin key created at this start (first start, no key yet), to be shown once.
    initial_admin_key: Option<String>,
    /// Refreshes the gauges for OTLP pushes (export enabled only).
    gauge_refresh: Option<http::GaugeRefresh>,
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

        let db = store::connect_server(&settings.database).await?;
        if settings.database.auto_migrate {
            store::migrate(&db).await?;
        } else {
            store::require_migrated(&db).await?;
        }
        let (backend, memory_queue): (Arc<dyn QueueBackend>, _) = match settings.queue.backend {
            QueueBackendKind::Memory => {
                let queue = MemoryQueue::bounded(
                    settings.queue.capacity,
                    settings.queue.max_bytes,
                    settings.queue.enqueue_timeout,
                );
                (Arc::new(queue.clone()), Some(queue))
            }
            QueueBackendKind::Nats => (
                Arc::new(NatsQueue::connect(&settings.queue.nats).await?),
                None,
            ),
        };
        let initial_admin_key = if settings.auth.required {
            store::keys::bootstrap_operator(&db).await?
        } else {
            tracing::warn!(
                "auth.required = false: the API is open, anyone who can reach this port can send \
                 messages and read every customer's data; set auth.required = true outside local experiments"
            );
            None
        };
        // A PostgreSQL connection belongs to the runtime that opened it, and actix-web runs
        // each HTTP worker on a runtime of its own that stops with the server: a connection
        // an HTTP handler opened is dead once the server has stopped, exactly when the
        // pipeline drains and saves the queue at shutdown. So HTTP handlers get a pool of
        // their own (`AppState::db`) and the pipeline's pool (`db` here: the actors, the
        // writer, the shutdown spill, all on the main runtime) is never touched by them.
        // SQLite connections run on threads of their own: one pool serves both.
        let http_db = if settings.database.is_sqlite() {
            db.clone()
        } else {
            store::connect(&settings.database).await?
        };
        let spill = SpillDir::new(settings.queue.spill_directory(&settings.database));
        handover::restore(&db, backend.as_ref(), &spill).await?;
        let probe = backend.clone();
        let metrics = Metrics::new(Arc::new(move || probe.depth() as u64), &settings.telemetry)?;
        if settings.worker.enabled {
            telemetry::summary::spawn(&metrics);
        }
        let providers = hooks
            .providers
            .unwrap_or_else(|| Providers::from_settings(&settings.providers));

        #[cfg(feature = "testing")]
        let faults = Faults::new(hooks.fault.clone());
        #[cfg(not(feature = "testing"))]
        let faults = Faults::default();
        // One writer (its SQLite turn is shared with readiness's write check).
        let writer = MessageWriter::new(db.clone());
        let checkpointer = Checkpointer::start(&settings.database, writer.clone())
            .await?
            .map(Arc::new);
        let dlq = DlqActor::new(
            db.clone(),
            backend.clone(),
            metrics.clone(),
            settings.dlq.retention,
            settings.dlq.purge_interval,
        )
        .with_faults(faults.clone())
        .start_supervised();
        let retry = RetryScheduler::start(
            RetryPolicy::from(&settings.retry),
            dlq.clone(),
            metrics.clone(),
            db.clone(),
            faults.clone(),
        );
        // The delivery stage: a sender per provider, on a thread of their own (provider
        // calls are futures local to it), wherever workers run.
        let sender_thread = settings.worker.enabled.then(WorkerThread::start);
        let senders: Vec<actix::Addr<Sender>> = match &sender_thread {
            None => Vec::new(),
            Some(thread) => {
                let deps = LaneDeps {
                    writer: writer.clone(),
                    metrics: metrics.clone(),
                    retry: retry.clone(),
                    dlq: dlq.clone(),
                    lease: settings.delivery.lease,
                    faults: faults.clone(),
                };
                [
                    ("sms", providers.sms.clone(), &settings.providers.sms),
                    ("email", providers.email.clone(), &settings.providers.email),
                ]
                .into_iter()
                .map(|(name, provider, provider_settings)| {
                    let spec = SenderSpec {
                        name,
                        provider,
                        settings: provider_settings.clone(),
                        deps: deps.clone(),
                        poll: settings.delivery.poll_interval,
                    };
                    Sender::start_supervised(spec, &thread.handle())
                })
                .collect()
            }
        };
        let webhooks = sender_thread.as_ref().map(|thread| {
            WebhookDeliverer::start_supervised(
                writer.clone(),
                settings.webhooks.clone(),
                metrics.clone(),
                faults.clone(),
                &thread.handle(),
            )
        });
        let (workers, progress) = (Workers::default(), Progress::default());
        let pool = settings.worker.enabled.then(|| WorkerPool {
            concurrency: settings.worker.concurrency,
            thread: WorkerThread::start(),
            batch_size: settings.worker.batch_size,
            deps: WorkerDeps {
                writer: writer.clone(),
                retry: retry.clone(),
                metrics: metrics.clone(),
                // Workers run where senders do (both need `worker.enabled`).
                senders: Senders {
                    sms: senders[0].clone(),
                    email: senders[1].clone(),
                    lease: settings.delivery.lease,
                },
                max_attempts: settings.retry.max_attempts,
                queue: backend.name(),
                faults: faults.clone(),
            },
            dlq: dlq.clone(),
            workers: workers.clone(),
            progress: progress.clone(),
        });
        let queue = QueueActor::new(backend.clone(), memory_queue.clone(), metrics.clone(), pool)
            .with_faults(faults.clone())
            .start_supervised();
        let pipeline = Arc::new(Pipeline {
            queue: queue.clone(),
            retry,
            dlq: dlq.clone(),
            senders,
            webhooks,
            sender_thread,
            worker_count: if settings.worker.enabled {
                settings.worker.concurrency
            } else {
                0
            },
            workers,
            progress,
            stall_timeout: settings.server.stall_timeout,
        });
        let auth = Auth::new(&settings, http_db.clone());
        Auth::spawn_upkeep(&auth);

        let state = AppState {
            settings: settings.clone(),
            db: http_db,
            queue,
            backend,
            memory_queue,
            dlq,
            pipeline,
            writer,
            spill,
            metrics,
            auth,
            customers: Arc::new(RwLock::new(HashSet::new())),
            recent_keys: Arc::new(RecentKeys::new(RECENT_KEYS)),
            checkpointer,
        };
        let gauge_refresh = settings
            .telemetry
            .otlp_enabled()
            .then(|| http::refresh_gauges_every(state.clone(), settings.telemetry.otlp_interval));
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
            gauge_refresh,
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

    /// The OTLP gauge refresher, for the shutdown to stop before the pools close.
    pub fn take_gauge_refresh(&mut self) -> Option<http::GaugeRefresh> {
        self.gauge_refresh.take()
    }

    pub fn server_handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Hides a password in a database URL before it is logged.
fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_database_password_never_reaches_the_log() {
        let redacted = super::redact_url("postgres://app:s3cr%40t@db.internal:5432/messages");
        assert_eq!(redacted, "postgres://app:***@db.internal:5432/messages");
        let plain = "postgres://postgres@127.0.0.1:5432/postgres";
        assert_eq!(super::redact_url(plain), plain);
        assert_eq!(
            super::redact_url("sqlite://data/m.db?mode=rwc"),
            "sqlite://data/m.db?mode=rwc"
        );
        assert_eq!(super::redact_url("not a url"), "not a url");
    }
}
