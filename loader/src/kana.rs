//! 氏名カナ normalisation: half-width katakana (半角カナ, what many municipal systems and
//! every Shift_JIS file still carry) to full-width katakana (全角カナ), composing the
//! voiced marks (ｶﾞ → ガ, ﾊﾟ → パ), and rejecting anything that is not katakana.
//!
//! Accepted: full-width katakana U+30A1–U+30FA, `・` `ー` `ヽ` `ヾ`; half-width katakana
//! U+FF66–U+FF9D with `ﾞ`/`ﾟ` after a kana that takes them (`ｰ` → `ー`, `･` → `・`); the
//! combining and spacing voiced marks (U+3099/U+309A, `゛`/`゜`) after a full-width kana
//! that takes them; spaces (U+0020 and U+3000), which become U+3000 so that the whole value
//! is full-width. Hiragana, kanji, Latin letters and digits are rejected: the field is what
//! a receipt computer prints as フリガナ, and guessing a reading is not the hub's job.

/// Why a kana value was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KanaError {
    /// A character that is not katakana or a space.
    NotKatakana(char),
    /// A voiced / semi-voiced mark after a character that cannot take it.
    StrayMark(char),
}

impl KanaError {
    pub(crate) fn message(&self) -> String {
        match self {
            KanaError::NotKatakana(c) => {
                format!("must be katakana (full- or half-width) and spaces; '{c}' (U+{:04X}) is not", *c as u32)
            }
            KanaError::StrayMark(c) => {
                format!("voiced mark '{c}' (U+{:04X}) does not follow a kana that takes it", *c as u32)
            }
        }
    }
}

/// Half-width katakana U+FF66..=U+FF9D mapped to full width, in code-point order.
const HALF_TO_FULL: &str =
    "ヲァィゥェォャュョッーアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン";

const FULL_SPACE: char = '\u{3000}';

fn half_to_full(c: char) -> Option<char> {
    match c {
        '\u{FF65}' => Some('・'),
        '\u{FF66}'..='\u{FF9D}' => HALF_TO_FULL.chars().nth(c as usize - 0xFF66),
        _ => None,
    }
}

fn is_dakuten(c: char) -> bool {
    matches!(c, '\u{FF9E}' | '\u{3099}' | '\u{309B}')
}

fn is_handakuten(c: char) -> bool {
    matches!(c, '\u{FF9F}' | '\u{309A}' | '\u{309C}')
}

/// The voiced form (濁音) of a full-width kana, if it has one.
fn voiced(c: char) -> Option<char> {
    match c {
        'カ' | 'キ' | 'ク' | 'ケ' | 'コ' | 'サ' | 'シ' | 'ス' | 'セ' | 'ソ' | 'タ' | 'チ' | 'ツ' | 'テ' | 'ト'
        | 'ハ' | 'ヒ' | 'フ' | 'ヘ' | 'ホ' => char::from_u32(c as u32 + 1),
        'ウ' => Some('ヴ'),
        'ワ' => Some('ヷ'),
        'ヰ' => Some('ヸ'),
        'ヱ' => Some('ヹ'),
        'ヲ' => Some('ヺ'),
        'ヽ' => Some('ヾ'),
        _ => None,
    }
}

/// The semi-voiced form (半濁音) of a full-width kana, if it has one.
fn semi_voiced(c: char) -> Option<char> {
    match c {
        'ハ' | 'ヒ' | 'フ' | 'ヘ' | 'ホ' => char::from_u32(c as u32 + 2),
        _ => None,
    }
}

fn is_full_katakana(c: char) -> bool {
    matches!(c, '\u{30A1}'..='\u{30FA}' | '\u{30FB}'..='\u{30FE}')
}

/// Normalises a kana value to full-width katakana (see the module doc).
pub(crate) fn normalise_kana(s: &str) -> Result<String, KanaError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let base = if c == ' ' || c == FULL_SPACE {
            out.push(FULL_SPACE);
            continue;
        } else if let Some(full) = half_to_full(c) {
            full
        } else if is_full_katakana(c) {
            c
        } else if is_dakuten(c) || is_handakuten(c) {
            return Err(KanaError::StrayMark(c));
        } else {
            return Err(KanaError::NotKatakana(c));
        };
        let composed = match chars.peek().copied() {
            Some(m) if is_dakuten(m) => {
                chars.next();
                voiced(base).ok_or(KanaError::StrayMark(m))?
            }
            Some(m) if is_handakuten(m) => {
                chars.next();
                semi_voiced(base).ok_or(KanaError::StrayMark(m))?
            }
            _ => base,
        };
        out.push(composed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_width_becomes_full_width() {
        assert_eq!(normalise_kana("ﾔﾏﾀﾞ ﾀﾛｳ").unwrap(), "ヤマダ\u{3000}タロウ");
        assert_eq!(normalise_kana("ｶﾞｷﾞｸﾞｹﾞｺﾞ").unwrap(), "ガギグゲゴ");
        assert_eq!(normalise_kana("ﾊﾟﾋﾟﾌﾟﾍﾟﾎﾟ").unwrap(), "パピプペポ");
        assert_eq!(normalise_kana("ﾂﾞﾃﾞﾄﾞｳﾞﾜﾞｦﾞ").unwrap(), "ヅデドヴヷヺ");
        assert_eq!(normalise_kana("ｽﾐｽ･ｼﾞｮﾝ ｰ").unwrap(), "スミス・ジョン\u{3000}ー");
        assert_eq!(normalise_kana("ｧｨｩｪｫｬｭｮｯｦﾝ").unwrap(), "ァィゥェォャュョッヲン");
    }

    #[test]
    fn every_half_width_kana_maps() {
        assert_eq!(HALF_TO_FULL.chars().count(), 0xFF9D - 0xFF66 + 1);
        for c in '\u{FF66}'..='\u{FF9D}' {
            assert!(is_full_katakana(half_to_full(c).unwrap()), "{c}");
        }
    }

    #[test]
    fn full_width_passes_and_composes() {
        assert_eq!(normalise_kana("サトウ　ハナコ").unwrap(), "サトウ\u{3000}ハナコ");
        assert_eq!(normalise_kana("カ\u{3099}ハ\u{309A}").unwrap(), "ガパ");
        assert_eq!(normalise_kana("ヴァイオリン").unwrap(), "ヴァイオリン");
    }

    #[test]
    fn rejects_non_katakana() {
        assert_eq!(normalise_kana("やまだ"), Err(KanaError::NotKatakana('や')));
        assert_eq!(normalise_kana("ヤマダ1"), Err(KanaError::NotKatakana('1')));
        assert_eq!(normalise_kana("山田"), Err(KanaError::NotKatakana('山')));
        assert_eq!(normalise_kana("ﾏﾞ"), Err(KanaError::StrayMark('ﾞ')));
        assert_eq!(normalise_kana("ｶﾟ"), Err(KanaError::StrayMark('ﾟ')));
        assert_eq!(normalise_kana("ﾞｱ"), Err(KanaError::StrayMark('ﾞ')));
        assert_eq!(normalise_kana("ｶﾞﾞ"), Err(KanaError::StrayMark('ﾞ')));
    }
}
