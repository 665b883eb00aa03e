//! Signed provider webhooks (SPEC §11):
//! `X-Messaging-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
//!
//! The MAC covers the exact bytes received, so a signature taken from one request proves
//! nothing about another body; the timestamp bounds how long a captured request can be
//! replayed (and a replay within that window is a duplicate webhook, which the provider id
//! makes a no-op).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const HEADER: &str = "X-Messaging-Signature";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Messaging-Signature header is missing")]
    Missing,
    #[error("the X-Messaging-Signature header is not t=<unix seconds>,v1=<hex HMAC-SHA256>")]
    Malformed,
    #[error(
        "the signature's timestamp is outside the accepted window; sign with the current time"
    )]
    Stale,
    #[error("the signature does not match the request body")]
    Mismatch,
}

/// Checks `header` against `body`. `now` is Unix seconds.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) if timestamp.is_none() => timestamp = Some(t),
            // Several v1 values let a provider sign with an old and a new secret while
            // they are rotated.
            Some(("v1", mac)) => candidates.push(hex::decode(mac).ok()),
            // Other schemes may follow later; they are ignored, as is whitespace.
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if t.is_empty() || t.len() > 12 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    let seconds: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
    let candidates: Vec<Vec<u8>> = candidates
        .into_iter()
        .collect::<Option<_>>()
        .ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(seconds) > tolerance.as_secs() {
        return Err(SignatureError::Stale);
    }
    let mac = mac(secret, t, body);
    // `verify_slice` compares in constant time.
    if candidates
        .iter()
        .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The header value for `body` signed at `t` (what a provider sends).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let t = t.to_string();
    let mac = mac(secret, &t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(mac))
}

fn mac(secret: &[u8], t: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec-test-0123456789";
    const NOW: i64 = 1_790_000_000;
    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    fn check(header: &str, body: &[u8]) -> Result<(), SignatureError> {
        verify(SECRET, Some(header), body, NOW, FIVE_MINUTES)
    }

    #[test]
    fn a_known_vector_matches_an_independent_computation() {
        // printf '1790000000.{"a":1}' | openssl dgst -sha256 -hmac whsec-test-0123456789
        assert_eq!(
            sign(SECRET, NOW, br#"{"a":1}"#),
            "t=1790000000,v1=0b5cdd8970dd8f1f9eb649f0b017ddcdf7cb95e450f4a4f758a05d2cedffd72e"
        );
    }

    #[test]
    fn good_signatures_pass_within_the_tolerance() {
        let body = br#"{"from":"+1"}"#;
        assert_eq!(check(&sign(SECRET, NOW, body), body), Ok(()));
        assert_eq!(check(&sign(SECRET, NOW - 299, body), body), Ok(()));
        assert_eq!(check(&sign(SECRET, NOW + 299, body), body), Ok(()));
        let rotated = format!("{},v1={}", sign(SECRET, NOW, body), "00".repeat(32));
        assert_eq!(check(&rotated, body), Ok(()), "any v1 may match");
    }

    #[test]
    fn every_kind_of_bad_signature_is_refused() {
        let body = br#"{"from":"+1"}"#;
        let good = sign(SECRET, NOW, body);
        assert_eq!(
            verify(SECRET, None, body, NOW, FIVE_MINUTES),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            check(&good, br#"{"from":"+2"}"#),
            Err(SignatureError::Mismatch),
            "a signature replayed with another body"
        );
        assert_eq!(
            check(&sign(b"another-secret-0123456", NOW, body), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&sign(SECRET, NOW - 301, body), body),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            check(&sign(SECRET, NOW + 301, body), body),
            Err(SignatureError::Stale)
        );
        let v1 = good.split_once(",v1=").unwrap().1;
        for malformed in [
            "",
            "garbage",
            &format!("v1={v1}"),
            &format!("t={NOW}"),
            &format!("t=-{NOW},v1={v1}"),
            &format!("t=+{NOW},v1={v1}"),
            &format!("t={NOW},v1=not-hex"),
            &format!("t=99999999999999999999,v1={v1}"),
        ] {
            assert_eq!(
                check(malformed, body),
                Err(SignatureError::Malformed),
                "{malformed:?}"
            );
        }
    }
}
