//! Change sets: atomic, all-or-nothing certificate writes (differential files and a
//! municipality's full upload).
//!
//! A change set is validated whole first — every problem is collected, and any problem
//! rejects the set with nothing written. It is then applied under the store's writer lock
//! as one RocksDB `WriteBatch`: holder buckets and source-index entries change together,
//! so a reader sees all of the set or none of it, and a crash mid-way leaves none of it.
//!
//! The source index maps a certificate identity to its holder and a digest of its
//! content, so a re-applied row is recognised as unchanged without reading the holder,
//! and a row that moves a certificate to another person (a corrected My Number) removes
//! it from the old holder.

use std::collections::HashSet;

use parking_lot::Mutex;
use rocksdb::WriteBatch;

use crate::error::{ChangeError, ChangeProblem, Error, storage};
pub use crate::layout::SOURCE_VALUE_LEN;
use crate::layout::{HOLDERS, JOURNAL, SOURCE};
use crate::pmh_id::{PmhId, StoreKey};
use crate::record::{BucketEncoder, Certificate, CertificateId, IdentityRef, access_bucket_trusted, archived_trusted};
use crate::store::{Store, hex};

/// One change to the store.
// Change sets are almost all upserts, so boxing the certificate would add an allocation
// per row to save space in the rare deletes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert or replace the certificate with this identity, held by `pmh_id`.
    Upsert {
        /// The holder.
        pmh_id: PmhId,
        /// The certificate (its identity is municipality + type id + history key).
        certificate: Certificate,
    },
    /// Remove the certificate with this identity (`isDeleted = true`). Removing one that
    /// does not exist is a no-op, so a re-applied file is harmless.
    Delete(CertificateId),
}

impl Change {
    fn id(&self) -> CertificateId {
        match self {
            Change::Upsert { certificate, .. } => certificate.id(),
            Change::Delete(id) => id.clone(),
        }
    }

    fn municipality_code(&self) -> u32 {
        match self {
            Change::Upsert { certificate, .. } => certificate.municipality_code,
            Change::Delete(id) => id.municipality_code,
        }
    }

    /// The source-index key of the changed certificate, built without copying its identity.
    fn index_key(&self) -> Vec<u8> {
        let (m, t, h) = match self {
            Change::Upsert { certificate: c, .. } => {
                (c.municipality_code, &c.org_specific_certificate_type_id, &c.history_key)
            }
            Change::Delete(id) => (id.municipality_code, &id.org_specific_certificate_type_id, &id.history_key),
        };
        let mut k = Vec::with_capacity(8 + t.len() + h.len());
        crate::record::write_index_key(m, t, h, &mut k);
        k
    }
}

/// How a change set relates to what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Differential (差分連携): only the listed certificates change.
    Diff,
    /// A municipality's full upload (全件連携): afterwards the municipality holds exactly
    /// the upserted certificates; every other certificate of it is deleted. Changes for
    /// any other municipality are rejected.
    ReplaceMunicipality(u32),
}

/// What a change set did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplySummary {
    /// New certificate identities.
    pub inserted: u64,
    /// Existing identities whose content or holder changed.
    pub updated: u64,
    /// Certificates removed.
    pub deleted: u64,
    /// Rows that changed nothing (same content, or delete of an absent identity).
    pub unchanged: u64,
}

/// Digest of a certificate's content, kept in the source index.
pub fn certificate_digest(c: &Certificate) -> Result<u64, Error> {
    Ok(encode_certificate(c)?.1)
}

/// A certificate's archive and its digest (xxh3-64 of the archive, as kept in the source
/// index), for bulk loaders that need both without serializing twice.
pub fn encode_certificate(c: &Certificate) -> Result<(Vec<u8>, u64), Error> {
    let mut bytes = Vec::new();
    let digest = encode_certificate_into(c, &mut bytes)?;
    Ok((bytes, digest))
}

/// [`encode_certificate`] appending to `out` (a loader's arena): the appended bytes are
/// exactly the archive `encode_certificate` makes — the workspace's rkyv format is
/// unaligned, so nothing depends on where in `out` the archive starts — and the digest
/// returned is theirs.
pub fn encode_certificate_into(c: &Certificate, out: &mut Vec<u8>) -> Result<u64, Error> {
    let start = out.len();
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(c, &mut *out)
        .map_err(|e| Error::Corrupt(format!("serialize certificate: {e}")))?;
    Ok(xxhash_rust::xxh3::xxh3_64(&out[start..]))
}

/// The source-index value of a certificate held by `pmh_id` under `key`, for bulk loaders
/// that write the source-index SST themselves (see `Store::source_sst_writer`).
pub fn source_index_value(key: StoreKey, pmh_id: PmhId, digest: u64) -> [u8; SOURCE_VALUE_LEN] {
    SourceEntry { key, pmh_id, digest }.encode()
}

/// A source-index value: where a certificate lives and what it contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SourceEntry {
    pub(crate) key: StoreKey,
    pub(crate) pmh_id: PmhId,
    pub(crate) digest: u64,
}

impl SourceEntry {
    pub(crate) fn encode(&self) -> [u8; SOURCE_VALUE_LEN] {
        let mut v = [0u8; SOURCE_VALUE_LEN];
        v[..16].copy_from_slice(&self.key.0);
        v[16..32].copy_from_slice(self.pmh_id.as_bytes());
        v[32..].copy_from_slice(&self.digest.to_be_bytes());
        v
    }

    pub(crate) fn decode(v: &[u8]) -> Option<SourceEntry> {
        if v.len() != SOURCE_VALUE_LEN {
            return None;
        }
        Some(SourceEntry {
            key: StoreKey(v[..16].try_into().ok()?),
            pmh_id: PmhId::from_bytes(v[16..32].try_into().ok()?),
            digest: u64::from_be_bytes(v[32..].try_into().ok()?),
        })
    }
}

/// Validates a change set against the engine's invariants: [`Error::Rejected`] with every
/// problem, as [`Store::apply`] would answer without writing anything.
pub fn validate_changes(changes: &[Change], mode: ApplyMode) -> Result<(), Error> {
    validate_keyed(changes, mode).map(|_| ())
}

/// A change set's source-index keys (what identifies a certificate in the store, so also
/// what makes two changes the same one), and the changes' indices in key order.
struct Keyed {
    keys: Vec<Vec<u8>>,
    order: Vec<usize>,
}

/// [`validate_changes`], returning the keys the apply reads and writes ([`Keyed`]). The
/// keys, each certificate's own checks and the key order are worked out on every core,
/// each core sorting its contiguous part, and the parts' orders merged here; duplicates
/// are found as neighbours in key order, which the apply needs anyway for its sorted reads.
/// (A hash set of the keys and one sort on one thread were a tenth of a 10 M diff.)
fn validate_keyed(changes: &[Change], mode: ApplyMode) -> Result<Keyed, Error> {
    type Part = (Vec<Vec<u8>>, Vec<usize>, Vec<ChangeProblem>);
    // Per part: its keys, its order, its problems (indices local to the part).
    let (chunk, parts) = par_chunks(changes, |part| {
        let mut keys = Vec::with_capacity(part.len());
        let mut problems = Vec::new();
        for (i, ch) in part.iter().enumerate() {
            keys.push(ch.index_key());
            problems.extend(own_problems(i, ch, mode));
        }
        let mut order: Vec<usize> = (0..part.len()).collect();
        order.sort_unstable_by(|&a, &b| keys[a].cmp(&keys[b]).then(a.cmp(&b)));
        Ok::<Part, Error>((keys, order, problems))
    })?;
    let mut keys = Vec::with_capacity(changes.len());
    let mut problems = Vec::new();
    let mut order: Vec<usize> = Vec::new();
    for (n, (k, o, p)) in parts.into_iter().enumerate() {
        let base = n * chunk;
        order = merge_orders(&order, o.into_iter().map(|i| base + i), |a, b| {
            let key = |i: usize| if i < base { &keys[i] } else { &k[i - base] };
            key(a).cmp(key(b)).then(a.cmp(&b))
        });
        keys.extend(k);
        problems.extend(p.into_iter().map(|p| ChangeProblem { index: base + p.index, ..p }));
    }
    // Equal keys end up next to each other in change-set order, so each repeat is reported
    // with the change just before it, in the order of the later change.
    let repeats: Vec<ChangeProblem> = order
        .windows(2)
        .filter(|w| keys[w[0]] == keys[w[1]])
        .map(|w| {
            let (first, i) = (w[0], w[1]);
            let id = changes[i].id();
            ChangeProblem {
                index: i,
                field: "historyKey",
                rule: "unique certificate identity",
                message: format!(
                    "certificate {}/{} of municipality {:06} appears twice (changes {first} and {i})",
                    id.org_specific_certificate_type_id, id.history_key, id.municipality_code
                ),
            }
        })
        .collect();
    if problems.is_empty() && repeats.is_empty() {
        return Ok(Keyed { keys, order });
    }
    // Every problem of a change together, in change-set order; a change's own problems
    // before its repeat (a stable sort; a change repeats at most one other).
    problems.extend(repeats);
    problems.sort_by_key(|p| p.index);
    Err(Error::Rejected(ChangeError { problems }))
}

/// `a` and `b`, each in order by `cmp`, merged (`a`'s element first among equals).
fn merge_orders(
    a: &[usize],
    b: impl ExactSizeIterator<Item = usize>,
    cmp: impl Fn(usize, usize) -> std::cmp::Ordering,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut a = a.iter().copied().peekable();
    for y in b {
        while let Some(x) = a.next_if(|&x| cmp(x, y) != std::cmp::Ordering::Greater) {
            out.push(x);
        }
        out.push(y);
    }
    out.extend(a);
    out
}

/// The problems of one change on its own: its certificate's invariants, and in a full
/// upload its municipality; `index` is the change's place in its set.
fn own_problems(index: usize, ch: &Change, mode: ApplyMode) -> Vec<ChangeProblem> {
    let mut found = Vec::new();
    if let Change::Upsert { certificate, .. } = ch
        && let Err(e) = certificate.check()
    {
        let field = match e {
            crate::record::CertificateError::PeriodReversed => "validTo",
            crate::record::CertificateError::BadIdentity => "historyKey",
            crate::record::CertificateError::BadMunicipality => "municipalityCode",
        };
        found.push(ChangeProblem { index, field, rule: "certificate invariant", message: e.to_string() });
    }
    let municipality = ch.municipality_code();
    if let ApplyMode::ReplaceMunicipality(m) = mode
        && municipality != m
    {
        found.push(ChangeProblem {
            index,
            field: "municipalityCode",
            rule: "own municipality only",
            message: format!("certificate of municipality {municipality:06} in a full upload for {m:06}"),
        });
    }
    found
}

/// Read options for a change set's reads: around the block cache. A 100 k-row change
/// touches 100 k random holders and index entries, one 4 KiB block each; cached, they
/// would push 800 MB of lookups' hot blocks out (and in a one-shot `pmh-load diff`, fill
/// fresh memory the kernel must zero first: a third of that run's time).
fn bulk_read_options() -> rocksdb::ReadOptions {
    let mut ro = rocksdb::ReadOptions::default();
    ro.fill_cache(false);
    ro
}

/// Below this many items a change set's reads and encodes stay on the calling thread.
const PARALLEL_MIN: usize = 4096;

/// Keys read by one batched multi-get: enough to amortise the call, few enough that the
/// blocks the values pin stay small and their memory is reused by the next window.
const READ_WINDOW: usize = 1024;

fn threads_for(items: usize) -> usize {
    match items < PARALLEL_MIN {
        true => 1,
        false => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    }
}

/// Threads for a change set's reads and edits when the store is read from the disk
/// rather than the page cache. Each thread waits on one 4 KB read at a time (a page fault
/// of a mapped file, or a block read), so a cold 100k-row diff of a 10 M store with one
/// thread per core kept two reads in flight and took 8–15 s; with 32 threads, 5–6 s.
/// With the store in memory, 32 threads made the same diff 10–15 % slower (switches and
/// spread caches), so a change set first measures which case it is in
/// ([`reads_went_to_disk`]).
const COLD_READ_THREADS: usize = 32;

/// Blocks (512 bytes) this thread has read from storage: page faults of mapped files and
/// buffered reads that missed the page cache. A kernel without per-task I/O accounting
/// reports 0, and change sets then keep one thread per core, as they did before.
fn blocks_read() -> u64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` fills the struct it is given; on failure it stays zeroed.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, u.as_mut_ptr()) };
    // SAFETY: zero-initialised, and a plain C struct of integers.
    unsafe { u.assume_init() }.ru_inblock as u64
}

/// Whether a first window of `probed` reads, which made this thread read `blocks` blocks
/// from storage, found the store on the disk: above one block (of 512 bytes) per read,
/// most reads went to it.
fn reads_went_to_disk(probed: usize, blocks: u64) -> bool {
    blocks > probed as u64
}

/// Threads for the reads and edits of a change set of `items`: one per core, or
/// [`COLD_READ_THREADS`] if its reads go to the disk.
fn read_threads(items: usize, cold: bool) -> usize {
    match threads_for(items) {
        1 => 1,
        cores if cold => cores.max(COLD_READ_THREADS),
        cores => cores,
    }
}

/// Runs `f` on contiguous chunks of `items`, one chunk per core (one chunk below
/// [`PARALLEL_MIN`] items); returns the chunk length used and each chunk's result, in order.
fn par_chunks<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&[T]) -> Result<R, Error> + Sync,
) -> Result<(usize, Vec<R>), Error> {
    par_chunks_on(threads_for(items.len()), items, f)
}

/// [`par_chunks`] on `threads` threads.
fn par_chunks_on<T: Sync, R: Send>(
    threads: usize,
    items: &[T],
    f: impl Fn(&[T]) -> Result<R, Error> + Sync,
) -> Result<(usize, Vec<R>), Error> {
    let chunk = items.len().div_ceil(threads).max(1);
    if threads < 2 {
        return Ok((chunk, vec![f(items)?]));
    }
    let parts = std::thread::scope(|scope| {
        let handles: Vec<_> = items.chunks(chunk).map(|c| scope.spawn(|| f(c))).collect();
        handles.into_iter().map(join).collect::<Result<Vec<R>, Error>>()
    })?;
    Ok((chunk, parts))
}

/// Maps `items` through `f` on `threads` threads in contiguous chunks, appending to `out`
/// in order: a large change set's reads are independent per item.
fn par_map_into<T: Sync, U: Send>(
    threads: usize,
    items: &[T],
    out: &mut Vec<U>,
    f: impl Fn(&[T]) -> Result<Vec<U>, Error> + Sync,
) -> Result<(), Error> {
    let (_, parts) = par_chunks_on(threads, items, f)?;
    for p in parts {
        out.extend(p);
    }
    Ok(())
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, Result<T, Error>>) -> Result<T, Error> {
    h.join().unwrap_or_else(|_| Err(Error::Corrupt("a worker panicked".into())))
}

/// One change to one holder's certificates. Certificates are archives: the new ones as the
/// change set's digest pass encoded them, the stored ones as the holders value holds them.
#[derive(Clone, Copy)]
enum Edit<'a> {
    /// Insert this archive, or replace the certificate with its identity.
    Put(&'a [u8]),
    /// Remove the certificate with this identity, if the holder has it.
    Remove(&'a CertificateId),
    /// Remove the certificate with the identity of this archive (a certificate that moved
    /// to another person), if the holder has it.
    RemoveSame(&'a [u8]),
}

/// An [`Edit`] addressed to the holder `pmh_id` in the bucket under `key`.
#[derive(Clone, Copy)]
struct BucketEdit<'a> {
    key: StoreKey,
    pmh_id: PmhId,
    edit: Edit<'a>,
}

/// One bucket being edited: (holder, certificate archive) in stored order, each holder's
/// certificates contiguous.
type Flat<'x> = Vec<([u8; 16], &'x [u8])>;

impl<'a> BucketEdit<'a> {
    /// Applies the edit to `flat` exactly as editing the owned holders would: a new holder
    /// goes after the others, a new certificate after its holder's last one, a replaced
    /// certificate keeps its place.
    fn apply<'x>(&self, flat: &mut Flat<'x>)
    where
        'a: 'x,
    {
        let pmh = *self.pmh_id.as_bytes();
        // SAFETY (all `archived_trusted` calls below): every archive in `flat` and in an
        // edit was made by `encode_certificate_into` in this change set or read from a
        // holders value that passed `access_bucket_trusted`.
        match self.edit {
            Edit::Remove(id) => flat.retain(|(p, a)| !(*p == pmh && id.is_of_archived(unsafe { archived_trusted(a) }))),
            Edit::RemoveSame(like) => {
                let like = unsafe { archived_trusted(like) };
                flat.retain(|(p, a)| !(*p == pmh && like.same_identity(unsafe { archived_trusted(a) })));
            }
            Edit::Put(archive) => {
                let new = unsafe { archived_trusted(archive) };
                let mut last_of_holder = None;
                for (i, (p, a)) in flat.iter_mut().enumerate() {
                    if *p != pmh {
                        continue;
                    }
                    if new.same_identity(unsafe { archived_trusted(a) }) {
                        *a = archive;
                        return;
                    }
                    last_of_holder = Some(i);
                }
                match last_of_holder {
                    Some(i) => flat.insert(i + 1, (pmh, archive)),
                    None => flat.push((pmh, archive)),
                }
            }
        }
    }
}

/// Above this many certificates × edits a bucket's edits go through an identity index
/// ([`apply_indexed`]) instead of each scanning the bucket ([`BucketEdit::apply`]). A
/// bucket is one person's few certificates and usually one edit, which a scan does best;
/// but a person may hold thousands (a file where one My Number holds every row), and
/// scanning made such a file's diff quadratic: 100,000 rows for 4 people took 51 s.
const SCAN_LIMIT: usize = 1024;

/// Applies `edits` (one bucket's, in change-set order) to `flat`, as applying each with
/// [`BucketEdit::apply`] in turn would.
fn apply_edits<'x>(flat: &mut Flat<'x>, edits: &[BucketEdit<'x>]) {
    if flat.len().max(1).saturating_mul(edits.len()) <= SCAN_LIMIT {
        for e in edits {
            e.apply(flat);
        }
    } else {
        apply_indexed(flat, edits);
    }
}

/// The identity of an archive of `flat` or of an edit.
fn identity_of(archive: &[u8]) -> IdentityRef<'_> {
    // SAFETY: as in `BucketEdit::apply`, every archive here was encoded in this change set
    // or read from a holders value that passed `access_bucket_trusted`.
    unsafe { archived_trusted(archive) }.identity()
}

/// [`apply_edits`] in O((certificates + edits) log) time. Each certificate gets a slot
/// ordered by its holder's rank and its place within the holder; an index finds a
/// holder's certificate by identity. The rules are those of [`BucketEdit::apply`]: a
/// replaced certificate keeps its slot, a new one goes after its holder's others, and a
/// holder with no certificate left that gets one goes after every other holder. Within a
/// bucket an identity is held once (the source index points it at one holder).
fn apply_indexed<'x>(flat: &mut Flat<'x>, edits: &[BucketEdit<'x>]) {
    use std::collections::HashMap;
    type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
    struct Holder {
        rank: usize,
        live: usize,
        next_place: usize,
    }
    /// Holder's rank, place within the holder, holder, archive (`None` once removed).
    type Slot<'x> = (usize, usize, [u8; 16], Option<&'x [u8]>);
    let mut slots: Vec<Slot<'x>> = Vec::with_capacity(flat.len() + edits.len());
    let mut holders: Map<[u8; 16], Holder> = Map::default();
    let mut index: Map<([u8; 16], IdentityRef<'x>), usize> = Map::default();
    let mut next_rank = 0;
    for &(pmh, archive) in flat.iter() {
        let h = holders.entry(pmh).or_insert_with(|| {
            next_rank += 1;
            Holder { rank: next_rank - 1, live: 0, next_place: 0 }
        });
        index.entry((pmh, identity_of(archive))).or_insert(slots.len());
        slots.push((h.rank, h.next_place, pmh, Some(archive)));
        h.live += 1;
        h.next_place += 1;
    }
    for e in edits {
        let pmh = *e.pmh_id.as_bytes();
        let removed = match e.edit {
            Edit::Put(archive) => {
                let id = identity_of(archive);
                if let Some(&i) = index.get(&(pmh, id))
                    && slots[i].3.is_some()
                {
                    slots[i].3 = Some(archive);
                    continue;
                }
                let h = holders.entry(pmh).or_insert(Holder { rank: next_rank, live: 0, next_place: 0 });
                if h.live == 0 {
                    h.rank = next_rank;
                    next_rank += 1;
                }
                index.insert((pmh, id), slots.len());
                slots.push((h.rank, h.next_place, pmh, Some(archive)));
                h.live += 1;
                h.next_place += 1;
                continue;
            }
            Edit::Remove(id) => index.get(&(pmh, id.identity())),
            Edit::RemoveSame(like) => index.get(&(pmh, identity_of(like))),
        };
        if let Some(&i) = removed
            && slots[i].3.take().is_some()
        {
            holders.get_mut(&pmh).expect("a slot's holder").live -= 1;
        }
    }
    slots.sort_unstable_by_key(|&(rank, place, _, _)| (rank, place));
    flat.clear();
    flat.extend(slots.into_iter().filter_map(|(_, _, pmh, archive)| Some((pmh, archive?))));
}

/// Key-range boundaries cutting `keys` into `n` parts of about the same size: part `i`
/// holds the keys `k` with `bounds[i - 1] <= k < bounds[i]` (see [`route`]).
fn split_points(mut keys: Vec<StoreKey>, n: usize) -> Vec<StoreKey> {
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() { Vec::new() } else { (1..n).map(|i| keys[i * keys.len() / n]).collect() }
}

/// Puts `e` into the part of its key (see [`split_points`]).
fn route<'a>(parts: &mut [Vec<BucketEdit<'a>>], bounds: &[StoreKey], e: BucketEdit<'a>) {
    let part = bounds.partition_point(|b| *b <= e.key);
    parts[part].push(e);
}

/// Applies one part's edits (every edit of a key is in the same part, in change-set order)
/// and puts the new buckets into `batch`: in key order, each bucket is read and its new
/// value written by copying certificate archives, the unchanged ones straight from the old
/// value — nothing is decoded or re-serialised. A window's values are encoded into one
/// buffer, reused for the next window, and copied into the batch under its lock, so the
/// parts fill the one batch while they edit: the batch is not built afterwards on one
/// thread from a second copy of every value. Returns the number of buckets put.
fn edit_buckets(
    db: &rocksdb::DB,
    cf: &rocksdb::ColumnFamily,
    mut edits: Vec<BucketEdit<'_>>,
    batch: &Mutex<WriteBatch>,
) -> Result<usize, Error> {
    // Stable: the change set's order within a key is kept.
    edits.sort_by_key(|e| e.key);
    let mut keys: Vec<StoreKey> = edits.iter().map(|e| e.key).collect();
    keys.dedup();
    // Per key of a window: the range of its new value in `bytes`, or `None` when the
    // bucket is left empty (its key is deleted).
    let mut bytes = Vec::new();
    let mut buckets: Vec<(StoreKey, Option<std::ops::Range<usize>>)> = Vec::with_capacity(READ_WINDOW);
    let mut next = 0;
    let ro = bulk_read_options();
    for window in keys.chunks(READ_WINDOW) {
        bytes.clear();
        buckets.clear();
        let raw: Vec<[u8; 16]> = window.iter().map(|k| k.0).collect();
        let values: Vec<Option<rocksdb::DBPinnableSlice<'_>>> =
            db.batched_multi_get_cf_opt(cf, &raw, true, &ro).into_iter().collect::<Result<_, _>>().map_err(storage)?;
        let mut flat: Flat<'_> = Vec::new();
        for (&key, value) in window.iter().zip(&values) {
            flat.clear();
            if let Some(v) = value {
                // SAFETY: a value of the holders column family, which only the engine's
                // encoder writes.
                let stored = unsafe { access_bucket_trusted(v) }
                    .map_err(|e| Error::Corrupt(format!("holder {}: {e}", hex(&key.0))))?;
                for h in stored.holders() {
                    flat.extend(h.archives().map(|a| (*h.pmh_id(), a)));
                }
            }
            let of_key = edits[next..].iter().take_while(|e| e.key == key).count();
            apply_edits(&mut flat, &edits[next..next + of_key]);
            next += of_key;
            let mut enc = BucketEncoder::begin(&bytes);
            let mut last = None;
            for (pmh, archive) in &flat {
                if last != Some(pmh) {
                    enc.holder(pmh);
                    last = Some(pmh);
                }
                enc.certificate_trusted(&mut bytes, archive)
                    .map_err(|e| Error::Corrupt(format!("holder {}: {e}", hex(&key.0))))?;
            }
            buckets.push((key, enc.finish(&mut bytes)));
        }
        drop(values);
        let mut batch = batch.lock();
        for (key, range) in &buckets {
            match range {
                None => batch.delete_cf(cf, key.0),
                Some(r) => batch.put_cf(cf, key.0, &bytes[r.clone()]),
            }
        }
    }
    Ok(keys.len())
}

/// Each upsert's certificate archived once, on every core: per contiguous chunk of the
/// change set, one arena of archives and, per change, its digest and range in the arena.
struct Archives {
    chunk: usize,
    parts: Vec<ArchivedChunk>,
}

/// One chunk's arena, and per change its digest and range in the arena (`None`: a delete).
type ArchivedChunk = (Vec<u8>, Vec<Option<(u64, std::ops::Range<usize>)>>);

impl Archives {
    fn encode(changes: &[Change]) -> Result<Archives, Error> {
        let (chunk, parts) = par_chunks(changes, |part| {
            let mut arena = Vec::with_capacity(part.len() * 1024);
            let mut at = Vec::with_capacity(part.len());
            for ch in part {
                at.push(match ch {
                    Change::Upsert { certificate, .. } => {
                        let start = arena.len();
                        let digest = encode_certificate_into(certificate, &mut arena)?;
                        Some((digest, start..arena.len()))
                    }
                    Change::Delete(_) => None,
                });
            }
            Ok((arena, at))
        })?;
        Ok(Archives { chunk, parts })
    }

    /// The archives' bytes, all chunks together.
    fn bytes(&self) -> usize {
        self.parts.iter().map(|(arena, _)| arena.len()).sum()
    }

    /// The digest and archive of change `i`, if it is an upsert.
    fn get(&self, i: usize) -> Option<(u64, &[u8])> {
        let (arena, at) = self.parts.get(i / self.chunk)?;
        let (digest, range) = at.get(i % self.chunk)?.as_ref()?;
        Some((*digest, arena.get(range.clone())?))
    }
}

impl Store {
    /// Applies a change set atomically. On a rule violation returns
    /// [`Error::Rejected`] with every problem, and nothing is written.
    pub fn apply(&self, changes: Vec<Change>, mode: ApplyMode) -> Result<ApplySummary, Error> {
        self.apply_journaled(changes, mode, |_| Vec::new())
    }

    /// [`Store::apply`], writing the journal records `journal(&summary)` returns (key,
    /// value pairs of the `journal` column family, see [`Store::journal_get`]) in the same
    /// atomic, synced batch: after a crash either the changes and their records are both
    /// there, or neither is. The server records an upload's outcome and its idempotency
    /// key this way. On a rejected change set nothing is written, the records included.
    pub fn apply_journaled(
        &self,
        changes: Vec<Change>,
        mode: ApplyMode,
        journal: impl FnOnce(&ApplySummary) -> Vec<crate::store::JournalRecord>,
    ) -> Result<ApplySummary, Error> {
        let started = std::time::Instant::now();
        let Keyed { keys: iks, order } = validate_keyed(&changes, mode)?;
        let _w = self.writer.lock();
        let active = (self.generation() & 1) as usize;
        let source_cf = self.cf(SOURCE[active])?;
        let holders_cf = self.cf(HOLDERS[active])?;
        let mut sum = ApplySummary::default();

        // Every source-index entry the set touches, read in one sorted batch on every core.
        let sorted: Vec<&[u8]> = order.iter().map(|&i| iks[i].as_slice()).collect();
        // In windows: every value read pins its block until dropped, and blocks read
        // around the cache are fresh allocations, so one multi-get of a whole 50k-key share
        // held ~100 MB of new pages where a window's blocks are freed and reused.
        let read_source = |keys: &[&[u8]]| {
            let mut out = Vec::with_capacity(keys.len());
            for window in keys.chunks(READ_WINDOW) {
                let values = self.db.batched_multi_get_cf_opt(source_cf, window, true, &bulk_read_options());
                for (k, v) in window.iter().zip(values) {
                    out.push(match v.map_err(storage)? {
                        Some(v) => Some(
                            SourceEntry::decode(&v)
                                .ok_or_else(|| Error::Corrupt(format!("source index {}", hex(k))))?,
                        ),
                        None => None,
                    });
                }
            }
            Ok(out)
        };
        // The first window on this thread, to tell a store in memory from one on the disk.
        let probed = sorted.len().min(READ_WINDOW);
        let before = blocks_read();
        let mut found = read_source(&sorted[..probed])?;
        let cold = reads_went_to_disk(probed, blocks_read().saturating_sub(before))
            || self.cold_reads.load(std::sync::atomic::Ordering::Relaxed);
        found.reserve(sorted.len() - probed);
        par_map_into(read_threads(sorted.len(), cold), &sorted[probed..], &mut found, read_source)?;
        drop(sorted);
        let mut existing: Vec<Option<SourceEntry>> = vec![None; iks.len()];
        for (&i, e) in order.iter().zip(found) {
            existing[i] = e;
        }
        drop(order);
        let sourced = started.elapsed();
        // Each upsert's archive, and from its digest the source-index entry it will have.
        let archives = Archives::encode(&changes)?;
        let entries: Vec<Option<SourceEntry>> = changes
            .iter()
            .enumerate()
            .map(|(i, ch)| match ch {
                Change::Upsert { pmh_id, .. } => {
                    let (digest, _) = archives.get(i)?;
                    Some(SourceEntry { key: self.key_of(pmh_id), pmh_id: *pmh_id, digest })
                }
                Change::Delete(_) => None,
            })
            .collect();
        let read = started.elapsed();

        // A full upload deletes every certificate of its municipality it does not list.
        let mut unlisted: Vec<(Vec<u8>, SourceEntry, CertificateId)> = Vec::new();
        if let ApplyMode::ReplaceMunicipality(m) = mode {
            let listed: HashSet<&[u8], foldhash::fast::RandomState> = iks.iter().map(|k| k.as_slice()).collect();
            let prefix = CertificateId::municipality_prefix(m);
            let iter =
                self.db.iterator_cf(source_cf, rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward));
            for item in iter {
                let (k, v) = item.map_err(storage)?;
                if !k.starts_with(&prefix) {
                    break;
                }
                if listed.contains(&*k) {
                    continue;
                }
                let old = SourceEntry::decode(&v).ok_or_else(|| Error::Corrupt(format!("source index {}", hex(&k))))?;
                let id = CertificateId::from_index_key(&k)
                    .ok_or_else(|| Error::Corrupt(format!("source key {}", hex(&k))))?;
                unlisted.push((k.to_vec(), old, id));
            }
        }

        // What changes: the summary, the source-index writes and the edits of holders. The
        // edits go straight into one part per thread (per core, or more when the reads above
        // went to the disk), by key range.
        let threads = read_threads(changes.len() + unlisted.len(), cold);
        let bounds =
            split_points(entries.iter().chain(&existing).filter_map(|e| e.as_ref().map(|e| e.key)).collect(), threads);
        let mut parts: Vec<Vec<BucketEdit<'_>>> =
            (0..=bounds.len()).map(|_| Vec::with_capacity(changes.len() / (bounds.len() + 1) + 16)).collect();
        let mut edit =
            |key: StoreKey, pmh_id: PmhId, edit| route(&mut parts, &bounds, BucketEdit { key, pmh_id, edit });
        let mut source_ops: Vec<(Vec<u8>, Option<[u8; SOURCE_VALUE_LEN]>)> =
            Vec::with_capacity(changes.len() + unlisted.len());
        for (i, (((ch, ik), existing), entry)) in changes.iter().zip(iks).zip(existing).zip(entries).enumerate() {
            match (ch, entry) {
                (Change::Upsert { pmh_id, .. }, Some(entry)) => {
                    let Some((_, archive)) = archives.get(i) else {
                        return Err(Error::Corrupt("upsert without its archive".into()));
                    };
                    match existing {
                        Some(old) if old == entry => sum.unchanged += 1,
                        Some(old) => {
                            if old.pmh_id != entry.pmh_id {
                                edit(old.key, old.pmh_id, Edit::RemoveSame(archive));
                            }
                            edit(entry.key, *pmh_id, Edit::Put(archive));
                            source_ops.push((ik, Some(entry.encode())));
                            sum.updated += 1;
                        }
                        None => {
                            edit(entry.key, *pmh_id, Edit::Put(archive));
                            source_ops.push((ik, Some(entry.encode())));
                            sum.inserted += 1;
                        }
                    }
                }
                (Change::Upsert { .. }, None) => return Err(Error::Corrupt("upsert without its index entry".into())),
                (Change::Delete(id), _) => match existing {
                    Some(old) => {
                        edit(old.key, old.pmh_id, Edit::Remove(id));
                        source_ops.push((ik, None));
                        sum.deleted += 1;
                    }
                    None => sum.unchanged += 1,
                },
            }
        }
        for (k, old, id) in &unlisted {
            edit(old.key, old.pmh_id, Edit::Remove(id));
            source_ops.push((k.clone(), None));
            sum.deleted += 1;
        }

        // Sized up front: a batch grown by doubling copies itself and faults in fresh pages
        // each time (a quarter of a 100k-row diff's CPU, when it did). The new holder values
        // are not known before they are edited; each is about the archives put into it
        // plus the certificates it keeps, so twice the archives' bytes covers a generated
        // diff (60 MB of values for 36 MB of archives at 10 M). Beyond the estimate the
        // batch grows once, which costs time, not correctness.
        let key_count = source_ops.len() + changes.len() + unlisted.len();
        let estimate = 2 * archives.bytes()
            + source_ops.iter().map(|(k, _)| k.len()).sum::<usize>()
            + key_count * (SOURCE_VALUE_LEN + 32);
        let batch = Mutex::new(WriteBatch::with_capacity_bytes(estimate));

        // The parts are edited on one thread each, each putting its buckets into the batch
        // as it goes, while this thread first puts the source-index writes in key order
        // (the memtable's skiplist inserts a run of ascending keys from where the last one
        // went; random keys each search from the top) and then edits the first part.
        let db = &self.db;
        let buckets = std::thread::scope(|scope| {
            let mut parts = parts.into_iter().filter(|p| !p.is_empty());
            let first = parts.next();
            let batch = &batch;
            let handles: Vec<_> = parts.map(|p| scope.spawn(move || edit_buckets(db, holders_cf, p, batch))).collect();
            let mut buckets = Vec::with_capacity(handles.len() + 1);
            buckets.extend(first.map(|p| edit_buckets(db, holders_cf, p, batch)));
            // Identities are unique within a set (validated), so the order is total.
            source_ops.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            {
                let mut batch = batch.lock();
                for (k, v) in &source_ops {
                    match v {
                        Some(v) => batch.put_cf(source_cf, k, v),
                        None => batch.delete_cf(source_cf, k),
                    }
                }
            }
            buckets.extend(handles.into_iter().map(join));
            buckets.into_iter().sum::<Result<usize, Error>>()
        })?;
        drop(source_ops);
        let mut batch = batch.into_inner();
        let edited = started.elapsed();
        let journal_cf = self.cf(JOURNAL)?;
        for (k, v) in journal(&sum) {
            batch.put_cf(journal_cf, k, v);
        }
        let batch_bytes = batch.size_in_bytes();
        let built = started.elapsed();
        if !batch.is_empty() {
            self.db.write_opt(batch, &self.write_options()).map_err(storage)?;
        }
        tracing::debug!(
            rows = sum.inserted + sum.updated + sum.deleted + sum.unchanged,
            keys = buckets,
            batch_bytes,
            estimate,
            threads,
            cold,
            source_ms = sourced.as_millis() as u64,
            archive_ms = (read - sourced).as_millis() as u64,
            edit_ms = (edited - read).as_millis() as u64,
            batch_ms = (built - edited).as_millis() as u64,
            write_ms = (started.elapsed() - built).as_millis() as u64,
            "change set applied"
        );
        drop(archives);
        if changes.len() >= PARALLEL_MIN {
            drop_elsewhere(changes);
        }
        Ok(sum)
    }
}

/// Frees a large change set's certificates on a thread of their own: millions of small
/// allocations whose freeing the caller (an upload's answer, `pmh-load diff`'s exit) need
/// not wait for. If no thread can be started they are freed here.
fn drop_elsewhere<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new().name("pmh-free".into()).spawn(move || drop(value));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn blocks_read_counts_reads_that_miss_the_page_cache_and_not_those_that_hit() {
        // Beside the test program: the build directory is on a disk, where a temporary
        // directory may be in memory (tmpfs), whose pages cannot be dropped.
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        let path = dir.path().join("cold");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; 4 << 20]).unwrap();
        f.sync_all().unwrap();
        // SAFETY: an open file descriptor; the advice only drops clean cached pages.
        assert_eq!(unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) }, 0);
        let before = blocks_read();
        assert_eq!(std::fs::read(&path).unwrap().len(), 4 << 20);
        let cold = blocks_read() - before;
        let before = blocks_read();
        std::fs::read(&path).unwrap();
        let warm = blocks_read() - before;
        assert!(cold >= 4096, "4 MB read from the disk counted {cold} blocks");
        assert!(warm < 64, "4 MB read from the page cache counted {warm} blocks");
        // The rule a change set applies to its first window of 1,024 reads.
        assert!(reads_went_to_disk(1024, cold) && !reads_went_to_disk(1024, warm));
    }

    /// Archives of certificates `H0`..`H5`, each in versions 0..3 (differing in content).
    fn versions() -> Vec<Vec<Vec<u8>>> {
        (0..6)
            .map(|h| {
                (0..3)
                    .map(|v| {
                        let mut c = Certificate::example(&format!("H{h}"));
                        c.certification_name = format!("v{v}");
                        encode_certificate(&c).unwrap().0
                    })
                    .collect()
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The identity index gives exactly what scanning the bucket for every edit gives:
        /// the same certificates, in the same order, the replaced ones in their places.
        #[test]
        fn indexed_edits_equal_scanned_edits(
            stored in proptest::collection::vec((0u8..4, proptest::collection::btree_set(0usize..6, 0..5)), 0..4),
            edits in proptest::collection::vec((0u8..3, 0u8..4, 0usize..6, 0usize..3), 0..40),
        ) {
            let archives = versions();
            let ids: Vec<CertificateId> =
                (0..6).map(|h| Certificate::example(&format!("H{h}")).id()).collect();
            let mut flat: Flat<'_> = Vec::new();
            let mut seen = HashSet::new();
            for (holder, keys) in &stored {
                if seen.insert(*holder) {
                    flat.extend(keys.iter().map(|&h| ([*holder; 16], archives[h][0].as_slice())));
                }
            }
            let edits: Vec<BucketEdit<'_>> = edits
                .iter()
                .map(|&(kind, holder, h, v)| BucketEdit {
                    key: StoreKey([0; 16]),
                    pmh_id: PmhId::from_bytes([holder; 16]),
                    edit: match kind {
                        0 => Edit::Put(&archives[h][v]),
                        1 => Edit::Remove(&ids[h]),
                        _ => Edit::RemoveSame(&archives[h][v]),
                    },
                })
                .collect();
            let mut scanned = flat.clone();
            for e in &edits {
                e.apply(&mut scanned);
            }
            let mut indexed = flat;
            apply_indexed(&mut indexed, &edits);
            proptest::prop_assert_eq!(indexed, scanned);
        }
    }

    #[test]
    fn a_bucket_with_many_certificates_is_edited_through_the_index() {
        let archives = versions();
        let mut flat: Flat<'_> = (0..6).map(|h| ([1; 16], archives[h][0].as_slice())).collect();
        let put = |h: usize| BucketEdit {
            key: StoreKey([0; 16]),
            pmh_id: PmhId::from_bytes([1; 16]),
            edit: Edit::Put(&archives[h][1]),
        };
        // Few: scanned. Many (here the same puts repeated): indexed. Same outcome.
        apply_edits(&mut flat, &[put(2)]);
        assert_eq!(flat[2].1, archives[2][1].as_slice());
        let many: Vec<BucketEdit<'_>> = (0..SCAN_LIMIT).map(|i| put(i % 6)).collect();
        apply_edits(&mut flat, &many);
        assert!(flat.iter().enumerate().all(|(h, (_, a))| *a == archives[h][1].as_slice()));
    }

    #[test]
    fn a_panicking_worker_fails_the_change_set_instead_of_the_process() {
        let items: Vec<u32> = (0..100).collect();
        let sums = par_chunks_on(4, &items, |c| Ok(c.iter().sum::<u32>())).unwrap();
        assert_eq!((sums.0, sums.1.iter().sum::<u32>()), (25, 4950));
        let err = par_chunks_on(4, &items, |c| {
            assert!(!c.contains(&60), "a worker's bug");
            Ok(c.len())
        })
        .unwrap_err();
        assert!(matches!(&err, Error::Corrupt(m) if m == "a worker panicked"), "{err:?}");
    }

    #[test]
    fn more_threads_than_cores_only_for_a_large_set_whose_reads_go_to_the_disk() {
        let cores = threads_for(PARALLEL_MIN);
        assert_eq!(read_threads(PARALLEL_MIN - 1, true), 1);
        assert_eq!(read_threads(PARALLEL_MIN, false), cores);
        assert_eq!(read_threads(PARALLEL_MIN, true), cores.max(COLD_READ_THREADS));
        assert!(!reads_went_to_disk(1024, 1024) && reads_went_to_disk(1024, 1025));
    }
}
