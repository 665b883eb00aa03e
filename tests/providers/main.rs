//! The real providers (SPEC §14), each against a real counterpart: Twilio's API as Prism
//! serves Twilio's own OpenAPI description of it, Twilio's webhooks signed by Twilio's own
//! library, and email through a real SMTP server (aiosmtpd). One test binary: [`flow`]
//! drives them all at once.

#[path = "../common/mod.rs"]
mod common;
mod flow;
mod smtp;
mod twilio;
