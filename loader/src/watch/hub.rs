//! The hub's upload API as the uploader sees it: the [`Hub`] trait — one [`Upload`] in,
//! one [`Answer`] out, never an error type of its own — and [`HttpHub`], its
//! implementation over HTTP/1.1 with `ureq`. The folder logic and the tests speak the
//! trait only.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts};

use super::Mode;

/// The most of an answer that is read (an error body lists every bad row of a file of up
/// to 64 MiB; a little over that is still far from harmful).
const MAX_ANSWER_BYTES: u64 = 256 << 20;

/// One upload: a file's bytes and how to send them.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The file's content, as it is (the hub detects UTF-8 or Shift_JIS).
    pub body: Vec<u8>,
    /// `mode=diff` or `mode=full`.
    pub mode: Mode,
    /// `Content-Type` (see [`super::content_type`]).
    pub content_type: String,
    /// `Idempotency-Key` (see [`super::idempotency_key`]), if any.
    pub idempotency_key: Option<String>,
}

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body (JSON from the hub; anything from a proxy in front of it).
    pub body: String,
    /// `Idempotent-Replayed: true`: the hub answered a repeated key with the stored outcome.
    pub replayed: bool,
}

/// What came of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The hub (or a proxy) answered.
    Reply(Reply),
    /// No answer: connection refused or reset, DNS, TLS, a timeout. The reason, for the log.
    Unreachable(String),
}

/// Something that takes uploads. `Send + Sync`: an upload runs on a helper thread.
pub trait Hub: Send + Sync {
    /// Sends one upload and waits for the answer.
    fn upload(&self, upload: &Upload) -> Answer;
}

/// The hub over HTTP(S): `POST {server}/v1/subsidy/uploads?mode=…` with
/// `Authorization: Bearer <token>`. Timeouts: 10 s to connect, 120 s for the whole request
/// (a 64 MiB file at 10 Mbit/s takes under a minute, and the hub applies an upload in
/// seconds). No redirects are followed: a redirected POST is a setup error to show.
pub struct HttpHub {
    agent: ureq::Agent,
    /// The full upload URL without the query.
    url: String,
    /// `Bearer <token>`; never printed (`HttpHub` has no `Debug`).
    authorization: String,
}

impl HttpHub {
    /// A client for the hub at `server` (`https://hub.example` or with a path prefix; a URL
    /// that already ends in `/v1/subsidy/uploads` is taken as it is). `ca_file`: PEM
    /// certificates to trust instead of the built-in Mozilla roots (a hub whose
    /// certificate comes from a private CA, as on closed government networks).
    pub fn new(server: &str, token: &str, ca_file: Option<&Path>) -> Result<HttpHub, String> {
        let base = server.trim().trim_end_matches('/');
        let url =
            if base.ends_with("/v1/subsidy/uploads") { base.to_owned() } else { format!("{base}/v1/subsidy/uploads") };
        let parsed: ureq::http::Uri = url.parse().map_err(|e| format!("--server {server:?}: {e}"))?;
        match parsed.scheme_str() {
            Some("http" | "https") if parsed.host().is_some() => {}
            _ => return Err(format!("--server {server:?}: expected an http:// or https:// URL with a host")),
        }
        if parsed.query().is_some() {
            return Err(format!("--server {server:?}: no query string, please"));
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = ca_file {
            tls = tls.root_certs(RootCerts::Specific(Arc::new(read_ca_file(path)?)));
        }
        let config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("pmh-load/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(HttpHub { agent: ureq::Agent::new_with_config(config), url, authorization: format!("Bearer {token}") })
    }

    /// The URL uploads go to (without the query).
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The certificates of a PEM file (other PEM sections, such as keys, are skipped).
fn read_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("--ca-file {}: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!("--ca-file {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

impl Hub for HttpHub {
    fn upload(&self, upload: &Upload) -> Answer {
        let mut req = self
            .agent
            .post(format!("{}?mode={}", self.url, upload.mode))
            .header("Authorization", &self.authorization)
            .header("Content-Type", &upload.content_type)
            .header("Accept", "application/json");
        if let Some(key) = &upload.idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        let mut resp = match req.send(&upload.body[..]) {
            Ok(r) => r,
            Err(e) => return Answer::Unreachable(e.to_string()),
        };
        let status = resp.status().as_u16();
        let replayed = resp
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        match resp.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_vec() {
            Ok(bytes) => Answer::Reply(Reply { status, body: String::from_utf8_lossy(&bytes).into_owned(), replayed }),
            // The hub may have applied the upload; the same idempotency key next time
            // gets the stored answer, so this is "try again", not a verdict.
            Err(e) => Answer::Unreachable(format!("HTTP {status}, but the answer could not be read: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_and_ca_files() {
        let h = HttpHub::new("https://hub.example/pmh/", "t", None).expect("url");
        assert_eq!(h.url(), "https://hub.example/pmh/v1/subsidy/uploads");
        let h = HttpHub::new("http://127.0.0.1:8080/v1/subsidy/uploads", "t", None).expect("url");
        assert_eq!(h.url(), "http://127.0.0.1:8080/v1/subsidy/uploads");
        for bad in ["ftp://x", "hub.example", "https://hub.example/?a=b", ""] {
            assert!(HttpHub::new(bad, "t", None).is_err(), "{bad}");
        }
        let t = tempfile::tempdir().expect("tmp");
        let p = t.path().join("ca.pem");
        std::fs::write(&p, "not a certificate\n").expect("write");
        let e = HttpHub::new("https://hub.example", "t", Some(&p)).err().expect("no certificate");
        assert!(e.contains("no PEM certificate"), "{e}");
        std::fs::write(&p, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").expect("write");
        HttpHub::new("https://hub.example", "t", Some(&p)).map(|_| ()).expect("one certificate");
    }
}
