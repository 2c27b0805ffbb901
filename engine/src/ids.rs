//! Identifiers with published check digits: 個人番号 (My Number), 地方公共団体コード
//! (municipality code), 公費負担者番号 (subsidy insurer number), 公費受給者番号 (recipient
//! number) and 医療機関コード (10-digit institution code).
//!
//! Every parser here is strict: exact length, ASCII digits only, valid check digit. The
//! error says which rule failed, in words a municipality's operator can act on, and never
//! echoes a My Number.

use std::fmt;

/// Why an identifier was rejected. `rule` is a stable, short English phrase used in
/// error reports (`{"field", "rule", "message"}`), e.g. `"check digit"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {rule}")]
pub struct IdError {
    /// Which identifier (`"myNumber"`, `"municipalityCode"`, …).
    pub kind: &'static str,
    /// The rule that failed (`"12 digits"`, `"check digit"`, …).
    pub rule: &'static str,
}

impl IdError {
    fn new(kind: &'static str, rule: &'static str) -> IdError {
        IdError { kind, rule }
    }
}

/// Parses exactly `N` ASCII digits into their values.
fn digits<const N: usize>(s: &str, kind: &'static str, rule: &'static str) -> Result<[u8; N], IdError> {
    let b = s.as_bytes();
    if b.len() != N || !b.iter().all(u8::is_ascii_digit) {
        return Err(IdError::new(kind, rule));
    }
    let mut out = [0u8; N];
    for (o, c) in out.iter_mut().zip(b) {
        *o = c - b'0';
    }
    Ok(out)
}

fn to_number(d: &[u8]) -> u64 {
    d.iter().fold(0u64, |acc, &x| acc * 10 + u64::from(x))
}

/// Modulus 10, weights 2,1,2,1… from the right, adding the digits of each product
/// (モジュラス10 ウェイト2・1 分割). Used by 公費負担者番号, national 公費受給者番号 and
/// 医療機関コード. `body` is the digits before the check digit.
pub fn mod10_w21_check_digit(body: &[u8]) -> u8 {
    let s: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let p = u32::from(d) * if i % 2 == 0 { 2 } else { 1 };
            p / 10 + p % 10
        })
        .sum();
    ((10 - s % 10) % 10) as u8
}

/// 個人番号: 12 digits, the last a check digit over the first 11.
///
/// Held only long enough to derive the PMH-ID; it has no `Display`, its `Debug` is
/// masked, and nothing in the store ever contains it.
#[derive(Clone, PartialEq, Eq)]
pub struct MyNumber([u8; 12]);

impl MyNumber {
    /// Validates a My Number (exactly 12 ASCII digits, valid check digit).
    pub fn parse(s: &str) -> Result<MyNumber, IdError> {
        let d = digits::<12>(s, "myNumber", "12 digits")?;
        if my_number_check_digit(&d[..11]) != d[11] {
            return Err(IdError::new("myNumber", "check digit"));
        }
        let mut raw = [0u8; 12];
        raw.copy_from_slice(s.as_bytes());
        Ok(MyNumber(raw))
    }

    /// The 12 ASCII digits, for key derivation only.
    pub(crate) fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }

    /// The number with all but the last two digits masked (`**********18`), for error
    /// reports that must show *which* value was wrong without disclosing it.
    pub fn masked(&self) -> String {
        mask_my_number(std::str::from_utf8(&self.0).unwrap_or(""))
    }
}

impl fmt::Debug for MyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MyNumber(****)")
    }
}

/// Masks a would-be My Number for error reports: keeps at most the last two characters.
pub fn mask_my_number(s: &str) -> String {
    let n = s.chars().count();
    s.chars().enumerate().map(|(i, c)| if i + 2 < n { '*' } else { c }).collect()
}

/// Check digit of a My Number: 11 − (Σ Pn·Qn mod 11), Pn the n-th digit from the right of
/// the first 11, Qn = n+1 (n ≤ 6) or n−5 (n ≥ 7); a remainder ≤ 1 gives 0.
pub fn my_number_check_digit(first11: &[u8]) -> u8 {
    let s: u32 = first11
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &p)| {
            let n = i as u32 + 1;
            let q = if n <= 6 { n + 1 } else { n - 5 };
            u32::from(p) * q
        })
        .sum();
    let r = s % 11;
    if r <= 1 { 0 } else { (11 - r) as u8 }
}

/// 地方公共団体コード: 6 digits, the last a check digit over the first five with weights
/// 6,5,4,3,2: (11 − s mod 11) mod 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MunicipalityCode(u32);

impl MunicipalityCode {
    /// Validates a 6-digit municipality code.
    pub fn parse(s: &str) -> Result<MunicipalityCode, IdError> {
        let d = digits::<6>(s, "municipalityCode", "6 digits")?;
        if municipality_check_digit(&d[..5]) != d[5] {
            return Err(IdError::new("municipalityCode", "check digit"));
        }
        Ok(MunicipalityCode(to_number(&d) as u32))
    }

    /// Rebuilds a code read back from the store (already validated when written).
    pub fn from_u32(v: u32) -> MunicipalityCode {
        MunicipalityCode(v)
    }

    /// The code as a number (leading zeros lost; `Display` restores them).
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Check digit of a municipality code from its first five digits.
pub fn municipality_check_digit(first5: &[u8]) -> u8 {
    let s: u32 = first5.iter().zip([6u32, 5, 4, 3, 2]).map(|(&d, w)| u32::from(d) * w).sum();
    ((11 - s % 11) % 10) as u8
}

impl fmt::Display for MunicipalityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

/// 公費負担者番号: 法別番号 (2) + 都道府県番号 (2, 01–47 or 51–97) + 実施機関番号 (3) +
/// check digit (modulus 10, weights 2·1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InsurerNumber(u32);

impl InsurerNumber {
    /// Validates an 8-digit 公費負担者番号.
    pub fn parse(s: &str) -> Result<InsurerNumber, IdError> {
        const K: &str = "medicalSubsidyInsurerNumber";
        let d = digits::<8>(s, K, "8 digits")?;
        let pref = d[2] * 10 + d[3];
        if !((1..=47).contains(&pref) || (51..=97).contains(&pref)) {
            return Err(IdError::new(K, "prefecture part 01-47 or 51-97"));
        }
        if mod10_w21_check_digit(&d[..7]) != d[7] {
            return Err(IdError::new(K, "check digit"));
        }
        Ok(InsurerNumber(to_number(&d) as u32))
    }

    /// Rebuilds a number read back from the store.
    pub fn from_u32(v: u32) -> InsurerNumber {
        InsurerNumber(v)
    }

    /// The number as an integer.
    pub fn get(self) -> u32 {
        self.0
    }

    /// 法別番号: the program (e.g. 54 難病, 21 精神通院); below 80 is a national program.
    pub fn law_number(self) -> u8 {
        (self.0 / 1_000_000) as u8
    }

    /// Whether this is a national 公費負担医療 program (法別番号 < 80), whose recipient
    /// numbers have a fixed 7-digit form.
    pub fn is_national(self) -> bool {
        self.law_number() < 80
    }
}

impl fmt::Display for InsurerNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08}", self.0)
    }
}

/// Validates a 公費受給者番号 for the program of `insurer`: for national programs
/// exactly 7 digits with the modulus-10 check digit over the first six; for local programs
/// 1–30 printable characters (their formats differ by municipality).
pub fn validate_recipient_number(insurer: InsurerNumber, s: &str) -> Result<(), IdError> {
    const K: &str = "medicalSubsidyRecipientNumber";
    if insurer.is_national() {
        let d = digits::<7>(s, K, "7 digits for a national program")?;
        if mod10_w21_check_digit(&d[..6]) != d[6] {
            return Err(IdError::new(K, "check digit"));
        }
        Ok(())
    } else if s.is_empty() || s.chars().count() > 30 {
        Err(IdError::new(K, "1-30 characters"))
    } else if s.chars().any(char::is_control) {
        Err(IdError::new(K, "no control characters"))
    } else {
        Ok(())
    }
}

/// 医療機関コード (10 digits): 都道府県番号 (2, 01–47) + 点数表番号 (1) + 郡市区番号 (2) +
/// 医療機関番号 (4) + check digit. The check digit is computed over all nine digits before
/// it — prefecture and 点数表番号 included — with modulus 10, weights 2·1 from the right
/// (the Luhn scheme), e.g. `0110113719`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstitutionCode(u64);

impl InstitutionCode {
    /// Validates a 10-digit institution code.
    pub fn parse(s: &str) -> Result<InstitutionCode, IdError> {
        const K: &str = "institutionCode";
        let d = digits::<10>(s, K, "10 digits")?;
        let pref = d[0] * 10 + d[1];
        if !(1..=47).contains(&pref) {
            return Err(IdError::new(K, "prefecture part 01-47"));
        }
        if mod10_w21_check_digit(&d[..9]) != d[9] {
            return Err(IdError::new(K, "check digit"));
        }
        Ok(InstitutionCode(to_number(&d)))
    }

    /// Rebuilds a code read back from the store.
    pub fn from_u64(v: u64) -> InstitutionCode {
        InstitutionCode(v)
    }

    /// The code as an integer.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for InstitutionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010}", self.0)
    }
}

/// Builds a valid code of each kind from its body digits; used by generators and tests.
pub mod make {
    use super::*;

    /// A valid My Number whose first 11 digits are `n` (zero-padded).
    pub fn my_number(n: u64) -> String {
        let body = format!("{:011}", n % 100_000_000_000);
        let d: Vec<u8> = body.bytes().map(|c| c - b'0').collect();
        format!("{body}{}", my_number_check_digit(&d))
    }

    /// A valid municipality code from its 5-digit body.
    pub fn municipality_code(body: u32) -> String {
        let s = format!("{:05}", body % 100_000);
        let d: Vec<u8> = s.bytes().map(|c| c - b'0').collect();
        format!("{s}{}", municipality_check_digit(&d))
    }

    /// A valid 公費負担者番号 from 法別番号, prefecture and 実施機関番号.
    pub fn insurer_number(law: u8, pref: u8, body: u16) -> String {
        let s = format!("{:02}{:02}{:03}", law % 100, pref % 100, body % 1000);
        let d: Vec<u8> = s.bytes().map(|c| c - b'0').collect();
        format!("{s}{}", mod10_w21_check_digit(&d))
    }

    /// A valid national 公費受給者番号 from its 6-digit body.
    pub fn national_recipient_number(body: u32) -> String {
        let s = format!("{:06}", body % 1_000_000);
        let d: Vec<u8> = s.bytes().map(|c| c - b'0').collect();
        format!("{s}{}", mod10_w21_check_digit(&d))
    }

    /// A valid 10-digit institution code.
    pub fn institution_code(pref: u8, table: u8, body: u32) -> String {
        let s = format!("{:02}{}{:06}", pref % 100, table % 10, body % 1_000_000);
        let d: Vec<u8> = s.bytes().map(|c| c - b'0').collect();
        format!("{s}{}", mod10_w21_check_digit(&d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn published_my_number_is_valid() {
        assert!(MyNumber::parse("123456789018").is_ok());
        assert_eq!(MyNumber::parse("123456789017").unwrap_err().rule, "check digit");
        assert_eq!(MyNumber::parse("12345678901").unwrap_err().rule, "12 digits");
        assert_eq!(MyNumber::parse("12345678901a").unwrap_err().rule, "12 digits");
        assert_eq!(MyNumber::parse("１23456789018").unwrap_err().rule, "12 digits");
    }

    #[test]
    fn my_number_is_masked_in_debug_and_reports() {
        let n = MyNumber::parse("123456789018").unwrap();
        assert_eq!(format!("{n:?}"), "MyNumber(****)");
        assert_eq!(n.masked(), "**********18");
    }

    #[test]
    fn published_insurer_numbers_are_valid() {
        for s in ["54016027", "33120015", "06130488"] {
            let n = InsurerNumber::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(n.to_string(), s);
        }
        assert_eq!(InsurerNumber::parse("54016028").unwrap_err().rule, "check digit");
        assert_eq!(InsurerNumber::parse("54486020").unwrap_err().rule, "prefecture part 01-47 or 51-97");
        assert!(InsurerNumber::parse("54016027").unwrap().is_national());
        assert_eq!(InsurerNumber::parse("06130488").unwrap().law_number(), 6);
    }

    #[test]
    fn published_municipality_codes_are_valid() {
        for s in ["131016", "011002", "271004"] {
            let c = MunicipalityCode::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(c.to_string(), s);
        }
        assert_eq!(MunicipalityCode::parse("131017").unwrap_err().rule, "check digit");
        assert_eq!(MunicipalityCode::parse("13101").unwrap_err().rule, "6 digits");
    }

    #[test]
    fn recipient_numbers() {
        let national = InsurerNumber::parse("54016027").unwrap();
        let local = InsurerNumber::parse(&make::insurer_number(88, 13, 101)).unwrap();
        let good = make::national_recipient_number(123456);
        assert!(validate_recipient_number(national, &good).is_ok());
        let mut bad = good.clone().into_bytes();
        bad[6] = b'0' + (bad[6] - b'0' + 1) % 10;
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(validate_recipient_number(national, &bad).unwrap_err().rule, "check digit");
        assert!(validate_recipient_number(national, "12345").is_err());
        assert!(validate_recipient_number(local, "A-0012345").is_ok());
        assert!(validate_recipient_number(local, "").is_err());
        assert!(validate_recipient_number(local, &"9".repeat(31)).is_err());
    }

    #[test]
    fn institution_codes() {
        // A published prescription-issuer code (処方箋発行医療機関コード).
        assert!(InstitutionCode::parse("0110113719").is_ok());
        assert_eq!(InstitutionCode::parse("0110113718").unwrap_err().rule, "check digit");
        assert!(InstitutionCode::parse("1311234569").is_ok());
        let c = make::institution_code(13, 1, 123456);
        assert_eq!(InstitutionCode::parse(&c).unwrap().to_string(), c);
        assert_eq!(InstitutionCode::parse("4811234567").unwrap_err().rule, "prefecture part 01-47");
        assert_eq!(InstitutionCode::parse("131123456").unwrap_err().rule, "10 digits");
    }

    /// Replaces digit `pos` of `s` by another digit (`delta` in 1..=9 steps away).
    fn change_digit(s: &str, pos: usize, delta: u8) -> String {
        let mut b = s.as_bytes().to_vec();
        b[pos] = b'0' + (b[pos] - b'0' + delta) % 10;
        String::from_utf8(b).unwrap()
    }

    /// Σ weight·digit mod 11 of a body, written out independently of the parsers.
    fn mod11_remainder(s: &str, weights: &[u32]) -> u32 {
        s.bytes().zip(weights).map(|(c, w)| u32::from(c - b'0') * w).sum::<u32>() % 11
    }

    const MY_NUMBER_WEIGHTS: [u32; 11] = [6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
    const MUNICIPALITY_WEIGHTS: [u32; 5] = [6, 5, 4, 3, 2];

    #[test]
    fn mod11_folds_are_the_documented_blind_spots() {
        // My Number maps remainders 0 and 1 both to check digit 0, so a change moving the
        // remainder between them passes: 00000000000 (r=0) vs 00000000006 (r=6·2=12→1).
        assert!(MyNumber::parse("000000000000").is_ok());
        assert!(MyNumber::parse("000000000060").is_ok());
        // Municipality codes fold remainders 0 and 10 to 1: 000001 vs 000051 (r=5·2=10).
        assert!(MunicipalityCode::parse("000001").is_ok());
        assert!(MunicipalityCode::parse("000051").is_ok());
    }

    proptest! {
        #[test]
        fn my_number_single_digit_change_is_caught(n in 0u64..100_000_000_000, pos in 0usize..12, delta in 1u8..10) {
            let good = make::my_number(n);
            prop_assert!(MyNumber::parse(&good).is_ok());
            let bad = change_digit(&good, pos, delta);
            // The only undetectable change: the remainder moves between 0 and 1 (both → 0).
            let (r1, r2) = (mod11_remainder(&good[..11], &MY_NUMBER_WEIGHTS), mod11_remainder(&bad[..11], &MY_NUMBER_WEIGHTS));
            prop_assume!(!(pos < 11 && r1 <= 1 && r2 <= 1));
            prop_assert!(MyNumber::parse(&bad).is_err());
        }

        #[test]
        fn insurer_single_digit_change_is_caught(law in 1u8..99, pref in 1u8..48, body in 0u16..1000, pos in 0usize..8, delta in 1u8..10) {
            let good = make::insurer_number(law, pref, body);
            prop_assert!(InsurerNumber::parse(&good).is_ok());
            prop_assert!(InsurerNumber::parse(&change_digit(&good, pos, delta)).is_err());
        }

        #[test]
        fn municipality_single_digit_change_is_caught(body in 0u32..100_000, pos in 0usize..6, delta in 1u8..10) {
            let good = make::municipality_code(body);
            prop_assert!(MunicipalityCode::parse(&good).is_ok());
            let bad = change_digit(&good, pos, delta);
            // The only undetectable change: the remainder moves between 0 and 10 (both → 1).
            let (r1, r2) = (mod11_remainder(&good[..5], &MUNICIPALITY_WEIGHTS), mod11_remainder(&bad[..5], &MUNICIPALITY_WEIGHTS));
            prop_assume!(!(pos < 5 && (r1 == 0 || r1 == 10) && (r2 == 0 || r2 == 10)));
            prop_assert!(MunicipalityCode::parse(&bad).is_err());
        }

        #[test]
        fn national_recipient_single_digit_change_is_caught(body in 0u32..1_000_000, pos in 0usize..7, delta in 1u8..10) {
            let insurer = InsurerNumber::parse("54016027").unwrap();
            let good = make::national_recipient_number(body);
            prop_assert!(validate_recipient_number(insurer, &good).is_ok());
            prop_assert!(validate_recipient_number(insurer, &change_digit(&good, pos, delta)).is_err());
        }

        #[test]
        fn institution_single_digit_change_is_caught(pref in 1u8..48, table in 1u8..10, body in 0u32..1_000_000, pos in 0usize..10, delta in 1u8..10) {
            let good = make::institution_code(pref, table, body);
            prop_assert!(InstitutionCode::parse(&good).is_ok());
            prop_assert!(InstitutionCode::parse(&change_digit(&good, pos, delta)).is_err());
        }
    }
}
