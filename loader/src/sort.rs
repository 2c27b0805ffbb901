//! The full load's external sort: per-worker sort buffers that spill sorted runs to disk,
//! and the merge of those runs into SST files.
//!
//! ```text
//!  worker: push(cert) ─▶ arena + index ─(budget full)─▶ sort index ─▶ run file
//!                                   │                      (holders: cut by key range)
//!                                   └─(input ends)─▶ sort index ─▶ run in memory
//!  merge:  task "index"      : all source runs  ─▶ k-way merge ─▶ source.sst
//!          task "holders p"  : range p of every holder run ─▶ k-way merge ─▶ holders-p.sst
//! ```
//!
//! Each worker appends certificate archives and index keys to two byte arenas (reserved up
//! front) and keeps a small fixed-size entry per certificate, so a push allocates nothing.
//! A spill sorts the entries and writes the records in that order. What is buffered when
//! the input ends is sorted and merged from memory along with the files (a load that fits
//! the budget writes no run at all). The merge frames each holder's archives into a
//! holders value as they are, after checking each against its digest: a certificate is
//! serialised once in a whole load. Certificates of one holder keep the order of their
//! worker's input: within a run, entries tie-break on their place in the buffer, and
//! across runs on the run's place, a worker's memory run coming after its files.
//!
//! Holder runs are cut into key ranges as they are written: the run remembers where the
//! records whose store key starts with each byte value begin. The store key is a hash, so
//! the ranges are even, and the merge becomes independent tasks — one per range, run on
//! every core, each writing its own SST file. The files do not overlap and are ingested
//! together. The source-index keys are not hashes (they start with the municipality code),
//! so the index is merged by one task, which runs beside the holder tasks.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use pmh_engine::change::{encode_certificate_into, source_index_value};
use pmh_engine::record::{BucketEncoder, Certificate, write_index_key};
use pmh_engine::snapshot::{SstFile, SstOptions};
use pmh_engine::{PmhId, StoreKey};

use crate::RowError;
use crate::direct::{DirectReader, DirectWriter, ReadAhead};
use crate::load::{LoadError, io_err};

/// Bytes of a holder record's head in a run: store key, PMH-ID, digest, archive length.
const HOLDER_HEAD: usize = 16 + 16 + 8 + 4;
/// Bytes of a source record after its key: value, file index, row.
const SOURCE_TAIL: usize = 40 + 2 + 8;
/// Read buffer per run reader in a merge (one direct read per buffer, the next read ahead).
const READ_BUF: usize = 1 << 20;
/// Write buffer of a spill (one direct write each time it fills).
const WRITE_BUF: usize = 2 << 20;

/// One sorted run of holder records, with where each first key byte's records begin.
pub(crate) struct HolderRun {
    pub(crate) path: PathBuf,
    /// `bounds[b]`: offset of the first record whose key starts with a byte ≥ `b`;
    /// `bounds[256]` is the file's length.
    bounds: Vec<u64>,
}

/// A worker's sorted runs: on disk, and its last sort buffer kept in memory.
#[derive(Default)]
pub(crate) struct Runs {
    pub(crate) holders: Vec<HolderRun>,
    pub(crate) source: Vec<PathBuf>,
    pub(crate) memory: Vec<MemoryRun>,
}

/// A worker's last sort buffer, sorted and merged from memory rather than spilled: writing
/// it to a run only to read it back cost the disk its size twice (at 1 M certificates, most
/// of the runs' bytes).
pub(crate) struct MemoryRun {
    archives: Vec<u8>,
    /// In key order.
    holders: Vec<HolderEntry>,
    /// `bounds[b]`: index of the first entry of `holders` whose key starts with a byte ≥ `b`.
    bounds: Vec<usize>,
    keys: Vec<u8>,
    source: Vec<SourceEntry>,
    /// `source`'s order (see [`Sorter::sort`]).
    order: Vec<(u128, u128, usize)>,
}

impl MemoryRun {
    /// Bytes its holder records would take in a run file.
    fn holder_bytes(&self) -> u64 {
        (self.archives.len() + self.holders.len() * HOLDER_HEAD) as u64
    }

    /// Bytes its source records would take in a run file.
    pub(crate) fn source_bytes(&self) -> u64 {
        (self.keys.len() + self.source.len() * (4 + SOURCE_TAIL)) as u64
    }
}

impl Runs {
    /// Adds another worker's runs.
    pub(crate) fn extend(&mut self, other: Runs) {
        self.holders.extend(other.holders);
        self.source.extend(other.source);
        self.memory.extend(other.memory);
    }

    /// Bytes of holder records, all runs (in memory too).
    pub(crate) fn holder_bytes(&self) -> u64 {
        self.holders.iter().map(|r| r.bounds[256]).sum::<u64>()
            + self.memory.iter().map(MemoryRun::holder_bytes).sum::<u64>()
    }
}

/// A certificate in a sort buffer: where its archive is in the arena. Key and PMH-ID are
/// big-endian integers, so that they sort like the bytes but compare in one instruction.
struct HolderEntry {
    key: u128,
    pmh: u128,
    digest: u64,
    at: usize,
    len: u32,
}

/// A source-index entry in a sort buffer: where its key is in the arena.
struct SourceEntry {
    at: usize,
    len: u32,
    file: u16,
    row: u64,
    value: [u8; 40],
}

/// One worker's sort buffer.
pub(crate) struct Sorter<'a> {
    id: usize,
    dir: &'a Path,
    budget: usize,
    archives: Vec<u8>,
    holders: Vec<HolderEntry>,
    keys: Vec<u8>,
    source: Vec<SourceEntry>,
    /// The order of `source` at a spill: key prefix (see [`key_prefix`]) and index.
    order: Vec<(u128, u128, usize)>,
    runs: Runs,
}

/// The first 32 bytes of an index key, zero-padded, as two big-endian integers. Two keys
/// whose prefixes differ compare as their prefixes do (a key shorter than 32 bytes is padded
/// with the smallest byte); keys whose prefixes are equal must be compared whole.
fn key_prefix(key: &[u8]) -> (u128, u128) {
    let mut b = [0u8; 32];
    let n = key.len().min(32);
    b[..n].copy_from_slice(&key[..n]);
    let (hi, lo) = b.split_at(16);
    (u128::from_be_bytes(hi.try_into().unwrap_or_default()), u128::from_be_bytes(lo.try_into().unwrap_or_default()))
}

impl<'a> Sorter<'a> {
    /// A buffer that spills into `dir` whenever it holds about `budget` bytes, for about
    /// `expected` bytes of input in all.
    ///
    /// The buffers are reserved up front for what will be buffered (the budget, or less for
    /// a small input): grown by doubling, the first fill of a 256 MB buffer copied itself
    /// nine times into fresh pages, a fifth of a 1 M-certificate load's CPU. A reservation
    /// only touches the pages that are written.
    pub(crate) fn new(id: usize, dir: &'a Path, budget: usize, expected: usize) -> Sorter<'a> {
        let budget = budget.max(1);
        // An archive is ~430 bytes, its index key ~25, each entry 64: archives take most of
        // the budget, and there are at most one entry of each kind per ~500 bytes of it.
        let archives = budget.min(expected);
        Sorter {
            id,
            dir,
            budget,
            archives: Vec::with_capacity(archives),
            holders: Vec::with_capacity(archives / 400),
            keys: Vec::with_capacity(archives / 12),
            source: Vec::with_capacity(archives / 400),
            order: Vec::new(),
            runs: Runs::default(),
        }
    }

    /// Adds one certificate of the holder `pmh` (stored under `key`), read from row `row`
    /// of file `file`.
    pub(crate) fn push(
        &mut self,
        key: StoreKey,
        pmh: &PmhId,
        cert: &Certificate,
        file: u16,
        row: u64,
    ) -> Result<(), LoadError> {
        let at = self.archives.len();
        let digest = encode_certificate_into(cert, &mut self.archives)?;
        let len = u32::try_from(self.archives.len() - at)
            .map_err(|_| LoadError::Usage(format!("row {row}: certificate too large")))?;
        let (key_int, pmh_int) = (u128::from_be_bytes(key.0), u128::from_be_bytes(*pmh.as_bytes()));
        self.holders.push(HolderEntry { key: key_int, pmh: pmh_int, digest, at, len });
        let kat = self.keys.len();
        write_index_key(
            cert.municipality_code,
            &cert.org_specific_certificate_type_id,
            &cert.history_key,
            &mut self.keys,
        );
        let klen = u32::try_from(self.keys.len() - kat)
            .map_err(|_| LoadError::Usage(format!("row {row}: certificate identity too long")))?;
        self.source.push(SourceEntry { at: kat, len: klen, file, row, value: source_index_value(key, *pmh, digest) });
        // `order` is filled at a spill, one element per entry.
        let used = self.archives.len()
            + self.keys.len()
            + self.holders.len() * size_of::<HolderEntry>()
            + self.source.len() * (size_of::<SourceEntry>() + size_of::<(u128, u128, usize)>());
        if used >= self.budget { self.spill() } else { Ok(()) }
    }

    /// Returns every run: those spilled, and what is still buffered, sorted, as a run in
    /// memory.
    pub(crate) fn finish(mut self) -> Result<Runs, LoadError> {
        if self.holders.is_empty() {
            return Ok(self.runs);
        }
        self.sort();
        let mut bounds = vec![0usize; 257];
        for (b, at) in bounds.iter_mut().enumerate() {
            *at = self.holders.partition_point(|h| usize::from(h.key.to_be_bytes()[0]) < b);
        }
        self.runs.memory.push(MemoryRun {
            archives: self.archives,
            holders: self.holders,
            bounds,
            keys: self.keys,
            source: self.source,
            order: self.order,
        });
        Ok(self.runs)
    }

    /// Sorts the buffered holder entries by key, and `order` (the source entries' order)
    /// by index key.
    fn sort(&mut self) {
        // Ties (one holder's certificates) keep their input order: `at` grows with it.
        self.holders.sort_unstable_by_key(|h| (h.key, h.pmh, h.at));
        let (keys, source) = (&self.keys, &self.source);
        let key = |e: &SourceEntry| &keys[e.at..e.at + e.len as usize];
        // Sorted by the keys' first 32 bytes held inline, the whole keys compared only when
        // those tie: comparing each pair through the arena (a cache miss and a memcmp call)
        // was 7 % of a full load's CPU.
        self.order.clear();
        self.order.extend(source.iter().enumerate().map(|(i, e)| {
            let (hi, lo) = key_prefix(key(e));
            (hi, lo, i)
        }));
        self.order.sort_unstable_by(|x, y| {
            (x.0, x.1).cmp(&(y.0, y.1)).then_with(|| {
                let (a, b) = (&source[x.2], &source[y.2]);
                key(a).cmp(key(b)).then((a.file, a.row).cmp(&(b.file, b.row)))
            })
        });
    }

    fn spill(&mut self) -> Result<(), LoadError> {
        if self.holders.is_empty() {
            return Ok(());
        }
        let n = self.runs.source.len();
        self.sort();
        let path = self.dir.join(format!("w{}-h{n}.run", self.id));
        let mut w = RunWriter::create(&path)?;
        let mut bounds = vec![0u64; 257];
        let mut next_byte = 0usize;
        for (i, h) in self.holders.iter().enumerate() {
            if let Some(ahead) = self.holders.get(i + GATHER_AHEAD) {
                prefetch_bytes(&self.archives[ahead.at..ahead.at + ahead.len as usize]);
            }
            let (key, pmh) = (h.key.to_be_bytes(), h.pmh.to_be_bytes());
            while next_byte <= usize::from(key[0]) {
                bounds[next_byte] = w.pos();
                next_byte += 1;
            }
            let mut head = [0u8; HOLDER_HEAD];
            head[..16].copy_from_slice(&key);
            head[16..32].copy_from_slice(&pmh);
            head[32..40].copy_from_slice(&h.digest.to_le_bytes());
            head[40..].copy_from_slice(&h.len.to_le_bytes());
            w.write(&head)?;
            w.write(&self.archives[h.at..h.at + h.len as usize])?;
        }
        for b in &mut bounds[next_byte..] {
            *b = w.pos();
        }
        w.finish()?;
        self.runs.holders.push(HolderRun { path, bounds });

        let (keys, source) = (&self.keys, &self.source);
        let key = |e: &SourceEntry| &keys[e.at..e.at + e.len as usize];
        let path = self.dir.join(format!("w{}-s{n}.run", self.id));
        let mut w = RunWriter::create(&path)?;
        for (i, o) in self.order.iter().enumerate() {
            // An entry's key is found through the entry: the entry is asked for first, and
            // its key once the entry has had time to arrive.
            if let Some(ahead) = self.order.get(i + 2 * GATHER_AHEAD) {
                prefetch_bytes(std::slice::from_ref(&source[ahead.2]));
            }
            if let Some(ahead) = self.order.get(i + GATHER_AHEAD) {
                prefetch_bytes(key(&source[ahead.2]));
            }
            let e = &source[o.2];
            let k = key(e);
            w.write(&(k.len() as u32).to_le_bytes())?;
            w.write(k)?;
            let mut tail = [0u8; SOURCE_TAIL];
            tail[..40].copy_from_slice(&e.value);
            tail[40..42].copy_from_slice(&e.file.to_le_bytes());
            tail[42..].copy_from_slice(&e.row.to_le_bytes());
            w.write(&tail)?;
        }
        w.finish()?;
        self.runs.source.push(path);

        self.archives.clear();
        self.holders.clear();
        self.keys.clear();
        self.source.clear();
        Ok(())
    }
}

/// How many records ahead of the one being copied a spill asks for (see [`prefetch_bytes`]).
/// At 10 M certificates 16 made the parse phase 1.2-2.4 s shorter than 8, and 32 slower
/// than 16 (docs/benchmarks.md, twentieth round).
const GATHER_AHEAD: usize = 16;

/// Asks the CPU to bring `data`'s cache lines in, without waiting for them.
///
/// A spill copies its records in key order, which is random order in the arena: each
/// record's first access missed the caches and the TLB, and the copy waited for it (the
/// spill's copy was a tenth of a 10 M load's CPU). Asking for the records a few places
/// ahead lets those misses overlap.
#[inline]
fn prefetch_bytes<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let (start, bytes) = (data.as_ptr().cast::<i8>(), size_of_val(data));
        for offset in (0..bytes).step_by(64) {
            // SAFETY: SSE is part of x86-64; a prefetch is only a hint, which neither reads
            // into the program nor faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// A run file being written (around the page cache, see [`crate::direct`]).
struct RunWriter {
    path: PathBuf,
    w: DirectWriter,
}

impl RunWriter {
    fn create(path: &Path) -> Result<RunWriter, LoadError> {
        let w = DirectWriter::create(path, WRITE_BUF).map_err(|e| io_err(path, e))?;
        Ok(RunWriter { path: path.to_path_buf(), w })
    }

    /// Bytes written so far.
    fn pos(&self) -> u64 {
        self.w.position()
    }

    fn write(&mut self, b: &[u8]) -> Result<(), LoadError> {
        self.w.write(b).map_err(|e| io_err(&self.path, e))
    }

    fn finish(self) -> Result<(), LoadError> {
        self.w.finish().map(|_| ()).map_err(|e| io_err(&self.path, e))
    }
}

/// Reads records from one byte range of a run, into reused buffers.
struct RunReader {
    path: PathBuf,
    r: DirectReader,
}

impl RunReader {
    fn open(path: &Path, from: u64, to: u64, pool: &ReadAhead) -> Result<RunReader, LoadError> {
        let r = DirectReader::open(path, from, to, READ_BUF, Some(pool)).map_err(|e| io_err(path, e))?;
        Ok(RunReader { path: path.to_path_buf(), r })
    }

    fn open_all(path: &Path, pool: &ReadAhead) -> Result<RunReader, LoadError> {
        RunReader::open(path, 0, u64::MAX, pool)
    }

    /// Fills `buf` exactly; `Ok(false)` at a clean end.
    fn exact(&mut self, buf: &mut [u8]) -> Result<bool, LoadError> {
        match self.r.read_exact(buf) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(io_err(&self.path, e)),
        }
    }

    /// Reads `len` more bytes into `buf` (replacing its contents), or fails as truncated.
    fn body(&mut self, len: usize, buf: &mut Vec<u8>) -> Result<(), LoadError> {
        buf.resize(len, 0);
        if self.exact(buf)? { Ok(()) } else { Err(io_err(&self.path, "truncated run")) }
    }
}

/// Where the merge reads one run's records from.
enum Input<'m> {
    File(RunReader),
    /// Entries `next..end` of a run in memory (of its holders, or of its source order).
    Memory {
        run: &'m MemoryRun,
        next: usize,
        end: usize,
    },
}

impl Input<'_> {
    /// What an error names.
    fn path(&self) -> &Path {
        match self {
            Input::File(r) => &r.path,
            Input::Memory { .. } => Path::new("(sort buffer in memory)"),
        }
    }

    /// The next entry of a run in memory (of its holders or of its source order), or what
    /// reads the next record from a file.
    fn next(&mut self) -> Next<'_> {
        match self {
            Input::File(r) => Next::File(r),
            Input::Memory { next, end, .. } if next == end => Next::End,
            Input::Memory { run, next, .. } => {
                *next += 1;
                Next::Memory(run, *next - 1)
            }
        }
    }
}

enum Next<'a> {
    File(&'a mut RunReader),
    Memory(&'a MemoryRun, usize),
    End,
}

/// The head record of a holder run.
#[derive(Default)]
struct HolderHead {
    key: [u8; 16],
    pmh: [u8; 16],
    digest: u64,
    /// The archive of a record read from a file.
    archive: Vec<u8>,
    /// Where the archive of a record of a run in memory sits in the run's buffer: it is
    /// framed from there, not copied out first (a copy of every archive was 6 % of a
    /// 200k-row load's CPU).
    in_memory: Option<(usize, usize)>,
}

impl HolderHead {
    /// Reads the next record; `Ok(false)` at the end of the range.
    fn read_from(&mut self, input: &mut Input<'_>) -> Result<bool, LoadError> {
        let (run, i) = match input.next() {
            Next::File(r) => return self.read(r),
            Next::End => return Ok(false),
            Next::Memory(run, i) => (run, i),
        };
        let e = &run.holders[i];
        (self.key, self.pmh, self.digest) = (e.key.to_be_bytes(), e.pmh.to_be_bytes(), e.digest);
        self.in_memory = Some((e.at, e.len as usize));
        Ok(true)
    }

    /// The head's archive; `input` is the run it was read from (a head only ever reads
    /// from its own input, so a memory place always goes with a memory run).
    fn archive<'r>(&'r self, input: &'r Input<'_>) -> &'r [u8] {
        match (self.in_memory, input) {
            (Some((at, len)), Input::Memory { run, .. }) => &run.archives[at..at + len],
            (None, _) => &self.archive,
            // Unreachable; were it not, the bytes would fail their digest in the bucket
            // encoder and the load would stop with an error, never frame stale bytes.
            (Some(_), Input::File(_)) => {
                debug_assert!(false, "a memory head read from a file run");
                &[]
            }
        }
    }

    /// [`HolderHead::read_from`] a run file.
    fn read(&mut self, r: &mut RunReader) -> Result<bool, LoadError> {
        let mut head = [0u8; HOLDER_HEAD];
        if !r.exact(&mut head)? {
            return Ok(false);
        }
        self.key.copy_from_slice(&head[..16]);
        self.pmh.copy_from_slice(&head[16..32]);
        self.digest = u64::from_le_bytes(head[32..40].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(head[40..].try_into().unwrap_or_default()) as usize;
        self.in_memory = None;
        r.body(len, &mut self.archive)?;
        Ok(true)
    }
}

/// The head record of a source run.
struct SourceHead {
    key: Vec<u8>,
    value: [u8; 40],
    file: u16,
    row: u64,
}

impl Default for SourceHead {
    fn default() -> SourceHead {
        SourceHead { key: Vec::new(), value: [0; 40], file: 0, row: 0 }
    }
}

impl SourceHead {
    /// Reads the next record; `Ok(false)` at the end of the run.
    fn read_from(&mut self, input: &mut Input<'_>) -> Result<bool, LoadError> {
        let (run, i) = match input.next() {
            Next::File(r) => return self.read(r),
            Next::End => return Ok(false),
            Next::Memory(run, i) => (run, i),
        };
        let e = &run.source[run.order[i].2];
        self.key.clear();
        self.key.extend_from_slice(&run.keys[e.at..e.at + e.len as usize]);
        (self.value, self.file, self.row) = (e.value, e.file, e.row);
        Ok(true)
    }

    /// [`SourceHead::read_from`] a run file.
    fn read(&mut self, r: &mut RunReader) -> Result<bool, LoadError> {
        let mut len = [0u8; 4];
        if !r.exact(&mut len)? {
            return Ok(false);
        }
        r.body(u32::from_le_bytes(len) as usize, &mut self.key)?;
        let mut tail = [0u8; SOURCE_TAIL];
        if !r.exact(&mut tail)? {
            return Err(io_err(&r.path, "truncated run"));
        }
        self.value.copy_from_slice(&tail[..40]);
        self.file = u16::from_le_bytes([tail[40], tail[41]]);
        self.row = u64::from_le_bytes(tail[42..].try_into().unwrap_or_default());
        Ok(true)
    }

    fn order(&self, other: &SourceHead) -> std::cmp::Ordering {
        self.key.cmp(&other.key).then((self.file, self.row).cmp(&(other.file, other.row)))
    }
}

/// A binary min-heap of run indices, ordered by a comparison of the runs' heads; the k-way
/// merge's frontier. Heads live outside the heap, so nothing is cloned to order them.
struct Frontier {
    heap: Vec<usize>,
}

impl Frontier {
    /// Orders the runs `live` (those that have a head).
    fn new(live: impl Iterator<Item = usize>, less: impl Fn(usize, usize) -> bool) -> Frontier {
        let mut f = Frontier { heap: live.collect() };
        for i in (0..f.heap.len() / 2).rev() {
            f.sift_down(i, &less);
        }
        f
    }

    /// The run with the smallest head.
    fn top(&self) -> Option<usize> {
        self.heap.first().copied()
    }

    /// Restores the order after the top run's head advanced (`has_head`) or ran out.
    fn fix_top(&mut self, has_head: bool, less: impl Fn(usize, usize) -> bool) {
        if !has_head {
            self.heap.swap_remove(0);
        }
        if !self.heap.is_empty() {
            self.sift_down(0, &less);
        }
    }

    fn sift_down(&mut self, mut i: usize, less: &impl Fn(usize, usize) -> bool) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < self.heap.len() && less(self.heap[l], self.heap[m]) {
                m = l;
            }
            if r < self.heap.len() && less(self.heap[r], self.heap[m]) {
                m = r;
            }
            if m == i {
                return;
            }
            self.heap.swap(i, m);
            i = m;
        }
    }
}

/// The first-byte ranges of the holder merge: `parts` contiguous, near-equal ranges of
/// 0..256.
pub(crate) fn key_ranges(parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.clamp(1, 256);
    (0..parts).map(|p| (p * 256 / parts, (p + 1) * 256 / parts)).collect()
}

/// Merges the records of every holder run whose key starts with a byte in `lo..hi` into one
/// SST of buckets at `out`. Returns the number of holders and the file; no file is written
/// when the range holds none.
pub(crate) fn merge_holders(
    opts: &SstOptions,
    runs: &Runs,
    (lo, hi): (usize, usize),
    out: &Path,
    pool: &ReadAhead,
) -> Result<(u64, Option<SstFile>), LoadError> {
    let mut readers = Vec::with_capacity(runs.holders.len() + runs.memory.len());
    for run in &runs.holders {
        readers.push(Input::File(RunReader::open(&run.path, run.bounds[lo], run.bounds[hi], pool)?));
    }
    readers.extend(runs.memory.iter().map(|run| Input::Memory { run, next: run.bounds[lo], end: run.bounds[hi] }));
    let mut heads: Vec<HolderHead> = Vec::with_capacity(readers.len());
    let mut live = Vec::new();
    for (i, r) in readers.iter_mut().enumerate() {
        let mut h = HolderHead::default();
        if h.read_from(r)? {
            live.push(i);
        }
        heads.push(h);
    }
    let less =
        |heads: &[HolderHead], a: usize, b: usize| (heads[a].key, heads[a].pmh, a) < (heads[b].key, heads[b].pmh, b);
    let mut frontier = Frontier::new(live.into_iter(), |a, b| less(&heads, a, b));
    let mut w = opts.writer();
    let mut opened = false;
    let mut holders = 0u64;
    // The bucket being built: its key, the holder last started, and its value so far. The
    // workers archived every certificate once; its bytes are framed here as they are.
    let mut value = Vec::new();
    let mut current: Option<([u8; 16], [u8; 16], BucketEncoder)> = None;
    let mut flush =
        |key: &[u8; 16], enc: BucketEncoder, value: &mut Vec<u8>, w: &mut pmh_engine::snapshot::SstFileWriter<'_>| {
            let Some(range) = enc.finish(value) else { return Ok(()) };
            if !opened {
                w.open(out).map_err(|e| io_err(out, e.into_string()))?;
                opened = true;
            }
            w.put(key, &value[range]).map_err(|e| io_err(out, e.into_string()))?;
            value.clear();
            Ok::<(), LoadError>(())
        };
    while let Some(i) = frontier.top() {
        let rec = &heads[i];
        match &mut current {
            Some((k, pmh, enc)) if *k == rec.key => {
                if *pmh != rec.pmh {
                    holders += 1;
                    enc.holder(&rec.pmh);
                    *pmh = rec.pmh;
                }
            }
            _ => {
                if let Some((k, _, enc)) = current.take() {
                    flush(&k, enc, &mut value, &mut w)?;
                }
                holders += 1;
                let mut enc = BucketEncoder::begin(&value);
                enc.holder(&rec.pmh);
                current = Some((rec.key, rec.pmh, enc));
            }
        }
        if let Some((_, _, enc)) = &mut current {
            enc.certificate(&mut value, rec.archive(&readers[i]), rec.digest)
                .map_err(|e| io_err(readers[i].path(), format!("sort run record: {e}")))?;
        }
        let more = heads[i].read_from(&mut readers[i])?;
        frontier.fix_top(more, |a, b| less(&heads, a, b));
    }
    if let Some((k, _, enc)) = current.take() {
        flush(&k, enc, &mut value, &mut w)?;
    }
    let file = if opened { Some(w.finish().map_err(|e| io_err(out, e.into_string()))?) } else { None };
    Ok((holders, file))
}

/// Merges the source-index runs into one SST at `out`, rejecting duplicate certificate
/// identities (naming both rows; `files` names the input files). Returns the number of
/// certificates and the file; no file is written when there are none.
pub(crate) fn merge_source(
    opts: &SstOptions,
    runs: &Runs,
    out: &Path,
    files: &[PathBuf],
    pool: &ReadAhead,
) -> Result<(u64, Option<SstFile>), LoadError> {
    let mut readers = Vec::with_capacity(runs.source.len() + runs.memory.len());
    for path in &runs.source {
        readers.push(Input::File(RunReader::open_all(path, pool)?));
    }
    readers.extend(runs.memory.iter().map(|run| Input::Memory { run, next: 0, end: run.order.len() }));
    let mut heads: Vec<SourceHead> = Vec::with_capacity(readers.len());
    let mut live = Vec::new();
    for (i, r) in readers.iter_mut().enumerate() {
        let mut h = SourceHead::default();
        if h.read_from(r)? {
            live.push(i);
        }
        heads.push(h);
    }
    let less = |heads: &[SourceHead], a: usize, b: usize| heads[a].order(&heads[b]).is_lt();
    let mut frontier = Frontier::new(live.into_iter(), |a, b| less(&heads, a, b));
    let mut w = opts.writer();
    let mut opened = false;
    let mut n = 0u64;
    // The last key written, and the row it came from.
    let mut prev: Option<(Vec<u8>, u16, u64)> = None;
    let mut dups = Vec::new();
    let name = |f: u16| files.get(usize::from(f)).map(|p| p.display().to_string());
    while let Some(i) = frontier.top() {
        let rec = &heads[i];
        match &mut prev {
            Some((key, file, row)) if *key == rec.key => {
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
                        name(*file).unwrap_or_default(),
                        row
                    ),
                    value: String::new(),
                });
            }
            _ => {
                if dups.is_empty() {
                    if !opened {
                        w.open(out).map_err(|e| io_err(out, e.into_string()))?;
                        opened = true;
                    }
                    w.put(&rec.key, rec.value).map_err(|e| io_err(out, e.into_string()))?;
                }
                n += 1;
                match &mut prev {
                    Some((key, file, row)) => {
                        key.clear();
                        key.extend_from_slice(&rec.key);
                        (*file, *row) = (rec.file, rec.row);
                    }
                    None => prev = Some((rec.key.clone(), rec.file, rec.row)),
                }
            }
        }
        let more = heads[i].read_from(&mut readers[i])?;
        frontier.fix_top(more, |a, b| less(&heads, a, b));
    }
    if !dups.is_empty() {
        return Err(LoadError::Rejected(dups));
    }
    let file = if opened { Some(w.finish().map_err(|e| io_err(out, e.into_string()))?) } else { None };
    Ok((n, file))
}

/// Reads a prepared SST file back into the OS page cache before it is installed.
///
/// Its writer dropped the pages it wrote (a prepared directory may wait long before it is
/// installed), so without this the first lookups and diffs after a switch read every block
/// from the disk at random: a 101,978-row diff right after a 1 M-person load took 12 s
/// instead of 2 s. The file is mapped with `MAP_POPULATE`, a window at a time, which has the
/// kernel read it in without copying it through this process: 0.05 s of CPU for 700 MB
/// where `read` took 0.76 s
/// (`POSIX_FADV_WILLNEED` would be cheaper still, but the kernel reads only the first 8 MB
/// of each file for it). Ingestion hard-links the file, so the cached pages stay with it.
/// Only a speed-up: errors are ignored.
pub(crate) fn prefetch(path: &Path) {
    #[cfg(target_os = "linux")]
    if let Ok(f) = File::open(path)
        && let Ok(meta) = f.metadata()
    {
        use std::os::fd::AsRawFd;
        // A multiple of the page size; bounds how much is mapped (and counted as this
        // process's resident memory) at once.
        const WINDOW: u64 = 32 << 20;
        let len = meta.len();
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(WINDOW) as usize;
            let Ok(offset) = libc::off_t::try_from(at) else { return };
            // SAFETY: a read-only private mapping of a file this function holds open,
            // unmapped at once; no reference into it is ever made.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    n,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_POPULATE,
                    f.as_raw_fd(),
                    offset,
                );
                if p == libc::MAP_FAILED {
                    return;
                }
                libc::munmap(p, n);
            }
            at += WINDOW;
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
}

/// Reads one byte of every page of a file, until `stop` is set; returns whether it got to
/// the end.
///
/// On the machines of `docs/benchmarks.md` the first read of a page-cache page by any CPU
/// after the disk filled it costs several microseconds (the hypervisor maps the page on
/// that first access); later reads, in any process, are ordinary memory reads. RocksDB's
/// ingestion of a PlainTable file reads every key of it on one thread, paying that for the
/// whole file: 7.5–9 s for a 10 M load's holders files on one machine, 1.2 s on another.
/// Touching pages from a second thread meanwhile pays part of it on a core that would
/// otherwise wait (`load::install_read_back`).
///
/// One `pread` of a byte per page, not a mapping: a prepared directory's file cut short
/// by someone else meanwhile ends the read instead of killing the process with SIGBUS.
/// Only a speed-up: errors are ignored.
pub(crate) fn touch(path: &Path, stop: &std::sync::atomic::AtomicBool) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        use std::sync::atomic::Ordering;
        const PAGE: u64 = 4096;
        /// Pages between two looks at `stop` (1 MiB).
        const STOP_EVERY: u64 = 256;
        let Ok(f) = File::open(path) else { return false };
        let Ok(len) = f.metadata().map(|m| m.len()) else { return false };
        let mut byte = [0u8; 1];
        let mut at = 0u64;
        while at < len {
            if (at / PAGE).is_multiple_of(STOP_EVERY) && stop.load(Ordering::Relaxed) {
                return false;
            }
            if !matches!(f.read_at(&mut byte, at), Ok(1)) {
                return false;
            }
            at += PAGE;
        }
        true
    }
    #[cfg(not(unix))]
    {
        let _ = (path, stop);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn touching_a_file_reads_to_its_end_unless_stopped() {
        use std::sync::atomic::AtomicBool;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.sst");
        // Several looks at `stop`, and a last page that is only partly the file's.
        std::fs::write(&path, vec![7u8; (3 << 20) + 100]).unwrap();
        assert!(touch(&path, &AtomicBool::new(false)));
        assert!(!touch(&path, &AtomicBool::new(true)), "a set stop ends it before the end");
        assert!(!touch(&dir.path().join("missing.sst"), &AtomicBool::new(false)));
        let empty = dir.path().join("empty.sst");
        std::fs::write(&empty, b"").unwrap();
        assert!(touch(&empty, &AtomicBool::new(false)));
    }

    #[test]
    fn a_run_record_that_does_not_match_its_digest_stops_the_merge() {
        // A corrupted sort run (a bad disk, a scratch directory written by someone else)
        // must fail the load, never reach a holders value that readers trust.
        let dir = tempfile::tempdir().unwrap();
        // A budget of 1 byte: every push spills (a last buffer would be merged from memory).
        let mut w = Sorter::new(0, dir.path(), 1, 1 << 20);
        let (key, pmh) = (StoreKey([1; 16]), pmh_engine::PmhId::from_bytes([2; 16]));
        w.push(key, &pmh, &Certificate::example("H1"), 0, 1).unwrap();
        let runs = w.finish().unwrap();
        let opts = pmh_engine::snapshot::SstOptions::holders(&pmh_engine::RocksTuning::default());
        let pool = crate::direct::ReadAhead::new(1);
        let merge = |out: &str| merge_holders(&opts, &runs, (0, 256), &dir.path().join(out), &pool);
        let (holders, file) = merge("good.sst").unwrap();
        assert_eq!(holders, 1);
        assert!(file.is_some_and(|f| f.is_prepared() && f.path() == dir.path().join("good.sst")));
        // Flip a byte inside the record's archive (after its head: key, PMH-ID, digest, length).
        let run = &runs.holders[0].path;
        let mut bytes = std::fs::read(run).unwrap();
        bytes[HOLDER_HEAD + 10] ^= 0x01;
        std::fs::write(run, bytes).unwrap();
        let err = merge("bad.sst").unwrap_err().to_string();
        assert!(err.contains("does not match its digest"), "{err}");
        assert!(!dir.path().join("bad.sst").exists(), "the refused record never reached a file");
    }

    #[test]
    fn keys_ordered_by_prefix_then_whole_are_in_byte_order() {
        // Keys from a small alphabet with the separator byte 0, of lengths around the
        // 32-byte prefix: equal prefixes, prefixes of one another, padding against zeros.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let keys: Vec<Vec<u8>> = (0..5000)
            .map(|_| {
                let len = (next() % 41) as usize;
                (0..len).map(|_| [0u8, 1, b'0', b'A'][(next() % 4) as usize]).collect()
            })
            .collect();
        let mut by_prefix: Vec<&Vec<u8>> = keys.iter().collect();
        by_prefix.sort_by(|a, b| key_prefix(a).cmp(&key_prefix(b)).then_with(|| a.cmp(b)));
        let mut by_bytes: Vec<&Vec<u8>> = keys.iter().collect();
        by_bytes.sort();
        assert_eq!(by_prefix, by_bytes);
        assert!(keys.iter().any(|k| k.len() > 32) && keys.iter().any(|k| k.len() < 16));
    }

    #[test]
    fn key_ranges_cover_every_byte_once() {
        for parts in [1, 2, 3, 7, 16, 255, 256, 1000] {
            let r = key_ranges(parts);
            assert_eq!(r.first().map(|r| r.0), Some(0));
            assert_eq!(r.last().map(|r| r.1), Some(256));
            assert!(r.windows(2).all(|w| w[0].1 == w[1].0 && w[0].0 < w[0].1), "{parts}: {r:?}");
        }
    }

    #[test]
    fn frontier_merges_in_order() {
        let runs: Vec<Vec<u32>> = vec![vec![1, 4, 9], vec![], vec![2, 3, 10, 11], vec![0, 4, 5]];
        let mut pos = vec![0usize; runs.len()];
        let head = |pos: &[usize], i: usize| runs[i][pos[i]];
        let less = |pos: &[usize], a: usize, b: usize| (head(pos, a), a) < (head(pos, b), b);
        let live = (0..runs.len()).filter(|&i| !runs[i].is_empty());
        let mut f = Frontier::new(live, |a, b| less(&pos, a, b));
        let mut out = Vec::new();
        while let Some(i) = f.top() {
            out.push(head(&pos, i));
            pos[i] += 1;
            let more = pos[i] < runs[i].len();
            f.fix_top(more, |a, b| less(&pos, a, b));
        }
        assert_eq!(out, vec![0, 1, 2, 3, 4, 4, 5, 9, 10, 11]);
    }
}
