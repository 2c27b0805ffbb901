//! The store: opening RocksDB with the layout of [`crate::layout`], the generation
//! seqlock, consents and the access-log writer. Lookups, change sets, snapshots and admin
//! operations are in their own modules and extend [`Store`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};

use parking_lot::Mutex;
use rocksdb::{
    Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBPinnableSlice, ReadOptions, WriteBatch, WriteOptions,
};

use crate::audit::{AccessLogWriter, ClientId, Clients};
use crate::consent::{ConsentBook, consent_key, decode_consent};
use crate::date::unix_now;
use crate::error::{Error, storage};
use crate::ids::InstitutionCode;
use crate::layout::*;
use crate::options::StoreConfig;
use crate::pmh_id::{KeyFn, PmhId, StoreKey};

thread_local! {
    /// Read options for the hot path, made once per thread: `ReadOptions` is a C++ object
    /// (allocation + free per call otherwise) and is `Send` but not `Sync`.
    static READ_OPTS: ReadOptions = ReadOptions::default();
}

#[cfg(target_os = "linux")]
fn idle_rocksdb_threads() -> std::io::Result<usize> {
    let mut moved = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<libc::pid_t>().ok()) else { continue };
        // A thread that exited since the listing has no `comm` any more: skip it.
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else { continue };
        if !name.starts_with("rocksdb:") {
            continue;
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain system call on a thread id of this process; `param` outlives it.
        if unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                continue; // exited meanwhile
            }
            return Err(e);
        }
        moved += 1;
    }
    Ok(moved)
}

#[cfg(not(target_os = "linux"))]
fn idle_rocksdb_threads() -> std::io::Result<usize> {
    Ok(0)
}

/// A journal record: key and value.
pub type JournalRecord = (Vec<u8>, Vec<u8>);

/// The PMH store. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Store {
    // Field order matters for drop: the access-log writer is joined (draining its queue)
    // before the last handle to the database is released.
    pub(crate) audit: AccessLogWriter,
    pub(crate) db: Arc<DB>,
    /// Active generation; its low bit picks the active holders/source pair. Readers load it
    /// before and after a read and retry on change (see [`crate::layout`]).
    pub(crate) generation: AtomicU64,
    /// Serialises every certificate write (change sets, snapshot installs): a change set
    /// is a read-modify-write of holder buckets and must not interleave with another.
    pub(crate) writer: Mutex<()>,
    pub(crate) consents: ConsentBook,
    /// Lookups that met a corrupt holders value (each also returned as an error).
    pub(crate) corrupt_reads: AtomicUsize,
    /// Interned names of the clients that look people up (for the access log).
    pub(crate) clients: Arc<Clients>,
    pub(crate) config: StoreConfig,
    pub(crate) key_fn: KeyFn,
    /// Change sets take their reads as going to the disk whatever they measure (tests).
    pub(crate) cold_reads: AtomicBool,
    pub(crate) path: PathBuf,
    /// The directory's device and inode when opened (see [`Store::directory_replaced`]).
    dir_identity: Option<(u64, u64)>,
    _cache: Cache,
    /// RocksDB's row cache, if configured (its usage is reported in stats).
    pub(crate) row_cache: Option<Cache>,
}

impl Drop for Store {
    /// Leaves RocksDB unclosed if the store's directory was deleted or replaced since it
    /// was opened: closing flushes the memtables and writes a manifest by path, into
    /// whatever directory has that path now, and a new store made there (`rm -rf` and a
    /// new load) was left unopenable by the old process's close. The data of the old
    /// directory is gone with it anyway; its write-ahead log went to the deleted files.
    fn drop(&mut self) {
        if self.directory_replaced() {
            tracing::error!(
                db = %self.path.display(),
                "the store directory was deleted or replaced while the store was open; leaving it unclosed, \
                 so that nothing is written into the directory now at that path"
            );
            // A handle that is never released: the database's close never runs.
            std::mem::forget(Arc::clone(&self.db));
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("generation", &self.generation()).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Store, Error> {
        Store::open_with_key_fn(path, config, |id: &PmhId| id.store_key())
    }

    /// Opens the store with another PMH-ID → key function. Only tests use this, to force
    /// store-key collisions; a store must always be opened with the same function.
    #[doc(hidden)]
    pub fn open_with_key_fn(path: impl AsRef<Path>, config: StoreConfig, key_fn: KeyFn) -> Result<Store, Error> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|e| Error::Io(format!("create {}: {e}", path.display())))?;
        let cache = config.rocks.new_cache();
        let row_cache = config.rocks.new_row_cache();
        let db = open_db(&path, &config.rocks, &cache, row_cache.as_ref())?;
        let db = Arc::new(db);
        let dir_identity = dir_identity(&path);

        let meta = cf(&db, META)?;
        match db.get_cf(meta, META_SCHEMA).map_err(storage)? {
            None => db.put_cf(meta, META_SCHEMA, SCHEMA_VERSION.to_be_bytes()).map_err(storage)?,
            Some(v) if v.as_slice() == SCHEMA_VERSION.to_be_bytes() => {}
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_slice())
                    .map(u32::from_be_bytes)
                    .map_or(format!("{v:?}"), |n| n.to_string());
                return Err(Error::Schema(format!(
                    "{}: store schema {found}, this build reads {SCHEMA_VERSION}; load the data again into a new store directory (`pmh-load full`)",
                    path.display()
                )));
            }
        }
        if let Some(fp) = config.secret_fingerprint {
            match db.get_cf(meta, META_FINGERPRINT).map_err(storage)? {
                None => db.put_cf(meta, META_FINGERPRINT, fp).map_err(storage)?,
                Some(v) if v.as_slice() == fp => {}
                Some(_) => return Err(Error::SecretMismatch),
            }
        }
        let generation = match db.get_cf(meta, META_GENERATION).map_err(storage)? {
            None => 0,
            Some(v) => {
                u64::from_be_bytes(v.as_slice().try_into().map_err(|_| Error::Corrupt("meta generation".into()))?)
            }
        };

        let clients = Arc::new(Clients::default());
        let audit = AccessLogWriter::start(db.clone(), config.access_log_queue, clients.clone())
            .map_err(|e| Error::Io(format!("start access-log writer: {e}")))?;
        let store = Store {
            audit,
            db,
            generation: AtomicU64::new(generation),
            writer: Mutex::new(()),
            consents: ConsentBook::new(),
            corrupt_reads: AtomicUsize::new(0),
            clients,
            config,
            key_fn,
            cold_reads: AtomicBool::new(false),
            path,
            dir_identity,
            _cache: cache,
            row_cache,
        };
        store.load_consents()?;
        // A load killed before its switch leaves data in the inactive pair; nothing reads
        // it, and it is reclaimed now rather than holding disk until the next full load.
        let inactive = store.inactive_index();
        store.clear_cf(HOLDERS[inactive])?;
        store.clear_cf(SOURCE[inactive])?;
        Ok(store)
    }

    /// Moves RocksDB's background threads (flushes, compactions: the threads named
    /// `rocksdb:*`) into the idle scheduling class (`SCHED_IDLE`), so that they run on CPU
    /// time the request threads leave free; see [`crate::BackgroundPriority`] for why. Returns
    /// how many threads it moved.
    ///
    /// The thread pools belong to the process, not to this store: every store the process
    /// has open shares them, and threads RocksDB starts later (a store opened afterwards
    /// with more background jobs) keep the default class. A serving process opens one
    /// store and calls this once after opening it; batch programs (`pmh-load`) leave their
    /// threads alone. Linux only; elsewhere it moves nothing.
    pub fn idle_background_threads(&self) -> Result<usize, Error> {
        idle_rocksdb_threads().map_err(|e| Error::Io(format!("RocksDB background threads to SCHED_IDLE: {e}")))
    }

    /// The directory of this store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the store's directory has been deleted, or replaced by another one, since
    /// the store was opened. RocksDB keeps its open files and goes on creating new ones by
    /// path, so a store whose directory was deleted and made again (say `rm -rf` and a new
    /// full load at the same path, which the lock cannot prevent: it is a new lock file)
    /// would write its flushes and, when closed, its manifest into the new store and
    /// corrupt it. A process that notices should end without closing the store.
    pub fn directory_replaced(&self) -> bool {
        self.dir_identity.is_some_and(|was| dir_identity(&self.path) != Some(was))
    }

    /// Makes change sets treat their reads as going to the disk, as they do when the store
    /// is not in the page cache (more threads than cores, see `COLD_READ_THREADS` in
    /// `change.rs`). Only tests use this, to cover that path on a store in memory.
    #[doc(hidden)]
    pub fn assume_cold_reads(&self, cold: bool) {
        self.cold_reads.store(cold, Ordering::Relaxed);
    }

    /// The store configuration it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The active generation (increments at every full-snapshot switch).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily, Error> {
        cf(&self.db, name)
    }

    pub(crate) fn inactive_index(&self) -> usize {
        ((self.generation() + 1) & 1) as usize
    }

    pub(crate) fn write_options(&self) -> WriteOptions {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.config.sync_writes);
        wo
    }

    /// Reads one holder bucket from the active generation, retrying if a snapshot switch
    /// happened during the read.
    #[inline]
    pub(crate) fn get_bucket(&self, key: &StoreKey) -> Result<Option<DBPinnableSlice<'_>>, Error> {
        loop {
            let g = self.generation.load(Ordering::Acquire);
            let cf = self.cf(HOLDERS[(g & 1) as usize])?;
            let v = READ_OPTS.with(|ro| self.db.get_pinned_cf_opt(cf, key.0, ro)).map_err(storage)?;
            fence(Ordering::Acquire);
            if self.generation.load(Ordering::Relaxed) == g {
                return Ok(v);
            }
        }
    }

    /// Reads many buckets (sorted keys) from the active generation with RocksDB's batched
    /// multi-get, retrying the batch if a snapshot switch happened during it.
    pub(crate) fn get_buckets(&self, sorted_keys: &[[u8; 16]]) -> Result<Vec<Option<DBPinnableSlice<'_>>>, Error> {
        loop {
            let g = self.generation.load(Ordering::Acquire);
            let cf = self.cf(HOLDERS[(g & 1) as usize])?;
            let vs = READ_OPTS.with(|ro| self.db.batched_multi_get_cf_opt(cf, sorted_keys, true, ro));
            fence(Ordering::Acquire);
            if self.generation.load(Ordering::Relaxed) == g {
                return vs.into_iter().map(|r| r.map_err(storage)).collect();
            }
        }
    }

    /// Raw pinned get from the active holders family, with no consent, validation or
    /// access log: the ceiling the lookup benchmark compares against.
    #[doc(hidden)]
    pub fn raw_get_pinned(&self, key: &StoreKey) -> Result<Option<DBPinnableSlice<'_>>, Error> {
        self.get_bucket(key)
    }

    /// The store key of a PMH-ID in this store.
    pub fn key_of(&self, pmh_id: &PmhId) -> StoreKey {
        (self.key_fn)(pmh_id)
    }

    // ---- consents -------------------------------------------------------------------

    fn load_consents(&self) -> Result<(), Error> {
        let cf = self.cf(CONSENTS)?;
        let now = unix_now();
        let mut expired = WriteBatch::default();
        for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(storage)?;
            match decode_consent(&k, &v) {
                Some((pmh, inst, exp)) if now < exp => self.consents.insert(pmh, inst, exp),
                _ => expired.delete_cf(cf, &k),
            }
        }
        if !expired.is_empty() {
            self.db.write(expired).map_err(storage)?;
        }
        Ok(())
    }

    /// Records a consent of the person `pmh_id` for `institution`, granted at `now` (Unix
    /// seconds), with the configured lifetime. Returns the expiry (Unix seconds). A
    /// repeated grant extends the consent.
    pub fn grant_consent(&self, pmh_id: &PmhId, institution: InstitutionCode, now: i64) -> Result<i64, Error> {
        let expires = self.config.consent_lifetime.expiry(now);
        let cf = self.cf(CONSENTS)?;
        self.db
            .put_cf_opt(cf, consent_key(pmh_id, institution.get()), expires.to_be_bytes(), &WriteOptions::default())
            .map_err(storage)?;
        self.consents.insert(*pmh_id, institution.get(), expires);
        Ok(expires)
    }

    /// Revokes a consent. Returns whether one was live.
    pub fn revoke_consent(&self, pmh_id: &PmhId, institution: InstitutionCode) -> Result<bool, Error> {
        let cf = self.cf(CONSENTS)?;
        self.db.delete_cf(cf, consent_key(pmh_id, institution.get())).map_err(storage)?;
        let was = self.consents.expiry(pmh_id, institution, unix_now()).is_some();
        self.consents.remove(pmh_id, institution.get());
        Ok(was)
    }

    /// The expiry of a live consent, if any.
    pub fn consent_expiry(&self, pmh_id: &PmhId, institution: InstitutionCode, now: i64) -> Option<i64> {
        self.consents.expiry(pmh_id, institution, now)
    }

    /// Drops consents expired at `now` from memory and disk; returns how many.
    pub fn purge_expired_consents(&self, now: i64) -> Result<usize, Error> {
        let gone = self.consents.purge_expired(now);
        let cf = self.cf(CONSENTS)?;
        let mut batch = WriteBatch::default();
        for (pmh, inst) in &gone {
            batch.delete_cf(cf, consent_key(pmh, *inst));
        }
        self.db.write(batch).map_err(storage)?;
        Ok(gone.len())
    }

    /// Number of live consents held in memory.
    pub fn live_consents(&self) -> usize {
        self.consents.len()
    }

    // ---- access log -----------------------------------------------------------------

    /// The id under which lookups by the client `name` (e.g. a gateway's token name) are
    /// logged. Register each client once and keep the id: it is what [`Store::lookup`]
    /// takes, so that logging a lookup needs no allocation.
    pub fn register_client(&self, name: &str) -> ClientId {
        self.clients.register(name)
    }

    /// Waits until every access-log entry queued so far is written, or until the log
    /// turns out not to be writable ([`Store::access_log_failing`]).
    pub fn flush_access_log(&self) {
        self.audit.flush();
    }

    /// Whether the access log cannot be written just now. Lookups answer
    /// [`Error::AccessLogUnavailable`] meanwhile; the failed batch is tried again every
    /// 250 ms, and lookups resume once it is written.
    pub fn access_log_failing(&self) -> bool {
        self.audit.is_failing()
    }

    /// Makes the next `n` access-log batch writes fail as if RocksDB had refused them
    /// (a full disk, an I/O error), for tests of what lookups do then.
    #[doc(hidden)]
    pub fn inject_access_log_write_failures(&self, n: u64) {
        self.audit.inject_write_failures(n);
    }

    /// The person's access history (every answer and refusal about them), oldest first.
    /// Flushes the queue first, so it includes every lookup answered before the call
    /// (unless the log cannot be written just now: then what is stored).
    pub fn access_history(&self, pmh_id: &PmhId) -> Result<Vec<crate::audit::AccessEntry>, Error> {
        self.flush_access_log();
        let cf = self.cf(ACCESS_LOG)?;
        let mut out = Vec::new();
        let prefix = pmh_id.as_bytes();
        let iter = self.db.iterator_cf(cf, rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(storage)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(
                crate::audit::decode_entry(&v)
                    .ok_or_else(|| Error::Corrupt(format!("access-log entry {}", hex(&k))))?,
            );
        }
        Ok(out)
    }

    // ---- journal ----------------------------------------------------------------------

    /// Writes journal records (key, value) in one atomic batch, synced like certificate
    /// writes. For records that go with no change set (a rejected upload's outcome); those
    /// that go with one are written by [`Store::apply_journaled`].
    pub fn journal_put(&self, records: &[(&[u8], &[u8])]) -> Result<(), Error> {
        let cf = self.cf(JOURNAL)?;
        let mut batch = WriteBatch::default();
        for (k, v) in records {
            batch.put_cf(cf, k, v);
        }
        self.db.write_opt(batch, &self.write_options()).map_err(storage)
    }

    /// One journal record.
    pub fn journal_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.db.get_cf(self.cf(JOURNAL)?, key).map_err(storage)
    }

    /// Up to `limit` journal records whose key starts with `prefix`, in descending key
    /// order (newest first when keys end in a big-endian time).
    pub fn journal_scan_rev(&self, prefix: &[u8], limit: usize) -> Result<Vec<JournalRecord>, Error> {
        let cf = self.cf(JOURNAL)?;
        let mut upper = prefix.to_vec();
        // The smallest key above every key with this prefix: increment the last byte
        // that is not 0xff and cut after it (no such byte: scan from the end).
        let start = loop {
            match upper.pop() {
                None => break rocksdb::IteratorMode::End,
                Some(0xff) => continue,
                Some(b) => {
                    upper.push(b + 1);
                    break rocksdb::IteratorMode::From(&upper, rocksdb::Direction::Reverse);
                }
            }
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, start) {
            let (k, v) = item.map_err(storage)?;
            if k.as_ref() == upper.as_slice() {
                continue; // `From` in reverse starts at the bound itself when it exists
            }
            // Every key in [prefix, upper) starts with the prefix.
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    // ---- maintenance helpers --------------------------------------------------------

    /// Empties a column family: flushes it, drops its files below level 0 whole,
    /// point-deletes whatever is left (level-0 files, which RocksDB never drops, and files
    /// a running compaction holds: at most the changes since the last compaction), and
    /// compacts the tombstones away. Used on the inactive pair only. Not a range delete:
    /// RocksDB refuses those when the row cache is on.
    pub(crate) fn clear_cf(&self, name: &str) -> Result<(), Error> {
        /// Point deletes per batch when leftovers are cleared.
        const BATCH: usize = 65_536;
        let cf = self.cf(name)?;
        if self.db.iterator_cf(cf, rocksdb::IteratorMode::Start).next().is_none() {
            return Ok(());
        }
        self.db.flush_cf(cf).map_err(storage)?;
        let (lo, hi) = (&[0u8][..], &[0xffu8; 64][..]);
        self.db.delete_file_in_range_cf(cf, lo, hi).map_err(storage)?;
        // One pass: the iterator reads its own snapshot, unaffected by the deletes.
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, _) = item.map_err(storage)?;
            batch.delete_cf(cf, k);
            if batch.len() >= BATCH {
                self.db.write(std::mem::take(&mut batch)).map_err(storage)?;
            }
        }
        if !batch.is_empty() {
            self.db.write(batch).map_err(storage)?;
        }
        self.db.flush_cf(cf).map_err(storage)?;
        // Forced at the bottommost level too: a tombstone and the value it deletes can
        // otherwise both be moved down as they are and stay on disk.
        let mut co = rocksdb::CompactOptions::default();
        co.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &co);
        Ok(())
    }
}

/// Opens the store's RocksDB with every family's options. A store written before the
/// holders were PlainTable (schema 2 and older) has the built-in comparator recorded for
/// its holders families, so RocksDB refuses the open itself; that is reported as the
/// schema mismatch it is.
fn open_db(
    path: &Path,
    tuning: &crate::options::RocksTuning,
    cache: &Cache,
    row_cache: Option<&Cache>,
) -> Result<DB, Error> {
    let descriptors = ALL_CFS.iter().map(|&name| {
        // Explicit descriptors for every family, `default` included: opening a family
        // by name alone silently gives it fresh default options (no filter, no cache).
        let opts = match name {
            META | JOURNAL => tuning.log_cf_options(cache),
            ACCESS_LOG => tuning.access_log_cf_options(cache),
            n if HOLDERS.contains(&n) => tuning.holders_cf_options(cache),
            _ => tuning.point_cf_options(cache),
        };
        ColumnFamilyDescriptor::new(name, opts)
    });
    DB::open_cf_descriptors(&tuning.db_options(row_cache), path, descriptors).map_err(|e| {
        let msg = e.into_string();
        if msg.contains("does not match existing comparator") {
            Error::Schema(format!(
                "{}: the store was written by an older build (schema 2 or older: holders in RocksDB's block-based format), this build reads {SCHEMA_VERSION}; load the data again into a new store directory (`pmh-load full`)",
                path.display()
            ))
        } else {
            Error::Storage(msg)
        }
    })
}

/// Opens a store's RocksDB directly, with the options the engine uses, for tests that
/// damage or rewrite what is stored behind the engine's back. Not for anything else.
#[doc(hidden)]
pub fn open_raw_db(path: impl AsRef<Path>, config: &StoreConfig) -> Result<DB, Error> {
    open_db(path.as_ref(), &config.rocks, &config.rocks.new_cache(), None)
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, Error> {
    db.cf_handle(name).ok_or_else(|| Error::Corrupt(format!("column family {name} missing")))
}

/// Lowercase hex of bytes (keys in error messages).
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A directory's device and inode, if it can be read.
fn dir_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}
