//! `pmh-bench http` against small local servers: a fake PMH API in axum (the five routes
//! the load generator uses, fake logic, requests counted per route) and a hand-written
//! server that answers in chunked coding and closes connections now and then.
//!
//! Every server binds 127.0.0.1 port 0 on its own thread and stops when dropped; every
//! run is a second or less.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pmh_bench::http::{self, Config, HttpError, Mode, Phases, Report};
use serde_json::{Value, json};

const TOKEN: &str = "gw-test";

/// Requests the fake server answered, per route.
#[derive(Default, Debug)]
struct Counts {
    pmh_ids: AtomicU64,
    consents: AtomicU64,
    lookups: AtomicU64,
    refusals: AtomicU64,
    batches: AtomicU64,
    pings: AtomicU64,
    /// Anything else (wrong path, bad token).
    other: AtomicU64,
}

impl Counts {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }

    fn total(&self) -> u64 {
        [&self.pmh_ids, &self.consents, &self.lookups, &self.batches, &self.pings, &self.other]
            .into_iter()
            .map(Counts::get)
            .sum()
    }
}

#[derive(Clone, Default)]
struct Fake {
    counts: Arc<Counts>,
    /// (pmhId, institution) pairs consented.
    consents: Arc<Mutex<HashSet<(String, String)>>>,
    /// Added to every ping and single lookup.
    delay: Duration,
    /// Which side the requests came from, in order, one letter per change of side:
    /// `c` for pings, `l` for lookups.
    sides: Arc<Mutex<String>>,
}

impl Fake {
    fn side(&self, s: char) {
        let mut sides = self.sides.lock().unwrap();
        if !sides.ends_with(s) {
            sides.push(s);
        }
    }
}

/// The 401 answer for a request without the gateway token, if it has not.
fn unauthorized(headers: &HeaderMap, fake: &Fake) -> Option<Response> {
    if headers.get(AUTHORIZATION).is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes()) {
        return None;
    }
    fake.counts.other.fetch_add(1, Ordering::SeqCst);
    Some(
        (StatusCode::UNAUTHORIZED, Json(json!({"error": {"code": "unauthorized", "message": "token"}})))
            .into_response(),
    )
}

/// A fake PMH-ID: the My Number's digits as 32 hex digits.
fn fake_pmh_id(my_number: &str) -> Option<String> {
    my_number.parse::<u128>().ok().map(|n| format!("{:032x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
}

async fn pmh_ids(State(f): State<Fake>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = unauthorized(&h, &f) {
        return r;
    }
    f.counts.pmh_ids.fetch_add(1, Ordering::SeqCst);
    match body["myNumber"].as_str().and_then(fake_pmh_id) {
        Some(id) => Json(json!({ "pmhId": id })).into_response(),
        None => StatusCode::UNPROCESSABLE_ENTITY.into_response(),
    }
}

async fn consents(State(f): State<Fake>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = unauthorized(&h, &f) {
        return r;
    }
    f.counts.consents.fetch_add(1, Ordering::SeqCst);
    let id = body["pmhId"].as_str().unwrap_or_default().to_string();
    let inst = body["institutionCode"].as_str().unwrap_or_default().to_string();
    f.consents.lock().unwrap().insert((id.clone(), inst.clone()));
    (
        StatusCode::CREATED,
        Json(json!({"pmhId": id, "institutionCode": inst, "validUntil": "2099-01-01T00:00:00+09:00"})),
    )
        .into_response()
}

async fn eligibility(
    State(f): State<Fake>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = unauthorized(&h, &f) {
        return r;
    }
    f.counts.lookups.fetch_add(1, Ordering::SeqCst);
    f.side('l');
    if !f.delay.is_zero() {
        tokio::time::sleep(f.delay).await;
    }
    let inst = q.get("institution").cloned().unwrap_or_default();
    if !f.consents.lock().unwrap().contains(&(id.clone(), inst)) {
        f.counts.refusals.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::FORBIDDEN, Json(json!({"error": {"code": "consent_required", "message": "no consent"}})))
            .into_response();
    }
    Json(json!({"pmhId": id, "date": q.get("date"), "certificates": [{"certificationName": "子ども医療費受給者証"}]}))
        .into_response()
}

async fn batch(State(f): State<Fake>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = unauthorized(&h, &f) {
        return r;
    }
    f.counts.batches.fetch_add(1, Ordering::SeqCst);
    f.side('l');
    let inst = body["institutionCode"].as_str().unwrap_or_default().to_string();
    let consents = f.consents.lock().unwrap().clone();
    let results: Vec<Value> = body["pmhIds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|id| {
            let id = id.as_str().unwrap_or_default().to_string();
            let ok = consents.contains(&(id.clone(), inst.clone()));
            json!({"pmhId": id, "status": if ok { "ok" } else { "consent_required" }, "certificates": []})
        })
        .collect();
    Json(json!({ "results": results })).into_response()
}

async fn ping(State(f): State<Fake>, h: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&h, &f) {
        return r;
    }
    f.counts.pings.fetch_add(1, Ordering::SeqCst);
    f.side('c');
    if !f.delay.is_zero() {
        tokio::time::sleep(f.delay).await;
    }
    Json(json!({"status": "ok"})).into_response()
}

async fn other(State(f): State<Fake>) -> StatusCode {
    f.counts.other.fetch_add(1, Ordering::SeqCst);
    StatusCode::NOT_FOUND
}

/// The fake API's five routes under `prefix` ("" or e.g. "/prefix"); anything else 404.
fn fake_app(prefix: &str, fake: Fake) -> Router {
    let api = Router::new()
        .route("/v1/pmh-ids", post(pmh_ids))
        .route("/v1/consents", post(consents))
        .route("/v1/subsidy/eligibility/{pmh_id}", get(eligibility))
        .route("/v1/subsidy/eligibility:batch", post(batch))
        .route("/v1/ping", get(ping));
    let app = if prefix.is_empty() { api } else { Router::new().nest(prefix, api) };
    app.fallback(other).with_state(fake)
}

/// A server on its own thread and runtime; stops when dropped.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// The fake API, under `prefix` (e.g. "/prefix" or "").
    fn fake(prefix: &str, fake: Fake) -> Server {
        let app = fake_app(prefix, fake);
        Server::spawn(move |listener| async move {
            let _ = axum::serve(listener, app).await;
        })
    }

    fn spawn<F, Fut>(serve: F) -> Server
    where
        F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                tokio::select! {
                    _ = serve(listener) => {}
                    _ = stopped => {}
                }
            });
        });
        Server { addr: addr_rx.recv().unwrap(), stop: Some(stop), thread: Some(thread) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A small, fast configuration: 200 people of a 1,000-person store.
fn config(url: &str) -> Config {
    Config {
        connections: 4,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        persons: 1_000,
        people: 200,
        ..Config::new(url, TOKEN)
    }
}

fn lookups(c: &Counts) -> u64 {
    Counts::get(&c.lookups) + Counts::get(&c.batches)
}

/// Requests the server saw in a phase = the warm-up's + the timed ones, all answered.
fn assert_phase_adds_up(p: &http::PhaseReport, server_side: u64) {
    assert_eq!(p.errors.total, 0, "{p:?}");
    assert_eq!(p.requests, p.responses);
    assert_eq!(p.requests, p.ok + p.expected_refusals + p.answered_unconsented);
    assert_eq!(server_side, p.requests + p.warmup_requests, "{p:?}");
    assert_eq!(p.latency_us.count, p.requests);
    assert!(p.requests > 0 && p.warmup_requests > 0, "{p:?}");
}

#[test]
fn closed_and_open_loop_counts_add_up_on_the_given_server_only() {
    let fake = Fake::default();
    let server = Server::fake("/prefix", fake.clone());
    let bystander = Fake::default();
    let _other = Server::fake("", bystander.clone());

    // Closed loop, ceiling then lookups, 10 % batch calls.
    let closed = Config { batch_share: 10.0, batch_size: 5, ..config(&server.url("/prefix/")) };
    let r = http::run(&closed).unwrap();
    let c = &fake.counts;
    let setup = r.setup.as_ref().unwrap();
    assert_eq!((setup.resolved, setup.consents_granted, setup.split.unknown, setup.requests), (200, 180, 10, 380));
    assert_eq!((Counts::get(&c.pmh_ids), Counts::get(&c.consents)), (200, 180));
    let ceiling = r.ceiling.as_ref().unwrap();
    let lookup = r.lookup.as_ref().unwrap();
    assert_phase_adds_up(ceiling, Counts::get(&c.pings));
    assert_phase_adds_up(lookup, lookups(c));
    assert_eq!(ceiling.expected_refusals, 0);
    // 20 of 200 people are unconsented: about 10 % of the single lookups are refused,
    // every refusal expected, and the server refused nothing else.
    let refusals = Counts::get(&c.refusals);
    assert!(lookup.expected_refusals > 0 && lookup.answered_unconsented == 0, "{lookup:?}");
    assert!(refusals >= lookup.expected_refusals && refusals <= lookup.expected_refusals + lookup.warmup_requests);
    let share = lookup.expected_refusals as f64 / lookup.requests as f64;
    assert!((0.03..0.2).contains(&share), "refusal share {share}");
    assert!(Counts::get(&c.batches) > 0);
    assert_eq!(Counts::get(&c.other), 0, "nothing outside the API's routes");
    assert!(r.ratio.is_some_and(|x| x > 0.0) && r.passed);

    // Open loop at 300 req/s for 1 s: the fake server keeps up.
    let before = lookups(c);
    let open =
        Config { mode: Mode::Open { rate: 300.0 }, phases: Phases::LookupOnly, ..config(&server.url("/prefix")) };
    let r = http::run(&open).unwrap();
    let lookup = r.lookup.as_ref().unwrap();
    assert!(r.ceiling.is_none() && r.ratio.is_none());
    assert_phase_adds_up(lookup, lookups(c) - before);
    // 0.2 s warm-up + 1 s timed at 300/s: 60 + 300 requests due. All are sent unless a
    // connection was behind at the very end (a loaded machine), and then counted unsent.
    let o = lookup.open_loop.as_ref().unwrap();
    assert_eq!(lookup.warmup_requests, 60, "{lookup:?}");
    assert_eq!(lookup.requests + o.unsent, 300, "{lookup:?}");
    assert!(o.unsent <= 4, "{o:?}");
    assert!((250.0..350.0).contains(&lookup.rps), "{}", lookup.rps);

    // The bystander on another port saw nothing.
    assert_eq!(bystander.counts.total(), 0);
}

#[test]
fn rounds_alternate_in_abba_order_and_add_up() {
    let fake = Fake::default();
    let server = Server::fake("", fake.clone());
    let cfg = Config {
        rounds: 3,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(50),
        ..config(&server.url(""))
    };
    let r = http::run(&cfg).unwrap();
    // Ceiling, lookups | lookups, ceiling | ceiling, lookups: four runs of one side
    // (rounds repeated in one order, ABAB, would make six).
    assert_eq!(*fake.sides.lock().unwrap(), "clcl");
    let (ceiling, lookup) = (r.ceiling.as_ref().unwrap(), r.lookup.as_ref().unwrap());
    // Each side's phases are added up: what the server saw is every round's warm-up and
    // timed requests, over about three phases' time.
    assert_phase_adds_up(ceiling, Counts::get(&fake.counts.pings));
    assert_phase_adds_up(lookup, lookups(&fake.counts));
    assert!(ceiling.secs > 0.8 && ceiling.secs < 1.5, "{}", ceiling.secs);
    assert!(lookup.secs > 0.8 && lookup.secs < 1.5, "{}", lookup.secs);
    assert!((ceiling.rps - ceiling.responses as f64 / ceiling.secs).abs() < 1e-6);
    // Every round's own figures, and the run's ratio over the sums.
    assert_eq!(r.rounds.iter().map(|x| x.round).collect::<Vec<_>>(), [0, 1, 2]);
    for x in &r.rounds {
        let (c, l) = (x.ceiling_rps.unwrap(), x.lookup_rps.unwrap());
        assert!(c > 0.0 && l > 0.0, "{x:?}");
        assert!((x.ratio.unwrap() - l / c).abs() < 1e-9, "{x:?}");
    }
    assert!((r.ratio.unwrap() - lookup.rps / ceiling.rps).abs() < 1e-9);
    let text = r.to_text();
    assert!(text.contains("3 rounds (ABBA order)") && text.contains("round ") && text.contains("ratio"), "{text}");
    let v: Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["settings"]["rounds"], 3);
    assert_eq!(v["rounds"].as_array().unwrap().len(), 3);
    assert!(v["rounds"][1]["ratio"].as_f64().is_some());

    // Lookups only: the rounds list them alone, with no ratio.
    let r = http::run(&Config { phases: Phases::LookupOnly, rounds: 2, ..cfg.clone() }).unwrap();
    assert!(r.ceiling.is_none() && r.ratio.is_none());
    assert!(r.rounds.iter().all(|x| x.ceiling_rps.is_none() && x.lookup_rps.is_some() && x.ratio.is_none()));
    // And the number of rounds is checked.
    let err = http::run(&Config { rounds: 0, ..cfg }).unwrap_err().to_string();
    assert!(err.contains("--rounds"), "{err}");
}

#[test]
fn open_loop_latency_counts_from_the_due_time() {
    // Every ping takes 20 ms: one connection serves 50/s. Offered 100/s, it falls behind,
    // and requests wait longer and longer for their turn.
    let fake = Fake { delay: Duration::from_millis(20), ..Fake::default() };
    let server = Server::fake("", fake.clone());
    let base =
        Config { connections: 1, warmup: Duration::ZERO, phases: Phases::CeilingOnly, ..config(&server.url("")) };
    let r = http::run(&Config { mode: Mode::Open { rate: 100.0 }, ..base.clone() }).unwrap();
    let p = r.ceiling.unwrap();
    let o = p.open_loop.as_ref().unwrap();
    assert!(p.requests <= 52, "{p:?}");
    // The last requests were due ~0.5 s before they could be sent.
    assert!(p.latency_us.max > 400_000 && p.latency_us.p50 > 150_000, "{:?}", p.latency_us);
    assert!(o.lag_max_us > 400_000 && o.unsent >= 40, "{o:?}");
    // The wait is the server's doing, not the client's.
    assert!(o.client_lateness_us.p99 < 10_000, "{o:?}");
    assert_eq!(Counts::get(&fake.counts.pings), p.requests);

    // Three rounds of the same: each ends about as far behind, so the mean lag stays that
    // of one round (it is not the rounds' sum), while the unsent requests add up.
    let one = o.clone();
    let r = http::run(&Config { mode: Mode::Open { rate: 100.0 }, rounds: 3, ..base.clone() }).unwrap();
    let o = r.ceiling.unwrap().open_loop.unwrap();
    assert!(o.lag_mean_us < one.lag_mean_us * 3 / 2 && o.lag_mean_us > one.lag_mean_us / 2, "{o:?} against {one:?}");
    assert!(o.unsent >= 2 * one.unsent, "{o:?} against {one:?}");

    // The same server at 20/s keeps up: latency is the service time.
    let r = http::run(&Config { mode: Mode::Open { rate: 20.0 }, ..base.clone() }).unwrap();
    let p = r.ceiling.unwrap();
    let o = p.open_loop.as_ref().unwrap();
    assert_eq!(p.requests + o.unsent, 20);
    assert!(o.unsent <= 1, "{o:?}");
    assert!(p.latency_us.p99 < 60_000 && p.latency_us.p50 >= 20_000, "{:?}", p.latency_us);
}

#[test]
fn report_text_and_json_carry_the_documented_fields() {
    let server = Server::fake("", Fake::default());
    // Two client threads: the multi-thread runtime.
    let cfg = Config {
        threads: 2,
        duration: Duration::from_millis(200),
        warmup: Duration::from_millis(50),
        mode: Mode::Open { rate: 200.0 },
        ..config(&server.url(""))
    };
    let r: Report = http::run(&cfg).unwrap();
    let text = r.to_text();
    for field in [
        "pmh-bench http http://",
        "2 thread(s), 4 connection(s)",
        "open loop at 200 req/s",
        "200 people",
        "PMH-IDs resolved",
        "req/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "ceiling ",
        "lookup ",
        "ratio lookup/ceiling",
        "expected refusals",
        "errors 0",
        "connect 0, io 0, timeout 0, protocol 0",
        "schedule: 200 req/s offered",
        "client lateness",
        "passed",
    ] {
        assert!(text.contains(field), "no {field:?} in\n{text}");
    }
    let v: Value = serde_json::from_str(&r.to_json()).unwrap();
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&v), ["ceiling", "lookup", "passed", "ratio", "rounds", "settings", "setup"]);
    assert_eq!(v["rounds"], json!([]), "one round: the run's figures are the round's");
    let mut want = vec![
        "url",
        "client",
        "threads",
        "connections",
        "mode",
        "rate",
        "duration_secs",
        "rounds",
        "warmup_secs",
        "max_requests",
        "timeout_secs",
        "persons",
        "seed",
        "people",
        "consent_share_pct",
        "unknown_share_pct",
        "batch_share_pct",
        "batch_size",
        "institution",
        "date",
        "max_error_share_pct",
    ];
    want.sort();
    assert_eq!(keys(&v["settings"]), want);
    assert!(!r.to_json().contains(TOKEN), "the token is never reported");
    assert_eq!(v["settings"]["mode"], "open");
    assert_eq!(
        keys(&v["setup"]),
        ["consented", "consents_granted", "people", "requests", "resolved", "secs", "unknown"]
    );
    let mut phase = vec![
        "name",
        "requests",
        "responses",
        "warmup_requests",
        "secs",
        "rps",
        "ok",
        "expected_refusals",
        "answered_unconsented",
        "errors",
        "reconnects",
        "client_cpu_secs",
        "latency_us",
        "open_loop",
    ];
    phase.sort();
    assert_eq!(keys(&v["lookup"]), phase);
    assert_eq!(keys(&v["ceiling"]), phase);
    assert_eq!(
        keys(&v["lookup"]["errors"]),
        ["by_status", "connect", "first", "io", "protocol", "share_pct", "timeout", "total"]
    );
    assert_eq!(keys(&v["lookup"]["latency_us"]), ["count", "max", "mean", "p50", "p90", "p99", "p999"]);
    assert_eq!(keys(&v["lookup"]["open_loop"]), ["client_lateness_us", "lag_max_us", "lag_mean_us", "rate", "unsent"]);
    assert!(v["lookup"]["rps"].as_f64().unwrap() > 0.0);
    assert!(v["ratio"].as_f64().is_some());
}

#[test]
fn errors_are_counted_by_status_and_fail_the_run() {
    // A base path the server does not have: 404 on every ping.
    let fake = Fake::default();
    let server = Server::fake("", fake.clone());
    let cfg = Config {
        duration: Duration::from_millis(200),
        warmup: Duration::ZERO,
        phases: Phases::CeilingOnly,
        ..config(&server.url("/nowhere"))
    };
    let r = http::run(&cfg).unwrap();
    let p = r.ceiling.as_ref().unwrap();
    assert!(!r.passed);
    assert_eq!(p.errors.by_status.get(&404), Some(&p.requests));
    assert!(p.errors.first.as_deref().unwrap().contains("GET /nowhere/v1/ping: HTTP 404"), "{:?}", p.errors.first);
    assert_eq!(Counts::get(&fake.counts.other), p.requests);
    assert!(r.to_text().contains("FAILED"));

    // A wrong token: the ceiling-only run has no set-up, its 401s are errors; a lookup
    // run stops in the set-up with a hint.
    let wrong = Config { token: http::Token("nope".into()), ..Config { url: server.url(""), ..cfg } };
    let r = http::run(&wrong).unwrap();
    assert!(!r.passed && r.ceiling.unwrap().errors.by_status.contains_key(&401));
    let err = http::run(&Config { phases: Phases::Both, ..wrong }).unwrap_err();
    assert!(matches!(err, HttpError::Setup(_)), "{err}");
    assert!(err.to_string().contains("HTTP 401") && err.to_string().contains("gateway token"), "{err}");
}

#[test]
fn bad_urls_and_unreachable_servers_are_clear_errors() {
    let run = |url: &str| http::run(&config(url)).unwrap_err().to_string();
    assert!(run("https://127.0.0.1:1/").contains("https is not supported"));
    assert!(run("http:///v1").contains("missing host"));
    assert!(run("not a url").contains("not a URL"));
    assert!(run("http://127.0.0.1:99999/").contains("not a port"));
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = http::run(&config(&format!("http://127.0.0.1:{port}/"))).unwrap_err();
    assert!(matches!(err, HttpError::Unreachable(_)), "{err}");
    assert!(err.to_string().contains("server unreachable"), "{err}");
}

/// A hand-written server: every response chunk-coded (two chunks and a trailer); after
/// every third one it closes the connection, saying so (`Connection: close`) if
/// `announce`, silently (like a keep-alive timeout) if not.
fn chunked_server(served: Arc<AtomicU64>, announce: bool) -> Server {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    Server::spawn(move |listener| async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let served = Arc::clone(&served);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    // GETs only: a request ends with its head.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                        let close = n.is_multiple_of(3);
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n{}\r\n",
                            if close && announce { "connection: close\r\n" } else { "" }
                        );
                        let body = "8\r\n{\"status\r\n7;x=y\r\n\":\"ok\"}\r\n0\r\nx-t: 1\r\n\r\n";
                        if s.write_all(format!("{head}{body}").as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    })
}

#[test]
fn raw_and_hyper_clients_read_chunked_answers_and_reconnect_after_close() {
    let cases = [http::ClientKind::Raw, http::ClientKind::Hyper].into_iter().flat_map(|c| [(c, true), (c, false)]);
    for (client, announce) in cases {
        let served = Arc::new(AtomicU64::new(0));
        let server = chunked_server(Arc::clone(&served), announce);
        let cfg = Config {
            client,
            connections: 2,
            duration: Duration::from_millis(200),
            warmup: Duration::from_millis(50),
            phases: Phases::CeilingOnly,
            ..config(&server.url(""))
        };
        let r = http::run(&cfg).unwrap();
        let p = r.ceiling.as_ref().unwrap();
        // A silent close is found by the next request, which is retried on a new
        // connection: not an error either.
        assert_eq!(p.errors.total, 0, "{client:?} {announce}: {p:?}");
        assert_eq!(p.ok, p.requests);
        assert_eq!(served.load(Ordering::SeqCst), p.requests + p.warmup_requests, "{client:?} {announce}");
        // Every third answer closed its connection: about a third of the requests reconnected.
        assert!(p.reconnects * 4 >= p.requests, "{client:?} {announce}: {p:?}");
    }
}

/// Not a test: serves the fake API for trying `pmh-bench http` by hand before a real
/// server is at hand, e.g.
/// `PMH_BENCH_FAKE_LISTEN=127.0.0.1:8099 cargo test --release -p pmh-bench --test http -- --ignored --nocapture fake_server`
/// then `pmh-bench http --url http://127.0.0.1:8099 --token gw-test --persons 1000 --people 200`.
/// Stops after `PMH_BENCH_FAKE_SECS` (default 60) seconds.
#[test]
#[ignore = "manual: serves the fake API on PMH_BENCH_FAKE_LISTEN"]
fn fake_server() {
    let listen = std::env::var("PMH_BENCH_FAKE_LISTEN").unwrap_or_else(|_| "127.0.0.1:8099".into());
    let secs = std::env::var("PMH_BENCH_FAKE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let fake = Fake::default();
    let app = fake_app("", fake.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen).await.unwrap();
        println!("fake PMH API on http://{listen}, token {TOKEN:?}, for {secs} s");
        let _ = tokio::time::timeout(Duration::from_secs(secs), axum::serve(listener, app)).await;
    });
    println!("{:?}", fake.counts);
}
