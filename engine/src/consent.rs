//! Consents (提供同意): which institution may read which person's subsidy information,
//! until when.
//!
//! Every lookup checks a consent first, so the check must not cost a second RocksDB read
//! (≈ 220 ns per memory miss, several misses per read). Live consents are therefore held
//! in memory in a sharded hash map, and persisted in the `consents` column family so they
//! survive a restart. Consents are short-lived (by default until the end of the visit day)
//! so the map stays small: one day of reception visits, ≈ 8 M entries × ~60 bytes at the
//! national peak. Expired entries are purged by [`ConsentBook::purge_expired`].
//!
//! Why shards of `RwLock<HashMap>`: reads and writes are of similar frequency (a grant at
//! reception, then one or two lookups), the lock is held for one hash probe, and 64 shards
//! keep two cores from ever meeting on one lock. The map uses foldhash with a random
//! per-process seed: PMH-IDs in a grant come from the gateway, and a hash-flooding gateway
//! must not be able to predict collisions; SipHash would also resist that but costs ~20 ns
//! more per probe on the hot path.

use std::collections::HashMap;

use parking_lot::RwLock;

use crate::ids::InstitutionCode;
use crate::pmh_id::PmhId;

const SHARDS: usize = 64;

/// The key of a consent: (PMH-ID, institution).
pub type ConsentKey = (PmhId, u64);

type Map = HashMap<ConsentKey, i64, foldhash::fast::RandomState>;

/// The in-memory set of live consents.
pub(crate) struct ConsentBook {
    /// Each shard maps (PMH-ID, institution) → expiry (Unix seconds, exclusive).
    shards: Box<[RwLock<Map>]>,
}

impl ConsentBook {
    pub(crate) fn new() -> ConsentBook {
        ConsentBook { shards: (0..SHARDS).map(|_| RwLock::new(Map::default())).collect() }
    }

    fn shard(&self, pmh_id: &PmhId) -> &RwLock<Map> {
        // PMH-IDs are HMAC outputs: any byte picks a shard uniformly.
        &self.shards[usize::from(pmh_id.as_bytes()[15]) % SHARDS]
    }

    /// Whether a consent is live at `now`.
    #[inline]
    pub(crate) fn is_live(&self, pmh_id: &PmhId, institution: InstitutionCode, now: i64) -> bool {
        self.shard(pmh_id).read().get(&(*pmh_id, institution.get())).is_some_and(|&exp| now < exp)
    }

    /// The expiry of a live consent.
    pub(crate) fn expiry(&self, pmh_id: &PmhId, institution: InstitutionCode, now: i64) -> Option<i64> {
        self.shard(pmh_id).read().get(&(*pmh_id, institution.get())).copied().filter(|&exp| now < exp)
    }

    pub(crate) fn insert(&self, pmh_id: PmhId, institution: u64, expires: i64) {
        self.shard(&pmh_id).write().insert((pmh_id, institution), expires);
    }

    pub(crate) fn remove(&self, pmh_id: &PmhId, institution: u64) -> bool {
        self.shard(pmh_id).write().remove(&(*pmh_id, institution)).is_some()
    }

    /// Removes every consent expired at `now`; returns their keys (to delete on disk).
    pub(crate) fn purge_expired(&self, now: i64) -> Vec<ConsentKey> {
        let mut gone = Vec::new();
        for shard in self.shards.iter() {
            shard.write().retain(|k, &mut exp| {
                let keep = now < exp;
                if !keep {
                    gone.push(*k);
                }
                keep
            });
        }
        gone
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
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
