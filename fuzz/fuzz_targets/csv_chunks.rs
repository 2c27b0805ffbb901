//! The full load's chunked CSV reading (`split_csv_chunks` + `CsvBatch::validate`) against
//! the record loop (`parse_csv`) on arbitrary bytes, with each encoding and with and
//! without a forced municipality: the same rows, row numbers, errors, row count and
//! settled encoding, whatever the chunk size (taken from the input's first byte, so that
//! records are cut at every place).
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&size, data)) = data.split_first() else { return };
    let chunk_bytes = usize::from(size % 64) + 1;
    for opts in common::option_sets() {
        let mut whole = Vec::new();
        let sequential = pmh_loader::parse_csv(data, &opts, |r| whole.push(r))
            .map(|s| (s.rows, s.encoding))
            .map_err(|e| format!("{e:?}"));
        let mut chunked = Vec::new();
        let split = pmh_loader::csv_reader::split_csv_chunks(
            data,
            &opts,
            chunk_bytes,
            || None,
            |batch| {
                batch.validate(|row, r| chunked.push((row, r)));
            },
        )
        .map_err(|e| format!("{e:?}"));
        assert_eq!(split, sequential, "row count / encoding / file errors, chunks of {chunk_bytes}");
        let rows: Vec<usize> = chunked.iter().map(|(row, _)| *row).collect();
        assert_eq!(rows, (1..=rows.len()).collect::<Vec<_>>(), "row numbers, chunks of {chunk_bytes}");
        let chunked: Vec<_> = chunked.into_iter().map(|(_, r)| r).collect();
        assert!(chunked == whole, "rows differ, chunks of {chunk_bytes}");
    }
});
