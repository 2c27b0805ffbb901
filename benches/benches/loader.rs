//! Criterion: the loader's parts, per row.
//!
//! `make bench-loader` (= `cargo bench -p pmh-bench --bench loader`).
//!
//! - parse + validate of generated CSV (UTF-8 and Shift_JIS) and JSON, per row (each row:
//!   every field checked, check digits, kana normalisation, dates), and of UTF-8 CSV as a
//!   full load's workers do it (chunks of whole records, fields read in place);
//! - writing holder buckets to an SST file (rkyv encode + checksum + `SstFileWriter::put`),
//!   per record, as a full load's last stage does.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pmh_bench::r#gen::{self, GenConfig};
use pmh_bench::synth::Population;
use pmh_engine::record::{Bucket, Holder, encode_bucket};
use pmh_engine::snapshot::SstOptions;
use pmh_engine::{Date, MyNumber, PmhIdDeriver, RocksTuning};
use pmh_loader::{Encoding, Format, ParseOptions};

const PERSONS: u64 = 2_000;

fn loader(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let date = Date::today_tokyo();
    let mut g = c.benchmark_group("parse_validate");
    for (name, format, encoding) in [
        ("csv_utf8", Format::Csv, Encoding::Utf8),
        ("csv_shift_jis", Format::Csv, Encoding::ShiftJis),
        ("json", Format::Json, Encoding::Utf8),
    ] {
        let out = dir.path().join(name);
        let mut cfg = GenConfig::new(PERSONS, date);
        cfg.format = format;
        cfg.encoding = encoding;
        let manifest = r#gen::generate(&out, &cfg).expect("generate");
        let bytes = std::fs::read(out.join(cfg.full_file_name(0))).expect("read");
        let rows = manifest.full_certificates();
        g.throughput(Throughput::Elements(rows));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0u64;
                pmh_loader::parse(format, &bytes[..], &ParseOptions::default(), |r| {
                    n += u64::from(r.is_ok());
                })
                .expect("parse");
                assert_eq!(n, rows);
                black_box(n)
            })
        });
        if format == Format::Csv && encoding == Encoding::Utf8 {
            // What a full load's workers do: validate chunks of whole records, split from
            // the file beforehand (the splitter's own work is not measured).
            let mut batches = Vec::new();
            pmh_loader::csv_reader::split_csv_chunks(
                &bytes[..],
                &ParseOptions::default(),
                1 << 20,
                || None,
                |b| batches.push(b),
            )
            .expect("split");
            g.bench_function("csv_utf8_chunks", |b| {
                b.iter(|| {
                    let mut n = 0u64;
                    for batch in &batches {
                        batch.validate(|_, r| n += u64::from(r.is_ok()));
                    }
                    assert_eq!(n, rows);
                    black_box(n)
                })
            });
        }
    }
    g.finish();

    // Buckets of PERSONS people, in key order, as a full load writes them.
    let pop = Population::new(1, date);
    let deriver = PmhIdDeriver::new(b"bench");
    let mut buckets: Vec<([u8; 16], Bucket)> = (0..PERSONS)
        .map(|i| {
            let id = deriver.derive(&MyNumber::parse(&pop.my_number(i)).expect("valid"));
            let b =
                Bucket { holders: vec![Holder { pmh_id: *id.as_bytes(), certificates: pop.person(i).certificates }] };
            (id.store_key().0, b)
        })
        .collect();
    buckets.sort_by_key(|b| b.0);
    let opts = SstOptions::holders(&RocksTuning::default());
    let mut g = c.benchmark_group("sst");
    g.throughput(Throughput::Elements(PERSONS));
    let path = dir.path().join("bench.sst");
    g.bench_function("encode_and_write_buckets", |b| {
        b.iter(|| {
            let mut w = opts.writer();
            w.open(&path).expect("open sst");
            for (k, bucket) in &buckets {
                w.put(k, encode_bucket(bucket).expect("encode")).expect("put");
            }
            w.finish().expect("finish");
        })
    });
    g.finish();
}

criterion_group!(benches, loader);
criterion_main!(benches);
