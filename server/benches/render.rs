//! JSON rendering of an eligibility answer (the server's share of a lookup beyond the
//! engine): `cargo bench -p pmh-server --bench render`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pmh_engine::{ApplyMode, Change, Date, InstitutionCode, Lookup, MyNumber, PmhIdDeriver, Store, StoreConfig};
use pmh_server::render;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let deriver = PmhIdDeriver::new(b"bench");
    let store = Store::open(dir.path(), StoreConfig { sync_writes: false, ..StoreConfig::default() }).unwrap();
    let id = deriver.derive(&MyNumber::parse("123456789018").unwrap());
    // Two certificates, as the synthetic population's typical person.
    let changes = ["H1", "H2"]
        .iter()
        .map(|h| Change::Upsert { pmh_id: id, certificate: pmh_engine::Certificate::example(h) })
        .collect();
    store.apply(changes, ApplyMode::Diff).unwrap();
    let inst = InstitutionCode::parse("1311234569").unwrap();
    store.grant_consent(&id, inst, pmh_engine::date::unix_now()).unwrap();
    let client = store.register_client("bench");
    let date = Date::parse("2026-11-21").unwrap();
    let Lookup::Answered(e) = store.lookup(client, &id, inst, date).unwrap() else { panic!("consented") };
    let mut probe = Vec::new();
    render::eligibility(&mut probe, &id, &e);
    serde_json::from_slice::<serde_json::Value>(&probe).expect("valid JSON");
    println!("response body: {} bytes, {} certificates", probe.len(), e.len());
    c.bench_function("render_eligibility_json", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(256 + 1024 * e.len());
            render::eligibility(&mut buf, &id, &e);
            black_box(buf)
        })
    });
    c.bench_function("engine_lookup", |b| {
        b.iter(|| black_box(store.lookup(client, &id, inst, date).unwrap().answered().map(|e| e.len())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
