//! Who the client is (SPEC §16): the TCP peer, unless the peer is one of
//! `server.trusted_proxies`; then the address that proxy saw, from `X-Forwarded-For`.
//!
//! Each proxy appends the address it received the request from, so the list is read from
//! the right: trusted proxies are skipped, and the first address that is not one of them
//! is the client. Anything left of it was written by the client itself and is ignored, so
//! a client cannot choose its own rate-limit budget.

use std::net::IpAddr;

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

const FORWARDED_FOR: &str = "x-forwarded-for";

/// `server.trusted_proxies`: CIDR ranges (a single address is a /32 or /128).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(ranges: Vec<IpNet>) -> Self {
        TrustedProxies(ranges)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address, given the TCP peer and the request's headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.0.is_empty() || !self.trusts(peer) {
            return canonical(peer);
        }
        let mut client = canonical(peer);
        // Several headers are one list, in order (RFC 9110 §5.3).
        let hops: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // Garbage where an address belongs: the last trusted hop is the client.
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// An address of `X-Forwarded-For`: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, with a
/// port or not.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical(s.ip()))
        .or_else(|| {
            let inner = hop.strip_prefix('[')?.split(']').next()?;
            inner.parse().ok().map(canonical)
        })
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:192.0.2.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                HeaderName::from_static(FORWARDED_FOR),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_peers_and_is_read_from_the_right() {
        let proxies = TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.0.2.7/32".parse().unwrap(),
        ]);
        let xff = forwarded(&["203.0.113.9, 198.51.100.4, 10.1.1.1"]);
        // From a trusted proxy: the first untrusted address from the right.
        assert_eq!(proxies.client(ip("10.0.0.2"), &xff), ip("198.51.100.4"));
        // From anyone else, the header is the client's own words: ignored.
        assert_eq!(
            proxies.client(ip("198.51.100.77"), &xff),
            ip("198.51.100.77")
        );
        // No proxies configured: never read.
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.0.0.2"), &xff), ip("10.0.0.2"));
        // Split over several headers, with ports and brackets.
        let split = forwarded(&["203.0.113.9", "[2001:db8::5]:443"]);
        assert_eq!(proxies.client(ip("192.0.2.7"), &split), ip("2001:db8::5"));
        // Nothing but trusted hops: the leftmost of them.
        let inside = forwarded(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &inside), ip("10.9.9.9"));
        // Garbage stops the walk at the last trusted hop.
        let garbage = forwarded(&["203.0.113.9, not-an-ip, 10.1.1.1"]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &garbage), ip("10.1.1.1"));
        // An IPv4 peer through an IPv6 socket is trusted by its IPv4 range.
        assert_eq!(
            proxies.client(ip("::ffff:10.0.0.2"), &xff),
            ip("198.51.100.4")
        );
    }
}
