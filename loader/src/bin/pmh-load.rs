//! `pmh-load`: validate files, load a full snapshot, apply differential files.
//!
//! Thin: arguments, configuration, progress display; the work is in `pmh_loader::load`.
//! Exit codes: 0 success, 1 rejected input (every error printed), 2 usage / I/O / store.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use pmh_engine::Store;
use pmh_loader::config::Config;
use pmh_loader::load::{self, LoadError, LoadOptions, Progress};
use pmh_loader::{Encoding, Format, format_report};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "pmh-load", about = "Load subsidy files into a PMH store", version)]
struct Cli {
    /// Configuration file (store directory, PMH-ID secret, RocksDB tuning).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Store directory (overrides the configuration's `db`).
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// File format (default: by extension, `.json` → json, else csv).
    #[arg(long, global = true)]
    format: Option<Format>,
    /// CSV encoding.
    #[arg(long, global = true, default_value = "auto")]
    encoding: Encoding,
    /// Worker threads for a full load (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Memory for sorting in a full load, in MiB (past it, sorted runs spill to disk).
    #[arg(long, global = true, default_value_t = 512)]
    sort_mib: usize,
    /// No progress output, only the summary or the errors.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a complete new snapshot from nationwide files and switch to it atomically.
    Full {
        /// Input files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Allow files with no certificate (which empties the store).
        #[arg(long)]
        allow_empty: bool,
        /// Only prepare the snapshot as SST files in this new directory, without opening
        /// the store (for a store a running server holds; see docs/operations.md).
        #[arg(long, value_name = "DIR")]
        prepare: Option<PathBuf>,
    },
    /// Switch a (stopped) store to a snapshot prepared with `full --prepare DIR`.
    Install {
        /// The prepared directory.
        dir: PathBuf,
    },
    /// Apply differential files, each atomically, in order.
    Diff {
        /// Input files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate files only; the store is not opened.
    Check {
        /// Input files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Progress as a bar on a terminal, as a log line every few seconds otherwise.
struct Display {
    bar: Option<indicatif::ProgressBar>,
    bytes: AtomicU64,
    rows: AtomicU64,
    /// The current stage name, for the log lines.
    stage: Mutex<String>,
}

impl Progress for Display {
    fn stage(&self, name: &str) {
        if let Ok(mut s) = self.stage.lock() {
            *s = name.to_string();
        }
        if let Some(b) = &self.bar {
            b.set_message(name.to_string());
        }
    }
    fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("pmh-load: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    let config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    let mut opts = LoadOptions {
        format: cli.format,
        encoding: cli.encoding,
        sort_budget_bytes: cli.sort_mib.max(1) << 20,
        ..LoadOptions::default()
    };
    if let Some(t) = cli.threads {
        opts.threads = t.max(1);
    }
    let files = match &cli.cmd {
        Cmd::Full { files, .. } | Cmd::Diff { files } | Cmd::Check { files } => files.clone(),
        Cmd::Install { .. } => Vec::new(),
    };
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let tty = std::io::stderr().is_terminal();
    let bar = (!cli.quiet && tty).then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    });
    let display =
        Arc::new(Display { bar, bytes: AtomicU64::new(0), rows: AtomicU64::new(0), stage: Mutex::new(String::new()) });
    // Plain log lines when not on a terminal.
    let done = Arc::new(AtomicBool::new(false));
    let logger = (!cli.quiet && !tty).then(|| {
        let (d, done) = (display.clone(), done.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut waited = Duration::ZERO;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                waited += Duration::from_millis(200);
                if waited >= Duration::from_secs(5) {
                    waited = Duration::ZERO;
                    let stage = d.stage.lock().map(|s| s.clone()).unwrap_or_default();
                    eprintln!(
                        "pmh-load: {stage}: {} rows, {} of {total} bytes, {:.0} s",
                        d.rows.load(Ordering::Relaxed),
                        d.bytes.load(Ordering::Relaxed),
                        start.elapsed().as_secs_f64()
                    );
                }
            }
        })
    });
    let start = Instant::now();
    let result = execute(&cli, &config, &files, &opts, display.as_ref());
    done.store(true, Ordering::Relaxed);
    if let Some(l) = logger {
        let _ = l.join();
    }
    if let Some(b) = &display.bar {
        b.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let rows = display.rows.load(Ordering::Relaxed);
    match result {
        Ok(line) => {
            println!("{line}, {secs:.1} s, {:.0} rows/s", rows as f64 / secs);
            Ok(ExitCode::SUCCESS)
        }
        Err(LoadError::Rejected(errors)) => {
            eprint!("{}", format_report(&errors));
            eprintln!(
                "pmh-load: rejected: {} error(s) in {rows} row(s); nothing was changed by the rejected file",
                errors.len()
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn execute(
    cli: &Cli,
    config: &Config,
    files: &[PathBuf],
    opts: &LoadOptions,
    progress: &Display,
) -> Result<String, LoadError> {
    if let Cmd::Check { .. } = cli.cmd {
        let rows = load::check(files, opts, progress)?;
        return Ok(format!("checked {rows} rows in {} file(s): no errors", files.len()));
    }
    let deriver = config.deriver().map_err(|e| LoadError::Usage(e.to_string()))?;
    if let Cmd::Full { prepare: Some(dir), allow_empty, .. } = &cli.cmd {
        let opts = LoadOptions { allow_empty: *allow_empty, ..opts.clone() };
        let s = load::prepare(&config.store_config().rocks, &deriver, files, &opts, dir, progress)?;
        return Ok(format!(
            "prepared {}: {} rows read, {} certificates of {} people ({} delete rows skipped), rejected 0",
            dir.display(),
            s.rows,
            s.certificates,
            s.holders,
            s.deleted_rows
        ));
    }
    let db = cli.db.clone().unwrap_or_else(|| config.db.clone());
    let store = Store::open(&db, config.store_config()).map_err(|e| match e {
        pmh_engine::Error::Storage(m) if m.contains("lock") => LoadError::Usage(format!(
            "{}: the store is locked, probably by a running pmh-server ({m}); see docs/operations.md",
            db.display()
        )),
        e => e.into(),
    })?;
    match &cli.cmd {
        Cmd::Full { allow_empty, .. } => {
            let opts = LoadOptions { allow_empty: *allow_empty, ..opts.clone() };
            let s = load::full(&store, &deriver, files, &opts, progress)?;
            Ok(format!(
                "full load: {} rows read, {} certificates of {} people installed ({} delete rows skipped), rejected 0, generation {}",
                s.rows, s.certificates, s.holders, s.deleted_rows, s.generation
            ))
        }
        Cmd::Diff { .. } => match load::diff(&store, &deriver, files, opts, progress) {
            Ok(done) => Ok(diff_line(&done)),
            Err((done, e)) => {
                if !done.is_empty() {
                    eprintln!("pmh-load: applied before the failure: {}", diff_line(&done));
                }
                Err(e)
            }
        },
        Cmd::Install { dir } => {
            let g = load::install(&store, dir)?;
            Ok(format!("installed {}: generation {g} now serving", dir.display()))
        }
        Cmd::Check { .. } => Err(LoadError::Usage("check does not open a store".into())),
    }
}

fn diff_line(done: &[load::DiffSummary]) -> String {
    let (mut rows, mut i, mut u, mut d, mut n) = (0, 0, 0, 0, 0);
    for s in done {
        rows += s.rows;
        i += s.applied.inserted;
        u += s.applied.updated;
        d += s.applied.deleted;
        n += s.applied.unchanged;
    }
    format!(
        "diff: {} file(s), {rows} rows read, inserted {i}, updated {u}, deleted {d}, unchanged {n}, rejected 0",
        done.len()
    )
}
