//! The hot path: `lookup(pmh_id, institution, date)` with the rules of design §5.
//!
//! 1. **Consent** — checked in memory before anything is read. Without a live consent the
//!    answer is [`Lookup::ConsentRequired`], produced before the holder is even looked
//!    up, so it is the same value (and nearly the same time) whether or not the person
//!    has records.
//! 2. **Validity** — certificates whose period contains `date` (inclusive). Deleted
//!    certificates are not stored at all (a delete removes them), so nothing deleted can
//!    be returned.
//! 3. **Disclosure** — if *any* certificate the person holds is 不開示 (`isNotDisclosed`),
//!    the personal block (基本5情報) is withheld from every certificate in the answer: the
//!    same name and address sit on each of a person's certificates, so withholding it from
//!    one only would disclose it through another. Billing fields are still returned.
//! 4. **Access log** — every answer and refusal is queued for the access log.
//! 5. **Designated institutions** — each certificate says whether the asker is one of its
//!    指定医療機関.
//!
//! The cost is one pinned RocksDB get plus a checksum pass over the value, whose
//! certificate archives are then read in place (see `record::access_bucket_trusted` for why a checksum and not a full
//! bytecheck on this path); the answer borrows the pinned block, so nothing is copied
//! until the caller renders it.

use std::sync::atomic::Ordering;

use rocksdb::DBPinnableSlice;

use crate::audit::{AccessOutcome, ClientId, PendingAccess};
use crate::date::{Date, unix_now_micros};
use crate::error::Error;
use crate::ids::InstitutionCode;
use crate::pmh_id::PmhId;
use crate::record::{ArchivedCertificate, StoredBucket, StoredHolder, access_bucket_trusted};
use crate::store::Store;

/// The answer to one lookup.
pub enum Lookup<'a> {
    /// No live consent for (person, institution): nothing else is said.
    ConsentRequired,
    /// Consent present: the certificates valid on the date (possibly none).
    Answered(Eligibility<'a>),
}

impl Lookup<'_> {
    /// The eligibility, if answered.
    pub fn answered(&self) -> Option<&Eligibility<'_>> {
        match self {
            Lookup::Answered(e) => Some(e),
            Lookup::ConsentRequired => None,
        }
    }
}

/// The certificates answered for one person, borrowed from the pinned RocksDB value.
pub struct Eligibility<'a> {
    /// The pinned, already validated value; `None` when the person has no records.
    value: Option<DBPinnableSlice<'a>>,
    /// Where the person's holder starts in the value.
    holder: usize,
    /// Which certificates are valid on the date.
    visible: Visible,
    personal_withheld: bool,
    institution: u64,
    date: Date,
}

/// The certificates of a holder valid on the date: a bit mask for the usual ≤ 64
/// certificates (no allocation on the hot path), a list beyond that.
enum Visible {
    Mask(u64),
    List(Vec<u16>),
}

impl Visible {
    fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        let (mask, list) = match self {
            Visible::Mask(m) => (*m, &[][..]),
            Visible::List(l) => (0, &l[..]),
        };
        let bits = (0..64usize).filter(move |i| mask & (1u64 << i) != 0);
        bits.chain(list.iter().map(|&i| usize::from(i)))
    }

    fn len(&self) -> usize {
        match self {
            Visible::Mask(m) => m.count_ones() as usize,
            Visible::List(l) => l.len(),
        }
    }
}

/// One certificate of an answer.
pub struct CertificateView<'e> {
    /// The archived certificate (zero-copy).
    pub certificate: &'e ArchivedCertificate,
    /// Whether the personal block may be shown. When false the caller must not render
    /// `basic_five_info`.
    pub personal_disclosed: bool,
    /// Whether the asking institution is one of the certificate's designated institutions.
    pub is_designated_institution: bool,
}

impl<'a> Eligibility<'a> {
    fn holder(&self) -> Option<StoredHolder<'_>> {
        let v = self.value.as_ref()?;
        // SAFETY: `Eligibility::new` accepted these exact bytes through
        // `access_bucket_trusted` (checksum and framing of a holders value written by the
        // engine's encoder), and a pinned slice is immutable while pinned. The checksum is
        // not taken again: only the framing of this one holder is walked.
        let bucket = unsafe { StoredBucket::assume_checked(v) };
        bucket.holder_at(self.holder)
    }

    /// The certificates valid on the date, in stored order.
    pub fn certificates(&self) -> impl Iterator<Item = CertificateView<'_>> {
        let mut certs = self.holder().into_iter().flat_map(|h| h.certificates()).enumerate();
        self.visible.indices().filter_map(move |i| {
            // Visible indices ascend, so one forward walk of the holder serves them all.
            let (_, c) = certs.find(|(j, _)| *j == i)?;
            Some(CertificateView {
                certificate: c,
                personal_disclosed: !self.personal_withheld,
                is_designated_institution: c.is_designated(self.institution),
            })
        })
    }

    /// Number of certificates in the answer.
    pub fn len(&self) -> usize {
        self.visible.len()
    }

    /// Whether the answer has no certificate.
    pub fn is_empty(&self) -> bool {
        self.visible.len() == 0
    }

    /// Whether the personal block is withheld (the person has a 不開示 certificate).
    pub fn personal_withheld(&self) -> bool {
        self.personal_withheld
    }

    /// The date the answer is for.
    pub fn date(&self) -> Date {
        self.date
    }

    fn new(
        value: Option<DBPinnableSlice<'a>>,
        pmh_id: &PmhId,
        institution: u64,
        date: Date,
    ) -> Result<Eligibility<'a>, Error> {
        let mut e = Eligibility {
            value: None,
            holder: 0,
            visible: Visible::Mask(0),
            personal_withheld: false,
            institution,
            date,
        };
        let Some(v) = value else { return Ok(e) };
        // SAFETY: holders values are written only by the engine's encoder (change sets and
        // snapshots); see `access_bucket_trusted` for why the checksum then suffices.
        let bucket = unsafe { access_bucket_trusted(&v) }
            .map_err(|err| Error::Corrupt(format!("holder value for key of {pmh_id}: {err}")))?;
        let Some(holder) = bucket.holder(pmh_id.as_bytes()) else {
            // Another person's bucket (store-key collision): this person has no records.
            return Ok(e);
        };
        e.holder = holder.offset();
        // One walk of the holder's certificates for both the disclosure rule and validity.
        let small = holder.len() <= 64;
        let (mut mask, mut list) = (0u64, Vec::new());
        for (i, c) in holder.certificates().enumerate() {
            e.personal_withheld |= c.is_not_disclosed;
            if !c.is_valid_on(date) {
                continue;
            }
            if small {
                mask |= 1u64 << i;
            } else {
                list.push(i as u16);
            }
        }
        e.visible = if small { Visible::Mask(mask) } else { Visible::List(list) };
        e.value = Some(v);
        Ok(e)
    }

    fn access_entry(&self, pmh_id: &PmhId, client: ClientId, at_micros: i64) -> PendingAccess {
        let mut p = PendingAccess::new(
            at_micros,
            *pmh_id.as_bytes(),
            self.institution,
            client,
            self.date.days(),
            AccessOutcome::Answered,
        );
        p.personal_disclosed = !self.personal_withheld && !self.is_empty();
        for v in self.certificates() {
            let c = v.certificate;
            p.disclose(
                c.municipality_code.to_native(),
                c.medical_subsidy_insurer_number.to_native(),
                &c.org_specific_certificate_type_id,
                &c.history_key,
            );
        }
        p
    }
}

fn refusal_entry(pmh_id: &PmhId, institution: u64, date: Date, client: ClientId, at_micros: i64) -> PendingAccess {
    PendingAccess::new(at_micros, *pmh_id.as_bytes(), institution, client, date.days(), AccessOutcome::ConsentRequired)
}

impl Store {
    /// Looks up a person's certificates for `institution` on `date`, on behalf of `client`
    /// (the gateway's name, for the access log). See the module doc for the rules.
    pub fn lookup(
        &self,
        client: ClientId,
        pmh_id: &PmhId,
        institution: InstitutionCode,
        date: Date,
    ) -> Result<Lookup<'_>, Error> {
        if self.audit.is_failing() {
            return Err(Error::AccessLogUnavailable);
        }
        // One clock read serves the consent check and the access-log timestamp.
        let now_us = unix_now_micros();
        if !self.consents.is_live(pmh_id, institution, now_us.div_euclid(1_000_000)) {
            self.audit.record(refusal_entry(pmh_id, institution.get(), date, client, now_us));
            return Ok(Lookup::ConsentRequired);
        }
        let value = self.get_bucket(&self.key_of(pmh_id))?;
        let e = Eligibility::new(value, pmh_id, institution.get(), date).inspect_err(|_| {
            self.corrupt_reads.fetch_add(1, Ordering::Relaxed);
        })?;
        self.audit.record(e.access_entry(pmh_id, client, now_us));
        Ok(Lookup::Answered(e))
    }

    /// Looks up many people at once (pre-visit batch checks): one consent check each, then
    /// one batched multi-get for everyone consented. Answers are in request order.
    pub fn lookup_batch(
        &self,
        client: ClientId,
        pmh_ids: &[PmhId],
        institution: InstitutionCode,
        date: Date,
    ) -> Result<Vec<Lookup<'_>>, Error> {
        if self.audit.is_failing() {
            return Err(Error::AccessLogUnavailable);
        }
        let now_us = unix_now_micros();
        let now = now_us.div_euclid(1_000_000);
        let mut wanted: Vec<([u8; 16], usize)> = Vec::with_capacity(pmh_ids.len());
        for (i, id) in pmh_ids.iter().enumerate() {
            if self.consents.is_live(id, institution, now) {
                wanted.push((self.key_of(id).0, i));
            }
        }
        wanted.sort_unstable();
        let keys: Vec<[u8; 16]> = wanted.iter().map(|(k, _)| *k).collect();
        let values = self.get_buckets(&keys)?;
        let mut out: Vec<Option<Lookup<'_>>> = (0..pmh_ids.len()).map(|_| None).collect();
        for ((_, i), v) in wanted.iter().zip(values) {
            let id = &pmh_ids[*i];
            let e = Eligibility::new(v, id, institution.get(), date).inspect_err(|_| {
                self.corrupt_reads.fetch_add(1, Ordering::Relaxed);
            })?;
            out[*i] = Some(Lookup::Answered(e));
        }
        Ok(pmh_ids
            .iter()
            .zip(out)
            .map(|(id, o)| match o {
                Some(l) => {
                    if let Lookup::Answered(e) = &l {
                        self.audit.record(e.access_entry(id, client, now_us));
                    }
                    l
                }
                None => {
                    self.audit.record(refusal_entry(id, institution.get(), date, client, now_us));
                    Lookup::ConsentRequired
                }
            })
            .collect())
    }

    /// Lookups of this store that met a corrupt stored value since it was opened.
    pub fn corrupt_reads(&self) -> usize {
        self.corrupt_reads.load(Ordering::Relaxed)
    }
}
