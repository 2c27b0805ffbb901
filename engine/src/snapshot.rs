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
use std::ffi::{CStr, CString, c_char};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use librocksdb_sys as ffi;
use rocksdb::{AsRawPtr, IngestExternalFileOptions, Options};

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
pub struct SstOptions(Options);

impl SstOptions {
    /// Options for SST files that a store tuned with `tuning` can ingest (same table
    /// format, filters and block layout as its point-lookup families). Needs no open
    /// store, so a snapshot can be prepared while a server holds the store.
    pub fn new(tuning: &crate::options::RocksTuning) -> SstOptions {
        SstOptions(tuning.point_cf_options(&rocksdb::Cache::new_lru_cache(1 << 20)))
    }

    /// A writer for one SST file. Keys must be added in ascending order. With
    /// `keep_in_page_cache`, the pages written stay in the OS page cache, for a file that is
    /// installed and read right away; without it the writer drops them as it goes (RocksDB's
    /// default), for a file that may wait long before it is read.
    pub fn writer(&self, keep_in_page_cache: bool) -> SstFileWriter<'_> {
        // SAFETY: the options outlive the writer (its lifetime), and the shim only reads
        // them; it returns a handle that the C API's writer functions accept.
        let raw = unsafe { pmh_sstfilewriter_create(self.0.as_raw_ptr(), u8::from(keep_in_page_cache)) };
        SstFileWriter { raw, _options: PhantomData }
    }
}

unsafe extern "C" {
    /// `csrc/sst_writer.cc`: RocksDB's SstFileWriter with a choice of
    /// `invalidate_page_cache`, which the C API's constructor does not offer.
    fn pmh_sstfilewriter_create(
        options: *const ffi::rocksdb_options_t,
        keep_in_page_cache: u8,
    ) -> *mut ffi::rocksdb_sstfilewriter_t;
}

/// RocksDB's SST file writer, made by [`SstOptions::writer`].
pub struct SstFileWriter<'a> {
    raw: *mut ffi::rocksdb_sstfilewriter_t,
    _options: PhantomData<&'a Options>,
}

// SAFETY: the writer is used by one thread at a time (every method takes `&mut self`), and
// RocksDB's SstFileWriter keeps no thread-affine state.
unsafe impl Send for SstFileWriter<'_> {}

/// A failure of an [`SstFileWriter`], in RocksDB's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SstError(String);

impl SstError {
    /// The message.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<SstError> for Error {
    fn from(e: SstError) -> Error {
        Error::Storage(e.0)
    }
}

/// Turns the C API's error out-parameter into a result (and frees it).
fn sst_result(err: *mut c_char) -> Result<(), SstError> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: RocksDB sets the out-parameter to a NUL-terminated string it allocated with
    // malloc, for the caller to free with rocksdb_free.
    let message = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { ffi::rocksdb_free(err.cast()) };
    Err(SstError(message))
}

impl SstFileWriter<'_> {
    /// Starts writing the file at `path` (created or truncated).
    pub fn open(&mut self, path: &Path) -> Result<(), SstError> {
        let path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| SstError(format!("{}: a path with a NUL byte", path.display())))?;
        let mut err = std::ptr::null_mut();
        // SAFETY: a live writer handle and a NUL-terminated path, which RocksDB copies.
        unsafe { ffi::rocksdb_sstfilewriter_open(self.raw, path.as_ptr(), &mut err) };
        sst_result(err)
    }

    /// Adds a key (greater than the last one added) and its value.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), SstError> {
        let (key, value) = (key.as_ref(), value.as_ref());
        let mut err = std::ptr::null_mut();
        // SAFETY: a live writer handle; RocksDB copies both slices before it returns.
        unsafe {
            ffi::rocksdb_sstfilewriter_put(
                self.raw,
                key.as_ptr().cast(),
                key.len(),
                value.as_ptr().cast(),
                value.len(),
                &mut err,
            )
        };
        sst_result(err)
    }

    /// Writes the file's index and footer and syncs it.
    pub fn finish(&mut self) -> Result<(), SstError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: a live writer handle.
        unsafe { ffi::rocksdb_sstfilewriter_finish(self.raw, &mut err) };
        sst_result(err)
    }
}

impl Drop for SstFileWriter<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle was made by the shim, is live, and is destroyed once.
        unsafe { ffi::rocksdb_sstfilewriter_destroy(self.raw) };
    }
}

impl Store {
    /// Options to write SST files for the holders family (same table format as the store).
    pub fn holders_sst_writer(&self) -> SstOptions {
        SstOptions::new(&self.config.rocks)
    }

    /// Options to write SST files for the source-index family.
    pub fn source_sst_writer(&self) -> SstOptions {
        self.holders_sst_writer()
    }

    /// Ingests prepared SST files as the new complete snapshot and switches to it
    /// atomically. The files are moved (hard-linked) into the store.
    pub fn install_snapshot(&self, holders: &[PathBuf], source: &[PathBuf]) -> Result<u64, Error> {
        let _w = self.writer.lock();
        let next = self.generation() + 1;
        let target = (next & 1) as usize;
        let old = 1 - target;
        self.clear_cf(HOLDERS[target])?;
        self.clear_cf(SOURCE[target])?;
        let mut io = IngestExternalFileOptions::default();
        io.set_move_files(true);
        if !holders.is_empty() {
            self.db.ingest_external_file_cf_opts(self.cf(HOLDERS[target])?, &io, holders.to_vec()).map_err(storage)?;
        }
        if !source.is_empty() {
            self.db.ingest_external_file_cf_opts(self.cf(SOURCE[target])?, &io, source.to_vec()).map_err(storage)?;
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
        let opts = self.holders_sst_writer();
        let mut holders = Vec::new();
        if !by_key.is_empty() {
            let mut w = opts.writer(true);
            w.open(&hpath)?;
            for (k, b) in &by_key {
                let bytes = encode_bucket(b).map_err(|e| Error::Corrupt(format!("serialize bucket: {e}")))?;
                w.put(k.0, bytes)?;
            }
            w.finish()?;
            holders.push(hpath);
        }
        let mut source = Vec::new();
        if !index.is_empty() {
            let mut w = opts.writer(true);
            w.open(&spath)?;
            for (k, (_, e)) in &index {
                w.put(k, e.encode())?;
            }
            w.finish()?;
            source.push(spath);
        }
        let generation = self.install_snapshot(&holders, &source);
        // Ingestion moved the files into the store; whatever is left is scratch.
        for f in holders.iter().chain(&source) {
            let _ = std::fs::remove_file(f);
        }
        Ok(SnapshotSummary { generation: generation?, buckets: by_key.len() as u64, certificates: n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of `path` in the page cache, and pages in all (`mincore`).
    #[cfg(target_os = "linux")]
    fn resident(path: &Path) -> (usize, usize) {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        let page = 4096;
        let pages = len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: a read-only shared mapping of a file held open, unmapped before return;
        // mincore writes one byte per page into `vec`, which has one per page.
        unsafe {
            let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0);
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
            libc::munmap(p, len);
        }
        (vec.iter().filter(|b| **b & 1 == 1).count(), pages)
    }

    fn write(opts: &SstOptions, path: &Path, keep: bool) {
        let mut w = opts.writer(keep);
        w.open(path).unwrap();
        let value = vec![7u8; 4000];
        for i in 0u32..4096 {
            w.put(i.to_be_bytes(), &value).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_writer_keeps_its_pages_in_the_page_cache_only_when_asked() {
        // The full load installs what it writes and serves from it at once; it relies on the
        // pages staying cached. A snapshot prepared for later must not fill the cache.
        let dir = tempfile::tempdir().unwrap();
        let opts = SstOptions::new(&crate::RocksTuning::default());
        let (kept, dropped) = (dir.path().join("kept.sst"), dir.path().join("dropped.sst"));
        write(&opts, &kept, true);
        write(&opts, &dropped, false);
        let (k, pages) = resident(&kept);
        assert!(pages > 2000, "a 16 MB file: {pages} pages");
        assert!(k * 10 >= pages * 9, "kept: {k} of {pages} pages cached");
        // tmpfs has no disk to drop pages to: there the writer cannot drop them.
        let tmpfs = {
            let c = CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: statfs fills the struct it is given; the path is NUL-terminated.
            let mut s: libc::statfs = unsafe { std::mem::zeroed() };
            unsafe { libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type == libc::TMPFS_MAGIC }
        };
        if !tmpfs {
            let (d, _) = resident(&dropped);
            assert!(d * 10 <= pages, "dropped: {d} of {pages} pages still cached");
        }
    }

    #[test]
    fn writer_errors_come_back_in_rocksdbs_words() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SstOptions::new(&crate::RocksTuning::default());
        let mut w = opts.writer(true);
        let err = w.open(&dir.path().join("no-such-dir").join("x.sst")).unwrap_err().into_string();
        assert!(err.contains("no-such-dir"), "{err}");
        let mut w = opts.writer(true);
        w.open(&dir.path().join("x.sst")).unwrap();
        w.put(b"b", b"1").unwrap();
        let err = w.put(b"a", b"2").unwrap_err().into_string();
        assert!(err.to_lowercase().contains("order"), "{err}");
        let e: Error = SstError(err).into();
        assert!(matches!(e, Error::Storage(_)));
    }
}
