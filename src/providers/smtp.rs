//! Email through an SMTP server or relay (SPEC §14), with lettre: `providers.email.kind =
//! "smtp"`, settings `host`, `port`, `tls`, `username`, `password`, `ca_file`, `timeout`.
//!
//! Each message is one text/plain email. Its Message-ID is made from the idempotency key
//! and the sender's domain (`<{key}@{domain}>`), so a retried send carries the same
//! Message-ID (relays and receivers can drop the repeat); it is the `provider_message_id`.
//! Attachments are URLs: they are listed as links at the end of the body (nothing is
//! downloaded or attached).
//!
//! Replies, classified: 4xx is transient and 5xx permanent (RFC 5321 §4.2.1), whichever
//! command drew it (a 535 to AUTH, a wrong password, is permanent too); connection and TLS
//! failures and timeouts are transient; a message lettre cannot write (an address it does
//! not parse, a UTF-8 address to a server without SMTPUTF8) is permanent.
//!
//! Connections are pooled per thread (as `http.rs` pools its clients): a pool belongs to the
//! Tokio runtime that made its connections, and every actix thread runs its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as _;
use std::time::Duration;

use futures_util::future::FutureExt;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::http::next_id;
use super::{OutboundMessage, Provider, ProviderError, Receipt, Sending};
use crate::config::{ProviderSettings, SmtpTls};

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Idle connections kept per thread; more may be open while sending.
const POOL_SIZE: u32 = 10;

pub struct SmtpProvider {
    /// This provider's transport in the per-thread cache.
    id: u64,
    name: &'static str,
    /// Cloned into a transport (and its pool) on each thread that sends.
    builder: AsyncSmtpTransportBuilder,
    timeout: Duration,
}

/// A cached transport. lettre's pool spawns a clean-up task when dropped, which needs a
/// Tokio runtime; when the thread ends (this cache's destructor) its runtime is gone, so the
/// pool is leaked instead of panicking, its connections closing with the process.
struct Cached(Option<Transport>);

impl Drop for Cached {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            std::mem::forget(self.0.take());
        }
    }
}

thread_local! {
    static TRANSPORTS: RefCell<HashMap<u64, Cached>> = RefCell::default();
}

impl SmtpProvider {
    pub fn new(name: &'static str, settings: &ProviderSettings) -> Self {
        let port = match settings.port {
            0 => settings.tls.default_port(),
            port => port,
        };
        let mut builder = Transport::builder_dangerous(&settings.host)
            .port(port)
            .tls(tls(name, settings))
            // lettre bounds the connection with it; `send` bounds the whole call.
            .timeout(Some(settings.timeout))
            .pool_config(PoolConfig::new().max_size(POOL_SIZE));
        if !settings.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                settings.username.clone(),
                settings.password.expose().to_string(),
            ));
        }
        SmtpProvider {
            id: next_id(),
            name,
            builder,
            timeout: settings.timeout,
        }
    }

    /// This thread's transport (made on first use, inside the thread's runtime).
    fn transport(&self) -> Transport {
        TRANSPORTS.with(|cache| {
            cache
                .borrow_mut()
                .entry(self.id)
                .or_insert_with(|| Cached(Some(self.builder.clone().build())))
                .0
                .clone()
                .expect("only a dropped entry is emptied")
        })
    }
}

/// Drops this thread's transport of provider `id`: a call cut off by the timeout leaves its
/// connection mid-command, and lettre would pool it as if it were idle.
fn forget_transport(id: u64) {
    TRANSPORTS.with(|cache| cache.borrow_mut().remove(&id));
}

/// How the connection is secured: the server's certificate is checked against the Mozilla
/// roots and `ca_file`'s CAs, for `host`. The settings were validated at load; should
/// `ca_file` have changed since, the public roots alone are trusted (as in `http.rs`).
fn tls(name: &str, settings: &ProviderSettings) -> Tls {
    let parameters = || match tls_parameters(&settings.host, &settings.ca_file) {
        Ok(parameters) => parameters,
        Err(err) => {
            tracing::error!(provider = name, error = %err, "ignoring providers.{name}.ca_file");
            tls_parameters(&settings.host, "").expect("the public roots load")
        }
    };
    match settings.tls {
        SmtpTls::Starttls => Tls::Required(parameters()),
        SmtpTls::Tls => Tls::Wrapper(parameters()),
        SmtpTls::None => Tls::None,
    }
}

fn tls_parameters(host: &str, ca_file: &str) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(host.to_string());
    if !ca_file.is_empty() {
        let pem = std::fs::read(ca_file).map_err(|e| format!("cannot read {ca_file}: {e}"))?;
        let ca = Certificate::from_pem(&pem).map_err(|e| format!("{ca_file}: {e}"))?;
        builder = builder.add_root_certificate(ca);
    }
    builder.build_rustls().map_err(|e| e.to_string())
}

/// The email of `message`, and its Message-ID.
fn compose(message: &OutboundMessage) -> Result<(Message, String), ProviderError> {
    let mailbox = |role: &str, address: &str| {
        address
            .parse::<Mailbox>()
            .map_err(|e| ProviderError::NotSendable(format!("the {role} address {address:?}: {e}")))
    };
    let from = mailbox("from", &message.from)?;
    let to = mailbox("to", &message.to)?;
    // The key is hex (a digest); anything else is dropped so the id stays a valid msg-id.
    let key: String = message
        .idempotency_key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    let message_id = format!("<{key}@{}>", from.email.domain());
    let mut body = message.body.clone();
    if !message.attachments.is_empty() {
        // No line end after the last one: the end of DATA adds it.
        body.push_str("\n\n");
        body.push_str(&message.attachments.join("\n"));
    }
    let mut email = Message::builder()
        .message_id(Some(message_id.clone()))
        .from(from)
        .to(to);
    if let Some(subject) = &message.subject {
        email = email.subject(subject);
    }
    let email = email
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| ProviderError::NotSendable(e.to_string()))?;
    Ok((email, message_id))
}

/// A failed send, classified (see the module's comment).
fn error_of(err: &lettre::transport::smtp::Error, timeout: Duration) -> ProviderError {
    if let Some(code) = err.status() {
        // What the server said after the code; lettre's text would prefix its own words.
        let message = err.source().map_or_else(String::new, |s| s.to_string());
        return reply(&code.to_string(), message);
    }
    if err.is_timeout() {
        ProviderError::Timeout(timeout)
    } else if err.is_client() {
        ProviderError::NotSendable(err.to_string())
    } else {
        ProviderError::Unreachable(err.to_string())
    }
}

/// A negative reply: its three-digit code (451, 550, …) and text.
fn reply(code: &str, message: String) -> ProviderError {
    ProviderError::Smtp {
        // lettre only reports 4xx and 5xx codes here.
        code: code.parse().unwrap_or(500),
        message: message.chars().take(200).collect(),
    }
}

impl Provider for SmtpProvider {
    fn name(&self) -> &'static str {
        self.name
    }

    fn send(&self, message: OutboundMessage) -> Sending {
        let composed = compose(&message);
        let transport = self.transport();
        let (id, timeout) = (self.id, self.timeout);
        async move {
            let (email, message_id) = composed?;
            match tokio::time::timeout(timeout, transport.send(email)).await {
                Ok(Ok(_)) => Ok(Receipt {
                    provider_message_id: message_id,
                }),
                Ok(Err(err)) => Err(error_of(&err, timeout)),
                Err(_) => {
                    forget_transport(id);
                    Err(ProviderError::Timeout(timeout))
                }
            }
        }
        .boxed_local()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel;

    fn email(attachments: &[&str]) -> OutboundMessage {
        OutboundMessage {
            idempotency_key: "0123abcd".into(),
            channel: Channel::Email,
            from: "user@usehatchapp.com".into(),
            to: "contact@gmail.com".into(),
            subject: Some("hello".into()),
            body: "see below".into(),
            attachments: attachments.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn text(message: &Message) -> String {
        String::from_utf8(message.formatted()).unwrap()
    }

    #[test]
    fn the_message_id_comes_from_the_key_and_the_senders_domain() {
        let (first, id) = compose(&email(&[])).unwrap();
        assert_eq!(id, "<0123abcd@usehatchapp.com>");
        let (again, same) = compose(&email(&[])).unwrap();
        assert_eq!(id, same, "a retried send carries the same Message-ID");
        for message in [&first, &again] {
            let text = text(message);
            assert!(
                text.contains("Message-ID: <0123abcd@usehatchapp.com>\r\n"),
                "{text}"
            );
            assert!(text.contains("From: user@usehatchapp.com\r\n"), "{text}");
            assert!(text.contains("To: contact@gmail.com\r\n"), "{text}");
            assert!(text.contains("Subject: hello\r\n"), "{text}");
        }
        let envelope = first.envelope();
        assert_eq!(envelope.to().len(), 1);
        assert_eq!(envelope.to()[0].to_string(), "contact@gmail.com");
    }

    #[test]
    fn attachments_are_listed_as_links_after_the_body() {
        let (message, _) =
            compose(&email(&["https://a.example/1.pdf", "https://b.example/2"])).unwrap();
        let text = text(&message);
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(
            body,
            "see below\r\n\r\nhttps://a.example/1.pdf\r\nhttps://b.example/2"
        );
    }

    #[test]
    fn an_address_lettre_cannot_write_is_a_permanent_failure() {
        let mut message = email(&[]);
        message.to = "not an address".into();
        let err = compose(&message).unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert_eq!(err.outcome(), "rejected");
    }

    #[test]
    fn replies_4xx_are_transient_and_5xx_permanent() {
        let later = reply("451", "4.3.0 try again later".into());
        assert!(later.is_transient());
        assert_eq!(later.outcome(), "server_error");
        assert!(later.to_string().contains("451"), "{later}");
        assert!(later.to_string().contains("try again later"), "{later}");
        let refused = reply("535", "5.7.8 Authentication credentials invalid".into());
        assert!(!refused.is_transient());
        assert_eq!(refused.outcome(), "rejected");
    }

    #[test]
    fn the_port_follows_tls_unless_set() {
        assert_eq!(SmtpTls::Starttls.default_port(), 587);
        assert_eq!(SmtpTls::Tls.default_port(), 465);
        assert_eq!(SmtpTls::None.default_port(), 25);
    }
}
