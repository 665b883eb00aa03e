//! `messaging-server audit`: the audit log (SPEC §16), on the server's database directly;
//! and [`record`], which every state-changing command calls once its change is made.

use chrono::{DateTime, Utc};
use clap::Args;
use sea_orm::DatabaseConnection;

use super::{runtime, Failure};
use crate::config::Settings;
use crate::domain::audit::{Action, Actor, Entry};
use crate::store::audit::{self, Filter};
use crate::store::read::Page;

/// Which entries to show; every option narrows the list.
#[derive(Debug, Args)]
pub(super) struct AuditArgs {
    /// Only this action (dead_letter.delete, key.create, …).
    #[arg(long, value_parser = parse_action)]
    action: Option<Action>,
    /// Only this actor (key:msk_ab12cd34, cli:root, open).
    #[arg(long)]
    actor: Option<String>,
    /// Only this target (dead_letter:42, key:msk_ab12cd34, …).
    #[arg(long)]
    target: Option<String>,
    /// At or after this time (RFC 3339).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339).
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// At most this many entries, newest first.
    #[arg(long, default_value_t = 100)]
    limit: u64,
}

fn parse_action(name: &str) -> Result<Action, String> {
    Action::parse(name).ok_or_else(|| {
        let names: Vec<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
        format!("not an audited action; one of {}", names.join(", "))
    })
}

pub(super) async fn run(settings: &Settings, args: AuditArgs) -> Result<(), Failure> {
    let db = super::admin_database(settings).await?;
    let filter = Filter {
        action: args.action,
        actor: args.actor,
        target: args.target,
        since: args.since,
        until: args.until,
    };
    let page = Page {
        page: 1,
        size: args.limit.max(1),
    };
    let (entries, total) = audit::list(&db, &filter, page).await.map_err(runtime)?;
    println!("at\tactor\taction\ttarget\trequest_id\tdetail");
    for e in &entries {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            e.at.to_rfc3339(),
            e.actor,
            e.action,
            e.target,
            e.request_id.as_deref().unwrap_or("-"),
            e.detail.as_deref().unwrap_or("-"),
        );
    }
    eprintln!("{} of {total} entries", entries.len());
    Ok(())
}

/// Appends what a command did, as `cli:<user>`. The change is already made, so a failure
/// to record it is said on stderr rather than failing the command.
pub(super) async fn record(
    db: &DatabaseConnection,
    action: Action,
    target: impl Into<String>,
    detail: Option<String>,
) {
    let entry = Entry {
        actor: Actor::command_line(),
        action,
        target: target.into(),
        request_id: None,
        detail,
    };
    if let Err(err) = audit::record(db, &entry).await {
        eprintln!(
            "warning: {} on {} could not be written to the audit log: {err}",
            entry.action.as_str(),
            entry.target
        );
    }
}
