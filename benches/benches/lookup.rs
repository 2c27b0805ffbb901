//! Criterion: engine lookup vs. the raw RocksDB `get_pinned` ceiling on the same keys, in
//! the same run, over a synthetic store (1,000,000 people by default; set
//! `PMH_BENCH_PERSONS` to change it).
//!
//! `cargo bench -p pmh-bench --bench lookup` (via `make bench-engine`).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pmh_bench::engine::{BENCH_INSTITUTION, build_store};
use pmh_bench::synth::Rng;
use pmh_engine::{InstitutionCode, Lookup, StoreConfig};

fn lookup(c: &mut Criterion) {
    let persons: u64 = std::env::var("PMH_BENCH_PERSONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let b = build_store(dir.path(), persons, 1, StoreConfig { sync_writes: false, ..StoreConfig::default() })
        .expect("build store");
    let inst = InstitutionCode::parse(BENCH_INSTITUTION).expect("institution");
    let mut rng = Rng::new(9, 9);
    let order: Vec<usize> = (0..1 << 20).map(|_| rng.below(persons) as usize).collect();
    let keys: Vec<_> = order.iter().map(|&i| b.store.key_of(&b.ids[i])).collect();

    // Warm the block cache with every person, so that neither side pays for first reads
    // (the store was just written; the benchmark is of the in-memory hot path).
    for id in &b.ids {
        black_box(b.store.raw_get_pinned(&b.store.key_of(id)).expect("get").map(|v| v.len()));
    }

    let mut g = c.benchmark_group(format!("lookup_{persons}"));
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("raw_get_pinned", |bch| {
        bch.iter(|| {
            i = (i + 1) & ((1 << 20) - 1);
            black_box(b.store.raw_get_pinned(&keys[i]).expect("get").map(|v| v.len()))
        })
    });
    let client = b.store.register_client("bench");
    let mut i = 0usize;
    g.bench_function("engine_lookup", |bch| {
        bch.iter(|| {
            i = (i + 1) & ((1 << 20) - 1);
            match b.store.lookup(client, &b.ids[order[i]], inst, b.today).expect("lookup") {
                Lookup::Answered(e) => black_box(e.len()),
                Lookup::ConsentRequired => panic!("bench consent missing"),
            }
        })
    });
    g.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
