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
    /// Every value of this record is free of control characters: the reader checked the
    /// record's bytes at once ([`has_control`]), so the validator need not look at each
    /// value's characters. `false` (the default) means not known.
    pub(crate) control_free: bool,
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
            control_free: false,
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

/// Whether UTF-8 `bytes` hold a control character (Unicode category Cc: U+0000–U+001F,
/// U+007F, U+0080–U+009F, the last encoded C2 80–C2 9F). Eight bytes at a time: a word
/// with no byte below 0x20, no 0x7F and no 0xC2 holds none, and only other words are
/// looked at byte by byte (a 0xC2 at a word's end is judged with the next byte). On the
/// generated data this spares the validator a character walk of every value.
pub(crate) fn has_control(bytes: &[u8]) -> bool {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_byte = |v: u64| v.wrapping_sub(LO) & !v & HI != 0;
    let suspect = |w: u64| {
        // Some byte is below 0x20 (exact for "any": a borrow only spreads above a hit).
        w.wrapping_sub(LO * 0x20) & !w & HI != 0 || zero_byte(w ^ (LO * 0x7F)) || zero_byte(w ^ (LO * 0xC2))
    };
    let exact = |at: usize| {
        let b = bytes[at];
        b < 0x20 || b == 0x7F || (b == 0xC2 && bytes.get(at + 1).is_some_and(|&n| (0x80..=0x9F).contains(&n)))
    };
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        let w = u64::from_ne_bytes(word.try_into().expect("chunks of 8"));
        if suspect(w) && (at..at + 8).any(exact) {
            return true;
        }
        at += 8;
    }
    (at..bytes.len()).any(exact)
}

/// Input text as a value: line ends normalised to `\n` (so a CRLF file and an LF file give
/// the same certificate), surrounding white space removed (U+3000 included); `None` when
/// nothing is left.
pub(crate) fn clean(s: &str) -> Text<'_> {
    clean_in(s, true)
}

/// [`clean`] of a value from text that holds no `\r` at all unless `may_hold_cr` (a CSV
/// record is searched once, instead of each of its values).
#[inline]
pub(crate) fn clean_in(s: &str, may_hold_cr: bool) -> Text<'_> {
    // Most values neither start nor end with white space: the bytes at each end say so,
    // and only then does `trim` walk them. (`trim` and a `memchr` for `\r` on every field
    // were 10 % of parsing's instructions.)
    let t = if edge_white_space(s.as_bytes()) { s.trim() } else { s };
    if t.is_empty() {
        None
    } else if may_hold_cr && t.contains('\r') {
        Some(Cow::Owned(normalise_line_ends(t)))
    } else {
        Some(Cow::Borrowed(t))
    }
}

/// `\r\n` and `\r` as `\n`: rare, and kept out of line so that [`clean_in`] stays small
/// enough to be inlined into the readers (its prologue and epilogue were a fifth of its
/// instructions).
#[cold]
#[inline(never)]
fn normalise_line_ends(t: &str) -> String {
    t.replace("\r\n", "\n").replace('\r', "\n")
}

/// Whether UTF-8 `b` starts or ends with white space ([`char::is_whitespace`]), from the
/// bytes alone: the white-space characters are ASCII (U+0009–U+000D, U+0020) or one of
/// U+0085, U+00A0 (C2 85, C2 A0), U+1680 (E1 9A 80), U+2000–U+200A, U+2028, U+2029,
/// U+202F (E2 80 80–8A, A8, A9, AF), U+205F (E2 81 9F) and U+3000 (E3 80 80). Decoding
/// both ends of every value and looking the characters up in Unicode's table was most
/// of [`clean_in`]'s instructions.
#[inline]
fn edge_white_space(b: &[u8]) -> bool {
    let ascii = |x: u8| matches!(x, b'\t'..=b'\r' | b' ');
    let wide = |c: &[u8]| match *c {
        [0xC2, 0x85] | [0xC2, 0xA0] | [0xE1, 0x9A, 0x80] | [0xE2, 0x81, 0x9F] | [0xE3, 0x80, 0x80] => true,
        [0xE2, 0x80, x] => matches!(x, 0x80..=0x8A | 0xA8 | 0xA9 | 0xAF),
        _ => false,
    };
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else { return false };
    let starts = if first < 0x80 { ascii(first) } else { wide(&b[..b.len().min(2)]) || wide(&b[..b.len().min(3)]) };
    starts
        || if last < 0x80 {
            ascii(last)
        } else {
            wide(&b[b.len().saturating_sub(2)..]) || wide(&b[b.len().saturating_sub(3)..])
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

    proptest::proptest! {
        #[test]
        fn the_word_scan_finds_what_decoding_finds(
            s in "[\\x00-\\x{a0}ア-ン山田\\x{3000}\\x{10000}-\\x{10010}]{0,40}",
            skip in 0usize..8,
        ) {
            // Every alignment of the text within the words, by a prefix the scan skips.
            let text = format!("{}{s}", "a".repeat(skip));
            proptest::prop_assert_eq!(has_control(&text.as_bytes()[skip..]), s.chars().any(char::is_control));
        }
    }

    proptest::proptest! {
        #[test]
        fn white_space_at_the_edges_is_judged_as_by_characters(
            s in "[\\x00-\\x{a0}\\x{85}\\x{1680}\\x{167f}\\x{2000}-\\x{206f}\\x{3000}-\\x{3002}ア山\\x{10000}]{0,6}",
        ) {
            let by_chars = s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace);
            proptest::prop_assert_eq!(edge_white_space(s.as_bytes()), by_chars);
        }
    }

    #[test]
    fn every_white_space_character_is_found_at_either_end() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            for s in [format!("{c}x"), format!("x{c}"), c.to_string()] {
                assert_eq!(edge_white_space(s.as_bytes()), c.is_whitespace(), "{:?}", s);
            }
        }
    }

    #[test]
    fn the_word_scan_judges_each_position() {
        for at in 0..17 {
            for bad in ["\u{0}", "\u{1f}", "\u{7f}", "\u{80}", "\u{9f}", "\r", "\n"] {
                let s = format!("{}{bad}{}", "a".repeat(at), "b".repeat(16 - at));
                assert!(has_control(s.as_bytes()), "{s:?}");
            }
            for fine in ["\u{a0}", "\u{b7}", " ", "~", "ア", "\u{3000}"] {
                let s = format!("{}{fine}{}", "a".repeat(at), "b".repeat(16 - at));
                assert!(!has_control(s.as_bytes()), "{s:?}");
            }
        }
        assert!(!has_control(b""));
        // A lone C2 at the end (no continuation byte in reach) is no control character.
        assert!(!has_control(b"abcdefg\xc2"));
    }

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
