//! Invariants shared by the fuzz targets: what must hold of any parse of any input.

use std::fmt::Write as _;

use pmh_engine::{MunicipalityCode, MyNumber};
use pmh_loader::{Encoding, ParseError, ParseOptions, ParseSummary, ParsedRow, RowError};

/// The municipality forced on half of the runs (a valid code, the one of the samples).
pub const FORCED: &str = "131016";

/// The option sets every input is parsed with: each encoding, with and without a forced
/// municipality.
pub fn option_sets() -> Vec<ParseOptions> {
    let forced = MunicipalityCode::parse(FORCED).expect("valid municipality code");
    let mut out = Vec::new();
    for encoding in [Encoding::Auto, Encoding::Utf8, Encoding::ShiftJis] {
        for municipality in [None, Some(forced)] {
            out.push(ParseOptions { encoding, municipality, file_name: Some("fuzz-input".to_owned()) });
        }
    }
    out
}

/// Panics if `text` holds a run of exactly 12 ASCII digits (not part of a longer run) with
/// a valid My Number check digit — what `mask_embedded_my_numbers` promises never to let
/// through into an error.
pub fn assert_no_my_number(what: &str, text: &str) {
    let b = text.as_bytes();
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
            panic!("unmasked My Number {:?} in {what}: {text:?}", &text[start..i]);
        }
    }
}

/// `Debug` output with its escapes read back where they would make digits that the text
/// does not hold: `Debug` writes U+0000 as `\0`, so a NUL before 11 digits reads as 12
/// (a false alarm found by the `csv` target). `\\` is one backslash, so the `0` after it
/// stays a digit of the text.
fn debug_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('\\')) => {
                chars.next();
                out.push('\\');
            }
            ('\\', Some('0')) => {
                chars.next();
                out.push('\u{2400}');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Checks one error: no My Number in its field, message, value, `Display` or `Debug`.
pub fn check_error(e: &RowError) {
    assert_no_my_number("RowError.field", &e.field);
    assert_no_my_number("RowError.message", &e.message);
    assert_no_my_number("RowError.value", &e.value);
    let mut s = String::new();
    write!(s, "{e}").unwrap();
    assert_no_my_number("RowError Display", &s);
    s.clear();
    write!(s, "{e:?}").unwrap();
    assert_no_my_number("RowError Debug", &debug_text(&s));
}

/// What the `on_row` callback saw.
#[derive(Default)]
pub struct Seen {
    calls: usize,
    ok: usize,
    errors: usize,
}

impl Seen {
    /// Checks one delivered row: rows come in order, 1-based; an error list is non-empty,
    /// names the row and leaks no My Number; a row accepted under a forced municipality
    /// belongs to it.
    pub fn row(&mut self, opts: &ParseOptions, r: Result<ParsedRow, Vec<RowError>>) {
        self.calls += 1;
        match r {
            Ok(row) => {
                self.ok += 1;
                assert_eq!(row.row, self.calls, "ParsedRow.row out of order");
                if let Some(m) = opts.municipality {
                    assert_eq!(row.certificate.municipality_code, m.get(), "row of another municipality accepted");
                }
                // Debug of a row must not show the My Number it was validated from.
                let dbg = format!("{:?}", row.pmh_source);
                assert_eq!(dbg, "MyNumber(****)");
            }
            Err(errors) => {
                assert!(!errors.is_empty(), "a rejected row with no error");
                self.errors += errors.len();
                for e in &errors {
                    assert_eq!(e.row, self.calls, "RowError.row does not name its row");
                    check_error(e);
                }
            }
        }
    }

    /// Checks the final result against what was delivered.
    pub fn finish(&self, opts: &ParseOptions, result: Result<ParseSummary, ParseError>, json: bool) {
        match result {
            Ok(s) => {
                assert_eq!(s.rows, self.calls, "summary.rows != rows delivered");
                assert_eq!(s.accepted, self.ok, "summary.accepted != Ok rows delivered");
                assert_eq!(s.rejected, self.calls - self.ok, "summary.rejected != Err rows delivered");
                assert_eq!(s.errors, self.errors, "summary.errors != errors delivered");
                assert_ne!(s.encoding, Encoding::Auto, "summary.encoding left undecided");
                if json || opts.encoding == Encoding::Utf8 {
                    assert_eq!(s.encoding, Encoding::Utf8);
                } else if opts.encoding == Encoding::ShiftJis {
                    assert_eq!(s.encoding, Encoding::ShiftJis);
                }
            }
            Err(ParseError::Invalid(errors)) => {
                assert!(!errors.is_empty(), "ParseError::Invalid with no error");
                for e in &errors {
                    check_error(e);
                }
                assert_no_my_number("ParseError Display", &ParseError::Invalid(errors).to_string());
            }
            Err(ParseError::Io(e)) => {
                // Reading a byte slice cannot fail: any Io error is a reader bug.
                panic!("i/o error on an in-memory input: {e}");
            }
        }
    }
}
