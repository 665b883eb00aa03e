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

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// From a client's `Idempotency-Key` header, scoped to customer and endpoint so two
    /// customers (or two endpoints) using the same raw key never collide.
    pub fn from_header(raw: &str, endpoint: &str, customer_id: Uuid) -> Result<Self, String> {
        let printable = raw.bytes().all(|b| (0x20..=0x7E).contains(&b));
        if raw.is_empty() || raw.len() > 255 || !printable {
            return Err("must be 1 to 255 printable ASCII characters".into());
        }
        Ok(Self::digest(&format!(
            "header|{endpoint}|{customer_id}|{raw}"
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
        let sent = sent_at
            .trunc_subsecs(0)
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        Self::digest(&format!(
            "{channel_family}|{customer_id}|{from}|{to}|{sent}|{body_sha256}"
        ))
    }

    /// Derived for an inbound webhook: the provider's id identifies the message.
    pub fn for_inbound(channel_family: &str, provider_message_id: &str) -> Self {
        Self::digest(&format!("{channel_family}|{provider_message_id}"))
    }

    /// A key read back from the database or a queue; see [`Self::is_well_formed`].
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    /// Every key this module makes is 64 lower-case hex digits.
    pub fn is_well_formed(&self) -> bool {
        self.0.len() == 64
            && self
                .0
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn digest(input: &str) -> Self {
        Self(sha256_hex(input.as_bytes()))
    }
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
        let expected =
            sha256_hex(format!("header|/api/messages/sms|{}|abc-123", cust(1)).as_bytes());
        assert_eq!(a.as_str(), expected);
    }

    #[test]
    fn header_value_rules() {
        let ep = "/api/messages/sms";
        assert!(IdempotencyKey::from_header("", ep, cust(1)).is_err());
        assert!(IdempotencyKey::from_header(&"k".repeat(255), ep, cust(1)).is_ok());
        assert!(IdempotencyKey::from_header(&"k".repeat(256), ep, cust(1)).is_err());
        assert!(IdempotencyKey::from_header("a\tb", ep, cust(1)).is_err());
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
        let expected = sha256_hex(
            format!(
                "sms|{}|+12016661234|+18045551234|2024-11-01T14:00:00Z|ab",
                cust(1)
            )
            .as_bytes(),
        );
        assert_eq!(k(t1, 1, "+12016661234").as_str(), expected);
    }

    #[test]
    fn inbound_key_depends_on_family_and_provider_id() {
        let a = IdempotencyKey::for_inbound("sms", "msg-1");
        assert_eq!(a, IdempotencyKey::for_inbound("sms", "msg-1"));
        assert_ne!(a, IdempotencyKey::for_inbound("email", "msg-1"));
        assert_ne!(a, IdempotencyKey::for_inbound("sms", "msg-2"));
        assert_eq!(a.as_str(), sha256_hex(b"sms|msg-1"));
    }

    #[test]
    fn serde_is_transparent_and_stored_keys_are_checked() {
        let k = IdempotencyKey::for_inbound("sms", "x");
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{k}\""));
        assert_eq!(serde_json::from_str::<IdempotencyKey>(&json).unwrap(), k);
        assert!(!IdempotencyKey::from_stored("nope".into()).is_well_formed());
        assert!(!IdempotencyKey::from_stored(k.as_str().to_uppercase()).is_well_formed());
    }
}
