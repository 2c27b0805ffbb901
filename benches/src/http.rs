//! `pmh-bench http`: a load generator for the lookup API of a running `pmh-server`.
//!
//! It measures how many lookups per second the server answers and how long they take,
//! and compares that with what the same server, client and connections achieve on a route
//! that does nothing (`GET /v1/ping`, same auth): the **ceiling**. The ratio says how much
//! of the HTTP stack's capacity the lookup work itself costs.
//!
//! # Layout
//!
//! - [`target`] — the one server a run talks to: `http://HOST[:PORT][/BASE]`, checked;
//!   every request goes to that host and port, its path appended to the base path.
//! - [`conn`] — one keep-alive HTTP/1.1 connection per `--connections`, pre-built
//!   requests, reconnects; the lean hand-written client (framing in [`wire`]) or hyper's.
//! - [`workload`] — the people (from [`crate::synth::Population`]), the set-up through the
//!   API (resolve PMH-IDs, grant consents) and the request mix.
//! - [`schedule`] — open-loop due times and latency measured from them.
//! - `phase` — one timed phase: every connection's loop as a task, tallies merged.
//! - [`stats`] — per-connection counts and HDR latency histograms, and their merge.
//! - [`report`] — the result as aligned text or JSON.
//!
//! Data flow: [`run`] checks the [`Config`], resolves the host once, opens every
//! connection (failing fast if the server is unreachable), runs the set-up, then the
//! ceiling phase and the lookup phase on the same connections (`--rounds` times, in ABBA
//! order), and returns a [`Report`].
//!
//! # Why the client is built this way
//!
//! Client and server usually share the machine (2 cores here), so every microsecond the
//! client spends is taken from the server. Hence: one runtime thread by default
//! (`--threads 1`, a current-thread tokio runtime; more threads use a multi-thread
//! runtime), one long-lived connection per `--connections` with `TCP_NODELAY`, every
//! request built once before timing (head and body bytes), responses read into a reused
//! buffer and discarded except for the status (and, for a 403, a look for
//! `consent_required`). The default `raw` client does no per-request allocation; the
//! `hyper` client (`--client hyper`) builds a request and a header map each time and
//! serves as an independent cross-check. Measured here (2 shared cores, 16 connections,
//! closed loop on `GET /v1/ping` of a local axum server, 4 alternating 3 s runs each):
//! the raw client spends 1.0–1.3 µs of user CPU per request, hyper's 2.3–3.1 µs; the
//! kernel's loopback TCP work, 5.5–7.5 µs per request, is the same for both and
//! dominates, so the raw client costs 10–20 % less CPU in all, and the server answered
//! more requests/s with it in each of the four pairs.
//!
//! # Modes and how latency is measured
//!
//! - **Closed loop** (default): each connection sends its next request as soon as the
//!   previous answer arrives. Latency is `answer − send`. Throughput is what the server
//!   sustains at that concurrency. A closed loop under-reports tail latency: while one
//!   answer is slow, the requests users would have sent meanwhile are never sent
//!   (*coordinated omission*).
//! - **Open loop** (`--rate R`): requests are due at fixed times, `R` per second in total,
//!   spread over the connections (connection `c` sends requests `c, c+C, c+2C, …` of
//!   the run, each due `j / R` s after the phase start). A connection that falls behind
//!   does not skip requests: it sends them late, and their latency is counted from when
//!   they were *due*, so queueing shows (coordinated omission corrected). The client's
//!   own lateness (tokio's 1 ms timer, a busy client thread) is taken out by replaying the
//!   connection as if every request had left on time with its measured service time (see
//!   [`schedule`]), and reported apart as `client_lateness_us`. At the end the report says
//!   how far behind schedule the connections ended (`lag_max_us`, `lag_mean_us`) and how
//!   many due requests were never sent (`unsent`): if these are not near zero, the server
//!   (or the client) could not keep up with `R`.
//!
//! Each phase starts with an unrecorded warm-up (`--warmup`, default 2 s) and stops after
//! `--duration` (default 10 s, at most 1 h) or `--max-requests`, whichever is first.
//!
//! # Reading the ratio
//!
//! `ratio = lookup rps / ceiling rps`, both closed loop, same connections and threads.
//! The ceiling pays for everything but the lookup: TCP, HTTP parsing, routing, auth, JSON
//! framing, and the client. 1.0 would mean lookups are free; 0.5 means the lookup work
//! costs as much as the whole HTTP round trip. Because the client shares the CPU, the
//! ratio is a property of this machine and client, and only ratios from the same run
//! compare. In open loop both phases answer the offered rate while the server keeps up,
//! so the ratio is about 1 and the latency percentiles are what to compare.
//!
//! On a shared or virtual machine the speed of the machine itself drifts by 10 % and more
//! within minutes, and a ceiling measured in one minute against lookups measured in the
//! next picks that drift up as if it were the lookups' cost. `--rounds N` alternates the
//! two sides N times, ceiling first in even rounds and lookups first in odd ones (ABBA),
//! each phase with its own warm-up and `--duration`; the phases of a side are added up
//! (requests, latency histograms, seconds), the ratio is taken over the sums, and each
//! round's own ratio is listed too, so the spread shows.
//!
//! # Counting
//!
//! Timed `requests` = `ok + expected_refusals + answered_unconsented + errors.total`.
//! An *expected refusal* is `403 consent_required` for a person the set-up deliberately
//! left unconsented; any other non-2xx status is an error (by code), as is a request
//! without an answer (`connect`, `io`, `timeout`, `protocol`). The run fails (non-zero
//! exit) when a phase's error share exceeds `--max-error-share` (default 1 %), and
//! [`run`] returns an error when the server is unreachable or the set-up fails. When no
//! request failed, the server received exactly `warmup_requests + requests` requests in
//! a phase, and `setup.requests` before.
//!
//! # JSON report (`--json`)
//!
//! One object; fields are stable:
//!
//! ```text
//! settings: url, client ("raw"|"hyper"), threads, connections, mode ("closed"|"open"),
//!           rate (null|req/s), duration_secs, rounds, warmup_secs, max_requests (null|n),
//!           timeout_secs, persons, seed, people, consent_share_pct, unknown_share_pct,
//!           batch_share_pct, batch_size, institution, date, max_error_share_pct
//! setup:    null | {people, consented, unknown, resolved, consents_granted, requests, secs}
//! ceiling, lookup: null | {
//!           name, requests, responses, warmup_requests, secs, rps, ok, expected_refusals,
//!           answered_unconsented, reconnects, client_cpu_secs (null off Linux),
//!           errors: {total, share_pct, by_status: {"500": n, …}, connect, io, timeout,
//!                    protocol, first (null|sample message)},
//!           latency_us: {count, mean, p50, p90, p99, p999, max},
//!           open_loop: null | {rate, unsent, lag_max_us, lag_mean_us,
//!                              client_lateness_us: {count, mean, p50, p90, p99, p999, max}}}
//! ratio:    null | lookup.rps / ceiling.rps (over all rounds)
//! rounds:   [] with one round, else [{round, ceiling_rps (null|req/s),
//!           lookup_rps (null|req/s), ratio (null|x)}]
//! passed:   true when no phase's errors.share_pct exceeds max_error_share_pct
//! ```

pub mod conn;
mod phase;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod target;
pub mod wire;
pub mod workload;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use pmh_engine::{Date, InstitutionCode};

pub use conn::ClientKind;
pub use report::{PhaseReport, Report, RoundReport, Settings};
pub use target::{Target, UrlError};

use conn::{Client, Headers, Prepared};
use phase::PhasePlan;
use workload::{Split, Traffic};

/// Longest timed part of a phase.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Longest warm-up.
pub const MAX_WARMUP: Duration = Duration::from_secs(600);
/// Most connections: each holds ~280 KB of histograms during a phase.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most runtime threads.
pub const MAX_THREADS: usize = 64;
/// Most people per batch call.
pub const MAX_BATCH_SIZE: usize = 1000;
/// Most `--rounds`.
pub const MAX_ROUNDS: usize = 100;

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Next request as soon as the previous answer arrives.
    Closed,
    /// Requests due at fixed intervals, `rate` per second over all connections.
    Open {
        /// Requests/s in total.
        rate: f64,
    },
}

/// Which phases run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phases {
    /// The ceiling (`GET /v1/ping`), then the lookups (default).
    Both,
    /// Only the lookups (`--no-ceiling`).
    LookupOnly,
    /// Only the ceiling (`--only-ceiling`); no set-up.
    CeilingOnly,
}

/// A bearer token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Everything a run needs. [`Config::new`] gives the CLI's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of the server, `http://HOST[:PORT][/BASE]`.
    pub url: String,
    /// Gateway token, sent as `Authorization: Bearer`.
    pub token: Token,
    /// Client implementation (default raw).
    pub client: ClientKind,
    /// Runtime threads (default 1: a current-thread runtime).
    pub threads: usize,
    /// Keep-alive connections (default 16).
    pub connections: usize,
    /// Closed loop (default) or open loop at a rate.
    pub mode: Mode,
    /// Timed part of each phase (default 10 s); with `rounds` > 1, of each round's part.
    pub duration: Duration,
    /// Times the ceiling and the lookups alternate (default 1), in ABBA order: the ratio
    /// is then taken over all rounds, so drift of the machine's speed during a run falls
    /// on both sides alike.
    pub rounds: usize,
    /// Unrecorded warm-up before each phase (default 2 s).
    pub warmup: Duration,
    /// Stop a phase's timed part after this many requests.
    pub max_requests: Option<u64>,
    /// Per-request timeout (default 10 s).
    pub timeout: Duration,
    /// Which phases.
    pub phases: Phases,
    /// People in the store: persons `0..persons` of the population (default 1,000,000).
    pub persons: u64,
    /// Seed of the population and of the request choices (default 1, like the stores).
    pub seed: u64,
    /// People in the workload (default 10,000).
    pub people: usize,
    /// Share of them given a consent, % (default 90).
    pub consent_share: f64,
    /// Share of them not in the store (consented too), % (default 5).
    pub unknown_share: f64,
    /// Share of requests that are batch calls, % (default 0).
    pub batch_share: f64,
    /// People per batch call (default 10).
    pub batch_size: usize,
    /// Institution of the consents and lookups (default [`crate::engine::BENCH_INSTITUTION`]).
    pub institution: String,
    /// Lookup date (default today in Tokyo).
    pub date: Date,
    /// Error share above which the run fails, % (default 1).
    pub max_error_share: f64,
}

impl Config {
    /// The defaults for `url` and `token`.
    pub fn new(url: &str, token: &str) -> Config {
        Config {
            url: url.to_string(),
            token: Token(token.to_string()),
            client: ClientKind::Raw,
            threads: 1,
            connections: 16,
            mode: Mode::Closed,
            duration: Duration::from_secs(10),
            rounds: 1,
            warmup: Duration::from_secs(2),
            max_requests: None,
            timeout: Duration::from_secs(10),
            phases: Phases::Both,
            persons: 1_000_000,
            seed: 1,
            people: 10_000,
            consent_share: 90.0,
            unknown_share: 5.0,
            batch_share: 0.0,
            batch_size: 10,
            institution: crate::engine::BENCH_INSTITUTION.to_string(),
            date: Date::today_tokyo(),
            max_error_share: 1.0,
        }
    }

    /// Checks every setting; returns the parsed URL.
    pub fn validate(&self) -> Result<Target, HttpError> {
        let target = Target::parse(&self.url)?;
        let bad = |m: String| Err(HttpError::Config(m));
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return bad(format!("--connections must be 1..={MAX_CONNECTIONS}"));
        }
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return bad(format!("--threads must be 1..={MAX_THREADS}"));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return bad("--duration must be more than 0 and at most 1h".into());
        }
        if !(1..=MAX_ROUNDS).contains(&self.rounds) {
            return bad(format!("--rounds must be 1..={MAX_ROUNDS}"));
        }
        if self.warmup > MAX_WARMUP {
            return bad("--warmup must be at most 10m".into());
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return bad("--timeout must be more than 0 and at most 60s".into());
        }
        if let Mode::Open { rate } = self.mode
            && !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0)
        {
            return bad(format!("--rate {rate}: must be more than 0 and at most 10,000,000 requests/s"));
        }
        if self.max_requests == Some(0) {
            return bad("--max-requests must be at least 1".into());
        }
        for (name, v) in [
            ("--consent-share", self.consent_share),
            ("--unknown-share", self.unknown_share),
            ("--batch-share", self.batch_share),
            ("--max-error-share", self.max_error_share),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return bad(format!("{name} {v}: a percentage, 0..=100"));
            }
        }
        if self.phases != Phases::CeilingOnly {
            if self.unknown_share > self.consent_share {
                return bad("--unknown-share must not exceed --consent-share (unknown people are consented too)".into());
            }
            if self.people == 0 {
                return bad("--people must be at least 1".into());
            }
            let split = Split::of(self);
            if (split.people - split.unknown) as u64 > self.persons {
                return bad(format!(
                    "--people {} needs {} people of the store but --persons is {}",
                    self.people,
                    split.people - split.unknown,
                    self.persons
                ));
            }
            if self.persons.saturating_add(split.unknown as u64) > 100_000_000_000 {
                return bad("--persons too large: My Numbers are distinct below 10¹¹ people".into());
            }
            if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
                return bad(format!("--batch-size must be 1..={MAX_BATCH_SIZE}"));
            }
            InstitutionCode::parse(&self.institution)
                .map_err(|e| HttpError::Config(format!("--institution {:?}: {e}", self.institution)))?;
        }
        Headers::new(&target, &self.token.0).map_err(HttpError::Config)?;
        Ok(target)
    }

    fn settings(&self, target: &Target) -> Settings {
        Settings {
            url: target.url(),
            client: self.client,
            threads: self.threads,
            connections: self.connections,
            mode: match self.mode {
                Mode::Closed => "closed",
                Mode::Open { .. } => "open",
            },
            rate: match self.mode {
                Mode::Closed => None,
                Mode::Open { rate } => Some(rate),
            },
            duration_secs: self.duration.as_secs_f64(),
            rounds: self.rounds,
            warmup_secs: self.warmup.as_secs_f64(),
            max_requests: self.max_requests,
            timeout_secs: self.timeout.as_secs_f64(),
            persons: self.persons,
            seed: self.seed,
            people: self.people,
            consent_share_pct: self.consent_share,
            unknown_share_pct: self.unknown_share,
            batch_share_pct: self.batch_share,
            batch_size: self.batch_size,
            institution: self.institution.clone(),
            date: self.date.to_string(),
            max_error_share_pct: self.max_error_share,
        }
    }
}

/// Why a run could not be made (as opposed to a run that saw errors, which is a
/// [`Report`] with `passed: false`).
#[derive(Debug)]
pub enum HttpError {
    /// The URL was refused.
    Url(UrlError),
    /// A setting is out of range.
    Config(String),
    /// The server could not be reached.
    Unreachable(String),
    /// A set-up request failed (resolving PMH-IDs, granting consents).
    Setup(String),
    /// The runtime could not start.
    Runtime(std::io::Error),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Url(e) => write!(f, "{e}"),
            HttpError::Config(m) => f.write_str(m),
            HttpError::Unreachable(m) => write!(f, "server unreachable: {m}"),
            HttpError::Setup(m) => write!(f, "set-up failed: {m}"),
            HttpError::Runtime(e) => write!(f, "tokio runtime: {e}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<UrlError> for HttpError {
    fn from(e: UrlError) -> HttpError {
        HttpError::Url(e)
    }
}

/// Runs the load test described by `config` on its own tokio runtime (so call it from
/// outside any runtime) and returns the report.
pub fn run(config: &Config) -> Result<Report, HttpError> {
    let target = config.validate()?;
    let runtime = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(config.threads).enable_all().build()
    }
    .map_err(HttpError::Runtime)?;
    runtime.block_on(run_on(config, target))
}

async fn run_on(config: &Config, target: Target) -> Result<Report, HttpError> {
    let addr = target.resolve().await.map_err(|e| HttpError::Unreachable(format!("{}: {e}", target.authority)))?;
    let headers = Headers::new(&target, &config.token.0).map_err(HttpError::Config)?;
    let mut clients: Vec<Client> =
        (0..config.connections).map(|_| Client::new(addr, config.client, headers.clone(), config.timeout)).collect();
    for c in &mut clients {
        c.connect().await.map_err(|f| HttpError::Unreachable(f.message))?;
    }
    let mut setup = None;
    let mut lookup_traffic = None;
    if config.phases != Phases::CeilingOnly {
        let (c, workload, report) = workload::setup(clients, config, &target, &headers).await?;
        clients = c;
        setup = Some(report);
        lookup_traffic = Some(Arc::new(Traffic::Lookup(workload)));
    }
    let rate = match config.mode {
        Mode::Closed => None,
        Mode::Open { rate } => Some(rate),
    };
    let ceiling_traffic = match config.phases {
        Phases::LookupOnly => None,
        _ => {
            Some(Arc::new(Traffic::Ping(Prepared::get(&headers, target.path("/v1/ping")).map_err(HttpError::Config)?)))
        }
    };
    // Round r runs ceiling then lookups when r is even, lookups then ceiling when it is
    // odd (ABBA): a steady drift of the machine's speed then falls on both sides alike.
    let mut sums = [PhaseSum::default(), PhaseSum::default()];
    let mut rounds = Vec::new();
    for round in 0..config.rounds {
        let mut rps = [None, None];
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let Some(traffic) = [&ceiling_traffic, &lookup_traffic][side] else { continue };
            let plan = PhasePlan {
                traffic: Arc::clone(traffic),
                mode: config.mode,
                warmup: config.warmup,
                duration: config.duration,
                max_requests: config.max_requests,
                // Other request choices in each round (round 0 keeps the seed's own).
                seed: config.seed.wrapping_add(round as u64),
            };
            let (c, r) = phase::run(clients, plan).await;
            clients = c;
            rps[side] = Some(r.tally.responses() as f64 / r.secs);
            sums[side].add(&r);
        }
        rounds.push(RoundReport::new(round, rps[0], rps[1]));
    }
    let [ceiling_sum, lookup_sum] = sums;
    let report = |name, mut sum: PhaseSum, ran: bool| {
        // The open loop's mean lag is over connections and rounds (`lag_sum` added the
        // rounds' sums); the longest lag and the unsent requests are the run's.
        sum.tally.lag_sum /= u32::try_from(sum.phases.max(1)).unwrap_or(u32::MAX);
        ran.then(|| PhaseReport::new(name, &sum.tally, sum.secs, sum.cpu_secs, rate, config.connections))
    };
    let ceiling = report("ceiling", ceiling_sum, ceiling_traffic.is_some());
    let lookup = report("lookup", lookup_sum, lookup_traffic.is_some());
    let ratio = report::ratio(ceiling.as_ref().map(|c| c.rps), lookup.as_ref().map(|l| l.rps));
    // One round's figures are the whole run's; list rounds only when there are several.
    if config.rounds == 1 {
        rounds.clear();
    }
    let passed = [&ceiling, &lookup].into_iter().flatten().all(|p| p.errors.share_pct <= config.max_error_share);
    Ok(Report { settings: config.settings(&target), setup, ceiling, lookup, ratio, rounds, passed })
}

/// One side's phases added up over the rounds.
#[derive(Default)]
struct PhaseSum {
    tally: stats::Tally,
    /// Timed seconds of all its phases.
    secs: f64,
    /// Client CPU of all its phases (`None` when any phase could not tell).
    cpu_secs: Option<f64>,
    phases: usize,
}

impl PhaseSum {
    fn add(&mut self, r: &phase::PhaseResult) {
        self.tally.merge(&r.tally);
        self.secs += r.secs;
        self.cpu_secs = match (self.phases, self.cpu_secs, r.cpu_secs) {
            (0, _, c) => c,
            (_, Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.phases += 1;
    }
}

/// Parses a duration such as `30s`, `500ms`, `2m`, `1h` or `1.5s` (a bare number is
/// seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("{s:?}: expected a duration such as 30s, 500ms, 2m, 1h"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses a percentage, `90` or `90%`.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 =
        s.trim().trim_end_matches('%').parse().map_err(|_| format!("{s:?}: expected a percentage such as 90"))?;
    if (0.0..=100.0).contains(&v) { Ok(v) } else { Err(format!("{s:?}: a percentage is 0..=100")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_percentages() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_percent("90%"), Ok(90.0));
        assert_eq!(parse_percent("0.5"), Ok(0.5));
        assert!(parse_percent("101").is_err());
    }

    #[test]
    fn validation_names_the_setting() {
        let err = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::new("http://127.0.0.1:8080", "gw");
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(err(&|c| c.url = "https://h/".into()).contains("https is not supported"));
        assert!(err(&|c| c.duration = Duration::from_secs(7200)).contains("--duration"));
        assert!(err(&|c| c.connections = 0).contains("--connections"));
        assert!(err(&|c| c.mode = Mode::Open { rate: 0.0 }).contains("--rate"));
        assert!(err(&|c| c.unknown_share = 95.0).contains("--unknown-share"));
        assert!(err(&|c| c.persons = 10).contains("--persons"));
        assert!(err(&|c| c.institution = "123".into()).contains("--institution"));
        assert!(err(&|c| c.token = Token("a b".into())).contains("token"));
        assert!(Config::new("http://127.0.0.1:8080", "gw").validate().is_ok());
        assert!(!format!("{:?}", Config::new("http://h", "secret-token")).contains("secret-token"));
    }
}
