//! `access_bucket` — the full validation `pmh-admin verify` runs on every stored holders
//! value — on arbitrary bytes, sealed with a matching checksum first (a raw input would
//! almost never get past it), so that the framing walk and the archives' bytecheck are what
//! is exercised. Inputs whose first byte is odd are mutations of a valid value instead:
//! one or two holders with one to three certificates, then the rest of the input read as
//! (offset, byte) pairs written over it, so the fuzzer starts from deep inside the format.
//! It must never panic, and a value it accepts must read to the end: every holder's
//! archives as many as its count, every certificate readable, the owned copy made.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmh_engine::record::{Bucket, Certificate, Holder, VALUE_TRAILER, access_bucket, decode_bucket, encode_bucket};

fn body(data: &[u8]) -> Vec<u8> {
    let Some((&first, rest)) = data.split_first() else { return Vec::new() };
    if first % 2 == 0 {
        return rest.to_vec();
    }
    let certs = |n: u8, tag: &str| (0..1 + n % 3).map(|i| Certificate::example(&format!("{tag}{i}"))).collect();
    let mut holders = vec![Holder { pmh_id: [7; 16], certificates: certs(first >> 1, "A") }];
    if first & 0x80 != 0 {
        holders.push(Holder { pmh_id: [9; 16], certificates: certs(first >> 3, "B") });
    }
    let Ok(value) = encode_bucket(&Bucket { holders }) else { return Vec::new() };
    let mut b = value[..value.len() - VALUE_TRAILER].to_vec();
    for pair in rest.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]]));
        match b.get_mut(at) {
            Some(x) => *x = pair[2],
            None => b.truncate(at % (b.len() + 1)),
        }
    }
    b
}

fuzz_target!(|data: &[u8]| {
    let _ = access_bucket(data);
    let mut sealed = body(data);
    let digest = xxhash_rust::xxh3::xxh3_64(&sealed);
    sealed.extend_from_slice(&digest.to_le_bytes());
    if let Ok(v) = access_bucket(&sealed) {
        for h in v.holders() {
            assert_eq!(h.archives().count(), h.len());
            for c in h.certificates() {
                let _ = (c.history_key.as_str(), c.municipality_code.to_native(), c.is_not_disclosed);
            }
        }
        let owned = decode_bucket(&v).expect("a validated value decodes");
        assert_eq!(owned.holders.len(), v.holders().count());
    }
});
