//! `customers` and `keys`: on the server's database directly (no server needed).

use clap::Subcommand;

use super::{admin_database, audit, parse_customer, runtime, Failure};
use crate::config::Settings;
use crate::domain::audit::{target, Action};
use crate::store::keys::{self, Scope};

#[derive(Debug, Subcommand)]
pub(super) enum CustomersAction {
    /// Create a customer; prints its id alone on stdout.
    Create {
        #[arg(long)]
        name: String,
    },
    /// List customers.
    List,
}

#[derive(Debug, Subcommand)]
pub(super) enum KeysAction {
    /// Create an API key; prints the key alone on stdout (it is not stored, only its hash).
    /// A customer's key (`--customer ID --scope …`) or an operator's (`--operator`).
    Create {
        /// The customer's id, a UUID (see `customers list`).
        // Parsed in `keys`, so a name instead of an id gets one line saying what an id is.
        #[arg(
            long,
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        customer: Option<String>,
        #[arg(long)]
        name: String,
        /// send, webhook or read; repeat for several.
        #[arg(
            long = "scope",
            required_unless_present = "operator",
            conflicts_with = "operator",
            value_parser = parse_scope
        )]
        scopes: Vec<Scope>,
        /// An operator's key: `admin`, for every customer, belonging to none.
        #[arg(long)]
        operator: bool,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by id, prefix (msk_…, as listed) or the key itself.
    Revoke {
        #[arg(value_name = "ID_OR_PREFIX")]
        key: String,
    },
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    text.parse()
}

pub(super) async fn customers(settings: &Settings, action: CustomersAction) -> Result<(), Failure> {
    let db = admin_database(settings).await?;
    match action {
        CustomersAction::Create { name } => {
            let id = keys::create_customer(&db, &name)
                .await
                .map_err(keys_failure)?;
            audit::record(
                &db,
                Action::CustomerCreate,
                target::customer(id),
                Some(name),
            )
            .await;
            println!("{id}");
        }
        CustomersAction::List => {
            println!("id\tname\tcreated");
            for c in keys::customers(&db).await.map_err(runtime)? {
                println!("{}\t{}\t{}", c.id, c.name, c.created_at.to_rfc3339());
            }
        }
    }
    Ok(())
}

pub(super) async fn keys(settings: &Settings, action: KeysAction) -> Result<(), Failure> {
    let db = admin_database(settings).await?;
    match action {
        KeysAction::Create {
            customer,
            name,
            scopes,
            operator,
        } => {
            let (row, key) = match customer {
                Some(customer) if !operator => {
                    let customer = parse_customer(&customer)?;
                    keys::create(&db, customer, &name, scopes.into_iter().collect())
                        .await
                        .map_err(keys_failure)?
                }
                _ => keys::create_operator(&db, &name)
                    .await
                    .map_err(keys_failure)?,
            };
            let detail = format!(
                "{} for {} with scopes {}",
                row.name,
                owner(row.customer_id),
                row.scopes
            );
            audit::record(
                &db,
                Action::KeyCreate,
                target::key(&row.prefix),
                Some(detail),
            )
            .await;
            eprintln!(
                "created API key {} ({}) for {} with scopes {}; it is shown only now",
                row.id,
                row.prefix,
                owner(row.customer_id),
                row.scopes
            );
            println!("{key}");
        }
        KeysAction::List => {
            let never = || "-".to_string();
            println!("id\tprefix\tname\tcustomer\tscopes\tcreated\tlast_used\trevoked");
            for k in keys::list(&db).await.map_err(runtime)? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.prefix,
                    k.name,
                    k.customer_id
                        .map_or_else(|| "operator".into(), |c| c.to_string()),
                    k.scopes,
                    k.created_at.to_rfc3339(),
                    k.last_used_at.map_or_else(never, |t| t.to_rfc3339()),
                    k.revoked_at.map_or_else(never, |t| t.to_rfc3339()),
                );
            }
        }
        KeysAction::Revoke { key } => match keys::revoke(&db, &key).await.map_err(keys_failure)? {
            keys::Revoked::Now(row) => {
                audit::record(&db, Action::KeyRevoke, target::key(&row.prefix), None).await;
                println!(
                    "revoked API key {} ({}); running servers refuse it within auth.cache_ttl ({})",
                    row.id,
                    row.prefix,
                    humantime::format_duration(settings.auth.cache_ttl)
                )
            }
            keys::Revoked::Already(row) => {
                println!("API key {} ({}) was already revoked", row.id, row.prefix)
            }
        },
    }
    Ok(())
}

/// Whom a key acts for, in a sentence.
fn owner(customer: Option<uuid::Uuid>) -> String {
    customer.map_or_else(
        || "operators (every customer)".into(),
        |c| format!("customer {c}"),
    )
}

/// Mistakes in what the operator typed are usage errors (exit 2); the rest are runtime.
fn keys_failure(err: keys::KeysError) -> Failure {
    match err {
        keys::KeysError::Store(e) => runtime(e),
        other => Failure::Usage(other.to_string()),
    }
}
