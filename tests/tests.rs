//! Integration tests. One binary (one link, one RocksDB) with a module per area; shared
//! helpers in `util`.

mod util;

// The engine: lookup rules, consents, atomicity, snapshots, admin operations.
mod engine;
