//! Normalized addresses. A value of these types has passed parsing, so it is
//! always in canonical form (E.164 without formatting, lower-cased email).

use std::fmt;

use super::message::Channel;

const E164: &str = "must be an E.164 phone number: + followed by 8 to 15 digits, the first not 0";

/// A phone number in E.164 form, e.g. `+12016661234`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, String> {
        // Formatting characters people type are dropped; anything else must be exact.
        let s: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let digits = s.strip_prefix('+').ok_or(E164)?;
        let valid = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if valid {
            Ok(Self(s))
        } else {
            Err(E164.into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, trimmed and lower-cased so that matching is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim().to_lowercase();
        check_email(&s).map_err(|m| m.to_string())?;
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pragmatic check, not full RFC 5322: dot-atom local part, DNS-style domain.
fn check_email(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    if s.chars().count() > 254 {
        return Err("must be at most 254 characters");
    }
    let (local, domain) = s.split_once('@').ok_or("must contain @")?;
    if domain.contains('@') {
        return Err("must contain exactly one @");
    }
    if local.is_empty() || local.len() > 64 {
        return Err("the part before @ must be 1 to 64 characters");
    }
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if !local.chars().all(|c| atext(c) || c == '.')
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return Err("the part before @ contains invalid characters");
    }
    check_domain(domain)
}

/// A DNS name with at least two labels (`example.com`), lower case.
fn check_domain(domain: &str) -> Result<(), &'static str> {
    if !domain.contains('.') {
        return Err("the domain must contain a dot");
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Err("the domain is invalid");
    }
    Ok(())
}

/// What a customer can own (SPEC §16): a phone number, or an email domain (every address
/// at it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnedAddress {
    Phone(PhoneNumber),
    EmailDomain(String),
}

impl OwnedAddress {
    /// `+12016661234` or `example.com`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.starts_with('+') {
            return PhoneNumber::parse(raw).map(OwnedAddress::Phone);
        }
        let domain = raw.to_ascii_lowercase();
        check_domain(&domain)
            .map_err(|_| {
                "must be a phone number in E.164 (+12016661234) or an email domain (example.com)"
                    .to_string()
            })
            .map(|()| OwnedAddress::EmailDomain(domain))
    }

    /// What owns an inbound message: its recipient's number, or its email domain.
    pub fn of_recipient(to: &str, channel: Channel) -> Option<Self> {
        match channel {
            Channel::Sms | Channel::Mms => PhoneNumber::parse(to).ok().map(OwnedAddress::Phone),
            Channel::Email => {
                let address = EmailAddress::parse(to).ok()?;
                let (_, domain) = address.as_str().rsplit_once('@')?;
                Some(OwnedAddress::EmailDomain(domain.to_string()))
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            OwnedAddress::Phone(_) => "phone",
            OwnedAddress::EmailDomain(_) => "email_domain",
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            OwnedAddress::Phone(p) => p.as_str(),
            OwnedAddress::EmailDomain(d) => d,
        }
    }
}

/// A participant of a message: the channel decides which kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Phone(PhoneNumber),
    Email(EmailAddress),
}

impl Address {
    /// Phone for sms/mms, email for email.
    pub fn parse(raw: &str, channel: Channel) -> Result<Self, String> {
        match channel {
            Channel::Sms | Channel::Mms => PhoneNumber::parse(raw).map(Self::Phone),
            Channel::Email => EmailAddress::parse(raw).map(Self::Email),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Phone(p) => p.as_str(),
            Self::Email(e) => e.as_str(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_formatting_is_removed() {
        let p = PhoneNumber::parse("+1 (201) 666-1234").unwrap();
        assert_eq!(p.as_str(), "+12016661234");
        assert_eq!(p.to_string(), "+12016661234");
        assert_eq!(
            PhoneNumber::parse("+1.804.555.1234").unwrap().as_str(),
            "+18045551234"
        );
        assert_eq!(
            PhoneNumber::parse(" +12016661234 ").unwrap().as_str(),
            "+12016661234"
        );
    }

    #[test]
    fn phone_length_bounds() {
        assert!(PhoneNumber::parse("+12345678").is_ok()); // 8 digits
        assert!(PhoneNumber::parse("+123456789012345").is_ok()); // 15 digits
        assert!(PhoneNumber::parse("+1234567").is_err()); // 7
        assert!(PhoneNumber::parse("+1234567890123456").is_err()); // 16
    }

    #[test]
    fn phone_rejections() {
        for bad in [
            "",
            "+",
            "+0123456789",     // leading 0
            "12016661234",     // missing +
            "+1201666ABCD",    // letters
            "+1-201-666-12x4", // letter among formatting
            "++12016661234",
            "+1201/6661234",
            "+١٢٣٤٥٦٧٨٩", // non-ASCII digits
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn email_is_trimmed_and_case_folded() {
        let e = EmailAddress::parse("  User.Name+Tag@UseHatchApp.COM ").unwrap();
        assert_eq!(e.as_str(), "user.name+tag@usehatchapp.com");
        assert_eq!(
            EmailAddress::parse("contact@gmail.com")
                .unwrap()
                .to_string(),
            "contact@gmail.com"
        );
        assert!(EmailAddress::parse("a@sub-domain.example.co.uk").is_ok());
    }

    #[test]
    fn email_rejections() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("a@{}.com", "b.".repeat(130));
        for bad in [
            "",
            "plainaddress",
            "@example.com",
            "a@b@example.com",
            "user@localhost",
            "user@-example.com",
            "user@example-.com",
            "user@exa_mple.com",
            "user@example..com",
            "us er@example.com",
            "user@exam\tple.com",
            ".user@example.com",
            "us..er@example.com",
            "us\"er@example.com",
            long_local.as_str(),
            long_total.as_str(),
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(EmailAddress::parse(&format!("{}@example.com", "a".repeat(64))).is_ok());
    }

    #[test]
    fn address_kind_follows_channel() {
        assert!(matches!(
            Address::parse("+12016661234", Channel::Mms),
            Ok(Address::Phone(_))
        ));
        assert!(Address::parse("+12016661234", Channel::Email).is_err());
        let a = Address::parse("A@B.io", Channel::Email).unwrap();
        assert_eq!(a.as_str(), "a@b.io");
    }

    #[test]
    fn owned_addresses_are_numbers_or_domains_and_recipients_map_to_them() {
        let phone = OwnedAddress::parse(" +12016661234 ").unwrap();
        assert_eq!((phone.kind(), phone.as_str()), ("phone", "+12016661234"));
        let domain = OwnedAddress::parse("Mail.Example.COM").unwrap();
        assert_eq!(
            (domain.kind(), domain.as_str()),
            ("email_domain", "mail.example.com")
        );
        for bad in [
            "",
            "+1",
            "example",
            "a@example.com",
            "-x.com",
            "12016661234",
        ] {
            assert!(OwnedAddress::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            OwnedAddress::of_recipient("Ann@Mail.Example.com", Channel::Email),
            Some(domain)
        );
        assert_eq!(
            OwnedAddress::of_recipient("+12016661234", Channel::Mms),
            Some(phone)
        );
        assert_eq!(OwnedAddress::of_recipient("nope", Channel::Sms), None);
    }
}
