//! One long-lived HTTP/1.1 keep-alive connection per load-generator connection, with
//! reconnects, and the pre-built requests it sends.
//!
//! Two implementations of the same connection:
//! - [`ClientKind::Raw`] (the default): writes a request's pre-built bytes (head and body
//!   in one buffer, so one `write` syscall) and reads the response into a reused buffer,
//!   framed by [`wire`]. Nothing is allocated per request.
//! - [`ClientKind::Hyper`]: hyper's `client::conn::http1` over the same socket. It builds
//!   a `Request` and a header map per request and reads the body as frames, so it costs
//!   the client more CPU, which the server, on the same cores, then lacks. It stays as an
//!   independent implementation to cross-check the raw client against (same counts, same
//!   latencies give or take the client's own cost).
//!
//! Sockets have `TCP_NODELAY` set: a request is one small write that must leave at once.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::target::Target;
use super::wire;

/// Largest response accepted (a batch of 1,000 people is well under 16 MiB).
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Which HTTP/1.1 client implementation the connections use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// The hand-written minimal client (default; cheapest).
    Raw,
    /// hyper's HTTP/1.1 client connection (for cross-checking).
    Hyper,
}

impl std::str::FromStr for ClientKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(ClientKind::Raw),
            "hyper" => Ok(ClientKind::Hyper),
            _ => Err(format!("{s:?}: expected raw or hyper")),
        }
    }
}

/// A request built once and sent many times.
#[derive(Clone)]
pub struct Prepared {
    /// Method and path, for error messages (`POST /v1/pmh-ids`).
    pub label: String,
    /// The whole request as sent by the raw client: head and body.
    wire: Bytes,
    /// For the hyper client.
    method: hyper::Method,
    uri: hyper::Uri,
    body: Bytes,
}

/// Headers every request carries, built once per run.
#[derive(Debug, Clone)]
pub struct Headers {
    host: HeaderValue,
    authorization: HeaderValue,
}

impl Headers {
    /// The `Host` and `Authorization: Bearer` values; the token must be visible ASCII.
    pub fn new(target: &Target, token: &str) -> Result<Headers, String> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be non-empty visible ASCII (no spaces or line breaks)".into());
        }
        let host = HeaderValue::from_str(&target.authority).map_err(|e| format!("Host header: {e}"))?;
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| format!("Authorization header: {e}"))?;
        authorization.set_sensitive(true);
        Ok(Headers { host, authorization })
    }
}

/// Only the label: the request bytes hold the token.
impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("label", &self.label).finish_non_exhaustive()
    }
}

impl Prepared {
    /// A `GET` of `path` (already prefixed with the base path).
    pub fn get(headers: &Headers, path: String) -> Result<Prepared, String> {
        Prepared::new(headers, hyper::Method::GET, path, None)
    }

    /// A `POST` of a JSON body to `path`.
    pub fn post_json(headers: &Headers, path: String, body: Vec<u8>) -> Result<Prepared, String> {
        Prepared::new(headers, hyper::Method::POST, path, Some(body))
    }

    fn new(headers: &Headers, method: hyper::Method, path: String, body: Option<Vec<u8>>) -> Result<Prepared, String> {
        let uri: hyper::Uri = path.parse().map_err(|e| format!("request path {path:?}: {e}"))?;
        let mut wire = Vec::with_capacity(160 + path.len() + body.as_ref().map_or(0, Vec::len));
        let head = |w: &mut Vec<u8>, s: &[u8]| w.extend_from_slice(s);
        head(&mut wire, method.as_str().as_bytes());
        head(&mut wire, b" ");
        head(&mut wire, path.as_bytes());
        head(&mut wire, b" HTTP/1.1\r\nhost: ");
        head(&mut wire, headers.host.as_bytes());
        head(&mut wire, b"\r\nauthorization: ");
        head(&mut wire, headers.authorization.as_bytes());
        head(&mut wire, b"\r\n");
        if let Some(b) = &body {
            head(&mut wire, format!("content-type: application/json\r\ncontent-length: {}\r\n", b.len()).as_bytes());
        }
        head(&mut wire, b"\r\n");
        let body = Bytes::from(body.unwrap_or_default());
        wire.extend_from_slice(&body);
        Ok(Prepared { label: format!("{method} {path}"), wire: Bytes::from(wire), method, uri, body })
    }

    fn hyper_request(&self, headers: &Headers) -> hyper::Request<Full<Bytes>> {
        let mut r = hyper::Request::new(Full::new(self.body.clone()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        let h = r.headers_mut();
        h.insert(HOST, headers.host.clone());
        h.insert(AUTHORIZATION, headers.authorization.clone());
        if !self.body.is_empty() {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        r
    }
}

/// How a request failed to get a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The TCP connection could not be opened.
    Connect,
    /// Reading or writing the socket failed, or the peer closed mid-response.
    Io,
    /// No complete response within the timeout.
    Timeout,
    /// The response broke HTTP/1.1 framing.
    Protocol,
}

/// A request that got no response.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The underlying error, for the report's first-error sample.
    pub message: String,
    /// Not a byte of the response arrived: on a reused connection, the server had most
    /// likely closed it while idle, and the request is retried once.
    stale: bool,
}

impl Failure {
    fn new(kind: FailureKind, message: impl std::fmt::Display) -> Failure {
        Failure { kind, message: message.to_string(), stale: false }
    }

    fn stale(message: impl std::fmt::Display) -> Failure {
        Failure { kind: FailureKind::Io, message: message.to_string(), stale: true }
    }
}

/// A response: its status and (borrowed from the connection's buffer) its body.
#[derive(Debug)]
pub struct Reply<'a> {
    /// Status code.
    pub status: u16,
    /// Body bytes, decoded from chunked coding if need be.
    pub body: &'a [u8],
}

/// One load-generator connection: the socket, opened lazily and re-opened after a failure
/// or a `Connection: close`.
pub struct Client {
    addr: SocketAddr,
    kind: ClientKind,
    headers: Headers,
    timeout: Duration,
    conn: Option<Conn>,
    /// Connections opened after the first one (each after a failure or a close).
    pub reconnects: u64,
    opened_once: bool,
    /// The last response said `Connection: close`.
    closing: bool,
}

enum Conn {
    Raw(RawConn),
    Hyper(HyperConn),
}

impl Client {
    /// A client for `addr` (nothing is opened yet).
    pub fn new(addr: SocketAddr, kind: ClientKind, headers: Headers, timeout: Duration) -> Client {
        Client { addr, kind, headers, timeout, conn: None, reconnects: 0, opened_once: false, closing: false }
    }

    /// Opens the connection now if it is not open (to fail fast on an unreachable server).
    pub async fn connect(&mut self) -> Result<(), Failure> {
        if self.conn.is_none() {
            let stream = match tokio::time::timeout(self.timeout, TcpStream::connect(self.addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(Failure::new(FailureKind::Connect, format!("connect {}: {e}", self.addr))),
                Err(_) => return Err(Failure::new(FailureKind::Connect, format!("connect {}: timed out", self.addr))),
            };
            stream.set_nodelay(true).map_err(|e| Failure::new(FailureKind::Connect, e))?;
            let conn = match self.kind {
                ClientKind::Raw => Conn::Raw(RawConn {
                    stream,
                    buf: Vec::with_capacity(16 << 10),
                    scratch: Vec::new(),
                    body: (0, 0),
                    chunked: false,
                }),
                ClientKind::Hyper => {
                    let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| Failure::new(FailureKind::Connect, e))?;
                    // The connection's I/O runs as its own task; it ends when `sender` drops.
                    tokio::spawn(async move {
                        let _ = driver.await;
                    });
                    Conn::Hyper(HyperConn { sender, body: Bytes::new() })
                }
            };
            if self.opened_once {
                self.reconnects += 1;
            }
            self.opened_once = true;
            self.conn = Some(conn);
        }
        Ok(())
    }

    /// Sends `req` and reads the whole response. On any failure the connection is
    /// dropped, and the next request opens a new one.
    pub async fn send(&mut self, req: &Prepared) -> Result<Reply<'_>, Failure> {
        if std::mem::take(&mut self.closing) {
            self.conn = None;
        }
        let reused = self.conn.is_some();
        self.connect().await?;
        let mut outcome = self.exchange(req).await;
        if reused && outcome.as_ref().is_err_and(|f| f.stale) {
            // The server had closed the idle connection (a keep-alive timeout) before
            // this request: any HTTP client retries that once on a new connection.
            self.connect().await?;
            outcome = self.exchange(req).await;
        }
        let (status, close) = outcome?;
        // The body stays readable; the connection is replaced on the next send.
        self.closing = close;
        let body = match self.conn.as_ref() {
            Some(Conn::Raw(c)) => c.body(),
            Some(Conn::Hyper(c)) => &c.body[..],
            None => &[][..],
        };
        Ok(Reply { status, body })
    }

    /// One request and response on the open connection; drops it on failure.
    async fn exchange(&mut self, req: &Prepared) -> Result<(u16, bool), Failure> {
        let timeout = self.timeout;
        let outcome = match self.conn.as_mut() {
            None => return Err(Failure::new(FailureKind::Connect, "not connected")),
            Some(Conn::Raw(c)) => tokio::time::timeout(timeout, c.send(&req.wire)).await,
            Some(Conn::Hyper(c)) => tokio::time::timeout(timeout, c.send(req.hyper_request(&self.headers))).await,
        };
        let outcome = outcome
            .unwrap_or_else(|_| Err(Failure::new(FailureKind::Timeout, format!("no response within {timeout:?}"))));
        if outcome.is_err() {
            self.conn = None;
        }
        outcome
    }
}

/// The hand-written client: a socket, the response buffer, and the last response's frame.
struct RawConn {
    stream: TcpStream,
    /// The last response's bytes (reused: cleared, never shrunk).
    buf: Vec<u8>,
    /// The last response's body when it came chunk-coded, decoded.
    scratch: Vec<u8>,
    /// The last response's body range in `buf` (when not chunked).
    body: (usize, usize),
    /// The last response was chunk-coded: its body is in `scratch`.
    chunked: bool,
}

impl RawConn {
    async fn send(&mut self, wire: &[u8]) -> Result<(u16, bool), Failure> {
        self.stream.write_all(wire).await.map_err(Failure::stale)?;
        self.buf.clear();
        let frame = loop {
            if let Some(f) =
                wire::parse_response(&self.buf, false).map_err(|e| Failure::new(FailureKind::Protocol, e))?
            {
                break f;
            }
            if self.buf.len() >= MAX_RESPONSE_BYTES {
                return Err(Failure::new(FailureKind::Protocol, "response larger than 16 MiB"));
            }
            self.buf.reserve(8 << 10);
            let read = match self.stream.read_buf(&mut self.buf).await {
                Ok(n) => n,
                Err(e) if self.buf.is_empty() => return Err(Failure::stale(e)),
                Err(e) => return Err(Failure::new(FailureKind::Io, e)),
            };
            if read == 0 {
                if self.buf.is_empty() {
                    return Err(Failure::stale("connection closed before the response"));
                }
                // End of stream: complete only if the body runs to the end of the connection.
                match wire::parse_response(&self.buf, true).map_err(|e| Failure::new(FailureKind::Protocol, e))? {
                    Some(f) => break f,
                    None => {
                        return Err(Failure::new(
                            FailureKind::Io,
                            format!("connection closed after {} bytes of a response", self.buf.len()),
                        ));
                    }
                }
            }
        };
        if frame.len != self.buf.len() {
            return Err(Failure::new(FailureKind::Protocol, "bytes after the response (none were asked for)"));
        }
        if frame.chunked {
            frame.body(&self.buf, &mut self.scratch);
        }
        self.body = (frame.body_start, frame.body_end);
        self.chunked = frame.chunked;
        Ok((frame.status, frame.close))
    }

    fn body(&self) -> &[u8] {
        if self.chunked { &self.scratch } else { &self.buf[self.body.0..self.body.1] }
    }
}

/// hyper's client connection and the last response's body.
struct HyperConn {
    sender: SendRequest<Full<Bytes>>,
    body: Bytes,
}

impl HyperConn {
    async fn send(&mut self, req: hyper::Request<Full<Bytes>>) -> Result<(u16, bool), Failure> {
        // hyper reports an error here only if no response head arrived.
        self.sender.ready().await.map_err(Failure::stale)?;
        let response = self.sender.send_request(req).await.map_err(Failure::stale)?;
        let status = response.status().as_u16();
        let close = response.headers().get(CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        self.body = response.into_body().collect().await.map_err(|e| Failure::new(FailureKind::Io, e))?.to_bytes();
        Ok((status, close))
    }
}
