//! `addresses`: the phone numbers and email domains customers own (SPEC §16), on the
//! server's database directly.

use clap::Subcommand;

use super::{admin_database, audit, parse_customer, runtime, Failure};
use crate::config::Settings;
use crate::domain::audit::{target, Action};
use crate::domain::OwnedAddress;
use crate::store::addresses::{self, AddressError};
use crate::store::read::Page;

#[derive(Debug, Subcommand)]
pub(super) enum AddressesAction {
    /// Give ADDRESS (+12016661234, or an email domain such as example.com) to a customer:
    /// inbound messages to it are then that customer's. Prints its id.
    Add {
        /// The customer's id, a UUID (see `customers list`).
        #[arg(long)]
        customer: String,
        address: String,
    },
    /// List owned addresses (every customer's, or one's).
    List {
        #[arg(long)]
        customer: Option<String>,
    },
    /// Give an address up, by its id (see `addresses list`).
    Remove { id: i64 },
}

pub(super) async fn run(settings: &Settings, action: AddressesAction) -> Result<(), Failure> {
    let db = admin_database(settings).await?;
    match action {
        AddressesAction::Add { customer, address } => {
            let customer = parse_customer(&customer)?;
            let address = OwnedAddress::parse(&address)
                .map_err(|why| Failure::Usage(format!("{address:?} {why}")))?;
            let known = crate::store::read::customer_exists(&db, customer)
                .await
                .map_err(runtime)?;
            if !known {
                return Err(Failure::Usage(format!("no customer {customer}")));
            }
            let row = addresses::add(&db, customer, &address)
                .await
                .map_err(|err| match err {
                    AddressError::Taken(_) => Failure::Usage(err.to_string()),
                    AddressError::Store(e) => runtime(e),
                })?;
            let detail = format!("{} for customer {customer}", row.address);
            audit::record(
                &db,
                Action::AddressAdd,
                target::address(row.id),
                Some(detail),
            )
            .await;
            eprintln!(
                "{} {} is now customer {}'s",
                row.kind, row.address, row.customer_id
            );
            println!("{}", row.id);
        }
        AddressesAction::List { customer } => {
            let customer = customer.as_deref().map(parse_customer).transpose()?;
            println!("id\tcustomer\tkind\taddress\tcreated");
            for page in 1.. {
                let page = Page { page, size: 500 };
                let (rows, _) = addresses::list(&db, customer, page)
                    .await
                    .map_err(runtime)?;
                for a in &rows {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        a.id,
                        a.customer_id,
                        a.kind,
                        a.address,
                        a.created_at.to_rfc3339()
                    );
                }
                if (rows.len() as u64) < page.size {
                    break;
                }
            }
        }
        AddressesAction::Remove { id } => {
            let row = addresses::remove(&db, None, id)
                .await
                .map_err(runtime)?
                .ok_or_else(|| Failure::Usage(format!("no address {id}")))?;
            let detail = format!("{} of customer {}", row.address, row.customer_id);
            audit::record(
                &db,
                Action::AddressRemove,
                target::address(id),
                Some(detail),
            )
            .await;
            println!(
                "customer {} no longer owns {}; inbound messages to it are stored nowhere",
                row.customer_id, row.address
            );
        }
    }
    Ok(())
}
