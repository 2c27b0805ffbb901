//! PMH-ID (the person's identity inside the hub) and the store key.
//!
//! - **PMH-ID** = the first 128 bits of HMAC-SHA-256(secret, My Number), rendered as 32
//!   lowercase hex characters. Deterministic (same number + same secret → same PMH-ID, so
//!   loader threads and servers derive it independently), one-way without the secret,
//!   and 128 bits make an accidental clash among 10⁸ people a 10⁻²³ event.
//! - **Store key** = xxh3-128 of the PMH-ID's ASCII form, 16 bytes big-endian. It spreads
//!   keys evenly over the LSM tree. It is *not* trusted as an identity: every record keeps
//!   the full PMH-ID and a read compares it, so even a forced key collision can never
//!   return another person's data (see `Bucket` in [`crate::record`]).

use std::fmt;

use hmac::{KeyInit, Mac};

use crate::ids::MyNumber;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Length of a PMH-ID's ASCII form.
pub const PMH_ID_LEN: usize = 32;

/// A person's identity in the hub (PMH-ID), derived from the My Number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PmhId([u8; 16]);

/// Why a PMH-ID string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pmhId must be 32 lowercase hexadecimal characters")]
pub struct PmhIdError;

impl PmhId {
    /// The PMH-ID from its 16 raw bytes.
    pub const fn from_bytes(b: [u8; 16]) -> PmhId {
        PmhId(b)
    }

    /// The 16 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the canonical form: exactly 32 lowercase hex digits.
    pub fn parse(s: &str) -> Result<PmhId, PmhIdError> {
        let b = s.as_bytes();
        if b.len() != PMH_ID_LEN {
            return Err(PmhIdError);
        }
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (hex_val(b[2 * i])? << 4) | hex_val(b[2 * i + 1])?;
        }
        Ok(PmhId(out))
    }

    /// The 32-character ASCII form, without allocating.
    pub fn to_ascii(&self) -> [u8; PMH_ID_LEN] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; PMH_ID_LEN];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        out
    }

    /// The store key of this PMH-ID (xxh3-128 of the ASCII form).
    pub fn store_key(&self) -> StoreKey {
        StoreKey(xxhash_rust::xxh3::xxh3_128(&self.to_ascii()).to_be_bytes())
    }
}

fn hex_val(c: u8) -> Result<u8, PmhIdError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(PmhIdError),
    }
}

impl fmt::Display for PmhId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.to_ascii();
        // The ASCII form is hex, always valid UTF-8.
        f.write_str(std::str::from_utf8(&a).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for PmhId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PmhId({self})")
    }
}

/// The RocksDB key of a person's record: xxh3-128 of the PMH-ID, big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreKey(pub [u8; crate::layout::STORE_KEY_LEN]);

/// How a store turns a PMH-ID into its key. Always [`PmhId::store_key`] in production;
/// tests substitute a deliberately weak function to force collisions.
pub type KeyFn = fn(&PmhId) -> StoreKey;

/// Derives PMH-IDs from My Numbers under the deployment secret.
#[derive(Clone)]
pub struct PmhIdDeriver {
    mac: HmacSha256,
}

impl PmhIdDeriver {
    /// A deriver for `secret` (the `pmh_id_secret` of the configuration).
    pub fn new(secret: &[u8]) -> PmhIdDeriver {
        // HMAC accepts keys of any length; this cannot fail.
        let mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        PmhIdDeriver { mac }
    }

    /// The PMH-ID of a (validated) My Number.
    pub fn derive(&self, number: &MyNumber) -> PmhId {
        let mut mac = self.mac.clone();
        mac.update(b"pmh-id/v1\0");
        mac.update(number.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut id = [0u8; 16];
        id.copy_from_slice(&full[..16]);
        PmhId(id)
    }

    /// A fingerprint of the secret, kept in the store's metadata so that opening a store
    /// with a different secret (which would silently make every PMH-ID miss) is refused.
    pub fn fingerprint(&self) -> [u8; 16] {
        let mut mac = self.mac.clone();
        mac.update(b"pmh-store-fingerprint/v1");
        let full = mac.finalize().into_bytes();
        let mut fp = [0u8; 16];
        fp.copy_from_slice(&full[..16]);
        fp
    }
}

impl fmt::Debug for PmhIdDeriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PmhIdDeriver(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_number_same_secret_same_id() {
        let n = MyNumber::parse("123456789018").unwrap();
        let a = PmhIdDeriver::new(b"secret-a");
        assert_eq!(a.derive(&n), PmhIdDeriver::new(b"secret-a").derive(&n));
        assert_ne!(a.derive(&n), PmhIdDeriver::new(b"secret-b").derive(&n));
        let s = a.derive(&n).to_string();
        assert_eq!(s.len(), 32);
        assert!(!s.contains("123456789018"));
        assert_eq!(PmhId::parse(&s).unwrap(), a.derive(&n));
    }

    #[test]
    fn parse_is_strict() {
        assert!(PmhId::parse(&"a".repeat(32)).is_ok());
        assert!(PmhId::parse(&"A".repeat(32)).is_err());
        assert!(PmhId::parse(&"a".repeat(31)).is_err());
        assert!(PmhId::parse(&"g".repeat(32)).is_err());
        assert!(PmhId::parse(&"é".repeat(16)).is_err());
    }

    #[test]
    fn store_key_is_xxh3_128_big_endian_of_the_ascii_form() {
        let id = PmhId::parse("00112233445566778899aabbccddeeff").unwrap();
        let want = xxhash_rust::xxh3::xxh3_128(b"00112233445566778899aabbccddeeff").to_be_bytes();
        assert_eq!(id.store_key().0, want);
    }
}
