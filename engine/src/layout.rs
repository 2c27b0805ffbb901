//! The RocksDB layout: column families, their keys and values.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `meta` | ASCII name | schema version, secret fingerprint, active generation |
//! | `holders.0`, `holders.1` | store key (xxh3-128 of the PMH-ID, 16 bytes BE) | rkyv [`crate::record::Bucket`] |
//! | `source.0`, `source.1` | municipality (6 digits) 0 typeId 0 historyKey | store key (16) + PMH-ID (16) + certificate digest (8) |
//! | `consents` | PMH-ID (16) + institution (8 BE) | expiry, Unix seconds (8 BE) |
//! | `access_log` | PMH-ID (16) + µs (8 BE) + sequence (8 BE) | rkyv [`crate::audit::AccessEntry`] |
//! | `journal` | caller-defined (the server: upload ids, idempotency keys) | caller-defined bytes |
//!
//! Holders and the source index exist twice (blue/green). One pair is active, chosen by
//! the generation number's low bit; a full snapshot is ingested into the other pair and
//! made active by one synced write of the generation. Readers check the generation before
//! and after a read (a seqlock), so a read that raced with a switch is retried on the new
//! pair and never answers from a pair being cleared. Consents and the access log are not
//! part of a snapshot: they survive every switch.

/// Metadata column family.
pub const META: &str = "meta";
/// The two holders column families (blue/green).
pub const HOLDERS: [&str; 2] = ["holders.0", "holders.1"];
/// The two source-index column families (blue/green), paired with [`HOLDERS`].
pub const SOURCE: [&str; 2] = ["source.0", "source.1"];
/// Consents column family.
pub const CONSENTS: &str = "consents";
/// Access-log column family.
pub const ACCESS_LOG: &str = "access_log";

/// Journal column family: small records a caller writes atomically with a change set
/// (the server's upload outcomes and idempotency keys), so that an acknowledged upload and
/// its receipt are durable together.
pub const JOURNAL: &str = "journal";

/// Every column family, in the order they are opened.
pub const ALL_CFS: [&str; 8] = [META, HOLDERS[0], HOLDERS[1], SOURCE[0], SOURCE[1], CONSENTS, ACCESS_LOG, JOURNAL];

/// Meta key: on-disk schema version.
pub(crate) const META_SCHEMA: &[u8] = b"schema_version";
/// Meta key: fingerprint of the PMH-ID secret.
pub(crate) const META_FINGERPRINT: &[u8] = b"secret_fingerprint";
/// Meta key: the active generation (u64 BE); its low bit picks the active pair.
pub(crate) const META_GENERATION: &[u8] = b"generation";

/// The schema this build writes and reads. 3: the holders families are PlainTable files
/// (`RocksTuning::holders_cf_options`); 2: a holders value frames one rkyv archive per
/// certificate (`record` module doc), in block-based files; 1 archived the whole bucket as
/// one rkyv value.
pub const SCHEMA_VERSION: u32 = 3;

/// Length of a holders key (a [`crate::pmh_id::StoreKey`]).
pub const STORE_KEY_LEN: usize = 16;

/// Length of a source-index value.
pub const SOURCE_VALUE_LEN: usize = 40;
