//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): `webhook-signature`
//! is `v1,` + base64 of HMAC-SHA256 over `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed
//! with the bytes of the secret (`whsec_` + base64). Several signatures, space-separated,
//! while a rotated-out secret still signs.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// 24 random bytes: 192 bits, within the 24–64 bytes the specification recommends.
const KEY_BYTES: usize = 24;

/// A new secret, `whsec_` + base64 of random bytes from the operating system.
pub fn new_secret() -> String {
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).expect("the operating system gives random bytes");
    format!("{PREFIX}{}", BASE64.encode(key))
}

/// The key bytes of a secret (`None`: not one of ours).
fn key_of(secret: &str) -> Option<Vec<u8>> {
    BASE64.decode(secret.strip_prefix(PREFIX)?).ok()
}

/// One `v1,<base64>` signature of `body` sent as message `id` at `timestamp`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = key_of(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: one signature per secret that signs.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a str>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .filter_map(|secret| sign(secret, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests.
    #[test]
    fn signs_as_the_specifications_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn new_secrets_are_distinct_and_usable() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(key_of(&a).unwrap().len(), KEY_BYTES);
        let header = signature_header([a.as_str(), b.as_str()], "msg_1", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(sign("not-a-secret", "msg_1", 1, b"{}").is_none());
    }
}
