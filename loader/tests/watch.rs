//! The batch uploader against a fake hub on a real socket: `Watcher` in-process (a stop
//! flag ends it), `pmh-load send` / `watch` as processes for exit codes and signals.
//!
//! The fake hub is a `std::net::TcpListener` on 127.0.0.1 answering hand-written HTTP/1.1
//! (one request per connection, `Connection: close`); it stops when dropped, and by itself
//! after 60 s at most.
#![cfg(unix)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pmh_loader::watch::{Answer, HttpHub, Hub, Upload, WatchOptions, Watcher};

const TOKEN: &str = "muni-131016-token";

/// A request as the fake hub received it.
#[derive(Debug, Clone)]
struct Request {
    /// `/v1/subsidy/uploads?mode=diff`
    target: String,
    /// Lower-case names.
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// What the fake hub answers.
struct Canned {
    status: u16,
    body: String,
    /// Answer only once the hub is dropped (an upload that hangs).
    hang: bool,
}

impl Canned {
    fn new(status: u16, body: impl Into<String>) -> Canned {
        Canned { status, body: body.into(), hang: false }
    }
}

type Responder = Box<dyn Fn(&Request, usize) -> Canned + Send>;

/// A fake upload API: records every request, answers through `respond(request, index)`;
/// a repeated `Idempotency-Key` with the same body gets the first answer replayed, like
/// the real hub.
struct FakeHub {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    fn start(port: u16, respond: impl Fn(&Request, usize) -> Canned + Send + 'static) -> FakeHub {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the fake hub");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, st) = (requests.clone(), stop.clone());
        let respond: Responder = Box::new(respond);
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut replays: HashMap<String, (Vec<u8>, u16, String)> = HashMap::new();
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &respond, &reqs, &st, &mut replays),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeHub { addr, requests, stop, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    respond: &Responder,
    requests: &Mutex<Vec<Request>>,
    stop: &AtomicBool,
    replays: &mut HashMap<String, (Vec<u8>, u16, String)>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    assert!(!headers.contains_key("transfer-encoding"), "the fake hub expects a Content-Length: {headers:?}");
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let req = Request { target, headers, body };
    let index = {
        let mut r = requests.lock().expect("lock");
        r.push(req.clone());
        r.len() - 1
    };
    let key = req.header("idempotency-key").to_owned();
    let (status, answer, replayed) = match replays.get(&key) {
        Some((b, status, answer)) if !key.is_empty() && *b == req.body => (*status, answer.clone(), true),
        _ => {
            let c = respond(&req, index);
            if c.hang {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return;
            }
            if !key.is_empty() && c.status < 500 {
                replays.insert(key, (req.body.clone(), c.status, c.body.clone()));
            }
            (c.status, c.body, false)
        }
    };
    let mut out = stream;
    let extra = if replayed { "Idempotent-Replayed: true\r\n" } else { "" };
    let _ = write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = out.flush();
}

/// The summary the hub answers an accepted upload with.
fn accepted(req: &Request, index: usize) -> Canned {
    let mode = if req.target.ends_with("mode=full") { "full" } else { "diff" };
    Canned::new(
        200,
        format!(
            r#"{{"uploadId":"131016-{index}","mode":"{mode}","rows":2,"inserted":1,"updated":1,"deleted":0,"unchanged":0}}"#
        ),
    )
}

const REFUSAL: &str = r#"{"error":{"code":"invalid_input","message":"2 error(s) in the file; nothing was changed","details":[{"row":1,"field":"myNumber","rule":"check digit","message":"the check digit does not match","value":"**********19"},{"row":3,"field":"validTo","rule":"date","message":"not a date","value":"2026-13-01"}]}}"#;

/// A port free now and (almost surely) still free a moment later.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn token_file(dir: &Path, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("token");
    std::fs::write(&p, format!("{TOKEN}\n")).expect("write token");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    p
}

fn fast(dir: &Path) -> WatchOptions {
    WatchOptions {
        interval: Duration::from_millis(20),
        settle: Duration::from_millis(150),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        shutdown_grace: Duration::from_millis(300),
        ..WatchOptions::new(dir)
    }
}

/// A watcher running on its own thread until dropped.
struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start(opts: WatchOptions, hub: Arc<dyn Hub>) -> Running {
        let mut w = Watcher::open(opts, hub).expect("open the watcher");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || w.run(&s));
        Running { stop, thread: Some(thread) }
    }

    /// Asks it to stop and waits; returns how long that took.
    fn stop(mut self) -> Duration {
        let t = Instant::now();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            h.join().expect("the watcher panicked");
        }
        t.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

fn http(url: &str) -> Arc<dyn Hub> {
    Arc::new(HttpHub::new(url, TOKEN, None).expect("client"))
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A hub that counts the attempts that got no answer.
struct Counting {
    inner: Arc<dyn Hub>,
    unreachable: AtomicUsize,
}

impl Hub for Counting {
    fn upload(&self, upload: &Upload) -> Answer {
        let a = self.inner.upload(upload);
        if matches!(a, Answer::Unreachable(_)) {
            self.unreachable.fetch_add(1, Ordering::Relaxed);
        }
        a
    }
}

fn csv(tag: &str) -> String {
    format!("municipalityCode,historyKey\n131016,{tag}\n")
}

// ---------------------------------------------------------------------------------------
// The watcher, in-process.

#[test]
fn a_new_file_is_sent_once_and_the_same_content_never_again() {
    let hub = FakeHub::start(0, accepted);
    let t = tempfile::tempdir().expect("tmp");
    let dir = t.path();
    let w = Running::start(fast(dir), http(&hub.url()));
    std::fs::write(dir.join("20261122.csv"), csv("a")).expect("write");
    wait_for("done/20261122.csv", Duration::from_secs(10), || dir.join("done/20261122.csv").exists());
    // Another name, the same bytes: filed without sending.
    std::fs::write(dir.join("copy-of-20261122.csv"), csv("a")).expect("write");
    // A JSON file named full-*: mode=full, application/json.
    std::fs::write(dir.join("full-20261123.json"), "[]").expect("write");
    wait_for("both filed", Duration::from_secs(10), || {
        dir.join("done/copy-of-20261122.csv").exists() && dir.join("done/full-20261123.json").exists()
    });
    assert!(w.stop() < Duration::from_secs(2), "an idle watcher stops at once");

    let reqs = hub.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let (a, full) = (&reqs[0], &reqs[1]);
    assert_eq!(a.target, "/v1/subsidy/uploads?mode=diff");
    assert_eq!(a.header("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(a.header("content-type"), "text/csv");
    assert_eq!(
        a.header("idempotency-key"),
        format!("sha256-{}", pmh_loader::watch::content_sha256(csv("a").as_bytes()))
    );
    assert_eq!(a.body, csv("a").as_bytes());
    assert_eq!(full.target, "/v1/subsidy/uploads?mode=full");
    assert_eq!(full.header("content-type"), "application/json");

    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("done/20261122.csv.result.json")).expect("result"))
            .expect("the result file is JSON");
    assert_eq!(result["uploadId"], "131016-0");
    assert_eq!(result["inserted"], 1);
    let note = std::fs::read_to_string(dir.join("done/copy-of-20261122.csv.result.json")).expect("note");
    assert!(note.contains("notSent") && note.contains("20261122.csv"), "{note}");
    let state = std::fs::read_to_string(dir.join(".pmh-watch/sent.jsonl")).expect("state");
    assert_eq!(state.lines().count(), 2, "{state}");
    assert!(state.contains(r#""outcome":"accepted""#) && state.contains("131016-0"), "{state}");
    // Nothing is left behind: no temporary files, nothing in failed/.
    let mut done: Vec<String> = std::fs::read_dir(dir.join("done"))
        .expect("done")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    done.sort();
    assert_eq!(done.len(), 6, "{done:?}");
    assert!(done.iter().all(|n| !n.starts_with('.')), "{done:?}");
    assert_eq!(std::fs::read_dir(dir.join("failed")).expect("failed").count(), 0);
}

#[test]
fn a_half_written_file_is_left_alone_until_complete() {
    let hub = FakeHub::start(0, accepted);
    let t = tempfile::tempdir().expect("tmp");
    let dir = t.path();
    // A settle time well above the pauses of the writer below.
    let w = Running::start(WatchOptions { settle: Duration::from_millis(700), ..fast(dir) }, http(&hub.url()));
    let path = dir.join("slow.csv");
    let mut f = std::fs::File::create(&path).expect("create");
    let mut expected = Vec::new();
    let writing = Instant::now();
    for i in 0..30 {
        let line = format!("131016,row-{i}\n");
        f.write_all(line.as_bytes()).expect("append");
        f.flush().expect("flush");
        expected.extend_from_slice(line.as_bytes());
        std::thread::sleep(Duration::from_millis(50));
        assert!(hub.requests().is_empty(), "sent after {:?} while still being written", writing.elapsed());
        assert!(path.exists());
    }
    drop(f);
    wait_for("done/slow.csv", Duration::from_secs(10), || dir.join("done/slow.csv").exists());
    w.stop();
    let reqs = hub.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body, expected, "the complete file was sent");
}

#[test]
fn a_restarted_hub_gets_the_file_once_it_is_back() {
    let port = free_port();
    let first = FakeHub::start(port, accepted);
    let t = tempfile::tempdir().expect("tmp");
    let dir = t.path();
    let counting = Arc::new(Counting { inner: http(&first.url()), unreachable: AtomicUsize::new(0) });
    let w = Running::start(fast(dir), counting.clone());
    std::fs::write(dir.join("1.csv"), csv("one")).expect("write");
    wait_for("done/1.csv", Duration::from_secs(10), || dir.join("done/1.csv").exists());
    assert_eq!(first.requests().len(), 1);
    drop(first); // the hub goes down: connections are refused

    std::fs::write(dir.join("2.csv"), csv("two")).expect("write");
    wait_for("three refused attempts", Duration::from_secs(10), || counting.unreachable.load(Ordering::Relaxed) >= 3);
    assert!(dir.join("2.csv").exists(), "kept while the hub is away");
    assert!(!dir.join("done/2.csv").exists() && !dir.join("failed/2.csv").exists());

    let second = FakeHub::start(port, accepted); // back, on the same port
    wait_for("done/2.csv", Duration::from_secs(10), || dir.join("done/2.csv").exists());
    w.stop();
    let reqs = second.requests();
    assert_eq!(reqs.len(), 1, "sent once when the hub was back: {reqs:?}");
    assert_eq!(reqs[0].body, csv("two").as_bytes());
    let failures = counting.unreachable.load(Ordering::Relaxed);
    assert!((3..100).contains(&failures), "backoff, not a busy loop: {failures} attempts");
}

#[test]
fn a_422_is_filed_in_failed_and_a_5xx_is_retried() {
    let hub = FakeHub::start(0, |req, _| {
        if req.body.starts_with(b"bad") {
            return Canned::new(422, REFUSAL);
        }
        // The good file: two 5xx (not recorded for replay), then accepted.
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        match SEEN.fetch_add(1, Ordering::Relaxed) {
            0 => Canned::new(503, r#"{"error":{"code":"unavailable","message":"shutting down","details":[]}}"#),
            1 => Canned::new(500, r#"{"error":{"code":"internal","message":"internal error","details":[]}}"#),
            n => accepted(req, n),
        }
    });
    let t = tempfile::tempdir().expect("tmp");
    let dir = t.path();
    let w = Running::start(fast(dir), http(&hub.url()));
    std::fs::write(dir.join("a-bad.csv"), "bad\n").expect("write");
    std::fs::write(dir.join("b-good.csv"), csv("good")).expect("write");
    wait_for("done/b-good.csv", Duration::from_secs(10), || dir.join("done/b-good.csv").exists());
    w.stop();

    let failed = dir.join("failed");
    assert!(failed.join("a-bad.csv").exists() && !dir.join("a-bad.csv").exists());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(failed.join("a-bad.csv.errors.json")).expect("errors.json"))
            .expect("JSON");
    assert_eq!(json, serde_json::from_str::<serde_json::Value>(REFUSAL).expect("refusal"));
    let txt = std::fs::read_to_string(failed.join("a-bad.csv.errors.txt")).expect("errors.txt");
    assert_eq!(
        txt.lines().collect::<Vec<_>>(),
        [
            "HTTP 422 invalid_input: 2 error(s) in the file; nothing was changed",
            r#"row 1, field myNumber, rule check digit: the check digit does not match (value "**********19")"#,
            r#"row 3, field validTo, rule date: not a date (value "2026-13-01")"#,
        ]
    );
    let reqs = hub.requests();
    let good: Vec<&Request> = reqs.iter().filter(|r| !r.body.starts_with(b"bad")).collect();
    assert_eq!(good.len(), 3, "503, 500, then 200");
    assert!(good.iter().all(|r| r.header("idempotency-key") == good[0].header("idempotency-key")));
    assert_eq!(reqs.iter().filter(|r| r.body.starts_with(b"bad")).count(), 1, "a refusal is not retried");
}

#[test]
fn a_stop_during_an_unanswered_upload_leaves_the_file_in_place() {
    let hub = FakeHub::start(0, |_, _| Canned { status: 200, body: String::new(), hang: true });
    let t = tempfile::tempdir().expect("tmp");
    let dir = t.path();
    let w = Running::start(fast(dir), http(&hub.url()));
    std::fs::write(dir.join("a.csv"), csv("a")).expect("write");
    wait_for("the upload to arrive", Duration::from_secs(10), || !hub.requests().is_empty());
    let took = w.stop();
    assert!(took < Duration::from_secs(3), "abandoned after the grace period, took {took:?}");
    assert!(dir.join("a.csv").exists(), "the file stays for the next start");
    assert!(!dir.join("done/a.csv").exists() && !dir.join("failed/a.csv").exists());
    let state = std::fs::read_to_string(dir.join(".pmh-watch/sent.jsonl")).expect("state");
    assert!(state.is_empty(), "no verdict, no record: {state}");
}

#[test]
fn a_second_watcher_on_the_same_folder_is_refused() {
    let t = tempfile::tempdir().expect("tmp");
    let hub = http("http://127.0.0.1:9");
    let _first = Watcher::open(fast(t.path()), hub.clone()).expect("first");
    let second = Watcher::open(fast(t.path()), hub).err().expect("second must be refused");
    assert!(second.to_string().contains("another pmh-load watch"), "{second}");
}

// ---------------------------------------------------------------------------------------
// The binary.

fn pmh_load(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pmh-load")).args(args).output().expect("run pmh-load")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn send_exits_0_1_2() {
    let hub = FakeHub::start(0, |req, i| match &req.body[..] {
        b"bad\n" => Canned::new(422, REFUSAL),
        b"boom\n" => Canned::new(500, r#"{"error":{"code":"internal","message":"internal error","details":[]}}"#),
        _ => accepted(req, i),
    });
    let t = tempfile::tempdir().expect("tmp");
    let token = token_file(t.path(), 0o600);
    let file = |name: &str, body: &str| {
        let p = t.path().join(name);
        std::fs::write(&p, body).expect("write");
        p.display().to_string()
    };
    let (good, bad, boom) = (file("good.csv", &csv("g")), file("bad.csv", "bad\n"), file("boom.csv", "boom\n"));
    let url = hub.url();
    let tok = token.display().to_string();
    let base = ["--server", url.as_str(), "--token-file", tok.as_str()];

    let ok = pmh_load(&[&["send", good.as_str()][..], &base, &["--mode", "full", "--encoding", "shift_jis"]].concat());
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("upload 131016-0 (full): 2 rows, inserted 1, updated 1"), "{}", text(&ok.stdout));
    let again =
        pmh_load(&[&["send", good.as_str()][..], &base, &["--mode", "full", "--encoding", "shift_jis"]].concat());
    assert_eq!(again.status.code(), Some(0));
    assert!(text(&again.stdout).contains("replayed"), "{}", text(&again.stdout));

    let refused = pmh_load(&[&["send", bad.as_str()][..], &base].concat());
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    let err = text(&refused.stderr);
    assert!(
        err.contains(r#"row 3, field validTo, rule date: not a date (value "2026-13-01")"#)
            && err.contains("HTTP 422 invalid_input"),
        "{err}"
    );

    let failed = pmh_load(&[&["send", boom.as_str()][..], &base].concat());
    assert_eq!(failed.status.code(), Some(2), "{}", text(&failed.stderr));
    assert!(text(&failed.stderr).contains("HTTP 500 internal"), "{}", text(&failed.stderr));

    let reqs = hub.requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[0].target, "/v1/subsidy/uploads?mode=full");
    assert_eq!(reqs[0].header("content-type"), "text/csv; charset=shift_jis");
    assert_eq!(reqs[2].target, "/v1/subsidy/uploads?mode=diff");
    drop(hub);

    let down = free_port();
    let unreachable = pmh_load(&["send", &good, "--server", &format!("http://127.0.0.1:{down}"), "--token-file", &tok]);
    assert_eq!(unreachable.status.code(), Some(2), "{}", text(&unreachable.stderr));
    assert!(text(&unreachable.stderr).contains("not sent"), "{}", text(&unreachable.stderr));

    let usage = pmh_load(&["send", &good, "--server", "ftp://x", "--token-file", &tok]);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage.stderr));
}

#[test]
fn a_token_file_others_can_read_is_refused() {
    let hub = FakeHub::start(0, accepted);
    let t = tempfile::tempdir().expect("tmp");
    let token = token_file(t.path(), 0o644);
    let data = t.path().join("a.csv");
    std::fs::write(&data, csv("a")).expect("write");
    let url = hub.url();
    for cmd in [["send", data.to_str().expect("utf-8")], ["watch", t.path().to_str().expect("utf-8")]] {
        let out = pmh_load(&[&cmd[..], &["--server", &url, "--token-file", token.to_str().expect("utf-8")]].concat());
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("chmod 600") && err.contains("644"), "{err}");
    }
    assert!(hub.requests().is_empty(), "nothing may be sent with an exposed token");
}

#[test]
fn watch_stops_on_sigterm_with_exit_0() {
    let hub = FakeHub::start(0, accepted);
    let t = tempfile::tempdir().expect("tmp");
    let dir = t.path().join("inbox");
    std::fs::create_dir(&dir).expect("mkdir");
    let token = token_file(t.path(), 0o600);
    std::fs::write(dir.join("a.csv"), csv("a")).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pmh-load"))
        .arg("watch")
        .arg(&dir)
        .args(["--server", &hub.url(), "--token-file"])
        .arg(&token)
        .args(["--interval", "50ms", "--settle", "200ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let filed = Instant::now() + Duration::from_secs(10);
    while !dir.join("done/a.csv").exists() && Instant::now() < filed {
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: a signal to the child this test spawned.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pmh-load watch did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let log = log.join().expect("log");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(dir.join("done/a.csv").exists(), "{log}");
    assert!(log.contains("a.csv: accepted") && log.contains("stopped"), "{log}");
    assert!(!log.contains(TOKEN), "the token is never logged");
}
