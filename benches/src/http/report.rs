//! The result of a run, as aligned text or as one JSON object (field names are stable and
//! listed in the [module doc](super)).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::conn::ClientKind;
use super::stats::{Percentiles, Tally};
use super::workload::SetupReport;

/// Everything a run measured, with its settings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was run.
    pub settings: Settings,
    /// The set-up (absent with `--only-ceiling`).
    pub setup: Option<SetupReport>,
    /// `GET /v1/ping` (absent with `--no-ceiling`).
    pub ceiling: Option<PhaseReport>,
    /// The lookup mix (absent with `--only-ceiling`).
    pub lookup: Option<PhaseReport>,
    /// `lookup.rps / ceiling.rps` when both ran (over all rounds).
    pub ratio: Option<f64>,
    /// Each round's own figures, when `--rounds` is more than 1 (else empty).
    pub rounds: Vec<RoundReport>,
    /// No phase's error share exceeded `max_error_share_pct`.
    pub passed: bool,
}

/// The run's settings (the token is never included).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Base URL.
    pub url: String,
    /// `raw` or `hyper`.
    pub client: ClientKind,
    /// Runtime worker threads.
    pub threads: usize,
    /// Keep-alive connections.
    pub connections: usize,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Open loop: offered requests/s in total.
    pub rate: Option<f64>,
    /// Timed part of each phase (of each round's, with several rounds).
    pub duration_secs: f64,
    /// Alternations of the ceiling and the lookups (ABBA order).
    pub rounds: usize,
    /// Warm-up before each phase.
    pub warmup_secs: f64,
    /// Cap on timed requests per phase.
    pub max_requests: Option<u64>,
    /// Per-request timeout.
    pub timeout_secs: f64,
    /// People in the store (`--persons`).
    pub persons: u64,
    /// Seed of the population and of the request choices.
    pub seed: u64,
    /// People in the workload.
    pub people: usize,
    /// Share of them consented, %.
    pub consent_share_pct: f64,
    /// Share of them not in the store, %.
    pub unknown_share_pct: f64,
    /// Share of requests that are batch calls, %.
    pub batch_share_pct: f64,
    /// People per batch call.
    pub batch_size: usize,
    /// Institution code of the consents and lookups.
    pub institution: String,
    /// Lookup date, YYYY-MM-DD.
    pub date: String,
    /// Error share above which the run fails, %.
    pub max_error_share_pct: f64,
}

/// One round of a run with `--rounds`: each side's throughput in that round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RoundReport {
    /// 0-based; even rounds ran the ceiling first, odd rounds the lookups first.
    pub round: usize,
    /// Ceiling req/s in this round (`None` with `--no-ceiling`).
    pub ceiling_rps: Option<f64>,
    /// Lookup req/s in this round (`None` with `--only-ceiling`).
    pub lookup_rps: Option<f64>,
    /// `lookup_rps / ceiling_rps` when both ran.
    pub ratio: Option<f64>,
}

impl RoundReport {
    pub(crate) fn new(round: usize, ceiling_rps: Option<f64>, lookup_rps: Option<f64>) -> RoundReport {
        RoundReport { round, ceiling_rps, lookup_rps, ratio: ratio(ceiling_rps, lookup_rps) }
    }
}

/// `lookup / ceiling` when both ran and the ceiling answered anything.
pub(crate) fn ratio(ceiling_rps: Option<f64>, lookup_rps: Option<f64>) -> Option<f64> {
    match (ceiling_rps, lookup_rps) {
        (Some(c), Some(l)) if c > 0.0 => Some(l / c),
        _ => None,
    }
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// `ceiling` or `lookup`.
    pub name: &'static str,
    /// Timed requests sent.
    pub requests: u64,
    /// Of them answered (any status).
    pub responses: u64,
    /// Requests sent during the warm-up (not in any other figure).
    pub warmup_requests: u64,
    /// From the end of the warm-up to the last timed answer.
    pub secs: f64,
    /// Answered timed requests per second.
    pub rps: f64,
    /// Expected 2xx answers.
    pub ok: u64,
    /// `403 consent_required` for people the harness left unconsented.
    pub expected_refusals: u64,
    /// 2xx for people the harness left unconsented (the store had a consent already).
    pub answered_unconsented: u64,
    /// Errors.
    pub errors: Errors,
    /// Connections re-opened.
    pub reconnects: u64,
    /// CPU used by this process during the phase (Linux; the client's cost).
    pub client_cpu_secs: Option<f64>,
    /// Latency of answered timed requests, µs.
    pub latency_us: Percentiles,
    /// Open loop only.
    pub open_loop: Option<OpenLoopReport>,
}

/// A phase's errors: unexpected statuses and requests without an answer.
#[derive(Debug, Clone, Serialize)]
pub struct Errors {
    /// All errors.
    pub total: u64,
    /// `total / requests`, %.
    pub share_pct: f64,
    /// Unexpected statuses by code.
    pub by_status: BTreeMap<u16, u64>,
    /// Connection could not be opened.
    pub connect: u64,
    /// Socket errors, connection closed mid-answer.
    pub io: u64,
    /// No answer within the timeout.
    pub timeout: u64,
    /// Broken HTTP framing.
    pub protocol: u64,
    /// The first error, as a sample.
    pub first: Option<String>,
}

/// How an open-loop phase kept to its schedule.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopReport {
    /// Offered requests/s.
    pub rate: f64,
    /// Requests due before the end but never sent (connections behind schedule).
    pub unsent: u64,
    /// How far behind schedule the most-behind connection ended, µs.
    pub lag_max_us: u64,
    /// Mean over connections (and over rounds, with `--rounds`) of how far behind they
    /// ended, µs.
    pub lag_mean_us: u64,
    /// What the client itself added to requests (timer, busy thread), µs; taken out of
    /// `latency_us`.
    pub client_lateness_us: Percentiles,
}

impl PhaseReport {
    /// A phase's report from its merged tally.
    pub(crate) fn new(
        name: &'static str,
        tally: &Tally,
        secs: f64,
        cpu_secs: Option<f64>,
        open_rate: Option<f64>,
        connections: usize,
    ) -> PhaseReport {
        let requests = tally.requests();
        let responses = tally.responses();
        let total = tally.errors();
        PhaseReport {
            name,
            requests,
            responses,
            warmup_requests: tally.warmup_requests,
            secs,
            rps: responses as f64 / secs,
            ok: tally.ok,
            expected_refusals: tally.expected_refusals,
            answered_unconsented: tally.answered_unconsented,
            errors: Errors {
                total,
                share_pct: if requests == 0 { 0.0 } else { total as f64 * 100.0 / requests as f64 },
                by_status: tally.by_status.clone(),
                connect: tally.connect,
                io: tally.io,
                timeout: tally.timeout,
                protocol: tally.protocol,
                first: tally.first_error.clone(),
            },
            reconnects: tally.reconnects,
            client_cpu_secs: cpu_secs,
            latency_us: Percentiles::of(&tally.latency),
            open_loop: open_rate.map(|rate| OpenLoopReport {
                rate,
                unsent: tally.unsent,
                lag_max_us: tally.lag.as_micros() as u64,
                lag_mean_us: (tally.lag_sum / connections.max(1) as u32).as_micros() as u64,
                client_lateness_us: Percentiles::of(&tally.client_lateness),
            }),
        }
    }
}

impl Report {
    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as aligned text.
    pub fn to_text(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let mode = match s.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            out,
            "pmh-bench http {}: {} client, {} thread(s), {} connection(s), {mode}, {} s per phase (+{} s warm-up){}{}",
            s.url,
            match s.client {
                ClientKind::Raw => "raw",
                ClientKind::Hyper => "hyper",
            },
            s.threads,
            s.connections,
            s.duration_secs,
            s.warmup_secs,
            s.max_requests.map(|m| format!(", at most {m} requests")).unwrap_or_default(),
            if s.rounds > 1 { format!(", {} rounds (ABBA order)", s.rounds) } else { String::new() },
        );
        if let Some(setup) = &self.setup {
            let _ = writeln!(
                out,
                "workload: {} people (persons {}, seed {}): {} consented ({} unknown), {} not; batch {} % × {}; institution {}, date {}",
                setup.split.people,
                s.persons,
                s.seed,
                setup.split.consented,
                setup.split.unknown,
                setup.split.people - setup.split.consented,
                s.batch_share_pct,
                s.batch_size,
                s.institution,
                s.date,
            );
            let _ = writeln!(
                out,
                "set-up: {} PMH-IDs resolved, {} consents granted, {:.2} s",
                setup.resolved, setup.consents_granted, setup.secs
            );
        }
        let _ = writeln!(
            out,
            "\n{:<8} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
            "phase", "requests", "req/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "errors", "refusals"
        );
        for p in [&self.ceiling, &self.lookup].into_iter().flatten() {
            let l = &p.latency_us;
            let _ = writeln!(
                out,
                "{:<8} {:>10} {:>11.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
                p.name, p.requests, p.rps, l.p50, l.p90, l.p99, l.p999, l.max, p.errors.total, p.expected_refusals
            );
        }
        if let Some(r) = self.ratio {
            let _ = writeln!(out, "ratio lookup/ceiling (throughput): {r:.3}");
        }
        if !self.rounds.is_empty() {
            let _ = writeln!(out, "\n{:<6} {:>11} {:>11} {:>7}", "round", "ceiling/s", "lookup/s", "ratio");
            let cell = |v: Option<f64>, prec: usize| v.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"));
            for r in &self.rounds {
                let _ = writeln!(
                    out,
                    "{:<6} {:>11} {:>11} {:>7}",
                    r.round,
                    cell(r.ceiling_rps, 1),
                    cell(r.lookup_rps, 1),
                    cell(r.ratio, 3)
                );
            }
        }
        for p in [&self.ceiling, &self.lookup].into_iter().flatten() {
            let e = &p.errors;
            let by_status = if e.by_status.is_empty() {
                "none".to_string()
            } else {
                e.by_status.iter().map(|(s, n)| format!("{s}×{n}")).collect::<Vec<_>>().join(" ")
            };
            let _ = writeln!(
                out,
                "\n{}: ok {}, expected refusals {}, answered unconsented {}, warm-up {} requests, {:.2} s timed{}",
                p.name,
                p.ok,
                p.expected_refusals,
                p.answered_unconsented,
                p.warmup_requests,
                p.secs,
                p.client_cpu_secs.map(|c| format!(", client CPU {c:.2} s")).unwrap_or_default(),
            );
            let _ = writeln!(
                out,
                "  errors {} ({:.3} %): status {by_status}; connect {}, io {}, timeout {}, protocol {}; reconnects {}",
                e.total, e.share_pct, e.connect, e.io, e.timeout, e.protocol, p.reconnects
            );
            if let Some(first) = &e.first {
                let _ = writeln!(out, "  first error: {first}");
            }
            if let Some(o) = &p.open_loop {
                let c = &o.client_lateness_us;
                let _ = writeln!(
                    out,
                    "  schedule: {} req/s offered; ended behind by {} µs max, {} µs mean; {} due but unsent; \
                     client lateness p50 {} µs, p99 {} µs, max {} µs",
                    o.rate, o.lag_max_us, o.lag_mean_us, o.unsent, c.p50, c.p99, c.max
                );
            }
        }
        let _ = writeln!(
            out,
            "\n{}",
            if self.passed {
                format!("passed (errors ≤ {} %)", s.max_error_share_pct)
            } else {
                format!("FAILED: error share above {} %", s.max_error_share_pct)
            }
        );
        out
    }
}
