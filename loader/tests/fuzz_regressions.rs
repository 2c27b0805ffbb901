//! Inputs found through the fuzz targets of `fuzz/` (see `fuzz/README.md`), kept as plain
//! tests so they run with `cargo test` on a stable toolchain.
//!
//! Each test feeds the bytes to the parser with the option sets the fuzz targets use and
//! checks what the target checks, except its reading of the `Debug` form: no panic, and no
//! error text (field, message, value, `Display`) holding an unmasked My Number (a run of
//! exactly 12 ASCII digits with a valid check digit). `Debug` escapes the text it shows, so
//! reading it back is the target's concern (`fuzz/fuzz_targets/common.rs`, `debug_text`).

use pmh_engine::{MunicipalityCode, MyNumber};
use pmh_loader::{Encoding, ParseError, ParseOptions, RowError, parse_csv, parse_json};

/// Every option set of the fuzz targets: each encoding, with and without a forced
/// municipality.
fn option_sets() -> Vec<ParseOptions> {
    let forced = MunicipalityCode::parse("131016").expect("valid code");
    let mut out = Vec::new();
    for encoding in [Encoding::Auto, Encoding::Utf8, Encoding::ShiftJis] {
        for municipality in [None, Some(forced)] {
            out.push(ParseOptions { encoding, municipality, file_name: Some("fuzz-input".to_owned()) });
        }
    }
    out
}

/// The runs of exactly 12 ASCII digits in `text` that are valid My Numbers.
fn my_numbers(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i - start == 12 && MyNumber::parse(&text[start..i]).is_ok() {
            out.push(&text[start..i]);
        }
    }
    out
}

/// Every error of every row and of the file, for one parse.
fn all_errors(json: bool, input: &[u8], opts: &ParseOptions) -> Vec<RowError> {
    let mut errors = Vec::new();
    let on_row = |r: Result<_, Vec<RowError>>| {
        if let Err(e) = r {
            errors.extend(e);
        }
    };
    let result = if json { parse_json(input, opts, on_row) } else { parse_csv(input, opts, on_row) };
    match result {
        Ok(_) => {}
        Err(ParseError::Invalid(e)) => errors.extend(e),
        Err(ParseError::Io(e)) => panic!("i/o error on an in-memory input: {e}"),
    }
    errors
}

/// Parses `input` with every option set (no panic) and asserts that no error shows a My
/// Number in its field, message, value or `Display`.
fn assert_masked(json: bool, input: &[u8]) {
    for opts in option_sets() {
        for e in all_errors(json, input, &opts) {
            for (what, text) in
                [("field", &e.field), ("message", &e.message), ("value", &e.value), ("display", &e.to_string())]
            {
                let found = my_numbers(text);
                assert!(found.is_empty(), "{:?}: unmasked My Number {found:?} in the {what} of {e}", opts.encoding);
            }
        }
    }
}

/// Regression: a 13-digit run whose first 12 digits are a valid My Number (123456789018),
/// placed so that the 100-character cut of an error value (`MAX_SHOWN_VALUE_CHARS`) ends
/// right after those 12: 88 `x` + `1234567890180`, 101 characters. The value used to be
/// masked *before* it was cut; a 13-digit run is not a My Number so nothing was masked,
/// and the cut then left `…xxx123456789018…` — a valid My Number in clear in the error.
/// Fixed by cutting first, then masking (`RowError::named`).
///
/// Found by reading `error.rs` and confirmed with the fuzz targets' invariant (the
/// 5-minute fuzz runs did not reach it).
const CUT_CSV: &[u8] = concat!(
    "municipalityCode,orgSpecificCertificateTypeId,myNumber,isNotDisclosed,medicalSubsidyInsurerNumber,",
    "certificationName,medicalSubsidyRecipientNumber,validFrom,validTo,historyKey,isDeleted\n",
    ",,,,,,,,,",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx1234567890180",
    ",\n",
)
.as_bytes();

/// The same as [`CUT_CSV`] in JSON.
const CUT_JSON: &[u8] = concat!(
    r#"[{"historyKey":""#,
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx1234567890180",
    r#""}]"#,
)
.as_bytes();

#[test]
fn cut_value_does_not_expose_a_my_number_csv() {
    assert_masked(false, CUT_CSV);
}

#[test]
fn cut_value_does_not_expose_a_my_number_json() {
    assert_masked(true, CUT_JSON);
}

/// The inputs above must at least parse without a panic (this part holds today).
#[test]
fn cut_inputs_do_not_panic() {
    for opts in option_sets() {
        all_errors(false, CUT_CSV, &opts);
        all_errors(true, CUT_JSON, &opts);
    }
}

/// Found by the `csv` target: a header whose unknown column name holds a NUL followed by 11
/// digits, in bytes that decode only as Shift_JIS. The error names the column; its `Debug`
/// form writes the NUL as `\0`, which the target's check first read as a twelfth digit
/// (`065688888888` passes the check digit). The text holds no 12-digit run, so nothing is
/// to be masked: the target's check now reads `Debug` escapes back, and the input is kept
/// here for what it does hold (no panic, no My Number in the error's parts).
const NUL_BEFORE_DIGITS_CSV: &[u8] = b"\x38\x38\x38\x38\x38\x38\x38\x38\x38\x38\x38\x38\x38\x38\x38\x38\x38\x38\x38\x38\x30\x30\x2c\x00\x30\xc3\x30\x30\x30\x00\x00\x00\x00\x00\x00\x00\x36\x35\x36\x38\x38\x38\x38\x38\x38\x38\x38\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\xcb\x38";

#[test]
fn a_nul_before_eleven_digits_in_a_column_name_is_no_my_number() {
    assert_masked(false, NUL_BEFORE_DIGITS_CSV);
    let opts = ParseOptions { encoding: Encoding::ShiftJis, municipality: None, file_name: None };
    let errors = all_errors(false, NUL_BEFORE_DIGITS_CSV, &opts);
    assert!(errors.iter().any(|e| e.field.contains("\u{0}65688888888")), "{errors:?}");
}
