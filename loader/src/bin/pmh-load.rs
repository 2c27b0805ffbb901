//! `pmh-load`: validate files, load a full snapshot, apply differential files; upload
//! files to a hub (`send`) or every new file of a folder (`watch`).
//!
//! Thin: arguments, configuration, progress display; the work is in `pmh_loader::load`
//! and `pmh_loader::watch`.
//! Exit codes: 0 success, 1 rejected input (every error printed), 2 usage / I/O / store
//! (for `send`: network, 5xx, a refused token).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use pmh_engine::Store;
use pmh_loader::config::Config;
use pmh_loader::load::{self, LoadError, LoadOptions, Progress};
use pmh_loader::watch::{self, Answer, HttpHub, Hub, Mode, Upload, Verdict, WatchOptions, Watcher};
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
    /// Worker threads for a full load and for parsing a differential CSV file (default:
    /// all cores; a full load that spills sorted runs to disk parses on one more), 1–1024.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=pmh_loader::load::MAX_THREADS as i64))]
    threads: Option<u16>,
    /// Memory for sorting in a full load, in MiB (past it, sorted runs spill to disk). Each
    /// spill is a run and every merge task opens every run, so a small value on a large
    /// load means many open files: the default makes about 2 runs per GB of store. At most
    /// 1048576 (1 TiB).
    #[arg(long, global = true, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    sort_mib: u32,
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
    /// Upload one file to a hub (POST /v1/subsidy/uploads); exit 0 accepted, 1 refused,
    /// 2 unreachable / 5xx / setup.
    Send {
        /// The file (CSV or JSON; `--format`, `--encoding` apply).
        file: PathBuf,
        #[command(flatten)]
        hub: HubArgs,
        /// `Idempotency-Key` (default `sha256-<hex of the content>`: a repeat of an upload
        /// whose answer was lost gets the stored answer and changes nothing). Give another
        /// key to have the same content judged again, e.g. after the hub's setup was fixed.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Watch a folder and upload each complete new file once, in name order (a service:
    /// stop it with SIGTERM or Ctrl-C). See docs/municipalities.md.
    Watch {
        /// The folder; accepted files go to DIR/done/, refused ones to DIR/failed/.
        dir: PathBuf,
        #[command(flatten)]
        hub: HubArgs,
        /// How often the folder is listed.
        #[arg(long, default_value = "2s", value_parser = watch::parse_duration)]
        interval: Duration,
        /// How long a file must stay unchanged (size and mtime) before it is sent.
        #[arg(long, default_value = "5s", value_parser = watch::parse_duration)]
        settle: Duration,
        /// The first wait after a failed attempt; it doubles (with jitter) up to --retry-max.
        #[arg(long, default_value = "1s", value_parser = watch::parse_duration)]
        retry_min: Duration,
        /// The longest wait between attempts.
        #[arg(long, default_value = "60s", value_parser = watch::parse_duration)]
        retry_max: Duration,
        /// After SIGTERM, how long an upload in flight is waited for before it is abandoned
        /// (the file stays and is sent again, harmlessly, on the next start).
        #[arg(long, default_value = "30s", value_parser = watch::parse_duration)]
        shutdown_grace: Duration,
    },
}

/// Where the hub is and how to prove who we are.
#[derive(Args)]
struct HubArgs {
    /// The hub's base URL (`https://hub.example`; `/v1/subsidy/uploads` is added).
    #[arg(long, value_name = "URL")]
    server: String,
    /// A file holding the municipality's bearer token on one line, mode 600.
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// PEM certificates to trust for `https://` instead of the built-in Mozilla roots (a
    /// hub certificate from a private CA).
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// `diff` (差分) or `full` (全件). `watch` sends a file whose name starts with `full` as
    /// `full` whatever this says.
    #[arg(long, default_value = "diff")]
    mode: Mode,
}

impl HubArgs {
    fn connect(&self) -> Result<HttpHub, String> {
        let token = watch::read_token_file(&self.token_file)?;
        HttpHub::new(&self.server, &token, self.ca_file.as_deref())
    }
}

/// Progress as a bar on a terminal, as a log line every few seconds otherwise.
struct Display {
    bar: Option<indicatif::ProgressBar>,
    bytes: AtomicU64,
    rows: AtomicU64,
    /// The current stage name, for the log lines.
    stage: Mutex<String>,
    /// Log each stage as it starts, with the time since the start (not on a terminal).
    log_stages: Option<Instant>,
}

impl Progress for Display {
    fn stage(&self, name: &str) {
        if let Ok(mut s) = self.stage.lock() {
            *s = name.to_string();
        }
        if let Some(start) = self.log_stages {
            eprintln!("pmh-load: {name} (at {:.1} s)", start.elapsed().as_secs_f64());
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
    pmh_loader::logging::init(if cli.quiet { "warn" } else { "info" });
    match run(cli) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("pmh-load: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match &cli.cmd {
        Cmd::Send { file, hub, idempotency_key } => return send(&cli, file, hub, idempotency_key.clone()),
        Cmd::Watch { .. } => return run_watch(&cli),
        _ => {}
    }
    let config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    let mut opts = LoadOptions {
        format: cli.format,
        encoding: cli.encoding,
        sort_budget_bytes: (cli.sort_mib as usize) << 20,
        ..LoadOptions::default()
    };
    if let Some(t) = cli.threads {
        opts.threads = usize::from(t);
    }
    let files = match &cli.cmd {
        Cmd::Full { files, .. } | Cmd::Diff { files } | Cmd::Check { files } => files.clone(),
        Cmd::Install { .. } | Cmd::Send { .. } | Cmd::Watch { .. } => Vec::new(),
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
    let display = Arc::new(Display {
        bar,
        bytes: AtomicU64::new(0),
        rows: AtomicU64::new(0),
        stage: Mutex::new(String::new()),
        log_stages: (!cli.quiet && !tty).then(Instant::now),
    });
    // Plain log lines when not on a terminal, every 5 s until the work ends (dropping
    // `done` wakes the thread at once; a sleeping loop had added up to its tick to every
    // run's exit).
    let (done, ended) = std::sync::mpsc::channel::<()>();
    let logger = (!cli.quiet && !tty).then(|| {
        let d = display.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = ended.recv_timeout(Duration::from_secs(5)) {
                let stage = d.stage.lock().map(|s| s.clone()).unwrap_or_default();
                eprintln!(
                    "pmh-load: {stage}: {} rows, {} of {total} bytes, {:.0} s",
                    d.rows.load(Ordering::Relaxed),
                    d.bytes.load(Ordering::Relaxed),
                    start.elapsed().as_secs_f64()
                );
            }
        })
    });
    let start = Instant::now();
    let result = execute(&cli, &config, &files, &opts, display.as_ref());
    drop(done);
    if let Some(l) = logger {
        let _ = l.join();
    }
    if let Some(b) = &display.bar {
        b.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let rows = display.rows.load(Ordering::Relaxed);
    match result {
        Ok(Done { line, switched }) => {
            let peak = peak_rss_mib().map(|m| format!(", peak RSS {m} MiB")).unwrap_or_default();
            let live = switched
                .map(|t| format!(" (serving after {:.1} s)", t.saturating_duration_since(start).as_secs_f64()))
                .unwrap_or_default();
            println!("{line}{live}, {secs:.1} s, {:.0} rows/s{peak}", rows as f64 / secs);
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

/// What a command did: its summary line, and for a full load when the new snapshot
/// started serving, so that the line can say so on the same clock as its total (which
/// goes on through the removal of the sort runs and the store's close).
struct Done {
    line: String,
    switched: Option<Instant>,
}

impl From<String> for Done {
    fn from(line: String) -> Done {
        Done { line, switched: None }
    }
}

fn execute(
    cli: &Cli,
    config: &Config,
    files: &[PathBuf],
    opts: &LoadOptions,
    progress: &Display,
) -> Result<Done, LoadError> {
    if let Cmd::Check { .. } = cli.cmd {
        let rows = load::check(files, opts, progress)?;
        return Ok(format!("checked {rows} rows in {} file(s): no errors", files.len()).into());
    }
    let deriver = config.deriver().map_err(|e| LoadError::Usage(e.to_string()))?;
    if let Cmd::Full { prepare: Some(dir), allow_empty, .. } = &cli.cmd {
        let opts = LoadOptions { allow_empty: *allow_empty, ..opts.clone() };
        let s = load::prepare(&config.load_store_config().rocks, &deriver, files, &opts, dir, progress)?;
        return Ok(format!(
            "prepared {}: {} rows read, {} certificates of {} people ({} delete rows skipped), rejected 0",
            dir.display(),
            s.rows,
            s.certificates,
            s.holders,
            s.deleted_rows
        )
        .into());
    }
    let db = cli.db.clone().unwrap_or_else(|| config.db.clone());
    let store = Store::open(&db, config.load_store_config()).map_err(|e| match e {
        pmh_engine::Error::Storage(m) if m.contains("lock") => LoadError::Usage(format!(
            "{}: the store is locked, probably by a running pmh-server ({m}); see docs/operations.md",
            db.display()
        )),
        e => e.into(),
    })?;
    match &cli.cmd {
        Cmd::Full { allow_empty, .. } => {
            let opts = LoadOptions { allow_empty: *allow_empty, ..opts.clone() };
            let called = Instant::now();
            let s = load::full(&store, &deriver, files, &opts, progress)?;
            Ok(Done {
                line: format!(
                    "full load: {} rows read, {} certificates of {} people installed ({} delete rows skipped), rejected 0, generation {}",
                    s.rows, s.certificates, s.holders, s.deleted_rows, s.generation
                ),
                switched: Some(called + s.live_after),
            })
        }
        Cmd::Diff { .. } => match load::diff(&store, &deriver, files, opts, progress) {
            Ok(done) => Ok(diff_line(&done).into()),
            Err((done, e)) => {
                if !done.is_empty() {
                    eprintln!("pmh-load: applied before the failure: {}", diff_line(&done));
                }
                Err(e)
            }
        },
        Cmd::Install { dir } => {
            let g = load::install(&store, dir)?;
            Ok(format!("installed {}: generation {g} now serving", dir.display()).into())
        }
        Cmd::Check { .. } | Cmd::Send { .. } | Cmd::Watch { .. } => {
            Err(LoadError::Usage("this command does not open a store".into()))
        }
    }
}

/// `pmh-load send`: one upload; the summary on stdout, or the hub's report on stderr.
fn send(cli: &Cli, file: &std::path::Path, args: &HubArgs, key: Option<String>) -> Result<ExitCode, String> {
    if let Some(k) = &key
        && (k.is_empty() || k.len() > 200 || !k.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err("--idempotency-key: 1-200 printable ASCII characters without spaces".into());
    }
    let hub = args.connect()?;
    let body = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let format = cli.format.unwrap_or_else(|| Format::from_file_name(&name));
    let key = key.unwrap_or_else(|| watch::idempotency_key(&watch::content_sha256(&body), 0));
    let upload = Upload {
        body,
        mode: args.mode,
        content_type: watch::content_type(format, cli.encoding),
        idempotency_key: Some(key),
    };
    let reply = match hub.upload(&upload) {
        Answer::Reply(r) => r,
        Answer::Unreachable(why) => return Err(format!("{}: not sent: {why}", hub.url())),
    };
    match Verdict::of(&reply) {
        Verdict::Accepted => {
            println!("{}: {}", file.display(), watch::summary_line(&reply));
            Ok(ExitCode::SUCCESS)
        }
        Verdict::Refused => {
            eprint!("{}", watch::refusal_report(&reply));
            if reply.replayed {
                eprintln!(
                    "pmh-load: this is the stored answer to an earlier upload of the same content; to have it judged \
                     again (after a change on the hub), give another --idempotency-key"
                );
            }
            eprintln!("pmh-load: {}: refused; nothing was changed", file.display());
            Ok(ExitCode::from(1))
        }
        Verdict::TryLater | Verdict::Setup => {
            Err(format!("{}: not accepted: {}", file.display(), watch::refusal_headline(&reply)))
        }
    }
}

/// `pmh-load watch`: runs until SIGTERM or Ctrl-C (a second one ends the process at once).
fn run_watch(cli: &Cli) -> Result<ExitCode, String> {
    let Cmd::Watch { dir, hub, interval, settle, retry_min, retry_max, shutdown_grace } = &cli.cmd else {
        return Err("not a watch command".into());
    };
    let http = hub.connect()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // The order matters: the first signal sets the flag, a second finds it set and exits.
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone()).map_err(|e| e.to_string())?;
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    eprintln!("pmh-load watch: uploading to {}", http.url());
    let opts = WatchOptions {
        mode: hub.mode,
        format: cli.format,
        encoding: cli.encoding,
        interval: *interval,
        settle: *settle,
        backoff_min: *retry_min,
        backoff_max: *retry_max,
        shutdown_grace: *shutdown_grace,
        ..WatchOptions::new(dir.clone())
    };
    let hub: Arc<dyn Hub> = Arc::new(http);
    let mut watcher = Watcher::open(opts, hub).map_err(|e| e.to_string())?;
    watcher.run(&stop);
    Ok(ExitCode::SUCCESS)
}

/// This process's peak resident memory (`VmHWM`), where the OS reports it.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib.div_ceil(1024))
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
