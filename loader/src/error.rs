//! Errors. Bad input ([`RowError`]: one broken rule in one row, field by field) and failure
//! to read the input at all ([`ParseError::Io`]) are different things: the first is the
//! municipality's to fix and is reported in full, the second is ours (or the network's).
//!
//! No error ever holds a My Number: values of the `myNumber` field are masked with
//! [`pmh_engine::ids::mask_my_number`] when the error is built, and the readers never put
//! record content into structural errors (column counts, JSON syntax).

use std::fmt;
use std::io;

use pmh_engine::ids::mask_my_number;

use crate::field::Field;

/// Longest value (in characters) quoted in an error; longer values are cut and end in `…`.
pub const MAX_SHOWN_VALUE_CHARS: usize = 100;

/// Pseudo field name of errors about a whole data row (wrong column count, a JSON array
/// element that is not an object).
pub const FIELD_RECORD: &str = "(record)";
/// Pseudo field name of errors about the file as a whole (syntax, encoding, empty file).
pub const FIELD_FILE: &str = "(file)";

/// One broken rule in one row of an input file.
///
/// Rendered (`Display`) as one line:
/// `FILE: row N, field F, rule R: MESSAGE (value "V")` — the file part only when known,
/// the row part only for data rows (`row` ≥ 1), the value part only when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The file name the caller gave in [`crate::ParseOptions::file_name`].
    pub file: Option<String>,
    /// 1-based data row (CSV: the header is not counted, a record spanning several lines
    /// counts once; JSON: the position in the top-level array). 0 for the header or the
    /// file as a whole.
    pub row: usize,
    /// The PMH API field name, dotted for nested fields (`basicFiveInfo.name`,
    /// `copayment.ratePerDay`); a CSV column as written for header errors; or
    /// [`FIELD_RECORD`] / [`FIELD_FILE`].
    pub field: String,
    /// The rule that failed, a short stable phrase (`"check digit"`, `"required"`, …).
    pub rule: &'static str,
    /// What is wrong, readable by the municipality's operator.
    pub message: String,
    /// The offending value (My Numbers masked, long values cut); empty when there is none.
    pub value: String,
}

impl RowError {
    /// An error about a value of `field`; the value is masked or cut as needed.
    pub(crate) fn new(
        file: Option<&str>,
        row: usize,
        field: Field,
        rule: &'static str,
        message: impl Into<String>,
        value: &str,
    ) -> RowError {
        RowError::named(file, row, field.name().to_owned(), rule, message, &shown_value(field, value))
    }

    /// An error about something that is not a known field (a header cell, a whole row).
    /// Any My Number in `field`, `message` or `value` is masked.
    pub(crate) fn named(
        file: Option<&str>,
        row: usize,
        field: String,
        rule: &'static str,
        message: impl Into<String>,
        value: &str,
    ) -> RowError {
        RowError {
            file: file.map(str::to_owned),
            row,
            field: mask_embedded_my_numbers(&field),
            rule,
            message: mask_embedded_my_numbers(&message.into()),
            value: mask_embedded_my_numbers(&cut(value)),
        }
    }
}

/// The value as shown in an error: the whole value masked for the `myNumber` field, any
/// My Number elsewhere masked too (see [`mask_embedded_my_numbers`]).
fn shown_value(field: Field, value: &str) -> String {
    if field == Field::MyNumber { mask_my_number(value) } else { mask_embedded_my_numbers(value) }
}

/// Masks every run of exactly 12 ASCII digits that is a valid My Number, wherever it
/// stands. A My Number can reach an error through another field — a CSV whose columns are
/// shifted, a file without its header row (its first row is then read as the header and
/// every cell is quoted as an unknown column), a number pasted into the wrong JSON key —
/// so every text that goes into an error passes through here. A 12-digit value that only
/// happens to carry a valid check digit (1 in 11) is masked as well: the safe mistake.
pub(crate) fn mask_embedded_my_numbers(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let run = &s[start..i];
        if run.len() == 12 && pmh_engine::MyNumber::parse(run).is_ok() {
            out.push_str(&s[copied..start]);
            out.push_str(&mask_my_number(run));
            copied = i;
        }
    }
    out.push_str(&s[copied..]);
    out
}

fn cut(value: &str) -> String {
    if value.chars().count() <= MAX_SHOWN_VALUE_CHARS {
        value.to_owned()
    } else {
        let mut s: String = value.chars().take(MAX_SHOWN_VALUE_CHARS).collect();
        s.push('…');
        s
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if self.row > 0 {
            write!(f, "row {}, ", self.row)?;
        }
        write!(f, "field {}, rule {}: {}", self.field, self.rule, self.message)?;
        if !self.value.is_empty() {
            f.write_str(" (value \"")?;
            for c in self.value.chars() {
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\")")?;
        }
        Ok(())
    }
}

impl std::error::Error for RowError {}

/// The error report of a file: one [`RowError`] per line, each line ending in `\n`.
pub fn format_report(errors: &[RowError]) -> String {
    let mut s = String::new();
    for e in errors {
        s.push_str(&e.to_string());
        s.push('\n');
    }
    s
}

/// Why a file could not be parsed to the end.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The input cannot be read as records (a bad CSV header, a JSON syntax error, an
    /// empty file, …), or — from [`crate::parse_all`] — some rows were bad. Every problem
    /// found, in file order. Rows delivered before a syntax error must be discarded too:
    /// a file is accepted whole or not at all.
    #[error("{}", summarise(.0))]
    Invalid(Vec<RowError>),
    /// Reading the input failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

fn summarise(errors: &[RowError]) -> String {
    match errors {
        [] => "invalid input".to_owned(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more error(s))", rest.len()),
    }
}

/// The errors of one row while it is being read and validated. Errors are kept with the
/// order of their field so the final list is in field order whatever order the input
/// (JSON object keys) or the checks produced them in.
#[derive(Debug)]
pub(crate) struct RowErrors<'a> {
    file: Option<&'a str>,
    row: usize,
    items: Vec<(usize, RowError)>,
}

impl<'a> RowErrors<'a> {
    pub(crate) fn new(file: Option<&'a str>, row: usize) -> RowErrors<'a> {
        RowErrors { file, row, items: Vec::new() }
    }

    pub(crate) fn row(&self) -> usize {
        self.row
    }

    /// Records a broken rule of `field` (value masked or cut as needed).
    pub(crate) fn push(&mut self, field: Field, rule: &'static str, message: impl Into<String>, value: &str) {
        self.items.push((field.index() + 1, RowError::new(self.file, self.row, field, rule, message, value)));
    }

    /// Records a problem that is not about one known field (sorted before field errors).
    pub(crate) fn push_named(&mut self, field: &str, rule: &'static str, message: impl Into<String>, value: &str) {
        self.items.push((0, RowError::named(self.file, self.row, field.to_owned(), rule, message, value)));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The errors, in field order (stable: same-field errors keep detection order).
    pub(crate) fn into_sorted(mut self) -> Vec<RowError> {
        self.items.sort_by_key(|(order, _)| *order);
        self.items.into_iter().map(|(_, e)| e).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn my_number_values_are_masked() {
        let e = RowError::new(Some("f.csv"), 3, Field::MyNumber, "check digit", "bad", "123456789019");
        assert_eq!(e.value, "**********19");
        assert!(!format!("{e:?}").contains("1234567890"));
        assert_eq!(e.to_string(), "f.csv: row 3, field myNumber, rule check digit: bad (value \"**********19\")");
    }

    #[test]
    fn my_numbers_are_masked_anywhere() {
        assert_eq!(mask_embedded_my_numbers("x123456789018y,123456789018"), "x**********18y,**********18");
        // Not a My Number: wrong length or check digit.
        assert_eq!(mask_embedded_my_numbers("1234567890180 123456789017"), "1234567890180 123456789017");
        assert_eq!(mask_embedded_my_numbers("山田123456789018"), "山田**********18");
        let e = RowError::named(None, 0, "123456789018".into(), "unknown column", "column \"123456789018\"", "");
        assert!(!format!("{e:?}").contains("1234567890"));
        let e = RowError::new(None, 1, Field::MunicipalityCode, "6 digits", "bad", "123456789018");
        assert_eq!(e.value, "**********18");
    }

    #[test]
    fn display_forms() {
        let e = RowError::named(None, 0, "foo".into(), "unknown column", "unknown column \"foo\"", "");
        assert_eq!(e.to_string(), "field foo, rule unknown column: unknown column \"foo\"");
        let long = "あ".repeat(150);
        let e = RowError::new(None, 1, Field::Name, "max length", "too long", &long);
        assert_eq!(e.value.chars().count(), MAX_SHOWN_VALUE_CHARS + 1);
        let e = RowError::new(None, 1, Field::Address, "x", "y", "a\"b\nc\u{1}");
        assert!(e.to_string().ends_with(r#"(value "a\"b\nc\u{1}")"#), "{e}");
    }

    #[test]
    fn errors_sort_by_field() {
        let mut r = RowErrors::new(None, 1);
        r.push(Field::ValidTo, "a", "", "");
        r.push(Field::MyNumber, "b", "", "");
        r.push_named(FIELD_RECORD, "c", "", "");
        r.push(Field::MyNumber, "d", "", "");
        let rules: Vec<_> = r.into_sorted().iter().map(|e| e.rule).collect();
        assert_eq!(rules, ["c", "b", "d", "a"]);
    }
}
