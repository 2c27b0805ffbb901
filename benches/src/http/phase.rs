//! One timed phase (the ceiling or the lookups): every connection runs its loop as a task,
//! closed or open, through the warm-up and then the timed part, and the tallies are added
//! up at the end.
//!
//! A request belongs to the timed part when it *starts* (closed loop) or is *due* (open
//! loop) at or after the end of the warm-up, and the phase sends nothing that starts or is
//! due after its end; requests under way at the end are waited for and counted. So the
//! requests the server saw are exactly the warm-up's plus the timed ones (plus nothing:
//! failures that never reached it are counted apart). Throughput is the timed requests
//! divided by the time from the end of the warm-up to the last timed answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Mode;
use super::conn::{Client, FailureKind};
use super::schedule::{OpenLoopClock, Schedule};
use super::stats::{Outcome, Tally};
use super::workload::Traffic;
use crate::synth::Rng;

/// Pause after a failed connect, so a down server is not hammered in a tight loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);
/// Random streams of the connections' request choices: `CONN_STREAM + c`.
const CONN_STREAM: u64 = 0x6874_7470_0000;

/// What a phase runs.
#[derive(Debug, Clone)]
pub(crate) struct PhasePlan {
    /// The requests.
    pub traffic: Arc<Traffic>,
    /// Closed or open loop.
    pub mode: Mode,
    /// Not recorded, before the timed part.
    pub warmup: Duration,
    /// The timed part.
    pub duration: Duration,
    /// Stop the timed part after this many requests (over all connections).
    pub max_requests: Option<u64>,
    /// Seed of the request choices.
    pub seed: u64,
}

/// What a phase measured.
#[derive(Debug, Clone)]
pub(crate) struct PhaseResult {
    /// All connections' tallies added up.
    pub tally: Tally,
    /// Seconds from the end of the warm-up to the last timed answer.
    pub secs: f64,
    /// CPU this process used during the phase (Linux only).
    pub cpu_secs: Option<f64>,
}

/// Runs `plan` on every client; gives the clients back for the next phase.
pub(crate) async fn run(clients: Vec<Client>, plan: PhasePlan) -> (Vec<Client>, PhaseResult) {
    let cpu_before = process_cpu_secs();
    let plan = Arc::new(plan);
    let tickets = Arc::new(AtomicU64::new(0));
    let n = clients.len();
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            let plan = Arc::clone(&plan);
            let tickets = Arc::clone(&tickets);
            tokio::spawn(connection(client, c, n, plan, start, tickets))
        })
        .collect();
    let mut clients = Vec::with_capacity(n);
    let mut tally = Tally::default();
    for t in tasks {
        match t.await {
            Ok((client, t)) => {
                tally.merge(&t);
                clients.push(client);
            }
            // A connection task panicked: a bug; the phase reports what the others saw.
            Err(e) => tally.first_error = tally.first_error.or(Some(format!("connection task: {e}"))),
        }
    }
    let secs = if tally.requests() == 0 { plan.duration.as_secs_f64() } else { tally.last_done.as_secs_f64() };
    let cpu_secs = process_cpu_secs().zip(cpu_before).map(|(a, b)| a - b);
    (clients, PhaseResult { tally, secs: secs.max(1e-9), cpu_secs })
}

/// One connection's loop.
async fn connection(
    mut client: Client,
    c: usize,
    n: usize,
    plan: Arc<PhasePlan>,
    start: Instant,
    tickets: Arc<AtomicU64>,
) -> (Client, Tally) {
    let mut tally = Tally::default();
    let mut rng = Rng::new(plan.seed, CONN_STREAM + c as u64);
    let reconnects_before = client.reconnects;
    let warmup = plan.warmup;
    let end = plan.warmup + plan.duration;
    // Claims one of the timed requests allowed by `--max-requests`.
    let claim = || plan.max_requests.is_none_or(|max| tickets.fetch_add(1, Ordering::Relaxed) < max);
    match plan.mode {
        Mode::Closed => loop {
            let sent = start.elapsed();
            if sent >= end {
                break;
            }
            let timed = sent >= warmup;
            if timed && !claim() {
                break;
            }
            let (outcome, answered) = send(&mut client, &plan.traffic, &mut rng, &mut tally).await;
            let done = start.elapsed();
            if timed {
                tally.record(outcome, answered.then(|| done - sent));
                tally.last_done = done - warmup;
            } else {
                tally.warmup_requests += 1;
            }
            if outcome == Outcome::Failed(FailureKind::Connect) {
                tokio::time::sleep(CONNECT_BACKOFF).await;
            }
        },
        Mode::Open { rate } => {
            let schedule = Schedule::new(rate, n);
            let mut clock = OpenLoopClock::default();
            for k in 0.. {
                let due = schedule.due(c, k);
                if due >= end {
                    break;
                }
                let now = start.elapsed();
                if now >= end {
                    // Behind schedule at the end: say by how much, and what was never sent.
                    tally.unsent = schedule.due_before(c, end) - k;
                    tally.lag = now - due;
                    tally.lag_sum = tally.lag;
                    break;
                }
                if due > now {
                    tokio::time::sleep_until((start + due).into()).await;
                }
                let timed = due >= warmup;
                if timed && !claim() {
                    break;
                }
                let sent = start.elapsed();
                let (outcome, answered) = send(&mut client, &plan.traffic, &mut rng, &mut tally).await;
                let done = start.elapsed();
                let timing = clock.record(due, sent, done);
                if timed {
                    tally.record(outcome, answered.then_some(timing.latency));
                    tally.client_lateness.saturating_record(timing.client_lateness.as_micros() as u64);
                    tally.last_done = done - warmup;
                } else {
                    tally.warmup_requests += 1;
                }
                if outcome == Outcome::Failed(FailureKind::Connect) {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                }
            }
        }
    }
    tally.reconnects = client.reconnects - reconnects_before;
    (client, tally)
}

/// Sends the next request of the mix; returns its outcome and whether it got a response.
async fn send(client: &mut Client, traffic: &Traffic, rng: &mut Rng, tally: &mut Tally) -> (Outcome, bool) {
    let (req, expect) = traffic.pick(rng);
    match client.send(req).await {
        Ok(reply) => {
            let outcome = expect.outcome(&reply);
            if let (Outcome::Status(s), None) = (outcome, &tally.first_error) {
                let body = String::from_utf8_lossy(&reply.body[..reply.body.len().min(160)]).into_owned();
                tally.first_error = Some(format!("{}: HTTP {s}: {body}", req.label));
            }
            (outcome, true)
        }
        Err(f) => {
            if tally.first_error.is_none() {
                tally.first_error = Some(format!("{}: {}", req.label, f.message));
            }
            (Outcome::Failed(f.kind), false)
        }
    }
}

/// This process's user + system CPU time so far, from `/proc/self/stat` (Linux; `None`
/// elsewhere). Clock ticks are taken as 100 Hz, the fixed `USER_HZ` of Linux's ABI.
pub(crate) fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_cpu_time() {
        let before = super::process_cpu_secs().expect("Linux");
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = super::process_cpu_secs().unwrap();
        assert!(after >= before);
    }
}
