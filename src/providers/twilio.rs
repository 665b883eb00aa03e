//! SMS and MMS through Twilio's Messages API (SPEC §14): `POST {base_url}/2010-04-01/
//! Accounts/{AccountSid}/Messages.json`, form-encoded, HTTP Basic auth with the account SID
//! and auth token. Twilio's `sid` is the message's `provider_message_id`.
//!
//! Twilio's answers, classified: a 4xx is a refusal (permanent; Twilio's error `code` is
//! kept in the error text, e.g. 21211 for an invalid `To`), except 429; 429 and 5xx are
//! transient, `Retry-After` honoured; timeouts and connection failures are transient.
//! Twilio takes no idempotency key on this call: a message is called again only when its
//! sender died mid-call or a call timed out (the delivery stage's rule).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::FutureExt;
use serde::Deserialize;

use super::http::{answer_of, next_id, pooled_client, provider_tls};
use super::{OutboundMessage, Provider, ProviderError, Receipt, Sending};
use crate::config::{ProviderSettings, Secret};

/// Where this server takes Twilio's delivery receipts (a route of `http::routes`).
pub const STATUS_CALLBACK_PATH: &str = "/api/providers/twilio/status";

/// Twilio's API when `base_url` is not set.
pub const TWILIO_API: &str = "https://api.twilio.com";

pub struct TwilioProvider {
    id: u64,
    name: &'static str,
    /// `…/2010-04-01/Accounts/{AccountSid}/Messages.json`
    messages_url: String,
    account_sid: String,
    auth_token: Secret,
    messaging_service_sid: Option<String>,
    /// Where Twilio is asked to post delivery receipts (`public_url` set).
    status_callback: Option<String>,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
}

/// What Twilio answers to a created message (only what is used).
#[derive(Deserialize)]
struct Created {
    sid: String,
}

/// Twilio's error body: `{"code": 21211, "message": "...", "more_info": "...", "status": 400}`.
#[derive(Deserialize)]
struct TwilioError {
    code: Option<u32>,
    message: Option<String>,
}

impl TwilioProvider {
    pub fn new(name: &'static str, settings: &ProviderSettings) -> Self {
        let base = match settings.base_url.trim_end_matches('/') {
            "" => TWILIO_API,
            base => base,
        };
        TwilioProvider {
            id: next_id(),
            name,
            messages_url: format!(
                "{base}/2010-04-01/Accounts/{}/Messages.json",
                settings.account_sid
            ),
            account_sid: settings.account_sid.clone(),
            auth_token: settings.auth_token.clone(),
            messaging_service_sid: Some(settings.messaging_service_sid.clone())
                .filter(|sid| !sid.is_empty()),
            status_callback: Some(settings.public_url.trim_end_matches('/'))
                .filter(|url| !url.is_empty())
                .map(|url| format!("{url}{STATUS_CALLBACK_PATH}")),
            timeout: settings.timeout,
            tls: provider_tls(name, &settings.ca_file),
        }
    }

    /// The form of a Messages create call: one `MediaUrl` per attachment (an MMS).
    fn form(&self, message: &OutboundMessage) -> Vec<(&'static str, String)> {
        let mut form = vec![("To", message.to.clone())];
        match &self.messaging_service_sid {
            Some(sid) => form.push(("MessagingServiceSid", sid.clone())),
            None => form.push(("From", message.from.clone())),
        }
        form.push(("Body", message.body.clone()));
        form.extend(
            message
                .attachments
                .iter()
                .map(|url| ("MediaUrl", url.clone())),
        );
        if let Some(callback) = &self.status_callback {
            form.push(("StatusCallback", callback.clone()));
        }
        form
    }
}

/// A refusal or failure as Twilio states it, its error code kept.
fn error_of(status: u16, body: &[u8], retry_after: Option<Duration>) -> ProviderError {
    let message = match serde_json::from_slice::<TwilioError>(body) {
        Ok(TwilioError {
            code: Some(code),
            message,
        }) => format!(
            "Twilio error {code}: {}",
            message.as_deref().unwrap_or("(no message)")
        ),
        _ => String::from_utf8_lossy(body).chars().take(200).collect(),
    };
    ProviderError::Status {
        status,
        message,
        retry_after,
    }
}

impl Provider for TwilioProvider {
    fn name(&self) -> &'static str {
        self.name
    }

    fn send(&self, message: OutboundMessage) -> Sending {
        let request = pooled_client(self.id, &self.tls)
            .post(&self.messages_url)
            .basic_auth(&self.account_sid, self.auth_token.expose())
            .insert_header((awc::http::header::ACCEPT, "application/json"))
            .timeout(self.timeout);
        let form = self.form(&message);
        let timeout = self.timeout;
        async move {
            let answer = answer_of(request.send_form(&form), timeout).await?;
            if !answer.is_success() {
                return Err(error_of(answer.status, &answer.body, answer.retry_after));
            }
            let created: Created = answer.json()?;
            Ok(Receipt {
                provider_message_id: created.sid,
            })
        }
        .boxed_local()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel;

    fn provider(messaging_service_sid: &str) -> TwilioProvider {
        provider_at(messaging_service_sid, "")
    }

    fn provider_at(messaging_service_sid: &str, public_url: &str) -> TwilioProvider {
        let mut settings = crate::config::Settings::defaults().providers.sms;
        settings.public_url = public_url.to_string();
        settings.account_sid = format!("AC{}", "0".repeat(32));
        settings.auth_token = Secret::new("token");
        settings.messaging_service_sid = messaging_service_sid.to_string();
        TwilioProvider::new("sms", &settings)
    }

    fn mms() -> OutboundMessage {
        OutboundMessage {
            idempotency_key: "k".into(),
            channel: Channel::Mms,
            from: "+12016661234".into(),
            to: "+18045551234".into(),
            subject: None,
            body: "look".into(),
            attachments: vec![
                "https://a.example/1.png".into(),
                "https://a.example/2.png".into(),
            ],
        }
    }

    #[test]
    fn the_form_has_one_media_url_per_attachment_and_the_sender() {
        let form = provider("").form(&mms());
        assert_eq!(
            form,
            [
                ("To", "+18045551234".to_string()),
                ("From", "+12016661234".to_string()),
                ("Body", "look".to_string()),
                ("MediaUrl", "https://a.example/1.png".to_string()),
                ("MediaUrl", "https://a.example/2.png".to_string()),
            ]
        );
        let service = format!("MG{}", "1".repeat(32));
        let form = provider(&service).form(&mms());
        assert!(form.contains(&("MessagingServiceSid", service)));
        assert!(!form.iter().any(|(name, _)| *name == "From"));
    }

    #[test]
    fn receipts_are_asked_for_at_the_public_url() {
        let form = provider_at("", "https://msg.example.com/").form(&mms());
        assert_eq!(
            form.last(),
            Some(&(
                "StatusCallback",
                "https://msg.example.com/api/providers/twilio/status".to_string()
            ))
        );
        let form = provider("").form(&mms());
        assert!(!form.iter().any(|(name, _)| *name == "StatusCallback"));
    }

    #[test]
    fn the_url_is_the_accounts_messages_resource() {
        assert_eq!(
            provider("").messages_url,
            format!(
                "https://api.twilio.com/2010-04-01/Accounts/AC{}/Messages.json",
                "0".repeat(32)
            )
        );
    }

    #[test]
    fn twilio_errors_keep_their_code_and_are_classified_by_status() {
        let body = br#"{"code": 21211, "message": "The 'To' number 5551234 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        let refused = error_of(400, body, None);
        assert!(!refused.is_transient());
        assert!(
            refused.to_string().contains("Twilio error 21211"),
            "{refused}"
        );

        let limited = error_of(
            429,
            br#"{"code": 20429, "message": "Too Many Requests", "status": 429}"#,
            Some(Duration::from_secs(3)),
        );
        assert!(limited.is_transient());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));

        let down = error_of(503, b"<html>Service Unavailable</html>", None);
        assert!(down.is_transient());
        assert!(down.to_string().contains("Service Unavailable"));
    }
}
