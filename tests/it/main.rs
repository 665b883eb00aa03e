//! The integration tests, one binary (one link of the crate, not one per file): each
//! module is what was a test file, and `common` is the harness they share (processes,
//! databases, NATS, stub providers, tools). `cargo test --test it <module>::` runs one.

mod api;
mod auth;
mod cli;
mod common;
mod contract;
mod delivery;
mod deploy;
mod edge;
mod end_to_end;
mod failures;
mod fuzz;
mod generated_client;
mod nats;
mod observability;
mod openapi;
mod openapi_tools;
mod outage;
mod persistence;
mod process;
mod providers;
mod readme;
mod settlement;
mod status;
mod supervision;
mod telemetry;
mod ui;
mod webhooks;
