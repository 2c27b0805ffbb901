//! The record rules of design §4, applied to a `RawRecord` whatever file it came from.
//!
//! Every field is checked and every broken rule reported (a row is never abandoned at its
//! first error). The row becomes a [`ParsedRow`] only when nothing was wrong.
//!
//! A delete row (`isDeleted` true) needs only what identifies the certificate —
//! `municipalityCode`, `orgSpecificCertificateTypeId`, `historyKey` — and a valid
//! `myNumber`; its other fields are neither checked nor kept, so a municipality can delete
//! a certificate whatever its last content was. A row whose `isDeleted` is missing or
//! invalid is validated in full.

use std::borrow::Cow;

use pmh_engine::ids::{IdError, validate_recipient_number};
use pmh_engine::record::{
    AdditionalCondition, BasicFiveInfo, Copayment, DesignatedInstitution, FaceItem, MaxCopayment,
};
use pmh_engine::{Certificate, Date, InstitutionCode, InsurerNumber, MunicipalityCode, MyNumber};

use crate::error::{RowError, RowErrors};
use crate::field::{COPAY_FIELDS, Field};
use crate::kana::normalise_kana;
use crate::options::ParseOptions;
use crate::raw::{RawRecord, Text};
use crate::row::ParsedRow;

/// Limits (in characters) of the text fields. The two of design §4 (name, certificationName:
/// 100; orgSpecificCertificateTypeId: 50) and the recipient number's 30 are the
/// published ones; the others are this loader's, generous for real data and there so
/// that one bad row cannot bloat the store.
pub mod limits {
    /// 機関別受給者証種別ID.
    pub const TYPE_ID: usize = 50;
    /// 氏名, 氏名カナ.
    pub const NAME: usize = 100;
    /// 住所.
    pub const ADDRESS: usize = 200;
    /// 受給者証名.
    pub const CERTIFICATION_NAME: usize = 100;
    /// 公費受給者番号 (when the insurer number is itself invalid).
    pub const RECIPIENT: usize = 30;
    /// certificationSubKey, 区分, 所得区分.
    pub const SHORT_TEXT: usize = 100;
    /// 履歴キー.
    pub const HISTORY_KEY: usize = 100;
    /// 追加条件 item and code; 種別 and 負担定義 of a copay rule; the name of a designated
    /// institution; the name of a face item.
    pub const ITEM: usize = 100;
    /// The value of a face item (受給者証券面項目).
    pub const FACE_VALUE: usize = 1000;
}

/// Whether a text may span lines (`\n` and `\t` allowed) or must be one line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lines {
    One,
    Many,
}

struct Validator<'r, 'e, 'a> {
    raw: &'r mut RawRecord<'a>,
    errs: &'r mut RowErrors<'e>,
}

/// The message for an identifier rule of `pmh_engine::ids`.
fn id_message(e: &IdError) -> String {
    match e.rule {
        "check digit" => "the check digit does not match".to_owned(),
        r if r.starts_with("prefecture part ") => format!("the prefecture part must be {}", &r[16..]),
        "no control characters" => "must not contain control characters".to_owned(),
        r => format!("must be {r}"),
    }
}

/// What a message about a list item starts with ("item 2: "), formatted only when a
/// message is: most rows have none, and lists are on every row.
#[derive(Clone, Copy)]
enum Prefix {
    /// A scalar field: nothing.
    None,
    /// Item `i` (0-based) of a list.
    Item(usize),
    /// Copay rule `i` (0-based).
    Copay(usize),
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prefix::None => Ok(()),
            Prefix::Item(i) => write!(f, "item {}: ", i + 1),
            Prefix::Copay(i) => write!(f, "copayment {}: ", i + 1),
        }
    }
}

/// A text's length in characters and its first control character not allowed by `lines`.
///
/// ASCII text (most values) is checked byte by byte; other text is decoded. (A byte scan
/// for all text — Cc is U+0000–U+001F, U+007F and C2 80–C2 9F — took 6 % more
/// instructions than decoding on the generated data, mostly Japanese: three bytes per
/// character to look at instead of one character.)
fn scan_text(s: &str, lines: Lines) -> (usize, Option<char>) {
    let allowed = |c: char| lines == Lines::Many && (c == '\n' || c == '\t');
    if s.is_ascii() {
        let bad = s.bytes().find(|&b| (b < 0x20 || b == 0x7f) && !allowed(char::from(b)));
        return (s.len(), bad.map(char::from));
    }
    let mut n = 0;
    for c in s.chars() {
        if c.is_control() && !allowed(c) {
            return (n, Some(c));
        }
        n += 1;
    }
    (n, None)
}

impl<'a> Validator<'_, '_, 'a> {
    fn required(&mut self, f: Field, prefix: Prefix) {
        self.errs.push(f, "required", format!("{prefix}{} is required", f.name()), "");
    }

    /// A scalar value, reporting it when required and missing.
    fn value(&mut self, f: Field, required: bool) -> Text<'a> {
        let v = self.raw.take(f);
        if v.is_none() && required && !self.raw.failed(f) {
            self.required(f, Prefix::None);
        }
        v
    }

    /// Checks a text against the control-character and length rules.
    fn text_ok(&mut self, f: Field, s: &str, max: usize, lines: Lines, prefix: Prefix) -> bool {
        // No control character anywhere in the record, and too few bytes for too many
        // characters: nothing to look at.
        if self.raw.control_free && s.len() <= max {
            return true;
        }
        let (n, bad) = scan_text(s, lines);
        if let Some(c) = bad {
            let msg = format!("{prefix}must not contain control characters (found U+{:04X})", c as u32);
            self.errs.push(f, "no control characters", msg, s);
            return false;
        }
        if n > max {
            self.errs.push(f, "max length", format!("{prefix}at most {max} characters, got {n}"), s);
            return false;
        }
        true
    }

    fn text(&mut self, f: Field, required: bool, max: usize, lines: Lines) -> Option<String> {
        let s = self.value(f, required)?;
        self.text_ok(f, &s, max, lines, Prefix::None).then(|| s.into_owned())
    }

    fn date(&mut self, f: Field, required: bool) -> Option<Date> {
        let s = self.value(f, required)?;
        // ASCII only: `Date::parse` slices by byte offsets (and would panic inside a
        // multi-byte character).
        let parsed = if s.is_ascii() { Date::parse(&s).ok() } else { None };
        match parsed.ok_or(()) {
            Ok(d) => Some(d),
            Err(_) => {
                self.errs.push(f, "date", "must be a date YYYY-MM-DD or YYYYMMDD that exists in the calendar", &s);
                None
            }
        }
    }

    fn boolean(&mut self, f: Field, required: bool) -> Option<bool> {
        let s = self.value(f, required)?;
        match parse_bool(&s) {
            Some(b) => Some(b),
            None => {
                self.errs.push(f, "boolean", "must be true, false, 1 or 0", &s);
                None
            }
        }
    }

    fn municipality(&mut self, forced: Option<MunicipalityCode>) -> Option<MunicipalityCode> {
        let f = Field::MunicipalityCode;
        let Some(s) = self.value(f, forced.is_none()) else {
            return if self.raw.failed(f) { None } else { forced };
        };
        match MunicipalityCode::parse(&s) {
            Err(e) => {
                self.errs.push(f, e.rule, id_message(&e), &s);
                None
            }
            Ok(code) => match forced {
                Some(own) if own != code => {
                    let msg = format!("the row is for municipality {code}, but this upload is for {own}");
                    self.errs.push(f, "caller's municipality", msg, &s);
                    None
                }
                _ => Some(code),
            },
        }
    }

    fn type_id(&mut self) -> Option<String> {
        let f = Field::OrgSpecificCertificateTypeId;
        let s = self.value(f, true)?;
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            self.errs.push(f, "half-width alphanumerics", "must be half-width letters and digits only", &s);
            return None;
        }
        let n = s.len();
        if n > limits::TYPE_ID {
            self.errs.push(f, "max length", format!("at most {} characters, got {n}", limits::TYPE_ID), &s);
            return None;
        }
        Some(s.into_owned())
    }

    fn my_number(&mut self) -> Option<MyNumber> {
        let s = self.value(Field::MyNumber, true)?;
        match MyNumber::parse(&s) {
            Ok(n) => Some(n),
            Err(e) => {
                // RowErrors masks the value of this field.
                self.errs.push(Field::MyNumber, e.rule, id_message(&e), &s);
                None
            }
        }
    }

    fn kana(&mut self) -> Option<String> {
        let f = Field::NameKana;
        let s = self.value(f, false)?;
        match normalise_kana(&s) {
            Ok(k) => self.text_ok(f, &k, limits::NAME, Lines::One, Prefix::None).then_some(k),
            Err(e) => {
                self.errs.push(f, "katakana", e.message(), &s);
                None
            }
        }
    }

    fn sex(&mut self) -> Option<u8> {
        let s = self.value(Field::Sex, false)?;
        match &*s {
            "0" => Some(0),
            "1" => Some(1),
            "2" => Some(2),
            _ => {
                self.errs.push(Field::Sex, "0, 1 or 2", "must be 0 (不明), 1 (男) or 2 (女)", &s);
                None
            }
        }
    }

    fn insurer(&mut self) -> Option<InsurerNumber> {
        let f = Field::InsurerNumber;
        let s = self.value(f, true)?;
        match InsurerNumber::parse(&s) {
            Ok(n) => Some(n),
            Err(e) => {
                self.errs.push(f, e.rule, id_message(&e), &s);
                None
            }
        }
    }

    fn recipient(&mut self, insurer: Option<InsurerNumber>) -> Option<String> {
        let f = Field::RecipientNumber;
        let s = self.value(f, true)?;
        match insurer {
            Some(ins) => match validate_recipient_number(ins, &s) {
                Ok(()) => Some(s.into_owned()),
                Err(e) => {
                    self.errs.push(f, e.rule, id_message(&e), &s);
                    None
                }
            },
            // Which form applies depends on the insurer, which is itself wrong: check only
            // what holds for every program.
            None => self.text_ok(f, &s, limits::RECIPIENT, Lines::One, Prefix::None).then(|| s.into_owned()),
        }
    }

    fn conditions(&mut self) -> Vec<AdditionalCondition> {
        let f = Field::AdditionalConditions;
        let mut out = Vec::with_capacity(self.raw.conditions.len());
        for (i, c) in std::mem::take(&mut self.raw.conditions).into_iter().enumerate() {
            let p = Prefix::Item(i);
            let item = self.item_text(f, c.item, "item", p, limits::ITEM);
            let code = self.item_text(f, c.code, "code", p, limits::ITEM);
            if let (Some(item), Some(code)) = (item, code) {
                out.push(AdditionalCondition { item, code });
            }
        }
        out
    }

    /// A required text inside a list item (`part` names it in the message).
    fn item_text(&mut self, f: Field, v: Text<'a>, part: &str, p: Prefix, max: usize) -> Option<String> {
        match v {
            None => {
                self.errs.push(f, "required", format!("{p}{part} is required"), "");
                None
            }
            Some(s) => self.text_ok(f, &s, max, Lines::One, p).then(|| s.into_owned()),
        }
    }

    fn institutions(&mut self) -> Vec<DesignatedInstitution> {
        let f = Field::DesignatedMedicalInstitutions;
        let mut out = Vec::with_capacity(self.raw.institutions.len());
        for (i, inst) in std::mem::take(&mut self.raw.institutions).into_iter().enumerate() {
            let p = Prefix::Item(i);
            let code = match inst.code {
                None => {
                    self.errs.push(f, "required", format!("{p}the institution code is required"), "");
                    None
                }
                Some(s) => match InstitutionCode::parse(&s) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        self.errs.push(f, e.rule, format!("{p}institution code: {}", id_message(&e)), &s);
                        None
                    }
                },
            };
            let name_ok = match &inst.name {
                Some(n) => self.text_ok(f, n, limits::ITEM, Lines::One, p),
                None => true,
            };
            if let (Some(code), true) = (code, name_ok) {
                out.push(DesignatedInstitution { code: code.get(), name: inst.name.map(Cow::into_owned) });
            }
        }
        out
    }

    fn copayment(&mut self) -> Vec<Copayment> {
        let mut out = Vec::with_capacity(self.raw.copayment.len());
        for (i, rule) in std::mem::take(&mut self.raw.copayment).into_iter().enumerate() {
            let p = Prefix::Copay(i);
            let [category, burden, rate_d, rate_m, rate_v, amount_d, amount_m, amount_v] = rule.values;
            let category = self.item_text(COPAY_FIELDS[0], category, "category (種別)", p, limits::ITEM);
            let burden = self.item_text(COPAY_FIELDS[1], burden, "burdenDefinition (負担定義)", p, limits::ITEM);
            let mut ok = category.is_some() && burden.is_some();
            let mut rates = [None; 3];
            for (k, v) in [rate_d, rate_m, rate_v].into_iter().enumerate() {
                match v.map(|s| (parse_percent(&s), s)) {
                    None => {}
                    Some((Some(r), _)) => rates[k] = Some(r),
                    Some((None, s)) => {
                        let msg = format!("{p}must be a whole percentage from 0 to 100");
                        self.errs.push(COPAY_FIELDS[2 + k], "percent 0-100", msg, &s);
                        ok = false;
                    }
                }
            }
            let mut amounts = [None; 3];
            for (k, v) in [amount_d, amount_m, amount_v].into_iter().enumerate() {
                match v.map(|s| (parse_yen(&s), s)) {
                    None => {}
                    Some((Some(a), _)) => amounts[k] = Some(a),
                    Some((None, s)) => {
                        self.errs.push(COPAY_FIELDS[5 + k], "yen amount", format!("{p}{YEN_MESSAGE}"), &s);
                        ok = false;
                    }
                }
            }
            if let (true, Some(category), Some(burden_definition)) = (ok, category, burden) {
                out.push(Copayment {
                    category,
                    burden_definition,
                    rate_per_day: rates[0],
                    rate_per_month: rates[1],
                    rate_per_visit: rates[2],
                    amount_per_day: amounts[0],
                    amount_per_month: amounts[1],
                    amount_per_visit: amounts[2],
                });
            }
        }
        out
    }

    fn yen(&mut self, f: Field) -> Option<u32> {
        let s = self.value(f, false)?;
        let v = parse_yen(&s);
        if v.is_none() {
            self.errs.push(f, "yen amount", YEN_MESSAGE, &s);
        }
        v
    }

    fn detail(&mut self) -> Vec<FaceItem> {
        let f = Field::CertificationDetail;
        let mut out = Vec::with_capacity(self.raw.detail.len());
        for (i, item) in std::mem::take(&mut self.raw.detail).into_iter().enumerate() {
            let p = Prefix::Item(i);
            let name = self.item_text(f, item.name, "name", p, limits::ITEM);
            let value = item.value.unwrap_or_default();
            let value_ok = self.text_ok(f, &value, limits::FACE_VALUE, Lines::Many, p);
            if let (Some(name), true) = (name, value_ok) {
                out.push(FaceItem { name, value: value.into_owned() });
            }
        }
        out
    }
}

const YEN_MESSAGE: &str = "must be a whole number of yen (digits only, at most 4294967295)";

/// `true`/`false` (any case) or `1`/`0`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" => Some(true),
        "0" => Some(false),
        _ if s.eq_ignore_ascii_case("true") => Some(true),
        _ if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn parse_percent(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&r| r <= 100)
}

fn parse_yen(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Applies every rule to a record; `errs` already holds what the reader found.
pub(crate) fn validate(
    mut raw: RawRecord,
    mut errs: RowErrors<'_>,
    opts: &ParseOptions,
) -> Result<ParsedRow, Vec<RowError>> {
    let row = errs.row();
    let mut v = Validator { raw: &mut raw, errs: &mut errs };

    // Identity first: needed by every row, deletes included.
    let is_deleted = v.boolean(Field::IsDeleted, true);
    let municipality = v.municipality(opts.municipality);
    let type_id = v.type_id();
    let my_number = v.my_number();
    let history_key = v.text(Field::HistoryKey, true, limits::HISTORY_KEY, Lines::One);

    if is_deleted == Some(true) {
        return match (municipality, type_id, my_number, history_key) {
            (Some(m), Some(t), Some(n), Some(h)) if errs.is_empty() => {
                Ok(ParsedRow { row, pmh_source: n, certificate: identity_only(m.get(), t, h), is_deleted: true })
            }
            _ => Err(errs.into_sorted()),
        };
    }

    let name = v.text(Field::Name, false, limits::NAME, Lines::One);
    let name_kana = v.kana();
    let address = v.text(Field::Address, false, limits::ADDRESS, Lines::Many);
    let date_of_birth = v.date(Field::DateOfBirth, false);
    let sex = v.sex();
    let is_not_disclosed = v.boolean(Field::IsNotDisclosed, true);
    let insurer = v.insurer();
    let certification_name = v.text(Field::CertificationName, true, limits::CERTIFICATION_NAME, Lines::One);
    let recipient = v.recipient(insurer);
    let sub_key = v.text(Field::CertificationSubKey, false, limits::SHORT_TEXT, Lines::One);
    let segment = v.text(Field::Segment, false, limits::SHORT_TEXT, Lines::One);
    let income_segment = v.text(Field::IncomeSegment, false, limits::SHORT_TEXT, Lines::One);
    let additional_conditions = v.conditions();
    let designated = v.institutions();
    let always_reimbursement = v.boolean(Field::IsAlwaysReimbursement, false);
    let copayment = v.copayment();
    let max_copayment_amount = MaxCopayment {
        monthly: v.yen(Field::MaxMonthly),
        per_visit: v.yen(Field::MaxPerVisit),
        inpatient_monthly: v.yen(Field::MaxInpatientMonthly),
    };
    let valid_from = v.date(Field::ValidFrom, true);
    let valid_to = v.date(Field::ValidTo, true);
    if let (Some(from), Some(to)) = (valid_from, valid_to)
        && from > to
    {
        let msg = format!("validTo {to} is before validFrom {from}");
        v.errs.push(Field::ValidTo, "validFrom <= validTo", msg, &to.to_string());
    }
    let certification_detail = v.detail();

    match (
        municipality,
        type_id,
        my_number,
        history_key,
        is_not_disclosed,
        insurer,
        certification_name,
        recipient,
        valid_from,
        valid_to,
    ) {
        (
            Some(municipality),
            Some(type_id),
            Some(my_number),
            Some(history_key),
            Some(is_not_disclosed),
            Some(insurer),
            Some(certification_name),
            Some(recipient),
            Some(valid_from),
            Some(valid_to),
        ) if errs.is_empty() => Ok(ParsedRow {
            row,
            pmh_source: my_number,
            certificate: Certificate {
                municipality_code: municipality.get(),
                org_specific_certificate_type_id: type_id,
                history_key,
                basic_five_info: BasicFiveInfo {
                    name: name.unwrap_or_default(),
                    name_kana: name_kana.unwrap_or_default(),
                    address: address.unwrap_or_default(),
                    date_of_birth: date_of_birth.map(Date::days),
                    sex: sex.unwrap_or(0),
                },
                is_not_disclosed,
                medical_subsidy_insurer_number: insurer.get(),
                certification_name,
                medical_subsidy_recipient_number: recipient,
                certification_sub_key: sub_key,
                segment,
                income_segment,
                additional_conditions,
                designated_medical_institutions: designated,
                is_always_reimbursement: always_reimbursement.unwrap_or(false),
                copayment,
                max_copayment_amount,
                valid_from: valid_from.days(),
                valid_to: valid_to.days(),
                certification_detail,
            },
            is_deleted: false,
        }),
        _ => Err(errs.into_sorted()),
    }
}

/// The certificate of a delete row: its identity, every other field at its default.
fn identity_only(municipality_code: u32, type_id: String, history_key: String) -> Certificate {
    Certificate {
        municipality_code,
        org_specific_certificate_type_id: type_id,
        history_key,
        basic_five_info: BasicFiveInfo::default(),
        is_not_disclosed: false,
        medical_subsidy_insurer_number: 0,
        certification_name: String::new(),
        medical_subsidy_recipient_number: String::new(),
        certification_sub_key: None,
        segment: None,
        income_segment: None,
        additional_conditions: Vec::new(),
        designated_medical_institutions: Vec::new(),
        is_always_reimbursement: false,
        copayment: Vec::new(),
        max_copayment_amount: MaxCopayment::default(),
        valid_from: 0,
        valid_to: 0,
        certification_detail: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What `scan_text` must give, character by character.
    fn by_chars(s: &str, lines: Lines) -> (usize, Option<char>) {
        let allowed = |c: char| lines == Lines::Many && (c == '\n' || c == '\t');
        (s.chars().count(), s.chars().find(|&c| c.is_control() && !allowed(c)))
    }

    proptest! {
        #[test]
        fn scanning_bytes_agrees_with_decoding_characters(
            s in "[\\x00-\\x{a0}ア-ン山田\\x{3000}\\x{10000}-\\x{10010}]{0,40}",
            many in any::<bool>(),
        ) {
            let lines = if many { Lines::Many } else { Lines::One };
            let (got, want) = (scan_text(&s, lines), by_chars(&s, lines));
            // The length counts only when there is no control character.
            prop_assert_eq!(got.1, want.1);
            if want.1.is_none() {
                prop_assert_eq!(got.0, want.0);
            }
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
        assert_eq!(parse_percent("100"), Some(100));
        assert_eq!(parse_percent("101"), None);
        assert_eq!(parse_percent("-1"), None);
        assert_eq!(parse_percent("0010"), None);
        assert_eq!(parse_yen("4294967295"), Some(u32::MAX));
        assert_eq!(parse_yen("4294967296"), None);
        assert_eq!(parse_yen("1,000"), None);
        assert_eq!(parse_yen("+5"), None);
    }

    #[test]
    fn id_messages_read_well() {
        let e = IdError { kind: "x", rule: "prefecture part 01-47 or 51-97" };
        assert_eq!(id_message(&e), "the prefecture part must be 01-47 or 51-97");
        let e = IdError { kind: "x", rule: "12 digits" };
        assert_eq!(id_message(&e), "must be 12 digits");
    }
}
