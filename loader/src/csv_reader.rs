//! The CSV reader: a header row, then one record per row, streamed from any [`Read`].
//!
//! ## Why fields are decoded one by one
//! The `csv` crate splits the raw bytes into records and fields (in the chunks of a full
//! load or a diff, a record without quotes is split in place:
//! `csv_scan::next_plain_record`), and each field is then decoded on its own (UTF-8 or
//! Shift_JIS). That is sound for Shift_JIS because its
//! two-byte characters never contain the bytes CSV syntax uses (trail bytes are
//! 0x40–0x7E and 0x80–0xFC; `,` `"` CR LF are below 0x40), and it buys two things a
//! decoding `Read` wrapper cannot give: a byte that does not decode is reported with its
//! row and field, and nothing but the current record is ever in memory — a multi-GB
//! file streams through a buffer of a few kilobytes.
//!
//! ## List columns
//! - `additionalConditions`: `item-code` pairs joined with `;` (split at the first `-`).
//! - `designatedMedicalInstitutions`: institution codes joined with `;`, each optionally
//!   followed by `:name` (split at the first `:`).
//! - `certificationDetail`: `name=value` pairs joined with `;` (split at the first `=`).
//! - `copayment.*`: one column per rule field; several rules are joined with `;` in every
//!   column, position by position (`外来;入院` / `定額;定率` / `;10` …). Every non-empty
//!   copayment column of a row must hold the same number of items.
//!
//! Empty items (`a-1;;b-2`, a trailing `;`) are ignored in the first three; in the
//! copayment columns an empty item means "no value for this rule".

use std::io::{self, Read};

use crate::csv_scan::{Fields, Plain, csv_reader, next_plain_record};
use crate::error::{FIELD_FILE, FIELD_RECORD, ParseError, RowError, RowErrors};
use crate::field::{ALL_FIELDS, COPAY_FIELDS, FIELD_COUNT, Field};
use crate::options::{Encoding, ParseOptions, ParseSummary};
use crate::raw::{RawCondition, RawCopay, RawFaceItem, RawInstitution, RawRecord, Text, clean_in, owned};
use crate::row::ParsedRow;
use crate::validate::validate;

/// The UTF-8 byte-order mark.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// A reader with its first bytes (up to three, read to look for a BOM) put back in front.
pub(crate) type AfterBom<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Reads the first bytes of `input`: whether it starts with a UTF-8 BOM, and a reader
/// that yields everything after the BOM (or everything, if there is none).
pub(crate) fn strip_bom<R: Read>(mut input: R) -> io::Result<(bool, AfterBom<R>)> {
    let mut head = [0u8; 3];
    let mut n = 0;
    while n < head.len() {
        match input.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let bom = n == 3 && head == BOM;
    let rest = if bom { Vec::new() } else { head[..n].to_vec() };
    Ok((bom, io::Cursor::new(rest).chain(input)))
}

/// Decodes fields in the file's encoding, deciding it on the first non-ASCII record when
/// asked to detect it.
#[derive(Clone, Copy)]
struct Decoder {
    encoding: Encoding,
}

impl Decoder {
    /// Settles [`Encoding::Auto`] on the first record that holds a non-ASCII byte.
    fn settle(&mut self, record: &csv::ByteRecord) {
        if self.encoding == Encoding::Auto && !record.as_slice().is_ascii() {
            let utf8 = record.iter().all(|f| std::str::from_utf8(f).is_ok());
            self.encoding = if utf8 { Encoding::Utf8 } else { Encoding::ShiftJis };
        }
    }

    /// The text of one field, or the lossy text and the error message.
    fn decode<'b>(&self, bytes: &'b [u8]) -> Result<std::borrow::Cow<'b, str>, (String, &'static str)> {
        match self.encoding {
            // Auto still undecided means the record is ASCII.
            Encoding::Utf8 | Encoding::Auto => {
                std::str::from_utf8(bytes).map(std::borrow::Cow::Borrowed).map_err(|_| {
                    let sjis = encoding_rs::SHIFT_JIS.decode_without_bom_handling_and_without_replacement(bytes);
                    let what = match sjis {
                        Some(_) => "is not valid UTF-8 (it reads as Shift_JIS: is the file's encoding declared right?)",
                        None => "is not valid UTF-8",
                    };
                    (String::from_utf8_lossy(bytes).into_owned(), what)
                })
            }
            Encoding::ShiftJis => {
                encoding_rs::SHIFT_JIS.decode_without_bom_handling_and_without_replacement(bytes).ok_or_else(|| {
                    let (lossy, _) = encoding_rs::SHIFT_JIS.decode_without_bom_handling(bytes);
                    (lossy.into_owned(), "is not valid Shift_JIS (CP932)")
                })
            }
        }
    }
}

/// How the columns of a file map onto fields.
#[derive(Clone)]
struct Columns {
    /// Field of each column, by position.
    fields: Vec<Field>,
}

/// Reads the header record into [`Columns`], or every problem with it.
fn read_header(header: &csv::ByteRecord, decoder: &Decoder, opts: &ParseOptions) -> Result<Columns, Vec<RowError>> {
    let file = opts.file_name.as_deref();
    let mut errors = Vec::new();
    let mut fields = Vec::with_capacity(header.len());
    let mut seen: [Option<usize>; FIELD_COUNT] = [None; FIELD_COUNT];
    for (i, cell) in header.iter().enumerate() {
        let col = i + 1;
        let name = match decoder.decode(cell) {
            Ok(s) => s.into_owned(),
            Err((lossy, what)) => {
                let msg = format!("header column {col} {what}");
                errors.push(RowError::named(file, 0, lossy.clone(), "encoding", msg, &lossy));
                continue;
            }
        };
        match Field::from_header(&name) {
            None => {
                let msg = if name.trim().is_empty() {
                    format!("header column {col} has no name")
                } else {
                    format!("header column {col} ({name:?}) is not a PMH field name")
                };
                errors.push(RowError::named(file, 0, name.clone(), "unknown column", msg, ""));
            }
            Some(f) => {
                if let Some(first) = seen[f.index()] {
                    let msg = format!("columns {first} and {col} both give {}", f.name());
                    errors.push(RowError::named(file, 0, name.clone(), "duplicate column", msg, ""));
                } else {
                    seen[f.index()] = Some(col);
                }
                fields.push(f);
            }
        }
    }
    for f in ALL_FIELDS {
        if f.required_column(opts.municipality.is_some()) && seen[f.index()].is_none() {
            let japanese = f.japanese_names().first().copied().unwrap_or("");
            let msg = format!("the header has no {} ({japanese}) column", f.name());
            errors.push(RowError::named(file, 0, f.name().to_owned(), "required column", msg, ""));
        }
    }
    if errors.is_empty() { Ok(Columns { fields }) } else { Err(errors) }
}

/// Splits a list cell at `;`, trimming items and dropping empty ones.
fn list_items(s: &str) -> impl Iterator<Item = &str> {
    s.split(';').map(str::trim).filter(|t| !t.is_empty())
}

/// Hands each `a{sep}b` item of a list field to `each`; an item without `sep` is reported
/// as a list-syntax error (`form` says what was expected).
fn list_pairs<'t>(
    f: Field,
    text: &'t str,
    sep: char,
    form: &str,
    errs: &mut RowErrors<'_>,
    mut each: impl FnMut(&'t str, &'t str),
) {
    for (i, item) in list_items(text).enumerate() {
        match item.split_once(sep) {
            Some((a, b)) => each(a, b),
            None => errs.push(f, "list syntax", format!("item {}: expected {form}", i + 1), item),
        }
    }
}

/// Fills `raw` from one data record. Values borrow from the record where its text is the
/// file's own (UTF-8); a field decoded from Shift_JIS is owned.
fn read_record<'r>(
    record: &impl Fields<'r>,
    columns: &Columns,
    decoder: &Decoder,
    raw: &mut RawRecord<'r>,
    errs: &mut RowErrors<'_>,
) {
    // Copayment columns are split first and zipped into rules at the end.
    let mut copay: CopayColumns<'r> = Default::default();
    let mut copay_failed = false;
    // UTF-8 is checked once for the whole record; a field is then a slice of it, which
    // `str::get` gives only when the field starts and ends on character boundaries (in a
    // `csv::ByteRecord`, whose fields lie back to back, a sequence split by a delimiter
    // makes the whole valid but not the field).
    let whole = match decoder.encoding {
        Encoding::Utf8 | Encoding::Auto => simdutf8::basic::from_utf8(record.bytes()).ok(),
        Encoding::ShiftJis => None,
    };
    // One scan of a UTF-8 record for control characters spares the validator one per
    // value; a record without any holds no `\r` either. Otherwise only a quoted value can
    // hold a line break: one search of the record (both encodings keep `\r` as the byte
    // 0x0D) spares one for each value.
    let all = record.bytes();
    raw.control_free = whole.is_some() && !crate::raw::has_control(all);
    let cr = !raw.control_free && all.contains(&b'\r');
    for (i, &f) in columns.fields.iter().enumerate().take(record.count()) {
        let range = record.range(i);
        if let Some(text) = whole.and_then(|w| w.get(range.clone())) {
            read_field(f, text, cr, raw, &mut copay, errs, |t| t);
            continue;
        }
        match decoder.decode(&all[range]) {
            Ok(std::borrow::Cow::Borrowed(text)) => read_field(f, text, cr, raw, &mut copay, errs, |t| t),
            Ok(std::borrow::Cow::Owned(text)) => read_field(f, &text, cr, raw, &mut copay, errs, owned),
            Err((lossy, what)) => {
                errs.push(f, "encoding", format!("the value {what}"), &lossy);
                raw.fail(f);
                copay_failed |= COPAY_FIELDS.contains(&f);
            }
        }
    }
    if copay_failed {
        // The rules cannot be put together without the column that did not decode.
        return;
    }
    let rules = copay.iter().flatten().map(|c| c.len()).max().unwrap_or(0);
    let mut consistent = true;
    for (k, col) in copay.iter().enumerate() {
        if let Some(items) = col
            && items.len() != rules
        {
            let msg = format!("has {} item(s) but another copayment column has {rules}", items.len());
            errs.push(COPAY_FIELDS[k], "same number of rules", msg, "");
            consistent = false;
        }
    }
    if consistent {
        for r in 0..rules {
            let mut rule = RawCopay::default();
            for (k, col) in copay.iter_mut().enumerate() {
                if let Some(items) = col {
                    rule.values[k] = items[r].take();
                }
            }
            raw.copayment.push(rule);
        }
    }
}

/// The copayment columns of one record, each split into its rules' values.
type CopayColumns<'r> = [Option<smallvec::SmallVec<[Text<'r>; 4]>>; 8];

/// Puts one field's text into `raw`; `keep` turns a value borrowed from `text` into one
/// that lives as long as the record (the identity when `text` is the record's own).
fn read_field<'t, 'r>(
    f: Field,
    text: &'t str,
    cr: bool,
    raw: &mut RawRecord<'r>,
    copay: &mut CopayColumns<'r>,
    errs: &mut RowErrors<'_>,
    keep: impl Fn(Text<'t>) -> Text<'r>,
) {
    let clean = |s: &'t str| clean_in(s, cr);
    match f {
        Field::AdditionalConditions => list_pairs(f, text, '-', "item-code", errs, |k, c| {
            raw.conditions.push(RawCondition { item: keep(clean(k)), code: keep(clean(c)) })
        }),
        Field::DesignatedMedicalInstitutions => {
            for item in list_items(text) {
                let (code, name) = match item.split_once(':') {
                    Some((c, n)) => (keep(clean(c)), keep(clean(n))),
                    None => (keep(clean(item)), None),
                };
                raw.institutions.push(RawInstitution { code, name });
            }
        }
        Field::CertificationDetail => list_pairs(f, text, '=', "name=value", errs, |n, v| {
            raw.detail.push(RawFaceItem { name: keep(clean(n)), value: keep(clean(v)) })
        }),
        _ => match COPAY_FIELDS.iter().position(|&c| c == f) {
            Some(k) => {
                if clean(text).is_some() {
                    copay[k] = Some(text.split(';').map(|v| keep(clean(v))).collect());
                }
            }
            None => raw.set(f, keep(clean(text))),
        },
    }
}

/// Parses a CSV file, calling `on_row` once per data row, in file order, with the row or
/// every error found in it.
///
/// The header names the columns: the PMH API names (dotted for nested fields, any ASCII
/// case) or their Japanese names (see `docs/file-formats.md`); columns may come in any
/// order and optional ones may be left out. Encoding per [`ParseOptions::encoding`]; CRLF or
/// LF line ends; quoted fields may hold commas, quotes (`""`) and line breaks; blank lines
/// are skipped. Memory stays at one record whatever the file size.
///
/// Returns `Err(ParseError::Invalid)` when the file cannot be read as records at all (an
/// empty file, an unknown, duplicate or missing column, a BOM on a file declared
/// Shift_JIS), `Err(ParseError::Io)` when reading fails. Bad rows do not stop the parse;
/// they are counted in the summary.
pub fn parse_csv<R: Read>(
    input: R,
    opts: &ParseOptions,
    mut on_row: impl FnMut(Result<ParsedRow, Vec<RowError>>),
) -> Result<ParseSummary, ParseError> {
    let mut summary = ParseSummary::default();
    let (_, encoding) = read_records(input, opts, |columns, decoder, row, record| {
        let result = RecordValidator { columns, decoder, opts }.validate(row, &*record);
        summary.rows += 1;
        match &result {
            Ok(_) => summary.accepted += 1,
            Err(e) => {
                summary.rejected += 1;
                summary.errors += e.len();
            }
        }
        on_row(result);
    })?;
    summary.encoding = encoding;
    Ok(summary)
}

/// The encoding a file is read in: UTF-8 when it starts with a BOM (an error if it was
/// declared Shift_JIS), else as declared (or still to detect).
fn file_encoding(bom: bool, opts: &ParseOptions) -> Result<Encoding, ParseError> {
    match (bom, opts.encoding) {
        (true, Encoding::ShiftJis) => {
            let msg = "the file starts with a UTF-8 byte-order mark but was declared Shift_JIS";
            let file = opts.file_name.as_deref();
            Err(ParseError::Invalid(vec![RowError::named(file, 0, FIELD_FILE.into(), "encoding", msg, "")]))
        }
        (true, _) => Ok(Encoding::Utf8),
        (false, e) => Ok(e),
    }
}

/// The message for a file without even a header row.
fn empty_file(opts: &ParseOptions) -> ParseError {
    let msg = "the file is empty: a header row is required";
    ParseError::Invalid(vec![RowError::named(opts.file_name.as_deref(), 0, FIELD_FILE.into(), "header", msg, "")])
}

/// The record loop of [`parse_csv`]: BOM, encoding, header, then
/// every data record (1-based row, the encoding settled so far) to `on_record`, which may
/// take the record out of the reused buffer. Returns the number of records and the settled
/// encoding.
fn read_records<R: Read>(
    input: R,
    opts: &ParseOptions,
    mut on_record: impl FnMut(&Columns, Decoder, usize, &mut csv::ByteRecord),
) -> Result<(usize, Encoding), ParseError> {
    let (bom, input) = strip_bom(input)?;
    let mut decoder = Decoder { encoding: file_encoding(bom, opts)? };
    let mut reader = csv_reader(input);
    let mut record = csv::ByteRecord::new();
    if !read(&mut reader, &mut record)? {
        return Err(empty_file(opts));
    }
    decoder.settle(&record);
    let columns = read_header(&record, &decoder, opts).map_err(ParseError::Invalid)?;
    let mut rows = 0usize;
    while read(&mut reader, &mut record)? {
        rows += 1;
        decoder.settle(&record);
        on_record(&columns, decoder, rows, &mut record);
    }
    // Auto still undecided means the file is ASCII, which is UTF-8.
    let settled = if decoder.encoding == Encoding::Auto { Encoding::Utf8 } else { decoder.encoding };
    Ok((rows, settled))
}

/// Turns one raw CSV record into a row: decoding, column mapping, validation. Holds only
/// shared references and copies, so many threads can validate records of one file.
#[derive(Clone, Copy)]
struct RecordValidator<'a> {
    columns: &'a Columns,
    decoder: Decoder,
    opts: &'a ParseOptions,
}

impl RecordValidator<'_> {
    fn validate<'r>(&self, row: usize, record: impl Fields<'r>) -> Result<ParsedRow, Vec<RowError>> {
        let mut errs = RowErrors::new(self.opts.file_name.as_deref(), row);
        if record.count() != self.columns.fields.len() {
            let msg = format!("the row has {} field(s), the header has {}", record.count(), self.columns.fields.len());
            errs.push_named(FIELD_RECORD, "column count", msg, "");
            return Err(errs.into_sorted());
        }
        let mut raw = RawRecord::default();
        read_record(&record, self.columns, &self.decoder, &mut raw, &mut errs);
        validate(raw, errs, self.opts)
    }
}

/// A chunk of whole records of one CSV file, with what is needed to split and validate
/// them on any thread ([`CsvBatch::validate`]). Produced by [`split_csv_chunks`].
pub struct CsvBatch {
    columns: std::sync::Arc<Columns>,
    decoder: Decoder,
    opts: std::sync::Arc<ParseOptions>,
    /// Whole records as the file's bytes: `count` records, the first of them data row
    /// `first_row`.
    chunk: Vec<u8>,
    first_row: usize,
    count: usize,
}

impl CsvBatch {
    /// Validates every record of the batch, in order, handing each result to `f`.
    pub fn validate(&self, mut f: impl FnMut(usize, Result<ParsedRow, Vec<RowError>>)) {
        let v = RecordValidator { columns: &self.columns, decoder: self.decoder, opts: &self.opts };
        if self.count == 0 {
            return;
        }
        let mut n = 0;
        // Records without quotes are read in place; from the first with a quote on, the
        // csv reader reads the rest of the chunk (csv_scan::next_plain_record).
        let mut pos = 0;
        let mut ends = Vec::with_capacity(FIELD_COUNT + 1);
        let mut quoted = false;
        while n < self.count {
            let line = match next_plain_record(&self.chunk, &mut pos, &mut ends) {
                Plain::Record(line) => line,
                Plain::End => break,
                Plain::Quoted => {
                    quoted = true;
                    break;
                }
            };
            let row = self.first_row + n;
            f(row, v.validate(row, line));
            n += 1;
        }
        // Whether a record is left over once `count` were read.
        let more = if quoted {
            let mut record = csv::ByteRecord::new();
            let mut reader = csv_reader(&self.chunk[pos..]);
            // Reading from memory cannot fail; a failure would show as a count mismatch.
            while n < self.count && reader.read_byte_record(&mut record).unwrap_or(false) {
                let row = self.first_row + n;
                f(row, v.validate(row, &record));
                n += 1;
            }
            n == self.count && reader.read_byte_record(&mut record).unwrap_or(false)
        } else {
            // A line with a quote is a record too.
            n == self.count && !matches!(next_plain_record(&self.chunk, &mut pos, &mut ends), Plain::End)
        };
        if n != self.count || more {
            // The splitter and the csv reader disagree on where records end: a bug, never
            // a reason to load rows out of place.
            let msg = format!(
                "internal error: records were split inconsistently after row {} (please report this file)",
                self.first_row + n
            );
            let file = self.opts.file_name.as_deref();
            f(
                self.first_row + n,
                Err(vec![RowError::named(file, self.first_row + n, FIELD_FILE.into(), "record boundaries", msg, "")]),
            );
        }
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits a CSV file into chunks of whole records, about `chunk_bytes` each, for parallel
/// parsing and validation: [`CsvBatch::validate`] gives exactly what [`parse_csv`] would,
/// rows numbered as it numbers them, but this
/// thread only finds where records end (`csv_scan`, which follows the csv reader's
/// quoting rules and is tested against it) and copies the bytes; the threads that validate
/// a chunk also split its fields, so records are not handed from core to core.
///
/// With the encoding to detect, the first chunk holding a non-ASCII byte settles it, on
/// its first non-ASCII record, as [`parse_csv`] does; records before are ASCII, which
/// reads the same in either encoding.
pub fn split_csv_chunks<R: Read>(
    input: R,
    opts: &ParseOptions,
    chunk_bytes: usize,
    mut recycled: impl FnMut() -> Option<CsvBatch>,
    mut on_batch: impl FnMut(CsvBatch),
) -> Result<(usize, Encoding), ParseError> {
    let chunk_bytes = chunk_bytes.max(1);
    let (bom, mut input) = strip_bom(input)?;
    let mut decoder = Decoder { encoding: file_encoding(bom, opts)? };
    let mut buf: Vec<u8> = Vec::with_capacity(chunk_bytes * 2);

    // The header: the first record, read by the csv reader itself, which says where it
    // ended (a record that ends exactly at the end of the buffer may go on: read more).
    let mut eof = false;
    let mut header = csv::ByteRecord::new();
    let header_end = loop {
        if !eof {
            let target = buf.len() + chunk_bytes;
            eof = fill(&mut input, &mut buf, target)?;
        }
        let mut reader = csv_reader(&buf[..]);
        if !read(&mut reader, &mut header)? {
            if eof {
                return Err(empty_file(opts));
            }
            continue;
        }
        let end = usize::try_from(reader.position().byte()).unwrap_or(usize::MAX).min(buf.len());
        if end < buf.len() || eof {
            break end;
        }
    };
    decoder.settle(&header);
    let columns = std::sync::Arc::new(read_header(&header, &decoder, opts).map_err(ParseError::Invalid)?);
    let shared_opts = std::sync::Arc::new(opts.clone());
    buf.drain(..header_end);
    let mut scanner = crate::csv_scan::Scanner::new();
    scanner.scan(&buf);

    let mut rows = 0usize;
    let mut emit = |bytes: &[u8], count: u64, decoder: &mut Decoder| {
        if count == 0 {
            return;
        }
        if decoder.encoding == Encoding::Auto && !bytes.is_ascii() {
            // Settle on the first non-ASCII record, as the record loop does.
            let mut r = csv_reader(bytes);
            let mut record = csv::ByteRecord::new();
            while decoder.encoding == Encoding::Auto && r.read_byte_record(&mut record).unwrap_or(false) {
                decoder.settle(&record);
            }
        }
        let mut batch = match recycled() {
            Some(mut b) => {
                b.chunk.clear();
                b
            }
            None => CsvBatch {
                columns: columns.clone(),
                decoder: *decoder,
                opts: shared_opts.clone(),
                chunk: Vec::with_capacity(chunk_bytes * 2),
                first_row: 0,
                count: 0,
            },
        };
        batch.columns = columns.clone();
        batch.opts = shared_opts.clone();
        batch.decoder = *decoder;
        batch.chunk.extend_from_slice(bytes);
        batch.first_row = rows + 1;
        batch.count = count as usize;
        rows += count as usize;
        on_batch(batch);
    };
    loop {
        if !eof {
            eof = fill(&mut input, &mut buf, chunk_bytes)?;
            scanner.scan(&buf);
        }
        if eof {
            let count = scanner.records_at_end();
            emit(&buf, count, &mut decoder);
            break;
        }
        let (cut, count) = scanner.cut();
        if cut > 0 {
            emit(&buf[..cut], count, &mut decoder);
            buf.drain(..cut);
            scanner.consume(cut);
        } else {
            // One record longer than a chunk: read on until it ends.
            let more = buf.len() + chunk_bytes;
            eof = fill(&mut input, &mut buf, more)?;
            scanner.scan(&buf);
        }
    }
    // Auto still undecided means the file is ASCII, which is UTF-8.
    let settled = if decoder.encoding == Encoding::Auto { Encoding::Utf8 } else { decoder.encoding };
    Ok((rows, settled))
}

/// Reads into `buf` until it holds `target` bytes or the input ends; `Ok(true)` at the end.
fn fill<R: Read>(input: &mut R, buf: &mut Vec<u8>, target: usize) -> Result<bool, ParseError> {
    let mut chunk = [0u8; 64 << 10];
    while buf.len() < target {
        match input.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ParseError::Io(e)),
        }
    }
    Ok(false)
}

/// Reads the next record; I/O failures are the only errors a byte-record reader reports.
fn read<R: Read>(reader: &mut csv::Reader<R>, record: &mut csv::ByteRecord) -> Result<bool, ParseError> {
    reader.read_byte_record(record).map_err(|e| match e.into_kind() {
        csv::ErrorKind::Io(io) => ParseError::Io(io),
        other => ParseError::Io(io::Error::other(format!("csv: {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one batch `split_csv_chunks` makes of `input`.
    fn one_batch(input: &str) -> CsvBatch {
        let mut batches = Vec::new();
        split_csv_chunks(input.as_bytes(), &ParseOptions::default(), 1 << 16, || None, |b| batches.push(b))
            .expect("a readable file");
        assert_eq!(batches.len(), 1);
        batches.pop().unwrap()
    }

    /// Rows `validate` reports, and for each whether it is the splitting error.
    fn outcome(batch: &CsvBatch) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        batch.validate(|row, r| {
            let split_error = matches!(&r, Err(e) if e.iter().any(|e| e.rule == "record boundaries"));
            out.push((row, split_error));
        });
        out
    }

    /// A batch whose record count disagrees with its bytes (a splitter bug) ends with an
    /// error row, never with rows quietly dropped or added: with the records split in place
    /// and with the csv reader reading after a quote, for one record too many or too few.
    #[test]
    fn a_record_count_that_disagrees_with_the_bytes_is_reported() {
        // The required columns; the rows' values do not matter here (their own errors are
        // not the splitting error).
        let header = "municipalityCode,orgSpecificCertificateTypeId,myNumber,isNotDisclosed,\
            medicalSubsidyInsurerNumber,certificationName,medicalSubsidyRecipientNumber,validFrom,validTo,\
            historyKey,isDeleted";
        for rows in ["a,b\nc,d\ne,f\n", "a,b\n\"c\",d\ne,f\n"] {
            let input = format!("{header}\n{rows}");
            let input = input.as_str();
            let mut batch = one_batch(input);
            assert_eq!(batch.len(), 3);
            assert_eq!(outcome(&batch).iter().filter(|(_, e)| *e).count(), 0, "{input:?} as split");
            batch.count = 2;
            assert_eq!(outcome(&batch).last(), Some(&(3, true)), "{input:?} with a record left over");
            batch.count = 4;
            assert_eq!(outcome(&batch).last(), Some(&(4, true)), "{input:?} with a record missing");
        }
    }
}
