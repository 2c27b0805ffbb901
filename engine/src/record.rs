//! Record types: what one person's entry in the store holds, as rkyv archives.
//!
//! One RocksDB value is a bucket: the holders whose PMH-IDs hash to that store key — in
//! practice exactly one, but a forced or astronomically unlucky xxh3 collision puts two
//! people in one bucket, and because every holder keeps its full PMH-ID, each read picks
//! its own and never the other's.
//!
//! ## The holders value
//! ```text
//! value    := holder+ checksum
//! holder   := pmh_id (16) | count (u32 LE, ≥ 1) | certificate{count}
//! cert     := len (u32 LE) | archive (len bytes: one Certificate, as encode_certificate makes)
//! checksum := xxh3-64 (LE) of every byte before it
//! ```
//! Each certificate is its own rkyv archive, framed by plain lengths, so a change set or a
//! full load builds a value by copying certificate archives as bytes: an unchanged
//! certificate is never decoded and re-encoded, and a full load's workers serialise each
//! certificate once (its archive is also what its source-index digest is taken over).
//! [`Bucket`] and [`Holder`] are the owned forms, for building values in tests and small
//! snapshots; [`StoredBucket`] reads a value in place.
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

/// The owned form of one holders value (see the module doc for the stored form).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bucket {
    /// The people whose store key is this key (one, barring collisions).
    pub holders: Vec<Holder>,
}

/// One person (受給者) and all their certificates, from every municipality.
#[derive(Debug, Clone, PartialEq)]
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

/// A certificate's identity, borrowed: municipality, type id, history key. What makes two
/// certificates the same one, however each is held (archived, or as a [`CertificateId`]).
pub type IdentityRef<'a> = (u32, &'a str, &'a str);

impl ArchivedCertificate {
    /// This certificate's identity.
    #[inline]
    pub fn identity(&self) -> IdentityRef<'_> {
        (self.municipality_code.to_native(), self.org_specific_certificate_type_id.as_str(), self.history_key.as_str())
    }

    /// Whether two archived certificates have the same identity.
    #[inline]
    pub fn same_identity(&self, other: &ArchivedCertificate) -> bool {
        self.identity() == other.identity()
    }
}

impl CertificateId {
    /// This identity, borrowed.
    #[inline]
    pub fn identity(&self) -> IdentityRef<'_> {
        (self.municipality_code, self.org_specific_certificate_type_id.as_str(), self.history_key.as_str())
    }

    /// Whether `c` is the archived certificate with this identity.
    pub fn is_of_archived(&self, c: &ArchivedCertificate) -> bool {
        c.identity() == self.identity()
    }
}

/// Bytes of the checksum trailer after each stored value.
pub const VALUE_TRAILER: usize = 8;

/// Bytes of a holder's header: PMH-ID and certificate count.
const HOLDER_HEAD: usize = 16 + 4;

/// Why stored bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Shorter than the checksum trailer.
    #[error("value shorter than its checksum")]
    Short,
    /// The xxh3-64 trailer does not match the bytes.
    #[error("checksum mismatch")]
    Checksum,
    /// The framing of holders and certificates does not add up.
    #[error("malformed holders value: {0}")]
    Framing(&'static str),
    /// A certificate archive does not validate (bytecheck), or its digest does not match.
    #[error("archive does not validate: {0}")]
    Invalid(String),
}

/// Builds holders values from certificate archives, appending to a caller's buffer (one
/// buffer can hold many values one after another). Holders are started with
/// [`BucketEncoder::holder`]; a holder given no certificate is left out, and a value with
/// no holder at all is no value ([`BucketEncoder::finish`] returns `None`).
pub struct BucketEncoder {
    start: usize,
    /// The holder started but not yet written (written with its first certificate).
    pending: Option<[u8; 16]>,
    /// Where the current holder's count is, and the count so far.
    count_at: Option<(usize, u32)>,
}

impl BucketEncoder {
    /// A value that starts at the current end of `out`.
    pub fn begin(out: &[u8]) -> BucketEncoder {
        BucketEncoder { start: out.len(), pending: None, count_at: None }
    }

    /// Starts the holder `pmh_id`; the certificates that follow are theirs. A bucket's
    /// holders must have distinct PMH-IDs.
    pub fn holder(&mut self, pmh_id: &[u8; 16]) {
        self.pending = Some(*pmh_id);
    }

    /// Appends a certificate archive made by [`crate::change::encode_certificate`] whose
    /// digest (as kept in the source index and in a loader's sort runs) is `digest`. The
    /// digest is checked, so bytes that are not such an archive — a corrupted scratch file —
    /// are an error here and never reach a reader.
    pub fn certificate(&mut self, out: &mut Vec<u8>, archive: &[u8], digest: u64) -> Result<(), ValueError> {
        if xxhash_rust::xxh3::xxh3_64(archive) != digest {
            return Err(ValueError::Invalid("certificate archive does not match its digest".into()));
        }
        self.certificate_trusted(out, archive)
    }

    /// [`BucketEncoder::certificate`] for an archive the engine made or read from a checked
    /// holders value.
    pub(crate) fn certificate_trusted(&mut self, out: &mut Vec<u8>, archive: &[u8]) -> Result<(), ValueError> {
        let len = u32::try_from(archive.len()).map_err(|_| ValueError::Framing("certificate over 4 GiB"))?;
        if archive.len() < size_of::<ArchivedCertificate>() {
            return Err(ValueError::Framing("certificate archive shorter than its root"));
        }
        if let Some(pmh) = self.pending.take() {
            out.extend_from_slice(&pmh);
            self.count_at = Some((out.len(), 0));
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        let Some((at, count)) = self.count_at.as_mut() else {
            return Err(ValueError::Framing("certificate before any holder"));
        };
        *count = count.checked_add(1).ok_or(ValueError::Framing("too many certificates"))?;
        out[*at..*at + 4].copy_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(archive);
        Ok(())
    }

    /// Ends the value: appends the checksum and returns where the value is in `out`, or
    /// `None` (and `out` as it was) when no holder has a certificate.
    pub fn finish(self, out: &mut Vec<u8>) -> Option<std::ops::Range<usize>> {
        if out.len() == self.start {
            return None;
        }
        let digest = xxhash_rust::xxh3::xxh3_64(&out[self.start..]);
        out.extend_from_slice(&digest.to_le_bytes());
        Some(self.start..out.len())
    }
}

/// Serializes an owned bucket to its stored bytes (each certificate archived, then framed;
/// holders without certificates are left out).
pub fn encode_bucket(b: &Bucket) -> Result<Vec<u8>, ValueError> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let mut enc = BucketEncoder::begin(&out);
    for h in &b.holders {
        enc.holder(&h.pmh_id);
        for c in &h.certificates {
            scratch.clear();
            crate::change::encode_certificate_into(c, &mut scratch)
                .map_err(|e| ValueError::Invalid(format!("serialize certificate: {e}")))?;
            enc.certificate_trusted(&mut out, &scratch)?;
        }
    }
    enc.finish(&mut out);
    Ok(out)
}

/// The bytes before the checksum trailer, after checking it.
#[inline]
fn checked_body(bytes: &[u8]) -> Result<&[u8], ValueError> {
    let split = bytes.len().checked_sub(VALUE_TRAILER).ok_or(ValueError::Short)?;
    let (body, trailer) = bytes.split_at(split);
    let want = u64::from_le_bytes(trailer.try_into().map_err(|_| ValueError::Short)?);
    if xxhash_rust::xxh3::xxh3_64(body) != want {
        return Err(ValueError::Checksum);
    }
    Ok(body)
}

#[inline]
fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// Checks that `body` is a sequence of whole holders, each with ≥ 1 certificate whose
/// archive is at least as long as its root; calls `cert` on every archive.
fn check_framing(body: &[u8], mut cert: impl FnMut(&[u8]) -> Result<(), ValueError>) -> Result<(), ValueError> {
    let mut at = 0;
    while at < body.len() {
        let count = read_u32(body, at + 16).ok_or(ValueError::Framing("truncated holder"))?;
        if count == 0 {
            return Err(ValueError::Framing("holder without certificates"));
        }
        at += HOLDER_HEAD;
        for _ in 0..count {
            let len = read_u32(body, at).ok_or(ValueError::Framing("truncated certificate length"))? as usize;
            let archive = body
                .get(at + 4..)
                .and_then(|rest| rest.get(..len))
                .ok_or(ValueError::Framing("certificate beyond the value"))?;
            if len < size_of::<ArchivedCertificate>() {
                return Err(ValueError::Framing("certificate archive shorter than its root"));
            }
            cert(archive)?;
            at += 4 + len;
        }
    }
    Ok(())
}

/// A holders value read in place: its checksum checked and its framing walked once, so the
/// holders and certificates are then read without further checks.
#[derive(Clone, Copy)]
pub struct StoredBucket<'v> {
    body: &'v [u8],
}

impl<'v> StoredBucket<'v> {
    /// The holders, in stored order.
    pub fn holders(&self) -> impl Iterator<Item = StoredHolder<'v>> + use<'v> {
        let body = self.body;
        let mut at = 0;
        std::iter::from_fn(move || {
            let h = StoredHolder::at(body, at)?;
            at = h.end;
            Some(h)
        })
    }

    /// The holder with this exact PMH-ID, if any.
    #[inline]
    pub fn holder(&self, pmh_id: &[u8; 16]) -> Option<StoredHolder<'v>> {
        self.holders().find(|h| h.pmh_id() == pmh_id)
    }

    /// A value already accepted by [`access_bucket`] or [`access_bucket_trusted`], read
    /// again without its checks (an answer re-reading the value it holds pinned).
    ///
    /// # Safety
    /// `bytes` must be exactly the bytes one of those functions accepted.
    #[inline]
    pub unsafe fn assume_checked(bytes: &'v [u8]) -> StoredBucket<'v> {
        StoredBucket { body: &bytes[..bytes.len().saturating_sub(VALUE_TRAILER)] }
    }

    /// The holder whose header is at `offset` ([`StoredHolder::offset`]) of this value.
    pub fn holder_at(&self, offset: usize) -> Option<StoredHolder<'v>> {
        StoredHolder::at(self.body, offset)
    }
}

/// One holder of a [`StoredBucket`].
#[derive(Clone, Copy)]
pub struct StoredHolder<'v> {
    body: &'v [u8],
    offset: usize,
    count: u32,
    end: usize,
}

impl<'v> StoredHolder<'v> {
    /// The holder at `at` of a body whose framing was checked. Walks its certificate
    /// lengths to find where it ends (a holder has a handful of certificates).
    fn at(body: &'v [u8], at: usize) -> Option<StoredHolder<'v>> {
        let count = read_u32(body, at + 16)?;
        let mut end = at + HOLDER_HEAD;
        for _ in 0..count {
            end += 4 + read_u32(body, end)? as usize;
        }
        (end <= body.len()).then_some(StoredHolder { body, offset: at, count, end })
    }

    /// The holder's full PMH-ID.
    pub fn pmh_id(&self) -> &'v [u8; 16] {
        self.body[self.offset..self.offset + 16].try_into().unwrap_or(&[0; 16])
    }

    /// Where this holder starts in its value (for [`StoredBucket::holder_at`]).
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the holder has no certificate (never true for a stored holder).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The certificate archives, in stored order (each as `encode_certificate` made it).
    pub fn archives(&self) -> impl Iterator<Item = &'v [u8]> + use<'v> {
        let (body, end) = (self.body, self.end);
        let mut at = self.offset + HOLDER_HEAD;
        std::iter::from_fn(move || {
            let len = read_u32(body, at)? as usize;
            let archive = body.get(at + 4..at + 4 + len).filter(|_| at + 4 + len <= end)?;
            at += 4 + len;
            Some(archive)
        })
    }

    /// The certificates, read in place, in stored order.
    pub fn certificates(&self) -> impl Iterator<Item = &'v ArchivedCertificate> + use<'v> {
        // SAFETY: a `StoredHolder` only comes from a `StoredBucket`, made by
        // `access_bucket` (every archive bytechecked) or `access_bucket_trusted` (whose
        // caller vouches that the value was written by this module's encoder from archives
        // `encode_certificate` made, and the checksum proves the bytes unchanged); the
        // framing check made every archive at least as long as its root.
        self.archives().map(|a| unsafe { rkyv::access_unchecked::<ArchivedCertificate>(a) })
    }
}

/// Fully validates stored bytes — checksum, framing, and an rkyv bytecheck of every
/// certificate — and gives zero-copy access. Works on any alignment (see the module doc).
/// Used by `verify`.
pub fn access_bucket(bytes: &[u8]) -> Result<StoredBucket<'_>, ValueError> {
    let body = checked_body(bytes)?;
    check_framing(body, |a| {
        rkyv::access::<ArchivedCertificate, rkyv::rancor::Error>(a)
            .map(|_| ())
            .map_err(|e| ValueError::Invalid(e.to_string()))
    })?;
    Ok(StoredBucket { body })
}

/// The hot-path access: checks the checksum trailer (one xxh3 pass, ~30 ns) and the
/// framing (a few length fields), and reads the certificate archives without bytecheck
/// (which costs ~0.8 µs on a typical holder: every string is UTF-8-checked, every pointer
/// range-checked).
///
/// # Safety
/// `bytes` must have been produced by [`BucketEncoder`] from archives
/// [`crate::change::encode_certificate`] made (the only writer of the holders column
/// family). A matching checksum then proves the bytes are exactly what was written, and
/// every archive rkyv wrote is valid; accidental corruption (disk, memory, a truncated
/// write) fails the checksum with probability 1 − 2⁻⁶⁴. Bytes crafted to match the
/// checksum by someone writing the database directly are outside this guarantee;
/// `pmh-admin verify` validates everything fully.
#[inline]
pub unsafe fn access_bucket_trusted(bytes: &[u8]) -> Result<StoredBucket<'_>, ValueError> {
    let body = checked_body(bytes)?;
    check_framing(body, |_| Ok(()))?;
    Ok(StoredBucket { body })
}

/// The archived certificate in `archive`, without bytecheck.
///
/// # Safety
/// `archive` must be an archive [`crate::change::encode_certificate`] made, or one read
/// from a [`StoredBucket`].
#[inline]
pub(crate) unsafe fn archived_trusted(archive: &[u8]) -> &ArchivedCertificate {
    // SAFETY: per this function's contract.
    unsafe { rkyv::access_unchecked::<ArchivedCertificate>(archive) }
}

/// Copies a stored bucket out into owned records (tests and tools; the engine's change
/// sets copy archives as bytes instead).
pub fn decode_bucket(b: &StoredBucket<'_>) -> Result<Bucket, ValueError> {
    let holders = b
        .holders()
        .map(|h| {
            let certificates = h
                .certificates()
                .map(|c| {
                    rkyv::deserialize::<Certificate, rkyv::rancor::Error>(c)
                        .map_err(|e| ValueError::Invalid(e.to_string()))
                })
                .collect::<Result<_, _>>()?;
            Ok(Holder { pmh_id: *h.pmh_id(), certificates })
        })
        .collect::<Result<_, ValueError>>()?;
    Ok(Bucket { holders })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> Certificate {
        Certificate::example("H1")
    }

    fn archive(c: &Certificate) -> (Vec<u8>, u64) {
        crate::change::encode_certificate(c).unwrap()
    }

    fn two_holders() -> Bucket {
        Bucket {
            holders: vec![
                Holder { pmh_id: [7; 16], certificates: vec![cert()] },
                Holder { pmh_id: [9; 16], certificates: vec![cert(), Certificate::example("H2")] },
            ],
        }
    }

    #[test]
    fn round_trips_and_reads_at_any_alignment() {
        let b = two_holders();
        let bytes = encode_bucket(&b).unwrap();
        // Read at every offset 0..8: the unaligned format must not care.
        for off in 0..8 {
            let mut buf = vec![0u8; off];
            buf.extend_from_slice(&bytes);
            let a = access_bucket(&buf[off..]).unwrap();
            assert_eq!(a.holders().count(), 2);
            assert_eq!(a.holder(&[7; 16]).unwrap().len(), 1);
            let nine = a.holder(&[9; 16]).unwrap();
            let keys: Vec<&str> = nine.certificates().map(|c| c.history_key.as_str()).collect();
            assert_eq!(keys, ["H1", "H2"]);
            assert_eq!(a.holder_at(nine.offset()).unwrap().pmh_id(), &[9; 16]);
            assert!(a.holder(&[8; 16]).is_none());
            assert_eq!(decode_bucket(&a).unwrap(), b);
        }
    }

    #[test]
    fn the_encoder_frames_archives_as_given_and_leaves_out_empty_holders() {
        let (a1, d1) = archive(&cert());
        let (a2, d2) = archive(&Certificate::example("H2"));
        for prefix in 0..5 {
            let mut out = vec![0xAA; prefix];
            let mut enc = BucketEncoder::begin(&out);
            enc.holder(&[1; 16]); // no certificate: left out
            enc.holder(&[9; 16]);
            enc.certificate(&mut out, &a1, d1).unwrap();
            enc.certificate(&mut out, &a2, d2).unwrap();
            let r1 = enc.finish(&mut out).unwrap();
            // An empty value is no value, and leaves the buffer as it was.
            let before = out.len();
            assert_eq!(BucketEncoder::begin(&out).finish(&mut out), None);
            assert_eq!(out.len(), before);
            let mut enc = BucketEncoder::begin(&out);
            enc.holder(&[7; 16]);
            enc.certificate(&mut out, &a1, d1).unwrap();
            let r2 = enc.finish(&mut out).unwrap();
            assert_eq!((r1.start, r1.end, r2.end), (prefix, r2.start, out.len()));
            let want = Bucket {
                holders: vec![Holder { pmh_id: [9; 16], certificates: vec![cert(), Certificate::example("H2")] }],
            };
            assert_eq!(out[r1.clone()], encode_bucket(&want).unwrap()[..]);
            let stored = access_bucket(&out[r1]).unwrap();
            let copied: Vec<&[u8]> = stored.holder(&[9; 16]).unwrap().archives().collect();
            assert_eq!(copied, [&a1[..], &a2[..]]);
            assert_eq!(access_bucket(&out[r2]).unwrap().holders().count(), 1);
        }
    }

    #[test]
    fn the_encoder_refuses_an_archive_that_does_not_match_its_digest() {
        let (mut a, d) = archive(&cert());
        let mut out = Vec::new();
        let mut enc = BucketEncoder::begin(&out);
        enc.holder(&[7; 16]);
        a[3] ^= 1;
        assert!(matches!(enc.certificate(&mut out, &a, d), Err(ValueError::Invalid(_))));
        assert!(matches!(
            enc.certificate(&mut out, &[0u8; 4], xxhash_rust::xxh3::xxh3_64(&[0u8; 4])),
            Err(ValueError::Framing(_))
        ));
        assert_eq!(enc.finish(&mut out), None, "nothing was written");
    }

    #[test]
    fn garbage_is_rejected_not_misread() {
        let good = encode_bucket(&two_holders()).unwrap();
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
        let sealed = |body: &[u8]| {
            let mut v = body.to_vec();
            v.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(body).to_le_bytes());
            v
        };
        // Well-formed checksums over broken framing or a broken archive still fail.
        let body = &good[..good.len() - VALUE_TRAILER];
        for (what, bytes) in [
            ("truncated", sealed(&body[..body.len() - 1])),
            ("holder cut short", sealed(&body[..10])),
            ("trailing byte", sealed(&[body, &[0]].concat())),
            ("zero certificates", sealed(&[&[7u8; 16][..], &0u32.to_le_bytes()].concat())),
        ] {
            assert!(matches!(access_bucket(&bytes), Err(ValueError::Framing(_))), "{what}");
            // SAFETY: the framing is checked before any unchecked access.
            assert!(matches!(unsafe { access_bucket_trusted(&bytes) }, Err(ValueError::Framing(_))), "{what}");
        }
        let mut junk = [&[7u8; 16][..], &1u32.to_le_bytes(), &200u32.to_le_bytes()].concat();
        junk.extend_from_slice(&[0xff; 200]);
        assert!(matches!(access_bucket(&sealed(&junk)), Err(ValueError::Invalid(_))));
    }

    #[test]
    fn full_validation_never_panics_on_sealed_mutations() {
        // `access_bucket` is what `verify` runs on whatever the disk holds. Mutate valid
        // values at random (bytes overwritten, cut short, extended), seal each with a
        // matching checksum so the framing and the archives are reached, and require an
        // answer, never a panic; whatever is accepted must read to the end.
        let base = encode_bucket(&two_holders()).unwrap();
        let body = &base[..base.len() - VALUE_TRAILER];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut b = body.to_vec();
            for _ in 0..1 + next() % 4 {
                let i = next() as usize % b.len();
                b[i] = next() as u8;
            }
            match next() % 8 {
                0 => b.truncate(next() as usize % b.len()),
                1 => {
                    let n = next() % 64;
                    b.extend((0..n).map(|_| next() as u8));
                }
                _ => {}
            }
            let sealed = [&b[..], &xxhash_rust::xxh3::xxh3_64(&b).to_le_bytes()].concat();
            match access_bucket(&sealed) {
                Ok(v) => {
                    accepted += 1;
                    for h in v.holders() {
                        assert_eq!(h.archives().count(), h.len());
                        for c in h.certificates() {
                            let _ = (c.history_key.as_str(), c.municipality_code.to_native());
                        }
                    }
                    let _ = decode_bucket(&v);
                }
                Err(_) => refused += 1,
            }
        }
        // Both outcomes occur: a mutation inside a string's bytes can stay valid.
        assert!(accepted > 0 && refused > 0, "accepted {accepted}, refused {refused}");
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
    fn a_certificate_appended_after_other_bytes_is_the_standalone_archive() {
        let (alone, digest) = archive(&cert());
        for prefix in 0..9 {
            let mut arena = vec![1u8; prefix];
            assert_eq!(crate::change::encode_certificate_into(&cert(), &mut arena).unwrap(), digest);
            assert_eq!(&arena[prefix..], &alone[..]);
            assert_eq!(rkyv::from_bytes::<Certificate, rkyv::rancor::Error>(&arena[prefix..]).unwrap(), cert());
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
