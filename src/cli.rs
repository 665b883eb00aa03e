//! The command line (SPEC §9). Exit codes: 0 ok, 1 runtime failure, 2 bad configuration
//! or usage.

mod addresses;
mod audit;
mod keys;
mod progress;
mod serve;
mod server;
mod status;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use migration::MigratorTrait;

use self::progress::Progress;
use self::server::{CallError, Server};
use crate::config::{QueueBackendKind, Settings, Sources};
use crate::domain::audit::{target, Action};
use crate::startup;
use crate::store::{self, dead_letters, read::Page};
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "messaging-server",
    version,
    about = "One API to send and receive SMS/MMS and email"
)]
pub struct Cli {
    /// A deployment config file layered over config/default.toml (also MESSAGING_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default command).
    Serve {
        /// all: API and workers; api: accept requests only (no workers); worker: workers
        /// only, with /healthz, /readyz and /metrics (needs queue.backend = "nats").
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
    },
    /// Database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Dead letters.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// What a running deployment is doing: readiness, queue depth, dead letters, rates
    /// (exit 1 when it is not ready).
    Status {
        /// The running server's base URL (default: http://127.0.0.1:<server.port>).
        #[arg(long)]
        server: Option<String>,
        /// An admin API key for the server (better in the environment than on the command
        /// line, where other users can see it).
        #[arg(
            long = "api-key",
            visible_alias = "key",
            env = "MESSAGING_API_KEY",
            hide_env_values = true
        )]
        api_key: Option<String>,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Customers (tenants): each has its own API keys and data.
    Customers {
        #[command(subcommand)]
        action: keys::CustomersAction,
    },
    /// API keys: create (printed once), list, revoke.
    Keys {
        #[command(subcommand)]
        action: keys::KeysAction,
    },
    /// Customers' webhook endpoints: list, create, attempts, replay, rotate-secret,
    /// enable, disable, delete.
    Webhooks {
        #[command(subcommand)]
        action: webhooks::WebhooksAction,
    },
    /// The phone numbers and email domains customers own: add, list, remove.
    Addresses {
        #[command(subcommand)]
        action: addresses::AddressesAction,
    },
    /// Who changed what: the audit log, newest first.
    Audit(audit::AuditArgs),
}

impl Command {
    /// Whether the command opens the server's database without being one that may create
    /// it (only `serve` and `migrate up` may): run from the wrong directory, a relative
    /// SQLite path would otherwise quietly start an empty database there.
    fn needs_existing_database(&self) -> bool {
        match self {
            Command::Migrate { action } => !matches!(action, MigrateAction::Up),
            Command::Dlq { action } => !matches!(action, DlqAction::Replay { .. }),
            Command::Customers { .. }
            | Command::Keys { .. }
            | Command::Webhooks { .. }
            | Command::Addresses { .. }
            | Command::Audit(_) => true,
            Command::Serve { .. } | Command::Status { .. } | Command::Config { .. } => false,
        }
    }
}

/// A SQLite `database.url` must name an existing file (see [`Command::needs_existing_database`]);
/// the error names the file, the setting, and what to do.
fn require_existing_database(settings: &Settings) -> Result<(), String> {
    let Some(path) = settings.database.sqlite_path() else {
        return Ok(());
    };
    if path.exists() {
        return Ok(());
    }
    let shown = std::path::absolute(&path).unwrap_or(path);
    Err(format!(
        "no database at {} (database.url = {:?}; a relative path is taken from the current \
         directory, or from the config file's when set there): run this where the server \
         runs, or set DATABASE_URL to the server's database; `messaging-server migrate up` \
         creates a new one",
        shown.display(),
        settings.database.url
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    All,
    Api,
    Worker,
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply pending migrations.
    Up,
    /// Roll back the last migration (or the last N).
    Down {
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether they are applied.
    Status,
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// List dead letters, newest first.
    List {
        #[arg(long, default_value_t = 1)]
        page: u64,
        #[arg(long, default_value_t = 50)]
        page_size: u64,
    },
    /// Re-enqueue a dead letter (or all of them) through the running server.
    Replay {
        /// The dead letter's id.
        id: Option<i64>,
        /// Replay every dead letter not replayed yet.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// The running server's base URL (default: http://127.0.0.1:<server.port>).
        #[arg(long)]
        server: Option<String>,
        /// An admin API key for the server (better in the environment than on the command
        /// line, where other users can see it).
        #[arg(long, env = "MESSAGING_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Delete dead letters older than dlq.retention now.
    Purge,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Validate the configuration without starting.
    Check,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let settings = match Settings::load(&Sources::from_process(cli.config.clone())) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("messaging-server: {err}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve { role: Role::All });
    if command.needs_existing_database() {
        if let Err(message) = require_existing_database(&settings) {
            eprintln!("messaging-server: {message}");
            return ExitCode::from(2);
        }
    }
    if let Command::Config {
        action: ConfigAction::Check,
    } = command
    {
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    telemetry::init_logging(&settings.log);
    let result = actix_web::rt::System::new().block_on(async move {
        match command {
            Command::Serve { role } => {
                let role = match role {
                    // WORKER_ENABLED=false makes the default role an API-only one.
                    Role::All if !settings.worker.enabled => startup::Role::Api,
                    Role::All => startup::Role::All,
                    Role::Api => startup::Role::Api,
                    Role::Worker if settings.queue.backend == QueueBackendKind::Memory => {
                        return Err(Failure::Usage(
                            "--role worker needs a shared queue backend; with queue.backend = \"memory\" run --role all".into(),
                        ))
                    }
                    Role::Worker => startup::Role::Worker,
                };
                serve::serve(settings, role).await
            }
            Command::Migrate { action } => migrate(&settings, action).await,
            Command::Dlq { action } => dlq(&settings, action).await,
            Command::Customers { action } => keys::customers(&settings, action).await,
            Command::Keys { action } => keys::keys(&settings, action).await,
            Command::Webhooks { action } => webhooks::run(&settings, action).await,
            Command::Addresses { action } => addresses::run(&settings, action).await,
            Command::Audit(args) => audit::run(&settings, args).await,
            Command::Status { server, api_key } => {
                let base =
                    server.unwrap_or_else(|| format!("http://127.0.0.1:{}", settings.server.port));
                match status::run(&Server::new(base, api_key)).await {
                    Ok(status::Outcome::Ready) => Ok(()),
                    Ok(status::Outcome::NotReady) => Err(Failure::Runtime("not ready".into())),
                    Err(message) => Err(Failure::Runtime(message)),
                }
            }
            Command::Config { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("messaging-server: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("messaging-server: {message}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(String),
    Runtime(String),
}

fn runtime(err: impl std::fmt::Display) -> Failure {
    Failure::Runtime(err.to_string())
}

async fn migrate(settings: &Settings, action: MigrateAction) -> Result<(), Failure> {
    let db = store::connect(&settings.database).await.map_err(runtime)?;
    match action {
        MigrateAction::Up => {
            // One at a time, so the progress shows which one runs (each is its own
            // transaction on PostgreSQL either way).
            let pending = migration::Migrator::get_pending_migrations(&db)
                .await
                .map_err(runtime)?;
            let mut progress = Progress::new(pending.len() as u64);
            for m in &pending {
                store::migrate_by(&db, store::Migration::NextUp)
                    .await
                    .map_err(runtime)?;
                progress.step(&format!("applied {}", m.name()));
            }
            progress.finish(&format!("{} migration(s) applied", pending.len()));
        }
        MigrateAction::Down { steps } => {
            let applied = migration::Migrator::get_applied_migrations(&db)
                .await
                .map_err(runtime)?;
            let rolled: Vec<String> = applied
                .iter()
                .rev()
                .take(steps as usize)
                .map(|m| m.name().to_string())
                .collect();
            let mut progress = Progress::new(rolled.len() as u64);
            for name in &rolled {
                store::migrate_by(&db, store::Migration::LastDown)
                    .await
                    .map_err(runtime)?;
                progress.step(&format!("rolled back {name}"));
            }
            progress.finish(&format!("{} migration(s) rolled back", rolled.len()));
        }
        MigrateAction::Status => {}
    }
    for m in migration::Migrator::get_migration_with_status(&db)
        .await
        .map_err(runtime)?
    {
        println!("{}\t{}", m.name(), m.status());
    }
    Ok(())
}

async fn dlq(settings: &Settings, action: DlqAction) -> Result<(), Failure> {
    match action {
        DlqAction::List { page, page_size } => {
            let db = store::connect(&settings.database).await.map_err(runtime)?;
            let (items, total) = dead_letters::list(
                &db,
                Page {
                    page: page.max(1),
                    size: page_size.clamp(1, 200),
                },
            )
            .await
            .map_err(runtime)?;
            println!("{total} dead letter(s)");
            for d in items {
                let replayed = d
                    .replayed_at
                    .map_or_else(|| "-".to_string(), |t| t.to_rfc3339());
                println!(
                    "{}\t{}\tattempts={}\t{}\tdead_at={}\treplayed_at={}\t{}",
                    d.id,
                    d.idempotency_key,
                    d.attempts,
                    d.error_kind,
                    d.dead_at.to_rfc3339(),
                    replayed,
                    d.last_error
                );
            }
            Ok(())
        }
        DlqAction::Replay {
            id,
            all,
            server,
            api_key,
        } => {
            let base =
                server.unwrap_or_else(|| format!("http://127.0.0.1:{}", settings.server.port));
            let server = Server::new(base, api_key);
            match (id, all) {
                (Some(id), false) => {
                    let answer: serde_json::Value = server
                        .post(&format!("/api/dlq/{id}/replay"))
                        .await
                        .map_err(runtime)?;
                    println!("{answer}");
                    Ok(())
                }
                (None, true) => replay_all(&server).await,
                _ => Err(Failure::Usage("dlq replay takes an ID or --all".into())),
            }
        }
        DlqAction::Purge => {
            let db = store::connect(&settings.database).await.map_err(runtime)?;
            let cutoff = dead_letters::cutoff(settings.dlq.retention);
            let purged = dead_letters::purge(&db, cutoff).await.map_err(runtime)?;
            audit::record(
                &db,
                Action::DeadLetterPurge,
                target::DEAD_LETTERS,
                Some(format!("{purged} older than {}", cutoff.to_rfc3339())),
            )
            .await;
            println!(
                "purged {purged} dead letter(s) older than {}",
                humantime::format_duration(settings.dlq.retention)
            );
            Ok(())
        }
    }
}

/// Replays every dead letter not replayed yet, oldest first, one request each, so a
/// progress bar can follow (and an interrupted run can simply be started again).
async fn replay_all(server: &Server) -> Result<(), Failure> {
    #[derive(serde::Deserialize)]
    struct Page {
        items: Vec<Letter>,
    }
    #[derive(serde::Deserialize)]
    struct Letter {
        id: i64,
        replayed_at: Option<serde_json::Value>,
    }
    let mut waiting = Vec::new();
    for page in 1.. {
        let listed: Page = server
            .get(&format!("/api/dlq?page={page}&pageSize=200"))
            .await
            .map_err(runtime)?;
        if listed.items.is_empty() {
            break;
        }
        waiting.extend(
            listed
                .items
                .into_iter()
                .filter(|l| l.replayed_at.is_none())
                .map(|l| l.id),
        );
    }
    waiting.sort_unstable();
    waiting.dedup();
    let mut progress = Progress::new(waiting.len() as u64);
    let mut replayed = 0;
    for id in waiting {
        match server
            .post::<serde_json::Value>(&format!("/api/dlq/{id}/replay"))
            .await
        {
            Ok(_) => {
                replayed += 1;
                progress.step(&format!("replayed dead letter {id}"));
            }
            // Replayed or deleted by someone else meanwhile: nothing left to do for it.
            Err(CallError::Refused(r)) if r.status == 404 || r.status == 409 => {
                progress.step(&format!("skipped dead letter {id}: {}", r.detail));
            }
            Err(err) => {
                progress.note(&format!("stopped at dead letter {id}"));
                return Err(runtime(err));
            }
        }
    }
    progress.finish(&format!("replayed {replayed} dead letter(s)"));
    Ok(())
}

/// The database for `customers` and `keys`, migrated like `serve` would (so a key can be
/// created before the first start).
async fn admin_database(settings: &Settings) -> Result<sea_orm::DatabaseConnection, Failure> {
    let db = store::connect(&settings.database).await.map_err(runtime)?;
    if settings.database.auto_migrate {
        store::migrate(&db).await.map_err(runtime)?;
    } else {
        store::require_migrated(&db).await.map_err(runtime)?;
    }
    Ok(db)
}

fn parse_customer(text: &str) -> Result<uuid::Uuid, Failure> {
    text.parse().map_err(|_| {
        Failure::Usage(format!(
            "--customer {text:?} is not a customer id: a customer id is a UUID, as \
             `messaging-server customers list` shows (`customers create --name …` prints a new one)"
        ))
    })
}
