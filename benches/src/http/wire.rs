//! HTTP/1.1 response framing for the lean client: where a response ends in a byte buffer.
//!
//! The load generator sends one request at a time per connection (no pipelining), so a
//! response is complete when its head has been read and then its body, delimited by
//! `Content-Length`, by chunked transfer coding, or by the end of the connection. The
//! head is parsed by `httparse` (the parser hyper itself uses); this module adds the
//! body framing, interim `1xx` responses, and `Connection: close`. It allocates nothing
//! unless asked to decode a chunked body.

use std::fmt;

/// Headers a response may carry; more is a protocol error (our server sends about five).
const MAX_HEADERS: usize = 64;

/// A complete response found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Status code of the final (non-1xx) response.
    pub status: u16,
    /// Bytes the response takes in the buffer, interim responses included.
    pub len: usize,
    /// Where the body is: `buf[body_start..body_end]`, still chunk-coded if `chunked`.
    pub body_start: usize,
    /// End of the body bytes (for chunked: of the last chunk's data section).
    pub body_end: usize,
    /// The body is in chunked transfer coding; [`Frame::body`] decodes it.
    pub chunked: bool,
    /// The server will close the connection after this response.
    pub close: bool,
}

impl Frame {
    /// The body's bytes: a slice of `buf` or, if chunk-coded, decoded into `scratch`.
    pub fn body<'a>(&self, buf: &'a [u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
        if !self.chunked {
            return &buf[self.body_start..self.body_end];
        }
        scratch.clear();
        let mut pos = self.body_start;
        // The frame was validated by `parse_response`, so every chunk size parses.
        while let Ok(httparse::Status::Complete((n, size))) = httparse::parse_chunk_size(&buf[pos..]) {
            if size == 0 {
                break;
            }
            let start = pos + n;
            let end = start + size as usize;
            scratch.extend_from_slice(&buf[start..end]);
            pos = end + 2;
        }
        scratch
    }
}

/// A response that breaks HTTP/1.1 framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

/// Looks for one complete response at the start of `buf`. `Ok(None)`: read more bytes.
/// `eof`: the peer has closed, which ends a body delimited by the connection's end.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Frame>, WireError> {
    let mut offset = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&buf[offset..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(WireError(format!("bad response head: {e}"))),
        };
        let status = response.code.unwrap_or(0);
        let body_start = offset + head_len;
        if (100..200).contains(&status) && status != 101 {
            // Interim response (e.g. 100 Continue): no body, the real one follows.
            offset = body_start;
            continue;
        }
        let mut close = response.version == Some(0);
        let mut length: Option<usize> = None;
        let mut chunked = false;
        for h in response.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| WireError(format!("bad Content-Length {:?}", String::from_utf8_lossy(h.value))))?;
                if length.is_some_and(|l| l != n) {
                    return Err(WireError("two different Content-Length headers".into()));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"").trim_ascii();
                if !last.eq_ignore_ascii_case(b"chunked") {
                    return Err(WireError(format!(
                        "unsupported Transfer-Encoding {:?}",
                        String::from_utf8_lossy(h.value)
                    )));
                }
                chunked = true;
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            }
        }
        let frame = |body_end: usize, len: usize, chunked: bool, close: bool| Frame {
            status,
            len,
            body_start,
            body_end,
            chunked,
            close,
        };
        if status == 204 || status == 304 {
            return Ok(Some(frame(body_start, body_start, false, close)));
        }
        if chunked {
            // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3).
            return Ok(chunked_end(buf, body_start)?.map(|(data_end, end)| frame(data_end, end, true, close)));
        }
        if let Some(n) = length {
            let end = body_start + n;
            return Ok((buf.len() >= end).then(|| frame(end, end, false, close)));
        }
        // Neither: the body runs to the end of the connection.
        return Ok(eof.then(|| frame(buf.len(), buf.len(), false, true)));
    }
}

/// Walks chunks from `pos`: `(end of the last data, end of the message)` once complete.
fn chunked_end(buf: &[u8], mut pos: usize) -> Result<Option<(usize, usize)>, WireError> {
    loop {
        let (n, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(WireError("bad chunk size".into())),
        };
        if size == 0 {
            let data_end = pos;
            let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            return match httparse::parse_headers(&buf[pos + n..], &mut trailers) {
                Ok(httparse::Status::Complete((m, _))) => Ok(Some((data_end, pos + n + m))),
                Ok(httparse::Status::Partial) => Ok(None),
                Err(e) => Err(WireError(format!("bad chunked trailer: {e}"))),
            };
        }
        let size = usize::try_from(size).map_err(|_| WireError("chunk too large".into()))?;
        let data_end = (pos + n).checked_add(size).ok_or_else(|| WireError("chunk too large".into()))?;
        if buf.len() < data_end + 2 {
            return Ok(None);
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return Err(WireError("chunk data not followed by CRLF".into()));
        }
        pos = data_end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `msg` fed one byte at a time: no frame before the last byte, then one.
    fn whole(msg: &[u8]) -> (Frame, Vec<u8>) {
        for i in 0..msg.len() {
            assert_eq!(parse_response(&msg[..i], false), Ok(None), "complete early at {i}");
        }
        let f = parse_response(msg, false).unwrap().expect("complete");
        assert_eq!(f.len, msg.len());
        let mut scratch = Vec::new();
        let body = f.body(msg, &mut scratch).to_vec();
        (f, body)
    }

    #[test]
    fn content_length() {
        let (f, body) = whole(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}",
        );
        assert_eq!((f.status, f.close, f.chunked), (200, false, false));
        assert_eq!(body, b"{\"status\":\"ok\"}");
        let (f, body) = whole(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((f.status, body.len()), (404, 0));
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let msg = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (f, body) = whole(msg);
        assert!(f.chunked);
        assert_eq!(body, b"hello, world");
        let (_, body) =
            whole(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n");
        assert_eq!(body, b"0123456789");
        // Transfer-Encoding wins over a Content-Length.
        let (_, body) =
            whole(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n");
        assert_eq!(body, b"ab");
    }

    #[test]
    fn interim_no_body_and_close() {
        let (f, body) = whole(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!((f.status, body.as_slice()), (201, &b"{}"[..]));
        let (f, _) = whole(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        assert_eq!((f.status, f.close), (204, true));
        let (f, _) = whole(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx");
        assert!(f.close, "HTTP/1.0 closes unless keep-alive");
        let (f, _) = whole(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx");
        assert!(!f.close);
    }

    #[test]
    fn body_until_close() {
        let msg = b"HTTP/1.1 200 OK\r\n\r\nabc";
        assert_eq!(parse_response(msg, false), Ok(None));
        let f = parse_response(msg, true).unwrap().unwrap();
        assert_eq!((f.status, f.close, f.body(msg, &mut Vec::new())), (200, true, &b"abc"[..]));
    }

    #[test]
    fn framing_errors() {
        let err = |m: &[u8]| parse_response(m, false).unwrap_err().0;
        assert!(err(b"HTTP/1.1 2x0 OK\r\n\r\n").contains("bad response head"));
        assert!(err(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").contains("Content-Length"));
        assert!(err(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").contains("two different"));
        assert!(err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").contains("unsupported"));
        assert!(err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").contains("chunk size"));
        assert!(err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc").contains("CRLF"));
    }
}
