//! The one server a run talks to: `http://HOST[:PORT][/BASE]`, parsed and checked up front.
//!
//! Every request of a run goes to this host and port, with its path appended to the base
//! path, so a load test can never wander off to another machine. Only plain `http://` is
//! accepted: the load generator has no TLS (it would measure the cipher, not the service),
//! so `https://` is refused with a message saying so rather than silently downgraded.

use std::fmt;
use std::net::SocketAddr;

/// A checked base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address as written (IPv6 without its brackets).
    pub host: String,
    /// TCP port (80 when the URL gives none).
    pub port: u16,
    /// `Host` header value: the authority as written in the URL (`host[:port]`).
    pub authority: String,
    /// Path prefix, `""` or `/a/b` (never a trailing slash), put before every API path.
    pub base_path: String,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it, in words.
    pub reason: String,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--url {:?}: {}", self.url, self.reason)
    }
}

impl std::error::Error for UrlError {}

impl Target {
    /// Parses `http://HOST[:PORT][/PATH]`. No user info, query or fragment; the path may
    /// only hold characters that need no escaping.
    pub fn parse(url: &str) -> Result<Target, UrlError> {
        let fail = |reason: &str| UrlError { url: url.to_string(), reason: reason.to_string() };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(fail("not a URL: expected http://HOST[:PORT][/PATH]"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" => {}
            "https" => {
                return Err(fail(
                    "https is not supported: the load generator speaks plain HTTP/1.1 only \
                     (no TLS); point it at the server's http:// listener",
                ));
            }
            _ => return Err(fail("unsupported scheme: only http:// URLs are accepted")),
        }
        if rest.contains(['?', '#']) {
            return Err(fail("the base URL must not carry a query or fragment"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(fail("user info (user@host) is not supported; pass the token with --token"));
        }
        if authority.is_empty() {
            return Err(fail("missing host"));
        }
        let (host, port) = split_host_port(authority).map_err(|r| fail(&r))?;
        if let Some(bad) = path.chars().find(|&c| !is_path_char(c)) {
            return Err(fail(&format!("character {bad:?} in the path needs escaping; give a plain path")));
        }
        Ok(Target { host, port, authority: authority.to_string(), base_path: path.trim_end_matches('/').to_string() })
    }

    /// The request target for an API path such as `/v1/ping`: the base path, then `path`.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    /// The URL back, as `http://authority/base`.
    pub fn url(&self) -> String {
        format!("http://{}{}/", self.authority, self.base_path)
    }

    /// Resolves the host once. A run uses the first address only, for all its
    /// connections, so it measures one server even behind a name with several addresses.
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        let mut addrs = tokio::net::lookup_host((self.host.as_str(), self.port)).await?;
        addrs
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{}: no address", self.authority)))
    }
}

/// `host[:port]` or `[v6][:port]` → (host, port).
fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("unclosed '[' in the host")?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{v6:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected ':PORT' after ']'")?),
        };
        (v6, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    if !authority.starts_with('[') && !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        return Err(format!("{host:?} is not a host name or address"));
    }
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("{p:?} is not a port (1..65535)")),
            Ok(n) => n,
        },
    };
    Ok((host.to_string(), port))
}

/// Unreserved, sub-delims, ':', '@', '/' and '%' (an escape already made by the caller).
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/%".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_port_and_base_path() {
        let t = Target::parse("http://127.0.0.1:8080/prefix/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.authority.as_str()), ("127.0.0.1", 8080, "127.0.0.1:8080"));
        assert_eq!(t.path("/v1/ping"), "/prefix/v1/ping");
        let t = Target::parse("HTTP://example.test").unwrap();
        assert_eq!((t.port, t.path("/v1/ping").as_str()), (80, "/v1/ping"));
        let t = Target::parse("http://[::1]:9000").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.authority.as_str()), ("::1", 9000, "[::1]:9000"));
    }

    #[test]
    fn refusals_say_why() {
        let reason = |u: &str| Target::parse(u).unwrap_err().reason;
        assert!(reason("https://x:443/").contains("https is not supported"));
        assert!(reason("ftp://x/").contains("only http://"));
        assert!(reason("http:///v1").contains("missing host"));
        assert!(reason("http://:80").contains("missing host"));
        assert!(reason("localhost:8080").contains("not a URL"));
        assert!(reason("garbage").contains("not a URL"));
        assert!(reason("http://x:99999").contains("not a port"));
        assert!(reason("http://x:0").contains("not a port"));
        assert!(reason("http://u:p@x/").contains("user info"));
        assert!(reason("http://x/?a=1").contains("query"));
        assert!(reason("http://x y/").contains("not a host"));
        assert!(reason("http://x/a b").contains("needs escaping"));
        assert!(reason("http://[::1/").contains("unclosed"));
        assert!(reason("http://[zz]:1/").contains("IPv6"));
    }
}
