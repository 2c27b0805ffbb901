//! # pmh-bench — synthetic data and benchmark harnesses
//!
//! - [`synth`] — deterministic synthetic people and certificates.
//! - [`engine`] — builds a synthetic store and measures the engine's lookup against the
//!   raw RocksDB `get_pinned` ceiling, in one run, with per-operation latency histograms.
//!
//! The `pmh-bench` binary drives these; the criterion suites in `benches/` reuse them.

pub mod engine;
pub mod synth;
