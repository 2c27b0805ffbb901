//! The format-neutral form of one input record, between a reader and
//! [`crate::validate`]: every value still text, lists already split into items.
//!
//! The readers deal with syntax (CSV columns and `;`-lists, JSON objects and arrays, the
//! encodings); the validator deals with the rules. Because both readers produce a
//! [`RawRecord`], the same bad value gets the same error from a CSV and a JSON file.

use std::borrow::Cow;

use crate::field::{FIELD_COUNT, Field};

/// A cleaned value (see [`clean`]): borrowed from the input where it can be, so that a
/// value the validator only parses (a date, a number, a flag) is never copied.
pub(crate) type Text<'a> = Option<Cow<'a, str>>;

/// A record's list of items: most rows have one or two, held inline.
pub(crate) type List<T> = smallvec::SmallVec<[T; 2]>;

/// One record as text. Deliberately not `Debug`: it holds the My Number in clear.
pub(crate) struct RawRecord<'a> {
    /// Scalar values by [`Field::index`]; `None` when absent or empty.
    text: [Text<'a>; FIELD_COUNT],
    /// Fields the reader already reported an error for (bit = [`Field::index`]): the
    /// validator neither checks them again nor calls them missing.
    failed: u64,
    /// 追加条件.
    pub(crate) conditions: List<RawCondition<'a>>,
    /// 指定医療機関情報.
    pub(crate) institutions: List<RawInstitution<'a>>,
    /// Copay rules.
    pub(crate) copayment: List<RawCopay<'a>>,
    /// 受給者証券面項目.
    pub(crate) detail: List<RawFaceItem<'a>>,
}

/// One `item-code` pair.
#[derive(Debug, Default, Clone)]
pub(crate) struct RawCondition<'a> {
    pub(crate) item: Text<'a>,
    pub(crate) code: Text<'a>,
}

/// One designated institution.
#[derive(Debug, Default, Clone)]
pub(crate) struct RawInstitution<'a> {
    pub(crate) code: Text<'a>,
    pub(crate) name: Text<'a>,
}

/// One copay rule; values in the order of [`crate::field::COPAY_FIELDS`].
#[derive(Debug, Default, Clone)]
pub(crate) struct RawCopay<'a> {
    pub(crate) values: [Text<'a>; 8],
}

/// One face item.
#[derive(Debug, Default, Clone)]
pub(crate) struct RawFaceItem<'a> {
    pub(crate) name: Text<'a>,
    pub(crate) value: Text<'a>,
}

impl Default for RawRecord<'_> {
    fn default() -> Self {
        RawRecord {
            text: std::array::from_fn(|_| None),
            failed: 0,
            conditions: List::new(),
            institutions: List::new(),
            copayment: List::new(),
            detail: List::new(),
        }
    }
}

impl<'a> RawRecord<'a> {
    /// Sets a scalar field from a cleaned value (see [`clean`]).
    pub(crate) fn set(&mut self, f: Field, value: Text<'a>) {
        self.text[f.index()] = value;
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
    pub(crate) fn take(&mut self, f: Field) -> Text<'a> {
        self.text[f.index()].take()
    }
}

/// Input text as a value: line ends normalised to `\n` (so a CRLF file and an LF file give
/// the same certificate), surrounding white space removed (U+3000 included); `None` when
/// nothing is left.
pub(crate) fn clean(s: &str) -> Text<'_> {
    clean_in(s, true)
}

/// [`clean`] of a value from text that holds no `\r` at all unless `may_hold_cr` (a CSV
/// record is searched once, instead of each of its values).
pub(crate) fn clean_in(s: &str, may_hold_cr: bool) -> Text<'_> {
    // Most values neither start nor end with white space: one character decoded at each
    // end says so, and only then does `trim` walk them. (`trim` and a `memchr` for `\r` on
    // every field were 10 % of parsing's instructions.)
    let ws = |c: Option<char>| c.is_some_and(char::is_whitespace);
    let t = if ws(s.chars().next()) || ws(s.chars().next_back()) { s.trim() } else { s };
    if t.is_empty() {
        None
    } else if may_hold_cr && t.contains('\r') {
        Some(Cow::Owned(t.replace("\r\n", "\n").replace('\r', "\n")))
    } else {
        Some(Cow::Borrowed(t))
    }
}

/// [`clean`] of a value the caller owns: the string itself when cleaning changes nothing
/// (most values), so it is not copied again.
pub(crate) fn clean_string(s: String) -> Text<'static> {
    match clean(&s) {
        Some(Cow::Borrowed(t)) if t.len() == s.len() => {}
        other => return owned(other),
    }
    Some(Cow::Owned(s))
}

/// A value that owns its text (so it lives as long as `'b`, whatever that is).
pub(crate) fn owned<'b>(t: Text<'_>) -> Text<'b> {
    t.map(|c| Cow::Owned(c.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_trims_and_normalises() {
        assert_eq!(clean("  a\r\nb\rc \u{3000}").as_deref(), Some("a\nb\nc"));
        assert_eq!(clean(" \t "), None);
        assert_eq!(clean("\u{3000}x\u{3000}").as_deref(), Some("x"));
        assert!(matches!(clean("x y"), Some(Cow::Borrowed("x y"))), "nothing to change: borrowed");
        assert_eq!(clean_string("x y".to_owned()).as_deref(), Some("x y"));
        assert_eq!(clean_string(" a\r\nb ".to_owned()).as_deref(), Some("a\nb"));
        assert_eq!(clean_string("\u{3000}".to_owned()), None);
        let mut r = RawRecord::default();
        r.set(Field::Name, clean(" x "));
        assert_eq!(r.take(Field::Name).as_deref(), Some("x"));
        r.set(Field::Name, clean("y"));
        r.fail(Field::Name);
        assert!(r.failed(Field::Name) && r.take(Field::Name).is_none());
    }
}
