//! What one connection saw in one phase, and the sum over connections.
//!
//! Each connection task owns a [`Tally`] (no sharing, no locks on the hot path) and the
//! phase adds them up at the end with [`Tally::merge`]. Latencies go into an HDR
//! histogram of whole microseconds from 1 µs to 60 s at 3 significant digits (every
//! percentile within 0.1 %); a value above 60 s is recorded as 60 s. One histogram costs
//! about 140 KB, which is why connections are capped (see `Config::validate`).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::conn::FailureKind;

/// Lowest latency the histograms tell apart, µs.
pub const LOWEST_US: u64 = 1;
/// Highest latency recorded, µs (60 s); longer ones count as 60 s.
pub const HIGHEST_US: u64 = 60_000_000;
/// Significant decimal digits kept.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram with the bounds above.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS).expect("valid histogram bounds")
}

/// How a timed request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer the workload expected.
    Ok,
    /// `403 consent_required` for a person the harness did not consent for.
    ExpectedRefusal,
    /// A 2xx answer for a person the harness did not consent for (the store already had
    /// a consent, e.g. one built by `pmh-bench engine`): not an error, but counted.
    AnsweredUnconsented,
    /// Any other status: an error, counted by status code.
    Status(u16),
    /// No response at all.
    Failed(FailureKind),
}

/// Counts and latencies of one connection (or, merged, of a phase).
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of every timed request that got a response, µs.
    pub latency: Histogram<u64>,
    /// Open loop: what the client added (timer and scheduling lateness), µs.
    pub client_lateness: Histogram<u64>,
    /// Expected 2xx answers.
    pub ok: u64,
    /// Expected `403 consent_required`.
    pub expected_refusals: u64,
    /// 2xx for people the harness did not consent for.
    pub answered_unconsented: u64,
    /// Unexpected statuses, by code.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests that got no response, by kind.
    pub connect: u64,
    /// Socket errors and connections closed mid-response.
    pub io: u64,
    /// No answer within the timeout.
    pub timeout: u64,
    /// Broken HTTP framing.
    pub protocol: u64,
    /// Requests during the warm-up (sent, not recorded).
    pub warmup_requests: u64,
    /// Connections re-opened (after a failure or a `Connection: close`).
    pub reconnects: u64,
    /// Open loop: requests due before the end that were never sent (connection behind).
    pub unsent: u64,
    /// Open loop: how far behind its schedule the connection was when the phase ended.
    pub lag: Duration,
    /// Sum of the connections' end-of-phase lags (for the mean).
    pub lag_sum: Duration,
    /// When the last timed request finished, from the start of the timed part.
    pub last_done: Duration,
    /// The first failure's message, as a sample for the report.
    pub first_error: Option<String>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            latency: histogram(),
            client_lateness: histogram(),
            ok: 0,
            expected_refusals: 0,
            answered_unconsented: 0,
            by_status: BTreeMap::new(),
            connect: 0,
            io: 0,
            timeout: 0,
            protocol: 0,
            warmup_requests: 0,
            reconnects: 0,
            unsent: 0,
            lag: Duration::ZERO,
            lag_sum: Duration::ZERO,
            last_done: Duration::ZERO,
            first_error: None,
        }
    }
}

impl Tally {
    /// Counts one timed request; `latency` is `None` when it got no response.
    pub fn record(&mut self, outcome: Outcome, latency: Option<Duration>) {
        if let Some(l) = latency {
            self.latency.saturating_record(u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
        }
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::ExpectedRefusal => self.expected_refusals += 1,
            Outcome::AnsweredUnconsented => self.answered_unconsented += 1,
            Outcome::Status(s) => *self.by_status.entry(s).or_default() += 1,
            Outcome::Failed(FailureKind::Connect) => self.connect += 1,
            Outcome::Failed(FailureKind::Io) => self.io += 1,
            Outcome::Failed(FailureKind::Timeout) => self.timeout += 1,
            Outcome::Failed(FailureKind::Protocol) => self.protocol += 1,
        }
    }

    /// Timed requests that got a response.
    pub fn responses(&self) -> u64 {
        self.ok + self.expected_refusals + self.answered_unconsented + self.by_status.values().sum::<u64>()
    }

    /// Timed requests that got no response.
    pub fn failures(&self) -> u64 {
        self.connect + self.io + self.timeout + self.protocol
    }

    /// All timed requests sent.
    pub fn requests(&self) -> u64 {
        self.responses() + self.failures()
    }

    /// Errors: unexpected statuses plus failures.
    pub fn errors(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.failures()
    }

    /// Adds `other` (another connection's tally) into this one.
    pub fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.client_lateness.add(&other.client_lateness);
        self.ok += other.ok;
        self.expected_refusals += other.expected_refusals;
        self.answered_unconsented += other.answered_unconsented;
        for (s, n) in &other.by_status {
            *self.by_status.entry(*s).or_default() += n;
        }
        self.connect += other.connect;
        self.io += other.io;
        self.timeout += other.timeout;
        self.protocol += other.protocol;
        self.warmup_requests += other.warmup_requests;
        self.reconnects += other.reconnects;
        self.unsent += other.unsent;
        self.lag = self.lag.max(other.lag);
        self.lag_sum += other.lag_sum;
        self.last_done = self.last_done.max(other.last_done);
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// Percentiles of a latency histogram, µs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value (to the histogram's precision).
    pub max: u64,
}

impl Percentiles {
    /// Reads the percentiles off `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles { count: 0, mean: 0.0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
        }
        Percentiles {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Option<Duration> {
        Some(Duration::from_micros(n))
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut t = Tally::default();
        for v in 1..=10_000 {
            t.record(Outcome::Ok, us(v));
        }
        let p = Percentiles::of(&t.latency);
        assert_eq!(p.count, 10_000);
        // Within the histogram's 3 significant digits.
        for (got, want) in [(p.p50, 5_000), (p.p90, 9_000), (p.p99, 9_900), (p.p999, 9_990), (p.max, 10_000)] {
            assert!(got.abs_diff(want) * 1000 <= want, "{got} vs {want}");
        }
        assert!((p.mean - 5_000.5).abs() < 5.0);
        assert_eq!(Percentiles::of(&histogram()).p99, 0);
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for _ in 0..990 {
            a.record(Outcome::Ok, us(100));
        }
        for _ in 0..10 {
            b.record(Outcome::Ok, us(50_000));
        }
        b.record(Outcome::ExpectedRefusal, us(80));
        b.record(Outcome::Status(500), us(90));
        b.record(Outcome::Status(500), us(90));
        b.record(Outcome::Failed(FailureKind::Timeout), None);
        b.lag = Duration::from_millis(3);
        b.first_error = Some("boom".into());
        let mut total = Tally::default();
        total.merge(&a);
        total.merge(&b);
        assert_eq!((total.ok, total.expected_refusals, total.by_status[&500], total.timeout), (1000, 1, 2, 1));
        assert_eq!((total.responses(), total.failures(), total.requests(), total.errors()), (1003, 1, 1004, 3));
        let p = Percentiles::of(&total.latency);
        // 1,003 latencies: the slow connection's 10 show from p99.9 but not at p99.
        assert_eq!(p.count, 1003);
        assert_eq!(p.p50, 100);
        assert!(p.p99 < 200, "{p:?}");
        assert!(p.p999 >= 49_900, "{p:?}");
        assert_eq!((total.lag, total.first_error.as_deref()), (Duration::from_millis(3), Some("boom")));
    }

    #[test]
    fn saturates_above_sixty_seconds() {
        let mut t = Tally::default();
        t.record(Outcome::Ok, Some(Duration::from_secs(3600)));
        assert!(t.latency.max() >= HIGHEST_US - HIGHEST_US / 1000);
    }
}
