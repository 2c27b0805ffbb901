//! The format-neutral form of one input record, between a reader and
//! [`crate::validate`]: every value still text, lists already split into items.
//!
//! The readers deal with syntax (CSV columns and `;`-lists, JSON objects and arrays, the
//! encodings); the validator deals with the rules. Because both readers produce a
//! [`RawRecord`], the same bad value gets the same error from a CSV and a JSON file.

use crate::field::{FIELD_COUNT, Field};

/// One record as text. Deliberately not `Debug`: it holds the My Number in clear.
pub(crate) struct RawRecord {
    /// Scalar values by [`Field::index`]; `None` when absent or empty.
    text: [Option<String>; FIELD_COUNT],
    /// Fields the reader already reported an error for (bit = [`Field::index`]): the
    /// validator neither checks them again nor calls them missing.
    failed: u64,
    /// 追加条件.
    pub(crate) conditions: Vec<RawCondition>,
    /// 指定医療機関情報.
    pub(crate) institutions: Vec<RawInstitution>,
    /// Copay rules.
    pub(crate) copayment: Vec<RawCopay>,
    /// 受給者証券面項目.
    pub(crate) detail: Vec<RawFaceItem>,
}

/// One `item-code` pair.
#[derive(Debug, Default, Clone)]
pub(crate) struct RawCondition {
    pub(crate) item: Option<String>,
    pub(crate) code: Option<String>,
}

/// One designated institution.
#[derive(Debug, Default, Clone)]
pub(crate) struct RawInstitution {
    pub(crate) code: Option<String>,
    pub(crate) name: Option<String>,
}

/// One copay rule; values in the order of [`crate::field::COPAY_FIELDS`].
#[derive(Debug, Default, Clone)]
pub(crate) struct RawCopay {
    pub(crate) values: [Option<String>; 8],
}

/// One face item.
#[derive(Debug, Default, Clone)]
pub(crate) struct RawFaceItem {
    pub(crate) name: Option<String>,
    pub(crate) value: Option<String>,
}

impl Default for RawRecord {
    fn default() -> RawRecord {
        RawRecord {
            text: std::array::from_fn(|_| None),
            failed: 0,
            conditions: Vec::new(),
            institutions: Vec::new(),
            copayment: Vec::new(),
            detail: Vec::new(),
        }
    }
}

impl RawRecord {
    /// Sets a scalar field from input text (see [`clean`]).
    pub(crate) fn set(&mut self, f: Field, value: &str) {
        self.text[f.index()] = clean(value);
    }

    /// Marks a field as already reported.
    pub(crate) fn fail(&mut self, f: Field) {
        self.failed |= 1 << f.index();
        self.text[f.index()] = None;
    }

    /// Whether the reader already reported an error for `f`.
    pub(crate) fn failed(&self, f: Field) -> bool {
        self.failed & (1 << f.index()) != 0
    }

    /// Takes a scalar value out.
    pub(crate) fn take(&mut self, f: Field) -> Option<String> {
        self.text[f.index()].take()
    }
}

/// Input text as a value: line ends normalised to `\n` (so a CRLF file and an LF file give
/// the same certificate), surrounding white space removed (U+3000 included); `None` when
/// nothing is left.
pub(crate) fn clean(s: &str) -> Option<String> {
    let t = s.trim();
    if t.is_empty() {
        None
    } else if t.contains('\r') {
        Some(t.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Some(t.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_trims_and_normalises() {
        assert_eq!(clean("  a\r\nb\rc \u{3000}"), Some("a\nb\nc".to_owned()));
        assert_eq!(clean(" \t "), None);
        let mut r = RawRecord::default();
        r.set(Field::Name, " x ");
        assert_eq!(r.take(Field::Name).as_deref(), Some("x"));
        r.set(Field::Name, "y");
        r.fail(Field::Name);
        assert!(r.failed(Field::Name) && r.take(Field::Name).is_none());
    }
}
