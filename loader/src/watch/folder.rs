//! [`Watcher`]: the folder side of `pmh-load watch`.
//!
//! Each poll lists the folder, notes every candidate file's size and mtime, and walks the
//! candidates in name order: a file unchanged for the settle time is read, hashed, and —
//! unless that content was accepted before — sent; the answer decides where it goes:
//!
//! ```text
//!  DIR/a.csv ──200──▶ record ─▶ done/a.csv.result.json ─▶ rename ─▶ done/a.csv
//!            ──4xx──▶ record ─▶ failed/a.csv.errors.json + .errors.txt ─▶ rename ─▶ failed/a.csv
//!            ──none, 5xx, 408, 429, 401…──▶ stays; nothing is tried before the backoff ends
//! ```
//!
//! Result files are written under a temporary dot-name, fsynced and renamed, before the
//! file itself is renamed; folder entries are fsynced after. A rename within one file
//! system is atomic: a file is in the folder or in `done/`/`failed/`, never half-moved.
//! A name already taken in `done/` or `failed/` gets `-2`, `-3`, … before its extension.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use super::sent::{self, ACCEPTED, Entry, REFUSED, SentLog};
use super::{Answer, Hub, Mode, Reply, Upload, Verdict};
use crate::{Encoding, Format};

/// The subfolder accepted files go to.
pub const DONE: &str = "done";
/// The subfolder refused files go to.
pub const FAILED: &str = "failed";
/// The watcher's own subfolder (state file, lock).
pub const STATE: &str = ".pmh-watch";

/// How a [`Watcher`] works.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The watched folder.
    pub dir: PathBuf,
    /// The mode of a file whose name does not start with `full`.
    pub mode: Mode,
    /// The format of every file; `None`: by extension (`.json` → JSON, else CSV).
    pub format: Option<Format>,
    /// The encoding of CSV files; `Auto` sends no charset (the hub detects it).
    pub encoding: Encoding,
    /// How often the folder is listed (default 2 s).
    pub interval: Duration,
    /// How long a file's size and mtime must stay unchanged before it is sent (default
    /// 5 s): long enough for a writer that pauses, short enough to keep the day moving.
    pub settle: Duration,
    /// The first wait after a failed attempt (default 1 s); it doubles up to
    /// `backoff_max` (default 60 s), each wait drawn between half and all of its step.
    pub backoff_min: Duration,
    /// The longest wait between attempts.
    pub backoff_max: Duration,
    /// After a stop request, how long an upload in flight is waited for before it is
    /// abandoned and its file left in place (default 30 s; the HTTP timeout is 120 s).
    pub shutdown_grace: Duration,
}

impl WatchOptions {
    /// The defaults for a folder.
    pub fn new(dir: impl Into<PathBuf>) -> WatchOptions {
        WatchOptions {
            dir: dir.into(),
            mode: Mode::Diff,
            format: None,
            encoding: Encoding::Auto,
            interval: Duration::from_secs(2),
            settle: Duration::from_secs(5),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Why a watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The folder, its subfolders, the state file or the lock.
    #[error("{path}: {source}")]
    Folder {
        /// What could not be used.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A candidate file as last seen, and since when it has looked so.
#[derive(Debug, Clone, Copy)]
struct Seen {
    len: u64,
    mtime: Option<SystemTime>,
    since: Instant,
}

/// What became of one file in a poll.
enum Step {
    /// Filed (or gone): go on with the next file.
    Next,
    /// Not now (no verdict, a local failure, or the file changed): hold this and every
    /// later file until the next poll (or the end of the backoff).
    Hold,
    /// A stop was requested during the upload and its answer did not come in time.
    Abandoned,
}

/// Watches one folder; see the module doc. One per folder (a lock file sees to it).
pub struct Watcher {
    opts: WatchOptions,
    hub: Arc<dyn Hub>,
    sent: SentLog,
    /// Held for the watcher's life: the folder's lock.
    _lock: File,
    /// Candidate files by name, as last seen.
    seen: HashMap<OsString, Seen>,
    backoff: Backoff,
    /// No upload is tried before this (set after a failed attempt).
    retry_at: Option<Instant>,
    /// The last error listing the folder, so that it is logged once, not every poll.
    list_error: Option<String>,
}

impl Watcher {
    /// Opens a folder for watching: creates `done/`, `failed/` and `.pmh-watch/`, takes
    /// the lock, reads the state file.
    pub fn open(opts: WatchOptions, hub: Arc<dyn Hub>) -> Result<Watcher, WatchError> {
        let folder = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WatchError::Folder { path, source }
        };
        let meta = fs::metadata(&opts.dir).map_err(folder(&opts.dir))?;
        if !meta.is_dir() {
            return Err(folder(&opts.dir)(io::Error::new(io::ErrorKind::NotADirectory, "not a directory")));
        }
        for sub in [DONE, FAILED, STATE] {
            let p = opts.dir.join(sub);
            fs::create_dir_all(&p).map_err(folder(&p))?;
        }
        let state = opts.dir.join(STATE);
        let lock = sent::lock(&state).map_err(folder(&state.join("lock")))?;
        let (sent, warnings) = SentLog::open(&state).map_err(folder(&state.join("sent.jsonl")))?;
        for w in warnings {
            log(&w);
        }
        let backoff = Backoff::new(opts.backoff_min, opts.backoff_max);
        Ok(Watcher { opts, hub, sent, _lock: lock, seen: HashMap::new(), backoff, retry_at: None, list_error: None })
    }

    /// Polls until `stop` is set, then returns once the upload in flight (if any) is
    /// answered or abandoned. Never gives up on an unreachable hub.
    pub fn run(&mut self, stop: &AtomicBool) {
        log(&format!(
            "watching {} every {} ms (settle {} ms, default mode {})",
            self.opts.dir.display(),
            self.opts.interval.as_millis(),
            self.opts.settle.as_millis(),
            self.opts.mode
        ));
        while !stop.load(Ordering::Relaxed) {
            self.poll(stop);
            let mut wake = Instant::now() + self.opts.interval;
            if let Some(t) = self.retry_at {
                wake = wake.min(t);
            }
            sleep_until(wake, stop);
        }
        log("stopped");
    }

    /// One pass over the folder (see the module doc). Public for tests that step by hand.
    pub fn poll(&mut self, stop: &AtomicBool) {
        let now = Instant::now();
        if self.retry_at.is_some_and(|t| now >= t) {
            self.retry_at = None;
        }
        for name in self.list(now) {
            if stop.load(Ordering::Relaxed) || self.retry_at.is_some_and(|t| Instant::now() < t) {
                return;
            }
            let Some(seen) = self.seen.get(&name).copied() else { continue };
            if now.duration_since(seen.since) < self.opts.settle {
                // Still being written (or just arrived): it and every later name wait.
                return;
            }
            match self.process(&name, seen, stop) {
                Step::Next => {}
                Step::Hold | Step::Abandoned => return,
            }
        }
    }

    /// Lists the candidates in name order and updates what was seen of them.
    fn list(&mut self, now: Instant) -> Vec<OsString> {
        let entries = match fs::read_dir(&self.opts.dir) {
            Ok(rd) => rd,
            Err(e) => {
                let msg = format!("cannot list {}: {e}", self.opts.dir.display());
                if self.list_error.as_deref() != Some(&msg) {
                    log(&msg);
                    self.list_error = Some(msg);
                }
                return Vec::new();
            }
        };
        self.list_error = None;
        let mut names = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if is_ignored(&name) {
                continue;
            }
            // `DirEntry::metadata` does not follow symlinks: only regular files count.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let (len, mtime) = (meta.len(), meta.modified().ok());
            match self.seen.get_mut(&name) {
                Some(s) if s.len == len && s.mtime == mtime => {}
                Some(s) => *s = Seen { len, mtime, since: now },
                None => {
                    self.seen.insert(name.clone(), Seen { len, mtime, since: now });
                }
            }
            names.push(name);
        }
        // Sorted first, so forgetting the files that went is not quadratic in a large folder.
        names.sort();
        self.seen.retain(|n, _| names.binary_search(n).is_ok());
        names
    }

    fn process(&mut self, name: &OsStr, seen: Seen, stop: &AtomicBool) -> Step {
        let shown = name.to_string_lossy().into_owned();
        let path = self.opts.dir.join(name);
        let body = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.seen.remove(name);
                return Step::Next;
            }
            Err(e) => return self.hold(&shown, &format!("cannot read it: {e}")),
        };
        // Changed while it was read: it is not complete after all.
        let now = fs::symlink_metadata(&path).ok().map(|m| (m.len(), m.modified().ok()));
        if now != Some((seen.len, seen.mtime)) || body.len() as u64 != seen.len {
            log(&format!("{shown}: changed while being read; waiting for it to settle"));
            self.seen.remove(name);
            return Step::Hold;
        }
        let sha = super::content_sha256(&body);
        if let Some(prev) = self.sent.accepted(&sha).cloned() {
            return self.file_duplicate(name, &shown, &prev);
        }
        let mode = Mode::for_file_name(&shown, self.opts.mode);
        let format = self.opts.format.unwrap_or_else(|| Format::from_file_name(&shown));
        let key = super::idempotency_key(&sha, self.sent.refusals(&sha));
        let upload = Upload {
            body,
            mode,
            content_type: super::content_type(format, self.opts.encoding),
            idempotency_key: Some(key.clone()),
        };
        let bytes = upload.body.len();
        log(&format!("{shown}: sending {bytes} bytes, mode {mode}, key {key}"));
        let Some(answer) = self.upload(upload, stop) else {
            log(&format!(
                "{shown}: stopping; the upload in flight was not answered within {} s and is abandoned, the file stays \
                 (the next attempt uses the same key, so the hub cannot apply it twice)",
                self.opts.shutdown_grace.as_secs()
            ));
            return Step::Abandoned;
        };
        let reply = match answer {
            Answer::Unreachable(why) => return self.hold(&shown, &format!("hub unreachable: {why}")),
            Answer::Reply(r) => r,
        };
        let entry = |outcome: &str, upload_id: Option<String>, answer: Option<serde_json::Value>| Entry {
            at: now_jst(),
            file: shown.clone(),
            sha256: sha.clone(),
            mode: mode.as_str().to_owned(),
            idempotency_key: key.clone(),
            status: reply.status,
            outcome: outcome.to_owned(),
            upload_id,
            answer,
        };
        match Verdict::of(&reply) {
            Verdict::Accepted => {
                let answer: Option<serde_json::Value> = serde_json::from_str(&reply.body).ok();
                let upload_id = answer.as_ref().and_then(|a| a.get("uploadId")?.as_str().map(str::to_owned));
                if let Err(e) = self.sent.record(entry(ACCEPTED, upload_id, answer)) {
                    return self.hold(&shown, &format!("accepted, but the state file cannot be written: {e}"));
                }
                let result = pretty(&reply.body);
                match self.file_into(name, DONE, &[(".result.json", result.as_bytes())]) {
                    Ok(to) => {
                        self.sent_ok();
                        log(&format!("{shown}: accepted, {}; moved to {}", super::summary_line(&reply), to.display()));
                        Step::Next
                    }
                    Err(e) => self.hold(&shown, &format!("accepted, but it cannot be moved to {DONE}/: {e}")),
                }
            }
            Verdict::Refused => {
                if let Err(e) = self.sent.record(entry(REFUSED, None, None)) {
                    return self.hold(&shown, &format!("refused, but the state file cannot be written: {e}"));
                }
                self.file_refusal(name, &shown, &reply)
            }
            Verdict::TryLater => {
                let why = super::refusal_headline(&reply);
                self.hold(&shown, &format!("the hub cannot take it now ({why})"))
            }
            Verdict::Setup => {
                let why = super::refusal_headline(&reply);
                self.hold(&shown, &format!("{why} — check --server and the token file; the file is not to blame"))
            }
        }
    }

    /// Files a refused file with the hub's report.
    fn file_refusal(&mut self, name: &OsStr, shown: &str, reply: &Reply) -> Step {
        let report = super::refusal_report(reply);
        let json = pretty(&reply.body);
        let extras: [(&str, &[u8]); 2] = [(".errors.json", json.as_bytes()), (".errors.txt", report.as_bytes())];
        match self.file_into(name, FAILED, &extras) {
            Ok(to) => {
                self.sent_ok();
                let details = report.lines().count().saturating_sub(1);
                log(&format!(
                    "{shown}: refused, {}; {details} detail(s); moved to {}",
                    super::refusal_headline(reply),
                    to.display()
                ));
                Step::Next
            }
            Err(e) => self.hold(shown, &format!("refused, but it cannot be moved to {FAILED}/: {e}")),
        }
    }

    /// Files a copy of content accepted before, without sending it.
    fn file_duplicate(&mut self, name: &OsStr, shown: &str, prev: &Entry) -> Step {
        let done = self.opts.dir.join(DONE);
        let result_name = |n: &OsStr| {
            let mut r = n.to_os_string();
            r.push(".result.json");
            r
        };
        // The same file, moved after a crash that came between the record and the move:
        // its result file may be there already.
        let recovering = prev.file == shown && !done.join(name).exists() && done.join(result_name(name)).exists();
        let moved = if recovering {
            self.file_into(name, DONE, &[])
        } else {
            let note = serde_json::json!({
                "notSent": format!("the same content was accepted before, as {} at {}", prev.file, prev.at),
                "sha256": prev.sha256,
                "previous": prev.answer,
            });
            let note = serde_json::to_string_pretty(&note).unwrap_or_default() + "\n";
            self.file_into(name, DONE, &[(".result.json", note.as_bytes())])
        };
        match moved {
            Ok(to) => {
                log(&format!(
                    "{shown}: not sent, the same content was accepted before (as {}, upload {}); moved to {}",
                    prev.file,
                    prev.upload_id.as_deref().unwrap_or("?"),
                    to.display()
                ));
                Step::Next
            }
            Err(e) => self.hold(shown, &format!("already sent, but it cannot be moved to {DONE}/: {e}")),
        }
    }

    /// Moves `DIR/name` into `DIR/sub/` under a free name, its companion files
    /// (`<name><suffix>`) first; returns where it went (`sub/<name>`).
    fn file_into(&self, name: &OsStr, sub: &str, extras: &[(&str, &[u8])]) -> io::Result<PathBuf> {
        let dir = self.opts.dir.join(sub);
        // Made at start; made again if someone removed it since.
        fs::create_dir_all(&dir)?;
        let target = free_name(&dir, name, extras.iter().map(|(s, _)| *s));
        for (suffix, bytes) in extras {
            let mut final_name = target.clone();
            final_name.push(suffix);
            let mut tmp = OsString::from(".");
            tmp.push(&final_name);
            tmp.push(".tmp");
            let tmp = dir.join(tmp);
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, dir.join(&final_name))?;
        }
        fs::rename(self.opts.dir.join(name), dir.join(&target))?;
        sync_dir(&dir)?;
        sync_dir(&self.opts.dir)?;
        Ok(Path::new(sub).join(target))
    }

    /// Sends on a helper thread and waits for the answer; after a stop request, waits
    /// at most `shutdown_grace` more (`None`: abandoned).
    fn upload(&self, upload: Upload, stop: &AtomicBool) -> Option<Answer> {
        let (tx, rx) = mpsc::channel();
        let hub = self.hub.clone();
        let spawned = std::thread::Builder::new().name("pmh-upload".into()).spawn(move || {
            let _ = tx.send(hub.upload(&upload));
        });
        if let Err(e) = spawned {
            return Some(Answer::Unreachable(format!("cannot start the upload thread: {e}")));
        }
        let mut deadline: Option<Instant> = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(a) => return Some(a),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Some(Answer::Unreachable("the upload thread ended without an answer".into()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if stop.load(Ordering::Relaxed) {
                let d = *deadline.get_or_insert_with(|| Instant::now() + self.opts.shutdown_grace);
                if Instant::now() >= d {
                    return None;
                }
            }
        }
    }

    /// An attempt without a verdict: log it, back off, hold the queue.
    fn hold(&mut self, shown: &str, why: &str) -> Step {
        let wait = self.backoff.next();
        self.retry_at = Some(Instant::now() + wait);
        log(&format!("{shown}: not done: {why}; attempt {} failed, next in {:.1?}", self.backoff.failures, wait));
        Step::Hold
    }

    /// A verdict came: the hub is there, the backoff starts over.
    fn sent_ok(&mut self) {
        self.backoff.reset();
        self.retry_at = None;
    }
}

/// Dotfiles (the state folder among them), `*.tmp` and `*.part` are never sent.
fn is_ignored(name: &OsStr) -> bool {
    let n = name.to_string_lossy();
    n.starts_with('.') || n.ends_with(".tmp") || n.ends_with(".part")
}

/// `name` if neither it nor any `<name><suffix>` exists in `dir`, else `stem-2.ext`,
/// `stem-3.ext`, …
fn free_name<'a>(dir: &Path, name: &OsStr, suffixes: impl Iterator<Item = &'a str> + Clone) -> OsString {
    let taken = |n: &OsStr| {
        dir.join(n).symlink_metadata().is_ok()
            || suffixes.clone().any(|s| {
                let mut c = n.to_os_string();
                c.push(s);
                dir.join(c).symlink_metadata().is_ok()
            })
    };
    if !taken(name) {
        return name.to_os_string();
    }
    let p = Path::new(name);
    let stem = p.file_stem().unwrap_or(name);
    let ext = p.extension();
    for i in 2u64.. {
        let mut c = stem.to_os_string();
        c.push(format!("-{i}"));
        if let Some(ext) = ext {
            c.push(".");
            c.push(ext);
        }
        if !taken(&c) {
            return c;
        }
    }
    unreachable!("u64 names run out")
}

/// Makes the entries of a directory (renames into and out of it) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The body, pretty-printed when it is JSON, with a final newline.
fn pretty(body: &str) -> String {
    let mut s = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.to_owned());
    s.push('\n');
    s
}

/// Sleeps until `deadline` or a stop request, whichever is first.
fn sleep_until(deadline: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

/// One log line to stderr: `pmh-load watch: <time> <message>`.
fn log(msg: &str) {
    eprintln!("pmh-load watch: {} {msg}", now_jst());
}

/// Now, as RFC 3339 in Japan time (`2026-11-22T10:15:30+09:00`).
fn now_jst() -> String {
    let secs = pmh_engine::date::unix_now();
    let date = pmh_engine::date::Date::tokyo_date_of(secs);
    let tod = (secs + 9 * 3600).rem_euclid(86_400);
    format!("{date}T{:02}:{:02}:{:02}+09:00", tod / 3600, tod / 60 % 60, tod % 60)
}

/// Exponential backoff with jitter: steps of `min`, 2·`min`, … up to `max`, each wait a
/// random point between half and all of its step (so that many municipalities' uploaders
/// do not come back to a restarted hub in the same second).
struct Backoff {
    min: Duration,
    max: Duration,
    /// Failed attempts since the last verdict.
    failures: u32,
    /// xorshift state: the jitter needs no cryptographic quality.
    rng: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos());
        Backoff { min, max: max.max(min), failures: 0, rng: h.finish() | 1 }
    }

    fn next(&mut self) -> Duration {
        let step = self.min.saturating_mul(1u32 << self.failures.min(20)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        step.mul_f64(fraction)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A hub that answers from a script (then 200s) and remembers what it was sent.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<Vec<Answer>>,
        got: Mutex<Vec<Upload>>,
    }

    impl Hub for Scripted {
        fn upload(&self, upload: &Upload) -> Answer {
            let n = {
                let mut got = self.got.lock().expect("lock");
                got.push(upload.clone());
                got.len()
            };
            let mut answers = self.answers.lock().expect("lock");
            if answers.is_empty() {
                let body = format!(
                    r#"{{"uploadId":"131016-{n}","mode":"{}","rows":1,"inserted":1,"updated":0,"deleted":0,"unchanged":0}}"#,
                    upload.mode
                );
                Answer::Reply(Reply { status: 200, body, replayed: false })
            } else {
                answers.remove(0)
            }
        }
    }

    fn opts(dir: &Path) -> WatchOptions {
        WatchOptions {
            interval: Duration::from_millis(10),
            settle: Duration::from_millis(100),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(80),
            shutdown_grace: Duration::from_millis(200),
            ..WatchOptions::new(dir)
        }
    }

    /// Polls until nothing is waiting in the folder or 5 s have passed.
    fn poll_until_empty(w: &mut Watcher, dir: &Path) {
        let stop = AtomicBool::new(false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            w.poll(&stop);
            let left = fs::read_dir(dir)
                .expect("list")
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()) && !is_ignored(&e.file_name()))
                .count();
            if left == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("files left in {}", dir.display());
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).expect("list").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn sends_in_name_order_with_modes_and_keys_and_never_twice() {
        let t = tempfile::tempdir().expect("tmp");
        let hub = Arc::new(Scripted::default());
        let mut w = Watcher::open(opts(t.path()), hub.clone()).expect("open");
        fs::write(t.path().join("b.json"), "[]").expect("write");
        fs::write(t.path().join("a.csv"), "x\n").expect("write");
        fs::write(t.path().join("full-1.csv"), "y\n").expect("write");
        fs::write(t.path().join("copy.csv"), "x\n").expect("write");
        for ignored in [".hidden", "c.tmp", "d.part"] {
            fs::write(t.path().join(ignored), "z").expect("write");
        }
        poll_until_empty(&mut w, t.path());
        let got = hub.got.lock().expect("lock");
        let summary: Vec<(Mode, &str, &str)> = got
            .iter()
            .map(|u| (u.mode, u.content_type.as_str(), std::str::from_utf8(&u.body).unwrap_or("?")))
            .collect();
        assert_eq!(
            summary,
            [(Mode::Diff, "text/csv", "x\n"), (Mode::Diff, "application/json", "[]"), (Mode::Full, "text/csv", "y\n")],
            "a.csv, b.json, full-1.csv in name order; copy.csv is a.csv's content and not sent"
        );
        assert_eq!(
            got[0].idempotency_key.as_deref(),
            Some(format!("sha256-{}", super::super::content_sha256(b"x\n")).as_str())
        );
        assert_eq!(
            names(&t.path().join(DONE)),
            [
                "a.csv",
                "a.csv.result.json",
                "b.json",
                "b.json.result.json",
                "copy.csv",
                "copy.csv.result.json",
                "full-1.csv",
                "full-1.csv.result.json"
            ]
        );
        let note = fs::read_to_string(t.path().join(DONE).join("copy.csv.result.json")).expect("note");
        assert!(note.contains("notSent") && note.contains("131016-1"), "{note}");
        assert_eq!(names(t.path()), [".hidden", ".pmh-watch", "c.tmp", "d.part", "done", "failed"]);
        drop(got);
        // A new watcher remembers; the same name again lands beside the first.
        drop(w);
        let mut w = Watcher::open(opts(t.path()), hub.clone()).expect("reopen");
        fs::write(t.path().join("a.csv"), "x\n").expect("write");
        poll_until_empty(&mut w, t.path());
        assert_eq!(hub.got.lock().expect("lock").len(), 3, "not sent again after a restart");
        assert!(
            t.path().join(DONE).join("a-2.csv").exists() && t.path().join(DONE).join("a-2.csv.result.json").exists()
        );
    }

    #[test]
    fn a_file_still_being_written_holds_back_later_names() {
        let t = tempfile::tempdir().expect("tmp");
        let hub = Arc::new(Scripted::default());
        let mut w = Watcher::open(WatchOptions { settle: Duration::from_millis(300), ..opts(t.path()) }, hub.clone())
            .expect("open");
        let stop = AtomicBool::new(false);
        let mut f = File::create(t.path().join("a.csv")).expect("create");
        fs::write(t.path().join("b.csv"), "b\n").expect("write");
        for i in 0..10 {
            writeln!(f, "line {i}").expect("append");
            f.flush().expect("flush");
            w.poll(&stop);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(hub.got.lock().expect("lock").is_empty(), "nothing is sent while a.csv grows, not even b.csv");
        drop(f);
        poll_until_empty(&mut w, t.path());
        let got = hub.got.lock().expect("lock");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body.len(), (0..10).map(|i| format!("line {i}\n").len()).sum::<usize>());
    }

    #[test]
    fn refusals_are_filed_and_a_resent_refused_file_gets_a_new_key() {
        let t = tempfile::tempdir().expect("tmp");
        let hub = Arc::new(Scripted::default());
        let refusal = r#"{"error":{"code":"invalid_input","message":"1 error(s) in the file; nothing was changed","details":[{"row":2,"field":"validTo","rule":"date","message":"not a date","value":"2026-13-01"}]}}"#;
        hub.answers.lock().expect("lock").extend([
            Answer::Unreachable("connection refused".into()),
            Answer::Reply(Reply { status: 503, body: "{}".into(), replayed: false }),
            Answer::Reply(Reply { status: 422, body: refusal.into(), replayed: false }),
        ]);
        let mut w = Watcher::open(opts(t.path()), hub.clone()).expect("open");
        fs::write(t.path().join("a.csv"), "x\n").expect("write");
        poll_until_empty(&mut w, t.path());
        let failed = t.path().join(FAILED);
        assert_eq!(names(&failed), ["a.csv", "a.csv.errors.json", "a.csv.errors.txt"]);
        let txt = fs::read_to_string(failed.join("a.csv.errors.txt")).expect("txt");
        assert_eq!(
            txt,
            "HTTP 422 invalid_input: 1 error(s) in the file; nothing was changed\n\
             row 2, field validTo, rule date: not a date (value \"2026-13-01\")\n"
        );
        let keys: Vec<Option<String>> =
            hub.got.lock().expect("lock").iter().map(|u| u.idempotency_key.clone()).collect();
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().all(|k| *k == keys[0]), "retries use the same key: {keys:?}");
        // Moved back by a person after the hub's setup was fixed: judged afresh.
        fs::rename(failed.join("a.csv"), t.path().join("a.csv")).expect("move back");
        poll_until_empty(&mut w, t.path());
        let got = hub.got.lock().expect("lock");
        assert_eq!(got.len(), 4);
        assert_eq!(got[3].idempotency_key, keys[0].as_ref().map(|k| format!("{k}-1")));
        assert!(t.path().join(DONE).join("a.csv").exists());
    }

    #[test]
    fn a_crash_between_the_record_and_the_move_is_finished_on_the_next_start() {
        let t = tempfile::tempdir().expect("tmp");
        let hub = Arc::new(Scripted::default());
        let mut w = Watcher::open(opts(t.path()), hub.clone()).expect("open");
        fs::write(t.path().join("a.csv"), "x\n").expect("write");
        poll_until_empty(&mut w, t.path());
        drop(w);
        // As if the process died after the record and the result file, before the rename.
        let done = t.path().join(DONE);
        let result = fs::read_to_string(done.join("a.csv.result.json")).expect("result");
        fs::rename(done.join("a.csv"), t.path().join("a.csv")).expect("undo the move");
        let mut w = Watcher::open(opts(t.path()), hub.clone()).expect("reopen");
        poll_until_empty(&mut w, t.path());
        assert_eq!(hub.got.lock().expect("lock").len(), 1, "not sent again");
        assert_eq!(names(&done), ["a.csv", "a.csv.result.json"], "moved beside its result, not as a-2.csv");
        assert_eq!(fs::read_to_string(done.join("a.csv.result.json")).expect("result"), result, "the answer is kept");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let waits: Vec<f64> = (0..9).map(|_| b.next().as_secs_f64()).collect();
        for (i, w) in waits.iter().enumerate() {
            let step = (1u64 << i).min(60) as f64;
            assert!(*w >= step / 2.0 && *w <= step, "wait {i}: {w} for a step of {step}");
        }
        b.reset();
        assert!(b.next() <= Duration::from_secs(1));
    }
}
