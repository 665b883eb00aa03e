//! Delivery of outbound messages to the SMS/MMS and email providers: an in-process mock,
//! a generic JSON-over-HTTP endpoint, Twilio's Messages API (SMS/MMS) or SMTP (email).

mod http;
mod mock;
mod smtp;
mod twilio;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::Serialize;

pub use http::HttpProvider;
pub use mock::MockProvider;
pub use smtp::SmtpProvider;
pub use twilio::TwilioProvider;

use crate::config::{ProviderKind, ProviderSettings, ProvidersSettings};
use crate::domain::{Channel, ErrorCode, Event};

/// What a provider is asked to deliver.
#[derive(Debug, Clone, Serialize)]
pub struct OutboundMessage {
    /// Providers de-duplicate on it, so a retried send is not delivered twice.
    pub idempotency_key: String,
    pub channel: Channel,
    pub from: String,
    pub to: String,
    pub subject: Option<String>,
    pub body: String,
    pub attachments: Vec<String>,
}

impl OutboundMessage {
    pub fn from_event(event: &Event) -> Self {
        OutboundMessage {
            idempotency_key: event.idempotency_key.as_str().to_string(),
            channel: event.channel,
            from: event.from.clone(),
            to: event.to.clone(),
            subject: event.subject.clone(),
            body: event.body.clone(),
            attachments: event.attachments.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub provider_message_id: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("provider answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("provider timed out after {0:?}")]
    Timeout(Duration),
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    #[error("provider answered with an unreadable body: {0}")]
    BadResponse(String),
    /// A negative SMTP reply (RFC 5321 §4.2.1): 4xx transient, 5xx permanent.
    #[error("SMTP server answered {code}: {message}")]
    Smtp { code: u16, message: String },
    /// A message the provider's client cannot write or the server cannot take in any form
    /// (e.g. an address lettre does not parse): trying again would fail the same way.
    #[error("cannot send through the provider: {0}")]
    NotSendable(String),
}

impl ProviderError {
    /// 5xx, 429, timeouts and connection failures are worth retrying; other 4xx are not.
    /// SMTP's codes say it the other way round: 4xx is "try again later", 5xx a refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Status { status, .. } => *status >= 500 || *status == 429,
            ProviderError::Timeout(_) | ProviderError::Unreachable(_) => true,
            ProviderError::BadResponse(_) => true,
            ProviderError::Smtp { code, .. } => *code < 500,
            ProviderError::NotSendable(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// What the message's customer is told; the provider's own text is for operators.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProviderError::Status { status: 408, .. } => ErrorCode::Timeout,
            ProviderError::Status { .. } if self.is_transient() => ErrorCode::ProviderUnavailable,
            ProviderError::Status { .. } => ErrorCode::ProviderRejected,
            ProviderError::Timeout(_) => ErrorCode::Timeout,
            ProviderError::Unreachable(_) | ProviderError::BadResponse(_) => {
                ErrorCode::ProviderUnavailable
            }
            // RFC 5321: no such mailbox (550), not local (551), mailbox name not allowed (553).
            ProviderError::Smtp {
                code: 550 | 551 | 553,
                ..
            } => ErrorCode::InvalidRecipient,
            ProviderError::Smtp { .. } if self.is_transient() => ErrorCode::ProviderUnavailable,
            ProviderError::Smtp { .. } => ErrorCode::ProviderRejected,
            ProviderError::NotSendable(_) => ErrorCode::InvalidMessage,
        }
    }

    /// The `outcome` label of `messaging_provider_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            ProviderError::Status { status: 429, .. } => "rate_limited",
            ProviderError::Status { status, .. } if *status >= 500 => "server_error",
            ProviderError::Status { .. } => "rejected",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Unreachable(_) | ProviderError::BadResponse(_) => "unreachable",
            // Labels by meaning, as for HTTP: a deferral is the server's trouble, a 5xx a refusal.
            ProviderError::Smtp { code, .. } if *code < 500 => "server_error",
            ProviderError::Smtp { .. } | ProviderError::NotSendable(_) => "rejected",
        }
    }
}

impl crate::telemetry::CallFailure for ProviderError {
    fn outcome(&self) -> &'static str {
        ProviderError::outcome(self)
    }
}

pub trait Provider: Send + Sync + 'static {
    /// `sms` or `email`: the `provider` label of the metrics.
    fn name(&self) -> &'static str;
    /// Local (not `Send`): providers are called from the worker actors' own thread.
    fn send(&self, message: OutboundMessage) -> Sending;
}

/// What [`Provider::send`] answers: named once so that each provider's signature is one line.
pub type Sending = LocalBoxFuture<'static, Result<Receipt, ProviderError>>;

/// One provider per channel family.
#[derive(Clone)]
pub struct Providers {
    pub sms: Arc<dyn Provider>,
    pub email: Arc<dyn Provider>,
}

impl Providers {
    pub fn from_settings(settings: &ProvidersSettings) -> Self {
        Providers {
            sms: build("sms", &settings.sms),
            email: build("email", &settings.email),
        }
    }

    pub fn for_channel(&self, channel: Channel) -> &Arc<dyn Provider> {
        match channel {
            Channel::Sms | Channel::Mms => &self.sms,
            Channel::Email => &self.email,
        }
    }
}

fn build(name: &'static str, settings: &ProviderSettings) -> Arc<dyn Provider> {
    match settings.kind {
        ProviderKind::Mock => Arc::new(MockProvider::new(name, settings)),
        ProviderKind::Http => Arc::new(HttpProvider::new(name, settings)),
        ProviderKind::Twilio => Arc::new(TwilioProvider::new(name, settings)),
        ProviderKind::Smtp => Arc::new(SmtpProvider::new(name, settings)),
    }
}
