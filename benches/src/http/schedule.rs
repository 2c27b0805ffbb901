//! Open-loop timing: when each request is due, and its latency measured from that time.
//!
//! At a total rate of `R` requests/s over `C` connections, request number `j` of the run
//! is due `j / R` seconds after the phase starts, and connection `c` sends the requests
//! `j = c, c + C, c + 2C, …`: each connection runs at `R / C`, offset from its neighbours
//! by `1 / R`, so together they send evenly spaced requests. The times are pure functions
//! of `(rate, connections, c, k)`, computed from the phase start (never accumulated), so
//! they do not drift.
//!
//! Latency is counted from the *due* time, not the moment the request left: a connection
//! still waiting for a slow answer sends its next request late, and that wait is part of
//! what the next request experiences (correcting *coordinated omission*: a closed-loop
//! client that simply waits would record one slow answer where users would see many).
//! What the client itself adds is taken out: the timer may wake a little late (tokio's
//! timer has 1 ms granularity) and a busy client thread may start a request late. For
//! that [`OpenLoopClock`] replays the connection as if every request had left exactly on
//! time, keeping each request's measured service time (`done - sent`): a request's
//! latency is when it would have finished, `max(due, when the previous one would have
//! finished) + service`, minus its due time. Server slowness still queues up (a long
//! service time pushes back the requests after it); client lateness does not, and is
//! reported on its own so a saturated client shows.

use std::time::Duration;

/// When the requests of an open-loop phase are due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Nanoseconds between two requests of the whole run (`1e9 / rate`).
    interval_ns: f64,
    /// Connections sharing the rate.
    connections: u64,
}

impl Schedule {
    /// `rate` requests/s in total (finite, > 0), spread over `connections` (≥ 1).
    pub fn new(rate: f64, connections: usize) -> Schedule {
        Schedule { interval_ns: 1e9 / rate, connections: connections.max(1) as u64 }
    }

    /// When connection `conn`'s request number `k` is due, from the phase start.
    pub fn due(&self, conn: usize, k: u64) -> Duration {
        let j = k * self.connections + conn as u64;
        Duration::from_nanos((j as f64 * self.interval_ns).round() as u64)
    }

    /// How many of connection `conn`'s requests are due before `horizon`.
    pub fn due_before(&self, conn: usize, horizon: Duration) -> u64 {
        // First guess from the arithmetic, then fixed up against `due` itself so the two
        // never disagree by a rounding.
        let per_conn = self.interval_ns * self.connections as f64;
        let offset = conn as f64 * self.interval_ns;
        let mut n = ((horizon.as_nanos() as f64 - offset) / per_conn).ceil().max(0.0) as u64;
        while n > 0 && self.due(conn, n - 1) >= horizon {
            n -= 1;
        }
        while self.due(conn, n) < horizon {
            n += 1;
        }
        n
    }
}

/// Replays one open-loop connection as if every request had been sent when due; see the
/// module doc. Times are offsets from the phase start.
#[derive(Debug, Clone, Default)]
pub struct OpenLoopClock {
    /// When the previous request would have finished had every request left on time.
    ideal_free: Duration,
}

/// One open-loop request's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenLoopTiming {
    /// From the due time to when the answer would have arrived had the client sent on
    /// time (includes queueing behind slow answers on the same connection).
    pub latency: Duration,
    /// What the client added on top: the measured `done - due`, less `latency`.
    pub client_lateness: Duration,
}

impl OpenLoopClock {
    /// A request due at `due`, actually written at `sent`, answered at `done`.
    pub fn record(&mut self, due: Duration, sent: Duration, done: Duration) -> OpenLoopTiming {
        let service = done.saturating_sub(sent);
        let finish = due.max(self.ideal_free) + service;
        self.ideal_free = finish;
        let latency = finish - due;
        OpenLoopTiming { latency, client_lateness: done.saturating_sub(due).saturating_sub(latency) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn schedule_spreads_the_rate_over_connections() {
        // 1,000 req/s over 4 connections: one request every ms overall, every 4 ms each.
        let s = Schedule::new(1000.0, 4);
        let mut all: Vec<Duration> = (0..4).flat_map(|c| (0..250).map(move |k| s.due(c, k))).collect();
        all.sort();
        for (j, t) in all.iter().enumerate() {
            assert!(t.abs_diff(MS * j as u32) < Duration::from_nanos(10), "request {j} due at {t:?}");
        }
        assert_eq!(s.due(1, 0), MS);
        assert_eq!(s.due(1, 1), MS * 5);
        // In one second each connection has 250 requests due; the total is the rate.
        assert_eq!((0..4).map(|c| s.due_before(c, Duration::from_secs(1))).sum::<u64>(), 1000);
        assert_eq!(s.due_before(3, MS * 3), 0);
        assert_eq!(s.due_before(3, MS * 3 + Duration::from_nanos(1)), 1);
        // A rate below the connection count: some connections send nothing in a second.
        let slow = Schedule::new(2.0, 4);
        assert_eq!((0..4).map(|c| slow.due_before(c, Duration::from_secs(1))).collect::<Vec<_>>(), [1, 1, 0, 0]);
    }

    #[test]
    fn on_time_requests_measure_their_service_time() {
        let mut c = OpenLoopClock::default();
        let t = c.record(MS * 10, MS * 10, MS * 12);
        assert_eq!(t, OpenLoopTiming { latency: MS * 2, client_lateness: Duration::ZERO });
    }

    #[test]
    fn a_slow_answer_delays_the_next_requests_latency() {
        // Due every 10 ms; the first answer takes 35 ms, later ones 1 ms.
        let mut c = OpenLoopClock::default();
        assert_eq!(c.record(Duration::ZERO, Duration::ZERO, MS * 35).latency, MS * 35);
        // Due at 10, could only leave at 35: latency counts from 10.
        let t = c.record(MS * 10, MS * 35, MS * 36);
        assert_eq!(t, OpenLoopTiming { latency: MS * 26, client_lateness: Duration::ZERO });
        assert_eq!(c.record(MS * 20, MS * 36, MS * 37).latency, MS * 17);
        assert_eq!(c.record(MS * 30, MS * 37, MS * 38).latency, MS * 8);
        // Caught up.
        assert_eq!(c.record(MS * 40, MS * 40, MS * 41).latency, MS);
    }

    #[test]
    fn the_clients_own_lateness_is_not_charged_to_the_server() {
        // Due every 0.25 ms, but the timer only wakes at 1 ms: four requests leave late,
        // back to back, each answered in 0.1 ms.
        let us = Duration::from_micros(1);
        let mut c = OpenLoopClock::default();
        let mut done = MS;
        for k in 0..4u32 {
            let sent = done;
            done = sent + us * 100;
            let t = c.record(us * 250 * k, sent, done);
            assert_eq!(t.latency, us * 100, "request {k}");
            assert_eq!(t.latency + t.client_lateness, done - us * 250 * k);
        }
    }
}
