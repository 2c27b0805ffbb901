//! `pmh-admin`: store administration — `stats`, `compact`, `checkpoint DIR`, `verify`
//! (design §6).
//!
//! A thin binary: it parses arguments, loads the configuration
//! ([`pmh_loader::config::Config`], `docs/configuration.md`), opens the store with it and
//! calls one engine operation (`pmh_engine::admin`). The store is opened with the
//! configuration's secret fingerprint, so a store created under another `pmh_id_secret` is
//! refused here exactly as the server would refuse it.
//!
//! Exit codes: 0 success; 1 `verify` found problems; 2 usage, configuration, I/O or
//! storage error. Errors are one line on stderr naming the file or directory concerned.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use pmh_engine::{Error, Store, StoreStats, VerifyReport};
use pmh_loader::config::{Config, ENV_PMH_ID_SECRET};
use serde_json::json;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code when `verify` finds problems.
const EXIT_PROBLEMS: u8 = 1;
/// Exit code of every error (clap uses it for usage errors too).
const EXIT_ERROR: u8 = 2;

/// Inspect and maintain a PMH store.
#[derive(Parser)]
#[command(name = "pmh-admin", version, after_help = "Exit codes: 0 success, 1 verify found problems, 2 error.")]
struct Cli {
    /// Configuration file (TOML, see docs/configuration.md). Without it: the defaults and
    /// the PMH_* environment variables.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Store directory; overrides `db` of the configuration.
    #[arg(long, value_name = "DIR", global = true)]
    db: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generation, consents, and estimated keys and bytes per column family.
    Stats,
    /// Flush and fully compact every column family.
    Compact,
    /// Write a consistent, openable copy of the store to DIR (which must not exist).
    Checkpoint {
        /// The new directory.
        dir: PathBuf,
    },
    /// Check every stored value; exit 1 if anything is wrong.
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pmh_loader::logging::init("info");
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("pmh-admin: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    let mut config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(db) = cli.db {
        config.db = db;
    }
    // Refused before the store is opened: nothing to undo, and the message is clearer than
    // RocksDB's.
    if let Command::Checkpoint { dir } = &cli.command
        && dir.symlink_metadata().is_ok()
    {
        return Err(format!("{}: already exists; a checkpoint needs a new directory", dir.display()));
    }
    let store = open(&config)?;
    let db = config.db.display().to_string();
    match cli.command {
        Command::Stats => {
            let stats = store.stats().map_err(|e| format!("{db}: {e}"))?;
            if cli.json {
                println!("{}", stats_json(&db, &stats));
            } else {
                print!("{}", stats_text(&db, &stats));
            }
        }
        Command::Compact => {
            let start = Instant::now();
            store.compact().map_err(|e| format!("{db}: compaction failed: {e}"))?;
            let seconds = start.elapsed().as_secs_f64();
            if cli.json {
                println!("{}", json!({ "db": db, "compacted": true, "seconds": seconds }));
            } else {
                println!("compacted {db} in {seconds:.1} s");
            }
        }
        Command::Checkpoint { dir } => {
            store.checkpoint(&dir).map_err(|e| format!("{}: cannot write the checkpoint: {e}", dir.display()))?;
            let dir = dir.display().to_string();
            if cli.json {
                println!("{}", json!({ "db": db, "checkpoint": dir }));
            } else {
                println!("checkpoint of {db} written to {dir}");
            }
        }
        Command::Verify => {
            let report = store.verify().map_err(|e| format!("{db}: verify failed: {e}"))?;
            if cli.json {
                println!("{}", verify_json(&db, &report));
            } else {
                print!("{}", verify_text(&db, &report));
            }
            if !report.is_ok() {
                return Ok(ExitCode::from(EXIT_PROBLEMS));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the store of `config`, refusing a directory that holds no store (opening would
/// create an empty one) and explaining the two refusals an operator meets: a lock held by a
/// running server or load, and a store created under another secret.
fn open(config: &Config) -> Result<Store, String> {
    let db = &config.db;
    let shown = db.display();
    if !db.join("CURRENT").is_file() {
        return Err(if db.is_dir() {
            format!("{shown}: not a PMH store (no RocksDB CURRENT file)")
        } else {
            format!("{shown}: no such store directory")
        });
    }
    Store::open(db, config.offline_store_config()).map_err(|e| match e {
        Error::SecretMismatch => format!(
            "{shown}: this store was created under a different pmh_id_secret than the one of {} \
             (or {ENV_PMH_ID_SECRET}); refusing to open it, every PMH-ID would miss",
            config.origin
        ),
        Error::Storage(m) if is_lock_error(&m) => format!(
            "{shown}: the store is locked by another process (a running pmh-server or pmh-load?); \
             stop it and try again ({m})"
        ),
        e => format!("{shown}: cannot open the store: {e}"),
    })
}

/// Whether a RocksDB open error is the directory's `LOCK` being held.
fn is_lock_error(message: &str) -> bool {
    message.contains("/LOCK") || message.contains("lock file") || message.contains("lock hold")
}

fn stats_json(db: &str, s: &StoreStats) -> serde_json::Value {
    let cfs: serde_json::Map<String, serde_json::Value> = s
        .column_families
        .iter()
        .map(|c| {
            let v = json!({
                "estimated_keys": c.estimated_keys,
                "sst_bytes": c.sst_bytes,
                "memtable_bytes": c.memtable_bytes,
            });
            (c.name.to_owned(), v)
        })
        .collect();
    json!({
        "db": db,
        "generation": s.generation,
        "active_pair": s.active_pair,
        "live_consents": s.live_consents,
        "access_log_failures": s.access_log_failures,
        "column_families": cfs,
    })
}

fn stats_text(db: &str, s: &StoreStats) -> String {
    let mut out = format!(
        "store        {db}\ngeneration   {} (active pair {})\nconsents     {} live\naccess log   {} write failures\n\n",
        s.generation, s.active_pair, s.live_consents, s.access_log_failures
    );
    out.push_str(&format!(
        "{:<16} {:>14} {:>16} {:>16}\n",
        "column family", "keys (est.)", "SST bytes", "memtable bytes"
    ));
    let active_suffix = format!(".{}", s.active_pair);
    for c in &s.column_families {
        let paired = c.name.starts_with("holders.") || c.name.starts_with("source.");
        let mark = if paired && c.name.ends_with(&active_suffix) { " *" } else { "" };
        out.push_str(&format!(
            "{:<16} {:>14} {:>16} {:>16}{mark}\n",
            c.name, c.estimated_keys, c.sst_bytes, c.memtable_bytes
        ));
    }
    out.push_str("(* the active pair)\n");
    out
}

fn verify_json(db: &str, r: &VerifyReport) -> serde_json::Value {
    json!({
        "db": db,
        "ok": r.is_ok(),
        "buckets": r.buckets,
        "holders": r.holders,
        "certificates": r.certificates,
        "source_entries": r.source_entries,
        "problem_count": r.problem_count,
        "problems": r.problems,
    })
}

fn verify_text(db: &str, r: &VerifyReport) -> String {
    let mut out = format!(
        "verified {db}: {} buckets, {} holders, {} certificates, {} source-index entries\n",
        r.buckets, r.holders, r.certificates, r.source_entries
    );
    if r.is_ok() {
        out.push_str("OK: no problems\n");
    } else {
        out.push_str(&format!("{} problem(s):\n", r.problem_count));
        for p in &r.problems {
            out.push_str(&format!("  {p}\n"));
        }
        let unlisted = r.problem_count.saturating_sub(r.problems.len() as u64);
        if unlisted > 0 {
            out.push_str(&format!("  … and {unlisted} more\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn lock_errors_are_recognised() {
        assert!(is_lock_error("IO error: While lock file: /srv/pmh/store/LOCK: Resource temporarily unavailable"));
        assert!(!is_lock_error("Corruption: block checksum mismatch"));
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["pmh-admin", "--config", "c.toml", "checkpoint", "/tmp/x", "--json"]).unwrap();
        assert!(cli.json);
        assert!(matches!(cli.command, Command::Checkpoint { dir } if dir == Path::new("/tmp/x")));
        assert!(Cli::try_parse_from(["pmh-admin"]).is_err());
        assert!(Cli::try_parse_from(["pmh-admin", "checkpoint"]).is_err());
    }
}
