//! The four request bodies as JSON Schema: the rules `domain::request` applies, written
//! so that a body is valid here exactly when the server accepts it (as far as JSON Schema
//! can say; what it cannot say is in the descriptions). Every field is optional for serde,
//! so that all missing and invalid fields are reported at once; `required` lists the
//! fields whose absence (or null) is a 400.
//!
//! The patterns are ECMA-262 and mean the same in Python's and Rust's regex engines: no
//! `\s`, `\d` or `\w` (their Unicode readings differ), whitespace spelled as Rust's
//! `char::is_whitespace`, which the server trims with.

use serde_json::{json, Map, Value};

use crate::domain::event::MAX_PROVIDER_ID_CHARS;
use crate::domain::message::{
    MAX_ATTACHMENTS, MAX_EMAIL_BODY_BYTES, MAX_SMS_BODY_CHARS, MAX_SUBJECT_CHARS, MAX_URL_CHARS,
};
use crate::domain::text::{MAX_METADATA_BYTES, MAX_METADATA_DEPTH, MAX_METADATA_KEYS};

/// `char::is_whitespace`, as a character-class body.
const WS: &str = r"\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// Whitespace or a control character (`char::is_control`), as a character-class body.
const WS_OR_CONTROL: &str = r"\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// Control characters other than tab, line feed and carriage return (`text::check_text`).
const CONTROL: &str = r"\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F";

/// Adds the request body schemas to `components.schemas`.
pub fn add(doc: &mut Value) {
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .expect("the document has component schemas");
    for (name, schema) in schemas_by_name() {
        schemas.insert(name, schema);
    }
}

fn schemas_by_name() -> Vec<(String, Value)> {
    let mut all = vec![
        ("SendEmail".to_string(), send_email()),
        ("EmailWebhook".to_string(), email_webhook()),
    ];
    all.extend(send_sms());
    all.extend(sms_webhook());
    all.extend(metadata_levels());
    all.push(("TwilioInbound".to_string(), twilio_inbound()));
    all.push(("TwilioStatus".to_string(), twilio_status()));
    all
}

fn phone() -> Value {
    // Trimmed, then spaces, dashes, dots and parentheses removed: E.164 must remain.
    let f = "[ .()-]*";
    json!({
        "type": "string",
        "description": "A phone number: E.164 (`+` then 8 to 15 digits, the first not 0) once spaces, dashes, dots and parentheses are removed.",
        "pattern": format!("^[{WS}]*{f}\\+{f}[1-9](?:{f}[0-9]){{7,14}}{f}[{WS}]*$"),
        "examples": ["+12016661234", "+1 (201) 666-1234"],
    })
}

fn email() -> Value {
    let atext = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
    let label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    // The lengths are separate patterns (all must match): a regex without lookahead
    // cannot bound the local part's length and check its dots at once.
    json!({
        "type": "string",
        "description": "An email address (`local@domain`, matched in lower case): at most 254 characters, the local part at most 64; the domain has a dot and labels of letters, digits and inner hyphens.",
        "allOf": [
            {"pattern": format!("^[{WS}]*{atext}(?:\\.{atext})*@{label}(?:\\.{label})+[{WS}]*$")},
            {"pattern": format!("^[{WS}]*[^@{WS_OR_CONTROL}]{{1,64}}@")},
            {"pattern": format!("^[{WS}]*[^{WS_OR_CONTROL}]{{1,254}}[{WS}]*$")},
        ],
        "examples": ["user@usehatchapp.com"],
    })
}

/// Not blank, no control characters except tab, line feed and carriage return.
fn text(max_chars: usize, description: &str) -> Value {
    json!({
        "type": "string",
        "description": description,
        "pattern": format!("^[^{CONTROL}]*[^{WS_OR_CONTROL}][^{CONTROL}]*$"),
        "maxLength": max_chars,
    })
}

fn url() -> Value {
    let not_ws = format!("[^{WS_OR_CONTROL}]");
    let userinfo = format!("[^/?#{WS_OR_CONTROL}]*@");
    let port =
        "0*(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";
    let name = format!("[A-Za-z0-9_-]+(?:\\.[A-Za-z0-9_-]+)*\\.?(?::{port})?");
    let after_v6 = format!("[^:/?#@{WS_OR_CONTROL}][^/?#@{WS_OR_CONTROL}]*");
    // An IPv6 address as RFC 4291 writes it (what the server parses; embedded IPv4 forms
    // aside): a looser pattern let generators send hosts like `[3dE]`.
    let h = "[0-9A-Fa-f]{1,4}";
    let ipv6 = [
        format!("(?:{h}:){{7}}{h}"),
        format!("(?:{h}:){{1,7}}:"),
        format!("(?:{h}:){{1,6}}:{h}"),
        format!("(?:{h}:){{1,5}}(?::{h}){{1,2}}"),
        format!("(?:{h}:){{1,4}}(?::{h}){{1,3}}"),
        format!("(?:{h}:){{1,3}}(?::{h}){{1,4}}"),
        format!("(?:{h}:){{1,2}}(?::{h}){{1,5}}"),
        format!("{h}:(?::{h}){{1,6}}"),
        format!(":(?:(?::{h}){{1,7}}|:)"),
    ]
    .join("|");
    let v6 = format!("\\[(?:{ipv6})\\](?::{port}|{after_v6})?");
    json!({
        "type": "string",
        "description": "An absolute http or https URL.",
        "pattern": format!("^[hH][tT][tT][pP][sS]?://(?:{userinfo})?(?:{v6}|{name})(?:[/?#]{not_ws}*)?$"),
        "maxLength": MAX_URL_CHARS,
        "examples": ["https://example.com/a.png"],
    })
}

fn timestamp() -> Value {
    json!({
        "type": ["string", "null"],
        "format": "date-time",
        "description": "When the message was sent (RFC 3339, stored in UTC); the server's time when absent or null.",
        "examples": ["2024-11-01T14:00:00Z"],
    })
}

fn customer_id() -> Value {
    // The forms `Uuid::parse_str` reads: hyphenated, simple, braced, URN.
    let h = "[0-9a-fA-F]";
    let hyphenated = format!("{h}{{8}}-{h}{{4}}-{h}{{4}}-{h}{{4}}-{h}{{12}}");
    json!({
        "type": ["string", "null"],
        "pattern": format!("^(?:{hyphenated}|{h}{{32}}|\\{{{hyphenated}\\}}|urn:uuid:{hyphenated})$"),
        "examples": ["00000000-0000-0000-0000-000000000001"],
        "description": "A UUID (hyphenated, simple, braced or URN): the customer the message belongs to: an existing customer (400 otherwise) that the key may act for (403 otherwise). Default: the key's customer.",
    })
}

fn metadata() -> Value {
    json!({
        "type": ["object", "null"],
        "description": format!("Kept with the message. At most {MAX_METADATA_KEYS} keys in all (nested objects included), {MAX_METADATA_DEPTH} levels deep (the object is level 1) and {MAX_METADATA_BYTES} bytes as compact JSON; no control characters (other than tab, line feed and carriage return) in keys or strings."),
        "maxProperties": MAX_METADATA_KEYS,
        "propertyNames": no_control(),
        "additionalProperties": {"$ref": "#/components/schemas/MetadataValue2"},
    })
}

fn no_control() -> Value {
    json!({"type": "string", "pattern": text_pattern()})
}

/// `text::check_text` as a pattern: no control character but tab, line feed and carriage
/// return.
pub(super) fn text_pattern() -> String {
    format!("^[^{CONTROL}]*$")
}

/// `MetadataValue<n>`: a value at nesting level n; containers stop at the deepest level.
fn metadata_levels() -> Vec<(String, Value)> {
    let mut levels = Vec::new();
    for level in 2..=MAX_METADATA_DEPTH + 1 {
        let name = format!("MetadataValue{level}");
        let mut kinds = vec![
            no_control(),
            // Beyond f64 the JSON parser refuses the number, or rounds it to ±f64::MAX,
            // which is therefore refused too (see `check_metadata`).
            json!({"type": "number", "exclusiveMinimum": -f64::MAX, "exclusiveMaximum": f64::MAX}),
            json!({"type": "boolean"}),
            json!({"type": "null"}),
        ];
        if level <= MAX_METADATA_DEPTH {
            let next = json!({"$ref": format!("#/components/schemas/MetadataValue{}", level + 1)});
            kinds.push(json!({"type": "array", "items": next.clone()}));
            kinds.push(json!({
                "type": "object",
                "maxProperties": MAX_METADATA_KEYS,
                "propertyNames": no_control(),
                "additionalProperties": next,
            }));
        }
        levels.push((name, json!({ "anyOf": kinds })));
    }
    levels
}

fn object(description: &str, properties: Vec<(&str, Value)>, required: &[&str]) -> Value {
    let properties: Map<String, Value> = properties
        .into_iter()
        .map(|(name, schema)| (name.to_string(), schema))
        .collect();
    json!({
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
    })
}

fn sms_body() -> Value {
    text(
        MAX_SMS_BODY_CHARS,
        "The text: not blank, at most 1600 characters, no control characters other than tab, line feed and carriage return.",
    )
}

fn email_body() -> Value {
    // maxLength counts characters; the limit is on UTF-8 bytes.
    text(
        MAX_EMAIL_BODY_BYTES,
        "The body (HTML allowed): not blank, at most 256 KiB as UTF-8, no control characters other than tab, line feed and carriage return.",
    )
}

fn subject() -> Value {
    json!({
        "type": ["string", "null"],
        "description": "At most 998 characters; no line breaks or other control characters (tab allowed).",
        "pattern": r"^[^\x00-\x08\x0A-\x1F\x7F-\x9F]*$",
        "maxLength": MAX_SUBJECT_CHARS,
    })
}

fn provider_id(description: &str) -> Value {
    text(MAX_PROVIDER_ID_CHARS, description)
}

/// `SendSms` and `SmsWebhook`: one of two objects told apart by `type` (a discriminator,
/// so that generated clients get one class per kind and exactly one branch matches):
/// `sms` without attachments, `mms` with 1 to 10. Returns the union and its two branches.
fn sms_kinds(
    names: [&str; 3],
    description: &str,
    properties: Vec<(&'static str, Value)>,
    required: &[&str],
) -> Vec<(String, Value)> {
    let [union, sms, mms] = names.map(String::from);
    let branch = |kind: &str, attachments: Value, extra_required: &[&str]| {
        let mut properties = properties.clone();
        properties.push((
            "type",
            json!({"type": "string", "const": kind, "description": "`sms` takes no attachments, `mms` 1 to 10."}),
        ));
        properties.push(("attachments", attachments));
        let mut required = required.to_vec();
        required.push("type");
        required.extend_from_slice(extra_required);
        let attached = match kind {
            "sms" => "without attachments",
            _ => "with 1 to 10 attachments",
        };
        object(
            &format!("{description} `type: \"{kind}\"`: {attached}."),
            properties,
            &required,
        )
    };
    let text = branch(
        "sms",
        json!({"type": ["array", "null"], "maxItems": 0, "items": url(), "description": "None for sms: absent, null or []."}),
        &[],
    );
    let media = branch(
        "mms",
        json!({"type": "array", "minItems": 1, "maxItems": MAX_ATTACHMENTS, "items": url(), "description": "Attachment URLs, 1 to 10."}),
        &["attachments"],
    );
    let reference = |name: &str| format!("#/components/schemas/{name}");
    let schema = json!({
        "description": description,
        "oneOf": [{"$ref": reference(&sms)}, {"$ref": reference(&mms)}],
        "discriminator": {
            "propertyName": "type",
            "mapping": {"sms": reference(&sms), "mms": reference(&mms)},
        },
    });
    vec![(union, schema), (sms, text), (mms, media)]
}

fn send_sms() -> Vec<(String, Value)> {
    sms_kinds(
        ["SendSms", "SendSmsText", "SendMms"],
        "An SMS or MMS to send.",
        vec![
            ("from", phone()),
            ("to", phone()),
            ("body", sms_body()),
            ("timestamp", timestamp()),
            ("customer_id", customer_id()),
            ("metadata", metadata()),
        ],
        &["from", "to", "body"],
    )
}

fn sms_webhook() -> Vec<(String, Value)> {
    sms_kinds(
        ["SmsWebhook", "SmsWebhookText", "MmsWebhook"],
        "An SMS or MMS received by the provider.",
        vec![
            ("from", phone()),
            ("to", phone()),
            (
                "messaging_provider_id",
                provider_id("The provider's id for the message: the same id twice is one message. Not blank, at most 255 characters."),
            ),
            ("body", sms_body()),
            ("timestamp", timestamp()),
            ("customer_id", customer_id()),
            ("metadata", metadata()),
        ],
        &["from", "to", "messaging_provider_id", "body"],
    )
}

fn email_attachments() -> Value {
    json!({"type": ["array", "null"], "maxItems": MAX_ATTACHMENTS, "items": url()})
}

fn send_email() -> Value {
    object(
        "An email to send.",
        vec![
            ("from", email()),
            ("to", email()),
            ("subject", subject()),
            ("body", email_body()),
            ("attachments", email_attachments()),
            ("timestamp", timestamp()),
            ("customer_id", customer_id()),
            ("metadata", metadata()),
        ],
        &["from", "to", "body"],
    )
}

fn email_webhook() -> Value {
    object(
        "An email received by the provider.",
        vec![
            ("from", email()),
            ("to", email()),
            ("subject", subject()),
            (
                "xillio_id",
                provider_id("The provider's id for the email: the same id twice is one message. Not blank, at most 255 characters."),
            ),
            ("body", email_body()),
            ("attachments", email_attachments()),
            ("timestamp", timestamp()),
            ("customer_id", customer_id()),
            ("metadata", metadata()),
        ],
        &["from", "to", "xillio_id", "body"],
    )
}

/// Twilio's inbound message parameters (only those the server reads; Twilio sends more,
/// which are signed and otherwise ignored). Form values are strings.
fn twilio_inbound() -> Value {
    let mut properties = vec![
        (
            "MessageSid".to_string(),
            provider_id(
                "Twilio's id of the message (`SM…`/`MM…`): the same id twice is one message.",
            ),
        ),
        ("From".to_string(), phone()),
        ("To".to_string(), phone()),
        ("Body".to_string(), sms_body()),
        (
            "NumMedia".to_string(),
            json!({"type": "string", "examples": ["0", "2"], "description": "How many `MediaUrl{n}` follow (informational: the `MediaUrl{n}` present are read)."}),
        ),
    ];
    for n in 0..MAX_ATTACHMENTS {
        properties.push((format!("MediaUrl{n}"), url()));
    }
    let mut schema = json!({
        "type": "object",
        "description": "An inbound SMS or MMS as Twilio posts it; one or more `MediaUrl{n}` make it an MMS.",
        "properties": properties.into_iter().collect::<Map<String, Value>>(),
        "required": ["MessageSid", "From", "To", "Body"],
    });
    schema["additionalProperties"] = json!({"type": "string"});
    schema
}

/// What Twilio posts to a message's `StatusCallback`.
fn twilio_status() -> Value {
    let mut schema = object(
        "A delivery receipt as Twilio posts it.",
        vec![
            (
                "MessageSid",
                provider_id("The `sid` Twilio answered when the message was sent: its `provider_message_id`."),
            ),
            (
                "MessageStatus",
                json!({"type": "string", "minLength": 1, "examples": ["delivered", "undelivered", "failed", "sent"],
                       "description": "`delivered`, `undelivered` and `failed` are recorded; any other (queued, sending, sent, …) changes nothing."}),
            ),
            (
                "ErrorCode",
                json!({"type": "string", "description": "With `undelivered` or `failed`: Twilio's error code (e.g. 30003); its first 16 characters are kept."}),
            ),
        ],
        &["MessageSid", "MessageStatus"],
    );
    schema["additionalProperties"] = json!({"type": "string"});
    schema
}
