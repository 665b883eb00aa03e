//! `messaging-server webhooks …`: customers' webhook endpoints for operators, on the
//! database as `keys` is (the same operations as `/api/webhook-endpoints`).

use clap::Subcommand;
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::{admin_database, audit, parse_customer, runtime, Failure};
use crate::config::Settings;
use crate::domain::audit::{target, Action};
use crate::store::read::Page;
use crate::store::writer::MessageWriter;
use crate::store::{webhook_deliveries, webhook_endpoints};
use crate::webhooks::address::check_url;
use crate::webhooks::deliverer::message_id;
use crate::webhooks::EventType;

#[derive(Debug, Subcommand)]
pub(super) enum WebhooksAction {
    /// List endpoints, newest first (every customer's unless --customer).
    List {
        #[arg(long)]
        customer: Option<String>,
    },
    /// Register an endpoint for a customer; prints its id and signing secret (shown only
    /// now).
    Create {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        url: String,
        /// An event type to send (message.received, message.sent, message.delivered,
        /// message.failed, message.dead_lettered); repeat for several; none for all.
        #[arg(long = "event", value_parser = parse_event)]
        events: Vec<EventType>,
        #[arg(long)]
        description: Option<String>,
    },
    /// An endpoint's latest attempts: status, latency, error.
    Attempts {
        id: Uuid,
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Make an endpoint's failed deliveries due again.
    Replay { id: Uuid },
    /// A new signing secret (printed); the old one signs beside it for 24 hours.
    RotateSecret { id: Uuid },
    /// Enable an endpoint (with a fresh start, if the service disabled it).
    Enable { id: Uuid },
    /// Stop sending to an endpoint (its deliveries fail until it is enabled and replayed).
    Disable { id: Uuid },
    /// Delete an endpoint with its deliveries and attempts.
    Delete { id: Uuid },
}

fn parse_event(text: &str) -> Result<EventType, String> {
    EventType::parse(text).ok_or_else(|| {
        let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        format!("not an event type; one of {}", names.join(", "))
    })
}

fn not_found(id: Uuid) -> Failure {
    Failure::Usage(format!("no webhook endpoint {id}"))
}

pub(super) async fn run(settings: &Settings, action: WebhooksAction) -> Result<(), Failure> {
    let db = admin_database(settings).await?;
    match action {
        WebhooksAction::List { customer } => {
            let customer = customer.as_deref().map(parse_customer).transpose()?;
            let all = Page {
                page: 1,
                size: i64::MAX as u64,
            };
            let (endpoints, _) = webhook_endpoints::list(&db, customer, all)
                .await
                .map_err(runtime)?;
            println!("id\tcustomer\turl\tevents\tenabled\tfailing_since\tdisabled_reason");
            for e in endpoints {
                let events = EventType::load_set(&e.event_types);
                let events: Vec<&str> = events.iter().map(|t| t.as_str()).collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    e.id,
                    e.customer_id,
                    e.url,
                    if events.is_empty() {
                        "all".into()
                    } else {
                        events.join(",")
                    },
                    e.enabled,
                    e.failing_since.map_or("-".into(), |t| t.to_rfc3339()),
                    e.disabled_reason.as_deref().unwrap_or("-"),
                );
            }
        }
        WebhooksAction::Create {
            customer,
            url,
            events,
            description,
        } => {
            let customer = parse_customer(&customer)?;
            check_url(&url, settings.webhooks.allow_private)
                .map_err(|why| Failure::Usage(format!("--url: the URL {why}")))?;
            let new = webhook_endpoints::NewEndpoint {
                customer_id: customer,
                url,
                description,
                types: events,
            };
            let e = webhook_endpoints::create(&db, new).await.map_err(runtime)?;
            audit_endpoint(
                &db,
                Action::WebhookEndpointCreate,
                e.id,
                Some(e.url.clone()),
            )
            .await;
            eprintln!(
                "created webhook endpoint {} for customer {}; its secret is shown only now",
                e.id, e.customer_id
            );
            println!("{}\t{}", e.id, e.secret);
        }
        WebhooksAction::Attempts { id, limit } => {
            webhook_endpoints::get(&db, None, id)
                .await
                .map_err(runtime)?
                .ok_or_else(|| not_found(id))?;
            let page = Page {
                page: 1,
                size: limit,
            };
            let (attempts, total) = webhook_deliveries::attempts(&db, id, page)
                .await
                .map_err(runtime)?;
            println!("attempted_at\twebhook_id\tevent\tstatus\tlatency_ms\terror");
            for (a, event_type) in attempts {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    a.attempted_at.to_rfc3339(),
                    message_id(a.delivery_id),
                    event_type,
                    a.status_code.map_or("-".into(), |s| s.to_string()),
                    a.latency_ms,
                    a.error.as_deref().unwrap_or("-"),
                );
            }
            eprintln!("{total} attempt(s) in all");
        }
        WebhooksAction::Replay { id } => {
            webhook_endpoints::get(&db, None, id)
                .await
                .map_err(runtime)?
                .ok_or_else(|| not_found(id))?;
            let writer = MessageWriter::new(db.clone());
            let n = webhook_deliveries::replay_failed(&writer, id)
                .await
                .map_err(runtime)?;
            let detail = format!("{n} delivery(ies) due again");
            audit_endpoint(&db, Action::WebhookEndpointReplay, id, Some(detail)).await;
            println!("{n} failed deliveries are due again");
        }
        WebhooksAction::RotateSecret { id } => {
            let grace = chrono::Duration::hours(24);
            let e = webhook_endpoints::rotate_secret(&db, None, id, grace)
                .await
                .map_err(runtime)?
                .ok_or_else(|| not_found(id))?;
            audit_endpoint(&db, Action::WebhookEndpointRotateSecret, id, None).await;
            eprintln!("the old secret signs beside the new one for 24 hours");
            println!("{}", e.secret);
        }
        WebhooksAction::Enable { id } | WebhooksAction::Disable { id } => {
            let enabled = matches!(action, WebhooksAction::Enable { .. });
            let change = webhook_endpoints::Change {
                enabled: Some(enabled),
                ..Default::default()
            };
            webhook_endpoints::update(&db, None, id, change)
                .await
                .map_err(runtime)?
                .ok_or_else(|| not_found(id))?;
            let detail = if enabled { "enabled" } else { "disabled" };
            audit_endpoint(&db, Action::WebhookEndpointUpdate, id, Some(detail.into())).await;
            println!(
                "webhook endpoint {id} {}",
                if enabled { "enabled" } else { "disabled" }
            );
        }
        WebhooksAction::Delete { id } => {
            let writer = MessageWriter::new(db.clone());
            if !webhook_endpoints::delete(&writer, None, id)
                .await
                .map_err(runtime)?
            {
                return Err(not_found(id));
            }
            audit_endpoint(&db, Action::WebhookEndpointDelete, id, None).await;
            println!("webhook endpoint {id} deleted");
        }
    }
    Ok(())
}

/// Records an operator's change to endpoint `id` in the audit log.
async fn audit_endpoint(db: &DatabaseConnection, action: Action, id: Uuid, detail: Option<String>) {
    audit::record(db, action, target::webhook_endpoint(id), detail).await;
}
