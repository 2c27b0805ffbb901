//! Engine benchmark: a synthetic store, then lookup vs. the raw `get_pinned` ceiling.
//!
//! Both sides read the same keys in the same order, in alternating rounds so that drift
//! (another process, frequency changes) hits both equally. Latency is timed per operation
//! into an HDR histogram; throughput is timed over whole rounds without per-op clocks.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use pmh_engine::{Date, InstitutionCode, Lookup, PmhId, PmhIdDeriver, Store, StoreConfig};

use crate::synth::{Population, Rng};

/// The secret the synthetic stores use.
pub const BENCH_SECRET: &[u8] = b"pmh-bench-secret";
/// The institution every benchmark consent is granted to.
pub const BENCH_INSTITUTION: &str = "1311234569";

/// A built synthetic store and the PMH-IDs of its people.
pub struct BenchStore {
    /// The store.
    pub store: Store,
    /// PMH-ID of person `i` at index `i`.
    pub ids: Vec<PmhId>,
    /// The date certificates are valid around.
    pub today: Date,
}

/// Builds a store of `persons` synthetic people at `dir` (full snapshot load), and grants
/// every person a consent for [`BENCH_INSTITUTION`].
pub fn build_store(dir: &Path, persons: u64, seed: u64, config: StoreConfig) -> Result<BenchStore, String> {
    let today = Date::today_tokyo();
    let pop = Population::new(seed, today);
    let deriver = PmhIdDeriver::new(BENCH_SECRET);
    let store = Store::open(dir.join("store"), config).map_err(|e| e.to_string())?;
    let mut ids = Vec::with_capacity(persons as usize);
    let mut records = Vec::with_capacity(persons as usize * 14 / 10);
    for i in 0..persons {
        let p = pop.person(i);
        let n = pmh_engine::MyNumber::parse(&p.my_number).map_err(|e| e.to_string())?;
        let id = deriver.derive(&n);
        ids.push(id);
        records.extend(p.certificates.into_iter().map(|c| (id, c)));
    }
    store.load_snapshot(records, &dir.join("staging")).map_err(|e| e.to_string())?;
    let inst = InstitutionCode::parse(BENCH_INSTITUTION).map_err(|e| e.to_string())?;
    let now = pmh_engine::date::unix_now();
    for id in &ids {
        store.grant_consent(id, inst, now).map_err(|e| e.to_string())?;
    }
    Ok(BenchStore { store, ids, today })
}

/// A benchmarked operation: its name and what it does for operation number `i`.
type NamedOp<'a> = (&'static str, &'a dyn Fn(usize) -> Result<(), String>);

/// Latency and throughput of one operation.
#[derive(Debug, Clone)]
pub struct OpReport {
    /// Operation name.
    pub name: &'static str,
    /// Operations timed.
    pub ops: u64,
    /// Percentiles, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Mean of the per-op timings, ns.
    pub mean_ns: f64,
    /// Throughput over untimed rounds, operations per second.
    pub ops_per_sec: f64,
}

/// Result of [`run`].
#[derive(Debug, Clone)]
pub struct EngineReport {
    /// Raw `get_pinned` of the same keys (the ceiling).
    pub ceiling: OpReport,
    /// Full engine lookup (consent + get + validated access + date filter + access log).
    pub lookup: OpReport,
    /// Components between the two, for attribution: get + touching every value byte,
    /// get + full rkyv validation + holder match, get + checksum + holder match.
    pub components: Vec<OpReport>,
}

impl EngineReport {
    /// Lookup throughput as a fraction of the ceiling's.
    pub fn ratio(&self) -> f64 {
        self.lookup.ops_per_sec / self.ceiling.ops_per_sec
    }
}

/// Measures lookup vs. raw get over `ops` random people per side, in `rounds` rounds.
pub fn run(b: &BenchStore, ops: u64, rounds: u32, seed: u64) -> Result<EngineReport, String> {
    let inst = InstitutionCode::parse(BENCH_INSTITUTION).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(seed, 0xbe4c);
    let order: Vec<usize> = (0..ops).map(|_| rng.below(b.ids.len() as u64) as usize).collect();
    let keys: Vec<_> = order.iter().map(|&i| b.store.key_of(&b.ids[i])).collect();
    let raw = |i: usize| -> Result<(), String> {
        let v = b.store.raw_get_pinned(&keys[i]).map_err(|e| e.to_string())?;
        black_box(v.map(|v| v.len()));
        Ok(())
    };
    let client = b.store.register_client("bench");
    let look = |i: usize| -> Result<(), String> {
        match b.store.lookup(client, &b.ids[order[i]], inst, b.today).map_err(|e| e.to_string())? {
            Lookup::Answered(e) => {
                black_box(e.len());
            }
            Lookup::ConsentRequired => return Err("bench consent missing".into()),
        }
        Ok(())
    };
    let touch = |i: usize| -> Result<(), String> {
        let v = b.store.raw_get_pinned(&keys[i]).map_err(|e| e.to_string())?;
        black_box(v.map(|v| v.iter().fold(0u8, |a, &x| a ^ x)));
        Ok(())
    };
    let access = |i: usize| -> Result<(), String> {
        let v = b.store.raw_get_pinned(&keys[i]).map_err(|e| e.to_string())?;
        if let Some(v) = v {
            let bucket = pmh_engine::record::access_bucket(&v).map_err(|e| e.to_string())?;
            black_box(bucket.holder(b.ids[order[i]].as_bytes()).map(|h| h.len()));
        }
        Ok(())
    };
    let trusted = |i: usize| -> Result<(), String> {
        let v = b.store.raw_get_pinned(&keys[i]).map_err(|e| e.to_string())?;
        if let Some(v) = v {
            // SAFETY: the store's holders values are written by the engine's encoder.
            let bucket = unsafe { pmh_engine::record::access_bucket_trusted(&v) }.map_err(|e| e.to_string())?;
            black_box(bucket.holder(b.ids[order[i]].as_bytes()).map(|h| h.len()));
        }
        Ok(())
    };
    let ops_list: [NamedOp<'_>; 5] = [
        ("raw get_pinned", &raw),
        ("engine lookup", &look),
        ("get+touch value", &touch),
        ("get+bytecheck", &access),
        ("get+checksum", &trusted),
    ];
    // Warm the cache.
    for i in 0..order.len() {
        raw(i)?;
    }
    let mut hist: Vec<Histogram<u64>> =
        (0..ops_list.len()).map(|_| Histogram::<u64>::new(3).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    let mut secs = vec![0f64; ops_list.len()];
    let per_round = order.len() / rounds.max(1) as usize;
    for r in 0..rounds as usize {
        let range = r * per_round..(r + 1) * per_round;
        for (k, (_, op)) in ops_list.iter().enumerate() {
            // Throughput: untimed per op.
            let t = Instant::now();
            for i in range.clone() {
                op(i)?;
            }
            secs[k] += t.elapsed().as_secs_f64();
            // Latency: timed per op.
            for i in range.clone() {
                let t = Instant::now();
                op(i)?;
                let _ = hist[k].record(t.elapsed().as_nanos() as u64);
            }
        }
    }
    b.store.flush_access_log();
    let n = (per_round * rounds as usize) as f64;
    let mut reps: Vec<OpReport> = ops_list
        .iter()
        .zip(&hist)
        .zip(&secs)
        .map(|(((name, _), h), t)| OpReport {
            name,
            ops: h.len(),
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            mean_ns: h.mean(),
            ops_per_sec: n / t,
        })
        .collect();
    let components = reps.split_off(2);
    let lookup = reps.pop().ok_or("no lookup report")?;
    let ceiling = reps.pop().ok_or("no ceiling report")?;
    Ok(EngineReport { ceiling, lookup, components })
}
