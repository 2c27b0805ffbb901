//! Over real sockets: the library's `serve` (keep-alive, graceful shutdown), and the
//! `pmh-server` binary (an acknowledged upload survives `kill -9`; SIGTERM stops cleanly).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pmh_engine::Store;
use pmh_loader::config::Config;
use pmh_server::serve::ServeOptions;
use pmh_server::{AppState, app, serve};

/// One HTTP/1.1 exchange on `stream` (keep-alive); returns (status, body).
fn exchange(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    token: Option<&str>,
    ct: &str,
    body: &[u8],
) -> (u16, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n", body.len());
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !ct.is_empty() {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    read_response(stream)
}

fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed in the head: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[test]
fn serve_answers_on_a_socket_with_keep_alive_and_shuts_down_gracefully() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let t = TestApp::new();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(listener, t.router.clone(), ServeOptions::default(), async {
        let _ = stop_rx.await;
    }));
    let mut s = connect(addr);
    // Several requests on one connection.
    let (status, body) = exchange(&mut s, "GET", "/healthz", None, "", b"");
    assert_eq!((status, body.contains("\"ok\"")), (200, true));
    let csv = own_rows_csv("sample-utf8.csv", 131016);
    let (status, body) = exchange(&mut s, "POST", "/v1/subsidy/uploads?mode=full", Some(CHIYODA), "text/csv", &csv);
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        exchange(&mut s, "POST", "/v1/pmh-ids", Some(GATEWAY), "application/json", br#"{"myNumber":"123456789018"}"#);
    assert_eq!(status, 200, "{body}");
    let (status, _) = exchange(&mut s, "GET", "/v1/ping", Some(GATEWAY), "", b"");
    assert_eq!(status, 200);
    // Shutdown: the idle keep-alive connection is closed and serve returns.
    stop_tx.send(()).unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await }).unwrap().unwrap().unwrap();
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0, "the connection is closed after shutdown");
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(), "no longer listening");
}

#[test]
fn a_body_that_stops_arriving_gets_408_and_changes_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let t = TestApp::from_config_text(
        &config_text(8 << 20).replace("request_timeout = \"10s\"", "request_timeout = \"1s\""),
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(listener, t.router.clone(), ServeOptions::default(), async {
        let _ = stop_rx.await;
    }));
    // An upload (timed on its body alone) and an ordinary request (timed as a whole), each
    // announcing more body than it sends.
    for (path, token) in [("/v1/subsidy/uploads?mode=diff", CHIYODA), ("/v1/pmh-ids", GATEWAY)] {
        let mut s = connect(addr);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: text/csv\r\nContent-Length: 1000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(b"municipalityCode,").unwrap(); // and then nothing
        let started = Instant::now();
        let (status, body) = read_response(&mut s);
        assert_eq!(status, 408, "{path}: {body}");
        assert!(body.contains("\"code\":\"timeout\""), "{body}");
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }
    let r = rt.block_on(t.get("/v1/subsidy/uploads", Some(CHIYODA)));
    assert_eq!(r.json()["uploads"], serde_json::json!([]), "a timed-out upload leaves no trace");
    stop_tx.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
}

#[test]
fn a_slow_request_head_is_cut_off() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let t = TestApp::new();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = ServeOptions { header_read_timeout: Duration::from_millis(300), ..ServeOptions::default() };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(listener, t.router.clone(), opts, async {
        let _ = stop_rx.await;
    }));
    let mut s = connect(addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n").unwrap(); // never finished
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(5), "the server closed the slow connection");
    stop_tx.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
}

// ---- the binary ---------------------------------------------------------------------

struct Server {
    child: Child,
    addr: SocketAddr,
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn start_binary(config: &Path) -> Server {
    let addr = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_pmh-server"))
        .args(["--config", config.to_str().unwrap(), "--listen", &addr.to_string(), "--workers", "1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // From here on the child is reaped by `Drop`, whatever happens.
    let server = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            if exchange(&mut s, "GET", "/healthz", None, "", b"").0 == 200 {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "pmh-server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit; fails with `what` if it has not within `limit` (`Server`'s
/// drop then kills it).
fn exit_within(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write_config(dir: &Path, sync_writes: bool) -> std::path::PathBuf {
    let text = config_text(8 << 20).replace("sync_writes = false", &format!("sync_writes = {sync_writes}"));
    let text = format!("db = {:?}\n{text}", dir.join("db").to_str().unwrap());
    let path = dir.join("pmh.toml");
    std::fs::write(&path, text).unwrap();
    // The configuration holds secrets: readable by the owner only, or the server warns.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

#[test]
fn an_acknowledged_upload_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), true);
    let mut server = start_binary(&config_path);
    let mut s = connect(server.addr);
    let csv = own_rows_csv("sample-utf8.csv", 131016);
    let (status, body) = exchange(&mut s, "POST", "/v1/subsidy/uploads?mode=full", Some(CHIYODA), "text/csv", &csv);
    assert_eq!(status, 200, "{body}");
    let upload: serde_json::Value = serde_json::from_str(&body).unwrap();
    // SIGKILL right after the 200: no chance to flush anything.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // The store has the upload, and its outcome record.
    let config = Config::load(Some(&config_path)).unwrap();
    let store = Arc::new(Store::open(&config.db, config.store_config()).unwrap());
    let state = AppState::new(store.clone(), config).unwrap();
    let id = state.deriver().derive(&pmh_engine::MyNumber::parse("234567890121").unwrap());
    let inst = pmh_engine::InstitutionCode::parse(CLINIC).unwrap();
    store.grant_consent(&id, inst, pmh_engine::date::unix_now()).unwrap();
    let client = store.register_client("check");
    let date = pmh_engine::Date::parse("2026-11-21").unwrap();
    let answer = store.lookup(client, &id, inst, date).unwrap();
    assert_eq!(answer.answered().map(|e| e.len()), Some(1));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let router = app(state);
    let rec = rt.block_on(async {
        use tower::ServiceExt;
        let req = axum::http::Request::get(format!("/v1/subsidy/uploads/{}", upload["uploadId"].as_str().unwrap()))
            .header("authorization", format!("Bearer {CHIYODA}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let r = router.oneshot(req).await.unwrap();
        assert_eq!(r.status(), 200);
        http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes()
    });
    let rec: serde_json::Value = serde_json::from_slice(&rec).unwrap();
    assert_eq!((rec["status"].as_str(), rec["inserted"].as_u64()), (Some("accepted"), Some(5)));
}

#[test]
fn sigterm_finishes_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), false);
    let mut server = start_binary(&config_path);
    let mut s = connect(server.addr);
    let (status, _) = exchange(&mut s, "GET", "/v1/ping", Some(GATEWAY), "", b"");
    assert_eq!(status, 200);
    let ok = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = exit_within(&mut server.child, Duration::from_secs(20), "pmh-server did not stop on SIGTERM");
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    server.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!err.contains("ERROR"), "{err}");
    // Nothing else held the store when it was closed (a watch thread once did).
    assert!(!err.contains("still referenced"), "{err}");
    // The store closed cleanly: it opens again at once.
    let config = Config::load(Some(&config_path)).unwrap();
    Store::open(&config.db, config.store_config()).unwrap();
}

#[test]
fn quick_start_generates_and_prints_a_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_pmh-server"))
        .args(["--db", dir.path().join("db").to_str().unwrap(), "--listen", &addr.to_string(), "--workers", "1"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "pmh-server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = connect(addr);
    assert_eq!(exchange(&mut s, "GET", "/healthz", None, "", b"").0, 200);
    let ok = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    assert!(server.child.wait().unwrap().success());
    let mut log = String::new();
    server.child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    // The generated configuration is printed: its tokens are needed to call the server.
    assert!(log.contains("[[tokens]]") && log.contains("role = \"gateway\""), "{log}");
    assert!(log.contains("pmh_id_secret = \""), "{log}");
    let gateway =
        log.lines().skip_while(|l| !l.contains("role = \"gateway\"")).find_map(|l| l.strip_prefix("token = \""));
    assert!(gateway.is_some_and(|t| t.trim_end_matches('"').len() == 64), "{log}");
}

#[test]
fn an_out_of_range_worker_count_is_a_usage_error() {
    // 100,000 runtime threads aborted the process in the runtime's start-up ("fatal
    // runtime error") before the count was bounded.
    let dir = tempfile::tempdir().unwrap();
    for n in ["0", "100000"] {
        let child = Command::new(env!("CARGO_BIN_EXE_pmh-server"))
            .args(["--db", dir.path().join("db").to_str().unwrap(), "--listen", "127.0.0.1:0", "--workers", n])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A server that accepted the count would serve until stopped (and be killed by
        // `Server`'s drop; its address is not used).
        let mut server = Server { child, addr: "127.0.0.1:0".parse().unwrap() };
        let what = format!("--workers {n}: pmh-server started instead of refusing the count");
        let status = exit_within(&mut server.child, Duration::from_secs(20), &what);
        let mut err = String::new();
        server.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(status.code(), Some(2), "--workers {n}: {err}");
        assert!(err.contains("--workers") && err.contains("1..=1024"), "--workers {n}: {err}");
        assert!(!dir.path().join("db").exists(), "--workers {n}: no store is created");
    }
}

#[test]
fn a_store_directory_replaced_while_serving_stops_the_server_without_writing_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), false);
    let mut server = start_binary(&config_path);
    let mut s = connect(server.addr);
    assert_eq!(exchange(&mut s, "GET", "/v1/ping", Some(GATEWAY), "", b"").0, 200);
    // What `rm -rf` and a new load at the same path do to the directory.
    let db = dir.path().join("db");
    std::fs::rename(&db, dir.path().join("db.old")).unwrap();
    std::fs::create_dir(&db).unwrap();
    std::fs::write(db.join("marker"), b"the new store").unwrap();
    let status = exit_within(&mut server.child, Duration::from_secs(20), "pmh-server kept running");
    assert_eq!(status.code(), Some(3), "{status:?}");
    let mut err = String::new();
    server.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("deleted or replaced"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&db).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("marker")], "the old server wrote into the new directory");
}
