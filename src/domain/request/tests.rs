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

/// The fields `req` is refused for, in the order they are reported.
fn refused(req: impl IntoEvent) -> Vec<String> {
    fields(req.into_event(&ctx(None)).unwrap_err())
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
    assert_eq!(refused(req("sms", one.clone())), ["attachments"]);
    assert_eq!(refused(req("mms", json!([]))), ["attachments"]);
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
    assert_eq!(
        refused(req),
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
    assert_eq!(
        refused(req),
        ["from", "messaging_provider_id", "attachments"]
    );
    assert_eq!(
        refused(SmsWebhook::default()),
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
    assert_eq!(refused(req), ["to", "xillio_id", "body", "customer_id"]);
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

mod fingerprint_tests {
    use super::super::*;
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
