//! Shared test helpers: a temporary store, people and certificates.

use pmh_engine::ids::make;
use pmh_engine::record::Certificate;
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
    c.rocks.row_cache_bytes = 8 << 20;
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

/// A certificate of municipality 131016 valid 2026-04-01..2027-03-31, designated
/// institution [`institution`].
pub fn cert(history_key: &str) -> Certificate {
    let c = Certificate::example(history_key);
    assert_eq!(c.designated_medical_institutions[0].code, institution().get());
    c
}
