//! `serve`: runs the service until a signal, then shuts it down without losing what it
//! holds (or says, and exits 1, when it could not save it).

use crate::actors::queue::{Close, StopWorkers, WaitUntilDrained};
use crate::config::{QueueBackendKind, Settings};
use crate::startup::{self, Application};

use super::{runtime, Failure};

/// Serves until SIGTERM or SIGINT, then stops accepting (finishing requests in flight), and:
/// - memory backend: lets the workers drain the queue until `server.shutdown_timeout`,
///   writes whatever is still queued to the database for the next start;
/// - nats: the workers stop fetching and finish their batch until `server.shutdown_timeout`,
///   then hand back what they still hold (the stream keeps everything else);
///
/// and exits 0 — or 1 when queued events could be saved neither in the database nor in a
/// spill file (each is then in the log, and the error says how many).
pub(super) async fn serve(settings: Settings, role: startup::Role) -> Result<(), Failure> {
    let shutdown_timeout = settings.server.shutdown_timeout;
    let workers_enabled = role != startup::Role::Api;
    let memory = settings.queue.backend == QueueBackendKind::Memory;
    let settings_key_file = settings.auth.bootstrap_key_file.clone();
    let mut app = Application::build_role(settings, role, startup::Hooks::default())
        .await
        .map_err(runtime)?;
    if let Some(key) = app.take_initial_admin_key() {
        hand_out_initial_key(&key, &settings_key_file)?;
    }
    let queue = app.state().queue.clone();
    let pipeline = app.state().pipeline.clone();
    let writer = app.state().writer.clone();
    let http_db = app.state().db.clone();
    // The pipeline's pool: the HTTP handlers' connections stop with the server (startup.rs).
    let db = writer.connection().clone();
    let spill = app.state().spill.clone();
    let metrics = app.state().metrics.clone();
    let auth = app.state().auth.clone();
    let gauges = app.take_gauge_refresh();
    let server = app.server_handle();
    let running = actix_web::rt::spawn(app.run_until_stopped());

    wait_for_signal().await;
    let deadline = crate::time::deadline(shutdown_timeout);
    tracing::info!("shutdown requested: no longer accepting requests");
    // Batches waiting out a database outage go back to the queue, to be drained if the
    // database recovers in time, saved otherwise.
    writer.health().release_holds();
    auth.stop_upkeep().await;
    server.stop(true).await;
    let _ = running.await;
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if workers_enabled && memory {
        let drained = queue.send(WaitUntilDrained(left)).await.unwrap_or(false);
        tracing::info!(drained, "workers stopped taking events");
    } else if !memory {
        let finished = queue.send(StopWorkers(left)).await.unwrap_or(false);
        tracing::info!(
            finished,
            "workers stopped; the stream keeps everything not finished"
        );
    }
    // Provider calls in flight finish and are recorded; none starts any more. Those still
    // in flight at the deadline are given back, due at once for another process.
    let given_back = pipeline.drain_senders(deadline).await;
    if given_back > 0 {
        tracing::warn!(
            given_back,
            "provider calls still in flight at the shutdown deadline; their messages were made due again (their provider may be called a second time, with the same idempotency key)"
        );
    }
    let left = queue.send(Close).await.map_err(runtime)?;
    let saved = save_queued(&db, &spill, left).await;
    if let Some(gauges) = gauges {
        gauges.stop().await;
    }
    // The last OTLP push (metrics and buffered spans); a no-op without export.
    metrics.shutdown();
    // Closed here, inside the runtime: a pooled connection dropped after it has stopped
    // panics in sqlx ("requires a Tokio context").
    close_pool(&http_db).await;
    close_pool(&db).await;
    saved?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// The first start's operator key: to `auth.bootstrap_key_file` (0600) when set, else on
/// stdout, never to the log (keys never reach logs). Shown this once only.
fn hand_out_initial_key(key: &str, file: &str) -> Result<(), Failure> {
    if file.is_empty() {
        println!("initial operator API key: {key}");
        println!(
            "Store it now: it will not be shown again (only its hash is kept). \
             Create more keys with `messaging-server keys create`."
        );
        return Ok(());
    }
    write_private(std::path::Path::new(file), &format!("{key}\n")).map_err(|err| {
        runtime(format!(
            "the initial operator key could not be written to auth.bootstrap_key_file {file}: {err}; \
             it exists but is shown nowhere: revoke it and create another with \
             `messaging-server keys list` / `keys revoke` / `keys create --operator`"
        ))
    })?;
    tracing::warn!(
        file,
        "initial operator API key written (mode 0600); it is shown nowhere else"
    );
    Ok(())
}

/// Writes `text` to `path`, readable and writable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // A file that existed keeps its mode through `open`: tightened here.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Saves what the memory queue still held at shutdown (see [`startup::save_unfinished`]).
async fn save_queued(
    db: &sea_orm::DatabaseConnection,
    spill: &crate::queue::spill::SpillDir,
    left: Vec<crate::domain::Event>,
) -> Result<(), Failure> {
    if left.is_empty() {
        return Ok(());
    }
    let count = left.len();
    match startup::save_unfinished(db, spill, left).await {
        Ok(saved) => {
            tracing::info!(
                in_database = saved.in_database,
                in_file = saved.in_file.as_ref().map_or(0, |(_, n)| *n),
                file = saved.in_file.as_ref().map(|(p, _)| p.display().to_string()),
                "queued events saved; they are re-enqueued at the next start"
            );
            Ok(())
        }
        Err(unsaved) => {
            let message = format!(
                "{} of {count} queued events could be saved neither in the database nor in {}: {}; each is in the log (level error, \"queued event could not be saved anywhere\")",
                unsaved.count,
                spill.path().display(),
                unsaved.error
            );
            tracing::error!("{message}");
            Err(Failure::Runtime(message))
        }
    }
}

/// Closes a pool, waiting a little for connections in use to come back.
async fn close_pool(db: &sea_orm::DatabaseConnection) {
    let closing = db.close_by_ref();
    match tokio::time::timeout(std::time::Duration::from_secs(5), closing).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "closing the database pool failed"),
        Err(_) => tracing::warn!("database connections still in use 5 s after shutdown"),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
