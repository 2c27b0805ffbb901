//! # pmh-loader — not built yet
//!
//! Parsing and validation of CSV (UTF-8 and Shift_JIS/CP932) and JSON subsidy files,
//! full and differential loads, the parallel SST pipeline, and the `pmh-load` /
//! `pmh-admin` binaries. Tracked as its own issue; this crate is an empty placeholder so
//! the workspace has its final shape. Nothing here works yet.
