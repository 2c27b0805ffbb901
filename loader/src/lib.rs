//! # pmh-loader — reading municipalities' subsidy files
//!
//! Parses and validates the files municipalities send to the hub — CSV (UTF-8 or
//! Shift_JIS/CP932) or JSON, with the field names of the published PMH registration API —
//! into [`ParsedRow`]s: a validated My Number and an engine [`pmh_engine::Certificate`],
//! ready to become an engine [`pmh_engine::Change`]. Every broken rule of every row is
//! reported as a [`RowError`] naming the file, row, field and rule; a My Number never
//! appears in an error, a message or `Debug` output.
//!
//! On top of the parsers: [`load`] (full snapshots through a parallel, memory-bounded
//! sort into SST files; differential files as atomic change sets), [`config`] (the
//! configuration file shared with the server), and the thin `pmh-load` / `pmh-admin`
//! binaries.
//!
//! ## Layout
//! - [`config`] — the TOML configuration (`docs/configuration.md`).
//! - [`load`] — [`load::full`], [`load::prepare`] / [`load::install`], [`load::diff`],
//!   [`load::check`] (`docs/operations.md`).
//! - `field` (private) — the field catalogue: API names, Japanese CSV headers, which
//!   columns a CSV must have.
//! - [`csv_reader`] — [`parse_csv`]: header mapping, encodings (BOM, detection, per-field
//!   decoding), `;`-list columns, streaming.
//! - [`json_reader`] — [`parse_json`]: one array element at a time through a serde
//!   `SeqAccess` visitor; unknown, duplicate and mistyped keys become row errors.
//! - `raw` (private) — `RawRecord`: a record as text, the common form both
//!   readers produce.
//! - [`validate`] — the rules of design §4 on a raw record; [`validate::limits`] lists
//!   the length limits.
//! - `kana` (private) — 氏名カナ normalisation (half-width → full-width, ｶﾞ → ガ).
//! - [`row`] — [`ParsedRow`], the output; [`ParsedRow::into_change`].
//! - [`error`] — [`RowError`] (bad input, one per broken rule), [`ParseError`] (a file
//!   that cannot be read as records, or I/O), [`format_report`].
//! - [`options`] — [`ParseOptions`] (encoding, the caller's municipality, file name),
//!   [`Encoding`], [`Format`], [`ParseSummary`].
//! - [`watch`] — the batch uploader, `pmh-load send` / `watch` (`docs/municipalities.md`).
//!
//! ## Data flow
//! ```text
//!  Read ─▶ strip BOM ─▶ csv::Reader (bytes) ─▶ decode field ─┐
//!  Read ─▶ strip BOM ─▶ serde_json SeqAccess ─▶ (key, Value) ─┴─▶ RawRecord ─▶ validate
//!        ─▶ on_row(Ok(ParsedRow) | Err(Vec<RowError>))   one row at a time, file order
//! ```
//!
//! ## Decisions
//! The file formats and every choice made where the design is silent are written down in
//! `docs/file-formats.md`. In short: values are trimmed and empty means absent; rows are
//! validated completely; a delete row needs only its identity and My Number; errors are
//! listed per row in field order; a file is accepted or rejected whole by the caller
//! (the readers deliver every row and leave that decision to it).
//!
//! ## Example
//! ```
//! use pmh_loader::{parse_csv, ParseOptions};
//!
//! let csv = "municipalityCode,orgSpecificCertificateTypeId,myNumber,isNotDisclosed,\
//! medicalSubsidyInsurerNumber,certificationName,medicalSubsidyRecipientNumber,validFrom,validTo,historyKey,isDeleted\n\
//! 131016,KODOMO,123456789018,false,88131016,子ども医療費受給者証,A-001,2026-04-01,20270331,H1,0\n";
//! let mut rows = Vec::new();
//! let summary = parse_csv(csv.as_bytes(), &ParseOptions::default(), |r| rows.push(r)).unwrap();
//! assert_eq!(summary.accepted, 1);
//! let row = rows.pop().unwrap().unwrap();
//! assert_eq!(row.certificate.municipality_code, 131016);
//! assert_eq!(format!("{:?}", row.pmh_source), "MyNumber(****)");
//! ```

#![warn(missing_docs)]

pub mod config;
pub mod csv_reader;
mod csv_scan;
mod direct;
pub mod error;
mod field;
pub mod json_reader;
mod kana;
pub mod load;
pub mod logging;
pub mod options;
mod raw;
pub mod row;
mod sort;
pub mod validate;
pub mod watch;

#[cfg(test)]
mod tests;

use std::io::Read;

pub use csv_reader::parse_csv;
pub use error::{ParseError, RowError, format_report};
pub use field::japanese_header;
pub use json_reader::parse_json;
pub use options::{Encoding, Format, ParseOptions, ParseSummary};
pub use row::ParsedRow;

/// Parses a file of either format (see [`parse_csv`] and [`parse_json`]).
pub fn parse<R: Read>(
    format: Format,
    input: R,
    opts: &ParseOptions,
    on_row: impl FnMut(Result<ParsedRow, Vec<RowError>>),
) -> Result<ParseSummary, ParseError> {
    match format {
        Format::Csv => parse_csv(input, opts, on_row),
        Format::Json => parse_json(input, opts, on_row),
    }
}

/// Parses a whole file into memory, all or nothing: every row if all are valid, otherwise
/// [`ParseError::Invalid`] with every error of every row (for uploads of bounded size; bulk
/// loads stream with [`parse`]).
pub fn parse_all<R: Read>(format: Format, input: R, opts: &ParseOptions) -> Result<Vec<ParsedRow>, ParseError> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    parse(format, input, opts, |r| match r {
        Ok(row) if errors.is_empty() => rows.push(row),
        Ok(_) => {}
        Err(e) => {
            rows.clear();
            errors.extend(e);
        }
    })?;
    if errors.is_empty() { Ok(rows) } else { Err(ParseError::Invalid(errors)) }
}
