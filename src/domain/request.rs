//! The four request bodies as clients send them, and their conversion into an [`Event`].
//! Every field is optional at the serde level so that a missing field becomes a field
//! error ("is required") reported together with all the others.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::address::Address;
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
    /// Inbound requests are routed to the owner of their recipient (SPEC §16).
    const DIRECTION: Direction;

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
    const DIRECTION: Direction = Direction::Outbound;

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
    const DIRECTION: Direction = Direction::Outbound;

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
    const DIRECTION: Direction = Direction::Inbound;

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
    const DIRECTION: Direction = Direction::Inbound;

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
    let customer_id = match (owner, f.customer_id) {
        (Some(owner), _) => Some(owner),
        (None, None) => Some(ctx.default_customer),
        (None, Some(s)) => c.check(
            "customer_id",
            Uuid::parse_str(&s).map_err(|_| "must be a UUID".to_string()),
        ),
    };
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
mod tests {
    use super::*;
    use serde_json::json;

    const CUSTOMER: Uuid = Uuid::from_u128(0xC0FFEE);

    fn ctx(header: Option<&str>) -> Accept<'_> {
        Accept {
            default_customer: CUSTOMER,
            inbound_owner: None,
            idempotency_header: header,
            endpoint: "/api/test",
            now: "2024-12-24T10:00:00Z".parse().unwrap(),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn fields(err: ValidationErrors) -> Vec<String> {
        err.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn send_sms_spec_example() {
        let req: SendSms = parse(json!({
            "from": "+12016661234", "to": "+1 (804) 555-1234", "type": "sms",
            "body": "text message", "attachments": null, "timestamp": "2024-11-01T14:00:00Z",
            "unknown": "ignored"
        }));
        let e = req.into_event(&ctx(None)).unwrap();
        assert_eq!(e.schema_version, 1);
        assert_eq!(
            (e.direction, e.channel),
            (Direction::Outbound, Channel::Sms)
        );
        assert_eq!(
            (e.from.as_str(), e.to.as_str()),
            ("+12016661234", "+18045551234")
        );
        assert_eq!(e.body, "text message");
        assert!(e.attachments.is_empty() && e.subject.is_none() && e.metadata.is_none());
        assert_eq!(e.sent_at.to_rfc3339(), "2024-11-01T14:00:00+00:00");
        assert_eq!(e.customer_id, CUSTOMER);
        assert_eq!(e.provider_message_id, None);
        assert_eq!(e.accepted_at, ctx(None).now);
        assert_eq!(e.attempt, 0);
        let expected = IdempotencyKey::for_outbound(
            "sms",
            CUSTOMER,
            "+12016661234",
            "+18045551234",
            e.sent_at,
            &e.body_sha256(),
        );
        assert_eq!(e.idempotency_key, expected);
        assert_eq!(e.revalidate(), Ok(()));
    }

    #[test]
    fn send_mms_with_customer_metadata_and_offset_timestamp() {
        let cust = Uuid::from_u128(42);
        let req: SendSms = parse(json!({
            "from": "+12016661234", "to": "+18045551234", "type": "mms", "body": "pic",
            "attachments": ["https://example.com/a.png"], "timestamp": "2024-11-01T16:00:00+02:00",
            "customer_id": cust.to_string(), "metadata": {"campaign": "x"}
        }));
        let e = req.into_event(&ctx(None)).unwrap();
        assert_eq!(e.channel, Channel::Mms);
        assert_eq!(e.customer_id, cust);
        assert_eq!(
            e.sent_at,
            "2024-11-01T14:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(e.attachments, ["https://example.com/a.png"]);
        assert_eq!(e.metadata, Some(json!({"campaign": "x"})));
    }

    #[test]
    fn absent_timestamp_is_now_and_null_metadata_is_none() {
        let req: SendSms = parse(json!({
            "from": "+12016661234", "to": "+18045551234", "type": "sms", "body": "hi",
            "metadata": null
        }));
        let e = req.into_event(&ctx(None)).unwrap();
        assert_eq!(e.sent_at, ctx(None).now);
        assert_eq!(e.metadata, None);
    }

    #[test]
    fn send_sms_reports_every_bad_field() {
        let req: SendSms = parse(json!({
            "from": "12016661234", "type": "fax", "body": "   ",
            "attachments": ["nope"], "timestamp": "yesterday",
            "customer_id": "not-a-uuid", "metadata": [1, 2]
        }));
        let err = req.into_event(&ctx(Some(""))).unwrap_err();
        assert_eq!(
            fields(err),
            [
                "from",
                "to",
                "type",
                "body",
                "attachments[0]",
                "timestamp",
                "customer_id",
                "metadata",
                "Idempotency-Key"
            ]
        );
        let err = SendSms::default().into_event(&ctx(None)).unwrap_err();
        assert_eq!(fields(err.clone()), ["from", "to", "type", "body"]);
        assert!(err.0.iter().all(|e| e.message == "is required"));
    }

    #[test]
    fn sms_type_decides_attachment_rules() {
        let req = |t: &str, att: serde_json::Value| -> SendSms {
            parse(
                json!({"from": "+12016661234", "to": "+18045551234", "type": t,
                         "body": "b", "attachments": att}),
            )
        };
        let one = json!(["https://example.com/a.png"]);
        let err = req("sms", one.clone()).into_event(&ctx(None)).unwrap_err();
        assert_eq!(fields(err), ["attachments"]);
        let err = req("mms", json!([])).into_event(&ctx(None)).unwrap_err();
        assert_eq!(fields(err), ["attachments"]);
        assert!(req("mms", one).into_event(&ctx(None)).is_ok());
        assert!(req("sms", json!([])).into_event(&ctx(None)).is_ok());
    }

    #[test]
    fn send_email_spec_example() {
        let req: SendEmail = parse(json!({
            "from": "User@UseHatchApp.com", "to": "contact@gmail.com", "subject": "optional",
            "body": "<p>html allowed</p>", "attachments": ["https://example.com/a.pdf"],
            "timestamp": "2024-11-01T14:00:00Z"
        }));
        let e = req.into_event(&ctx(None)).unwrap();
        assert_eq!(
            (e.direction, e.channel),
            (Direction::Outbound, Channel::Email)
        );
        assert_eq!(e.from, "user@usehatchapp.com");
        assert_eq!(e.to, "contact@gmail.com");
        assert_eq!(e.subject.as_deref(), Some("optional"));
        assert_eq!(e.body, "<p>html allowed</p>");
        assert_eq!(e.attachments, ["https://example.com/a.pdf"]);
        assert_eq!(e.revalidate(), Ok(()));
    }

    #[test]
    fn send_email_reports_every_bad_field() {
        let req: SendEmail = parse(json!({
            "from": "not-an-email", "to": "a@b", "subject": "x".repeat(999),
            "attachments": ["ftp://x.com/a", "https://ok.com/a"]
        }));
        let err = req.into_event(&ctx(None)).unwrap_err();
        assert_eq!(
            fields(err),
            ["from", "to", "subject", "body", "attachments[0]"]
        );
    }

    #[test]
    fn sms_webhook_spec_example() {
        let req: SmsWebhook = parse(json!({
            "from": "+18045551234", "to": "+12016661234", "type": "sms",
            "messaging_provider_id": "message-1", "body": "text message",
            "attachments": null, "timestamp": "2024-11-01T14:00:00Z"
        }));
        let e = req.into_event(&ctx(None)).unwrap();
        assert_eq!((e.direction, e.channel), (Direction::Inbound, Channel::Sms));
        assert_eq!(e.provider_message_id.as_deref(), Some("message-1"));
        assert_eq!(
            e.idempotency_key,
            IdempotencyKey::for_inbound("sms", CUSTOMER, "message-1")
        );
        assert_eq!(
            e.participants(),
            ("+12016661234".into(), "+18045551234".into())
        );
        assert_eq!(e.revalidate(), Ok(()));
    }

    #[test]
    fn sms_webhook_reports_every_bad_field() {
        let req: SmsWebhook = parse(json!({
            "from": "+1", "to": "+18045551234", "type": "mms", "body": "b",
            "messaging_provider_id": "x".repeat(256)
        }));
        let err = req.into_event(&ctx(None)).unwrap_err();
        assert_eq!(
            fields(err),
            ["from", "messaging_provider_id", "attachments"]
        );
        let err = SmsWebhook::default().into_event(&ctx(None)).unwrap_err();
        assert_eq!(
            fields(err),
            ["from", "to", "type", "messaging_provider_id", "body"]
        );
    }

    #[test]
    fn email_webhook_spec_example() {
        let req: EmailWebhook = parse(json!({
            "from": "contact@gmail.com", "to": "user@usehatchapp.com",
            "xillio_id": "message-2", "body": "<p>reply</p>", "attachments": [],
            "timestamp": "2024-11-01T14:00:00Z"
        }));
        let e = req.into_event(&ctx(None)).unwrap();
        assert_eq!(
            (e.direction, e.channel),
            (Direction::Inbound, Channel::Email)
        );
        assert_eq!(e.provider_message_id.as_deref(), Some("message-2"));
        assert_eq!(
            e.idempotency_key,
            IdempotencyKey::for_inbound("email", CUSTOMER, "message-2")
        );
        assert_eq!(e.revalidate(), Ok(()));
    }

    #[test]
    fn email_webhook_reports_every_bad_field() {
        let req: EmailWebhook = parse(json!({
            "from": "contact@gmail.com", "to": "+12016661234", "xillio_id": " ",
            "body": "", "customer_id": ""
        }));
        let err = req.into_event(&ctx(None)).unwrap_err();
        assert_eq!(fields(err), ["to", "xillio_id", "body", "customer_id"]);
    }

    #[test]
    fn header_key_wins_and_is_scoped_to_customer() {
        let req: SendSms = parse(json!({
            "from": "+12016661234", "to": "+18045551234", "type": "sms", "body": "hi"
        }));
        let e = req.clone().into_event(&ctx(Some("client-key-1"))).unwrap();
        let expected = IdempotencyKey::from_header("client-key-1", "/api/test", CUSTOMER);
        assert_eq!(Ok(e.idempotency_key), expected);
        // Without a header the same request derives the same key twice.
        let a = req.clone().into_event(&ctx(None)).unwrap();
        let b = req.into_event(&ctx(None)).unwrap();
        assert_eq!(a.idempotency_key, b.idempotency_key);
        assert_ne!(a.event_id, b.event_id);
    }
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;
    use serde_json::json;

    fn event(v: serde_json::Value, now: &str) -> Event {
        let ctx = Accept {
            default_customer: Uuid::from_u128(1),
            inbound_owner: None,
            idempotency_header: Some("k"),
            endpoint: "/api/messages/email",
            now: now.parse().unwrap(),
        };
        serde_json::from_value::<SendEmail>(v)
            .unwrap()
            .into_event(&ctx)
            .unwrap()
    }

    #[test]
    fn the_fingerprint_is_the_request_as_the_client_meant_it() {
        let base = json!({"from": "a@b.com", "to": "c@d.com", "body": "x", "subject": "s",
                          "metadata": {"b": 1, "a": [1, 2]}});
        let fp = |v: serde_json::Value, now: &str| event(v, now).request_fingerprint.unwrap();
        let t = "2024-11-01T14:00:00Z";
        // No timestamp: the server's clock is not part of the request.
        assert_eq!(
            fp(base.clone(), t),
            fp(base.clone(), "2025-01-01T00:00:00Z")
        );
        // Normalization: case of addresses, key order in metadata.
        let mut same = base.clone();
        same["from"] = json!("A@B.com");
        same["metadata"] = json!({"a": [1, 2], "b": 1});
        assert_eq!(fp(base.clone(), t), fp(same, t));
        // A re-rendered timestamp is the same request; another second is not.
        let mut at = base.clone();
        at["timestamp"] = json!("2024-11-01T14:00:00Z");
        let mut rerendered = base.clone();
        rerendered["timestamp"] = json!("2024-11-01T16:00:00.250+02:00");
        assert_eq!(fp(at.clone(), t), fp(rerendered, t));
        assert_ne!(fp(at, t), fp(base.clone(), t));
        for (field, value) in [
            ("body", json!("y")),
            ("subject", json!("")),
            ("subject", json!(null)),
            ("to", json!("e@f.com")),
            ("metadata", json!({"b": 2, "a": [1, 2]})),
            ("attachments", json!(["https://example.com/a.pdf"])),
            ("timestamp", json!("2024-11-01T14:00:01Z")),
        ] {
            let mut other = base.clone();
            other[field] = value;
            assert_ne!(fp(base.clone(), t), fp(other, t), "{field}");
        }
    }
}
