//! Criterion: the parts of the lookup hot path, one by one.
//!
//! `make bench-components` (= `cargo bench -p pmh-bench --bench components`).
//!
//! - PMH-ID derivation (HMAC-SHA-256) and the store key (xxh3-128);
//! - reading a stored holder value: full rkyv validation, checksum + unchecked access (the
//!   hot path), and the alternative the unaligned format avoids — copying the value into an
//!   aligned buffer first;
//! - the consent probe.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pmh_bench::synth::Population;
use pmh_engine::record::{Bucket, Holder, access_bucket, access_bucket_trusted, encode_bucket};
use pmh_engine::{Date, InstitutionCode, MyNumber, PmhIdDeriver, Store, StoreConfig};

fn components(c: &mut Criterion) {
    let pop = Population::new(1, Date::today_tokyo());
    let deriver = PmhIdDeriver::new(b"bench");
    let numbers: Vec<MyNumber> = (0..1024).map(|i| MyNumber::parse(&pop.my_number(i)).expect("valid")).collect();
    let ids: Vec<_> = numbers.iter().map(|n| deriver.derive(n)).collect();
    // Stored values of 1,024 people, each at an odd offset as RocksDB blocks hand them out.
    let values: Vec<Vec<u8>> = (0..1024u64)
        .map(|i| {
            let p = pop.person(i);
            let b =
                Bucket { holders: vec![Holder { pmh_id: *ids[i as usize].as_bytes(), certificates: p.certificates }] };
            let mut v = vec![0u8; 3];
            v.extend_from_slice(&encode_bucket(&b).expect("encode"));
            v
        })
        .collect();

    let mut g = c.benchmark_group("keys");
    let mut i = 0usize;
    g.bench_function("pmh_id_hmac_sha256", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(deriver.derive(&numbers[i]))
        })
    });
    g.bench_function("store_key_xxh3_128", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(ids[i].store_key())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("value_access");
    g.bench_function("bytecheck_validated", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(access_bucket(&values[i][3..]).expect("valid").holders().count())
        })
    });
    g.bench_function("checksum_then_unchecked", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            // SAFETY: produced by encode_bucket above.
            black_box(unsafe { access_bucket_trusted(&values[i][3..]) }.expect("valid").holders().count())
        })
    });
    g.bench_function("copy_to_aligned_then_checksum_unchecked", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(values[i].len());
            aligned.extend_from_slice(&values[i][3..]);
            // SAFETY: produced by encode_bucket above.
            black_box(unsafe { access_bucket_trusted(&aligned) }.expect("valid").holders().count())
        })
    });
    g.finish();

    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), StoreConfig { sync_writes: false, ..StoreConfig::default() }).expect("open");
    let inst = InstitutionCode::parse("1311234569").expect("institution");
    let now = pmh_engine::date::unix_now();
    let many: Vec<_> =
        (0..1_000_000u64).map(|i| deriver.derive(&MyNumber::parse(&pop.my_number(i)).expect("valid"))).collect();
    for id in &many {
        store.grant_consent(id, inst, now).expect("grant");
    }
    let mut g = c.benchmark_group("consent");
    g.bench_function("probe_1m_consents", |b| {
        b.iter(|| {
            i = (i * 7 + 13) % many.len();
            black_box(store.consent_expiry(&many[i], inst, now))
        })
    });
    g.finish();
}

criterion_group!(benches, components);
criterion_main!(benches);
