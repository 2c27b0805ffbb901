//! The catalogue of record fields: every leaf of a PMH record with its API name (dotted for
//! nested fields, as in the CSV header), its Japanese header names, and whether a CSV file
//! must have a column for it.
//!
//! Both readers map their input onto [`Field`]s, so CSV and JSON report the same field
//! names and the same rules for the same bad value.

/// Declares [`Field`] and [`ALL_FIELDS`] from one list, so the two cannot drift apart.
macro_rules! fields {
    ($($f:ident),* $(,)?) => {
        /// One leaf field of a record, in the order of design §4 (also the order errors are
        /// reported in within a row).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub(crate) enum Field {
            $($f),*
        }

        /// Every field, in declaration order.
        pub(crate) const ALL_FIELDS: [Field; FIELD_COUNT] = [$(Field::$f),*];
    };
}

fields!(
    MunicipalityCode,
    OrgSpecificCertificateTypeId,
    MyNumber,
    Name,
    NameKana,
    Address,
    DateOfBirth,
    Sex,
    IsNotDisclosed,
    InsurerNumber,
    CertificationName,
    RecipientNumber,
    CertificationSubKey,
    Segment,
    IncomeSegment,
    AdditionalConditions,
    DesignatedMedicalInstitutions,
    IsAlwaysReimbursement,
    CopayCategory,
    CopayBurdenDefinition,
    CopayRatePerDay,
    CopayRatePerMonth,
    CopayRatePerVisit,
    CopayAmountPerDay,
    CopayAmountPerMonth,
    CopayAmountPerVisit,
    MaxMonthly,
    MaxPerVisit,
    MaxInpatientMonthly,
    ValidFrom,
    ValidTo,
    HistoryKey,
    IsDeleted,
    CertificationDetail,
);

/// Number of [`Field`]s (a wrong count does not compile: [`ALL_FIELDS`] is sized by it).
pub(crate) const FIELD_COUNT: usize = 34;

/// The copay-rule fields, in the order of [`crate::raw::RawCopay::values`].
pub(crate) const COPAY_FIELDS: [Field; 8] = [
    Field::CopayCategory,
    Field::CopayBurdenDefinition,
    Field::CopayRatePerDay,
    Field::CopayRatePerMonth,
    Field::CopayRatePerVisit,
    Field::CopayAmountPerDay,
    Field::CopayAmountPerMonth,
    Field::CopayAmountPerVisit,
];

impl Field {
    /// Position in [`ALL_FIELDS`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The PMH API name; nested fields dotted (`basicFiveInfo.name`, `copayment.ratePerDay`).
    /// This is the CSV header name and the `field` of every error about the field.
    pub(crate) fn name(self) -> &'static str {
        use Field::*;
        match self {
            MunicipalityCode => "municipalityCode",
            OrgSpecificCertificateTypeId => "orgSpecificCertificateTypeId",
            MyNumber => "myNumber",
            Name => "basicFiveInfo.name",
            NameKana => "basicFiveInfo.nameKana",
            Address => "basicFiveInfo.address",
            DateOfBirth => "basicFiveInfo.dateOfBirth",
            Sex => "basicFiveInfo.sex",
            IsNotDisclosed => "isNotDisclosed",
            InsurerNumber => "medicalSubsidyInsurerNumber",
            CertificationName => "certificationName",
            RecipientNumber => "medicalSubsidyRecipientNumber",
            CertificationSubKey => "certificationSubKey",
            Segment => "segment",
            IncomeSegment => "incomeSegment",
            AdditionalConditions => "additionalConditions",
            DesignatedMedicalInstitutions => "designatedMedicalInstitutions",
            IsAlwaysReimbursement => "isAlwaysReimbursement",
            CopayCategory => "copayment.category",
            CopayBurdenDefinition => "copayment.burdenDefinition",
            CopayRatePerDay => "copayment.ratePerDay",
            CopayRatePerMonth => "copayment.ratePerMonth",
            CopayRatePerVisit => "copayment.ratePerVisit",
            CopayAmountPerDay => "copayment.amountPerDay",
            CopayAmountPerMonth => "copayment.amountPerMonth",
            CopayAmountPerVisit => "copayment.amountPerVisit",
            MaxMonthly => "maxCopaymentAmount.monthly",
            MaxPerVisit => "maxCopaymentAmount.perVisit",
            MaxInpatientMonthly => "maxCopaymentAmount.inpatientMonthly",
            ValidFrom => "validFrom",
            ValidTo => "validTo",
            HistoryKey => "historyKey",
            IsDeleted => "isDeleted",
            CertificationDetail => "certificationDetail",
        }
    }

    /// The key of this field inside its JSON object (the last segment of [`Field::name`]).
    pub(crate) fn json_key(self) -> &'static str {
        let n = self.name();
        n.rsplit('.').next().unwrap_or(n)
    }

    /// Further English header names accepted for this column.
    fn english_aliases(self) -> &'static [&'static str] {
        match self {
            Field::MaxMonthly => &["maxCopaymentAmount"],
            _ => &[],
        }
    }

    /// Japanese header names, the first being the one in design §4. Parentheses are
    /// written half-width here; headers are normalised before comparison (full-width ASCII
    /// → half-width), so `負担率（日）` and `負担率(日)` both match.
    pub(crate) fn japanese_names(self) -> &'static [&'static str] {
        use Field::*;
        match self {
            MunicipalityCode => &["自治体コード", "地方公共団体コード"],
            OrgSpecificCertificateTypeId => &["機関別受給者証種別ID"],
            MyNumber => &["個人番号", "マイナンバー"],
            Name => &["氏名"],
            NameKana => &["氏名カナ"],
            Address => &["住所"],
            DateOfBirth => &["生年月日"],
            Sex => &["性別"],
            IsNotDisclosed => &["不開示フラグ"],
            InsurerNumber => &["公費負担者番号"],
            CertificationName => &["受給者証名"],
            RecipientNumber => &["公費受給者番号", "受給者番号"],
            CertificationSubKey => &["受給者証サブキー"],
            Segment => &["区分"],
            IncomeSegment => &["所得区分"],
            AdditionalConditions => &["追加条件"],
            DesignatedMedicalInstitutions => &["指定医療機関情報"],
            IsAlwaysReimbursement => &["常に償還払い"],
            CopayCategory => &["種別"],
            CopayBurdenDefinition => &["負担定義"],
            CopayRatePerDay => &["負担率(日)"],
            CopayRatePerMonth => &["負担率(月)"],
            CopayRatePerVisit => &["負担率(回)"],
            CopayAmountPerDay => &["金額(日)"],
            CopayAmountPerMonth => &["金額(月)"],
            CopayAmountPerVisit => &["金額(回)"],
            MaxMonthly => &["自己負担上限額", "自己負担上限額(月)"],
            MaxPerVisit => &["自己負担上限額(回)"],
            MaxInpatientMonthly => &["自己負担上限額(入院)"],
            ValidFrom => &["有効期間始期", "有効期間-始期"],
            ValidTo => &["有効期間終期", "有効期間-終期"],
            HistoryKey => &["履歴キー"],
            IsDeleted => &["削除フラグ"],
            CertificationDetail => &["受給者証券面項目"],
        }
    }

    /// Whether a CSV header must contain this column. These are the fields design §4 calls
    /// required; `municipalityCode` only when the caller does not supply the municipality.
    pub(crate) fn required_column(self, municipality_forced: bool) -> bool {
        use Field::*;
        match self {
            MunicipalityCode => !municipality_forced,
            OrgSpecificCertificateTypeId
            | MyNumber
            | IsNotDisclosed
            | InsurerNumber
            | CertificationName
            | RecipientNumber
            | ValidFrom
            | ValidTo
            | HistoryKey
            | IsDeleted => true,
            _ => false,
        }
    }

    /// The field a CSV header cell names, if any. English names match case-insensitively;
    /// Japanese names after [`normalise_header`].
    pub(crate) fn from_header(cell: &str) -> Option<Field> {
        let h = normalise_header(cell);
        ALL_FIELDS.iter().copied().find(|f| {
            f.name().eq_ignore_ascii_case(&h)
                || f.english_aliases().iter().any(|a| a.eq_ignore_ascii_case(&h))
                || f.japanese_names().iter().any(|j| *j == h)
        })
    }
}

/// Normalises a header cell: surrounding white space (ASCII and U+3000) removed, full-width
/// ASCII forms (U+FF01–U+FF5E: `（`, `）`, `Ｉ`, `Ｄ`, `－`, …) folded to ASCII.
/// The Japanese CSV column name (design §4) of a field given by its API name
/// (`basicFiveInfo.name` → `氏名`), for reports written for people who edit the CSV in a
/// spreadsheet with Japanese headers. `None` for pseudo fields such as `(record)`.
pub fn japanese_header(api_name: &str) -> Option<&'static str> {
    Field::from_header(api_name).and_then(|f| f.japanese_names().first().copied())
}

pub(crate) fn normalise_header(cell: &str) -> String {
    cell.trim()
        .chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_consistent() {
        for (i, f) in ALL_FIELDS.iter().enumerate() {
            assert_eq!(f.index(), i, "{f:?}");
            assert_eq!(Field::from_header(f.name()), Some(*f));
            for j in f.japanese_names() {
                assert_eq!(Field::from_header(j), Some(*f), "{j}");
            }
        }
        // No two fields share a header name.
        let mut names: Vec<String> = ALL_FIELDS
            .iter()
            .flat_map(|f| {
                let mut v = vec![f.name().to_ascii_lowercase()];
                v.extend(f.english_aliases().iter().map(|a| a.to_ascii_lowercase()));
                v.extend(f.japanese_names().iter().map(|j| j.to_string()));
                v
            })
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn headers_are_normalised() {
        assert_eq!(Field::from_header(" 負担率（日） "), Some(Field::CopayRatePerDay));
        assert_eq!(Field::from_header("負担率(回)"), Some(Field::CopayRatePerVisit));
        assert_eq!(Field::from_header("機関別受給者証種別ＩＤ"), Some(Field::OrgSpecificCertificateTypeId));
        assert_eq!(Field::from_header("BASICFIVEINFO.NAME"), Some(Field::Name));
        assert_eq!(Field::from_header("maxCopaymentAmount"), Some(Field::MaxMonthly));
        assert_eq!(Field::from_header("有効期間－始期"), Some(Field::ValidFrom));
        assert_eq!(Field::from_header("name"), None);
        assert_eq!(Field::json_key(Field::Name), "name");
        assert_eq!(Field::json_key(Field::MyNumber), "myNumber");
    }
}
