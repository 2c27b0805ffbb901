//! Consents (提供同意): which institution may read which person's subsidy information,
//! until when.
//!
//! Every lookup checks a consent first, so the check must not cost a second RocksDB read
//! (≈ 220 ns per memory miss, several misses per read). Live consents are therefore held
//! in memory in a sharded hash map, and persisted in the `consents` column family so they
//! survive a restart. Consents are short-lived (by default until the end of the visit day)
//! so the map stays small: one day of reception visits, ≈ 8 M entries × 46–128 bytes (32-byte
//! slots, 25–70 % used) at the national peak. Expired entries are purged by [`ConsentBook::purge_expired`].
//!
//! Why shards of `RwLock<Table>`: reads and writes are of similar frequency (a grant at
//! reception, then one or two lookups), the lock is held for one probe, and 64 shards keep
//! two cores from ever meeting on one lock; each lock has a cache line of its own, so two
//! cores probing different shards do not bounce a line between them either.
//!
//! Why not a `HashMap`: the probe is on every lookup's path and, with ~1 M consents, it
//! cost ~0.75 µs of a 3.7 µs engine lookup — hashbrown keeps its control bytes and its
//! entries in two arrays, so a probe misses the cache (and the TLB) twice. [`Table`] keeps
//! two whole entries (PMH-ID, institution, expiry) in each 64-byte bucket, so a probe
//! touches one line (docs/benchmarks.md, tenth round). Hashes are foldhash with a random
//! per-process seed: PMH-IDs in a grant come from the gateway, and a hash-flooding gateway
//! must not be able to predict collisions.

use std::hash::BuildHasher;

use parking_lot::RwLock;

use crate::ids::InstitutionCode;
use crate::pmh_id::PmhId;

const SHARDS: usize = 64;

/// The key of a consent: (PMH-ID, institution).
pub type ConsentKey = (PmhId, u64);

/// One shard's lock on a cache line of its own.
#[repr(align(64))]
struct Shard(RwLock<Table>);

/// The in-memory set of live consents.
pub(crate) struct ConsentBook {
    /// Each shard maps (PMH-ID, institution) → expiry (Unix seconds, exclusive).
    shards: Box<[Shard]>,
}

impl ConsentBook {
    pub(crate) fn new() -> ConsentBook {
        let hasher = foldhash::fast::RandomState::default();
        ConsentBook { shards: (0..SHARDS).map(|_| Shard(RwLock::new(Table::new(hasher.clone())))).collect() }
    }

    fn shard(&self, pmh_id: &PmhId) -> &RwLock<Table> {
        // PMH-IDs are HMAC outputs: any byte picks a shard uniformly.
        &self.shards[usize::from(pmh_id.as_bytes()[15]) % SHARDS].0
    }

    /// Whether a consent is live at `now`.
    #[inline]
    pub(crate) fn is_live(&self, pmh_id: &PmhId, institution: InstitutionCode, now: i64) -> bool {
        self.shard(pmh_id).read().get(pmh_id, institution.get()).is_some_and(|exp| now < exp)
    }

    /// The expiry of a live consent.
    pub(crate) fn expiry(&self, pmh_id: &PmhId, institution: InstitutionCode, now: i64) -> Option<i64> {
        self.shard(pmh_id).read().get(pmh_id, institution.get()).filter(|&exp| now < exp)
    }

    pub(crate) fn insert(&self, pmh_id: PmhId, institution: u64, expires: i64) {
        self.shard(&pmh_id).write().insert(pmh_id, institution, expires);
    }

    pub(crate) fn remove(&self, pmh_id: &PmhId, institution: u64) -> bool {
        self.shard(pmh_id).write().remove(pmh_id, institution)
    }

    /// Removes every consent expired at `now`; returns their keys (to delete on disk).
    pub(crate) fn purge_expired(&self, now: i64) -> Vec<ConsentKey> {
        let mut gone = Vec::new();
        for shard in self.shards.iter() {
            shard.0.write().retain(|k, exp| {
                let keep = now < exp;
                if !keep {
                    gone.push(k);
                }
                keep
            });
        }
        gone
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }
}

/// An expiry that marks a slot never used: probes stop there.
const EMPTY: i64 = 0;
/// An expiry that marks a removed entry's slot: probes go on past it, inserts reuse it.
const REMOVED: i64 = -1;

/// One consent, or an empty or removed slot (by its expiry; a live consent's expiry is a
/// Unix time in seconds, always positive).
#[derive(Clone, Copy)]
struct Slot {
    pmh_id: [u8; 16],
    institution: u64,
    expires: i64,
}

const FREE: Slot = Slot { pmh_id: [0; 16], institution: 0, expires: EMPTY };

/// Two slots on one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket([Slot; 2]);

/// An open-addressing map (PMH-ID, institution) → expiry: linear probing over buckets of
/// two slots, removal by marker, a rebuild when used slots (live or removed) pass 70 %.
struct Table {
    buckets: Vec<Bucket>,
    /// Live entries.
    len: usize,
    /// Live and removed entries (slots a probe does not stop at).
    used: usize,
    hasher: foldhash::fast::RandomState,
}

impl Table {
    /// Buckets of a new table.
    const MIN_BUCKETS: usize = 8;

    fn new(hasher: foldhash::fast::RandomState) -> Table {
        Table { buckets: vec![Bucket([FREE; 2]); Self::MIN_BUCKETS], len: 0, used: 0, hasher }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn home(&self, pmh_id: &[u8; 16], institution: u64) -> usize {
        (self.hasher.hash_one((pmh_id, institution)) as usize) & (self.buckets.len() - 1)
    }

    /// The slot holding the key, or `Err` with the first reusable slot on its probe path
    /// (a removed one, else the empty one that ended it).
    fn find(&self, pmh_id: &[u8; 16], institution: u64) -> Result<(usize, usize), (usize, usize)> {
        let mask = self.buckets.len() - 1;
        let mut reusable = None;
        let mut b = self.home(pmh_id, institution);
        // The table always keeps empty slots (at most 70 % used), so the probe ends.
        loop {
            for (i, slot) in self.buckets[b].0.iter().enumerate() {
                match slot.expires {
                    EMPTY => return Err(reusable.unwrap_or((b, i))),
                    REMOVED => {
                        reusable.get_or_insert((b, i));
                    }
                    _ if slot.pmh_id == *pmh_id && slot.institution == institution => return Ok((b, i)),
                    _ => {}
                }
            }
            b = (b + 1) & mask;
        }
    }

    fn get(&self, pmh_id: &PmhId, institution: u64) -> Option<i64> {
        self.find(pmh_id.as_bytes(), institution).ok().map(|(b, i)| self.buckets[b].0[i].expires)
    }

    fn insert(&mut self, pmh_id: PmhId, institution: u64, expires: i64) {
        if expires <= EMPTY {
            // Not a live consent at any time (expiries are positive Unix times).
            self.remove(&pmh_id, institution);
            return;
        }
        match self.find(pmh_id.as_bytes(), institution) {
            Ok((b, i)) => self.buckets[b].0[i].expires = expires,
            Err((b, i)) => {
                if self.buckets[b].0[i].expires == EMPTY {
                    self.used += 1;
                }
                self.buckets[b].0[i] = Slot { pmh_id: *pmh_id.as_bytes(), institution, expires };
                self.len += 1;
                if self.used * 10 > self.buckets.len() * 2 * 7 {
                    self.rebuild();
                }
            }
        }
    }

    fn remove(&mut self, pmh_id: &PmhId, institution: u64) -> bool {
        match self.find(pmh_id.as_bytes(), institution) {
            Ok((b, i)) => {
                self.buckets[b].0[i].expires = REMOVED;
                self.len -= 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Keeps the entries for which `keep` says so, and drops the removed markers.
    fn retain(&mut self, mut keep: impl FnMut(ConsentKey, i64) -> bool) {
        let live: Vec<Slot> = self
            .buckets
            .iter()
            .flat_map(|b| b.0)
            .filter(|s| s.expires > EMPTY && keep((PmhId::from_bytes(s.pmh_id), s.institution), s.expires))
            .collect();
        self.refill(live);
    }

    /// Rebuilds the table sized for its live entries: 25–50 % of the slots used
    /// afterwards, so it grows when they are many and drops removed markers when not.
    fn rebuild(&mut self) {
        self.retain(|_, _| true);
    }

    fn refill(&mut self, live: Vec<Slot>) {
        let buckets = live.len().next_power_of_two().max(Self::MIN_BUCKETS);
        self.buckets = vec![Bucket([FREE; 2]); buckets];
        (self.len, self.used) = (live.len(), live.len());
        for s in live {
            let Err((b, i)) = self.find(&s.pmh_id, s.institution) else { unreachable!("keys are unique") };
            self.buckets[b].0[i] = s;
        }
    }
}

/// The RocksDB key of a consent: PMH-ID (16) + institution (8, big-endian).
pub(crate) fn consent_key(pmh_id: &PmhId, institution: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(pmh_id.as_bytes());
    k[16..].copy_from_slice(&institution.to_be_bytes());
    k
}

/// Parses a consent key and value back.
pub(crate) fn decode_consent(k: &[u8], v: &[u8]) -> Option<(PmhId, u64, i64)> {
    let pmh: [u8; 16] = k.get(..16)?.try_into().ok()?;
    let inst = u64::from_be_bytes(k.get(16..24)?.try_into().ok()?);
    let exp = i64::from_be_bytes(v.try_into().ok()?);
    (k.len() == 24).then_some((PmhId::from_bytes(pmh), inst, exp))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn id(n: u64) -> PmhId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&n.to_le_bytes());
        b[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        PmhId::from_bytes(b)
    }

    #[test]
    fn the_table_agrees_with_a_hash_map_through_inserts_updates_removals_and_purges() {
        // Few keys, many operations: every key is inserted, updated, removed and inserted
        // again many times, over removed markers, growth and rebuilds.
        let mut t = Table::new(foldhash::fast::RandomState::default());
        let mut m: HashMap<(u64, u64), i64> = HashMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..200_000u64 {
            let r = next();
            let (n, inst) = (r % 3_000, (r >> 20) % 3);
            // Purges are rare, so removed markers pile up between them.
            match if (r >> 40) % 500 == 0 { 9 } else { (r >> 40) % 9 } {
                0..=5 => {
                    let exp = 1 + ((r >> 8) % 1_000) as i64;
                    t.insert(id(n), inst, exp);
                    m.insert((n, inst), exp);
                }
                6..=8 => assert_eq!(t.remove(&id(n), inst), m.remove(&(n, inst)).is_some(), "step {step}"),
                _ => {
                    let now = ((r >> 8) % 1_000) as i64;
                    let mut gone = Vec::new();
                    t.retain(|k, exp| {
                        let keep = now < exp;
                        if !keep {
                            gone.push(k);
                        }
                        keep
                    });
                    let before = m.len();
                    m.retain(|_, exp| now < *exp);
                    assert_eq!(gone.len(), before - m.len(), "step {step}");
                }
            }
            assert_eq!(t.len(), m.len(), "step {step}");
            assert!(t.used * 10 <= t.buckets.len() * 2 * 7, "step {step}: more than 70 % of the slots used");
            let probe = next() % 3_000;
            for inst in 0..3 {
                assert_eq!(t.get(&id(probe), inst), m.get(&(probe, inst)).copied(), "step {step}");
            }
        }
        for (&(n, inst), &exp) in &m {
            assert_eq!(t.get(&id(n), inst), Some(exp));
        }
    }

    #[test]
    fn a_key_removed_and_granted_again_is_held_once() {
        let mut t = Table::new(foldhash::fast::RandomState::default());
        for n in 0..100 {
            t.insert(id(n), 7, 50);
        }
        // Remove an early key, so a removed marker sits on later keys' probe paths, then
        // grant later keys again: each must update its own slot, not take the marker.
        assert!(t.remove(&id(3), 7));
        for n in 0..100 {
            t.insert(id(n), 7, 60);
        }
        assert_eq!(t.len(), 100);
        let copies = t.buckets.iter().flat_map(|b| b.0).filter(|s| s.expires > EMPTY && s.pmh_id == *id(42).as_bytes());
        assert_eq!(copies.count(), 1);
        assert!(t.buckets.iter().flat_map(|b| b.0).all(|s| s.expires <= EMPTY || s.expires == 60));
        assert_eq!(t.get(&id(3), 7), Some(60));
        assert_eq!(t.get(&id(3), 8), None, "the institution is part of the key");
        assert!(!t.remove(&id(1_000), 7));
    }

    #[test]
    fn an_expiry_that_is_no_unix_time_removes_instead_of_storing_a_marker() {
        let book = ConsentBook::new();
        book.insert(id(1), 5, 100);
        // 0 and -1 are the table's markers; a stored consent never has them (expiries are
        // positive Unix times), and one given anyway is not live at any time.
        book.insert(id(1), 5, 0);
        assert_eq!(book.len(), 0);
        book.insert(id(2), 5, -1);
        assert_eq!(book.len(), 0);
        assert!(!book.is_live(&id(2), InstitutionCode::from_u64(5), -5));
    }
}
