//! Message parts: channel, direction, body, subject, attachments.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::FieldError;
use super::idempotency::sha256_hex;
use super::text::check_text;

pub const MAX_SMS_BODY_CHARS: usize = 1600;
pub const MAX_EMAIL_BODY_BYTES: usize = 256 * 1024;
pub const MAX_SUBJECT_CHARS: usize = 998;
pub const MAX_ATTACHMENTS: usize = 10;
pub const MAX_URL_CHARS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Mms,
    Email,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Self::Sms, Self::Mms, Self::Email];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Mms => "mms",
            Self::Email => "email",
        }
    }

    /// Sms and mms share conversations and idempotency scope.
    pub fn family(self) -> &'static str {
        match self {
            Self::Sms | Self::Mms => "sms",
            Self::Email => "email",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// For values read back from the database: the inverse of `as_str`.
impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown channel {s:?}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Self::Inbound, Self::Outbound];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The inverse of `as_str`.
impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown direction {s:?}"))
    }
}

/// A message body as sent (not trimmed: whitespace may be meaningful to the recipient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

impl MessageBody {
    pub fn parse(raw: &str, channel: Channel) -> Result<Self, String> {
        if raw.trim().is_empty() {
            return Err("must not be empty".into());
        }
        check_text(raw)?;
        match channel {
            Channel::Sms | Channel::Mms if raw.chars().count() > MAX_SMS_BODY_CHARS => {
                Err(format!("must be at most {MAX_SMS_BODY_CHARS} characters"))
            }
            Channel::Email if raw.len() > MAX_EMAIL_BODY_BYTES => {
                Err("must be at most 256 KiB".into())
            }
            _ => Ok(Self(raw.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Hex SHA-256 of the body: the dedup key and what logs show instead of the body.
    pub fn sha256_hex(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }
}

/// An email subject. CR/LF are refused: it ends up in a mail header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(String);

impl Subject {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.chars().count() > MAX_SUBJECT_CHARS {
            return Err(format!("must be at most {MAX_SUBJECT_CHARS} characters"));
        }
        if raw.contains(['\r', '\n']) {
            return Err("must not contain line breaks".into());
        }
        check_text(raw)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Attachment URLs, checked against the channel's count rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachments(Vec<String>);

impl Attachments {
    /// Count errors are reported on `attachments`, URL errors on `attachments[i]`.
    pub fn parse(raw: Option<Vec<String>>, channel: Channel) -> Result<Self, Vec<FieldError>> {
        let urls = raw.unwrap_or_default();
        let count_error = match channel {
            Channel::Sms if !urls.is_empty() => {
                Some("must be empty or null for type sms (use mms)".to_string())
            }
            Channel::Mms if urls.is_empty() || urls.len() > MAX_ATTACHMENTS => {
                Some(format!("type mms needs 1 to {MAX_ATTACHMENTS} attachments"))
            }
            Channel::Email if urls.len() > MAX_ATTACHMENTS => {
                Some(format!("must have at most {MAX_ATTACHMENTS} attachments"))
            }
            _ => None,
        };
        let mut errors: Vec<FieldError> = count_error
            .map(|m| FieldError::new("attachments", m))
            .into_iter()
            .collect();
        // For sms the count error says it all; per-URL errors would be noise.
        if channel != Channel::Sms {
            errors.extend(urls.iter().enumerate().filter_map(|(i, u)| {
                check_url(u)
                    .err()
                    .map(|m| FieldError::new(format!("attachments[{i}]"), m))
            }));
        }
        if errors.is_empty() {
            Ok(Self(urls))
        } else {
            Err(errors)
        }
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// An absolute http(s) URL with a host. Small on purpose: enough to catch junk and
/// non-web schemes; the provider fetching the URL is the real judge.
fn check_url(u: &str) -> Result<(), &'static str> {
    const NOT_HTTP: &str = "must be an absolute http or https URL";
    if u.chars().count() > MAX_URL_CHARS {
        return Err("must be at most 2048 characters");
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    let (scheme, rest) = u.split_once("://").ok_or(NOT_HTTP)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(NOT_HTTP);
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("has an invalid host")?;
        // An IPv6 address, not merely its characters: `[3dE]` is no host, and clients
        // reading the URL back (Python's urlsplit among them) refuse it.
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("has an invalid host");
        }
        (addr, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err("must have a host");
    }
    if !host_port.starts_with('[')
        && (!host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            || host.starts_with('.')
            || host.contains(".."))
    {
        return Err("has an invalid host");
    }
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err("has an invalid port");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_and_direction_names() {
        assert_eq!(Channel::Mms.as_str(), "mms");
        assert_eq!(Channel::Mms.family(), "sms");
        assert_eq!(Channel::Sms.family(), "sms");
        assert_eq!(Channel::Email.family(), "email");
        assert_eq!(serde_json::to_string(&Channel::Email).unwrap(), "\"email\"");
        assert_eq!(
            serde_json::to_string(&Direction::Inbound).unwrap(),
            "\"inbound\""
        );
        assert_eq!("mms".parse::<Channel>(), Ok(Channel::Mms));
        assert_eq!("outbound".parse::<Direction>(), Ok(Direction::Outbound));
        assert!("SMS".parse::<Channel>().is_err());
    }

    #[test]
    fn sms_body_limit_counts_chars() {
        assert!(MessageBody::parse(&"a".repeat(1600), Channel::Sms).is_ok());
        assert!(MessageBody::parse(&"a".repeat(1601), Channel::Mms).is_err());
        // 1600 multi-byte characters are still 1600 characters.
        assert!(MessageBody::parse(&"é".repeat(1600), Channel::Sms).is_ok());
    }

    #[test]
    fn email_body_limit_counts_bytes() {
        assert!(MessageBody::parse(&"a".repeat(256 * 1024), Channel::Email).is_ok());
        assert!(MessageBody::parse(&"a".repeat(256 * 1024 + 1), Channel::Email).is_err());
        assert!(MessageBody::parse(&"é".repeat(128 * 1024 + 1), Channel::Email).is_err());
    }

    #[test]
    fn body_must_not_be_blank_and_is_kept_untrimmed() {
        assert!(MessageBody::parse("", Channel::Sms).is_err());
        assert!(MessageBody::parse(" \n\t ", Channel::Email).is_err());
        let b = MessageBody::parse("  hi  ", Channel::Sms).unwrap();
        assert_eq!(b.as_str(), "  hi  ");
        assert_eq!(
            MessageBody::parse("abc", Channel::Sms)
                .unwrap()
                .sha256_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn subject_limits() {
        assert!(Subject::parse(&"s".repeat(998)).is_ok());
        assert!(Subject::parse(&"s".repeat(999)).is_err());
        assert!(Subject::parse("a\r\nBcc: x@y.z").is_err());
    }

    fn urls(n: usize) -> Option<Vec<String>> {
        Some(
            (0..n)
                .map(|i| format!("https://example.com/{i}.png"))
                .collect(),
        )
    }

    #[test]
    fn sms_takes_no_attachments() {
        assert!(Attachments::parse(None, Channel::Sms)
            .unwrap()
            .into_vec()
            .is_empty());
        assert!(Attachments::parse(Some(vec![]), Channel::Sms).is_ok());
        let errs = Attachments::parse(urls(1), Channel::Sms).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "attachments");
    }

    #[test]
    fn mms_needs_one_to_ten() {
        assert!(Attachments::parse(None, Channel::Mms).is_err());
        assert!(Attachments::parse(urls(0), Channel::Mms).is_err());
        assert_eq!(
            Attachments::parse(urls(1), Channel::Mms)
                .unwrap()
                .into_vec()
                .len(),
            1
        );
        assert!(Attachments::parse(urls(10), Channel::Mms).is_ok());
        assert!(Attachments::parse(urls(11), Channel::Mms).is_err());
    }

    #[test]
    fn email_takes_zero_to_ten() {
        assert!(Attachments::parse(None, Channel::Email).is_ok());
        assert!(Attachments::parse(urls(10), Channel::Email).is_ok());
        assert!(Attachments::parse(urls(11), Channel::Email).is_err());
    }

    #[test]
    fn each_bad_url_is_reported_by_index() {
        let raw = vec![
            "https://example.com/a.pdf".to_string(),
            "ftp://example.com/a".to_string(),
            "https://ok.example.com".to_string(),
            "not a url".to_string(),
        ];
        let errs = Attachments::parse(Some(raw), Channel::Email).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["attachments[1]", "attachments[3]"]);
    }

    #[test]
    fn url_check() {
        for ok in [
            "https://example.com/a.pdf",
            "http://example.com",
            "HTTPS://Example.com:8443/x?y=1#z",
            "https://user:pw@cdn.example.com/a",
            "http://[::1]:8080/a",
            "http://[::]/",
            "http://[1::]/",
            "http://[1:2:3:4:5:6:7::]/",
            "http://[fe80::1:2]/",
            "http://127.0.0.1/a",
        ] {
            assert!(check_url(ok).is_ok(), "{ok:?} rejected");
        }
        let too_long = format!("https://example.com/{}", "a".repeat(2048));
        for bad in [
            "",
            "example.com/a.png",
            "/relative/path",
            "ftp://example.com/a",
            "javascript://alert(1)",
            "https://",
            "https:///path",
            "https://exa mple.com",
            "https://example.com:99999/",
            "https://example.com:/",
            "https://exa%mple.com/",
            "http://[]/",
            "http://[3dE]/a",
            "https://[1.2.3.4]/",
            too_long.as_str(),
        ] {
            assert!(check_url(bad).is_err(), "{bad:?} accepted");
        }
        let max = format!("https://example.com/{}", "a".repeat(2048 - 20));
        assert_eq!(max.len(), 2048);
        assert!(check_url(&max).is_ok());
    }
}
