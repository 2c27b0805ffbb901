//! Prometheus metrics (`GET /metrics`, text format 0.0.4), kept in fixed arrays of atomics:
//! recording a request is a few relaxed atomic adds and no lock or allocation.
//!
//! - `pmh_http_requests_total{route,status}` and
//!   `pmh_http_request_duration_seconds{route}` (histogram) per route template;
//! - `pmh_lookups_total{outcome}`: `answered`, `answered_empty`, `consent_required`;
//! - `pmh_uploads_total{outcome}`: `accepted`, `rejected`, `forbidden`, `replayed`;
//! - store gauges read at scrape time: keys and bytes per column family, live consents,
//!   generation, corrupt reads.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pmh_engine::Store;

/// Route templates, as axum matches them. Index = position.
pub const ROUTES: [&str; 23] = [
    "/v1/subsidy/eligibility/{pmhId}",
    "/v1/subsidy/eligibility:batch",
    "/v1/pmh-ids",
    "/v1/consents",
    "/v1/consents/{pmhId}",
    "/v1/subsidy/uploads",
    "/v1/subsidy/uploads/{id}",
    "/v1/access-log/{pmhId}",
    "/v1/admin/snapshots",
    "/v1/admin/stats",
    "/v1/ping",
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/ui/",
    "/ui/style.css",
    "/ui/login",
    "/ui/logout",
    "/ui/upload",
    "/ui/uploads",
    "/ui/uploads/{id}",
    "/ui/uploads/{id}/errors.csv",
    "(unmatched)",
];

const UNMATCHED: usize = ROUTES.len() - 1;

/// Statuses counted individually; any other goes to the last slot (`other`).
const STATUSES: [u16; 15] = [200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 500, 503];

/// Histogram bucket upper bounds, seconds.
const BUCKETS: [f64; 17] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// The same bounds in nanoseconds, for the hot path.
const BUCKETS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

#[derive(Default)]
struct RouteMetrics {
    by_status: [AtomicU64; STATUSES.len() + 1],
    /// Cumulative-free bucket counts; the last is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// Lookup outcomes.
#[derive(Debug, Clone, Copy)]
pub enum LookupOutcome {
    /// Consent present, at least one certificate.
    Answered,
    /// Consent present, no certificate valid on the date.
    AnsweredEmpty,
    /// No live consent.
    ConsentRequired,
}

/// Upload outcomes.
#[derive(Debug, Clone, Copy)]
pub enum UploadOutcome {
    /// Applied.
    Accepted,
    /// Bad rows: 422.
    Rejected,
    /// Outside the caller's municipality or 公費負担者番号: 403.
    Forbidden,
    /// An `Idempotency-Key` seen before: the stored outcome was replayed.
    Replayed,
}

/// All counters of the server.
pub struct Metrics {
    routes: [RouteMetrics; ROUTES.len()],
    lookups: [AtomicU64; 3],
    uploads: [AtomicU64; 4],
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            routes: std::array::from_fn(|_| RouteMetrics::default()),
            lookups: Default::default(),
            uploads: Default::default(),
        }
    }
}

/// The index in [`ROUTES`] of a matched route template.
pub fn route_index(template: Option<&str>) -> usize {
    template.and_then(|t| ROUTES.iter().position(|r| *r == t)).unwrap_or(UNMATCHED)
}

impl Metrics {
    /// Records one request of route `route` (an index from [`route_index`]).
    #[inline]
    pub fn record_request(&self, route: usize, status: u16, took: Duration) {
        let r = &self.routes[route.min(UNMATCHED)];
        let s = STATUSES.iter().position(|&x| x == status).unwrap_or(STATUSES.len());
        r.by_status[s].fetch_add(1, Ordering::Relaxed);
        let ns = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        let b = BUCKETS_NS.iter().position(|&x| ns <= x).unwrap_or(BUCKETS.len());
        r.buckets[b].fetch_add(1, Ordering::Relaxed);
        r.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Records `n` lookups with one outcome.
    #[inline]
    pub fn record_lookups(&self, outcome: LookupOutcome, n: u64) {
        self.lookups[outcome as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Records an upload outcome.
    pub fn record_upload(&self, outcome: UploadOutcome) {
        self.uploads[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests of `route` answered with `status` so far (tests, diagnostics).
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        let r = &self.routes[route_index(Some(route))];
        let s = STATUSES.iter().position(|&x| x == status).unwrap_or(STATUSES.len());
        r.by_status[s].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition, with store gauges read now.
    pub fn render(&self, store: &Store, uptime: Duration) -> String {
        let mut o = String::with_capacity(16 << 10);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        o.push_str("# HELP pmh_http_requests_total HTTP requests by route template and status.\n");
        o.push_str("# TYPE pmh_http_requests_total counter\n");
        for (name, r) in ROUTES.iter().zip(&self.routes) {
            for (i, c) in r.by_status.iter().enumerate() {
                let n = load(c);
                if n == 0 {
                    continue;
                }
                let status = STATUSES.get(i).map(|s| s.to_string()).unwrap_or_else(|| "other".into());
                let _ = writeln!(o, "pmh_http_requests_total{{route=\"{name}\",status=\"{status}\"}} {n}");
            }
        }
        o.push_str("# HELP pmh_http_request_duration_seconds Time from request to response head, by route.\n");
        o.push_str("# TYPE pmh_http_request_duration_seconds histogram\n");
        for (name, r) in ROUTES.iter().zip(&self.routes) {
            let total: u64 = r.buckets.iter().map(load).sum();
            if total == 0 {
                continue;
            }
            let mut cum = 0;
            for (i, c) in r.buckets.iter().enumerate() {
                cum += load(c);
                let le = BUCKETS.get(i).map(|b| b.to_string()).unwrap_or_else(|| "+Inf".into());
                let _ = writeln!(o, "pmh_http_request_duration_seconds_bucket{{route=\"{name}\",le=\"{le}\"}} {cum}");
            }
            let sum = load(&r.sum_ns) as f64 / 1e9;
            let _ = writeln!(o, "pmh_http_request_duration_seconds_sum{{route=\"{name}\"}} {sum}");
            let _ = writeln!(o, "pmh_http_request_duration_seconds_count{{route=\"{name}\"}} {total}");
        }
        o.push_str("# HELP pmh_lookups_total Eligibility lookups (batch items counted one by one) by outcome.\n");
        o.push_str("# TYPE pmh_lookups_total counter\n");
        for (name, c) in ["answered", "answered_empty", "consent_required"].iter().zip(&self.lookups) {
            let _ = writeln!(o, "pmh_lookups_total{{outcome=\"{name}\"}} {}", load(c));
        }
        o.push_str("# HELP pmh_uploads_total Municipal uploads by outcome.\n");
        o.push_str("# TYPE pmh_uploads_total counter\n");
        for (name, c) in ["accepted", "rejected", "forbidden", "replayed"].iter().zip(&self.uploads) {
            let _ = writeln!(o, "pmh_uploads_total{{outcome=\"{name}\"}} {}", load(c));
        }
        match store.stats() {
            Ok(s) => {
                o.push_str("# HELP pmh_store_keys Estimated keys per column family.\n");
                o.push_str("# TYPE pmh_store_keys gauge\n");
                for cf in &s.column_families {
                    let _ = writeln!(o, "pmh_store_keys{{cf=\"{}\"}} {}", cf.name, cf.estimated_keys);
                }
                o.push_str("# HELP pmh_store_bytes Bytes in SST files and memtables per column family.\n");
                o.push_str("# TYPE pmh_store_bytes gauge\n");
                for cf in &s.column_families {
                    let _ = writeln!(o, "pmh_store_bytes{{cf=\"{}\"}} {}", cf.name, cf.sst_bytes + cf.memtable_bytes);
                }
                o.push_str("# TYPE pmh_store_generation gauge\n");
                let _ = writeln!(o, "pmh_store_generation {}", s.generation);
                o.push_str("# TYPE pmh_live_consents gauge\n");
                let _ = writeln!(o, "pmh_live_consents {}", s.live_consents);
                o.push_str("# HELP pmh_row_cache_bytes Bytes held by the row cache of single lookups.\n");
                o.push_str("# TYPE pmh_row_cache_bytes gauge\n");
                let _ = writeln!(o, "pmh_row_cache_bytes {}", s.row_cache_bytes);
                o.push_str("# TYPE pmh_access_log_failures_total counter\n");
                let _ = writeln!(o, "pmh_access_log_failures_total {}", s.access_log_failures);
            }
            Err(e) => tracing::warn!("metrics: store stats unavailable: {e}"),
        }
        o.push_str("# TYPE pmh_corrupt_reads_total counter\n");
        let _ = writeln!(o, "pmh_corrupt_reads_total {}", store.corrupt_reads());
        o.push_str("# TYPE pmh_uptime_seconds gauge\n");
        let _ = writeln!(o, "pmh_uptime_seconds {}", uptime.as_secs());
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_agree() {
        for (s, ns) in BUCKETS.iter().zip(BUCKETS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
        assert_eq!(route_index(Some("/v1/ping")), 10);
        assert_eq!(route_index(Some("/nope")), UNMATCHED);
        assert_eq!(route_index(None), UNMATCHED);
    }

    #[test]
    fn requests_are_counted_by_status_and_bucket() {
        let m = Metrics::default();
        m.record_request(route_index(Some("/v1/ping")), 200, Duration::from_micros(70));
        m.record_request(route_index(Some("/v1/ping")), 200, Duration::from_secs(20));
        m.record_request(route_index(Some("/v1/ping")), 418, Duration::from_micros(1));
        assert_eq!(m.requests("/v1/ping", 200), 2);
        assert_eq!(m.requests("/v1/ping", 418), 1); // counted as `other`
        let r = &m.routes[10];
        assert_eq!(r.buckets[1].load(Ordering::Relaxed), 1); // 70 µs ≤ 100 µs
        assert_eq!(r.buckets[BUCKETS.len()].load(Ordering::Relaxed), 1); // +Inf
    }
}
