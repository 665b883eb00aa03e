//! The real providers (SPEC §14), each against a real counterpart: Twilio's API as Prism
//! serves Twilio's own OpenAPI description of it, Twilio's webhooks signed by Twilio's own
//! library, and email through a real SMTP server (aiosmtpd). One test binary: [`flow`]
//! drives them all at once.

mod flow;
mod smtp;
mod twilio;

use std::time::Duration;

use crate::common::{eventually, TestApp};
use actix_web::http::StatusCode;
use serde_json::Value;

/// The status resource a 202 pointed at.
async fn status_of(app: &TestApp, accepted: &Value) -> Value {
    let url = accepted["status_url"].as_str().unwrap();
    let (status, body) = app.request(app.client.get(app.url(url)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Follows a 202's status URL until the message is sent or dead-lettered; its status.
async fn settled(app: &TestApp, accepted: &Value) -> Value {
    eventually(Duration::from_secs(30), "the message settled", || async {
        matches!(
            status_of(app, accepted).await["status"].as_str(),
            Some("sent" | "dead_lettered")
        )
    })
    .await;
    status_of(app, accepted).await
}
