//! JSON rendering of answers, straight from the archived (zero-copy) certificates into the
//! response buffer: no intermediate owned certificate, no per-field allocation. Field
//! names and value forms are those of the upload API (`docs/file-formats.md`), so a
//! receipt computer reads back exactly what the municipality sent: codes as zero-padded
//! strings, dates `YYYY-MM-DD`, amounts and rates as numbers, `isAlwaysReimbursement` as
//! `"0"`/`"1"`. Absent optional values are left out. `basicFiveInfo` is left out when it is
//! withheld (不開示, design §5.3). There is no `myNumber`: the store does not have it.

use pmh_engine::lookup::CertificateView;
use pmh_engine::record::{ArchivedCertificate, ArchivedCopayment};
use pmh_engine::{Date, Eligibility, PmhId};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

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

fn ascii(b: &[u8]) -> &str {
    // Only ever called on digits and '-' produced here.
    std::str::from_utf8(b).unwrap_or("")
}

/// Zero-padded decimal of `v` in `width` digits.
fn padded(v: u64, width: usize, buf: &mut [u8; 20]) -> &str {
    let mut n = v;
    for i in (0..width).rev() {
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    ascii(&buf[..width])
}

struct Date10(i32);

impl Serialize for Date10 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(ascii(&date_bytes(self.0)))
    }
}

struct Padded(u64, usize);

impl Serialize for Padded {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(padded(self.0, self.1, &mut [0; 20]))
    }
}

/// One certificate of an answer.
pub struct CertJson<'a>(pub &'a CertificateView<'a>);

impl Serialize for CertJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        let c: &ArchivedCertificate = v.certificate;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("municipalityCode", &Padded(u64::from(c.municipality_code.to_native()), 6))?;
        m.serialize_entry("orgSpecificCertificateTypeId", c.org_specific_certificate_type_id.as_str())?;
        if v.personal_disclosed {
            m.serialize_entry("basicFiveInfo", &Personal(c))?;
        }
        m.serialize_entry("isNotDisclosed", &c.is_not_disclosed)?;
        m.serialize_entry(
            "medicalSubsidyInsurerNumber",
            &Padded(u64::from(c.medical_subsidy_insurer_number.to_native()), 8),
        )?;
        m.serialize_entry("certificationName", c.certification_name.as_str())?;
        m.serialize_entry("medicalSubsidyRecipientNumber", c.medical_subsidy_recipient_number.as_str())?;
        if let Some(x) = c.certification_sub_key.as_ref() {
            m.serialize_entry("certificationSubKey", x.as_str())?;
        }
        if let Some(x) = c.segment.as_ref() {
            m.serialize_entry("segment", x.as_str())?;
        }
        if let Some(x) = c.income_segment.as_ref() {
            m.serialize_entry("incomeSegment", x.as_str())?;
        }
        m.serialize_entry("additionalConditions", &Conditions(c))?;
        m.serialize_entry("designatedMedicalInstitutions", &Institutions(c))?;
        m.serialize_entry("isAlwaysReimbursement", if c.is_always_reimbursement { "1" } else { "0" })?;
        m.serialize_entry("copayment", &Copays(c))?;
        m.serialize_entry("maxCopaymentAmount", &MaxCopay(c))?;
        m.serialize_entry("validFrom", &Date10(c.valid_from.to_native()))?;
        m.serialize_entry("validTo", &Date10(c.valid_to.to_native()))?;
        m.serialize_entry("historyKey", c.history_key.as_str())?;
        m.serialize_entry("certificationDetail", &Faces(c))?;
        m.serialize_entry("isDesignatedInstitution", &v.is_designated_institution)?;
        m.end()
    }
}

struct Personal<'a>(&'a ArchivedCertificate);

impl Serialize for Personal<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = &self.0.basic_five_info;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", p.name.as_str())?;
        m.serialize_entry("nameKana", p.name_kana.as_str())?;
        m.serialize_entry("address", p.address.as_str())?;
        if let Some(d) = p.date_of_birth.as_ref() {
            m.serialize_entry("dateOfBirth", &Date10(d.to_native()))?;
        }
        m.serialize_entry("sex", &p.sex)?;
        m.end()
    }
}

struct Conditions<'a>(&'a ArchivedCertificate);

impl Serialize for Conditions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let list = &self.0.additional_conditions;
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for a in list.iter() {
            seq.serialize_element(&Pair("item", a.item.as_str(), "code", a.code.as_str()))?;
        }
        seq.end()
    }
}

struct Faces<'a>(&'a ArchivedCertificate);

impl Serialize for Faces<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let list = &self.0.certification_detail;
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for f in list.iter() {
            seq.serialize_element(&Pair("name", f.name.as_str(), "value", f.value.as_str()))?;
        }
        seq.end()
    }
}

struct Pair<'a>(&'static str, &'a str, &'static str, &'a str);

impl Serialize for Pair<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry(self.0, self.1)?;
        m.serialize_entry(self.2, self.3)?;
        m.end()
    }
}

struct Institutions<'a>(&'a ArchivedCertificate);

impl Serialize for Institutions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let list = &self.0.designated_medical_institutions;
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for d in list.iter() {
            seq.serialize_element(&Institution(d.code.to_native(), d.name.as_ref().map(|n| n.as_str())))?;
        }
        seq.end()
    }
}

struct Institution<'a>(u64, Option<&'a str>);

impl Serialize for Institution<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("code", &Padded(self.0, 10))?;
        if let Some(n) = self.1 {
            m.serialize_entry("name", n)?;
        }
        m.end()
    }
}

struct Copays<'a>(&'a ArchivedCertificate);

impl Serialize for Copays<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let list = &self.0.copayment;
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for c in list.iter() {
            seq.serialize_element(&Copay(c))?;
        }
        seq.end()
    }
}

struct Copay<'a>(&'a ArchivedCopayment);

impl Serialize for Copay<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("category", c.category.as_str())?;
        m.serialize_entry("burdenDefinition", c.burden_definition.as_str())?;
        for (k, v) in
            [("ratePerDay", &c.rate_per_day), ("ratePerMonth", &c.rate_per_month), ("ratePerVisit", &c.rate_per_visit)]
        {
            if let Some(x) = v.as_ref() {
                m.serialize_entry(k, &x.to_native())?;
            }
        }
        for (k, v) in [
            ("amountPerDay", &c.amount_per_day),
            ("amountPerMonth", &c.amount_per_month),
            ("amountPerVisit", &c.amount_per_visit),
        ] {
            if let Some(x) = v.as_ref() {
                m.serialize_entry(k, &x.to_native())?;
            }
        }
        m.end()
    }
}

struct MaxCopay<'a>(&'a ArchivedCertificate);

impl Serialize for MaxCopay<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = &self.0.max_copayment_amount;
        let mut m = s.serialize_map(None)?;
        for (k, v) in [("monthly", &x.monthly), ("perVisit", &x.per_visit), ("inpatientMonthly", &x.inpatient_monthly)]
        {
            if let Some(v) = v.as_ref() {
                m.serialize_entry(k, &v.to_native())?;
            }
        }
        m.end()
    }
}

/// The certificates of an answer, as a JSON array.
pub struct Certificates<'a>(pub &'a Eligibility<'a>);

impl Serialize for Certificates<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0.certificates() {
            seq.serialize_element(&CertJson(&v))?;
        }
        seq.end()
    }
}

/// A PMH-ID as its 32-character string, without allocating.
pub struct PmhIdJson<'a>(pub &'a PmhId);

impl Serialize for PmhIdJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(ascii(&self.0.to_ascii()))
    }
}

/// The body of `GET /v1/subsidy/eligibility/{pmhId}`.
pub struct EligibilityJson<'a> {
    /// Whom.
    pub pmh_id: &'a PmhId,
    /// The answer.
    pub eligibility: &'a Eligibility<'a>,
}

impl Serialize for EligibilityJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("pmhId", &PmhIdJson(self.pmh_id))?;
        m.serialize_entry("date", &Date10(self.eligibility.date().days()))?;
        m.serialize_entry("certificates", &Certificates(self.eligibility))?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_padding() {
        for s in ["1970-01-01", "2026-11-22", "2000-02-29", "9999-12-31", "0001-01-01"] {
            let d = Date::parse(s).unwrap();
            assert_eq!(ascii(&date_bytes(d.days())), s);
        }
        assert_eq!(padded(88131016, 8, &mut [0; 20]), "88131016");
        assert_eq!(padded(131016, 6, &mut [0; 20]), "131016");
        assert_eq!(padded(110113719, 10, &mut [0; 20]), "0110113719");
    }
}
