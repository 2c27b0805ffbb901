//! The access log (アクセス記録): every answer and every refusal, who asked, for whom,
//! when, and what was disclosed — readable back per person.
//!
//! A synchronous RocksDB put per lookup would cost more than the lookup itself (WAL
//! append + memtable insert under the write mutex). Instead a lookup appends its entry to
//! a bounded in-memory queue and a dedicated writer thread group-commits the queue to the
//! `access_log` column family (WAL on) every 2 ms. The queue is bounded and a lookup
//! waits when it is full, so an entry is never dropped: a writer that falls behind slows
//! lookups down instead of losing their trail. A process kill can lose only the entries
//! of the last ~2 ms; a clean shutdown drains the queue (`Store` drop).
//!
//! Key: PMH-ID (16) + time in µs (8, big-endian) + sequence (8, big-endian), so one
//! person's history is one prefix scan in time order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rkyv::{Archive, Deserialize, Serialize};
use rocksdb::{DB, WriteBatch, WriteOptions};

use crate::layout::ACCESS_LOG;

/// What the asking institution got.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AccessOutcome {
    /// Certificates were returned (possibly none).
    Answered,
    /// Refused: no live consent.
    ConsentRequired,
}

/// One certificate named in an answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DisclosedCertificate {
    /// 自治体コード.
    pub municipality_code: u32,
    /// 公費負担者番号.
    pub insurer_number: u32,
    /// 機関別受給者証種別ID.
    pub org_specific_certificate_type_id: String,
    /// 履歴キー.
    pub history_key: String,
}

/// One access-log entry as stored.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    /// When (Unix µs).
    pub at_micros: i64,
    /// For whom (PMH-ID bytes).
    pub pmh_id: [u8; 16],
    /// Which institution asked (10-digit code).
    pub institution: u64,
    /// Through which client (the gateway's token name).
    pub client: String,
    /// The date asked about (days since 1970-01-01).
    pub date: i32,
    /// Answered or refused.
    pub outcome: AccessOutcome,
    /// Whether the personal block (基本5情報) was disclosed.
    pub personal_disclosed: bool,
    /// The certificates disclosed.
    pub disclosed: Vec<DisclosedCertificate>,
}

/// A gateway client, interned: lookups carry this small id instead of a name, so that
/// queueing an access-log entry allocates nothing. Get one with
/// [`crate::Store::register_client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(pub(crate) u32);

/// Interned client names.
#[derive(Default)]
pub(crate) struct Clients {
    names: parking_lot::RwLock<(Vec<String>, std::collections::HashMap<String, u32>)>,
}

impl Clients {
    pub(crate) fn register(&self, name: &str) -> ClientId {
        if let Some(&id) = self.names.read().1.get(name) {
            return ClientId(id);
        }
        let mut w = self.names.write();
        if let Some(&id) = w.1.get(name) {
            return ClientId(id);
        }
        let id = w.0.len() as u32;
        w.0.push(name.to_owned());
        w.1.insert(name.to_owned(), id);
        ClientId(id)
    }
}

/// Inline capacity for the disclosed-certificate identities of one entry (two typical
/// certificates); a person with more spills to the heap.
const INLINE_DISCLOSED: usize = 76;

/// An access-log entry as queued by a lookup: fixed-size, built without allocating in the
/// common case (allocation showed up as ~0.5 µs per lookup, most of it freeing on the
/// writer thread what the lookup thread allocated). The writer turns it into an
/// [`AccessEntry`].
pub(crate) struct PendingAccess {
    pub(crate) at_micros: i64,
    pub(crate) pmh_id: [u8; 16],
    pub(crate) institution: u64,
    pub(crate) client: ClientId,
    pub(crate) date: i32,
    pub(crate) outcome: AccessOutcome,
    pub(crate) personal_disclosed: bool,
    /// Encoded disclosed certificates: per certificate municipality (4) + insurer (4) +
    /// type-id length (2) + type id + history-key length (2) + history key.
    inline: [u8; INLINE_DISCLOSED],
    inline_len: u16,
    /// Used instead of `inline` once the encoding outgrows it. Boxed (8 bytes instead of a
    /// `Vec`'s 24) to keep the entry at two cache lines: it is written on the lookup core
    /// and read on the writer's, and every line costs a transfer.
    #[allow(clippy::box_collection)]
    spill: Option<Box<Vec<u8>>>,
}

// Two cache lines; see `spill`.
const _: () = assert!(std::mem::size_of::<PendingAccess>() <= 128);

impl PendingAccess {
    pub(crate) fn new(
        at_micros: i64,
        pmh_id: [u8; 16],
        institution: u64,
        client: ClientId,
        date: i32,
        outcome: AccessOutcome,
    ) -> Self {
        PendingAccess {
            at_micros,
            pmh_id,
            institution,
            client,
            date,
            outcome,
            personal_disclosed: false,
            inline: [0; INLINE_DISCLOSED],
            inline_len: 0,
            spill: None,
        }
    }

    /// Adds one disclosed certificate.
    pub(crate) fn disclose(&mut self, municipality: u32, insurer: u32, type_id: &str, history_key: &str) {
        let (t, h) = (type_id.as_bytes(), history_key.as_bytes());
        let (tl, hl) = (t.len().min(u16::MAX as usize), h.len().min(u16::MAX as usize));
        let need = 12 + tl + hl;
        let used = usize::from(self.inline_len);
        if self.spill.is_none() && used + need <= INLINE_DISCLOSED {
            let b = &mut self.inline[used..used + need];
            b[..4].copy_from_slice(&municipality.to_le_bytes());
            b[4..8].copy_from_slice(&insurer.to_le_bytes());
            b[8..10].copy_from_slice(&(tl as u16).to_le_bytes());
            b[10..10 + tl].copy_from_slice(&t[..tl]);
            b[10 + tl..12 + tl].copy_from_slice(&(hl as u16).to_le_bytes());
            b[12 + tl..].copy_from_slice(&h[..hl]);
            self.inline_len = (used + need) as u16;
        } else {
            let inline = &self.inline[..used];
            let spill = self.spill.get_or_insert_with(|| Box::new(inline.to_vec()));
            spill.extend_from_slice(&municipality.to_le_bytes());
            spill.extend_from_slice(&insurer.to_le_bytes());
            spill.extend_from_slice(&(tl as u16).to_le_bytes());
            spill.extend_from_slice(&t[..tl]);
            spill.extend_from_slice(&(hl as u16).to_le_bytes());
            spill.extend_from_slice(&h[..hl]);
        }
    }

    /// Writes this entry into `e`, reusing `e`'s strings and list: the writer thread keeps
    /// one `AccessEntry` and serialises every entry through it, so that turning queued
    /// entries into stored ones allocates nothing once the buffers have grown (eight
    /// allocations per entry before, freed again right after serialising).
    fn fill(&self, e: &mut AccessEntry, clients: &ClientNames<'_>) {
        e.at_micros = self.at_micros;
        e.pmh_id = self.pmh_id;
        e.institution = self.institution;
        clients.name_into(self.client, &mut e.client);
        e.date = self.date;
        e.outcome = self.outcome;
        e.personal_disclosed = self.personal_disclosed;
        let mut b: &[u8] = match &self.spill {
            Some(s) => s,
            None => &self.inline[..usize::from(self.inline_len)],
        };
        fn take<'b>(b: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
            let (h, t) = (b.get(..n)?, b.get(n..)?);
            *b = t;
            Some(h)
        }
        fn set(s: &mut String, bytes: &[u8]) {
            s.clear();
            s.push_str(&String::from_utf8_lossy(bytes));
        }
        let mut n = 0;
        while !b.is_empty() {
            let Some(fixed) = take(&mut b, 10) else { break };
            let muni = u32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]);
            let ins = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
            let tl = usize::from(u16::from_le_bytes([fixed[8], fixed[9]]));
            let Some(t) = take(&mut b, tl) else { break };
            let Some(hl) = take(&mut b, 2) else { break };
            let Some(h) = take(&mut b, usize::from(u16::from_le_bytes([hl[0], hl[1]]))) else { break };
            if n == e.disclosed.len() {
                e.disclosed.push(DisclosedCertificate {
                    municipality_code: 0,
                    insurer_number: 0,
                    org_specific_certificate_type_id: String::new(),
                    history_key: String::new(),
                });
            }
            let d = &mut e.disclosed[n];
            d.municipality_code = muni;
            d.insurer_number = ins;
            set(&mut d.org_specific_certificate_type_id, t);
            set(&mut d.history_key, h);
            n += 1;
        }
        e.disclosed.truncate(n);
    }
}

/// The writer thread's copy of the client names, refreshed from [`Clients`] only when an
/// entry names a client registered after the last refresh (no lock per entry).
struct ClientNames<'c> {
    clients: &'c Clients,
    names: Vec<String>,
}

impl ClientNames<'_> {
    fn name_into(&self, id: ClientId, out: &mut String) {
        out.clear();
        match self.names.get(id.0 as usize) {
            Some(n) => out.push_str(n),
            None => {
                use std::fmt::Write as _;
                let _ = write!(out, "client#{}", id.0);
            }
        }
    }

    /// Makes sure every id of `entries` is known, if it is registered at all.
    fn refresh_for(&mut self, entries: &[PendingAccess]) {
        let known = self.names.len();
        if entries.iter().any(|p| p.client.0 as usize >= known) {
            self.names = self.clients.names.read().0.clone();
        }
    }
}

/// The queue shared by lookups and the writer thread.
struct Shared {
    /// Entries waiting to be written, in arrival order.
    queue: Mutex<Queue>,
    /// Wakes the writer early (queue past half full, flush requested, shutdown).
    wake: Condvar,
    /// Wakes lookups waiting for space, and flushers waiting for their epoch.
    written: Condvar,
    capacity: usize,
    /// Client names, for turning queued ids into names at write time.
    clients: Arc<Clients>,
    /// Set while a batch cannot be written: lookups are refused meanwhile (see [`run`]).
    failing: AtomicBool,
    /// Writes still to fail on purpose (tests of the above; see
    /// [`crate::Store::inject_access_log_write_failures`]).
    fail_writes: AtomicU64,
}

#[derive(Default)]
struct Queue {
    entries: Vec<PendingAccess>,
    /// Batches handed to the writer so far (a batch is everything queued at a drain).
    taken: u64,
    /// Batches the writer has finished writing.
    done: u64,
    /// The batch a flusher waits for: the writer takes it even if nothing is queued.
    wanted: u64,
    /// The writer sleeps with nothing queued, without a timeout: the next entry wakes it.
    idle: bool,
    stop: bool,
}

/// The sending side of the access log, owned by the store.
///
/// Why a mutex-guarded vector drained on a timer, not a channel: a channel wakes its
/// blocked receiver on every send, and that futex wake-up cost a lookup more than the
/// RocksDB read. Here a lookup only pushes under an uncontended lock; the writer wakes
/// [`DRAIN_INTERVAL`] after the first entry of a batch (or early when the queue is half
/// full) and writes whatever accumulated as one batch. With nothing queued it sleeps
/// until an entry arrives, so an idle server (or `pmh-load`, which logs nothing) does not
/// wake it 500 times a second; only the entry that ends such a sleep pays for a wake-up.
pub(crate) struct AccessLogWriter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Batches that failed to write (each also logged); exposed in stats and metrics.
    pub(crate) failures: Arc<AtomicU64>,
}

/// How long an entry waits in memory at most before its batch is written.
pub(crate) const DRAIN_INTERVAL: Duration = Duration::from_millis(2);

/// How long the writer waits before trying a failed batch again.
const RETRY_INTERVAL: Duration = Duration::from_millis(250);

impl AccessLogWriter {
    pub(crate) fn start(db: Arc<DB>, capacity: usize, clients: Arc<Clients>) -> std::io::Result<AccessLogWriter> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
            capacity: capacity.max(2),
            clients,
            failing: AtomicBool::new(false),
            fail_writes: AtomicU64::new(0),
        });
        let failures = Arc::new(AtomicU64::new(0));
        let (s, f) = (shared.clone(), failures.clone());
        let thread = std::thread::Builder::new().name("pmh-access-log".into()).spawn(move || run(db, s, f))?;
        Ok(AccessLogWriter { shared, thread: Some(thread), failures })
    }

    /// Queues an entry; waits while the queue is full (never drops one).
    #[inline]
    pub(crate) fn record(&self, entry: PendingAccess) {
        let mut q = self.shared.queue.lock();
        while q.entries.len() >= self.shared.capacity && !q.stop {
            self.shared.wake.notify_one();
            self.shared.written.wait(&mut q);
        }
        q.entries.push(entry);
        if q.idle {
            // The first entry after a quiet spell starts the writer's clock.
            q.idle = false;
            self.shared.wake.notify_one();
        } else if q.entries.len() == self.shared.capacity / 2 {
            self.shared.wake.notify_one();
        }
    }

    /// Waits until every entry queued before the call is written, or until the log turns
    /// out not to be writable ([`AccessLogWriter::is_failing`]): an admin reading a history
    /// then gets what is stored instead of waiting for the disk.
    pub(crate) fn flush(&self) {
        let mut q = self.shared.queue.lock();
        // Everything queued now goes out with the next batch taken.
        let target = q.taken + 1;
        q.wanted = q.wanted.max(target);
        self.shared.wake.notify_one();
        while q.done < target && !(q.stop && q.entries.is_empty()) && !self.is_failing() {
            self.shared.written.wait(&mut q);
        }
    }

    /// Whether the last attempt to write a batch failed: until one succeeds, lookups are
    /// refused, since an answer must not go out without its trail (design §5.4).
    #[inline]
    pub(crate) fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Acquire)
    }

    /// Makes the next `n` batch writes fail as if RocksDB had refused them.
    pub(crate) fn inject_write_failures(&self, n: u64) {
        self.shared.fail_writes.store(n, Ordering::Release);
    }
}

impl Drop for AccessLogWriter {
    fn drop(&mut self) {
        self.shared.queue.lock().stop = true;
        self.shared.wake.notify_one();
        // The writer drains what is queued before it exits.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: Arc<DB>, shared: Arc<Shared>, failures: Arc<AtomicU64>) {
    let mut spare: Vec<PendingAccess> = Vec::new();
    let mut w = BatchWriter {
        db: &db,
        shared: &shared,
        failures: &failures,
        wo: WriteOptions::default(),
        seq: 0,
        names: ClientNames { clients: &shared.clients, names: Vec::new() },
        // Reused for every entry (see `PendingAccess::fill`).
        entry: AccessEntry {
            at_micros: 0,
            pmh_id: [0; 16],
            institution: 0,
            client: String::new(),
            date: 0,
            outcome: AccessOutcome::Answered,
            personal_disclosed: false,
            disclosed: Vec::new(),
        },
        value: Vec::with_capacity(256),
    };
    loop {
        let (mut batch_entries, stop) = {
            let mut q = shared.queue.lock();
            if q.entries.is_empty() && !q.stop && q.wanted <= q.taken {
                // Nothing to write and nobody waiting: sleep until an entry arrives...
                while q.entries.is_empty() && !q.stop && q.wanted <= q.taken {
                    q.idle = true;
                    shared.wake.wait(&mut q);
                }
                q.idle = false;
                // ...then give the batch DRAIN_INTERVAL to fill (a flush, a stop or a
                // half-full queue end the wait early).
                if !q.stop && q.wanted <= q.taken {
                    shared.wake.wait_for(&mut q, DRAIN_INTERVAL);
                }
            }
            q.taken += 1;
            let stop = q.stop;
            (std::mem::replace(&mut q.entries, std::mem::take(&mut spare)), stop)
        };
        // Room again for lookups waiting on a full queue.
        shared.written.notify_all();
        if !batch_entries.is_empty() {
            w.write_until_done(&batch_entries);
        }
        batch_entries.clear();
        spare = batch_entries;
        let mut q = shared.queue.lock();
        q.done += 1;
        shared.written.notify_all();
        if stop && q.entries.is_empty() {
            return;
        }
    }
}

/// What the writer thread keeps between batches: the encoding buffers, the sequence that
/// makes keys unique, and where failures are reported.
struct BatchWriter<'a> {
    db: &'a DB,
    shared: &'a Shared,
    failures: &'a AtomicU64,
    wo: WriteOptions,
    seq: u64,
    names: ClientNames<'a>,
    entry: AccessEntry,
    value: Vec<u8>,
}

impl BatchWriter<'_> {
    /// Writes `entries` as one batch. One that cannot be written is kept and tried again
    /// every [`RETRY_INTERVAL`], and lookups are refused meanwhile (`is_failing`): an
    /// answer must not go out without its trail. The entries are those of lookups answered
    /// before the failure was known; they are written once the log can be written again.
    /// At shutdown a batch that still fails is given up after one more attempt.
    fn write_until_done(&mut self, entries: &[PendingAccess]) {
        for attempt in 1u32.. {
            let batch = self.encode(entries);
            let n = batch.len();
            let injected =
                self.shared.fail_writes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| f.checked_sub(1));
            let result = match injected {
                Ok(_) => Err("injected write failure".to_owned()),
                Err(_) => self.db.write_opt(batch, &self.wo).map_err(|e| e.into_string()),
            };
            let Err(err) = result else {
                if self.shared.failing.swap(false, Ordering::AcqRel) {
                    tracing::warn!(entries = n, attempts = attempt, "access log written again; lookups resume");
                }
                return;
            };
            self.failures.fetch_add(1, Ordering::Relaxed);
            let mut q = self.shared.queue.lock();
            if q.stop && attempt > 1 {
                tracing::error!(%err, entries = n, "access log batch write failed at shutdown; its entries are lost");
                return;
            }
            tracing::error!(%err, entries = n, "access log batch write failed; lookups are refused until it is written");
            if !self.shared.failing.swap(true, Ordering::AcqRel) {
                // Flushers stop waiting for a batch that may never be written.
                self.shared.written.notify_all();
            }
            if !q.stop {
                self.shared.wake.wait_for(&mut q, RETRY_INTERVAL);
            }
        }
    }

    /// The write batch of `entries`, each under its person, time and sequence number.
    fn encode(&mut self, entries: &[PendingAccess]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        let Some(cf) = self.db.cf_handle(ACCESS_LOG) else { return batch };
        self.names.refresh_for(entries);
        for p in entries {
            p.fill(&mut self.entry, &self.names);
            self.seq += 1;
            let mut key = [0u8; 32];
            key[..16].copy_from_slice(&self.entry.pmh_id);
            key[16..24].copy_from_slice(&self.entry.at_micros.to_be_bytes());
            key[24..].copy_from_slice(&self.seq.to_be_bytes());
            self.value.clear();
            match rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&self.entry, &mut self.value) {
                Ok(_) => batch.put_cf(cf, key, &self.value),
                Err(err) => tracing::error!(%err, "access log entry did not serialize"),
            }
        }
        batch
    }
}

/// Decodes a stored access-log value.
pub(crate) fn decode_entry(v: &[u8]) -> Option<AccessEntry> {
    let a = rkyv::access::<ArchivedAccessEntry, rkyv::rancor::Error>(v).ok()?;
    rkyv::deserialize::<AccessEntry, rkyv::rancor::Error>(a).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &std::path::Path) -> (Arc<DB>, AccessLogWriter) {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        let db = Arc::new(DB::open_cf(&o, dir, [ACCESS_LOG]).unwrap());
        let w = AccessLogWriter::start(db.clone(), 8, Arc::new(Clients::default())).unwrap();
        (db, w)
    }

    fn taken(w: &AccessLogWriter) -> u64 {
        w.shared.queue.lock().taken
    }

    fn stored(db: &DB) -> usize {
        db.iterator_cf(db.cf_handle(ACCESS_LOG).unwrap(), rocksdb::IteratorMode::Start).count()
    }

    fn entry(n: u8) -> PendingAccess {
        PendingAccess::new(
            1_700_000_000_000_000 + i64::from(n),
            [n; 16],
            1_310_000_018,
            ClientId(0),
            20_000,
            AccessOutcome::Answered,
        )
    }

    /// Runs `f` on another thread and fails the test instead of hanging if it does not end.
    fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("{what} did not return"))
    }

    #[test]
    fn an_idle_writer_sleeps_until_an_entry_or_a_flush_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let (db, w) = writer(dir.path());
        let w = Arc::new(w);
        // Nothing queued: the writer does not wake every DRAIN_INTERVAL (50 times here).
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(taken(&w), 0, "an idle writer took batches");

        // A flush with nothing queued still returns: the writer takes an empty batch.
        let w2 = w.clone();
        within("flush of an empty log", move || w2.flush());
        assert_eq!(taken(&w), 1);

        // One entry wakes it, and is written within DRAIN_INTERVAL without any flush.
        w.record(entry(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stored(&db) == 0 {
            assert!(std::time::Instant::now() < deadline, "the entry was never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Then it sleeps again.
        std::thread::sleep(Duration::from_millis(20));
        let after = taken(&w);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(taken(&w), after, "the writer went on waking with nothing queued");

        // More than the queue holds: lookups wait for room, nothing is dropped.
        let w2 = w.clone();
        within("recording past the capacity", move || {
            for n in 2..=40 {
                w2.record(entry(n));
            }
            w2.flush();
        });
        assert_eq!(stored(&db), 40);
        // Dropping the writer drains and joins it.
        let w = Arc::into_inner(w).expect("no other owner");
        within("drop", move || drop(w));
    }
}
