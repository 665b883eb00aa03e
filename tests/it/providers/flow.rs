//! The README's flow with real providers at once, on both databases: SMS and MMS through
//! Twilio (Prism), email over SMTP (aiosmtpd), an inbound SMS in Twilio's format, and
//! receipts taking a sent message to `delivered`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use messaging_server::config::Settings;
use messaging_server::providers::Providers;
use messaging_server::startup::Hooks;
use serde_json::{json, Value};

use super::smtp::{email, smtp, SmtpServer, PASSWORD};
use super::twilio::{signed, twilio, Prism, ACCOUNT};
use super::{settled, status_of};
use crate::common::receiver::{create_endpoint, events_by_message, webhook_settings, Receiver};
use crate::common::{self, databases, eventually, spawn_app_with_hooks, TestApp};

async fn accepted(app: &TestApp, path: &str, body: &Value) -> Value {
    let (status, answer) = app.post_json(path, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{path}: {answer}");
    answer
}

#[actix_web::test]
async fn the_readme_flow_works_with_twilio_and_smtp() {
    let Some(prism) = Prism::start().await else {
        return;
    };
    let Some(mail) = SmtpServer::start(0).await else {
        return;
    };
    if common::tools::python_with("twilio").is_none() {
        return;
    }
    let shim = prism.behind_shim();
    let configure = |s: &mut Settings| {
        twilio(s, &shim.url);
        smtp(s, &mail, PASSWORD);
        webhook_settings(s);
    };
    for db in databases() {
        let mut settings = common::test_settings("sqlite::memory:");
        configure(&mut settings);
        // Both adapters as the settings build them (the harness would put mocks in).
        let providers = Providers::from_settings(&settings.providers);
        let app = spawn_app_with_hooks(
            db,
            configure,
            Hooks {
                providers: Some(Providers {
                    sms: Arc::clone(&providers.sms),
                    email: Arc::clone(&providers.email),
                }),
                ..Hooks::default()
            },
        )
        .await;
        // A receiver per database: the two runs send the same messages (the same keys).
        let Some(receiver) = Receiver::start().await else {
            return;
        };
        // The customer wants to hear of replies and of what reached its recipients.
        let events = ["message.received", "message.delivered", "message.failed"];
        let endpoint =
            create_endpoint(&app, &json!({"url": receiver.url(), "events": events})).await;
        receiver.set("secrets", endpoint["secret"].as_str().unwrap());

        // Out: an SMS, an MMS and an email.
        let sms = accepted(
            &app,
            "/api/messages/sms",
            &common::sms("+12016661234", "+18045551234", "Your table is ready"),
        )
        .await;
        let mms = json!({
            "from": "+12016661234", "to": "+18045551234", "type": "mms", "body": "The menu",
            "attachments": ["https://media.example.com/menu.png"]
        });
        let mms = accepted(&app, "/api/messages/sms", &mms).await;
        let mail_to = format!("guest-{db:?}@gmail.com").to_lowercase();
        let email = accepted(&app, "/api/messages/email", &email(&mail_to, "Booking")).await;

        // In: the guest answers by SMS, as Twilio posts it.
        signed(
            &app,
            "/api/providers/twilio/sms",
            &[
                ("MessageSid", "SM44444444444444444444444444444444"),
                ("AccountSid", ACCOUNT),
                ("From", "+18045551234"),
                ("To", "+12016661234"),
                ("Body", "On my way"),
                ("NumMedia", "0"),
            ],
        )
        .await;

        let mut sids = Vec::new();
        for message in [&sms, &mms, &email] {
            let done = settled(&app, message).await;
            assert_eq!(done["status"], "sent", "{db:?}: {done}");
            sids.push(done["provider_message_id"].as_str().unwrap().to_string());
        }
        let received = mail
            .messages()
            .into_iter()
            .find(|m| m["rcpt_tos"] == json!([mail_to]))
            .unwrap_or_else(|| panic!("{db:?}: the SMTP server got no mail for {mail_to}"));
        assert_eq!(received["headers"]["Message-ID"], sids[2]);

        // Twilio's receipts: the SMS delivered, the MMS not.
        let receipt = |sid: &str, status: &'static str| {
            let app = &app;
            let sid = sid.to_string();
            async move {
                let params = [("MessageSid", sid.as_str()), ("MessageStatus", status)];
                signed(app, "/api/providers/twilio/status", &params).await;
            }
        };
        receipt(&sids[0], "delivered").await;
        receipt(&sids[1], "undelivered").await;
        assert_eq!(status_of(&app, &sms).await["status"], "delivered");
        assert_eq!(status_of(&app, &mms).await["status"], "undelivered");
        assert_eq!(status_of(&app, &email).await["status"], "sent");

        // Each change reached the customer's endpoint, signed, once; nothing it did not
        // ask for (message.sent).
        let key = |v: &Value| v["idempotency_key"].as_str().unwrap().to_string();
        let wanted = [
            ("message.delivered".to_string(), key(&sms)),
            ("message.failed".to_string(), key(&mms)),
        ];
        eventually(
            std::time::Duration::from_secs(30),
            "the receipts' events",
            || {
                let seen = events_by_message(&receiver);
                let done = wanted.iter().all(|w| seen.contains_key(w))
                    && seen.keys().any(|(t, _)| t == "message.received");
                async move { done }
            },
        )
        .await;
        let seen = events_by_message(&receiver);
        assert!(
            seen.keys().all(|(t, _)| events.contains(&t.as_str())),
            "{seen:?}"
        );
        let failed = receiver.taken_event("message.failed");
        assert_eq!(failed["event"]["data"]["status"], "undelivered");
        assert!(
            failed["event"]["data"]["last_error"]
                .as_str()
                .unwrap()
                .contains("Twilio"),
            "{failed}"
        );
        let delivered = receiver.taken_event("message.delivered");
        assert_eq!(delivered["event"]["data"]["status"], "delivered");

        // One conversation holds the SMS out and the answer in.
        app.drained().await;
        let (_, page) = app.get("/api/conversations").await;
        let phone = common::items(&page)
            .find(|c| c["channel"] != "email")
            .unwrap_or_else(|| panic!("{db:?}: no SMS conversation in {page}"));
        let id = phone["id"].as_i64().unwrap();
        let (_, messages) = app.get(&format!("/api/conversations/{id}/messages")).await;
        let bodies: Vec<&str> = common::items(&messages)
            .filter_map(|m| m["body"].as_str())
            .collect();
        for body in ["Your table is ready", "On my way"] {
            assert!(bodies.contains(&body), "{db:?}: {messages}");
        }
    }
}
