//! Webhooks to customers (SPEC §15): events about their messages pushed to the endpoints
//! they register, signed per Standard Webhooks, delivered at least once.
//!
//! - Recording: [`crate::store::outbox`], in the transaction of each status change.
//! - Endpoints and deliveries in the database: [`crate::store::webhook_endpoints`],
//!   [`crate::store::webhook_deliveries`].
//! - Delivering: [`deliverer`], run by the supervised [`crate::actors::webhooks`] actor.
//! - The HTTP API: `src/http/routes/webhook_endpoints.rs`.

pub mod address;
pub mod deliverer;
pub mod payload;
pub mod signing;

pub use crate::store::outbox::EventType;
