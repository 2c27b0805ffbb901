//! # pmh-server — not built yet
//!
//! The HTTP API (axum/tokio): reception lookups with consent, municipal uploads, metrics,
//! and the `pmh-server` binary. Tracked as its own issue; this crate is an empty
//! placeholder so the workspace has its final shape. Nothing here works yet.
