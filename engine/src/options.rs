//! Store configuration: every RocksDB knob the engine sets, as a typed field with its
//! default and the reason for it.
//!
//! The defaults are tuned for the hot path of this system — point lookups of random
//! 16-byte keys, most of which hit, a sizeable share of which miss (people with no
//! subsidy), with the working set in memory — and for bulk loads by SST ingestion.
//! `docs/storage.md` has the measurements behind them.

use rocksdb::{
    BlockBasedOptions, Cache, DBCompactionStyle, DBCompressionType, DataBlockIndexType, Options,
    UniversalCompactOptions,
};

/// How long a consent (提供同意) lasts once granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentLifetime {
    /// Until the end of the visit day in Asia/Tokyo (the default): a consent given at the
    /// reception desk covers that day's visit and nothing after.
    EndOfDay,
    /// A fixed number of seconds from the grant.
    Seconds(i64),
}

impl ConsentLifetime {
    /// Parses `"end-of-day"` or a duration such as `"24h"`, `"90m"`, `"3600s"`, `"2d"`.
    pub fn parse(s: &str) -> Result<ConsentLifetime, String> {
        if s == "end-of-day" {
            return Ok(ConsentLifetime::EndOfDay);
        }
        let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let n: i64 = num
            .parse()
            .map_err(|_| format!("consent lifetime {s:?}: expected \"end-of-day\" or a duration like \"24h\""))?;
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(format!("consent lifetime {s:?}: unit must be s, m, h or d")),
        };
        if n <= 0 {
            return Err(format!("consent lifetime {s:?} must be positive"));
        }
        Ok(ConsentLifetime::Seconds(n * mult))
    }

    /// When a consent granted at `now` (Unix seconds) expires.
    pub fn expiry(self, now: i64) -> i64 {
        match self {
            ConsentLifetime::EndOfDay => crate::date::Date::tokyo_date_of(now).succ().tokyo_midnight_unix(),
            ConsentLifetime::Seconds(s) => now + s,
        }
    }
}

/// Everything needed to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// RocksDB tuning.
    pub rocks: RocksTuning,
    /// How long consents last.
    pub consent_lifetime: ConsentLifetime,
    /// Fingerprint of the PMH-ID secret ([`crate::PmhIdDeriver::fingerprint`]). A new store
    /// records it; an existing store with another fingerprint refuses to open, because
    /// every PMH-ID derived under a different secret would silently miss.
    pub secret_fingerprint: Option<[u8; 16]>,
    /// Capacity of the queue between lookups and the access-log writer. When the writer
    /// falls this far behind, lookups wait rather than drop an entry: an answer is never
    /// given without its access-log entry on its way to disk.
    pub access_log_queue: usize,
    /// fsync the WAL on certificate writes (change sets, snapshot switch). On: an
    /// acknowledged upload survives power loss, not only a process kill; it costs one
    /// fsync per change set, not per row.
    pub sync_writes: bool,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            rocks: RocksTuning::default(),
            consent_lifetime: ConsentLifetime::EndOfDay,
            secret_fingerprint: None,
            access_log_queue: 65_536,
            sync_writes: true,
        }
    }
}

/// Compression of the block-based point-lookup families (source index, consents); the
/// holders are PlainTable, never compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression: a block-cache miss costs one read and no decompression.
    None,
    /// LZ4: about half the disk and page-cache footprint for ≈1 µs per block miss.
    Lz4,
}

/// RocksDB tuning. Field docs give the default and why.
#[derive(Debug, Clone)]
pub struct RocksTuning {
    /// Block cache shared by the block-based column families (source index, consents,
    /// logs; the holders are PlainTable, read from the page cache). Default 1 GiB; size it
    /// to the active source index (`pmh-admin stats`) to keep a diff's index reads in
    /// memory.
    pub block_cache_bytes: usize,
    /// Data block size. Default 4 KiB: with the hash index a lookup reads one block, and
    /// smaller blocks waste less cache per hot record; below 4 KiB the index grows faster
    /// than the gain.
    pub block_size: usize,
    /// Bloom filter bits per key. Default 10 (≈1 % false positives): a lookup for a person
    /// with no certificates — common, most patients have no subsidy — costs a filter probe
    /// instead of a block read.
    pub bloom_bits_per_key: f64,
    /// Data-block hash index (`kDataBlockBinaryAndHash`). Default on, ratio 0.75: replaces
    /// the binary search inside a block (the largest cost of an in-cache get) with one hash
    /// probe, for about 1 byte per key.
    pub data_block_hash_ratio: Option<f64>,
    /// Keep index and filter blocks in the block cache (`cache_index_and_filter_blocks`)
    /// pinned for L0 and at the top level. Default off: they then live in table-reader
    /// memory for the file's lifetime — never evicted, no cache lookup on the hot path —
    /// at ≈1.3 bytes/key for the filter and ≈0.1 for the index, i.e. ~45 MB at 30 M keys.
    pub cache_index_and_filter_blocks: bool,
    /// `optimize_filters_for_hits`. Default off: it drops the bottommost filter, which is
    /// where a miss would be answered cheaply, and misses are common here.
    pub optimize_filters_for_hits: bool,
    /// Memtable bloom filter (whole key), as a ratio of the write buffer. Default 0.02:
    /// most lookups miss the memtable (it holds only the day's changes), and the filter
    /// answers that without a skiplist search.
    pub memtable_bloom_ratio: f64,
    /// Write buffer per column family. Default 64 MiB.
    pub write_buffer_bytes: usize,
    /// Background flush + compaction threads. Default 2 (the machine's cores: loads are
    /// rare and compaction must not starve lookups).
    pub max_background_jobs: i32,
    /// Compression of the source index and consents. Default none (see [`Compression`]).
    pub compression: Compression,
    /// Open files kept. Default -1 (all): a table-reader open on the hot path would cost
    /// far more than the file descriptors.
    pub max_open_files: i32,
    /// Index of the point-lookup families (see [`IndexKind`]).
    pub index: IndexKind,
    /// Keys between restart points in a data block. Default 1: store keys are random
    /// hashes, so prefix compression saves nothing, and with the data-block hash index a
    /// lookup then decodes exactly one entry instead of scanning up to 16.
    pub block_restart_interval: i32,
    /// RocksDB's row cache (key → value of point reads, consulted before any table file
    /// is searched), bytes; 0 turns it off. Default 0 (off). A hit skips the bloom probe,
    /// the index binary search, the block-cache lookup and the in-block search (raw get
    /// 4.9 → 2.2 µs when every person fits); a miss pays an allocation, a copy of the
    /// value and an eviction on top of the block read (4.9 → 8.0 µs when none fits). It
    /// pays when most lookups repeat a recent one — a pre-visit batch check followed by
    /// the reception's lookup, reception then billing — and costs when most are a
    /// patient's first of the day (measurements: docs/benchmarks.md, fifth round, with
    /// block-based holders; the PlainTable read is 2.3 µs without a row cache, which
    /// leaves a hit little to save — not measured again).
    /// Entries are keyed by table file, which never changes, so a hit is never stale:
    /// newer writes sit in the memtable or newer files, which are read first. Batched
    /// reads fill it too (a change set's reads), so offline tools (`pmh-load`,
    /// `pmh-admin`) turn it off ([`RocksTuning::for_offline_tools`]).
    pub row_cache_bytes: usize,
    /// Read table files through mmap (`allow_mmap_reads`). Default on: the holders'
    /// PlainTable lookups read records in place in the mapped files
    /// ([`RocksTuning::holders_cf_options`]). `pmh-load` keeps it as configured: a diff's
    /// edits read the holders, and a snapshot's ingestion scans every key of each holders
    /// file, five times faster mapped. `pmh-admin` turns it off (`Config::offline_store_config`
    /// in the loader): its `verify` reads every value, and through buffers an unreadable
    /// page is an error it reports instead of a `SIGBUS` that ends it. Without mmap
    /// PlainTable reads through buffers.
    pub mmap_reads: bool,
    /// Block cache implementation. Default HyperClock: lock-free lookups; the LRU cache
    /// takes a shard mutex and relinks its list on every hit, which showed up as the
    /// largest single cost of an in-memory get.
    pub cache: CacheKind,
    /// CPU scheduling of RocksDB's flush and compaction threads in a serving process
    /// (applied by [`crate::Store::idle_background_threads`]; `pmh-server` does it after
    /// opening the store). Default [`BackgroundPriority::Idle`].
    pub background_priority: BackgroundPriority,
}

/// CPU scheduling class of RocksDB's background (flush and compaction) threads.
///
/// A flush of the access log's 128 MB memtable sorts ≈ 840k entries, 2.2–2.7 s of CPU in
/// one burst. On two cores shared with the request workers, that burst took the lookups'
/// open-loop p99 at 20,000 req/s (≈ 60 % of the peak) to 50–940 ms whenever it fell inside
/// the window; in the idle class the same runs gave 13–64 ms, and the `make bench` p99 at
/// half the peak went from 106 ms to 1.1 ms (docs/benchmarks.md, fourth round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackgroundPriority {
    /// Linux `SCHED_IDLE`: background work runs on CPU time the request threads leave
    /// free. It still runs (the machine is never busy all the time, and a waiting writer
    /// frees its core), but a sustained 100 % load delays flushes, and a full memtable then
    /// makes writers wait for them.
    Idle,
    /// The default scheduling class, like every other thread.
    Normal,
}

/// Block cache implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// RocksDB's HyperClockCache (auto-sized entry charge).
    HyperClock,
    /// RocksDB's sharded LRU cache.
    Lru,
}

impl RocksTuning {
    /// Creates the block cache this tuning asks for.
    pub(crate) fn new_cache(&self) -> Cache {
        match self.cache {
            CacheKind::HyperClock => Cache::new_hyper_clock_cache(self.block_cache_bytes, 0),
            CacheKind::Lru => Cache::new_lru_cache(self.block_cache_bytes),
        }
    }
}

/// How a table file finds the data block of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// Binary search over the index block: one dependent cache miss per step, ~17 steps
    /// for a 1 M-key file.
    BinarySearch,
    /// Hash of the key's first `prefix_len` bytes → data block (`kHashSearch` with a fixed
    /// prefix extractor). Store keys are uniformly random hashes, so an 8-byte prefix is
    /// as selective as the whole key.
    Hash {
        /// Prefix length in bytes (1–16).
        prefix_len: usize,
    },
}

impl Default for RocksTuning {
    fn default() -> RocksTuning {
        RocksTuning {
            block_cache_bytes: 1 << 30,
            row_cache_bytes: 0,
            mmap_reads: true,
            block_size: 4096,
            bloom_bits_per_key: 10.0,
            data_block_hash_ratio: Some(0.75),
            cache_index_and_filter_blocks: false,
            optimize_filters_for_hits: false,
            memtable_bloom_ratio: 0.02,
            write_buffer_bytes: 64 << 20,
            max_background_jobs: 2,
            compression: Compression::None,
            max_open_files: -1,
            index: IndexKind::BinarySearch,
            block_restart_interval: 1,
            cache: CacheKind::HyperClock,
            background_priority: BackgroundPriority::Idle,
        }
    }
}

/// The name of the holders families' comparator (see [`RocksTuning::holders_cf_options`]).
pub(crate) const PLAIN_TABLE_COMPARATOR: &str = "";

/// The access log's universal compaction limit on its newer runs' size against its oldest
/// run's ([`RocksTuning::access_log_cf_options`]). RocksDB multiplies it by the oldest
/// run's bytes in 64 bits, which holds up to a run of 10^14 bytes.
const LOG_MAX_SIZE_AMPLIFICATION_PERCENT: i32 = 100_000;

/// Whether PlainTable files carry their hash index and bloom filter. Without them a file's
/// index is rebuilt by reading the whole file whenever it is opened (at every store open
/// and every ingestion).
const PLAIN_TABLE_STORE_INDEX: bool = true;

impl RocksTuning {
    /// DB-wide options.
    pub(crate) fn db_options(&self, row_cache: Option<&Cache>) -> Options {
        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        o.set_max_background_jobs(self.max_background_jobs);
        o.set_max_open_files(self.max_open_files);
        // Recovery must not silently drop a corrupted tail of acknowledged writes.
        o.set_paranoid_checks(true);
        // Required by the access log's vector memtable. Costs nothing here: every write
        // path is already single-threaded (the access-log writer, the change-set lock).
        o.set_allow_concurrent_memtable_write(false);
        o.set_keep_log_file_num(10);
        // The WAL is handed to the kernel's writeback every megabyte as it is written, so
        // the sync that ends a large batch (a diff's or a full upload's, tens of MB) waits
        // only for the last of it.
        o.set_wal_bytes_per_sync(1 << 20);
        // The same for the table files a flush or a compaction writes: the sync that
        // ends each file then waits only for its last megabyte.
        o.set_bytes_per_sync(1 << 20);
        // PlainTable (the holders) reads in place through mmap. The block-based families
        // then read blocks from the mapping too, and still cache them.
        o.set_allow_mmap_reads(self.mmap_reads);
        if let Some(c) = row_cache {
            o.set_row_cache(c);
        }
        o
    }

    /// The row cache this tuning asks for, if any. LRU: the HyperClock cache measured no
    /// faster as a row cache (docs/benchmarks.md, fifth round).
    pub(crate) fn new_row_cache(&self) -> Option<Cache> {
        (self.row_cache_bytes > 0).then(|| Cache::new_lru_cache(self.row_cache_bytes))
    }

    /// This tuning for a process that does not serve lookups (`pmh-load`, `pmh-admin`):
    /// no row cache, since a bulk job's batched reads would only fill it with values read
    /// once. `mmap_reads` stays as configured (see [`RocksTuning::mmap_reads`]).
    pub fn for_offline_tools(mut self) -> RocksTuning {
        self.row_cache_bytes = 0;
        self
    }

    /// Options of the block-based point-lookup families (source index, consents); the base
    /// of the holders' options too, for their memtable and write buffer.
    pub(crate) fn point_cf_options(&self, cache: &Cache) -> Options {
        let mut t = BlockBasedOptions::default();
        t.set_block_cache(cache);
        t.set_block_size(self.block_size);
        t.set_block_restart_interval(self.block_restart_interval);
        t.set_bloom_filter(self.bloom_bits_per_key, false);
        t.set_whole_key_filtering(true);
        t.set_optimize_filters_for_memory(true);
        t.set_format_version(6);
        if let Some(ratio) = self.data_block_hash_ratio {
            t.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
            t.set_data_block_hash_ratio(ratio);
        }
        t.set_cache_index_and_filter_blocks(self.cache_index_and_filter_blocks);
        let prefix = match self.index {
            IndexKind::BinarySearch => None,
            IndexKind::Hash { prefix_len } => {
                t.set_index_type(rocksdb::BlockBasedIndexType::HashSearch);
                Some(prefix_len.clamp(1, 16))
            }
        };
        if self.cache_index_and_filter_blocks {
            t.set_pin_l0_filter_and_index_blocks_in_cache(true);
            t.set_pin_top_level_index_and_filter(true);
        }
        let mut o = Options::default();
        o.set_block_based_table_factory(&t);
        if let Some(len) = prefix {
            o.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(len));
        }
        o.set_optimize_filters_for_hits(self.optimize_filters_for_hits);
        o.set_memtable_whole_key_filtering(true);
        o.set_memtable_prefix_bloom_ratio(self.memtable_bloom_ratio);
        o.set_write_buffer_size(self.write_buffer_bytes);
        o.set_level_compaction_dynamic_level_bytes(true);
        o.set_compression_type(match self.compression {
            Compression::None => DBCompressionType::None,
            Compression::Lz4 => DBCompressionType::Lz4,
        });
        o
    }

    /// Options of the holders column families: PlainTable, read in place through mmap.
    ///
    /// A lookup is one point read of the holders, and RocksDB's block-based format made
    /// it a filter probe, a binary search of the file's index, a block-cache lookup and a
    /// search inside the block — 4.7–6.5 µs on this machine with every block cached.
    /// PlainTable hashes the whole key (the prefix extractor takes all 16 bytes) to the
    /// record's offset in the mapped file: 2.0–2.8 µs for the same 1 M keys, measured in
    /// alternation (docs/benchmarks.md, tenth round). The holders then live in the page
    /// cache instead of the block cache; the hash index and bloom filter are written into
    /// each file ([`PLAIN_TABLE_STORE_INDEX`]) so that opening a file maps them instead of
    /// scanning the file. PlainTable does not compress and its files have no block
    /// checksums: every holders value carries its own digest, checked on each read
    /// (`record` module), and a value found under the wrong key is refused by the PMH-ID
    /// it carries, so a damaged file can fail a lookup but not answer for someone else.
    ///
    /// The comparator is bytewise, named `""`: RocksDB's PlainTable builder records no
    /// comparator name in a file, and ingestion refuses a file whose recorded name
    /// differs from the family's, so a family with the built-in comparator could never
    /// ingest a snapshot. The comparison is the same as the built-in one.
    pub(crate) fn holders_cf_options(&self, cache: &Cache) -> Options {
        let mut o = self.point_cf_options(cache);
        o.set_comparator(PLAIN_TABLE_COMPARATOR, Box::new(|a: &[u8], b: &[u8]| a.cmp(b)));
        o.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(crate::layout::STORE_KEY_LEN));
        o.set_plain_table_factory(&rocksdb::PlainTableFactoryOptions {
            user_key_length: crate::layout::STORE_KEY_LEN as u32,
            bloom_bits_per_key: self.bloom_bits_per_key.round() as i32,
            hash_table_ratio: 0.75,
            index_sparseness: 16,
            huge_page_tlb_size: 0,
            encoding_type: rocksdb::KeyEncodingType::Plain,
            full_scan_mode: false,
            store_index_in_file: PLAIN_TABLE_STORE_INDEX,
        });
        // Not compressed whatever `compression` says (PlainTable cannot).
        o.set_compression_type(DBCompressionType::None);
        o
    }

    /// Options of the access log: those of [`RocksTuning::log_cf_options`] with a vector
    /// memtable and universal compaction. Access-log keys start with the PMH-ID, so
    /// consecutive entries land at random places; a skiplist memtable paid a chain of cache
    /// misses per entry (the largest cost of the writer thread, stealing a core from
    /// lookups), a vector memtable appends and sorts once at flush. Reads of the memtable
    /// (a person's history, an admin operation) pay for a sort instead, which is the right
    /// way round.
    pub(crate) fn access_log_cf_options(&self, cache: &Cache) -> Options {
        let mut o = self.log_cf_options(cache);
        o.set_memtable_factory(rocksdb::MemtableFactory::Vector);
        // Every lookup appends an entry, keyed by PMH-ID (random), so each flushed file
        // spans the whole key space. Large memtables flush less often (each flush sorts
        // ≈ 840k entries), and a compaction waits for 8 sorted runs.
        o.set_write_buffer_size(128 << 20);
        o.set_level_zero_file_num_compaction_trigger(8);
        // Universal, not leveled: every new file overlaps all of the log, so a leveled
        // compaction rewrote all of the last level each time, and the log's upkeep grew
        // with its size (0.9 µs of CPU per lookup after one minute of load, 1.7 µs after
        // five). Universal merges runs of like size, so an entry is rewritten about
        // log2(log size / memtable) times over its life: 0.4 µs per lookup over the same
        // five minutes (docs/benchmarks.md, twenty-first round). A person's history seeks
        // in each sorted run (the level-0 files and one run per level, rarely more than
        // fifteen), which an admin read can afford.
        o.set_compaction_style(DBCompactionStyle::Universal);
        // Every run compressed alike: universal compares the runs' sizes in bytes, and an
        // uncompressed new run (152 bytes an entry) against LZ4-compressed old ones (about
        // 25) looked six times larger and pulled the whole log into every merge.
        o.set_compression_type(DBCompressionType::Lz4);
        let mut u = UniversalCompactOptions::default();
        // The log is never overwritten or deleted, so the size of its newer runs against
        // the oldest is no waste to reclaim, and a full compaction for it would rewrite
        // the log for nothing. 1000 times the oldest run: only a log whose oldest run is
        // tiny (its first flush) ever reaches it, once.
        u.set_max_size_amplification_percent(LOG_MAX_SIZE_AMPLIFICATION_PERCENT);
        o.set_universal_compaction_options(&u);
        o
    }

    /// Options of the append-mostly, scanned column families (access log, metadata):
    /// LZ4 because the log is cold and large, no bloom filter because it is read by prefix
    /// scans only.
    pub(crate) fn log_cf_options(&self, cache: &Cache) -> Options {
        let mut t = BlockBasedOptions::default();
        t.set_block_cache(cache);
        t.set_format_version(6);
        let mut o = Options::default();
        o.set_block_based_table_factory(&t);
        o.set_write_buffer_size(self.write_buffer_bytes.min(32 << 20));
        o.set_level_compaction_dynamic_level_bytes(true);
        o.set_compression_type(DBCompressionType::Lz4);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::date::Date;

    #[test]
    fn consent_lifetimes() {
        assert_eq!(ConsentLifetime::parse("end-of-day"), Ok(ConsentLifetime::EndOfDay));
        assert_eq!(ConsentLifetime::parse("24h"), Ok(ConsentLifetime::Seconds(86_400)));
        assert_eq!(ConsentLifetime::parse("90m"), Ok(ConsentLifetime::Seconds(5_400)));
        assert!(ConsentLifetime::parse("0h").is_err());
        assert!(ConsentLifetime::parse("h").is_err());
        assert!(ConsentLifetime::parse("5y").is_err());
        // Granted at 10:00 JST on 2026-11-21 → expires at 00:00 JST on 2026-11-22.
        let day = Date::parse("2026-11-21").unwrap();
        let t = day.tokyo_midnight_unix() + 10 * 3600;
        assert_eq!(ConsentLifetime::EndOfDay.expiry(t), day.succ().tokyo_midnight_unix());
    }

    /// The access log's options: universal compaction actually runs under them, and a log
    /// written under the leveled compaction of earlier builds opens and reads whole, and
    /// the other way round.
    #[test]
    fn the_access_log_compacts_universally_and_opens_with_leveled_builds_both_ways() {
        use crate::layout::ACCESS_LOG;
        use rocksdb::{ColumnFamilyDescriptor, DB};

        let dir = tempfile::tempdir().unwrap();
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        // Keys as the writer makes them: PMH-ID (random), time, sequence.
        let key = |n: u64| {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
            k[16..24].copy_from_slice(&n.to_be_bytes());
            k[24..].copy_from_slice(&n.to_be_bytes());
            k
        };
        let write = |db: &DB, from: u64, to: u64| {
            let cf = db.cf_handle(ACCESS_LOG).unwrap();
            for n in from..to {
                db.put_cf(cf, key(n), n.to_le_bytes()).unwrap();
            }
            db.flush_cf(cf).unwrap();
        };
        let all = |db: &DB| -> Vec<u64> {
            let cf = db.cf_handle(ACCESS_LOG).unwrap();
            let mut got: Vec<u64> = db
                .iterator_cf(cf, rocksdb::IteratorMode::Start)
                .map(|kv| u64::from_le_bytes(kv.unwrap().1.as_ref().try_into().unwrap()))
                .collect();
            let keys: Vec<[u8; 32]> = got.iter().map(|&n| key(n)).collect();
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "the log is read out of key order");
            got.sort_unstable();
            got
        };

        // An earlier build's log: leveled, its files compacted into the last level.
        {
            let mut leveled = Options::default();
            leveled.set_level_compaction_dynamic_level_bytes(true);
            let db = DB::open_cf_descriptors(&db_opts, dir.path(), [ColumnFamilyDescriptor::new(ACCESS_LOG, leveled)])
                .unwrap();
            write(&db, 0, 1000);
            write(&db, 1000, 2000);
            db.compact_range_cf(db.cf_handle(ACCESS_LOG).unwrap(), None::<&[u8]>, None::<&[u8]>);
        }

        let cache = Cache::new_lru_cache(1 << 20);
        let opts = RocksTuning::default().access_log_cf_options(&cache);
        let db =
            DB::open_cf_descriptors(&db_opts, dir.path(), [ColumnFamilyDescriptor::new(ACCESS_LOG, opts)]).unwrap();
        assert_eq!(all(&db), (0..2000).collect::<Vec<_>>(), "the leveled log did not read whole");

        // Nine flushes: one more sorted run than the trigger, so a compaction must run.
        for f in 0..9 {
            write(&db, 2000 + f * 100, 2100 + f * 100);
        }
        let cf = db.cf_handle(ACCESS_LOG).unwrap();
        let level0 = || db.property_int_value_cf(cf, "rocksdb.num-files-at-level0").unwrap().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while level0() >= 8 {
            assert!(std::time::Instant::now() < deadline, "no compaction of {} level-0 files", level0());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(all(&db), (0..2900).collect::<Vec<_>>(), "entries lost or duplicated by the compactions");

        // The style is recorded in the store's options file, as what the next open reads.
        drop(db);
        let latest = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("OPTIONS-"))
            .max()
            .unwrap();
        let text = std::fs::read_to_string(latest).unwrap();
        let section = text.split("[CFOptions \"access_log\"]").nth(1).expect("no access_log section");
        let section = section.split("[TableOptions").next().unwrap();
        assert!(section.contains("compaction_style=kCompactionStyleUniversal"), "{section}");
        assert!(section.contains("max_size_amplification_percent=100000"), "{section}");
        assert!(section.contains("compression=kLZ4Compression"), "{section}");

        // And back: a rollback to a build with leveled compaction opens the log and reads
        // it whole (universal keeps newer runs above older ones, as leveled does).
        let mut leveled = Options::default();
        leveled.set_level_compaction_dynamic_level_bytes(true);
        let db =
            DB::open_cf_descriptors(&db_opts, dir.path(), [ColumnFamilyDescriptor::new(ACCESS_LOG, leveled)]).unwrap();
        assert_eq!(all(&db), (0..2900).collect::<Vec<_>>(), "a leveled open lost entries");
        write(&db, 2900, 3000);
        db.compact_range_cf(db.cf_handle(ACCESS_LOG).unwrap(), None::<&[u8]>, None::<&[u8]>);
        assert_eq!(all(&db), (0..3000).collect::<Vec<_>>());
    }
}
