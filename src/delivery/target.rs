//! Where a message may be sent: URL rules, and the guard against server-side request
//! forgery (loopback, private, link-local and metadata addresses).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::Url;

pub const MAX_URL_CHARS: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("is not a valid URL: {0}")]
    Syntax(String),
    #[error("must use http or https, not {0}")]
    Scheme(String),
    #[error("must name a host")]
    NoHost,
    #[error("must not carry a user name or password; use endpoint headers or a secret")]
    Credentials,
    #[error("is {0} characters long; at most {MAX_URL_CHARS} are allowed")]
    TooLong(usize),
}

/// Whether a target is meant as a URL (as opposed to a registered endpoint's name):
/// anything with a scheme, so that `ftp://…` is refused as a URL rather than looked up.
pub fn is_url(target: &str) -> bool {
    target.contains("://")
}

pub fn parse_url(text: &str) -> Result<Url, UrlError> {
    let chars = text.chars().count();
    if chars > MAX_URL_CHARS {
        return Err(UrlError::TooLong(chars));
    }
    let url = Url::parse(text).map_err(|e| UrlError::Syntax(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(url.scheme().to_string()));
    }
    if url.host().is_none() {
        return Err(UrlError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    Ok(url)
}

/// A URL's origin as one destination: scheme, host and port, the host as the URL standard
/// reads it (lower case, an IPv4 address in its dotted form whatever way it was written:
/// `127.1` and `0x7f.0.0.1` are `127.0.0.1`), the default port made explicit. Two URLs
/// that reach the same server share its limits. `None` for text that is no URL.
pub fn origin(text: &str) -> Option<String> {
    let url = Url::parse(text).ok()?;
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(format!("{}://{}:{}", url.scheme(), host, port))
}

/// Whether an address is on the public internet. Everything a request forger would aim at
/// inside the network is refused: loopback, private and shared ranges, link-local (which
/// holds cloud metadata at 169.254.169.254), unique-local, multicast, reserved, and IPv6
/// forms that embed such an IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..=127).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..=19).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) embeds an IPv4 address in the last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (segments[6] >> 8) as u8,
            segments[6] as u8,
            (segments[7] >> 8) as u8,
            segments[7] as u8,
        );
        return is_public_v4(v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || segments[0] == 0x2001 && segments[1] == 0x0db8 // documentation
        || segments[..5] == [0, 0, 0, 0, 0]) // IPv4-compatible (deprecated) and friends
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_origin_names_the_server_however_the_url_spells_it() {
        for (url, origin) in [
            ("http://127.0.0.1/a", "http://127.0.0.1:80"),
            ("http://127.1/b?x", "http://127.0.0.1:80"),
            ("http://0x7f.0.0.1:80/c", "http://127.0.0.1:80"),
            ("HTTPS://Example.COM/path", "https://example.com:443"),
            ("https://example.com:8443", "https://example.com:8443"),
            ("http://[::1]:8080/", "http://[::1]:8080"),
        ] {
            assert_eq!(super::origin(url).as_deref(), Some(origin), "{url}");
        }
        assert_eq!(super::origin("not a url"), None);
    }

    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert!(parse_url("https://example.com/hook?x=1").is_ok());
        assert!(
            parse_url("http://10.0.0.1:8080/").is_ok(),
            "address checks happen at send time"
        );
        assert_eq!(
            parse_url("ftp://example.com/"),
            Err(UrlError::Scheme("ftp".into()))
        );
        assert_eq!(
            parse_url("https://user:pw@example.com/"),
            Err(UrlError::Credentials)
        );
        assert!(matches!(parse_url("https://"), Err(UrlError::Syntax(_))));
        assert!(matches!(parse_url("not a url"), Err(UrlError::Syntax(_))));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(matches!(parse_url(&long), Err(UrlError::TooLong(_))));
    }

    #[test]
    fn targets_starting_with_a_scheme_are_urls_and_others_are_endpoint_names() {
        assert!(is_url("https://example.com"));
        assert!(is_url("HTTP://example.com"));
        assert!(is_url("ftp://example.com"), "then refused for its scheme");
        assert!(!is_url("billing"));
        assert!(!is_url("httpbin"));
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must be refused");
        }
    }

    #[test]
    fn internet_addresses_are_public() {
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} must be allowed");
        }
    }
}
