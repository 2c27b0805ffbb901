//! SST files for snapshots: a writer that keeps what ingestion needs to know of each file
//! it finishes, and an ingestion that uses it, so that installing a snapshot does not read
//! its files again.
//!
//! RocksDB's C API has neither: its writer forgets the file's key bounds and table
//! properties at `Finish`, and its ingestion opens every file to find them again. For the
//! holders' PlainTable files that means reading every key, since the format cannot seek
//! to its last one: 7.5–9 s of one core for a 10 M load (`docs/benchmarks.md`,
//! seventeenth round). `csrc/sst.cc` adds the missing pieces from RocksDB's C++ API
//! (`ExternalSstFileInfo::prepared_file_info`, `IngestExternalFileArg::file_infos`); the
//! rest of a writer goes through the C API.

use std::ffi::{CStr, CString, c_char};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use librocksdb_sys as ffi;
use rocksdb::{AsColumnFamilyRef, AsRawPtr, ColumnFamily, DB, Options};

use crate::error::Error;

/// What `csrc/sst.cc` learnt of a finished file (a `std::shared_ptr<const
/// PreparedFileInfo>`); opaque here.
#[repr(C)]
struct PreparedFileInfo {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn pmh_sstfilewriter_create(
        options: *const ffi::rocksdb_options_t,
        keep_in_page_cache: u8,
    ) -> *mut ffi::rocksdb_sstfilewriter_t;
    fn pmh_sstfilewriter_finish(
        writer: *mut ffi::rocksdb_sstfilewriter_t,
        err: *mut *mut c_char,
    ) -> *mut PreparedFileInfo;
    fn pmh_prepared_file_destroy(file: *mut PreparedFileInfo);
    fn pmh_ingest_files(
        db: *mut ffi::rocksdb_t,
        cf: *mut ffi::rocksdb_column_family_handle_t,
        paths: *const *const c_char,
        infos: *const *const PreparedFileInfo,
        count: usize,
        move_files: u8,
        err: *mut *mut c_char,
    );
}

/// A failure of an SST writer or of an ingestion, in RocksDB's words.
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
fn result(err: *mut c_char) -> Result<(), SstError> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: RocksDB (and the shim, likewise) sets the out-parameter to a NUL-terminated
    // string allocated with malloc, for the caller to free with rocksdb_free.
    let message = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { ffi::rocksdb_free(err.cast()) };
    Err(SstError(message))
}

fn c_path(path: &Path) -> Result<CString, SstError> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| SstError(format!("{}: a path with a NUL byte", path.display())))
}

/// A finished SST file, and what its writer learnt of it when the writer is the one that
/// made it ([`SstFileWriter::finish`]).
pub struct SstFile {
    path: PathBuf,
    prepared: Option<Prepared>,
}

impl SstFile {
    /// A file this process did not write (a prepared snapshot directory's): its ingestion
    /// opens it and reads what it needs, every key for a PlainTable file.
    pub fn at(path: impl Into<PathBuf>) -> SstFile {
        SstFile { path: path.into(), prepared: None }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether its ingestion can skip reading it.
    pub fn is_prepared(&self) -> bool {
        self.prepared.is_some()
    }
}

impl std::fmt::Debug for SstFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SstFile").field("path", &self.path).field("prepared", &self.is_prepared()).finish()
    }
}

/// Owns one `PreparedFileInfo` handle.
struct Prepared(NonNull<PreparedFileInfo>);

// SAFETY: the handle holds an immutable `PreparedFileInfo` behind a `shared_ptr`; nothing
// mutates it after `Finish`, and it is destroyed once, by its owner.
unsafe impl Send for Prepared {}
unsafe impl Sync for Prepared {}

impl Drop for Prepared {
    fn drop(&mut self) {
        // SAFETY: made by `pmh_sstfilewriter_finish`, destroyed only here.
        unsafe { pmh_prepared_file_destroy(self.0.as_ptr()) };
    }
}

/// RocksDB's SST file writer, made by [`crate::snapshot::SstOptions::writer`]. Keys must
/// be added in ascending order.
pub struct SstFileWriter<'a> {
    raw: *mut ffi::rocksdb_sstfilewriter_t,
    path: Option<PathBuf>,
    _options: PhantomData<&'a Options>,
}

// SAFETY: every method takes `&mut self`, so one thread at a time uses the writer, and
// RocksDB's SstFileWriter keeps no thread-affine state.
unsafe impl Send for SstFileWriter<'_> {}

impl<'a> SstFileWriter<'a> {
    /// A writer with `options` (the target column family's). With `keep_in_page_cache`
    /// the pages written stay in the OS page cache, for a file that is served right away;
    /// without it the writer drops them as it goes (RocksDB's default).
    pub(crate) fn new(options: &'a Options, keep_in_page_cache: bool) -> SstFileWriter<'a> {
        // SAFETY: the options outlive the writer (its lifetime) and the shim only copies
        // them; it returns a handle that the C API's writer functions accept.
        let raw = unsafe { pmh_sstfilewriter_create(options.as_raw_ptr(), u8::from(keep_in_page_cache)) };
        SstFileWriter { raw, path: None, _options: PhantomData }
    }

    /// Starts writing the file at `path` (created or truncated).
    pub fn open(&mut self, path: &Path) -> Result<(), SstError> {
        let c = c_path(path)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: a live writer handle and a NUL-terminated path, which RocksDB copies.
        unsafe { ffi::rocksdb_sstfilewriter_open(self.raw, c.as_ptr(), &mut err) };
        result(err)?;
        self.path = Some(path.to_path_buf());
        Ok(())
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
        result(err)
    }

    /// Writes the file's index and footer, syncs it, and returns it with what its
    /// ingestion needs to know of it.
    pub fn finish(&mut self) -> Result<SstFile, SstError> {
        let Some(path) = self.path.take() else {
            return Err(SstError("finish: no file was opened".into()));
        };
        let mut err = std::ptr::null_mut();
        // SAFETY: a live writer handle.
        let info = unsafe { pmh_sstfilewriter_finish(self.raw, &mut err) };
        result(err)?;
        let info = NonNull::new(info).ok_or_else(|| SstError(format!("{}: no file info", path.display())))?;
        Ok(SstFile { path, prepared: Some(Prepared(info)) })
    }
}

impl Drop for SstFileWriter<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle was made by the shim, is live, and is destroyed once (an
        // unfinished file is abandoned).
        unsafe { ffi::rocksdb_sstfilewriter_destroy(self.raw) };
    }
}

/// Moves `files` into the column family `cf` (hard links, the originals unlinked). Files
/// finished by this process's writers are not read; if any file of the call was not, all
/// of them are opened and read as RocksDB does without that knowledge.
pub(crate) fn ingest(db: &DB, cf: &ColumnFamily, files: &[SstFile]) -> Result<(), Error> {
    let paths = files.iter().map(|f| c_path(&f.path)).collect::<Result<Vec<_>, _>>()?;
    let path_ptrs: Vec<*const c_char> = paths.iter().map(|p| p.as_ptr()).collect();
    let infos: Vec<*const PreparedFileInfo> =
        files.iter().map(|f| f.prepared.as_ref().map_or(std::ptr::null(), |p| p.0.as_ptr().cast_const())).collect();
    let mut err = std::ptr::null_mut();
    // SAFETY: a live database and column family handle; `paths` and `infos` hold
    // `files.len()` valid entries (infos may be null) that outlive the call, which only
    // reads them.
    unsafe {
        pmh_ingest_files(db.as_raw_ptr(), cf.inner(), path_ptrs.as_ptr(), infos.as_ptr(), files.len(), 1, &mut err)
    };
    Ok(result(err)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SstOptions;

    /// Pages of `path` in the page cache, and pages in all (`mincore`).
    #[cfg(target_os = "linux")]
    fn resident(path: &Path) -> (usize, usize) {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        let pages = len.div_ceil(4096);
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

    fn write(opts: &SstOptions, path: &Path) -> SstFile {
        let mut w = opts.writer();
        w.open(path).unwrap();
        let value = vec![7u8; 4000];
        for i in 0u128..4096 {
            w.put(i.to_be_bytes(), &value).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_writer_keeps_its_pages_in_the_page_cache_only_when_asked() {
        // A full load installs what it writes and serves from it at once, reading nothing
        // back: it relies on the pages staying cached. A snapshot prepared for later must
        // not fill the cache.
        let dir = tempfile::tempdir().unwrap();
        let dropping = SstOptions::holders(&crate::RocksTuning::default());
        let keeping = SstOptions::holders(&crate::RocksTuning::default()).keeping_pages();
        let (kept, dropped) = (dir.path().join("kept.sst"), dir.path().join("dropped.sst"));
        assert!(write(&keeping, &kept).is_prepared());
        assert!(write(&dropping, &dropped).is_prepared());
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
        let opts = SstOptions::holders(&crate::RocksTuning::default()).keeping_pages();
        let mut w = opts.writer();
        let err = w.open(&dir.path().join("no-such-dir").join("x.sst")).unwrap_err().into_string();
        assert!(err.contains("no-such-dir"), "{err}");
        let mut w = opts.writer();
        assert_eq!(w.finish().unwrap_err().into_string(), "finish: no file was opened");
        w.open(&dir.path().join("x.sst")).unwrap();
        w.put([2u8; 16], b"1").unwrap();
        let err = w.put([1u8; 16], b"2").unwrap_err().into_string();
        assert!(err.to_lowercase().contains("order"), "{err}");
        let e: Error = SstError(err).into();
        assert!(matches!(e, Error::Storage(_)));
    }
}
