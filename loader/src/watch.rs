//! The batch uploader — a municipality's second way in: `pmh-load send` uploads one file
//! to the hub's upload API (`POST /v1/subsidy/uploads`), `pmh-load watch` is a service
//! that uploads every complete new file dropped in a shared folder, once.
//!
//! ## Layout
//! - this file — what both commands share: [`Mode`] (全件 `full` / 差分 `diff`), the
//!   [`Verdict`] on an answer, the token file, content types, idempotency keys, and the
//!   human-readable summary and error report of an answer.
//! - [`hub`] — the [`Hub`] trait (one [`Upload`] in, one [`Answer`] out) and [`HttpHub`],
//!   its implementation over HTTP/1.1 with `ureq`. The folder logic speaks only the trait,
//!   so it is tested without a server.
//! - [`folder`] — [`Watcher`]: poll the folder, wait for files to settle, send them in
//!   name order, file them into `done/` or `failed/`, back off while the hub is away.
//! - `sent` (private) — the state file `.pmh-watch/sent.jsonl`: what was sent, by content.
//!
//! ## Decisions
//! - **Polling, not inotify.** Shared folders are often network mounts (SMB, NFS) where a
//!   remote writer produces no inotify event; listing one directory every 2 s costs
//!   nothing. A file is *complete* once its size and mtime have been seen unchanged for
//!   the settle time (5 s): nothing has to be agreed with the program that writes it.
//! - **Exactly once, by content.** The SHA-256 of a file is recorded (append-only, fsynced)
//!   once the hub has answered, and is sent as the `Idempotency-Key`: a copy of content
//!   already accepted is filed without sending, and a crash between the hub's answer and
//!   the record only makes the next attempt get the stored answer replayed.
//! - **Name order, head of line.** Differential files must be applied in the order they
//!   were made; a file that is still being written, or that is waiting for the hub, holds
//!   back every file named after it. A refused file does not: it is filed in `failed/` for
//!   a person, and the next files go on.
//! - **Three kinds of failure.** The file's fault (400/403 with rows/409/413/415/422): filed
//!   in `failed/` with the hub's report. The hub's or the network's (unreachable, 5xx,
//!   408, 429): retried with exponential backoff for as long as the service runs. The
//!   setup's (401, 404, a 403 without rows: a wrong token or URL): retried the same way,
//!   because no file is to blame and a person fixing the setup should not have to move
//!   files back.
//! - **A blocking client on a helper thread.** `ureq` is small and synchronous; an upload
//!   runs on its own thread so that a stop request is noticed while it is in flight (the
//!   answer is waited for a grace period, then the file is left in place; its idempotency
//!   key makes the next attempt harmless).
//! - **TLS by rustls on `ring`.** The files carry My Numbers, so the client speaks TLS
//!   itself (`https://` URLs; the Mozilla root certificates of `webpki-roots`, or those of
//!   `--ca-file` for a hub behind a private CA); `ring` and not `aws-lc-rs`, whose C build
//!   takes minutes. `http://` is for a local TLS proxy or tests.

pub mod folder;
pub mod hub;
mod sent;

use std::fmt::{self, Write as _};
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use folder::{WatchError, WatchOptions, Watcher};
pub use hub::{Answer, HttpHub, Hub, Reply, Upload};

use crate::{Encoding, Format};

/// How an upload is applied (the query parameter `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// 差分連携: upserts and deletes of the file's rows.
    #[default]
    Diff,
    /// 全件連携: the municipality's certificates become exactly the file's.
    Full,
}

impl Mode {
    /// The name as sent (`diff`, `full`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Diff => "diff",
            Mode::Full => "full",
        }
    }

    /// The mode a watched file is sent with: `full` when its name starts with `full`
    /// (any case, e.g. `full-20261122.csv`), else `default`.
    pub fn for_file_name(name: &str, default: Mode) -> Mode {
        if name.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("full")) { Mode::Full } else { default }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown mode name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?}: expected diff or full")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Mode, UnknownMode> {
        match s {
            "diff" => Ok(Mode::Diff),
            "full" => Ok(Mode::Full),
            _ => Err(UnknownMode(s.to_owned())),
        }
    }
}

/// What an answer means for the file that was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 200: applied.
    Accepted,
    /// The file itself was refused and will be refused again as it is: 400 (unreadable
    /// body), 403 listing rows outside the token's municipality or 公費負担者番号, 409
    /// (idempotency key reused with another body), 413, 415, 422.
    Refused,
    /// The hub cannot take it now: 408, 429, 5xx (and no answer at all). Try again later.
    TryLater,
    /// The setup is wrong, not the file: 401 (token), 404 (URL), a 403 without rows (the
    /// token's role), anything else unexpected. Nothing to blame on the file.
    Setup,
}

impl Verdict {
    /// The verdict on a reply. A 403 is the file's fault only when it lists rows.
    pub fn of(reply: &Reply) -> Verdict {
        match reply.status {
            200 => Verdict::Accepted,
            403 if !ErrorReport::parse(&reply.body).is_some_and(|r| r.details.is_empty()) => Verdict::Refused,
            400 | 409 | 413 | 415 | 422 => Verdict::Refused,
            408 | 429 | 500..=599 => Verdict::TryLater,
            _ => Verdict::Setup,
        }
    }
}

/// Reads a token file: one line, the bearer token, whitespace trimmed. Refused when the
/// file is readable or writable by group or others (as ssh refuses such a key): the token
/// lets whoever holds it replace the municipality's certificates.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("token file {shown}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "token file {shown} is accessible by group or others (mode {:03o}); it must be readable by its \
                 owner only: chmod 600 {shown}",
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(|e| format!("token file {shown}: {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("token file {shown} is empty"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("token file {shown}: the token must be one line of printable ASCII without spaces"));
    }
    Ok(token.to_owned())
}

/// The `Content-Type` of a file: `application/json` for JSON, `text/csv` otherwise, with
/// `; charset=...` for a CSV when an encoding other than `auto` is given (without it the
/// hub detects UTF-8 or Shift_JIS itself).
pub fn content_type(format: Format, encoding: Encoding) -> String {
    match (format, encoding) {
        (Format::Json, _) => "application/json".to_owned(),
        (Format::Csv, Encoding::Auto) => "text/csv".to_owned(),
        (Format::Csv, e) => format!("text/csv; charset={}", e.as_str()),
    }
}

/// The SHA-256 of a file's content, in lower-case hex.
pub fn content_sha256(body: &[u8]) -> String {
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(body) {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The `Idempotency-Key` of a file's content: `sha256-<hex>`, or `sha256-<hex>-<n>` once
/// the same content has been refused `n` times. The hub replays a refusal to a repeated
/// key; counting refusals lets a file moved back from `failed/` (after the hub's setup was
/// fixed, say) be judged afresh, while a repeat after a lost answer still replays.
pub fn idempotency_key(sha256_hex: &str, refusals: u32) -> String {
    if refusals == 0 { format!("sha256-{sha256_hex}") } else { format!("sha256-{sha256_hex}-{refusals}") }
}

/// Parses a duration such as `500ms`, `2s`, `1m`, `1h` (a positive whole number and a unit).
pub use crate::config::parse_duration;

/// The summary line of an accepted upload's answer
/// (`{"uploadId","mode","rows","inserted","updated","deleted","unchanged"}`).
pub fn summary_line(reply: &Reply) -> String {
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap_or_default();
    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let s = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("?").to_owned();
    let mut line = format!(
        "upload {} ({}): {} rows, inserted {}, updated {}, deleted {}, unchanged {}",
        s("uploadId"),
        s("mode"),
        n("rows"),
        n("inserted"),
        n("updated"),
        n("deleted"),
        n("unchanged")
    );
    if reply.replayed {
        line.push_str(" (replayed: this content was uploaded before with the same key; nothing changed now)");
    }
    line
}

/// The hub's error body (`{"error": {"code", "message", "details": [...]}}`), read
/// leniently: an answer from a proxy in front of the hub may be anything.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorReport {
    /// The stable error code (`invalid_input`, `forbidden`, …).
    pub code: String,
    /// The hub's explanation.
    pub message: String,
    /// Every bad row and field.
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
}

/// One item of [`ErrorReport::details`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorDetail {
    /// 1-based data row (header not counted); 0 or absent for the file or the request.
    #[serde(default)]
    pub row: Option<u64>,
    /// The field (PMH API name).
    #[serde(default)]
    pub field: String,
    /// The rule that failed.
    #[serde(default)]
    pub rule: String,
    /// What is wrong.
    #[serde(default)]
    pub message: String,
    /// The offending value, My Numbers masked by the hub.
    #[serde(default)]
    pub value: Option<String>,
}

impl ErrorReport {
    /// Reads the error shape; `None` when the body is not in it.
    pub fn parse(body: &str) -> Option<ErrorReport> {
        #[derive(Deserialize)]
        struct Body {
            error: ErrorReport,
        }
        serde_json::from_str::<Body>(body).ok().map(|b| b.error)
    }
}

impl fmt::Display for ErrorDetail {
    /// `row N, field F, rule R: message (value "V")`, as `pmh-load check` prints a bad row.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(row) = self.row.filter(|r| *r > 0) {
            write!(f, "row {row}, ")?;
        }
        write!(f, "field {}, rule {}: {}", self.field, self.rule, self.message)?;
        if let Some(v) = self.value.as_deref().filter(|v| !v.is_empty()) {
            f.write_str(" (value \"")?;
            for c in v.chars() {
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    c => f.write_char(c)?,
                }
            }
            f.write_str("\")")?;
        }
        Ok(())
    }
}

/// The headline of a refusal: `HTTP 422 invalid_input: 3 error(s) in the file; …`, or
/// the start of the body when it is not in the hub's error shape.
pub fn refusal_headline(reply: &Reply) -> String {
    match ErrorReport::parse(&reply.body) {
        Some(r) => format!("HTTP {} {}: {}", reply.status, r.code, r.message),
        None => {
            let text: String = reply.body.chars().take(200).map(|c| if c.is_control() { ' ' } else { c }).collect();
            format!("HTTP {}: {}", reply.status, text.trim())
        }
    }
}

/// The human-readable report of a refusal: the headline, then one line per detail.
pub fn refusal_report(reply: &Reply) -> String {
    let mut out = refusal_headline(reply);
    out.push('\n');
    for d in ErrorReport::parse(&reply.body).map(|r| r.details).unwrap_or_default() {
        let _ = writeln!(out, "{d}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reply(status: u16, body: &str) -> Reply {
        Reply { status, body: body.to_owned(), replayed: false }
    }

    #[test]
    fn verdicts() {
        let rows = r#"{"error":{"code":"forbidden","message":"m","details":[{"row":1,"field":"f","rule":"r","message":"x"}]}}"#;
        let role = r#"{"error":{"code":"forbidden","message":"m","details":[]}}"#;
        assert_eq!(Verdict::of(&reply(200, "{}")), Verdict::Accepted);
        assert_eq!(Verdict::of(&reply(403, rows)), Verdict::Refused);
        assert_eq!(Verdict::of(&reply(403, role)), Verdict::Setup);
        assert_eq!(Verdict::of(&reply(403, "<html>")), Verdict::Refused);
        for s in [400, 409, 413, 415, 422] {
            assert_eq!(Verdict::of(&reply(s, "")), Verdict::Refused, "{s}");
        }
        for s in [408, 429, 500, 502, 503] {
            assert_eq!(Verdict::of(&reply(s, "")), Verdict::TryLater, "{s}");
        }
        for s in [201, 301, 401, 404, 405] {
            assert_eq!(Verdict::of(&reply(s, "")), Verdict::Setup, "{s}");
        }
    }

    #[test]
    fn modes_keys_and_content_types() {
        assert_eq!(Mode::for_file_name("full-20261122.csv", Mode::Diff), Mode::Full);
        assert_eq!(Mode::for_file_name("FULL.csv", Mode::Diff), Mode::Full);
        assert_eq!(Mode::for_file_name("diff-20261122.csv", Mode::Diff), Mode::Diff);
        assert_eq!(Mode::for_file_name("a.csv", Mode::Full), Mode::Full);
        assert_eq!(Mode::for_file_name("ful", Mode::Diff), Mode::Diff);
        assert_eq!(idempotency_key("ab", 0), "sha256-ab");
        assert_eq!(idempotency_key("ab", 2), "sha256-ab-2");
        assert_eq!(content_type(Format::Json, Encoding::ShiftJis), "application/json");
        assert_eq!(content_type(Format::Csv, Encoding::Auto), "text/csv");
        assert_eq!(content_type(Format::Csv, Encoding::ShiftJis), "text/csv; charset=shift_jis");
        assert_eq!(content_sha256(b"").len(), 64);
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("0s").is_err() && parse_duration("5").is_err() && parse_duration("s").is_err());
    }

    #[test]
    fn reports() {
        let body = r#"{"error":{"code":"invalid_input","message":"2 error(s) in the file; nothing was changed","details":[
            {"row":3,"field":"myNumber","rule":"check digit","message":"the check digit does not match","value":"**********19"},
            {"row":0,"field":"(file)","rule":"header","message":"no \"x\" column"}]}}"#;
        let r = reply(422, body);
        assert_eq!(
            refusal_report(&r),
            "HTTP 422 invalid_input: 2 error(s) in the file; nothing was changed\n\
             row 3, field myNumber, rule check digit: the check digit does not match (value \"**********19\")\n\
             field (file), rule header: no \"x\" column\n"
        );
        assert_eq!(refusal_report(&reply(413, "<html>\ntoo big</html>")), "HTTP 413: <html> too big</html>\n");
        let ok = r#"{"uploadId":"131016-1","mode":"diff","rows":3,"inserted":1,"updated":1,"deleted":0,"unchanged":1}"#;
        assert_eq!(
            summary_line(&reply(200, ok)),
            "upload 131016-1 (diff): 3 rows, inserted 1, updated 1, deleted 0, unchanged 1"
        );
    }

    #[cfg(unix)]
    #[test]
    fn token_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().expect("tmp");
        let p = t.path().join("token");
        std::fs::write(&p, "  secret-token \n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_token_file(&p), Ok("secret-token".to_owned()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = read_token_file(&p).expect_err("group-readable");
        assert!(e.contains("chmod 600") && e.contains("640"), "{e}");
        std::fs::write(&p, "a\nb\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(read_token_file(&p).expect_err("two lines").contains("one line"));
    }
}
