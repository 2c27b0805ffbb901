//! Log lines on standard error for the project's programs (`pmh-server`, `pmh-load`,
//! `pmh-admin`): what the engine and this library log through `tracing` — configuration
//! warnings, an interrupted load's clean-up, a failed write — reaches the operator.

use std::io::IsTerminal;

/// Installs the process's log subscriber: level `default_level` unless `RUST_LOG` says
/// otherwise, no module targets, colours only on a terminal. Call once, first thing.
pub fn init(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
