//! Email through SMTP (SPEC §14), against a real SMTP server: aiosmtpd (tests/peers/smtp_server.py)
//! requiring STARTTLS, on a certificate from a CA made for the test and trusted through
//! `ca_file`, and AUTH. What the server took is read from its side: envelope, headers,
//! body, and whether it came over TLS from the logged-in user.

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use common::peer::{self, Peer, Reports};
use common::{databases, spawn_app_with_hooks, Db, TestApp};
use messaging_server::config::{ProviderKind, Secret, Settings, SmtpTls};
use messaging_server::domain::Channel;
use messaging_server::providers::{
    MockProvider, OutboundMessage, Provider, ProviderError, Providers, SmtpProvider,
};
use messaging_server::startup::Hooks;
use serde_json::{json, Value};

pub(crate) const USER: &str = "mailer";
pub(crate) const PASSWORD: &str = "s3cret-smtp-password";

/// tests/peers/smtp_server.py on a port of its own, and what it reported.
pub(crate) struct SmtpServer {
    peer: Peer,
    port: u16,
    events: Reports,
}

impl SmtpServer {
    /// A server that refuses recipients named `defer…` with 451 their first `defer` times.
    pub(crate) async fn start(defer: u32) -> Option<SmtpServer> {
        if !common::require_tools(&["openssl", "aiosmtpd"]) {
            return None;
        }
        let python = common::tools::python_for(&common::require_tool("aiosmtpd")?);
        let dir = std::env::temp_dir().join(format!("ms-smtp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        common::tls_stub::make_certificates(&dir);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/smtp_server.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(dir.join("leaf.pem"))
            .arg(dir.join("leaf.key"))
            .args([USER, PASSWORD, "--defer", &defer.to_string()])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("python runs tests/peers/smtp_server.py");
        let events = Reports::default();
        peer::read_reports(child.stdout.take().unwrap(), events.clone());
        let peer = Peer::new(child, "SMTP server's files and stderr", dir);
        let port = peer::ready_port(&events, 0, "the SMTP server listens").await;
        Some(SmtpServer { peer, port, events })
    }

    /// What the server reported that matches `filter`.
    pub(crate) fn find(&self, filter: impl Fn(&Value) -> bool) -> Vec<Value> {
        peer::matching(&self.events, filter)
    }

    /// The messages it took.
    pub(crate) fn messages(&self) -> Vec<Value> {
        self.find(|e| e.get("mail_from").is_some())
    }

    /// Its login attempts, as (mechanism, accepted).
    pub(crate) fn logins(&self) -> Vec<(String, bool)> {
        self.find(|e| e.get("auth").is_some())
            .iter()
            .map(|e| (e["auth"].as_str().unwrap().into(), e["ok"] == true))
            .collect()
    }
}

pub(crate) fn smtp(settings: &mut Settings, server: &SmtpServer, password: &str) {
    let email = &mut settings.providers.email;
    email.kind = ProviderKind::Smtp;
    email.host = "127.0.0.1".into();
    email.port = server.port;
    email.tls = SmtpTls::Starttls;
    email.ca_file = server.peer.files.join("ca.pem").display().to_string();
    email.username = USER.into();
    email.password = Secret::new(password);
    settings.retry.max_attempts = 5;
}

/// The app with the SMTP adapter for email, as its settings build it.
pub(crate) async fn app_with_smtp(db: Db, server: &SmtpServer, password: &str) -> TestApp {
    let mut settings = common::test_settings("sqlite::memory:");
    smtp(&mut settings, server, password);
    let providers = Providers {
        sms: Arc::new(MockProvider::new("sms", &settings.providers.sms)),
        email: Providers::from_settings(&settings.providers).email,
    };
    spawn_app_with_hooks(
        db,
        |s| smtp(s, server, password),
        Hooks {
            providers: Some(providers),
            ..Hooks::default()
        },
    )
    .await
}

pub(crate) fn email(to: &str, subject: &str) -> Value {
    json!({
        "from": "user@usehatchapp.com", "to": to, "subject": subject,
        "body": "Hello over SMTP.\nSecond line.",
        "attachments": ["https://files.example.com/invoice.pdf"],
        "timestamp": "2024-11-01T14:00:00Z"
    })
}

/// Sends `body` and follows its status URL until it is sent or dead-lettered; its status.
async fn send_and_settle(app: &TestApp, body: &Value) -> Value {
    let (status, accepted) = app.post_json("/api/messages/email", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    super::settled(app, &accepted).await
}

#[actix_web::test]
async fn an_email_goes_out_over_starttls_with_auth_and_its_message_id_is_the_receipt() {
    for db in databases() {
        let Some(server) = SmtpServer::start(0).await else {
            return;
        };
        let app = app_with_smtp(db, &server, PASSWORD).await;
        let done = send_and_settle(&app, &email("contact@gmail.com", "Your invoice")).await;
        assert_eq!(done["status"], "sent", "{db:?}: {done}");
        assert_eq!(done["attempts"], 1, "{db:?}: {done}");

        let messages = server.messages();
        assert_eq!(messages.len(), 1, "{db:?}: {messages:?}");
        let got = &messages[0];
        assert_eq!(got["mail_from"], "user@usehatchapp.com", "{got}");
        assert_eq!(got["rcpt_tos"], json!(["contact@gmail.com"]), "{got}");
        assert_eq!(got["tls"], true, "sent after STARTTLS: {got}");
        assert_eq!(got["login"], USER, "{got}");
        let headers = &got["headers"];
        assert_eq!(headers["From"], "user@usehatchapp.com", "{got}");
        assert_eq!(headers["To"], "contact@gmail.com", "{got}");
        assert_eq!(headers["Subject"], "Your invoice", "{got}");
        let key = done["idempotency_key"].as_str().unwrap();
        assert_eq!(
            headers["Message-ID"],
            format!("<{key}@usehatchapp.com>"),
            "{got}"
        );
        assert_eq!(
            done["provider_message_id"], headers["Message-ID"],
            "the Message-ID is the receipt: {done}"
        );
        let body = got["body"].as_str().unwrap().replace("\r\n", "\n");
        assert_eq!(
            body,
            "Hello over SMTP.\nSecond line.\n\nhttps://files.example.com/invoice.pdf\n"
        );
        assert_eq!(server.logins(), [("PLAIN".to_string(), true)]);
    }
}

#[actix_web::test]
async fn a_wrong_password_is_a_permanent_failure_not_retried() {
    for db in databases() {
        let Some(server) = SmtpServer::start(0).await else {
            return;
        };
        let app = app_with_smtp(db, &server, "not-the-password").await;
        let done = send_and_settle(&app, &email("contact@gmail.com", "refused")).await;
        assert_eq!(done["status"], "dead_lettered", "{db:?}: {done}");
        assert_eq!(done["attempts"], 1, "{db:?}: one attempt: {done}");
        assert_eq!(done["error_code"], "provider_rejected", "{db:?}: {done}");
        // The server's reply is for operators: in the dead letter, without the password.
        let (_, letters) = app.get("/api/dlq").await;
        let error = letters["items"][0]["last_error"]
            .as_str()
            .unwrap_or_default();
        assert!(error.contains("535"), "{db:?}: {letters}");
        assert!(!error.contains("not-the-password"), "{db:?}: {letters}");
        assert_eq!(server.logins(), [("PLAIN".to_string(), false)]);
        assert!(server.messages().is_empty());
    }
}

#[actix_web::test]
async fn a_451_reply_is_retried_until_the_server_takes_the_message() {
    for db in databases() {
        let Some(server) = SmtpServer::start(2).await else {
            return;
        };
        let app = app_with_smtp(db, &server, PASSWORD).await;
        let done = send_and_settle(&app, &email("deferred@gmail.com", "greylisted")).await;
        assert_eq!(done["status"], "sent", "{db:?}: {done}");
        assert_eq!(
            server.find(|e| e.get("deferred").is_some()).len(),
            2,
            "{db:?}: refused twice before"
        );
        let messages = server.messages();
        assert_eq!(messages.len(), 1, "{db:?}: {messages:?}");
        assert_eq!(messages[0]["rcpt_tos"], json!(["deferred@gmail.com"]));
        assert_eq!(
            done["provider_message_id"], messages[0]["headers"]["Message-ID"],
            "the retries carried the same Message-ID: {done}"
        );
    }
}

/// A message for the provider called directly.
fn outbound(key: &str) -> OutboundMessage {
    OutboundMessage {
        idempotency_key: key.into(),
        channel: Channel::Email,
        from: "user@usehatchapp.com".into(),
        to: "contact@gmail.com".into(),
        subject: None,
        body: "hi".into(),
        attachments: vec![],
    }
}

/// A server that never answers and a port nobody listens on: both transient, the first
/// after `timeout` (the whole call is bounded, not only the connection).
#[actix_web::test]
async fn a_silent_server_times_out_and_a_closed_port_is_unreachable_both_transient() {
    // Accepts connections (the kernel's backlog) and never sends the greeting.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = common::nats::free_port();
    let message = outbound("k1");
    for (port, timeout) in [(silent.local_addr().unwrap().port(), true), (closed, false)] {
        let mut settings = Settings::defaults().providers.email;
        settings.kind = ProviderKind::Smtp;
        settings.host = "127.0.0.1".into();
        settings.port = port;
        settings.tls = SmtpTls::None;
        settings.timeout = Duration::from_millis(300);
        let provider = SmtpProvider::new("email", &settings);
        let err = provider.send(message.clone()).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        if timeout {
            assert_eq!(err, ProviderError::Timeout(Duration::from_millis(300)));
        } else {
            assert!(matches!(err, ProviderError::Unreachable(_)), "{err}");
        }
    }
}

/// The server's certificate is checked: without `ca_file` its CA is unknown, and nothing is
/// sent (no login either: STARTTLS comes first).
#[actix_web::test]
async fn a_certificate_from_an_untrusted_ca_is_refused() {
    let Some(server) = SmtpServer::start(0).await else {
        return;
    };
    let mut settings = Settings::defaults();
    smtp(&mut settings, &server, PASSWORD);
    settings.providers.email.ca_file = String::new();
    let provider = SmtpProvider::new("email", &settings.providers.email);
    let err = provider.send(outbound("k2")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable(_)), "{err}");
    assert!(server.logins().is_empty() && server.messages().is_empty());
}
