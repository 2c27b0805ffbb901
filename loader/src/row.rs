//! [`ParsedRow`]: one valid input row, ready to become an engine [`Change`].

use pmh_engine::record::CertificateId;
use pmh_engine::{Certificate, Change, MyNumber, PmhIdDeriver};

/// One valid row of an input file.
///
/// `Debug` is safe to log: [`MyNumber`]'s `Debug` prints `MyNumber(****)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRow {
    /// 1-based data row (CSV: header not counted; JSON: position in the array).
    pub row: usize,
    /// The holder's My Number (validated), from which the PMH-ID is derived. Never store
    /// or print it.
    pub pmh_source: MyNumber,
    /// The certificate. For a delete row (`is_deleted`) only the identity —
    /// `municipality_code`, `org_specific_certificate_type_id`, `history_key` — is
    /// meaningful; every other field holds its default.
    pub certificate: Certificate,
    /// 削除フラグ: the row removes the certificate with this identity.
    pub is_deleted: bool,
}

impl ParsedRow {
    /// The certificate's identity (municipality + 機関別受給者証種別ID + 履歴キー).
    pub fn id(&self) -> CertificateId {
        self.certificate.id()
    }

    /// The engine change this row stands for: an upsert held by the PMH-ID derived from
    /// the My Number, or a delete of the identity.
    pub fn into_change(self, deriver: &PmhIdDeriver) -> Change {
        if self.is_deleted {
            Change::Delete(self.certificate.id())
        } else {
            Change::Upsert { pmh_id: deriver.derive(&self.pmh_source), certificate: self.certificate }
        }
    }
}
