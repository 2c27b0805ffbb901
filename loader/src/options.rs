//! What a caller tells the readers ([`ParseOptions`]) and what they tell back
//! ([`ParseSummary`]).

use std::fmt;
use std::str::FromStr;

use pmh_engine::MunicipalityCode;

/// Character encoding of a CSV file (`--encoding auto|utf-8|shift_jis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// Detect: a UTF-8 byte-order mark means UTF-8; otherwise the first record (the header
    /// included) that holds a non-ASCII byte decides — UTF-8 if that whole record is valid
    /// UTF-8, Shift_JIS (CP932) if not. A file that is all ASCII is reported as UTF-8.
    #[default]
    Auto,
    /// UTF-8, with or without a byte-order mark.
    Utf8,
    /// Shift_JIS as Windows writes it (CP932: NEC and IBM extensions included), decoded by
    /// the WHATWG `Shift_JIS` decoder of `encoding_rs`.
    ShiftJis,
}

impl Encoding {
    /// The canonical name (`auto`, `utf-8`, `shift_jis`).
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Auto => "auto",
            Encoding::Utf8 => "utf-8",
            Encoding::ShiftJis => "shift_jis",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An encoding name that is not one of the accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown encoding {0:?}: expected auto, utf-8 or shift_jis")]
pub struct UnknownEncoding(pub String);

impl FromStr for Encoding {
    type Err = UnknownEncoding;

    /// Accepts `auto`, `utf-8`/`utf8`, `shift_jis`/`shift-jis`/`sjis`/`cp932`/`windows-31j`
    /// (case-insensitive).
    fn from_str(s: &str) -> Result<Encoding, UnknownEncoding> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Encoding::Auto),
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "shift_jis" | "shift-jis" | "sjis" | "cp932" | "windows-31j" => Ok(Encoding::ShiftJis),
            _ => Err(UnknownEncoding(s.to_owned())),
        }
    }
}

/// File format (`--format csv|json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CSV with a header row (see [`crate::parse_csv`]).
    Csv,
    /// A JSON array of record objects (see [`crate::parse_json`]).
    Json,
}

impl Format {
    /// The format a file name suggests (`.json` → JSON, anything else → CSV).
    pub fn from_file_name(name: &str) -> Format {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".json") { Format::Json } else { Format::Csv }
    }
}

/// An unknown format name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?}: expected csv or json")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// How to read a file.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// CSV encoding (JSON is always UTF-8; asking for Shift_JIS JSON is an error).
    pub encoding: Encoding,
    /// The municipality the caller speaks for (an API upload's token). When set, the
    /// `municipalityCode` column is optional: an empty value takes this code, and a row
    /// naming another municipality is an error (`rule "caller's municipality"`).
    pub municipality: Option<MunicipalityCode>,
    /// The file name put into every [`crate::RowError`] (for reports over several files).
    pub file_name: Option<String>,
}

/// What a reader saw, when it got to the end of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseSummary {
    /// Data rows read (the header not counted).
    pub rows: usize,
    /// Rows that passed validation.
    pub accepted: usize,
    /// Rows that had at least one error.
    pub rejected: usize,
    /// Errors over all rows.
    pub errors: usize,
    /// The encoding the file was read in ([`Encoding::Utf8`] for JSON and for all-ASCII
    /// CSV in auto mode).
    pub encoding: Encoding,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!("UTF-8".parse(), Ok(Encoding::Utf8));
        assert_eq!("cp932".parse(), Ok(Encoding::ShiftJis));
        assert_eq!("auto".parse(), Ok(Encoding::Auto));
        assert!("latin1".parse::<Encoding>().is_err());
        for e in [Encoding::Auto, Encoding::Utf8, Encoding::ShiftJis] {
            assert_eq!(e.as_str().parse(), Ok(e));
        }
        assert_eq!("JSON".parse(), Ok(Format::Json));
        assert_eq!(Format::from_file_name("a/B.JSON"), Format::Json);
        assert_eq!(Format::from_file_name("b.csv"), Format::Csv);
    }
}
