//! Admin operations behind `pmh-admin`: stats, compaction, checkpoint, verify.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::change::{SourceEntry, certificate_digest};
use crate::error::{Error, storage};
use crate::layout::{ALL_CFS, HOLDERS, SOURCE};
use crate::pmh_id::{PmhId, StoreKey};
use crate::record::{CertificateId, access_bucket};
use crate::store::{Store, hex};

/// Size figures of one column family (RocksDB estimates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfStats {
    /// Column family name.
    pub name: &'static str,
    /// Estimated number of keys.
    pub estimated_keys: u64,
    /// Bytes in live SST files.
    pub sst_bytes: u64,
    /// Bytes in memtables.
    pub memtable_bytes: u64,
}

/// Store statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// Active generation.
    pub generation: u64,
    /// Which holders/source pair is active (0 or 1).
    pub active_pair: usize,
    /// Per column family.
    pub column_families: Vec<CfStats>,
    /// Live consents (in memory).
    pub live_consents: usize,
    /// Access-log batches that failed to write since start.
    pub access_log_failures: u64,
    /// Bytes held by the row cache (0 when it is off).
    pub row_cache_bytes: u64,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Holder buckets checked.
    pub buckets: u64,
    /// Holders checked.
    pub holders: u64,
    /// Certificates checked.
    pub certificates: u64,
    /// Source-index entries checked.
    pub source_entries: u64,
    /// Every problem found (at most [`VerifyReport::MAX_PROBLEMS`] listed).
    pub problems: Vec<String>,
    /// Problems found in all (may exceed those listed).
    pub problem_count: u64,
}

impl VerifyReport {
    /// Problems listed at most.
    pub const MAX_PROBLEMS: usize = 1000;

    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < Self::MAX_PROBLEMS {
            self.problems.push(p);
        }
    }

    /// Whether the store is sound.
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }
}

impl Store {
    /// Counts and sizes per column family.
    pub fn stats(&self) -> Result<StoreStats, Error> {
        let mut cfs = Vec::new();
        for name in ALL_CFS {
            let cf = self.cf(name)?;
            let p = |prop: &str| self.db.property_int_value_cf(cf, prop).map(|v| v.unwrap_or(0)).map_err(storage);
            cfs.push(CfStats {
                name,
                estimated_keys: p("rocksdb.estimate-num-keys")?,
                sst_bytes: p("rocksdb.live-sst-files-size")?,
                memtable_bytes: p("rocksdb.cur-size-all-mem-tables")?,
            });
        }
        let g = self.generation();
        Ok(StoreStats {
            generation: g,
            active_pair: (g & 1) as usize,
            column_families: cfs,
            live_consents: self.live_consents(),
            access_log_failures: self.audit.failures.load(Ordering::Relaxed),
            row_cache_bytes: self.row_cache.as_ref().map_or(0, |c| c.get_usage() as u64),
        })
    }

    /// Writes every column family's memtable to a table file and waits for it, so that
    /// nothing is left for the next open to replay from the write-ahead log.
    ///
    /// For a process about to close the store after large writes (`pmh-load diff`): a
    /// 100,000-row diff of a 10 M store leaves 63 MB in the log, and replaying it made the
    /// next open 0.5 s slower (the replay copies it into fresh memory three times, then
    /// flushes it anyway). Flushing before closing writes the same table files without
    /// the replay. A serving store has no need for it: its memtables are flushed as they
    /// fill.
    pub fn persist(&self) -> Result<(), Error> {
        let cfs = ALL_CFS.iter().map(|name| self.cf(name)).collect::<Result<Vec<_>, _>>()?;
        let mut fo = rocksdb::FlushOptions::default();
        fo.set_wait(true);
        self.db.flush_cfs_opt(&cfs, &fo).map_err(storage)
    }

    /// Compacts every column family fully (after a large diff, or to reclaim space).
    pub fn compact(&self) -> Result<(), Error> {
        for name in ALL_CFS {
            let cf = self.cf(name)?;
            self.db.flush_cf(cf).map_err(storage)?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Writes a consistent, openable copy of the store to `dir` (hard links where the
    /// file system allows). `dir` must not exist.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), Error> {
        self.flush_access_log();
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(storage)?;
        cp.create_checkpoint(dir).map_err(storage)
    }

    /// Checks every stored value: each holder value validates as an archive, each holder
    /// sits under the key of its own PMH-ID, each certificate satisfies the invariants and
    /// is indexed, and each source-index entry points at an existing certificate with the
    /// same content digest.
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        let mut r = VerifyReport::default();
        let generation = self.generation();
        let active = (generation & 1) as usize;
        let snap = self.db.snapshot();
        let hcf = self.cf(HOLDERS[active])?;
        let scf = self.cf(SOURCE[active])?;
        // identity → (key, pmh, digest) as found in the holders
        let mut found: HashMap<Vec<u8>, SourceEntry> = HashMap::new();
        for item in snap.iterator_cf(hcf, rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(storage)?;
            r.buckets += 1;
            let key_hex = hex(&k);
            let Ok(key) = <[u8; 16]>::try_from(&*k) else {
                r.problem(format!("holders key {key_hex}: not 16 bytes"));
                continue;
            };
            let bucket = match access_bucket(&v) {
                Ok(b) => b,
                Err(e) => {
                    r.problem(format!("holders key {key_hex}: value does not validate: {e}"));
                    continue;
                }
            };
            if bucket.holders().next().is_none() {
                r.problem(format!("holders key {key_hex}: empty bucket"));
            }
            let mut seen: Vec<[u8; 16]> = Vec::new();
            for h in bucket.holders() {
                r.holders += 1;
                let pmh = PmhId::from_bytes(*h.pmh_id());
                if seen.contains(h.pmh_id()) {
                    r.problem(format!("holders key {key_hex}: holds {pmh} twice"));
                }
                seen.push(*h.pmh_id());
                if self.key_of(&pmh) != StoreKey(key) {
                    r.problem(format!(
                        "holders key {key_hex}: holds {pmh}, whose key is {}",
                        hex(&self.key_of(&pmh).0)
                    ));
                }
                for (archive, c) in h.archives().zip(h.certificates()) {
                    r.certificates += 1;
                    let owned = match rkyv::deserialize::<crate::record::Certificate, rkyv::rancor::Error>(c) {
                        Ok(o) => o,
                        Err(e) => {
                            r.problem(format!("holders key {key_hex}: certificate does not decode: {e}"));
                            continue;
                        }
                    };
                    if let Err(e) = owned.check() {
                        r.problem(format!("holders key {key_hex}: certificate {:?}: {e}", owned.id()));
                    }
                    // The source index keeps the digest of the stored archive itself.
                    let digest = xxhash_rust::xxh3::xxh3_64(archive);
                    if certificate_digest(&owned)? != digest {
                        r.problem(format!(
                            "holders key {key_hex}: certificate {:?} is not the archive its fields make",
                            owned.id()
                        ));
                    }
                    let entry = SourceEntry { key: StoreKey(key), pmh_id: pmh, digest };
                    if found.insert(owned.id().index_key(), entry).is_some() {
                        r.problem(format!("certificate {:?} stored twice", owned.id()));
                    }
                }
            }
        }
        for item in snap.iterator_cf(scf, rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(storage)?;
            r.source_entries += 1;
            let name = CertificateId::from_index_key(&k).map(|id| format!("{id:?}")).unwrap_or_else(|| hex(&k));
            match (SourceEntry::decode(&v), found.remove(&*k)) {
                (None, _) => r.problem(format!("source index {name}: malformed value")),
                (Some(_), None) => r.problem(format!("source index {name}: no such certificate in holders")),
                (Some(e), Some(f)) if e != f => {
                    r.problem(format!("source index {name}: points elsewhere or digest differs"))
                }
                _ => {}
            }
        }
        for (k, _) in found {
            let name = CertificateId::from_index_key(&k).map(|id| format!("{id:?}")).unwrap_or_else(|| hex(&k));
            r.problem(format!("certificate {name} missing from the source index"));
        }
        // A full-snapshot switch clears the pair verify was reading; its findings would be
        // about a snapshot that no longer serves. Say so instead of reporting noise.
        if self.generation() != generation {
            return Err(Error::Io(format!(
                "a snapshot switch (generation {generation} -> {}) happened during verify; run it again",
                self.generation()
            )));
        }
        Ok(r)
    }
}
