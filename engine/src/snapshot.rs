//! Full snapshots (全件): build SST files offline, ingest them into the inactive
//! holders/source pair, switch generation atomically.
//!
//! The switch is one synced write of the generation number plus one atomic store in
//! memory; readers retry a read that straddled it (see [`crate::layout`]). A load that
//! fails or is killed before the switch leaves the active pair — the previous snapshot —
//! untouched and serving; its partial files are reclaimed at the next open or load.
//!
//! The bulk path is split so that the parallel, memory-bounded pipeline lives in the
//! loader: it writes sorted SST files with [`Store::holders_sst_writer`] /
//! [`Store::source_sst_writer`] and hands them to [`Store::install_snapshot`].
//! [`Store::load_snapshot`] is the simple in-memory form of the same path, for tests,
//! benchmarks and small stores.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use rocksdb::Options;

pub use crate::sst::{SstError, SstFile, SstFileWriter};

use crate::change::{SourceEntry, certificate_digest};
use crate::error::{ChangeError, ChangeProblem, Error, storage};
use crate::layout::{HOLDERS, META, META_GENERATION, SOURCE};
use crate::pmh_id::{PmhId, StoreKey};
use crate::record::{Bucket, Certificate, Holder, encode_bucket};
use crate::store::Store;

/// What a snapshot switch installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The generation now active.
    pub generation: u64,
    /// Holder buckets written.
    pub buckets: u64,
    /// Certificates written.
    pub certificates: u64,
}

/// Options for an SST file writer, owned so writers can be built on any thread.
pub struct SstOptions {
    options: Options,
    /// Whether the pages written stay in the OS page cache ([`SstOptions::keeping_pages`]).
    keep_in_page_cache: bool,
}

impl SstOptions {
    /// Options for holders SST files that a store tuned with `tuning` can ingest (the
    /// holders families' table format and comparator). Needs no open store, so a snapshot
    /// can be prepared while a server holds the store. Its writers drop the pages they
    /// write, as RocksDB's do: a prepared snapshot may wait long before it is read.
    pub fn holders(tuning: &crate::options::RocksTuning) -> SstOptions {
        SstOptions {
            options: tuning.holders_cf_options(&rocksdb::Cache::new_lru_cache(1 << 20)),
            keep_in_page_cache: false,
        }
    }

    /// Options for source-index SST files that a store tuned with `tuning` can ingest
    /// (same table format, filters and block layout as its source-index families). Its
    /// writers drop their pages, as [`SstOptions::holders`]'.
    pub fn source(tuning: &crate::options::RocksTuning) -> SstOptions {
        SstOptions {
            options: tuning.point_cf_options(&rocksdb::Cache::new_lru_cache(1 << 20)),
            keep_in_page_cache: false,
        }
    }

    /// The same options, for files that are installed and served right away: the pages
    /// their writers write stay in the OS page cache, so the new snapshot answers from
    /// memory without reading anything back.
    pub fn keeping_pages(self) -> SstOptions {
        SstOptions { keep_in_page_cache: true, ..self }
    }

    /// A writer for one SST file. Keys must be added in ascending order.
    pub fn writer(&self) -> SstFileWriter<'_> {
        SstFileWriter::new(&self.options, self.keep_in_page_cache)
    }
}

impl Store {
    /// Options to write SST files for the holders family of this store (same table format),
    /// to be installed right away: their writers keep their pages in the page cache.
    pub fn holders_sst_writer(&self) -> SstOptions {
        SstOptions::holders(&self.config.rocks).keeping_pages()
    }

    /// Options to write SST files for the source-index family of this store, to be
    /// installed right away (their pages kept, as [`Store::holders_sst_writer`]'s).
    pub fn source_sst_writer(&self) -> SstOptions {
        SstOptions::source(&self.config.rocks).keeping_pages()
    }

    /// Ingests prepared SST files as the new complete snapshot and switches to it
    /// atomically. The files are moved (hard-linked) into the store. Files finished by
    /// this process's writers are not read again ([`SstFile`]).
    pub fn install_snapshot(&self, holders: &[SstFile], source: &[SstFile]) -> Result<u64, Error> {
        let _w = self.writer.lock();
        let next = self.generation() + 1;
        let target = (next & 1) as usize;
        let old = 1 - target;
        self.clear_cf(HOLDERS[target])?;
        self.clear_cf(SOURCE[target])?;
        if !holders.is_empty() {
            crate::sst::ingest(&self.db, self.cf(HOLDERS[target])?, holders)?;
        }
        if !source.is_empty() {
            crate::sst::ingest(&self.db, self.cf(SOURCE[target])?, source)?;
        }
        // The switch: durable first, then visible.
        self.db
            .put_cf_opt(self.cf(META)?, META_GENERATION, next.to_be_bytes(), &{
                let mut wo = rocksdb::WriteOptions::default();
                wo.set_sync(true);
                wo
            })
            .map_err(storage)?;
        self.generation.store(next, Ordering::Release);
        // Readers still on the old pair see the generation change and retry on the new
        // one, so the old pair can be reclaimed at once.
        self.clear_cf(HOLDERS[old])?;
        self.clear_cf(SOURCE[old])?;
        Ok(next)
    }

    /// Builds and installs a complete snapshot from in-memory records. Duplicate
    /// certificate identities are rejected (naming both positions) and nothing changes.
    /// `staging` is a scratch directory for the SST files.
    pub fn load_snapshot(&self, records: Vec<(PmhId, Certificate)>, staging: &Path) -> Result<SnapshotSummary, Error> {
        let mut problems = Vec::new();
        let mut by_key: BTreeMap<StoreKey, Bucket> = BTreeMap::new();
        let mut index: BTreeMap<Vec<u8>, (usize, SourceEntry)> = BTreeMap::new();
        let n = records.len() as u64;
        for (i, (pmh_id, cert)) in records.into_iter().enumerate() {
            if let Err(e) = cert.check() {
                problems.push(ChangeProblem {
                    index: i,
                    field: "certificate",
                    rule: "certificate invariant",
                    message: e.to_string(),
                });
                continue;
            }
            let key = self.key_of(&pmh_id);
            let entry = SourceEntry { key, pmh_id, digest: certificate_digest(&cert)? };
            let ik = cert.id().index_key();
            if let Some((first, _)) = index.get(&ik) {
                problems.push(ChangeProblem {
                    index: i,
                    field: "historyKey",
                    rule: "unique certificate identity",
                    message: format!("same certificate identity as record {first}"),
                });
                continue;
            }
            index.insert(ik, (i, entry));
            let bucket = by_key.entry(key).or_default();
            match bucket.holders.iter_mut().find(|h| h.pmh_id == *pmh_id.as_bytes()) {
                Some(h) => h.certificates.push(cert),
                None => bucket.holders.push(Holder { pmh_id: *pmh_id.as_bytes(), certificates: vec![cert] }),
            }
        }
        if !problems.is_empty() {
            return Err(ChangeError { problems }.into());
        }
        std::fs::create_dir_all(staging).map_err(|e| Error::Io(format!("create {}: {e}", staging.display())))?;
        let hpath = staging.join("holders.sst");
        let spath = staging.join("source.sst");
        let mut holders = Vec::new();
        if !by_key.is_empty() {
            let opts = self.holders_sst_writer();
            let mut w = opts.writer();
            w.open(&hpath)?;
            for (k, b) in &by_key {
                let bytes = encode_bucket(b).map_err(|e| Error::Corrupt(format!("serialize bucket: {e}")))?;
                w.put(k.0, bytes)?;
            }
            holders.push(w.finish()?);
        }
        let mut source = Vec::new();
        if !index.is_empty() {
            let opts = self.source_sst_writer();
            let mut w = opts.writer();
            w.open(&spath)?;
            for (k, (_, e)) in &index {
                w.put(k, e.encode())?;
            }
            source.push(w.finish()?);
        }
        let generation = self.install_snapshot(&holders, &source);
        // Ingestion moved the files into the store; whatever is left is scratch.
        for f in holders.iter().chain(&source) {
            let _ = std::fs::remove_file(f.path());
        }
        Ok(SnapshotSummary { generation: generation?, buckets: by_key.len() as u64, certificates: n })
    }
}
