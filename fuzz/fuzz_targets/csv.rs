//! `parse_csv` on arbitrary bytes, with each encoding (auto, UTF-8, Shift_JIS) and with and
//! without a forced municipality. It must never panic, and the invariants of
//! `common.rs` must hold (no unmasked My Number in any error, rows delivered in order,
//! the summary matching what was delivered).
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    for opts in common::option_sets() {
        let mut seen = common::Seen::default();
        let result = pmh_loader::parse_csv(data, &opts, |r| seen.row(&opts, r));
        seen.finish(&opts, result, false);
    }
});
