//! The watcher's memory: `.pmh-watch/sent.jsonl` in the watched folder, one JSON line per
//! final answer of the hub (accepted or refused — not the attempts that got no verdict).
//! Append-only and fsynced before the file is moved, so that after any crash the record is
//! there or the file is still in the folder (and its next attempt, under the same
//! idempotency key, gets the stored answer replayed). A torn last line is skipped with a
//! warning; it can only be the record of an answer that will be replayed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One line of the state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    /// When the answer came (RFC 3339, Japan time).
    pub at: String,
    /// The file's name in the folder when it was sent.
    pub file: String,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// `diff` or `full`.
    pub mode: String,
    /// The `Idempotency-Key` sent.
    pub idempotency_key: String,
    /// The HTTP status.
    pub status: u16,
    /// `accepted` or `refused`.
    pub outcome: String,
    /// The hub's upload id, when the answer had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// The hub's answer to an accepted upload (a one-line summary object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<serde_json::Value>,
}

/// `accepted`, as written in [`Entry::outcome`].
pub(crate) const ACCEPTED: &str = "accepted";
/// `refused`, as written in [`Entry::outcome`].
pub(crate) const REFUSED: &str = "refused";

/// The state file, open for appending, and what it says.
pub(crate) struct SentLog {
    file: File,
    path: PathBuf,
    /// Content hash → the record of its acceptance.
    accepted: HashMap<String, Entry>,
    /// Content hash → how many times it was refused.
    refusals: HashMap<String, u32>,
}

impl SentLog {
    /// Opens (creating) `state_dir/sent.jsonl` and reads it. Returns the log and warnings
    /// about lines that could not be read.
    pub fn open(state_dir: &Path) -> io::Result<(SentLog, Vec<String>)> {
        let path = state_dir.join("sent.jsonl");
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        let mut log = SentLog { file, path, accepted: HashMap::new(), refusals: HashMap::new() };
        let mut warnings = Vec::new();
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Entry>(line) {
                Ok(e) => log.remember(e),
                Err(e) => warnings.push(format!("{} line {}: skipped, unreadable ({e})", log.path.display(), i + 1)),
            }
        }
        // A torn last line must not swallow the next record.
        if text.last().is_some_and(|b| *b != b'\n') {
            log.file.seek(SeekFrom::End(0))?;
            log.file.write_all(b"\n")?;
            log.file.sync_data()?;
        }
        Ok((log, warnings))
    }

    fn remember(&mut self, e: Entry) {
        if e.outcome == ACCEPTED {
            self.accepted.entry(e.sha256.clone()).or_insert(e);
        } else {
            *self.refusals.entry(e.sha256).or_default() += 1;
        }
    }

    /// The record of this content's acceptance, if it was accepted.
    pub fn accepted(&self, sha256: &str) -> Option<&Entry> {
        self.accepted.get(sha256)
    }

    /// How many times this content was refused.
    pub fn refusals(&self, sha256: &str) -> u32 {
        self.refusals.get(sha256).copied().unwrap_or(0)
    }

    /// Appends a record and waits until it is on disk.
    pub fn record(&mut self, e: Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(&e).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.remember(e);
        Ok(())
    }
}

/// Takes the folder's lock (`.pmh-watch/lock`, `flock`): two watchers on one folder would
/// race for the same files. The lock goes with the process, however it ends.
pub(crate) fn lock(state_dir: &Path) -> io::Result<File> {
    let path = state_dir.join("lock");
    let file = OpenOptions::new().write(true).create(true).truncate(false).open(&path)?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `flock` on a descriptor this function owns for the duration of the
        // call; it touches no memory.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is held: another pmh-load watch runs on this folder", path.display()),
                )
            } else {
                e
            });
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sha: &str, outcome: &str) -> Entry {
        Entry {
            at: "2026-11-22T10:00:00+09:00".into(),
            file: "a.csv".into(),
            sha256: sha.into(),
            mode: "diff".into(),
            idempotency_key: format!("sha256-{sha}"),
            status: if outcome == ACCEPTED { 200 } else { 422 },
            outcome: outcome.into(),
            upload_id: None,
            answer: None,
        }
    }

    #[test]
    fn survives_reopening_and_a_torn_last_line() {
        let t = tempfile::tempdir().expect("tmp");
        {
            let (mut log, w) = SentLog::open(t.path()).expect("open");
            assert!(w.is_empty());
            log.record(entry("aa", REFUSED)).expect("record");
            log.record(entry("aa", REFUSED)).expect("record");
            log.record(entry("bb", ACCEPTED)).expect("record");
        }
        // A crash in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(t.path().join("sent.jsonl")).expect("open");
        f.write_all(br#"{"at":"2026-1"#).expect("torn");
        drop(f);
        let (mut log, w) = SentLog::open(t.path()).expect("reopen");
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(log.refusals("aa"), 2);
        assert!(log.accepted("aa").is_none() && log.accepted("bb").is_some());
        log.record(entry("cc", ACCEPTED)).expect("record after the torn line");
        let (log, w) = SentLog::open(t.path()).expect("reopen");
        assert_eq!(w.len(), 1);
        assert!(log.accepted("cc").is_some(), "the record after a torn line is read");
    }

    #[test]
    fn one_watcher_per_folder() {
        let t = tempfile::tempdir().expect("tmp");
        let held = lock(t.path()).expect("first");
        let e = lock(t.path()).expect_err("second");
        assert!(e.to_string().contains("another pmh-load watch"), "{e}");
        drop(held);
        lock(t.path()).expect("free again");
    }
}
