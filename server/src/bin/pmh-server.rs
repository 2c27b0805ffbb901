//! `pmh-server`: serves a store over HTTP (design §6).
//!
//! `pmh-server --config FILE` for real deployments; `pmh-server --db DIR --listen ADDR`
//! for a quick start with a generated configuration (random secret and tokens, printed to
//! the log). `--print-demo-config` prints such a configuration and exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use pmh_engine::{BackgroundPriority, Store};
use pmh_loader::config::Config;
use pmh_server::serve::ServeOptions;
use pmh_server::{AppState, app, serve};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "pmh-server", about = "PMH lookup engine: the HTTP API", version)]
struct Cli {
    /// The configuration file (docs/configuration.md). Without it a quick-start
    /// configuration is generated and printed.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Store directory (overrides `db`).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Listen address (overrides `listen`).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Runtime worker threads (default: one per core), 1–1024.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Print a quick-start configuration for `--db` (random secret and tokens) and exit.
    #[arg(long)]
    print_demo_config: bool,
}

fn main() -> ExitCode {
    pmh_loader::logging::init("info");
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pmh-server: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let mut config = match &cli.config {
        Some(path) => Config::load(Some(path)).map_err(|e| e.to_string())?,
        None => {
            let db = cli.db.clone().unwrap_or_else(|| PathBuf::from(pmh_loader::config::DEFAULT_DB));
            let (config, text) = Config::demo(&db).map_err(|e| e.to_string())?;
            if cli.print_demo_config {
                print!("{text}");
                return Ok(());
            }
            tracing::warn!(
                "no --config: using a generated quick-start configuration (save it and pass --config to keep \
                 its secret and tokens):\n{text}"
            );
            config
        }
    };
    if cli.print_demo_config {
        return Err("--print-demo-config generates a configuration; it does not take --config".into());
    }
    if let Some(db) = cli.db {
        config.db = db;
    }
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = cli.workers {
        rt.worker_threads(usize::from(n));
    }
    let rt = rt.build().map_err(|e| format!("tokio runtime: {e}"))?;

    let t = std::time::Instant::now();
    let store = Store::open(&config.db, config.store_config()).map_err(|e| format!("{}: {e}", config.db.display()))?;
    let store = Arc::new(store);
    tracing::info!(db = %config.db.display(), generation = store.generation(), took_ms = t.elapsed().as_millis() as u64, "store open");
    if config.rocksdb.background_priority == BackgroundPriority::Idle {
        // Flushes and compactions on the CPU time lookups leave free (docs/configuration.md).
        match store.idle_background_threads() {
            Ok(n) => tracing::info!(threads = n, "RocksDB background threads in the idle scheduling class"),
            Err(e) => tracing::warn!(%e, "RocksDB background threads keep the default scheduling class"),
        }
    }
    let watch = StoreWatch::start(store.clone()).map_err(|e| format!("store watch thread: {e}"))?;
    let listen = config.listen;
    let state = AppState::new(store.clone(), config).map_err(|e| e.to_string())?;
    let router = app(state);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("listen on {listen}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!("listening on http://{local}");
        serve(listener, router, ServeOptions::default(), shutdown_signal()).await.map_err(|e| e.to_string())
    })?;
    // Dropped last: the store drains the access-log queue on drop.
    drop(rt);
    drop(watch);
    if Arc::strong_count(&store) > 1 {
        tracing::warn!("store still referenced at exit; flushing the access log");
    }
    store.flush_access_log();
    tracing::info!("stopped");
    Ok(())
}

/// Ends the process at once if the store's directory is deleted or replaced while serving
/// (checked every second): the server would otherwise go on answering from the deleted
/// files, and RocksDB's flushes would create their files in whatever directory now has
/// that path. (A store dropped in that state is left unclosed by the engine itself, so a
/// replacement in the last second before a shutdown writes nothing either.)
struct StoreWatch {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StoreWatch {
    fn start(store: Arc<Store>) -> std::io::Result<StoreWatch> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("pmh-store-watch".into()).spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(std::time::Duration::from_secs(1))
            {
                if store.directory_replaced() {
                    tracing::error!(
                        db = %store.path().display(),
                        "the store directory was deleted or replaced while serving; stopping now, without \
                         closing the store (closing it would write into the directory now at that path)"
                    );
                    // SAFETY: ends the process at once. Nothing runs after it: no destructor,
                    // no exit handler, so RocksDB writes nothing more. The log line above went
                    // to stderr unbuffered.
                    unsafe { libc::_exit(3) }
                }
            }
        })?;
        Ok(StoreWatch { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for StoreWatch {
    /// Stops the thread and waits for it, so that its handle on the store is gone before
    /// the store is closed.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("interrupt received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
