//! Full and differential loads into a store.
//!
//! ## Full load (全件): a new complete snapshot
//! ```text
//!  CSV ─▶ cut into chunks of whole records (this thread)
//!  ─▶ N workers: split fields, validate, derive PMH-ID and store key, serialize, digest
//!  ─▶ sorted runs on disk (O_DIRECT, cut by key range); each worker's last one in memory
//!  ─▶ merge tasks on N threads: source.sst (duplicates found here), holders-NNN.sst per
//!     key range, their pages kept in the page cache (`full`; dropped for `prepare`)
//!  ─▶ Store::install_snapshot (ingest into the inactive pair, told each file's key
//!     range by its writer instead of reading it; switch generation)
//!  ─▶ the runs are deleted (the new snapshot already serves)
//! ```
//! (JSON is parsed and validated on this thread and handed to the workers as rows.) The
//! sort buffers and the merge are in `sort.rs`.
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

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pmh_engine::change::{ApplyMode, ApplySummary, Change};
use pmh_engine::options::RocksTuning;
use pmh_engine::record::Certificate;
use pmh_engine::snapshot::{SstFile, SstOptions};
use pmh_engine::{MyNumber, PmhId, PmhIdDeriver, Store, StoreKey};

use crate::direct::{DirectReader, ReadAhead};
use crate::sort::{Runs, Sorter};
use crate::{Encoding, Format, ParseOptions, RowError, parse, parse_all};

/// How a load reads its files.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// File format; `None` decides by each file's extension (`.json` → JSON, else CSV).
    pub format: Option<Format>,
    /// CSV text encoding.
    pub encoding: Encoding,
    /// Worker threads for a full load and for parsing a differential CSV file (default:
    /// the machine's cores). A full load that spills sorted runs to disk parses on one
    /// more, which works while another waits for the disk.
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

/// The most worker threads a load runs ([`LoadOptions::threads`]; `pmh-load --threads`
/// takes the same range). Each parse worker of a full load holds its share of the sort
/// budget and opens every run it merges; far past the cores they only cost memory.
pub const MAX_THREADS: usize = 1024;

impl LoadOptions {
    /// [`LoadOptions::threads`], checked: 0 is taken as 1, and more than [`MAX_THREADS`]
    /// is refused before anything is read or written (spawning them could fail midway).
    fn worker_threads(&self) -> Result<usize, LoadError> {
        match self.threads {
            0 => Ok(1),
            t if t <= MAX_THREADS => Ok(t),
            t => Err(LoadError::Usage(format!("{t} worker threads asked for; at most {MAX_THREADS}"))),
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

pub(crate) fn io_err(path: &Path, e: impl std::fmt::Display) -> LoadError {
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
    /// From the start until the new snapshot served (what remained then was removing the
    /// sort runs). Zero when nothing was installed (`prepare`).
    pub live_after: Duration,
    /// Wall time, the removal of the sort runs included.
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

/// Opens a full load's input file: a regular file is read around the page cache, its next
/// block read ahead on `pool` (anything else, a pipe say, as [`open`] does).
///
/// A full load reads its input once. Read through the page cache, an input that was not
/// cached yet took a new page of memory for every 4 KiB, which costs about 7 µs on the
/// hosts of `docs/benchmarks.md` (a 2.9 GB file: 5 s of CPU); read directly it takes none,
/// and what was cached before stays cached until the merge begins.
fn open_input<'p>(path: &Path, progress: &'p dyn Progress, pool: &ReadAhead) -> Result<Box<dyn Read + 'p>, LoadError> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        let r = DirectReader::open(path, 0, u64::MAX, INPUT_BLOCK, Some(pool)).map_err(|e| io_err(path, e))?;
        return Ok(Box::new(Counting { inner: r, progress }));
    }
    Ok(Box::new(open(path, progress)?))
}

/// Bytes per direct read of a full load's input.
const INPUT_BLOCK: usize = 4 << 20;

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

/// Applies differential files, each atomically, in order. A file that fails stops the
/// run: the files before it stay applied and are returned with the error.
///
/// When the run ends, however it ends, the memtables are flushed ([`Store::persist`]), so
/// the applied files are in table files and the next open has no log to replay.
pub fn diff(
    store: &Store,
    deriver: &PmhIdDeriver,
    files: &[PathBuf],
    opts: &LoadOptions,
    progress: &dyn Progress,
) -> Result<Vec<DiffSummary>, (Vec<DiffSummary>, LoadError)> {
    let threads = match opts.worker_threads() {
        Ok(t) => t,
        Err(e) => return Err((Vec::new(), e)),
    };
    let mut done = Vec::new();
    let mut failed = None;
    for path in files {
        match diff_file(store, deriver, path, opts, threads, progress) {
            Ok(summary) => done.push(summary),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if !done.is_empty() {
        progress.stage("persist");
        // The files are applied (their batches are in the log) whatever happens here.
        if let Err(e) = store.persist() {
            match &failed {
                None => failed = Some(e.into()),
                Some(first) => tracing::warn!(error = %e, "flush after a failed diff run ({first})"),
            }
        }
    }
    match failed {
        None => Ok(done),
        Some(e) => Err((done, e)),
    }
}

/// Parses and applies one differential file as one change set.
fn diff_file(
    store: &Store,
    deriver: &PmhIdDeriver,
    path: &Path,
    opts: &LoadOptions,
    threads: usize,
    progress: &dyn Progress,
) -> Result<DiffSummary, LoadError> {
    progress.stage(&format!("diff {}", path.display()));
    let reader = open(path, progress)?;
    let (row_of, changes) =
        match parse_changes(format_of(path, opts), reader, &parse_options(path, opts), deriver, threads) {
            Ok(parsed) => parsed,
            Err(crate::ParseError::Invalid(e)) => return Err(LoadError::Rejected(e)),
            Err(crate::ParseError::Io(e)) => return Err(io_err(path, e)),
        };
    progress.rows(changes.len() as u64);
    let n = changes.len() as u64;
    match store.apply(changes, ApplyMode::Diff) {
        Ok(applied) => Ok(DiffSummary { file: path.to_path_buf(), rows: n, applied }),
        Err(pmh_engine::Error::Rejected(e)) => Err(LoadError::Rejected(
            e.problems
                .into_iter()
                .map(|p| RowError {
                    file: Some(path.display().to_string()),
                    row: row_of.get(p.index).copied().unwrap_or(0),
                    field: p.field.to_string(),
                    rule: p.rule,
                    message: p.message,
                    value: String::new(),
                })
                .collect(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Parses a whole differential file into engine changes, all or nothing (as
/// [`parse_all`]), with the row number of each change (to name both rows of a duplicate
/// identity). CSV is cut into chunks of whole records that `threads` workers split,
/// validate and turn into changes (deriving the PMH-ID) in parallel, exactly as the full
/// load does: a 100,000-row diff spent a third of its time parsing on one core. JSON is
/// parsed on this thread. At most [`MAX_THREADS`] workers run, whatever `threads` asks.
pub fn parse_changes<R: Read>(
    format: Format,
    input: R,
    opts: &ParseOptions,
    deriver: &PmhIdDeriver,
    threads: usize,
) -> Result<(Vec<usize>, Vec<Change>), crate::ParseError> {
    parse_changes_in_chunks(format, input, opts, deriver, threads.min(MAX_THREADS), CHUNK_BYTES)
}

/// [`parse_changes`] with CSV chunks of about `chunk_bytes` (tests use tiny ones).
pub(crate) fn parse_changes_in_chunks<R: Read>(
    format: Format,
    input: R,
    opts: &ParseOptions,
    deriver: &PmhIdDeriver,
    threads: usize,
    chunk_bytes: usize,
) -> Result<(Vec<usize>, Vec<Change>), crate::ParseError> {
    if format == Format::Json || threads < 2 {
        let rows = parse_all(format, input, opts)?;
        let row_of = rows.iter().map(|r| r.row).collect();
        return Ok((row_of, rows.into_iter().map(|r| r.into_change(deriver)).collect()));
    }
    // Each worker keeps what it parsed, tagged with the chunk's sequence number, and hands
    // it back when it ends; the chunks are put back in file order below.
    type Parsed = (usize, Vec<(usize, Change)>, Vec<RowError>);
    let (split, mut parsed) = std::thread::scope(|scope| {
        let (tx, rx) = crossbeam_channel::bounded::<(usize, crate::csv_reader::CsvBatch)>(threads * 2);
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                scope.spawn(move || {
                    let mut mine: Vec<Parsed> = Vec::new();
                    for (seq, batch) in rx {
                        let (mut ok, mut errors) = (Vec::with_capacity(batch.len()), Vec::new());
                        batch.validate(|row, r| match r {
                            Ok(r) if errors.is_empty() => ok.push((row, r.into_change(deriver))),
                            Ok(_) => {}
                            Err(e) => errors.extend(e),
                        });
                        if !errors.is_empty() {
                            ok.clear();
                        }
                        mine.push((seq, ok, errors));
                    }
                    mine
                })
            })
            .collect();
        drop(rx);
        let mut seq = 0;
        let r = crate::csv_reader::split_csv_chunks(
            input,
            opts,
            chunk_bytes,
            || None,
            |b| {
                // The workers only stop when the channel closes, so a send cannot fail.
                let _ = tx.send((seq, b));
                seq += 1;
            },
        );
        drop(tx);
        // A worker that panicked takes the caller down with it, as a scoped thread would.
        let parsed: Vec<Parsed> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect();
        (r, parsed)
    });
    split?;
    parsed.sort_unstable_by_key(|(seq, _, _)| *seq);
    let errors: Vec<RowError> = parsed.iter_mut().flat_map(|(_, _, e)| std::mem::take(e)).collect();
    if !errors.is_empty() {
        return Err(crate::ParseError::Invalid(errors));
    }
    // Sized up front: collected by doubling, a 100k-row diff's changes (≈ 45 MB) were
    // copied into fresh pages again and again.
    let n = parsed.iter().map(|(_, ok, _)| ok.len()).sum();
    let (mut row_of, mut changes) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (row, change) in parsed.into_iter().flat_map(|(_, ok, _)| ok) {
        row_of.push(row);
        changes.push(change);
    }
    Ok((row_of, changes))
}

// ---- full load ------------------------------------------------------------------------

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

/// Bytes of CSV per batch handed to the workers (whole records; see
/// `csv_reader::split_csv_chunks`): about 3,500 rows of the generated files, small enough
/// that the workers finish together, large enough that handing over costs nothing.
const CHUNK_BYTES: usize = 1 << 20;

/// Deletes the staging directory however the load ends.
struct StagingGuard(PathBuf);
impl Drop for StagingGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes a directory made for the load if the load leaves it empty (`remove_dir` fails on
/// one that is not, which is left as it is).
struct EmptyDirGuard(Option<PathBuf>);
impl Drop for EmptyDirGuard {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
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
    remove_stale_snapshots(&staging);
    // The default staging directory goes with the load, so that nothing is left beside the
    // store; one the caller named is the caller's. (Dropped after `_guard`, which empties it.)
    let _staging_guard = EmptyDirGuard(opts.staging.is_none().then(|| staging.clone()));
    let dir = staging.join(format!("snapshot-{}-{}", std::process::id(), unique()));
    let _guard = StagingGuard(dir.clone());
    let target = Target {
        key_of: &|id| store.key_of(id),
        // This store's writers: they keep their pages (see `Target::holders`).
        holders: store.holders_sst_writer(),
        source: store.source_sst_writer(),
    };
    let (mut summary, merged) = prepare_with(&target, deriver, files, opts, &dir, progress)?;
    progress.stage("install");
    // The writers left every page in the page cache and told the ingestion what it needs
    // to know of each file, so nothing is read again (see `Target::holders`).
    summary.generation = store.install_snapshot(&merged.holder_files, &merged.source_files)?;
    summary.live_after = start.elapsed();
    // The sort runs are removed only now: on a file system mounted with `discard`, freeing
    // their blocks can wait for the disk (4-5 s for the 5 GB of a 10 M load in one
    // measurement, under 0.1 s in another), and the new snapshot need not wait for that.
    progress.stage("remove sort runs");
    drop(merged);
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// Removes what earlier full loads of this store left in its staging directory: a load
/// killed with SIGKILL (or by a power cut) never runs its clean-up, and its runs and SST
/// files take about 1.2 × the store's size. Whoever calls this holds the store open, and
/// RocksDB lets one process do that, so no other full load of this store is running:
/// every `snapshot-*` directory there is a leftover.
fn remove_stale_snapshots(staging: &Path) {
    let Ok(entries) = std::fs::read_dir(staging) else { return };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("snapshot-") {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => tracing::info!(dir = %e.path().display(), "removed what an interrupted full load left"),
                Err(err) => {
                    tracing::warn!(dir = %e.path().display(), %err, "could not remove an interrupted load's files")
                }
            }
        }
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Where prepared SST files are meant to go: the key function and table format of the
/// target store.
struct Target<'a> {
    key_of: &'a (dyn Fn(&PmhId) -> StoreKey + Sync),
    /// The holders files' format (PlainTable), and whether their writers keep their pages.
    ///
    /// `full` installs the files itself and serves them as soon as they are written: its
    /// writers (the store's) keep the pages they write in the page cache, so that the new
    /// snapshot answers from memory without reading anything back, and the ingestion, told
    /// by the writers where each file's keys start and end, does not read them either.
    /// `prepare`'s directory may wait long enough for its pages to leave the cache: its
    /// writers drop them as RocksDB's do, and its install reads the files back
    /// ([`install_read_back`]).
    holders: SstOptions,
    /// The source index's format (block-based), its pages kept as the holders' are.
    source: SstOptions,
}

/// The manifest a prepared snapshot directory carries (`snapshot.json`).
pub const MANIFEST: &str = "snapshot.json";

/// The `format` of a manifest this build writes and installs. 3: the holders files are
/// PlainTable (store schema 3); 2 and 1 had block-based holders files.
pub const SNAPSHOT_FORMAT: &str = "pmh-snapshot/3";

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
    let target = Target {
        key_of: &|id: &PmhId| id.store_key(),
        holders: SstOptions::holders(tuning),
        source: SstOptions::source(tuning),
    };
    prepare_with(&target, deriver, files, opts, out, progress).map(|(summary, _)| summary).inspect_err(|_| {
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
    // Formats 1 and 2 hold block-based holders files, which a schema-3 store cannot read.
    let format = m.get("format").and_then(|v| v.as_str()).unwrap_or("");
    if format != SNAPSHOT_FORMAT {
        return Err(LoadError::Usage(format!(
            "{}: format {format:?}, this build installs {SNAPSHOT_FORMAT:?} (older formats hold the holders in \
             RocksDB's block-based format); prepare the snapshot again with this build",
            path.display()
        )));
    }
    // A damaged list must not install fewer files than were prepared: that would switch
    // to a snapshot missing people.
    let listed = |field: &str| -> Result<Vec<PathBuf>, LoadError> {
        let names = m.get(field).and_then(|v| v.as_array());
        names
            .and_then(|names| names.iter().map(|n| n.as_str().map(|n| dir.join(n))).collect::<Option<Vec<_>>>())
            .ok_or_else(|| LoadError::Usage(format!("{}: `{field}` must be a list of file names", path.display())))
    };
    let (holders, source) = (listed("holderFiles")?, listed("sourceFiles")?);
    for f in holders.iter().chain(&source) {
        if f.parent() != Some(dir) {
            return Err(LoadError::Usage(format!("{}: lists a file outside its directory", path.display())));
        }
    }
    let at = |v: Vec<PathBuf>| v.into_iter().map(SstFile::at).collect::<Vec<_>>();
    install_read_back(store, &at(holders), &at(source))
}

/// Installs files that another process wrote (a prepared directory), and brings them
/// into the page cache on the way. Their writers dropped their pages, and they may have
/// waited long since; RocksDB opens each file to learn its key range, which for the
/// holders' PlainTable files means reading every key (the format cannot seek to its
/// last), so those come back by themselves.
fn install_read_back(store: &Store, holders: &[SstFile], source: &[SstFile]) -> Result<u64, LoadError> {
    for f in holders.iter().chain(source) {
        if !f.path().is_file() {
            return Err(io_err(f.path(), "prepared SST file is missing"));
        }
    }
    // The source index (block-based) is read only at its ends by the ingestion.
    source.iter().for_each(|f| crate::sort::prefetch(f.path()));
    // The ingestion reads the holders files whole. Meanwhile another thread touches every
    // page of the source index (which the first diff reads) and of the files the
    // ingestion reads last, paying the first reads' cost (`sort::touch`) on the core the
    // ingestion leaves idle.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for f in source.iter().chain(holders.iter().rev()) {
                if !crate::sort::touch(f.path(), &stop) {
                    return;
                }
            }
        });
        let r = store.install_snapshot(holders, source);
        stop.store(true, Ordering::Relaxed);
        Ok(r?)
    })
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
) -> Result<(FullSummary, Merged), LoadError> {
    let start = Instant::now();
    if files.len() > usize::from(u16::MAX) {
        return Err(LoadError::Usage(format!("at most {} files per load", u16::MAX)));
    }
    let threads = opts.worker_threads()?;
    let runs_dir = dir.join("runs");
    std::fs::create_dir_all(&runs_dir).map_err(|e| io_err(&runs_dir, e))?;
    // Removes the runs on any error; on success the caller's `Merged` owns it.
    let runs_guard = StagingGuard(runs_dir.clone());
    let dir_for_runs = &runs_dir;

    // What the sort buffers will hold, from the input's size: a certificate's archive and
    // index key take about 1.5 bytes per byte of its CSV row.
    let input_bytes: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let expected = usize::try_from(input_bytes.saturating_mul(3) / 2).unwrap_or(usize::MAX);
    // A load that spills runs one parse worker more than `threads`. A worker stops for the
    // direct writes of every run it spills (about 0.3 s of disk for each of a 10 M load's),
    // and the extra worker has its core meanwhile: in 10 M loads the parse phase waited for
    // the disk 12 % of the time with two workers on two cores and 2 % with three, and took
    // 11.7–13.1 s instead of 13.3–14.7 s (docs/benchmarks.md, nineteenth round).
    let workers = threads.saturating_add(usize::from(expected > opts.sort_budget_bytes));
    let (tx, rx) = crossbeam_channel::bounded::<Work>(workers * 4);
    // Validated CSV batches go back to the splitter, which reuses their record buffers.
    let (done_tx, done_rx) = crossbeam_channel::bounded::<crate::csv_reader::CsvBatch>(workers * 4 + 2);
    // Errors found by workers validating CSV records, with the file index for ordering.
    let worker_errors: std::sync::Mutex<Vec<(u16, RowError)>> = std::sync::Mutex::new(Vec::new());
    let failed = std::sync::atomic::AtomicBool::new(false);
    let mut errors: Vec<RowError> = Vec::new();
    let rows = AtomicU64::new(0);
    let deleted = AtomicU64::new(0);

    progress.stage("parse");
    let results: Vec<Result<Runs, LoadError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..workers)
            .map(|id| {
                let (rx, done_tx) = (rx.clone(), done_tx.clone());
                let (worker_errors, failed, deleted) = (&worker_errors, &failed, &deleted);
                scope.spawn(move || -> Result<Runs, LoadError> {
                    let mut w = Sorter::new(id, dir_for_runs, opts.sort_budget_bytes / workers, expected / workers);
                    // People's rows are usually adjacent: derive each PMH-ID once.
                    let mut last: Option<(MyNumber, PmhId)> = None;
                    let mut add = |w: &mut Sorter<'_>, file: u16, row: u64, number: MyNumber, cert: Certificate| {
                        let pmh = match &last {
                            Some((n, p)) if *n == number => *p,
                            _ => {
                                let p = deriver.derive(&number);
                                last = Some((number, p));
                                p
                            }
                        };
                        w.push((target.key_of)(&pmh), &pmh, &cert, file, row)
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
                                // Full only if the splitter has stopped taking them back.
                                let _ = done_tx.try_send(batch);
                                result?;
                            }
                        }
                    }
                    w.finish()
                })
            })
            .collect();
        drop(rx);
        let mut batch: Batch = Vec::with_capacity(1024);
        let mut send_failed = false;
        let input_pool = ReadAhead::new(1);
        for (fi, path) in files.iter().enumerate() {
            let reader = match open_input(path, progress, &input_pool) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(unreadable(path, &e));
                    continue;
                }
            };
            if format_of(path, opts) == Format::Csv {
                let r = crate::csv_reader::split_csv_chunks(
                    reader,
                    &parse_options(path, opts),
                    CHUNK_BYTES,
                    || done_rx.try_recv().ok(),
                    |b| {
                        rows.fetch_add(b.len() as u64, Ordering::Relaxed);
                        progress.rows(b.len() as u64);
                        if !send_failed && tx.send(Work::Csv(fi as u16, b)).is_err() {
                            send_failed = true;
                        }
                    },
                );
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
    let mut runs = Runs::default();
    for r in results {
        runs.extend(r?);
    }

    let source_bytes: u64 = runs.source.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum::<u64>()
        + runs.memory.iter().map(crate::sort::MemoryRun::source_bytes).sum::<u64>();
    tracing::debug!(
        runs = runs.holders.len() + runs.source.len(),
        in_memory = runs.memory.len(),
        holder_bytes = runs.holder_bytes(),
        source_bytes,
        "sorted runs written"
    );
    progress.stage("merge");
    // The input has been read: its cached pages go now, just before the merge fills the
    // page cache with the snapshot's files. Memory freed just before it is needed again is
    // the cheapest there is: on the hosts of docs/benchmarks.md a page free for a few
    // seconds is handed back to the hypervisor and costs about 7 µs more at its next use
    // (eighteenth round), and the input's pages freed here are taken again at once
    // (twentieth round).
    files.iter().for_each(|f| crate::direct::drop_cached(f));
    let merged = merge(target, &runs, dir, files, threads)?;
    let (certificates, holders) = (merged.certificates, merged.holders);
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
        live_after: Duration::ZERO,
        elapsed: start.elapsed(),
    };
    let names = |v: &[SstFile]| {
        v.iter().filter_map(|f| f.path().file_name()).map(|n| n.to_string_lossy().into_owned()).collect::<Vec<_>>()
    };
    let manifest = serde_json::json!({
        "format": SNAPSHOT_FORMAT,
        "holderFiles": names(&merged.holder_files),
        "sourceFiles": names(&merged.source_files),
        "rows": summary.rows,
        "certificates": certificates,
        "holders": holders,
        "deletedRows": summary.deleted_rows,
        "secretFingerprint": hex(&deriver.fingerprint()),
        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
    });
    let mp = dir.join(MANIFEST);
    std::fs::write(&mp, manifest.to_string()).map_err(|e| io_err(&mp, e))?;
    Ok((summary, Merged { _runs: Some(runs_guard), ..merged }))
}

/// What the merge wrote.
struct Merged {
    certificates: u64,
    holders: u64,
    /// Holder SST files, in key order, not overlapping.
    holder_files: Vec<SstFile>,
    /// Source-index SST files.
    source_files: Vec<SstFile>,
    /// The sort runs' directory, removed when this is dropped.
    _runs: Option<StagingGuard>,
}

/// One piece of the merge.
#[derive(Debug, Clone, Copy)]
enum MergeTask {
    /// The whole source index (duplicates are found here).
    Source,
    /// One key range of the holders.
    Holders(usize, (usize, usize)),
}

/// Holder bytes per merge task that make the holders SST files about this size.
const HOLDER_PART_BYTES: u64 = 256 << 20;

/// Merges the runs into SST files in `dir` on `threads` threads: the source index as one
/// task, the holders as one task per key range (at least two per thread, so the threads
/// finish together; more for big loads, so no file is much above [`HOLDER_PART_BYTES`]).
fn merge(target: &Target<'_>, runs: &Runs, dir: &Path, files: &[PathBuf], threads: usize) -> Result<Merged, LoadError> {
    let parts = (runs.holder_bytes().div_ceil(HOLDER_PART_BYTES) as usize).max(2 * threads);
    let ranges = crate::sort::key_ranges(parts);
    let mut tasks = vec![MergeTask::Source];
    tasks.extend(ranges.iter().enumerate().map(|(p, &r)| MergeTask::Holders(p, r)));
    let holder_path = |p: usize| dir.join(format!("holders-{p:03}.sst"));
    let source_path = dir.join("source.sst");
    let pool = crate::direct::ReadAhead::new(threads);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    // (task, its result: certificates for the index, holders for a range, and the file)
    type Done = (usize, Result<(u64, Option<SstFile>), LoadError>);
    let done: std::sync::Mutex<Vec<Done>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(tasks.len()) {
            scope.spawn(|| {
                loop {
                    let t = next.fetch_add(1, Ordering::Relaxed);
                    if t >= tasks.len() || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let began = Instant::now();
                    let r = match tasks[t] {
                        MergeTask::Source => {
                            crate::sort::merge_source(&target.source, runs, &source_path, files, &pool)
                        }
                        MergeTask::Holders(p, range) => {
                            crate::sort::merge_holders(&target.holders, runs, range, &holder_path(p), &pool)
                        }
                    };
                    tracing::debug!(task = ?tasks[t], ms = began.elapsed().as_millis() as u64, "merge task done");
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut d) = done.lock() {
                        d.push((t, r));
                    }
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_default();
    done.sort_by_key(|(t, _)| *t);
    if done.len() != tasks.len() {
        // A task failed and the rest stopped: report the failure, duplicates first (the
        // index task is task 0).
        return Err(done
            .into_iter()
            .find_map(|(_, r)| r.err())
            .unwrap_or_else(|| LoadError::Usage("a merge thread panicked".into())));
    }
    let mut merged =
        Merged { certificates: 0, holders: 0, holder_files: Vec::new(), source_files: Vec::new(), _runs: None };
    for (t, r) in done {
        let (n, file) = r?;
        match tasks[t] {
            MergeTask::Source => {
                merged.certificates = n;
                merged.source_files.extend(file);
            }
            MergeTask::Holders(..) => {
                merged.holders += n;
                merged.holder_files.extend(file);
            }
        }
    }
    Ok(merged)
}
