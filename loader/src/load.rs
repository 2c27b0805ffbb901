//! Full and differential loads into a store.
//!
//! ## Full load (全件): a new complete snapshot
//! ```text
//!  files ─▶ parse + validate (this thread) ─▶ batches ─▶ N workers: derive PMH-ID, store key,
//!          serialize, digest ─▶ sorted runs on disk ─▶ k-way merge ─▶ holders.sst, source.sst
//!          ─▶ Store::install_snapshot (ingest into the inactive pair, switch generation)
//! ```
//! Memory stays bounded whatever the input size: the channel between the parser and the
//! workers is bounded, and each worker spills a sorted run to the staging directory when
//! its share of the sort budget is full. Every row of every file is validated before
//! anything is installed; one bad row rejects the load, all bad rows are reported, and
//! the store is not touched. Duplicate certificate identities are reported with both
//! rows. Rows with `isDeleted = true` in a full file are counted and skipped: a full
//! snapshot holds what is current.
//!
//! ## Differential load (差分): change sets
//! Each file is parsed whole (all-or-nothing), turned into engine changes and applied as
//! one atomic change set; files are applied in order and the first rejected file stops
//! the run (later files may depend on it). Re-applying a file changes nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pmh_engine::change::{ApplyMode, ApplySummary, decode_certificate, encode_certificate, source_index_value};
use pmh_engine::options::RocksTuning;
use pmh_engine::record::{Bucket, Certificate, Holder, encode_bucket};
use pmh_engine::snapshot::SstOptions;
use pmh_engine::{MyNumber, PmhId, PmhIdDeriver, Store, StoreKey};

use crate::{Encoding, Format, ParseOptions, RowError, parse, parse_all};

/// How a load reads its files.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// File format; `None` decides by each file's extension (`.json` → JSON, else CSV).
    pub format: Option<Format>,
    /// CSV text encoding.
    pub encoding: Encoding,
    /// Worker threads for a full load (default: the machine's cores).
    pub threads: usize,
    /// Memory for in-memory sorting, shared by the workers; past it, sorted runs are
    /// spilled to the staging directory. Default 512 MiB.
    pub sort_budget_bytes: usize,
    /// Scratch directory for runs and SST files (default: `<store>.staging`, beside the
    /// store).
    pub staging: Option<PathBuf>,
    /// Allow a full load of files with no certificate (which would empty the store).
    pub allow_empty: bool,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            format: None,
            encoding: Encoding::Auto,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            sort_budget_bytes: 512 << 20,
            staging: None,
            allow_empty: false,
        }
    }
}

/// Where a load reports how far it got (a progress bar, log lines, or nothing).
pub trait Progress: Sync {
    /// A new stage started (`"parse"`, `"merge"`, `"install"`, …).
    fn stage(&self, _name: &str) {}
    /// `n` more input bytes were read.
    fn bytes(&self, _n: u64) {}
    /// `n` more rows were parsed.
    fn rows(&self, _n: u64) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Why a load did not complete. Nothing was installed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad input: every broken rule of every row.
    #[error("{} error(s) in the input; nothing was loaded", .0.len())]
    Rejected(Vec<RowError>),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] pmh_engine::Error),
    /// The request makes no sense (e.g. an empty full load).
    #[error("{0}")]
    Usage(String),
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> LoadError {
    LoadError::Io { path: path.to_path_buf(), message: e.to_string() }
}

/// What a full load installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullSummary {
    /// Rows read (all files).
    pub rows: u64,
    /// Certificates installed.
    pub certificates: u64,
    /// Delete rows skipped.
    pub deleted_rows: u64,
    /// People (holders) installed.
    pub holders: u64,
    /// The generation now serving.
    pub generation: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// What one differential file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffSummary {
    /// The file.
    pub file: PathBuf,
    /// Rows read.
    pub rows: u64,
    /// What changed.
    pub applied: ApplySummary,
}

fn format_of(path: &Path, opts: &LoadOptions) -> Format {
    opts.format.unwrap_or_else(|| Format::from_file_name(&path.to_string_lossy()))
}

fn parse_options(path: &Path, opts: &LoadOptions) -> ParseOptions {
    ParseOptions { encoding: opts.encoding, municipality: None, file_name: Some(path.display().to_string()) }
}

/// Counts bytes read, for progress.
struct Counting<'p, R> {
    inner: R,
    progress: &'p dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes(n as u64);
        Ok(n)
    }
}

fn open<'p>(path: &Path, progress: &'p dyn Progress) -> Result<impl Read + 'p, LoadError> {
    let f = File::open(path).map_err(|e| io_err(path, e))?;
    Ok(Counting { inner: BufReader::with_capacity(1 << 20, f), progress })
}

/// Validates files without touching any store. Returns the number of rows.
pub fn check(files: &[PathBuf], opts: &LoadOptions, progress: &dyn Progress) -> Result<u64, LoadError> {
    progress.stage("check");
    let mut errors = Vec::new();
    let mut rows = 0u64;
    for path in files {
        let r = parse(format_of(path, opts), open(path, progress)?, &parse_options(path, opts), |r| {
            rows += 1;
            progress.rows(1);
            if let Err(e) = r {
                errors.extend(e);
            }
        });
        collect_parse_error(path, r, &mut errors)?;
    }
    if errors.is_empty() { Ok(rows) } else { Err(LoadError::Rejected(errors)) }
}

/// A file that could not be read, reported like a bad row so that a load lists it with
/// every other problem.
fn unreadable(path: &Path, e: &LoadError) -> RowError {
    RowError {
        file: Some(path.display().to_string()),
        row: 0,
        field: "(file)".into(),
        rule: "readable",
        message: e.to_string(),
        value: String::new(),
    }
}

fn collect_parse_error(
    path: &Path,
    r: Result<crate::ParseSummary, crate::ParseError>,
    errors: &mut Vec<RowError>,
) -> Result<(), LoadError> {
    match r {
        Ok(_) => Ok(()),
        Err(crate::ParseError::Invalid(e)) => {
            errors.extend(e);
            Ok(())
        }
        Err(crate::ParseError::Io(e)) => Err(io_err(path, e)),
    }
}

/// Applies differential files, each atomically, in order.
pub fn diff(
    store: &Store,
    deriver: &PmhIdDeriver,
    files: &[PathBuf],
    opts: &LoadOptions,
    progress: &dyn Progress,
) -> Result<Vec<DiffSummary>, (Vec<DiffSummary>, LoadError)> {
    let mut done = Vec::new();
    for path in files {
        progress.stage(&format!("diff {}", path.display()));
        let reader = match open(path, progress) {
            Ok(r) => r,
            Err(e) => return Err((done, e)),
        };
        let rows = match parse_all(format_of(path, opts), reader, &parse_options(path, opts)) {
            Ok(rows) => rows,
            Err(crate::ParseError::Invalid(e)) => return Err((done, LoadError::Rejected(e))),
            Err(crate::ParseError::Io(e)) => return Err((done, io_err(path, e))),
        };
        progress.rows(rows.len() as u64);
        let n = rows.len() as u64;
        // Row numbers of the changes, to name both rows of a duplicate identity.
        let row_of: Vec<usize> = rows.iter().map(|r| r.row).collect();
        let changes = rows.into_iter().map(|r| r.into_change(deriver)).collect();
        match store.apply(changes, ApplyMode::Diff) {
            Ok(applied) => done.push(DiffSummary { file: path.clone(), rows: n, applied }),
            Err(pmh_engine::Error::Rejected(e)) => {
                let errors = e
                    .problems
                    .into_iter()
                    .map(|p| RowError {
                        file: Some(path.display().to_string()),
                        row: row_of.get(p.index).copied().unwrap_or(0),
                        field: p.field.to_string(),
                        rule: p.rule,
                        message: p.message,
                        value: String::new(),
                    })
                    .collect();
                return Err((done, LoadError::Rejected(errors)));
            }
            Err(e) => return Err((done, e.into())),
        }
    }
    Ok(done)
}

// ---- full load ------------------------------------------------------------------------

/// One certificate on its way to the holders SST: sorted by (store key, PMH-ID).
struct HolderRec {
    key: [u8; 16],
    pmh: [u8; 16],
    /// xxh3-64 of `cert`, checked when the run is read back.
    digest: u64,
    cert: Vec<u8>,
}

/// One source-index entry: sorted by index key; file and row name duplicates.
struct SourceRec {
    key: Vec<u8>,
    value: [u8; 40],
    file: u16,
    row: u64,
}

/// A worker's sorted runs on disk.
struct Runs {
    holders: Vec<PathBuf>,
    source: Vec<PathBuf>,
}

struct Worker<'a> {
    id: usize,
    dir: &'a Path,
    budget: usize,
    used: usize,
    holders: Vec<HolderRec>,
    source: Vec<SourceRec>,
    runs: Runs,
}

impl Worker<'_> {
    fn push(&mut self, h: HolderRec, s: SourceRec) -> Result<(), LoadError> {
        self.used += h.cert.len() + s.key.len() + 120;
        self.holders.push(h);
        self.source.push(s);
        if self.used >= self.budget { self.spill() } else { Ok(()) }
    }

    fn spill(&mut self) -> Result<(), LoadError> {
        if self.holders.is_empty() {
            return Ok(());
        }
        let n = self.runs.holders.len();
        self.holders.sort_unstable_by_key(|a| (a.key, a.pmh));
        let hp = self.dir.join(format!("w{}-h{n}.run", self.id));
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&hp).map_err(|e| io_err(&hp, e))?);
        for r in self.holders.drain(..) {
            w.write_all(&r.key).map_err(|e| io_err(&hp, e))?;
            w.write_all(&r.pmh).map_err(|e| io_err(&hp, e))?;
            w.write_all(&r.digest.to_le_bytes()).map_err(|e| io_err(&hp, e))?;
            w.write_all(&(r.cert.len() as u32).to_le_bytes()).map_err(|e| io_err(&hp, e))?;
            w.write_all(&r.cert).map_err(|e| io_err(&hp, e))?;
        }
        w.flush().map_err(|e| io_err(&hp, e))?;
        self.source.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let sp = self.dir.join(format!("w{}-s{n}.run", self.id));
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&sp).map_err(|e| io_err(&sp, e))?);
        for r in self.source.drain(..) {
            w.write_all(&(r.key.len() as u32).to_le_bytes()).map_err(|e| io_err(&sp, e))?;
            w.write_all(&r.key).map_err(|e| io_err(&sp, e))?;
            w.write_all(&r.value).map_err(|e| io_err(&sp, e))?;
            w.write_all(&r.file.to_le_bytes()).map_err(|e| io_err(&sp, e))?;
            w.write_all(&r.row.to_le_bytes()).map_err(|e| io_err(&sp, e))?;
        }
        w.flush().map_err(|e| io_err(&sp, e))?;
        self.runs.holders.push(hp);
        self.runs.source.push(sp);
        self.used = 0;
        Ok(())
    }
}

/// Rows handed from the parser to the workers: (file index, row number, My Number,
/// certificate).
type Batch = Vec<(u16, u64, MyNumber, Certificate)>;

/// Work for the load workers: rows already validated (JSON), or raw CSV records that the
/// worker validates itself, so that validation — most of parsing's cost — runs on every
/// core.
enum Work {
    Rows(Batch),
    Csv(u16, crate::csv_reader::CsvBatch),
}

/// Deletes the staging directory however the load ends.
struct StagingGuard(PathBuf);
impl Drop for StagingGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads files as a complete new snapshot and switches to it atomically: [`prepare`] into
/// the store's staging directory, then [`install`].
pub fn full(
    store: &Store,
    deriver: &PmhIdDeriver,
    files: &[PathBuf],
    opts: &LoadOptions,
    progress: &dyn Progress,
) -> Result<FullSummary, LoadError> {
    let start = Instant::now();
    // Beside the store (same file system, so ingestion hard-links instead of copying),
    // not inside it: RocksDB owns its directory.
    let staging = opts.staging.clone().unwrap_or_else(|| {
        let mut s = store.path().as_os_str().to_owned();
        s.push(".staging");
        PathBuf::from(s)
    });
    let dir = staging.join(format!("snapshot-{}-{}", std::process::id(), unique()));
    let _guard = StagingGuard(dir.clone());
    let target = Target { key_of: &|id| store.key_of(id), sst: store.holders_sst_writer() };
    let mut summary = prepare_with(&target, deriver, files, opts, &dir, progress)?;
    progress.stage("install");
    summary.generation = install_files(store, &dir, summary.certificates)?;
    summary.elapsed = start.elapsed();
    Ok(summary)
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Where prepared SST files are meant to go: the key function and table format of the
/// target store.
struct Target<'a> {
    key_of: &'a (dyn Fn(&PmhId) -> StoreKey + Sync),
    sst: SstOptions,
}

/// The manifest a prepared snapshot directory carries (`snapshot.json`).
pub const MANIFEST: &str = "snapshot.json";

/// Prepares a complete snapshot in `out` (which must not exist) without opening any
/// store: validated, sorted SST files plus a manifest. A running server (or
/// `pmh-load install`) then switches to it with [`install`]. `tuning` must be the target
/// store's; the manifest records the secret's fingerprint so that a snapshot prepared
/// under another secret is refused at install.
pub fn prepare(
    tuning: &RocksTuning,
    deriver: &PmhIdDeriver,
    files: &[PathBuf],
    opts: &LoadOptions,
    out: &Path,
    progress: &dyn Progress,
) -> Result<FullSummary, LoadError> {
    if out.exists() {
        return Err(LoadError::Usage(format!("{}: already exists; prepare into a new directory", out.display())));
    }
    let target = Target { key_of: &|id: &PmhId| id.store_key(), sst: SstOptions::new(tuning) };
    prepare_with(&target, deriver, files, opts, out, progress).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(out);
    })
}

/// Installs a snapshot prepared by [`prepare`] and switches to it. Returns the generation.
pub fn install(store: &Store, dir: &Path) -> Result<u64, LoadError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let m: serde_json::Value = serde_json::from_str(&text).map_err(|e| io_err(&path, e))?;
    let fp = m.get("secretFingerprint").and_then(|v| v.as_str()).unwrap_or("");
    if let Some(want) = store.config().secret_fingerprint
        && fp != hex(&want)
    {
        return Err(LoadError::Usage(format!(
            "{}: prepared under another pmh_id_secret than this store's; refusing to install",
            dir.display()
        )));
    }
    let certificates = m.get("certificates").and_then(|v| v.as_u64()).unwrap_or(0);
    install_files(store, dir, certificates)
}

fn install_files(store: &Store, dir: &Path, certificates: u64) -> Result<u64, LoadError> {
    let (h, s) = (dir.join("holders.sst"), dir.join("source.sst"));
    let (hs, ss) = if certificates == 0 { (vec![], vec![]) } else { (vec![h], vec![s]) };
    for f in hs.iter().chain(&ss) {
        warm(f)?;
    }
    Ok(store.install_snapshot(&hs, &ss)?)
}

/// Reads a file once, sequentially, so that its pages are in the OS page cache.
///
/// RocksDB's `SstFileWriter` drops the pages it writes from the page cache (its
/// `invalidate_page_cache`, which the C API does not expose), so without this the first
/// lookups and diffs after a switch read every block from the disk at random: a 100 k-row
/// diff right after a 1 M-person load took 10.5 s instead of 2.7 s. One sequential pass
/// costs about what the disk reads per second; ingestion hard-links the file, so the
/// cached pages stay with it.
fn warm(path: &Path) -> Result<(), LoadError> {
    let mut f = File::open(path).map_err(|e| io_err(path, e))?;
    let mut buf = vec![0u8; 8 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(path, e)),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn prepare_with(
    target: &Target<'_>,
    deriver: &PmhIdDeriver,
    files: &[PathBuf],
    opts: &LoadOptions,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<FullSummary, LoadError> {
    let start = Instant::now();
    if files.len() > usize::from(u16::MAX) {
        return Err(LoadError::Usage(format!("at most {} files per load", u16::MAX)));
    }
    let runs_dir = dir.join("runs");
    std::fs::create_dir_all(&runs_dir).map_err(|e| io_err(&runs_dir, e))?;
    let _runs_guard = StagingGuard(runs_dir.clone());
    let dir_for_runs = &runs_dir;

    let threads = opts.threads.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<Work>(threads * 4);
    // Errors found by workers validating CSV records, with the file index for ordering.
    let worker_errors: std::sync::Mutex<Vec<(u16, RowError)>> = std::sync::Mutex::new(Vec::new());
    let failed = std::sync::atomic::AtomicBool::new(false);
    let mut errors: Vec<RowError> = Vec::new();
    let rows = AtomicU64::new(0);
    let deleted = AtomicU64::new(0);

    progress.stage("parse");
    let results: Vec<Result<Runs, LoadError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|id| {
                let rx = rx.clone();
                let (worker_errors, failed, deleted) = (&worker_errors, &failed, &deleted);
                scope.spawn(move || -> Result<Runs, LoadError> {
                    let mut w = Worker {
                        id,
                        dir: dir_for_runs,
                        budget: (opts.sort_budget_bytes / threads).max(1),
                        used: 0,
                        holders: Vec::new(),
                        source: Vec::new(),
                        runs: Runs { holders: Vec::new(), source: Vec::new() },
                    };
                    // People's rows are usually adjacent: derive each PMH-ID once.
                    let mut last: Option<(MyNumber, PmhId)> = None;
                    let mut add = |w: &mut Worker<'_>, file: u16, row: u64, number: MyNumber, cert: Certificate| {
                        let pmh = match &last {
                            Some((n, p)) if *n == number => *p,
                            _ => {
                                let p = deriver.derive(&number);
                                last = Some((number, p));
                                p
                            }
                        };
                        let key = (target.key_of)(&pmh);
                        let (bytes, digest) = encode_certificate(&cert)?;
                        let s = SourceRec {
                            key: cert.id().index_key(),
                            value: source_index_value(key, pmh, digest),
                            file,
                            row,
                        };
                        w.push(HolderRec { key: key.0, pmh: *pmh.as_bytes(), digest, cert: bytes }, s)
                    };
                    for work in rx {
                        match work {
                            Work::Rows(batch) => {
                                for (file, row, number, cert) in batch {
                                    add(&mut w, file, row, number, cert)?;
                                }
                            }
                            Work::Csv(file, batch) => {
                                let mut result = Ok(());
                                batch.validate(|row, r| match r {
                                    Ok(_) if failed.load(Ordering::Relaxed) => {}
                                    Ok(r) if r.is_deleted => {
                                        deleted.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Ok(r) => {
                                        if result.is_ok() {
                                            result = add(&mut w, file, row as u64, r.pmh_source, r.certificate);
                                        }
                                    }
                                    Err(e) => {
                                        failed.store(true, Ordering::Relaxed);
                                        if let Ok(mut all) = worker_errors.lock() {
                                            all.extend(e.into_iter().map(|e| (file, e)));
                                        }
                                    }
                                });
                                result?;
                            }
                        }
                    }
                    w.spill()?;
                    Ok(w.runs)
                })
            })
            .collect();
        drop(rx);
        let mut batch: Batch = Vec::with_capacity(1024);
        let mut send_failed = false;
        for (fi, path) in files.iter().enumerate() {
            let reader = match open(path, progress) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(unreadable(path, &e));
                    continue;
                }
            };
            if format_of(path, opts) == Format::Csv {
                let r = crate::csv_reader::split_csv(reader, &parse_options(path, opts), 512, |b| {
                    rows.fetch_add(b.len() as u64, Ordering::Relaxed);
                    progress.rows(b.len() as u64);
                    if !send_failed && tx.send(Work::Csv(fi as u16, b)).is_err() {
                        send_failed = true;
                    }
                });
                if let Err(e) = collect_parse_error(path, r.map(|_| crate::ParseSummary::default()), &mut errors) {
                    errors.push(unreadable(path, &e));
                }
                continue;
            }
            let r = parse(format_of(path, opts), reader, &parse_options(path, opts), |r| {
                rows.fetch_add(1, Ordering::Relaxed);
                progress.rows(1);
                match r {
                    Ok(row) if errors.is_empty() && !send_failed => {
                        if row.is_deleted {
                            deleted.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        batch.push((fi as u16, row.row as u64, row.pmh_source, row.certificate));
                        if batch.len() == 1024 && tx.send(Work::Rows(std::mem::take(&mut batch))).is_err() {
                            send_failed = true;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        batch.clear();
                        errors.extend(e);
                    }
                }
            });
            if let Err(e) = collect_parse_error(path, r, &mut errors) {
                errors.push(unreadable(path, &e));
            }
        }
        if errors.is_empty() && !batch.is_empty() {
            let _ = tx.send(Work::Rows(batch));
        }
        drop(tx);
        workers
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(LoadError::Usage("a worker panicked".into()))))
            .collect()
    });
    // Worker-found errors came in whatever order the batches were validated: report them
    // in file and row order, like the rest.
    let mut found = worker_errors.into_inner().unwrap_or_default();
    found.sort_by_key(|(file, e)| (*file, e.row));
    errors.extend(found.into_iter().map(|(_, e)| e));
    if !errors.is_empty() {
        return Err(LoadError::Rejected(errors));
    }
    let mut runs = Runs { holders: Vec::new(), source: Vec::new() };
    for r in results {
        let r = r?;
        runs.holders.extend(r.holders);
        runs.source.extend(r.source);
    }

    progress.stage("merge");
    let source_sst = dir.join("source.sst");
    let holders_sst = dir.join("holders.sst");
    // The two merges read disjoint runs and write different files: one thread each.
    let (certificates, holders) = std::thread::scope(|scope| {
        let source = scope.spawn(|| merge_source(&target.sst, &runs.source, &source_sst, files));
        let holders = merge_holders(&target.sst, &runs.holders, &holders_sst);
        let source = source.join().unwrap_or_else(|_| Err(LoadError::Usage("the index merge panicked".into())));
        (source, holders)
    });
    // Duplicate identities (from the index merge) are the user's error: report them first.
    let certificates = certificates?;
    let holders = holders?;
    if certificates == 0 && !opts.allow_empty {
        return Err(LoadError::Usage(
            "the files hold no certificate; a full load would empty the store (allow it explicitly)".into(),
        ));
    }
    let summary = FullSummary {
        rows: rows.load(Ordering::Relaxed),
        certificates,
        deleted_rows: deleted.load(Ordering::Relaxed),
        holders,
        generation: 0,
        elapsed: start.elapsed(),
    };
    let manifest = serde_json::json!({
        "format": "pmh-snapshot/1",
        "rows": summary.rows,
        "certificates": certificates,
        "holders": holders,
        "deletedRows": summary.deleted_rows,
        "secretFingerprint": hex(&deriver.fingerprint()),
        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
    });
    let mp = dir.join(MANIFEST);
    std::fs::write(&mp, manifest.to_string()).map_err(|e| io_err(&mp, e))?;
    Ok(summary)
}

/// Reads one length-prefixed record stream.
struct RunReader {
    path: PathBuf,
    r: BufReader<File>,
}

impl RunReader {
    fn open(path: &Path) -> Result<RunReader, LoadError> {
        let f = File::open(path).map_err(|e| io_err(path, e))?;
        Ok(RunReader { path: path.to_path_buf(), r: BufReader::with_capacity(1 << 20, f) })
    }

    /// Fills `buf` exactly; `Ok(false)` at a clean end of file.
    fn exact(&mut self, buf: &mut [u8]) -> Result<bool, LoadError> {
        match self.r.read_exact(buf) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(io_err(&self.path, e)),
        }
    }

    fn next_holder(&mut self) -> Result<Option<HolderRec>, LoadError> {
        let mut head = [0u8; 44];
        if !self.exact(&mut head)? {
            return Ok(None);
        }
        let mut digest = [0u8; 8];
        digest.copy_from_slice(&head[32..40]);
        let len = u32::from_le_bytes([head[40], head[41], head[42], head[43]]) as usize;
        let mut cert = vec![0u8; len];
        if !self.exact(&mut cert)? {
            return Err(io_err(&self.path, "truncated run"));
        }
        let mut key = [0u8; 16];
        let mut pmh = [0u8; 16];
        key.copy_from_slice(&head[..16]);
        pmh.copy_from_slice(&head[16..32]);
        Ok(Some(HolderRec { key, pmh, digest: u64::from_le_bytes(digest), cert }))
    }

    fn next_source(&mut self) -> Result<Option<SourceRec>, LoadError> {
        let mut len = [0u8; 4];
        if !self.exact(&mut len)? {
            return Ok(None);
        }
        let mut key = vec![0u8; u32::from_le_bytes(len) as usize];
        let mut rest = [0u8; 40 + 2 + 8];
        if !self.exact(&mut key)? || !self.exact(&mut rest)? {
            return Err(io_err(&self.path, "truncated run"));
        }
        let mut value = [0u8; 40];
        value.copy_from_slice(&rest[..40]);
        let file = u16::from_le_bytes([rest[40], rest[41]]);
        let mut row = [0u8; 8];
        row.copy_from_slice(&rest[42..]);
        Ok(Some(SourceRec { key, value, file, row: u64::from_le_bytes(row) }))
    }
}

/// Merges the source-index runs into one SST, rejecting duplicate identities (naming both
/// rows). Returns the number of certificates.
fn merge_source(opts: &SstOptions, runs: &[PathBuf], out: &Path, files: &[PathBuf]) -> Result<u64, LoadError> {
    let mut readers = runs.iter().map(|p| RunReader::open(p)).collect::<Result<Vec<_>, _>>()?;
    let mut heads: Vec<Option<SourceRec>> = Vec::with_capacity(readers.len());
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        let h = r.next_source()?;
        if let Some(h) = &h {
            heap.push(Reverse((h.key.clone(), i)));
        }
        heads.push(h);
    }
    let mut w = opts.writer();
    let mut opened = false;
    let mut n = 0u64;
    let mut prev: Option<SourceRec> = None;
    let mut dups = Vec::new();
    let name = |f: u16| files.get(usize::from(f)).map(|p| p.display().to_string());
    while let Some(Reverse((_, i))) = heap.pop() {
        let Some(rec) = heads[i].take() else { continue };
        heads[i] = readers[i].next_source()?;
        if let Some(h) = &heads[i] {
            heap.push(Reverse((h.key.clone(), i)));
        }
        if let Some(p) = &prev
            && p.key == rec.key
        {
            let id = pmh_engine::record::CertificateId::from_index_key(&rec.key);
            dups.push(RowError {
                file: name(rec.file),
                row: rec.row as usize,
                field: "historyKey".into(),
                rule: "unique certificate identity",
                message: format!(
                    "certificate {} appears twice (also {} row {})",
                    id.map(|id| format!(
                        "{}/{}/{}",
                        id.municipality_code, id.org_specific_certificate_type_id, id.history_key
                    ))
                    .unwrap_or_default(),
                    name(p.file).unwrap_or_default(),
                    p.row
                ),
                value: String::new(),
            });
            continue;
        }
        if dups.is_empty() {
            if !opened {
                w.open(out).map_err(|e| io_err(out, e.into_string()))?;
                opened = true;
            }
            w.put(&rec.key, rec.value).map_err(|e| io_err(out, e.into_string()))?;
        }
        n += 1;
        prev = Some(rec);
    }
    if !dups.is_empty() {
        return Err(LoadError::Rejected(dups));
    }
    if opened {
        w.finish().map_err(|e| io_err(out, e.into_string()))?;
    }
    Ok(n)
}

/// Merges the holder runs into one SST of buckets. Returns the number of holders.
fn merge_holders(opts: &SstOptions, runs: &[PathBuf], out: &Path) -> Result<u64, LoadError> {
    let mut readers = runs.iter().map(|p| RunReader::open(p)).collect::<Result<Vec<_>, _>>()?;
    let mut heads: Vec<Option<HolderRec>> = Vec::with_capacity(readers.len());
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        let h = r.next_holder()?;
        if let Some(h) = &h {
            heap.push(Reverse((h.key, h.pmh, i)));
        }
        heads.push(h);
    }
    let mut w = opts.writer();
    let mut opened = false;
    let mut holders = 0u64;
    let mut current: Option<([u8; 16], Bucket)> = None;
    let mut flush = |key: [u8; 16], bucket: Bucket, w: &mut rocksdb_writer::Writer<'_>| -> Result<(), LoadError> {
        let bytes = encode_bucket(&bucket).map_err(|e| LoadError::Usage(format!("serialize bucket: {e}")))?;
        if !opened {
            w.open(out).map_err(|e| io_err(out, e.into_string()))?;
            opened = true;
        }
        w.put(key, bytes).map_err(|e| io_err(out, e.into_string()))
    };
    while let Some(Reverse((_, _, i))) = heap.pop() {
        let Some(rec) = heads[i].take() else { continue };
        heads[i] = readers[i].next_holder()?;
        if let Some(h) = &heads[i] {
            heap.push(Reverse((h.key, h.pmh, i)));
        }
        let cert = decode_certificate(&rec.cert, rec.digest)
            .map_err(|e| io_err(out, format!("sort run record does not decode: {e}")))?;
        match &mut current {
            Some((k, b)) if *k == rec.key => match b.holders.last_mut() {
                Some(h) if h.pmh_id == rec.pmh => h.certificates.push(cert),
                _ => {
                    holders += 1;
                    b.holders.push(Holder { pmh_id: rec.pmh, certificates: vec![cert] });
                }
            },
            _ => {
                if let Some((k, b)) = current.take() {
                    flush(k, b, &mut w)?;
                }
                holders += 1;
                current =
                    Some((rec.key, Bucket { holders: vec![Holder { pmh_id: rec.pmh, certificates: vec![cert] }] }));
            }
        }
    }
    if let Some((k, b)) = current.take() {
        flush(k, b, &mut w)?;
    }
    if holders > 0 {
        w.finish().map_err(|e| io_err(out, e.into_string()))?;
    }
    Ok(holders)
}

/// The SST writer type, named for the closure above.
mod rocksdb_writer {
    pub type Writer<'a> = pmh_engine::snapshot::SstFileWriter<'a>;
}
