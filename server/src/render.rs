//! JSON rendering of answers, straight from the archived (zero-copy) certificates into the
//! response buffer: no intermediate owned certificate, no per-field allocation. Field
//! names and value forms are those of the upload API (`docs/file-formats.md`), so a
//! receipt computer reads back exactly what the municipality sent: codes as zero-padded
//! strings, dates `YYYY-MM-DD`, amounts and rates as numbers, `isAlwaysReimbursement` as
//! `"0"`/`"1"`. Absent optional values are left out. `basicFiveInfo` is left out when it is
//! withheld (不開示, design §5.3). There is no `myNumber`: the store does not have it.
//!
//! Written by hand rather than through serde: serde_json's string escaping inspects every
//! byte through a table and dominated the rendering (3.8 µs for a typical two-certificate
//! answer, more than the engine lookup). Here a string is first checked for bytes that
//! need escaping in one branch-free pass the compiler vectorises, and copied whole when
//! there are none — the case for every stored value in practice
//! (`cargo bench -p pmh-server --bench render`).

use pmh_engine::lookup::CertificateView;
use pmh_engine::record::{ArchivedCertificate, ArchivedCopayment};
use pmh_engine::{Date, Eligibility, Lookup, PmhId};

/// `YYYY-MM-DD` of a day number, without allocating.
pub fn date_bytes(days: i32) -> [u8; 10] {
    let (y, m, d) = Date::from_days(days).ymd();
    let y = y.clamp(0, 9999) as u32;
    let mut b = *b"0000-00-00";
    for (i, v) in [(0, y / 1000), (1, y / 100 % 10), (2, y / 10 % 10), (3, y % 10)] {
        b[i] = b'0' + v as u8;
    }
    b[5] = b'0' + (m / 10) as u8;
    b[6] = b'0' + (m % 10) as u8;
    b[8] = b'0' + (d / 10) as u8;
    b[9] = b'0' + (d % 10) as u8;
    b
}

/// Appends `s` as a JSON string (quoted, escaped as RFC 8259 requires).
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    // No short-circuit: a plain fold over the bytes vectorises.
    let needs_escape = b.iter().fold(false, |acc, &c| acc | (c < 0x20) | (c == b'"') | (c == b'\\'));
    out.push(b'"');
    if !needs_escape {
        out.extend_from_slice(b);
    } else {
        let mut start = 0;
        for (i, &c) in b.iter().enumerate() {
            let esc: &[u8] = match c {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                c if c < 0x20 => {
                    out.extend_from_slice(&b[start..i]);
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
                    start = i + 1;
                    continue;
                }
                _ => continue,
            };
            out.extend_from_slice(&b[start..i]);
            out.extend_from_slice(esc);
            start = i + 1;
        }
        out.extend_from_slice(&b[start..]);
    }
    out.push(b'"');
}

/// Appends the decimal digits of `v`.
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `"` + `v` zero-padded to `width` digits + `"`.
fn push_padded(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    for i in (0..width).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.push(b'"');
    out.extend_from_slice(&buf[..width]);
    out.push(b'"');
}

fn push_date(out: &mut Vec<u8>, days: i32) {
    out.push(b'"');
    out.extend_from_slice(&date_bytes(days));
    out.push(b'"');
}

/// Appends a PMH-ID as its 32-character JSON string.
pub fn push_pmh_id(out: &mut Vec<u8>, id: &PmhId) {
    out.push(b'"');
    out.extend_from_slice(&id.to_ascii());
    out.push(b'"');
}

/// A key (a literal without characters to escape) and its colon, after a comma unless first.
fn key(out: &mut Vec<u8>, first: &mut bool, k: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Appends one certificate of an answer.
pub fn push_certificate(out: &mut Vec<u8>, v: &CertificateView<'_>) {
    let c: &ArchivedCertificate = v.certificate;
    out.extend_from_slice(b"{\"municipalityCode\":");
    push_padded(out, u64::from(c.municipality_code.to_native()), 6);
    out.extend_from_slice(b",\"orgSpecificCertificateTypeId\":");
    push_str(out, &c.org_specific_certificate_type_id);
    if v.personal_disclosed {
        let p = &c.basic_five_info;
        out.extend_from_slice(b",\"basicFiveInfo\":{\"name\":");
        push_str(out, &p.name);
        out.extend_from_slice(b",\"nameKana\":");
        push_str(out, &p.name_kana);
        out.extend_from_slice(b",\"address\":");
        push_str(out, &p.address);
        if let Some(d) = p.date_of_birth.as_ref() {
            out.extend_from_slice(b",\"dateOfBirth\":");
            push_date(out, d.to_native());
        }
        out.extend_from_slice(b",\"sex\":");
        push_u64(out, u64::from(p.sex));
        out.push(b'}');
    }
    out.extend_from_slice(if c.is_not_disclosed { b",\"isNotDisclosed\":true" } else { b",\"isNotDisclosed\":false" });
    out.extend_from_slice(b",\"medicalSubsidyInsurerNumber\":");
    push_padded(out, u64::from(c.medical_subsidy_insurer_number.to_native()), 8);
    out.extend_from_slice(b",\"certificationName\":");
    push_str(out, &c.certification_name);
    out.extend_from_slice(b",\"medicalSubsidyRecipientNumber\":");
    push_str(out, &c.medical_subsidy_recipient_number);
    for (k, v) in [
        ("certificationSubKey", &c.certification_sub_key),
        ("segment", &c.segment),
        ("incomeSegment", &c.income_segment),
    ] {
        if let Some(x) = v.as_ref() {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
            push_str(out, x);
        }
    }
    out.extend_from_slice(b",\"additionalConditions\":");
    push_pairs(out, ("item", "code"), c.additional_conditions.iter().map(|a| (a.item.as_str(), a.code.as_str())));
    out.extend_from_slice(b",\"designatedMedicalInstitutions\":[");
    for (i, d) in c.designated_medical_institutions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"code\":");
        push_padded(out, d.code.to_native(), 10);
        if let Some(n) = d.name.as_ref() {
            out.extend_from_slice(b",\"name\":");
            push_str(out, n);
        }
        out.push(b'}');
    }
    out.extend_from_slice(if c.is_always_reimbursement {
        b"],\"isAlwaysReimbursement\":\"1\",\"copayment\":["
    } else {
        b"],\"isAlwaysReimbursement\":\"0\",\"copayment\":["
    });
    for (i, cp) in c.copayment.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_copay(out, cp);
    }
    out.extend_from_slice(b"],\"maxCopaymentAmount\":{");
    let m = &c.max_copayment_amount;
    let mut first = true;
    for (k, v) in [("monthly", &m.monthly), ("perVisit", &m.per_visit), ("inpatientMonthly", &m.inpatient_monthly)] {
        if let Some(v) = v.as_ref() {
            key(out, &mut first, k);
            push_u64(out, u64::from(v.to_native()));
        }
    }
    out.extend_from_slice(b"},\"validFrom\":");
    push_date(out, c.valid_from.to_native());
    out.extend_from_slice(b",\"validTo\":");
    push_date(out, c.valid_to.to_native());
    out.extend_from_slice(b",\"historyKey\":");
    push_str(out, &c.history_key);
    out.extend_from_slice(b",\"certificationDetail\":");
    push_pairs(out, ("name", "value"), c.certification_detail.iter().map(|f| (f.name.as_str(), f.value.as_str())));
    out.extend_from_slice(if v.is_designated_institution {
        b",\"isDesignatedInstitution\":true}"
    } else {
        b",\"isDesignatedInstitution\":false}"
    });
}

fn push_copay(out: &mut Vec<u8>, c: &ArchivedCopayment) {
    out.extend_from_slice(b"{\"category\":");
    push_str(out, &c.category);
    out.extend_from_slice(b",\"burdenDefinition\":");
    push_str(out, &c.burden_definition);
    push_optional_numbers(
        out,
        &[
            ("ratePerDay", c.rate_per_day.as_ref().map(|x| u64::from(x.to_native()))),
            ("ratePerMonth", c.rate_per_month.as_ref().map(|x| u64::from(x.to_native()))),
            ("ratePerVisit", c.rate_per_visit.as_ref().map(|x| u64::from(x.to_native()))),
            ("amountPerDay", c.amount_per_day.as_ref().map(|x| u64::from(x.to_native()))),
            ("amountPerMonth", c.amount_per_month.as_ref().map(|x| u64::from(x.to_native()))),
            ("amountPerVisit", c.amount_per_visit.as_ref().map(|x| u64::from(x.to_native()))),
        ],
    );
    out.push(b'}');
}

/// Appends a JSON array of two-key objects: `[{"k1":"a","k2":"b"},…]`.
fn push_pairs<'a>(out: &mut Vec<u8>, (k1, k2): (&str, &str), items: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push(b'[');
    for (i, (a, b)) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(k1.as_bytes());
        out.extend_from_slice(b"\":");
        push_str(out, a);
        out.extend_from_slice(b",\"");
        out.extend_from_slice(k2.as_bytes());
        out.extend_from_slice(b"\":");
        push_str(out, b);
        out.push(b'}');
    }
    out.push(b']');
}

/// Appends `,"key":N` for each present value.
fn push_optional_numbers(out: &mut Vec<u8>, fields: &[(&str, Option<u64>)]) {
    for (k, v) in fields {
        if let Some(x) = v {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
            push_u64(out, *x);
        }
    }
}

/// Appends the certificates of an answer as a JSON array.
pub fn push_certificates(out: &mut Vec<u8>, e: &Eligibility<'_>) {
    out.push(b'[');
    for (i, v) in e.certificates().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_certificate(out, &v);
    }
    out.push(b']');
}

/// The body of `GET /v1/subsidy/eligibility/{pmhId}`: `{"pmhId","date","certificates"}`.
pub fn eligibility(out: &mut Vec<u8>, pmh_id: &PmhId, e: &Eligibility<'_>) {
    out.extend_from_slice(b"{\"pmhId\":");
    push_pmh_id(out, pmh_id);
    out.extend_from_slice(b",\"date\":");
    push_date(out, e.date().days());
    out.extend_from_slice(b",\"certificates\":");
    push_certificates(out, e);
    out.push(b'}');
}

/// The body of `POST /v1/subsidy/eligibility:batch`: `{"results":[...]}` in request order.
pub fn batch(out: &mut Vec<u8>, ids: &[PmhId], answers: &[Lookup<'_>]) {
    out.extend_from_slice(b"{\"results\":[");
    for (i, (id, a)) in ids.iter().zip(answers).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"pmhId\":");
        push_pmh_id(out, id);
        match a {
            Lookup::ConsentRequired => out.extend_from_slice(b",\"status\":\"consent_required\"}"),
            Lookup::Answered(e) => {
                out.extend_from_slice(b",\"status\":\"ok\",\"certificates\":");
                push_certificates(out, e);
                out.push(b'}');
            }
        }
    }
    out.extend_from_slice(b"]}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> String {
        let mut out = Vec::new();
        push_str(&mut out, x);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_escape_exactly_what_json_needs_and_round_trip() {
        for x in [
            "",
            "佐藤 花子",
            "a\"b\\c",
            "line\nbreak\r\ttab",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "東京都千代田区九段南1-2-1 \"201号室\"",
            "\u{8}\u{c}",
            "𠮷野家",
        ] {
            let json = s(x);
            let back: String = serde_json::from_str(&json).unwrap();
            assert_eq!(back, x, "{json}");
            assert_eq!(json, serde_json::to_string(x).unwrap(), "same bytes as serde_json");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_renders_as_serde_json_does(x in ".*") {
            proptest::prop_assert_eq!(s(&x), serde_json::to_string(&x).unwrap());
        }
    }

    #[test]
    fn numbers_dates_and_padding() {
        for v in [0u64, 7, 10, 99_999, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
        for d in ["1970-01-01", "2026-11-22", "2000-02-29", "9999-12-31", "0001-01-01"] {
            let days = Date::parse(d).unwrap().days();
            assert_eq!(std::str::from_utf8(&date_bytes(days)).unwrap(), d);
        }
        let mut out = Vec::new();
        push_padded(&mut out, 110_113_719, 10);
        assert_eq!(out, b"\"0110113719\"");
    }
}
