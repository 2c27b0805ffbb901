//! Shared test helpers: a temporary store, people and certificates.

use pmh_engine::ids::make;
use pmh_engine::record::{BasicFiveInfo, Certificate, Copayment, DesignatedInstitution, FaceItem, MaxCopayment};
use pmh_engine::{Date, InstitutionCode, MyNumber, PmhId, PmhIdDeriver, Store, StoreConfig};

pub const SECRET: &[u8] = b"test-secret";

/// A store in a temporary directory (kept alive by the returned guard).
pub struct TestStore {
    pub store: Store,
    pub dir: tempfile::TempDir,
}

pub fn config() -> StoreConfig {
    let mut c = StoreConfig {
        sync_writes: false,
        secret_fingerprint: Some(PmhIdDeriver::new(SECRET).fingerprint()),
        ..StoreConfig::default()
    };
    c.rocks.block_cache_bytes = 8 << 20;
    c
}

pub fn store() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path().join("db"), config()).expect("open store");
    TestStore { store, dir }
}

/// The PMH-ID of the person whose My Number body is `n`.
pub fn person(n: u64) -> PmhId {
    let number = MyNumber::parse(&make::my_number(n)).expect("valid my number");
    PmhIdDeriver::new(SECRET).derive(&number)
}

pub fn date(s: &str) -> Date {
    Date::parse(s).expect("date")
}

pub fn institution() -> InstitutionCode {
    InstitutionCode::parse(&make::institution_code(13, 1, 123_456)).expect("institution")
}

pub fn other_institution() -> InstitutionCode {
    InstitutionCode::parse(&make::institution_code(27, 1, 654_321)).expect("institution")
}

/// Unix seconds of noon JST on `d`.
pub fn noon(d: &str) -> i64 {
    date(d).tokyo_midnight_unix() + 12 * 3600
}

/// A certificate of municipality 131016 valid 2026-04-01..2027-03-31.
pub fn cert(history_key: &str) -> Certificate {
    Certificate {
        municipality_code: 131016,
        org_specific_certificate_type_id: "KODOMO".into(),
        history_key: history_key.into(),
        basic_five_info: BasicFiveInfo {
            name: "山田 花子".into(),
            name_kana: "ヤマダ ハナコ".into(),
            address: "東京都千代田区千代田1-1".into(),
            date_of_birth: Some(date("2015-05-05").days()),
            sex: 2,
        },
        is_not_disclosed: false,
        medical_subsidy_insurer_number: make::insurer_number(88, 13, 101).parse().expect("insurer"),
        certification_name: "子ども医療費受給者証".into(),
        medical_subsidy_recipient_number: "00012345".into(),
        certification_sub_key: None,
        segment: None,
        income_segment: Some("一般".into()),
        additional_conditions: vec![],
        designated_medical_institutions: vec![DesignatedInstitution {
            code: institution().get(),
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
        valid_from: date("2026-04-01").days(),
        valid_to: date("2027-03-31").days(),
        certification_detail: vec![FaceItem { name: "疾病名".into(), value: "—".into() }],
    }
}
