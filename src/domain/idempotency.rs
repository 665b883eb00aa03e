//! Idempotency keys. Every key is a hex SHA-256, so all keys have one shape and a
//! client's raw header value never reaches storage or logs as such.

use std::fmt;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Domain tags, one per kind of key (and one for request fingerprints), so that no key of one
/// kind can equal a key of another whatever the field values.
const TAG_HEADER: &[u8] = b"messaging-server/idempotency/header/v2";
const TAG_OUTBOUND: &[u8] = b"messaging-server/idempotency/outbound/v2";
const TAG_INBOUND: &[u8] = b"messaging-server/idempotency/inbound/v2";
const TAG_REQUEST: &[u8] = b"messaging-server/request-fingerprint/v1";

/// Hex SHA-256 of `tag` and `fields`, each prefixed by its length (8 bytes, big-endian): an
/// unambiguous encoding, so no value of one field can shift bytes into the next.
fn digest(tag: &[u8], fields: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in std::iter::once(tag).chain(fields.iter().copied()) {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

fn seconds(t: DateTime<Utc>) -> String {
    t.trunc_subsecs(0)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// From a client's `Idempotency-Key` header, scoped to customer and route so two
    /// customers (or two endpoints) using the same raw key never collide. `route` is the
    /// matched route pattern, not the raw path: `/api/messages/%73ms` is `/api/messages/sms`.
    pub fn from_header(raw: &str, route: &str, customer_id: Uuid) -> Result<Self, String> {
        let printable = raw.bytes().all(|b| (0x20..=0x7E).contains(&b));
        if raw.is_empty() || raw.len() > 255 || !printable {
            return Err("must be 1 to 255 printable ASCII characters".into());
        }
        Ok(Self(digest(
            TAG_HEADER,
            &[route.as_bytes(), customer_id.as_bytes(), raw.as_bytes()],
        )))
    }

    /// Derived for an outbound message without a header (SPEC §3.4). Sub-second parts
    /// of `sent_at` are dropped so a client retry with a re-rendered timestamp matches.
    pub fn for_outbound(
        channel_family: &str,
        customer_id: Uuid,
        from: &str,
        to: &str,
        sent_at: DateTime<Utc>,
        body_sha256: &str,
    ) -> Self {
        Self(digest(
            TAG_OUTBOUND,
            &[
                channel_family.as_bytes(),
                customer_id.as_bytes(),
                from.as_bytes(),
                to.as_bytes(),
                seconds(sent_at).as_bytes(),
                body_sha256.as_bytes(),
            ],
        ))
    }

    /// Derived for an inbound webhook: the provider's id identifies the message within a
    /// customer. The customer is part of the key so that one customer's webhook cannot
    /// claim (and so silently suppress) a provider id that belongs to another's message.
    pub fn for_inbound(channel_family: &str, customer_id: Uuid, provider_message_id: &str) -> Self {
        Self(digest(
            TAG_INBOUND,
            &[
                channel_family.as_bytes(),
                customer_id.as_bytes(),
                provider_message_id.as_bytes(),
            ],
        ))
    }

    /// A key read back from the database or a queue; see [`Self::is_well_formed`].
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    /// Every key this module makes is 64 lower-case hex digits.
    pub fn is_well_formed(&self) -> bool {
        is_sha256_hex(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a request meant, normalized, as the client sent it (SPEC §3.4): two requests with
/// one idempotency key are a true repeat only when their fingerprints are equal.
///
/// `sent_at` counts only when the client gave a timestamp (the server's clock is not part of
/// the request), and only to the second, like derived keys (a re-rendered timestamp is the
/// same request). Metadata is hashed as serde_json prints it, keys sorted.
pub(crate) fn request_fingerprint(event: &super::Event, client_timestamp: bool) -> String {
    fn opt(value: Option<&str>) -> Vec<u8> {
        // Absent and empty must differ: a presence byte, then the value.
        match value {
            None => vec![0],
            Some(v) => std::iter::once(1).chain(v.bytes()).collect(),
        }
    }
    let sent_at = client_timestamp.then(|| seconds(event.sent_at));
    let attachments = serde_json::to_string(&event.attachments).unwrap_or_default();
    let metadata = event.metadata.as_ref().map(|m| m.to_string());
    digest(
        TAG_REQUEST,
        &[
            event.direction.as_str().as_bytes(),
            event.channel.as_str().as_bytes(),
            event.customer_id.as_bytes(),
            event.from.as_bytes(),
            event.to.as_bytes(),
            &opt(event.subject.as_deref()),
            event.body_sha256().as_bytes(),
            attachments.as_bytes(),
            &opt(sent_at.as_deref()),
            &opt(event.provider_message_id.as_deref()),
            &opt(metadata.as_deref()),
        ],
    )
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cust(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn header_key_is_deterministic_and_scoped() {
        let a = IdempotencyKey::from_header("abc-123", "/api/messages/sms", cust(1)).unwrap();
        let b = IdempotencyKey::from_header("abc-123", "/api/messages/sms", cust(1)).unwrap();
        assert_eq!(a, b);
        assert!(a.is_well_formed());
        let other_customer =
            IdempotencyKey::from_header("abc-123", "/api/messages/sms", cust(2)).unwrap();
        let other_endpoint =
            IdempotencyKey::from_header("abc-123", "/api/messages/email", cust(1)).unwrap();
        assert_ne!(a, other_customer);
        assert_ne!(a, other_endpoint);
    }

    #[test]
    fn header_value_rules() {
        let ep = "/api/messages/sms";
        assert!(IdempotencyKey::from_header("", ep, cust(1)).is_err());
        assert!(IdempotencyKey::from_header(&"k".repeat(255), ep, cust(1)).is_ok());
        assert!(IdempotencyKey::from_header(&"k".repeat(256), ep, cust(1)).is_err());
        assert!(IdempotencyKey::from_header("a\tb", ep, cust(1)).is_err());
        assert!(IdempotencyKey::from_header("k\u{7f}", ep, cust(1)).is_err());
        assert!(IdempotencyKey::from_header("clé", ep, cust(1)).is_err());
        assert!(IdempotencyKey::from_header(" ~ ", ep, cust(1)).is_ok());
    }

    #[test]
    fn outbound_key_ignores_sub_seconds() {
        let t0: DateTime<Utc> = "2024-11-01T14:00:00Z".parse().unwrap();
        let t1: DateTime<Utc> = "2024-11-01T14:00:00.999Z".parse().unwrap();
        let t2: DateTime<Utc> = "2024-11-01T14:00:01Z".parse().unwrap();
        let k = |t, c, from: &str| {
            IdempotencyKey::for_outbound("sms", cust(c), from, "+18045551234", t, "ab")
        };
        assert_eq!(k(t0, 1, "+12016661234"), k(t1, 1, "+12016661234"));
        assert_ne!(k(t0, 1, "+12016661234"), k(t2, 1, "+12016661234"));
        assert_ne!(k(t0, 1, "+12016661234"), k(t0, 2, "+12016661234"));
        assert_ne!(k(t0, 1, "+12016661234"), k(t0, 1, "+12016661235"));
    }

    #[test]
    fn inbound_key_depends_on_family_customer_and_provider_id() {
        let a = IdempotencyKey::for_inbound("sms", cust(1), "msg-1");
        assert_eq!(a, IdempotencyKey::for_inbound("sms", cust(1), "msg-1"));
        assert_ne!(a, IdempotencyKey::for_inbound("email", cust(1), "msg-1"));
        assert_ne!(a, IdempotencyKey::for_inbound("sms", cust(1), "msg-2"));
        assert_ne!(a, IdempotencyKey::for_inbound("sms", cust(2), "msg-1"));
    }

    /// Finding 3 of issue 9: with `|`-joined fields, an inbound webhook whose provider id
    /// is the outbound message's joined fields got the outbound message's key.
    #[test]
    fn no_field_value_can_make_two_kinds_share_a_key() {
        let customer = cust(1);
        let sent: DateTime<Utc> = "2024-11-01T14:00:00Z".parse().unwrap();
        let body_sha = sha256_hex(b"hello");
        let outbound = IdempotencyKey::for_outbound(
            "sms",
            customer,
            "+12016661234",
            "+18045551234",
            sent,
            &body_sha,
        );
        let forged =
            format!("{customer}|+12016661234|+18045551234|2024-11-01T14:00:00Z|{body_sha}");
        assert_ne!(
            outbound,
            IdempotencyKey::for_inbound("sms", customer, &forged)
        );
        // The old encoding did collide: the regression this guards against.
        let old = |s: String| sha256_hex(s.as_bytes());
        assert_eq!(
            old(format!(
                "sms|{customer}|+12016661234|+18045551234|2024-11-01T14:00:00Z|{body_sha}"
            )),
            old(format!("sms|{forged}"))
        );
        // Moving a separator between fields cannot produce the same key either.
        assert_ne!(
            IdempotencyKey::for_inbound("sms", customer, "a|b"),
            IdempotencyKey::for_inbound("sms|a", customer, "b")
        );
        assert_ne!(
            IdempotencyKey::from_header("x", "/api/messages/sms", customer).unwrap(),
            IdempotencyKey::for_inbound("/api/messages/sms", customer, "x")
        );
    }

    #[test]
    fn length_prefixes_make_the_encoding_unambiguous() {
        assert_ne!(digest(b"t", &[b"ab", b"c"]), digest(b"t", &[b"a", b"bc"]));
        assert_ne!(digest(b"t", &[b"", b"a"]), digest(b"t", &[b"a", b""]));
        assert_ne!(digest(b"t", &[b"a"]), digest(b"u", &[b"a"]));
        assert_eq!(digest(b"t", &[b"a"]), digest(b"t", &[b"a"]));
    }

    #[test]
    fn serde_is_transparent_and_stored_keys_are_checked() {
        let k = IdempotencyKey::for_inbound("sms", cust(1), "x");
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{k}\""));
        assert_eq!(serde_json::from_str::<IdempotencyKey>(&json).unwrap(), k);
        assert!(!IdempotencyKey::from_stored("nope".into()).is_well_formed());
        assert!(!IdempotencyKey::from_stored(k.as_str().to_uppercase()).is_well_formed());
    }
}
