//! The normalized event (SPEC §4): what handlers enqueue, workers consume and the
//! dead-letter queue keeps. Fields are plain types because this is a wire format;
//! `revalidate` re-applies the domain rules to whatever came off the wire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::address::Address;
use super::error::{Collector, ValidationErrors};
use super::idempotency::{is_sha256_hex, sha256_hex, IdempotencyKey};
use super::message::{Attachments, Channel, Direction, MessageBody, Subject};
use super::text::{check_metadata, check_text};

pub const SCHEMA_VERSION: u32 = 1;

/// Longest provider message id accepted from a webhook.
pub const MAX_PROVIDER_ID_CHARS: usize = 255;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema_version: u32,
    pub event_id: Uuid,
    pub direction: Direction,
    pub channel: Channel,
    pub customer_id: Uuid,
    pub from: String,
    pub to: String,
    pub subject: Option<String>,
    pub body: String,
    pub attachments: Vec<String>,
    pub sent_at: DateTime<Utc>,
    pub idempotency_key: IdempotencyKey,
    pub provider_message_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub accepted_at: DateTime<Utc>,
    pub attempt: u32,
    /// Hash of the request as the client meant it (see `idempotency::request_fingerprint`),
    /// stored with the message: the same key with another fingerprint is a conflict, not a
    /// duplicate. Optional so that events written before it existed still decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_fingerprint: Option<String>,
    /// W3C trace context of the span that enqueued the event, so the worker (possibly in
    /// another process) continues the request's trace. Absent when tracing is off, and in
    /// events written before it existed; never validated (a bad value only starts a new trace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Roughly the bytes a JSON value holds: its strings and keys, 8 per other node. Walks the
/// value instead of serializing it, since queues call this for every event they take and
/// finish.
fn json_bytes(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::String(s) => s.len(),
        Value::Array(items) => 8 + items.iter().map(json_bytes).sum::<usize>(),
        Value::Object(map) => {
            8 + map
                .iter()
                .map(|(k, v)| k.len() + json_bytes(v))
                .sum::<usize>()
        }
        _ => 8,
    }
}

impl Event {
    /// Attempts made once the current one has failed (`attempt` counts those before it).
    pub fn attempts_after_failure(&self) -> u32 {
        self.attempt.saturating_add(1)
    }

    /// Roughly the memory this event holds: its own size and its strings' bytes. Queues
    /// bound what they hold with it.
    pub fn approx_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        std::mem::size_of::<Event>()
            + self.from.len()
            + self.to.len()
            + text(&self.subject)
            + self.body.len()
            + self.attachments.iter().map(String::len).sum::<usize>()
            + self.idempotency_key.as_str().len()
            + text(&self.provider_message_id)
            + self.metadata.as_ref().map_or(0, json_bytes)
            + text(&self.request_fingerprint)
            + text(&self.traceparent)
    }

    /// Re-validates an event read from a queue: unknown schema_version or any field that
    /// would not pass the HTTP validation -> Err (a permanent failure).
    pub fn revalidate(&self) -> Result<(), ValidationErrors> {
        if self.schema_version != SCHEMA_VERSION {
            // The other fields may mean something else in another version: stop here.
            return Err(ValidationErrors::single(
                "schema_version",
                format!(
                    "unsupported schema version {} (expected {SCHEMA_VERSION})",
                    self.schema_version
                ),
            ));
        }
        let mut c = Collector::default();
        for (field, value) in [("from", &self.from), ("to", &self.to)] {
            match Address::parse(value, self.channel) {
                Ok(a) if a.as_str() == value => {}
                Ok(_) => c.push(field, "is not in normalized form"),
                Err(m) => c.push(field, m),
            }
        }
        match (&self.subject, self.channel) {
            (None, _) => {}
            (Some(s), Channel::Email) => {
                c.check("subject", Subject::parse(s));
            }
            (Some(_), _) => c.push("subject", "must be null for sms and mms"),
        }
        c.check("body", MessageBody::parse(&self.body, self.channel));
        if let Err(errs) = Attachments::parse(Some(self.attachments.clone()), self.channel) {
            c.extend(errs);
        }
        if !self.idempotency_key.is_well_formed() {
            c.push("idempotency_key", "must be 64 lower-case hex digits");
        }
        if let Some(fingerprint) = &self.request_fingerprint {
            if !is_sha256_hex(fingerprint) {
                c.push("request_fingerprint", "must be 64 lower-case hex digits");
            }
        }
        match (&self.provider_message_id, self.direction) {
            (Some(id), _) => {
                c.check("provider_message_id", check_provider_id(id));
            }
            (None, Direction::Inbound) => c.push("provider_message_id", "is required"),
            (None, Direction::Outbound) => {}
        }
        if let Some(m) = &self.metadata {
            if let Err(e) = check_metadata(m) {
                c.extend(vec![e]);
            }
        }
        c.into_result()
    }

    pub fn body_sha256(&self) -> String {
        sha256_hex(self.body.as_bytes())
    }

    /// participants sorted (a <= b), normalized; used as the conversation key
    pub fn participants(&self) -> (String, String) {
        if self.from <= self.to {
            (self.from.clone(), self.to.clone())
        } else {
            (self.to.clone(), self.from.clone())
        }
    }
}

/// A provider's message id: 1..=255 characters, not blank, no control characters.
pub(crate) fn check_provider_id(id: &str) -> Result<(), String> {
    check_text(id)?;
    if id.trim().is_empty() {
        Err("must not be empty".into())
    } else if id.chars().count() > MAX_PROVIDER_ID_CHARS {
        Err(format!(
            "must be at most {MAX_PROVIDER_ID_CHARS} characters"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Event {
        let sent_at = "2024-11-01T14:00:00Z".parse().unwrap();
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: Uuid::from_u128(7),
            direction: Direction::Outbound,
            channel: Channel::Sms,
            customer_id: Uuid::from_u128(1),
            from: "+18045551234".into(),
            to: "+12016661234".into(),
            subject: None,
            body: "text message".into(),
            attachments: vec![],
            sent_at,
            idempotency_key: IdempotencyKey::for_inbound("sms", Uuid::nil(), "x"),
            provider_message_id: None,
            metadata: None,
            accepted_at: sent_at,
            attempt: 0,
            request_fingerprint: None,
            traceparent: None,
        }
    }

    #[test]
    fn valid_event_passes_and_roundtrips_as_spec_json() {
        let e = sample();
        assert_eq!(e.revalidate(), Ok(()));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["direction"], "outbound");
        assert_eq!(v["channel"], "sms");
        assert_eq!(v["sent_at"], "2024-11-01T14:00:00Z");
        assert_eq!(v["subject"], json!(null));
        assert_eq!(v["idempotency_key"], e.idempotency_key.as_str());
        assert!(
            v.get("traceparent").is_none(),
            "untraced events keep the v1 shape"
        );
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
        let traced = Event {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            ..sample()
        };
        let v = serde_json::to_value(&traced).unwrap();
        assert_eq!(v["traceparent"], traced.traceparent.clone().unwrap());
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), traced);
    }

    #[test]
    fn unknown_schema_version_is_rejected() {
        let e = Event {
            schema_version: 2,
            ..sample()
        };
        let errs = e.revalidate().unwrap_err();
        assert_eq!(errs.0[0].field, "schema_version");
    }

    #[test]
    fn tampered_fields_are_rejected() {
        let not_normalized = Event {
            from: "+1 804 555 1234".into(),
            ..sample()
        };
        assert_eq!(not_normalized.revalidate().unwrap_err().0[0].field, "from");
        let invalid = Event {
            from: "not-a-phone".into(),
            body: " ".into(),
            attachments: vec!["https://example.com/a.png".into()],
            metadata: Some(json!([1])),
            subject: Some("hi".into()),
            ..sample()
        };
        let fields: Vec<_> = invalid
            .revalidate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            ["from", "subject", "body", "attachments", "metadata"]
        );
        let bad_key = Event {
            idempotency_key: IdempotencyKey::from_stored("raw-client-key".into()),
            ..sample()
        };
        assert!(bad_key.revalidate().is_err());
        let inbound_without_id = Event {
            direction: Direction::Inbound,
            ..sample()
        };
        assert!(inbound_without_id.revalidate().is_err());
        let bad_fingerprint = Event {
            request_fingerprint: Some("x".into()),
            ..sample()
        };
        assert!(bad_fingerprint.revalidate().is_err());
    }

    #[test]
    fn control_characters_are_a_permanent_failure_in_every_text_field() {
        let inbound = || Event {
            direction: Direction::Inbound,
            channel: Channel::Email,
            from: "contact@gmail.com".into(),
            to: "user@usehatchapp.com".into(),
            provider_message_id: Some("p-1".into()),
            ..sample()
        };
        assert_eq!(inbound().revalidate(), Ok(()));
        let cases: Vec<(&str, Event)> = vec![
            (
                "body",
                Event {
                    body: "a\u{0}b".into(),
                    ..inbound()
                },
            ),
            (
                "subject",
                Event {
                    subject: Some("s\u{0}".into()),
                    ..inbound()
                },
            ),
            (
                "from",
                Event {
                    from: "c\u{0}@gmail.com".into(),
                    ..inbound()
                },
            ),
            (
                "provider_message_id",
                Event {
                    provider_message_id: Some("p\u{0}".into()),
                    ..inbound()
                },
            ),
            (
                "attachments[0]",
                Event {
                    attachments: vec!["https://e.com/\u{0}".into()],
                    ..inbound()
                },
            ),
            (
                "metadata.k",
                Event {
                    metadata: Some(json!({"k": "v\u{0}"})),
                    ..inbound()
                },
            ),
        ];
        for (field, event) in cases {
            let errors = event.revalidate().unwrap_err();
            assert!(
                errors.0.iter().any(|e| e.field == field),
                "{field}: {errors:?}"
            );
        }
    }

    #[test]
    fn events_without_a_fingerprint_still_decode() {
        let mut v = serde_json::to_value(sample()).unwrap();
        assert!(
            v.get("request_fingerprint").is_none(),
            "absent, not null, when unset"
        );
        v.as_object_mut().unwrap().remove("request_fingerprint");
        let e: Event = serde_json::from_value(v).unwrap();
        assert_eq!(e.request_fingerprint, None);
    }

    #[test]
    fn email_addresses_must_be_lower_case() {
        let e = Event {
            channel: Channel::Email,
            from: "User@Example.com".into(),
            to: "contact@gmail.com".into(),
            ..sample()
        };
        assert_eq!(e.revalidate().unwrap_err().0[0].field, "from");
    }

    #[test]
    fn participants_are_sorted_and_body_hashed() {
        let e = sample();
        let p = ("+12016661234".to_string(), "+18045551234".to_string());
        assert_eq!(e.participants(), p);
        let swapped = Event {
            from: e.to.clone(),
            to: e.from.clone(),
            ..sample()
        };
        assert_eq!(swapped.participants(), p);
        assert_eq!(
            e.body_sha256(),
            MessageBody::parse("text message", Channel::Sms)
                .unwrap()
                .sha256_hex()
        );
    }
}
