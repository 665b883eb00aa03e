//! SeaORM entities for the messaging server.

pub mod addresses;
pub mod api_keys;
pub mod audit_log;
pub mod conversations;
pub mod customers;
pub mod dead_letters;
pub mod event_failures;
pub mod message_bodies;
pub mod messages;
pub mod pending_events;
pub mod webhook_attempts;
pub mod webhook_deliveries;
pub mod webhook_endpoints;

pub use api_keys::Entity as ApiKey;
pub use conversations::Entity as Conversation;
pub use customers::Entity as Customer;
pub use dead_letters::Entity as DeadLetter;
pub use event_failures::Entity as EventFailure;
pub use message_bodies::Entity as MessageBody;
pub use messages::Entity as Message;
pub use pending_events::Entity as PendingEvent;
