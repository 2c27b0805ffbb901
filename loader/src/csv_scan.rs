//! Finding CSV record boundaries without parsing fields, so that a file can be cut into
//! chunks that separate threads parse on their own; and reading a record without quotes
//! in place ([`next_plain_record`]), so that those threads need the `csv` reader only
//! from a chunk's first quoted record.
//!
//! Both follow exactly the record rules of `csv_core` as [`csv_reader`] configures the
//! `csv` crate's reader (delimiter `,`, quote `"` recognised only at the start of a field,
//! doubled quotes inside a quoted field, no escape or comment character, terminators
//! `\r`, `\n` and `\r\n`, empty lines skipped): a quote inside an unquoted field is a
//! literal character, and a line break inside a quoted field is data. It only stops at
//! quotes and line ends (`memchr`), so it runs at several GB/s on ordinary files. Tests
//! compare both with that reader on random inputs made of the bytes that matter.

use std::io::Read;

/// The `csv` reader every CSV path of the loader uses, and whose rules this module
/// follows: no header handling (the loader reads the header row itself), any number of
/// fields per record (a wrong count is reported per row), everything else the crate's
/// defaults. Changing it means changing the scanner and [`next_plain_record`] too.
pub(crate) fn csv_reader<R: Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input)
}

/// Where the scanner is, between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside quotes (at a record or field start, or inside an unquoted field).
    Out,
    /// Inside a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field: an escaped quote if another follows.
    QuoteInQuoted,
}

/// A resumable record-boundary scanner over a buffer that grows at its end and is cut at
/// its front only at boundaries the scanner reported.
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    state: State,
    /// Whether the current record has begun (a non-terminator byte since the last end).
    in_record: bool,
    /// Offset in the buffer up to which it has been scanned.
    pos: usize,
    /// Records ended so far (since the scanner was made).
    records: u64,
    /// The last safe cut: just after a record's terminator, outside any record.
    cut: usize,
    /// Records ended before `cut`.
    records_at_cut: u64,
}

impl Scanner {
    /// A scanner at the start of a record.
    pub(crate) fn new() -> Scanner {
        Scanner { state: State::Out, in_record: false, pos: 0, records: 0, cut: 0, records_at_cut: 0 }
    }

    /// Scans `buf` from where the last call stopped to its end. `buf` must start at a
    /// record boundary (the start of the data, or a cut this scanner reported, after
    /// [`Scanner::consume`]).
    pub(crate) fn scan(&mut self, buf: &[u8]) {
        let mut pos = self.pos;
        let len = buf.len();
        while pos < len {
            match self.state {
                State::Out => match memchr::memchr3(b'"', b'\r', b'\n', &buf[pos..]) {
                    None => {
                        self.in_record = true;
                        pos = len;
                    }
                    Some(k) => {
                        let i = pos + k;
                        if k > 0 {
                            self.in_record = true;
                        }
                        if buf[i] == b'"' {
                            // A quote opens a quoted field only where a field starts: at
                            // the start of the data or after a delimiter or terminator
                            // read outside quotes (everything before `i` since the last
                            // closing quote was).
                            let field_start = i == 0 || matches!(buf[i - 1], b',' | b'\r' | b'\n');
                            if field_start {
                                self.state = State::Quoted;
                            }
                            self.in_record = true;
                        } else {
                            if self.in_record {
                                self.records += 1;
                                self.in_record = false;
                            }
                            self.cut = i + 1;
                            self.records_at_cut = self.records;
                        }
                        pos = i + 1;
                    }
                },
                State::Quoted => match memchr::memchr(b'"', &buf[pos..]) {
                    None => pos = len,
                    Some(k) => {
                        self.state = State::QuoteInQuoted;
                        pos += k + 1;
                    }
                },
                State::QuoteInQuoted => {
                    if buf[pos] == b'"' {
                        self.state = State::Quoted;
                        pos += 1;
                    } else {
                        // The field's closing quote; this byte is read outside quotes.
                        self.state = State::Out;
                    }
                }
            }
        }
        self.pos = pos;
    }

    /// The last safe cut in the buffer and the number of records before it (since the
    /// last [`Scanner::consume`]).
    pub(crate) fn cut(&self) -> (usize, u64) {
        (self.cut, self.records_at_cut)
    }

    /// The buffer's first `n` bytes (up to a reported cut) were taken away: offsets move.
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.cut);
        self.pos -= n;
        self.cut -= n;
        self.records -= self.records_at_cut;
        self.records_at_cut = 0;
    }

    /// Records in the whole scanned buffer once the input has ended: a last record
    /// without a terminator counts.
    pub(crate) fn records_at_end(&self) -> u64 {
        self.records + u64::from(self.in_record)
    }
}

/// One record's fields as [`crate::csv_reader`] reads them: ranges into one byte slice.
/// A `csv::ByteRecord` is one (its fields stored back to back), and so is a [`Line`] (a
/// record without quotes, its fields read in place in the file's bytes).
pub(crate) trait Fields<'r> {
    /// The bytes the fields' ranges index.
    fn bytes(&self) -> &'r [u8];
    /// Number of fields.
    fn count(&self) -> usize;
    /// Where field `i` (< [`Fields::count`]) is in [`Fields::bytes`].
    fn range(&self, i: usize) -> std::ops::Range<usize>;
}

impl<'r> Fields<'r> for &'r csv::ByteRecord {
    fn bytes(&self) -> &'r [u8] {
        self.as_slice()
    }
    fn count(&self) -> usize {
        self.len()
    }
    fn range(&self, i: usize) -> std::ops::Range<usize> {
        csv::ByteRecord::range(self, i).unwrap_or(0..0)
    }
}

/// A record without quotes, in place: its line (without the terminator) and the offset of
/// the delimiter after each field (the line's length after the last).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line<'r, 'e> {
    line: &'r [u8],
    ends: &'e [usize],
}

impl<'r> Fields<'r> for Line<'r, '_> {
    fn bytes(&self) -> &'r [u8] {
        self.line
    }
    fn count(&self) -> usize {
        self.ends.len()
    }
    fn range(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] + 1 };
        start..self.ends[i]
    }
}

/// What [`next_plain_record`] found at its position.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Plain<'r, 'e> {
    /// A record without quotes; the position is past it.
    Record(Line<'r, 'e>),
    /// Nothing but line ends is left.
    End,
    /// The next record has a quote somewhere on its first line: the caller reads the rest
    /// with the `csv` crate's reader. The position is at that record's first byte, a
    /// record boundary.
    Quoted,
}

/// Reads the record at `*pos` of `bytes` (a record boundary) when its line holds no
/// quote, as the `csv` crate's default reader would: its fields split at every `,`, the
/// line ending at the first `\r` or `\n`, empty lines skipped. Without a quote those are
/// all the rules there are, and a line is read in place (its end and quotes found with
/// `memchr`, its commas eight bytes at a time) where `csv_core`'s state machine takes a
/// step per byte and copies each field (a sixth of a chunk's parsing). A line with a quote anywhere is left to the `csv` reader ([`Plain::Quoted`]),
/// whose quoting rules then apply from that record to the end. `ends` is scratch space
/// for the field boundaries, reused from record to record.
pub(crate) fn next_plain_record<'r, 'e>(bytes: &'r [u8], pos: &mut usize, ends: &'e mut Vec<usize>) -> Plain<'r, 'e> {
    loop {
        let rest = &bytes[*pos..];
        if rest.is_empty() {
            return Plain::End;
        }
        let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
        if end == 0 {
            // A terminator, or an empty line: no record.
            *pos += 1;
            continue;
        }
        let line = &rest[..end];
        if memchr::memchr(b'"', line).is_some() {
            return Plain::Quoted;
        }
        ends.clear();
        push_commas(line, ends);
        ends.push(end);
        *pos += end;
        return Plain::Record(Line { line, ends });
    }
}

/// Appends the offset of every `,` in `line` to `ends`, eight bytes at a time.
///
/// A record has a field every eight bytes or so: `memchr_iter` set up a vector search for
/// each of them and found it in the first block, which cost more than the search (7 % of a
/// full load's parse). A word-wide test finds all the commas of eight bytes at once.
fn push_commas(line: &[u8], ends: &mut Vec<usize>) {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const COMMAS: u64 = u64::from_le_bytes([b','; 8]);
    let mut words = line.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default()) ^ COMMAS;
        // The high bit of each byte of `x` that is zero, and of no other byte: adding
        // 0x7f to the low seven bits sets it unless they are all zero, and cannot carry
        // into the next byte.
        let mut found = !(((x & LOW7) + LOW7) | x | LOW7);
        while found != 0 {
            ends.push(base + (found.trailing_zeros() / 8) as usize);
            found &= found - 1;
        }
        base += 8;
    }
    let rest = words.remainder();
    ends.extend(rest.iter().enumerate().filter(|(_, b)| **b == b',').map(|(i, _)| base + i));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Records as the `csv` crate's default reader reads them.
    fn csv_records(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut r = csv_reader(bytes);
        let mut out = Vec::new();
        let mut rec = csv::ByteRecord::new();
        while r.read_byte_record(&mut rec).expect("in-memory read") {
            out.push(rec.iter().map(<[u8]>::to_vec).collect());
        }
        out
    }

    /// Scans `bytes` fed in pieces of `step`, cutting at every reported boundary, and
    /// checks each piece against the csv crate: the pieces' records, in order, must be the
    /// whole input's records, and each piece must hold as many as the scanner said.
    fn check(bytes: &[u8], step: usize) {
        let whole = csv_records(bytes);
        let mut s = Scanner::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut pieces: Vec<Vec<Vec<Vec<u8>>>> = Vec::new();
        for part in bytes.chunks(step.max(1)) {
            buf.extend_from_slice(part);
            s.scan(&buf);
            let (cut, n) = s.cut();
            if cut > 0 {
                let piece = csv_records(&buf[..cut]);
                assert_eq!(piece.len() as u64, n, "records before cut {cut} of {:?}", String::from_utf8_lossy(&buf));
                pieces.push(piece);
                buf.drain(..cut);
                s.consume(cut);
            }
        }
        let last = csv_records(&buf);
        assert_eq!(last.len() as u64, s.records_at_end(), "records after the last cut in {:?}", buf);
        pieces.push(last);
        let joined: Vec<_> = pieces.into_iter().flatten().collect();
        assert_eq!(joined, whole, "{:?} in steps of {step}", String::from_utf8_lossy(bytes));
    }

    #[test]
    fn agrees_with_csv_on_hand_made_cases() {
        for case in [
            "",
            "\n\n\r\n",
            "a,b\nc,d\n",
            "a,b\r\nc,d",
            "\"a\nb\",c\n\"x\"\"\ny\"\n",
            "a\"b,\"c\nd\",e\n",
            "\"a\"b\"c\nd\n",
            "\"\"\n\"\"\"\"\n,\",\"\r\r\n",
            "x,\"\r\n\",\"\"\"\r\ny\r",
            "\"unterminated\nquote",
        ] {
            for step in [1, 2, 3, 7, 1000] {
                check(case.as_bytes(), step);
            }
        }
    }

    /// Records as [`next_plain_record`] reads them, the `csv` reader taking over from the
    /// first quoted one exactly as `CsvBatch::validate` does.
    fn plain_then_csv_records(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut ends = Vec::new();
        let mut pos = 0;
        loop {
            match next_plain_record(bytes, &mut pos, &mut ends) {
                Plain::Record(line) => out.push(fields(line)),
                Plain::End => return out,
                Plain::Quoted => {
                    out.extend(csv_records(&bytes[pos..]));
                    return out;
                }
            }
        }
    }

    fn fields<'r>(f: impl Fields<'r>) -> Vec<Vec<u8>> {
        (0..f.count()).map(|i| f.bytes()[f.range(i)].to_vec()).collect()
    }

    #[test]
    fn plain_records_agree_with_csv_on_hand_made_cases() {
        for case in [
            "",
            "\n\n\r\n",
            "a,b\nc,d\n",
            "a,b\r\nc,d",
            ",\n,,\r\r\n a , b \n",
            "a,b\nc,\"d\ne\",f\ng\n",
            "a,b\nc,d\"e\nf\n",
            "\"unterminated\nquote",
        ] {
            assert_eq!(plain_then_csv_records(case.as_bytes()), csv_records(case.as_bytes()), "{case:?}");
        }
        // The quote-free lines before a quoted record are read by the fast path, and the
        // quoted one is left at its first byte.
        let mut ends = Vec::new();
        let mut pos = 0;
        let bytes = b"a,,bc\r\n\r\nx,\"y\n\"\n";
        match next_plain_record(bytes, &mut pos, &mut ends) {
            Plain::Record(line) => assert_eq!(fields(line), [&b"a"[..], b"", b"bc"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(next_plain_record(bytes, &mut pos, &mut ends), Plain::Quoted));
        assert_eq!(pos, 9);
        // A csv::ByteRecord gives the same view of its fields.
        let mut rec = csv::ByteRecord::new();
        rec.push_field(b"a");
        rec.push_field(b"");
        rec.push_field(b"bc");
        assert_eq!(fields(&rec), [&b"a"[..], b"", b"bc"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn agrees_with_csv_on_random_input(
            bytes in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b','), Just(b'"'), Just(b'\r'), Just(b'\n'), Just(0xE3u8)], 0..120),
            step in 1usize..40,
        ) {
            check(&bytes, step);
        }

        #[test]
        fn commas_are_found_among_any_bytes(
            // Bytes that differ from a comma in one bit (the high one included) are where
            // a word-wide test could go wrong.
            line in proptest::collection::vec(prop_oneof![
                Just(b','), Just(b',' | 0x80), Just(b',' ^ 1), Just(0u8), Just(0xffu8), any::<u8>(),
            ], 0..80),
        ) {
            let mut ends = vec![7];
            push_commas(&line, &mut ends);
            let expected: Vec<usize> =
                std::iter::once(7).chain(line.iter().enumerate().filter(|(_, b)| **b == b',').map(|(i, _)| i)).collect();
            prop_assert_eq!(ends, expected);
        }

        #[test]
        fn plain_records_agree_with_csv_on_random_input(
            // Quotes rarer than the other bytes, so that most inputs have quote-free
            // records before the first quoted one.
            bytes in proptest::collection::vec(prop_oneof![
                8 => Just(b'a'), 3 => Just(b','), 1 => Just(b'"'), 2 => Just(b'\r'), 2 => Just(b'\n'), 1 => Just(0xE3u8),
            ], 0..120),
        ) {
            prop_assert_eq!(plain_then_csv_records(&bytes), csv_records(&bytes));
        }
    }
}
