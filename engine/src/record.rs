//! Record types: what one person's entry in the store holds, as rkyv archives.
//!
//! One RocksDB value is a [`Bucket`]: the [`Holder`]s whose PMH-IDs hash to that store key
//! — in practice exactly one, but a forced or astronomically unlucky xxh3 collision puts
//! two people in one bucket, and because every holder keeps its full PMH-ID, each read
//! picks its own and never the other's.
//!
//! A [`Certificate`] is one uploaded record: one certificate period (受給者証) of one
//! person from one municipality, with the field names of the published PMH registration
//! API (in `camelCase` at the API, `snake_case` here).
//!
//! ## Alignment
//! The workspace builds rkyv with the `unaligned` format: archived integers have alignment
//! 1, so a value is validated and read in place on the pinned RocksDB slice, which is
//! misaligned most of the time. The alternative, copying each value into an aligned buffer,
//! costs a memcpy and an allocation per lookup; unaligned loads cost nothing on x86-64 and
//! AArch64. See `docs/storage.md`.

use rkyv::{Archive, Deserialize, Serialize};

use crate::date::Date;

/// Sex in 基本5情報: `0` 不明 (also for programs that do not manage sex), `1` 男, `2` 女.
pub type Sex = u8;

/// The store's root value at one key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Bucket {
    /// The people whose store key is this key (one, barring collisions).
    pub holders: Vec<Holder>,
}

/// One person (受給者) and all their certificates, from every municipality.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Holder {
    /// The full PMH-ID (16 raw bytes), compared on every read.
    pub pmh_id: [u8; 16],
    /// The person's certificates, in no particular order.
    pub certificates: Vec<Certificate>,
}

/// 基本5情報: the personal block of a certificate, withheld for 不開示 (DV protection).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct BasicFiveInfo {
    /// 氏名, at most 100 characters.
    pub name: String,
    /// 氏名カナ, normalised to full-width katakana by the loader.
    pub name_kana: String,
    /// 住所.
    pub address: String,
    /// 生年月日, days since 1970-01-01 (see [`Date`]).
    pub date_of_birth: Option<i32>,
    /// 性別: 0 不明, 1 男, 2 女.
    pub sex: Sex,
}

/// 追加条件: one `item-code` pair.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AdditionalCondition {
    /// The condition item.
    pub item: String,
    /// Its code.
    pub code: String,
}

/// 指定医療機関情報: one designated institution.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DesignatedInstitution {
    /// 10-digit 医療機関コード.
    pub code: u64,
    /// 指定医療機関名, when the municipality sent it.
    pub name: Option<String>,
}

/// One copay rule (レセコン転記項目): 種別, 負担定義, 負担率 and 金額 per day / month / visit.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Copayment {
    /// 種別 — which kind of care the rule applies to (e.g. 外来, 入院, 調剤).
    pub category: String,
    /// 負担定義 — how the burden is defined (e.g. 定率, 定額, 定率上限).
    pub burden_definition: String,
    /// 負担率（日）in percent.
    pub rate_per_day: Option<u16>,
    /// 負担率（月）in percent.
    pub rate_per_month: Option<u16>,
    /// 負担率（回）in percent.
    pub rate_per_visit: Option<u16>,
    /// 金額（日）in yen.
    pub amount_per_day: Option<u32>,
    /// 金額（月）in yen.
    pub amount_per_month: Option<u32>,
    /// 金額（回）in yen.
    pub amount_per_visit: Option<u32>,
}

/// 自己負担上限額 in yen.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct MaxCopayment {
    /// Per month (the usual ceiling).
    pub monthly: Option<u32>,
    /// Per visit, where the program defines it.
    pub per_visit: Option<u32>,
    /// Per month for inpatient care, where the program defines a separate ceiling.
    pub inpatient_monthly: Option<u32>,
}

/// 受給者証券面項目: one item printed on the certificate's face.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FaceItem {
    /// Item name (疾病名, 指定医療機関名, …).
    pub name: String,
    /// Item value.
    pub value: String,
}

/// One certificate period (受給者証) of one person from one municipality.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Certificate {
    /// 自治体コード (6 digits, as a number).
    pub municipality_code: u32,
    /// 機関別受給者証種別ID.
    pub org_specific_certificate_type_id: String,
    /// 履歴キー.
    pub history_key: String,
    /// 基本5情報.
    pub basic_five_info: BasicFiveInfo,
    /// 不開示フラグ.
    pub is_not_disclosed: bool,
    /// 公費負担者番号 (8 digits, as a number).
    pub medical_subsidy_insurer_number: u32,
    /// 受給者証名.
    pub certification_name: String,
    /// 公費受給者番号.
    pub medical_subsidy_recipient_number: String,
    /// Optional sub-key of the certificate.
    pub certification_sub_key: Option<String>,
    /// 区分.
    pub segment: Option<String>,
    /// 所得区分.
    pub income_segment: Option<String>,
    /// 追加条件.
    pub additional_conditions: Vec<AdditionalCondition>,
    /// 指定医療機関情報.
    pub designated_medical_institutions: Vec<DesignatedInstitution>,
    /// 常に償還払い.
    pub is_always_reimbursement: bool,
    /// Copay rules.
    pub copayment: Vec<Copayment>,
    /// 自己負担上限額.
    pub max_copayment_amount: MaxCopayment,
    /// 有効期間 始期 (days since 1970-01-01).
    pub valid_from: i32,
    /// 有効期間 終期 (days since 1970-01-01).
    pub valid_to: i32,
    /// 受給者証券面項目.
    pub certification_detail: Vec<FaceItem>,
}

/// A certificate's identity within the hub: municipality + 機関別受給者証種別ID + 履歴キー.
/// A differential row with the same identity replaces the earlier certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertificateId {
    /// 自治体コード.
    pub municipality_code: u32,
    /// 機関別受給者証種別ID.
    pub org_specific_certificate_type_id: String,
    /// 履歴キー.
    pub history_key: String,
}

/// Appends the source-index key of a certificate identity to `out` (see
/// [`CertificateId::index_key`]), for bulk loaders that build keys without allocating.
pub fn write_index_key(municipality_code: u32, type_id: &str, history_key: &str, out: &mut Vec<u8>) {
    // Six zero-padded digits: municipality codes are below 10^6 (validated at parse).
    let mut digits = [b'0'; 6];
    let mut n = municipality_code;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    if n == 0 {
        out.extend_from_slice(&digits);
    } else {
        out.extend_from_slice(format!("{municipality_code:06}").as_bytes());
    }
    out.push(0);
    out.extend_from_slice(type_id.as_bytes());
    out.push(0);
    out.extend_from_slice(history_key.as_bytes());
}

impl CertificateId {
    /// The source-index key: `municipality (6 ASCII digits) 0x00 typeId 0x00 historyKey`.
    /// Prefixing the municipality lets a full municipal upload find exactly its own
    /// certificates with one prefix scan.
    pub fn index_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(8 + self.org_specific_certificate_type_id.len() + self.history_key.len());
        write_index_key(self.municipality_code, &self.org_specific_certificate_type_id, &self.history_key, &mut k);
        k
    }

    /// Whether `c` is the certificate with this identity.
    pub fn is_of(&self, c: &Certificate) -> bool {
        c.municipality_code == self.municipality_code
            && c.org_specific_certificate_type_id == self.org_specific_certificate_type_id
            && c.history_key == self.history_key
    }

    /// Parses an index key back (for verify and admin output).
    pub fn from_index_key(k: &[u8]) -> Option<CertificateId> {
        let mut parts = k.split(|&b| b == 0);
        let muni = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let type_id = String::from_utf8(parts.next()?.to_vec()).ok()?;
        let history = String::from_utf8(parts.next()?.to_vec()).ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(CertificateId { municipality_code: muni, org_specific_certificate_type_id: type_id, history_key: history })
    }

    /// The key prefix of every certificate of one municipality.
    pub fn municipality_prefix(municipality_code: u32) -> Vec<u8> {
        let mut k = format!("{municipality_code:06}").into_bytes();
        k.push(0);
        k
    }
}

/// Why a certificate cannot be stored (invariants the engine enforces whatever the
/// loader checked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// `validFrom` after `validTo`.
    #[error("validFrom must not be after validTo")]
    PeriodReversed,
    /// An identity part is empty or contains a NUL byte (the index key separator).
    #[error("orgSpecificCertificateTypeId and historyKey must be non-empty and contain no NUL")]
    BadIdentity,
    /// Municipality code out of range.
    #[error("municipalityCode must have 6 digits")]
    BadMunicipality,
}

impl Certificate {
    /// A valid example certificate: municipality 131016, 子ども医療費受給者証 (insurer
    /// 88131016), valid 2026-04-01..2027-03-31, designated institution 1311234569, with the
    /// given 履歴キー. For tests, demos and documentation.
    pub fn example(history_key: &str) -> Certificate {
        let day = |s: &str| Date::parse(s).map(|d| d.days()).unwrap_or(0);
        Certificate {
            municipality_code: 131016,
            org_specific_certificate_type_id: "KODOMO".into(),
            history_key: history_key.into(),
            basic_five_info: BasicFiveInfo {
                name: "山田 花子".into(),
                name_kana: "ヤマダ ハナコ".into(),
                address: "東京都千代田区千代田1-1".into(),
                date_of_birth: Some(day("2015-05-05")),
                sex: 2,
            },
            is_not_disclosed: false,
            medical_subsidy_insurer_number: 88131016,
            certification_name: "子ども医療費受給者証".into(),
            medical_subsidy_recipient_number: "00012345".into(),
            certification_sub_key: None,
            segment: None,
            income_segment: Some("一般".into()),
            additional_conditions: vec![],
            designated_medical_institutions: vec![DesignatedInstitution {
                code: 1311234569,
                name: Some("さくら医院".into()),
            }],
            is_always_reimbursement: false,
            copayment: vec![Copayment {
                category: "外来".into(),
                burden_definition: "定額".into(),
                amount_per_visit: Some(200),
                ..Default::default()
            }],
            max_copayment_amount: MaxCopayment { monthly: Some(1000), ..Default::default() },
            valid_from: day("2026-04-01"),
            valid_to: day("2027-03-31"),
            certification_detail: vec![FaceItem { name: "疾病名".into(), value: "—".into() }],
        }
    }

    /// This certificate's identity.
    pub fn id(&self) -> CertificateId {
        CertificateId {
            municipality_code: self.municipality_code,
            org_specific_certificate_type_id: self.org_specific_certificate_type_id.clone(),
            history_key: self.history_key.clone(),
        }
    }

    /// Whether `date` lies in the validity period (both ends inclusive).
    pub fn is_valid_on(&self, date: Date) -> bool {
        self.valid_from <= date.days() && date.days() <= self.valid_to
    }

    /// Checks the invariants every stored certificate satisfies.
    pub fn check(&self) -> Result<(), CertificateError> {
        if self.valid_from > self.valid_to {
            return Err(CertificateError::PeriodReversed);
        }
        let bad = |s: &str| s.is_empty() || s.as_bytes().contains(&0);
        if bad(&self.org_specific_certificate_type_id) || bad(&self.history_key) {
            return Err(CertificateError::BadIdentity);
        }
        if self.municipality_code > 999_999 {
            return Err(CertificateError::BadMunicipality);
        }
        Ok(())
    }
}

impl ArchivedCertificate {
    /// Whether `date` lies in the validity period (both ends inclusive).
    #[inline]
    pub fn is_valid_on(&self, date: Date) -> bool {
        self.valid_from.to_native() <= date.days() && date.days() <= self.valid_to.to_native()
    }

    /// Whether `institution` (10-digit code) is one of this certificate's designated
    /// institutions (指定医療機関).
    #[inline]
    pub fn is_designated(&self, institution: u64) -> bool {
        self.designated_medical_institutions.iter().any(|d| d.code.to_native() == institution)
    }

    /// The identity of this archived certificate.
    pub fn id(&self) -> CertificateId {
        CertificateId {
            municipality_code: self.municipality_code.to_native(),
            org_specific_certificate_type_id: self.org_specific_certificate_type_id.to_string(),
            history_key: self.history_key.to_string(),
        }
    }
}

impl ArchivedBucket {
    /// The holder with this exact PMH-ID, if any.
    #[inline]
    pub fn holder(&self, pmh_id: &[u8; 16]) -> Option<&ArchivedHolder> {
        self.holders.iter().find(|h| &h.pmh_id == pmh_id)
    }
}

/// Bytes of the checksum trailer after each stored archive.
pub const VALUE_TRAILER: usize = 8;

/// Why stored bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Shorter than the checksum trailer.
    #[error("value shorter than its checksum")]
    Short,
    /// The xxh3-64 trailer does not match the archive bytes.
    #[error("checksum mismatch")]
    Checksum,
    /// The archive does not validate (bytecheck).
    #[error("archive does not validate: {0}")]
    Invalid(String),
}

/// Serializes a bucket to its stored bytes: the rkyv archive followed by the xxh3-64 of
/// the archive (little-endian).
pub fn encode_bucket(b: &Bucket) -> Result<Vec<u8>, rkyv::rancor::Error> {
    let mut v = Vec::new();
    encode_bucket_into(b, &mut v)?;
    Ok(v)
}

/// [`encode_bucket`] into a reused buffer: `out` is cleared and then holds the stored bytes.
pub fn encode_bucket_into(b: &Bucket, out: &mut Vec<u8>) -> Result<(), rkyv::rancor::Error> {
    out.clear();
    append_bucket(b, out).map(|_| ())
}

/// [`encode_bucket`] appended to `out`; returns where the stored bytes are in it. They are
/// exactly what [`encode_bucket`] makes: the workspace's rkyv format is unaligned, so a
/// plain `Vec` is a valid writer and no padding depends on where the archive starts.
pub fn append_bucket(b: &Bucket, out: &mut Vec<u8>) -> Result<std::ops::Range<usize>, rkyv::rancor::Error> {
    let start = out.len();
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(b, &mut *out)?;
    let digest = xxhash_rust::xxh3::xxh3_64(&out[start..]);
    out.extend_from_slice(&digest.to_le_bytes());
    Ok(start..out.len())
}

/// The archive part of stored bytes, after checking the checksum trailer.
#[inline]
fn checked_archive(bytes: &[u8]) -> Result<&[u8], ValueError> {
    let split = bytes.len().checked_sub(VALUE_TRAILER).ok_or(ValueError::Short)?;
    let (archive, trailer) = bytes.split_at(split);
    let want = u64::from_le_bytes(trailer.try_into().map_err(|_| ValueError::Short)?);
    if xxhash_rust::xxh3::xxh3_64(archive) != want {
        return Err(ValueError::Checksum);
    }
    Ok(archive)
}

/// Fully validates stored bytes — checksum and rkyv bytecheck of every field — and gives
/// zero-copy access. Works on any alignment (see the module doc). Used by `verify`.
pub fn access_bucket(bytes: &[u8]) -> Result<&ArchivedBucket, ValueError> {
    let archive = checked_archive(bytes)?;
    rkyv::access::<ArchivedBucket, rkyv::rancor::Error>(archive).map_err(|e| ValueError::Invalid(e.to_string()))
}

/// The hot-path access: checks the checksum trailer (one xxh3 pass, ~30 ns) and reads the
/// archive without bytecheck (which costs ~0.8 µs on a typical holder: every string is
/// UTF-8-checked, every pointer range-checked).
///
/// # Safety
/// `bytes` must have been produced by [`encode_bucket`] (the only writer of the holders
/// column family). A matching checksum then proves the archive is byte-for-byte what rkyv
/// serialized, which is always a valid archive; accidental corruption (disk, memory, a
/// truncated write) fails the checksum with probability 1 − 2⁻⁶⁴. Bytes crafted to match
/// the checksum by someone writing the database directly are outside this guarantee;
/// `pmh-admin verify` validates everything fully.
#[inline]
pub unsafe fn access_bucket_trusted(bytes: &[u8]) -> Result<&ArchivedBucket, ValueError> {
    let archive = checked_archive(bytes)?;
    // SAFETY: per this function's contract, see above.
    Ok(unsafe { rkyv::access_unchecked::<ArchivedBucket>(archive) })
}

/// Copies a holders value out into owned records after checking only its checksum (see
/// [`access_bucket_trusted`] for why that suffices for values the engine wrote). Used by
/// change sets, which decode every holder they touch: a full bytecheck there cost more
/// than the rest of the decoding.
pub(crate) fn decode_bucket_trusted(bytes: &[u8]) -> Result<Bucket, ValueError> {
    // SAFETY: only called on values read from the holders column family, which only
    // `encode_bucket` writes.
    let a = unsafe { access_bucket_trusted(bytes) }?;
    rkyv::deserialize::<Bucket, rkyv::rancor::Error>(a).map_err(|e| ValueError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> Certificate {
        Certificate::example("H1")
    }

    #[test]
    fn round_trips_and_reads_at_any_alignment() {
        let b = Bucket { holders: vec![Holder { pmh_id: [7; 16], certificates: vec![cert()] }] };
        let bytes = encode_bucket(&b).unwrap();
        // Read at every offset 0..8: the unaligned format must not care.
        for off in 0..8 {
            let mut buf = vec![0u8; off];
            buf.extend_from_slice(&bytes);
            let a = access_bucket(&buf[off..]).unwrap();
            assert_eq!(a.holders.len(), 1);
            assert!(a.holder(&[7; 16]).is_some());
            assert!(a.holder(&[8; 16]).is_none());
        }
        assert_eq!(decode_bucket_trusted(&bytes).unwrap(), b);
    }

    #[test]
    fn appended_buckets_are_the_bytes_encode_bucket_makes() {
        let one = Bucket { holders: vec![Holder { pmh_id: [7; 16], certificates: vec![cert()] }] };
        let two = Bucket {
            holders: vec![Holder { pmh_id: [9; 16], certificates: vec![cert(), Certificate::example("H2")] }],
        };
        for prefix in 0..5 {
            let mut out = vec![0xAA; prefix];
            let r1 = append_bucket(&one, &mut out).unwrap();
            let r2 = append_bucket(&two, &mut out).unwrap();
            assert_eq!((r1.start, r1.end, r2.start, r2.end), (prefix, r2.start, r1.end, out.len()));
            assert_eq!(out[r1.clone()], encode_bucket(&one).unwrap()[..]);
            assert_eq!(out[r2.clone()], encode_bucket(&two).unwrap()[..]);
            assert_eq!(access_bucket(&out[r2.clone()]).unwrap().holders.len(), 1);
            assert_eq!(decode_bucket_trusted(&out[r2]).unwrap(), two);
        }
    }

    #[test]
    fn garbage_is_rejected_not_misread() {
        let b = Bucket { holders: vec![Holder { pmh_id: [7; 16], certificates: vec![cert()] }] };
        let good = encode_bucket(&b).unwrap();
        // SAFETY: produced by encode_bucket.
        assert!(unsafe { access_bucket_trusted(&good) }.is_ok());
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x20;
            assert_eq!(access_bucket(&bad).err(), Some(ValueError::Checksum), "byte {i}");
            // SAFETY: the checksum check runs before any unchecked access.
            assert_eq!(unsafe { access_bucket_trusted(&bad) }.err(), Some(ValueError::Checksum));
        }
        assert_eq!(access_bucket(&[1, 2, 3]).err(), Some(ValueError::Short));
        // A well-formed checksum over a broken archive still fails full validation.
        let mut broken = vec![0xffu8; 64];
        broken.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&[0xff; 64]).to_le_bytes());
        assert!(matches!(access_bucket(&broken), Err(ValueError::Invalid(_))));
    }

    #[test]
    fn index_key_round_trips() {
        let id = cert().id();
        assert_eq!(CertificateId::from_index_key(&id.index_key()), Some(id.clone()));
        assert!(id.index_key().starts_with(&CertificateId::municipality_prefix(131016)));
    }

    #[test]
    fn index_key_pads_the_municipality_code() {
        let mut out = b"x".to_vec();
        write_index_key(1016, "t", "h", &mut out);
        assert_eq!(out, b"x001016\0t\0h");
        let id = CertificateId {
            municipality_code: 1016,
            org_specific_certificate_type_id: "t".into(),
            history_key: "h".into(),
        };
        assert_eq!(id.index_key(), &out[1..]);
    }

    #[test]
    fn encoding_into_a_used_buffer_gives_the_same_bytes() {
        let b = Bucket {
            holders: vec![Holder { pmh_id: [7; 16], certificates: vec![cert(), Certificate::example("H2")] }],
        };
        let fresh = encode_bucket(&b).unwrap();
        // A reused buffer is cleared first; its old contents and capacity change nothing.
        let mut reused = vec![0xAB; 1001];
        encode_bucket_into(&b, &mut reused).unwrap();
        assert_eq!(reused, fresh);
        // A certificate appended after other bytes is the standalone archive, at any offset.
        let (alone, digest) = crate::change::encode_certificate(&cert()).unwrap();
        for prefix in 0..9 {
            let mut arena = vec![1u8; prefix];
            assert_eq!(crate::change::encode_certificate_into(&cert(), &mut arena).unwrap(), digest);
            assert_eq!(&arena[prefix..], &alone[..]);
            assert_eq!(crate::change::decode_certificate(&arena[prefix..], digest).unwrap(), cert());
        }
    }

    #[test]
    fn invariants() {
        let mut c = cert();
        assert_eq!(c.check(), Ok(()));
        c.valid_from = c.valid_to + 1;
        assert_eq!(c.check(), Err(CertificateError::PeriodReversed));
        let mut c = cert();
        c.history_key = "a\0b".into();
        assert_eq!(c.check(), Err(CertificateError::BadIdentity));
    }
}
