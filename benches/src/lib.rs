//! # pmh-bench — synthetic data and benchmark harnesses
//!
//! - [`synth`] — deterministic synthetic people and certificates.
//! - [`gen`](crate::r#gen) — `pmh-bench gen`: deterministic synthetic upload files (full, diff, manifest)
//!   in the CSV/JSON formats the loader reads.
//! - [`engine`] — builds a synthetic store and measures the engine's lookup against the
//!   raw RocksDB `get_pinned` ceiling, in one run, with per-operation latency histograms.
//! - [`http`] — `pmh-bench http`: a load generator for a running `pmh-server`, lookups
//!   against the `GET /v1/ping` ceiling, closed or open loop.
//!
//! The `pmh-bench` binary drives these; the criterion suites in `benches/` reuse them.

pub mod engine;
pub mod http;
// `gen` is a reserved keyword since edition 2024, hence the raw identifier.
pub mod r#gen;
pub mod report;
pub mod synth;
