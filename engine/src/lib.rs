//! # pmh-engine — the PMH store
//!
//! The store behind the Public Medical Hub (PMH, 自治体・医療機関をつなぐ情報連携基盤):
//! medical-expense-subsidy certificates (医療費助成の受給者証) keyed by PMH-ID, answered to
//! consenting institutions in microseconds. A library only: no HTTP, no CLI.
//!
//! ## Layout
//! - [`ids`] — identifiers with check digits (My Number, municipality code, 公費負担者番号,
//!   公費受給者番号, institution code).
//! - [`pmh_id`] — PMH-ID derivation (HMAC-SHA-256 of the My Number) and the store key
//!   (xxh3-128 of the PMH-ID).
//! - [`date`] — civil dates and "today" in Asia/Tokyo.
//! - [`record`] — the rkyv record types: [`record::Bucket`] → [`record::Holder`] →
//!   [`record::Certificate`].
//! - [`options`] — the store configuration, every RocksDB knob documented.
//! - [`layout`] — column families and key formats.
//! - [`store`] — [`Store`]: opening, the generation seqlock, consents, access-log queue.
//! - [`lookup`] — the hot path: consent → get → validate in place → date filter → log.
//! - [`change`] — atomic change sets (diffs, a municipality's full upload).
//! - [`snapshot`] — full snapshots: SST files ingested, generation switched atomically.
//! - [`audit`] — the access log and its group-committing writer thread.
//! - [`admin`] — stats, compact, checkpoint, verify.
//!
//! ## Data flow
//! ```text
//!  loader ──(PmhId, Certificate)──▶ change::apply ──WriteBatch──▶ holders.N / source.N
//!         └─ sorted SST files ───▶ snapshot::install ─ingest─▶ holders.M / source.M ─▶ switch
//!  gateway ─▶ grant_consent ─▶ consents (memory + CF)
//!  gateway ─▶ lookup ─▶ consent? ─▶ get_pinned(holders.active) ─▶ rkyv access ─▶ Eligibility
//!                                   └──────────── access-log queue ─▶ writer thread ─▶ access_log
//! ```
//!
//! ## Invariants
//! - The My Number is never stored: only the PMH-ID derived from it.
//! - A read compares the full PMH-ID; a store-key collision cannot return another
//!   person's certificates.
//! - Change sets and snapshot switches are atomic for readers and across crashes.
//! - Every answer and refusal gets an access-log entry.

#![warn(missing_docs)]

pub mod admin;
pub mod audit;
pub mod change;
mod consent;
pub mod date;
mod error;
pub mod ids;
pub mod layout;
pub mod lookup;
pub mod options;
pub mod pmh_id;
pub mod record;
pub mod snapshot;
mod sst;
pub mod store;

pub use admin::{StoreStats, VerifyReport};
pub use audit::{AccessEntry, AccessOutcome, ClientId};
pub use change::{ApplyMode, ApplySummary, Change};
pub use date::Date;
pub use error::{ChangeError, ChangeProblem, Error};
pub use ids::{InstitutionCode, InsurerNumber, MunicipalityCode, MyNumber};
pub use lookup::{CertificateView, Eligibility, Lookup};
pub use options::{BackgroundPriority, ConsentLifetime, RocksTuning, StoreConfig};
pub use pmh_id::{PmhId, PmhIdDeriver, StoreKey};
pub use record::Certificate;
pub use store::Store;
