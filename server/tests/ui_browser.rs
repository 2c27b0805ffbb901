//! The upload screen in a real browser: headless Chromium driven through ChromeDriver
//! (W3C WebDriver, spoken here over plain HTTP/1.1), against the server on a loopback
//! port. Sign-in, a successful upload, a rejected upload with its error list, and the
//! history page, checked by what the page shows.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test-deps.sh`, run by
//! `make test`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pmh_server::serve::ServeOptions;
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One WebDriver command: `method path` with an optional JSON body; returns `value`.
fn wd(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    wd_try(addr, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// [`wd`], with a WebDriver error (e.g. a stale element while a page loads) as `Err`.
fn wd_try(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read the head, then exactly Content-Length bytes (ChromeDriver may keep the
    // connection open whatever `Connection: close` says).
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "{method} {path}: connection closed");
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("{method} {path}: no Content-Length in {head}"));
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    let payload = String::from_utf8(body).unwrap();
    let v: Value = serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{method} {path}: {e}: {payload}"));
    if head.starts_with("HTTP/1.1 200") { Ok(v["value"].clone()) } else { Err(v) }
}

struct Driver {
    child: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = wd_try(self.addr, "DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "headless Chromium is needed: run scripts/test-deps.sh (make test does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut d = Driver { child, addr, session: String::new(), _profile: profile };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", d._profile.path().display())]
            }
        }}});
        let v = wd(addr, "POST", "/session", Some(caps));
        d.session = v["sessionId"].as_str().unwrap().to_owned();
        d
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        wd(self.addr, method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap().to_owned()
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_owned()
    }

    fn count(&self, css: &str) -> usize {
        self.cmd("POST", "/elements", Some(json!({"using": "css selector", "value": css}))).as_array().unwrap().len()
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.cmd("GET", &format!("/element/{e}/text"), None).as_str().unwrap().to_owned()
    }

    /// Waits (up to 10 s) until the element exists and its text contains `needle` —
    /// a form submission may return before the next page has loaded. Returns the text.
    fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = format!("/session/{}", self.session);
            let v = wd_try(
                self.addr,
                "POST",
                &format!("{s}/elements"),
                Some(json!({"using": "css selector", "value": css})),
            );
            if let Some(e) = v.ok().as_ref().and_then(|v| v.as_array()?.first()?[ELEMENT].as_str().map(str::to_owned)) {
                // The element may go stale when the next page replaces it: just try again.
                if let Ok(t) = wd_try(self.addr, "GET", &format!("{s}/element/{e}/text"), None)
                    && let Some(t) = t.as_str().filter(|t| t.contains(needle))
                {
                    return t.to_owned();
                }
            }
            let page = wd_try(self.addr, "GET", &format!("{s}/source"), None).unwrap_or_default();
            assert!(Instant::now() < deadline, "no {css} containing {needle:?} at {}:\n{page}", self.url());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/value"), Some(json!({ "text": text })));
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }
}

#[test]
fn sign_in_upload_reject_and_history_in_headless_chromium() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let t = TestApp::new();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(pmh_server::serve(listener, t.router.clone(), ServeOptions::default(), async {
        let _ = stop_rx.await;
    }));
    let files = tempfile::tempdir().unwrap();
    let good = files.path().join("chiyoda-full.csv");
    std::fs::write(&good, own_rows_csv("sample-sjis.csv", 131016)).unwrap(); // as Excel saves it
    let bad = files.path().join("bad-rows.csv");
    std::fs::copy(data("bad-rows.csv"), &bad).unwrap();

    let d = Driver::start();
    // Sign-in.
    d.go(&format!("{base}/ui/"));
    assert!(d.url().ends_with("/ui/login"), "{}", d.url());
    d.type_in("#token", "not-a-token");
    d.click("#signin");
    d.wait_text("p.msg", "トークンが正しくない");
    d.type_in("#token", CHIYODA);
    d.click("#signin");
    d.wait_text("header", "chiyoda (131016)");
    assert!(d.url().ends_with("/ui/upload"), "{}", d.url());

    // A successful full upload of a Shift_JIS CRLF file with half-width kana.
    d.click("#mode-full");
    d.type_in("#file", good.to_str().unwrap());
    d.click("#upload");
    d.wait_text("#status", "受理");
    assert!(d.url().contains("/ui/uploads/131016-"), "{}", d.url());
    assert_eq!(d.text("#inserted"), "5");
    assert_eq!(d.text("#rows"), "5");

    // A rejected differential upload: every error listed, nothing changed.
    d.go(&format!("{base}/ui/upload"));
    d.type_in("#file", bad.to_str().unwrap());
    d.click("#upload");
    d.wait_text("#status", "エラー");
    let expected = std::fs::read_to_string(data("bad-rows.expected.txt")).unwrap();
    assert_eq!(d.count("#errors tbody tr"), expected.lines().count());
    let table = d.text("#errors");
    assert!(table.contains("個人番号 (myNumber)") && table.contains("check digit"), "{table}");
    assert!(!table.contains("123456789012"), "an unmasked My Number: {table}");
    assert!(d.text("p.msg").contains("何も変更されていません"));

    // History: both uploads, newest first.
    d.click("nav a[href='/ui/uploads']");
    d.wait_text("h1", "アップロード履歴");
    assert_eq!(d.count("#history tbody tr"), 2);
    let first = d.text("#history tbody tr:first-child");
    let second = d.text("#history tbody tr:nth-child(2)");
    assert!(first.contains("差分") && first.contains("エラー"), "{first}");
    assert!(second.contains("全件") && second.contains("受理"), "{second}");

    // Sign-out.
    d.click("nav button");
    d.wait_text("h1", "サインイン");
    d.go(&format!("{base}/ui/uploads"));
    d.wait_text("h1", "サインイン");
    drop(d);

    // And the store holds the good file only.
    let id = t.state.deriver().derive(&pmh_engine::MyNumber::parse("345678901234").unwrap());
    let inst = pmh_engine::InstitutionCode::parse(AUDIT).unwrap();
    let client = t.store.register_client("check");
    let date = pmh_engine::Date::parse("2026-11-21").unwrap();
    let answer = t.store.lookup(client, &id, inst, date).unwrap();
    let e = answer.answered().unwrap();
    let names: Vec<String> = e.certificates().map(|c| c.certificate.basic_five_info.name_kana.to_string()).collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].chars().all(|c| !('\u{ff61}'..='\u{ff9f}').contains(&c)), "kana normalised: {names:?}");
    stop_tx.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
}
