//! `parse_json` on arbitrary bytes, with and without a forced municipality (auto and UTF-8
//! behave the same for JSON; Shift_JIS must be refused without reading). It must never
//! panic, and the invariants of `common.rs` must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmh_loader::{Encoding, ParseError};

mod common;

fuzz_target!(|data: &[u8]| {
    for opts in common::option_sets() {
        if opts.encoding == Encoding::Utf8 {
            continue; // the same as auto for JSON
        }
        let mut seen = common::Seen::default();
        let result = pmh_loader::parse_json(data, &opts, |r| seen.row(&opts, r));
        if opts.encoding == Encoding::ShiftJis {
            assert!(matches!(result, Err(ParseError::Invalid(_))), "Shift_JIS JSON accepted");
            continue;
        }
        seen.finish(&opts, result, true);
    }
});
