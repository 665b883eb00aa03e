//! Where a webhook may be sent (SPEC §15): http(s) URLs on public addresses only, unless
//! `webhooks.allow_private` is set, so a customer cannot make the service call its own
//! network (databases, metadata endpoints, the admin API).
//!
//! Checked twice: when an endpoint is registered (a literal address or `localhost`), and
//! at every connection, by the resolver the deliverers' client uses, so a name that
//! resolves to a private address later (DNS rebinding) is refused too.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use actix_tls::connect::Resolve;
use futures_util::future::LocalBoxFuture;
use url::{Host, Url};

/// The longest endpoint URL taken.
pub const MAX_URL_LENGTH: usize = 2048;

/// `text` as an endpoint URL, or why it is refused.
pub fn check_url(text: &str, allow_private: bool) -> Result<Url, String> {
    if text.len() > MAX_URL_LENGTH {
        return Err(format!("is longer than {MAX_URL_LENGTH} characters"));
    }
    // The URL is kept as given: a parser would drop or escape these silently, and
    // PostgreSQL refuses NUL.
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let url = Url::parse(text).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold credentials".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    let private = match url.host() {
        None => return Err("must name a host".into()),
        Some(Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    if private && !allow_private {
        return Err(
            "points to a private or loopback address (webhooks.allow_private is off)".into(),
        );
    }
    Ok(url)
}

/// Whether `ip` is on the public internet: not loopback, private (RFC 1918, unique local),
/// link-local, shared (CGNAT), unspecified, multicast, broadcast or documentation.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(ip),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

/// The deliverers' resolver: the system's, keeping only public addresses unless private
/// ones are allowed. A name with none left fails to resolve, so nothing is sent.
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn StdError>>> {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if kept.is_empty() && !found.is_empty() {
                return Err(format!(
                    "{host} resolves only to private or loopback addresses (webhooks.allow_private is off)"
                )
                .into());
            }
            Ok(kept)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_loopback_endpoints_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1/hook",
            "http://localhost:8080/",
            "http://api.localhost/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://172.16.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://2130706433/", // 127.0.0.1 written as one number
        ] {
            assert!(check_url(url, false).is_err(), "{url} accepted");
            assert!(
                check_url(url, true).is_ok(),
                "{url} refused with allow_private"
            );
        }
        assert!(check_url("https://hooks.example.com/messaging", false).is_ok());
        assert!(check_url("http://8.8.8.8/", false).is_ok());
    }

    #[test]
    fn only_plain_web_urls_are_endpoints() {
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pass@example.com/",
            "https://example.com/#part",
            "not a url",
            // A parser would strip or escape these, so the URL kept is not the one called.
            "https://example.com/a\0b",
            "\u{1}https://example.com/",
            "https://example.com/\tb",
        ] {
            assert!(check_url(url, true).is_err(), "{url} accepted");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LENGTH));
        assert!(check_url(&long, true).is_err());
    }
}
