//! messaging-server: one HTTP API to send and receive SMS/MMS and email.
//!
//! Layout follows the architecture: `http` validates and enqueues, `actors` run the
//! pipeline (queue → workers → retries → dead letters), `queue` holds the backends,
//! `store` persists on SeaORM, `providers` deliver outbound messages, `domain` holds the
//! validated types every layer speaks.

pub mod actors;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod http;
pub mod providers;
pub mod queue;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod webhooks;
