//! The four request bodies as clients send them, and their conversion into an [`Event`].
//! Every field is optional at the serde level so that a missing field becomes a field
//! error ("is required") reported together with all the others.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::address::{Address, OwnedAddress};
use super::error::{Collector, ValidationErrors};
use super::event::{check_provider_id, Event, SCHEMA_VERSION};
use super::idempotency::{request_fingerprint, IdempotencyKey};
use super::message::{Attachments, Channel, Direction, MessageBody, Subject};
use super::text::check_metadata;

/// What the HTTP layer knows beyond the body.
#[derive(Debug, Clone, Copy)]
pub struct Accept<'a> {
    pub default_customer: Uuid,
    /// Inbound: the customer owning the recipient's address (SPEC §16). It is the
    /// message's customer, whatever the body's `customer_id` says.
    pub inbound_owner: Option<Uuid>,
    /// The raw `Idempotency-Key` header, if sent.
    pub idempotency_header: Option<&'a str>,
    /// The matched route pattern (e.g. `/api/messages/sms`); scopes header keys.
    pub endpoint: &'a str,
    pub now: DateTime<Utc>,
}

pub trait IntoEvent {
    /// An inbound message's recipient, as owned addresses are kept: it belongs to the
    /// customer owning it (SPEC §16). `None` for sends, and for a recipient that is not an
    /// address (which `into_event` refuses).
    fn recipient(&self) -> Option<OwnedAddress> {
        None
    }

    fn into_event(self, ctx: &Accept<'_>) -> Result<Event, ValidationErrors>;
}

/// `POST /api/messages/sms`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SendSms {
    pub from: Option<String>,
    pub to: Option<String>,
    #[serde(rename = "type")]
    pub r#type: Option<String>,
    pub body: Option<String>,
    pub attachments: Option<Vec<String>>,
    pub timestamp: Option<String>,
    pub customer_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// `POST /api/messages/email`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SendEmail {
    pub from: Option<String>,
    pub to: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub attachments: Option<Vec<String>>,
    pub timestamp: Option<String>,
    pub customer_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// `POST /api/webhooks/sms`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmsWebhook {
    pub from: Option<String>,
    pub to: Option<String>,
    #[serde(rename = "type")]
    pub r#type: Option<String>,
    pub messaging_provider_id: Option<String>,
    pub body: Option<String>,
    pub attachments: Option<Vec<String>>,
    pub timestamp: Option<String>,
    pub customer_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// `POST /api/webhooks/email`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmailWebhook {
    pub from: Option<String>,
    pub to: Option<String>,
    pub subject: Option<String>,
    pub xillio_id: Option<String>,
    pub body: Option<String>,
    pub attachments: Option<Vec<String>>,
    pub timestamp: Option<String>,
    pub customer_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

impl IntoEvent for SendSms {
    fn into_event(self, ctx: &Accept<'_>) -> Result<Event, ValidationErrors> {
        build(
            Fields {
                direction: Direction::Outbound,
                kind: Kind::Sms(self.r#type),
                provider_id: None,
                from: self.from,
                to: self.to,
                subject: None,
                body: self.body,
                attachments: self.attachments,
                timestamp: self.timestamp,
                customer_id: self.customer_id,
                metadata: self.metadata,
            },
            ctx,
        )
    }
}

impl IntoEvent for SendEmail {
    fn into_event(self, ctx: &Accept<'_>) -> Result<Event, ValidationErrors> {
        build(
            Fields {
                direction: Direction::Outbound,
                kind: Kind::Email,
                provider_id: None,
                from: self.from,
                to: self.to,
                subject: self.subject,
                body: self.body,
                attachments: self.attachments,
                timestamp: self.timestamp,
                customer_id: self.customer_id,
                metadata: self.metadata,
            },
            ctx,
        )
    }
}

impl IntoEvent for SmsWebhook {
    fn recipient(&self) -> Option<OwnedAddress> {
        let to = self.to.as_deref()?;
        OwnedAddress::of_recipient(to, Channel::Sms)
    }

    fn into_event(self, ctx: &Accept<'_>) -> Result<Event, ValidationErrors> {
        build(
            Fields {
                direction: Direction::Inbound,
                kind: Kind::Sms(self.r#type),
                provider_id: Some(("messaging_provider_id", self.messaging_provider_id)),
                from: self.from,
                to: self.to,
                subject: None,
                body: self.body,
                attachments: self.attachments,
                timestamp: self.timestamp,
                customer_id: self.customer_id,
                metadata: self.metadata,
            },
            ctx,
        )
    }
}

impl IntoEvent for EmailWebhook {
    fn recipient(&self) -> Option<OwnedAddress> {
        let to = self.to.as_deref()?;
        OwnedAddress::of_recipient(to, Channel::Email)
    }

    fn into_event(self, ctx: &Accept<'_>) -> Result<Event, ValidationErrors> {
        build(
            Fields {
                direction: Direction::Inbound,
                kind: Kind::Email,
                provider_id: Some(("xillio_id", self.xillio_id)),
                from: self.from,
                to: self.to,
                subject: self.subject,
                body: self.body,
                attachments: self.attachments,
                timestamp: self.timestamp,
                customer_id: self.customer_id,
                metadata: self.metadata,
            },
            ctx,
        )
    }
}

/// Sms requests name their channel in `type`; email requests are always email.
enum Kind {
    Sms(Option<String>),
    Email,
}

/// The four request kinds, flattened so one function validates them all.
struct Fields {
    direction: Direction,
    kind: Kind,
    /// Inbound only: (JSON field name, value).
    provider_id: Option<(&'static str, Option<String>)>,
    from: Option<String>,
    to: Option<String>,
    subject: Option<String>,
    body: Option<String>,
    attachments: Option<Vec<String>>,
    timestamp: Option<String>,
    customer_id: Option<String>,
    metadata: Option<serde_json::Value>,
}

fn build(f: Fields, ctx: &Accept<'_>) -> Result<Event, ValidationErrors> {
    let mut c = Collector::default();
    // Addresses and body limits are the same for sms and mms, so they can be checked
    // even when `type` is bad.
    let base = match f.kind {
        Kind::Sms(_) => Channel::Sms,
        Kind::Email => Channel::Email,
    };
    let from = c
        .required("from", f.from)
        .and_then(|s| c.check("from", Address::parse(&s, base)));
    let to = c
        .required("to", f.to)
        .and_then(|s| c.check("to", Address::parse(&s, base)));
    let channel = match f.kind {
        Kind::Sms(t) => c
            .required("type", t)
            .and_then(|t| c.check("type", parse_sms_type(&t))),
        Kind::Email => Some(Channel::Email),
    };
    let provider_id = f.provider_id.and_then(|(field, id)| {
        c.required(field, id)
            .and_then(|id| c.check(field, check_provider_id(&id)).map(|()| id))
    });
    let subject = f
        .subject
        .and_then(|s| c.check("subject", Subject::parse(&s)))
        .map(Subject::into_string);
    let body = c
        .required("body", f.body)
        .and_then(|b| c.check("body", MessageBody::parse(&b, channel.unwrap_or(base))));
    // With an unknown sms `type` only the URLs can be judged: email's rules check
    // them without the per-type count rules.
    let attachments = Attachments::parse(f.attachments, channel.unwrap_or(Channel::Email))
        .map_err(|errs| c.extend(errs))
        .ok();
    let client_timestamp = f.timestamp.is_some();
    let sent_at = match f.timestamp {
        None => Some(ctx.now),
        Some(t) => c.check("timestamp", parse_timestamp(&t)),
    };
    let owner = ctx
        .inbound_owner
        .filter(|_| f.direction == Direction::Inbound);
    // A body's `customer_id` must be a UUID even where the recipient's owner decides.
    let named = f.customer_id.and_then(|s| {
        c.check(
            "customer_id",
            Uuid::parse_str(&s).map_err(|_| "must be a UUID".to_string()),
        )
    });
    let customer_id = owner.or(named).or(Some(ctx.default_customer));
    let metadata = f
        .metadata
        .filter(|m| !m.is_null())
        .and_then(|m| match check_metadata(&m) {
            Ok(()) => Some(m),
            Err(e) => {
                c.extend(vec![e]);
                None
            }
        });

    let key = match ctx.idempotency_header {
        Some(raw) => {
            let customer = customer_id.unwrap_or(ctx.default_customer);
            c.check(
                "Idempotency-Key",
                IdempotencyKey::from_header(raw, ctx.endpoint, customer),
            )
        }
        None => match f.direction {
            Direction::Inbound => match (customer_id, provider_id.as_deref()) {
                (Some(cust), Some(id)) => {
                    Some(IdempotencyKey::for_inbound(base.family(), cust, id))
                }
                _ => None,
            },
            Direction::Outbound => match (customer_id, &from, &to, sent_at, &body) {
                (Some(cust), Some(from), Some(to), Some(sent), Some(body)) => {
                    Some(IdempotencyKey::for_outbound(
                        base.family(),
                        cust,
                        from.as_str(),
                        to.as_str(),
                        sent,
                        &body.sha256_hex(),
                    ))
                }
                _ => None,
            },
        },
    };

    if !c.is_empty() {
        return Err(c.into_errors());
    }
    match (
        channel,
        from,
        to,
        body,
        attachments,
        sent_at,
        customer_id,
        key,
    ) {
        (
            Some(channel),
            Some(from),
            Some(to),
            Some(body),
            Some(attachments),
            Some(sent_at),
            Some(customer_id),
            Some(idempotency_key),
        ) => {
            let mut event = Event {
                schema_version: SCHEMA_VERSION,
                event_id: Uuid::new_v4(),
                direction: f.direction,
                channel,
                customer_id,
                from: from.as_str().to_owned(),
                to: to.as_str().to_owned(),
                subject,
                body: body.into_string(),
                attachments: attachments.into_vec(),
                sent_at,
                idempotency_key,
                provider_message_id: provider_id,
                metadata,
                accepted_at: ctx.now,
                attempt: 0,
                request_fingerprint: None,
                traceparent: None,
            };
            event.request_fingerprint = Some(request_fingerprint(&event, client_timestamp));
            Ok(event)
        }
        // Every `None` above recorded an error; this arm only guards against a slip.
        _ => Err(c.into_errors()),
    }
}

fn parse_sms_type(t: &str) -> Result<Channel, String> {
    match t {
        "sms" => Ok(Channel::Sms),
        "mms" => Ok(Channel::Mms),
        _ => Err("must be \"sms\" or \"mms\"".into()),
    }
}

fn parse_timestamp(t: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| "must be an RFC 3339 timestamp, e.g. 2024-11-01T14:00:00Z".into())
}

#[cfg(test)]
mod tests;
