//! `pmh-bench`: synthetic stores and files (`gen`), the engine benchmark, the engine demo,
//! and the HTTP load generator (`http`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use pmh_bench::engine::{self, BENCH_INSTITUTION, BenchStore, OpReport};
use pmh_bench::r#gen::{self, GenConfig, HeaderLanguage};
use pmh_bench::http::{self, ClientKind, Phases};
use pmh_engine::{Date, InstitutionCode, Lookup, StoreConfig};
use pmh_loader::{Encoding, Format};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "pmh-bench", about = "PMH benchmarks and synthetic data")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The loader's ceiling: a plain `csv`-crate pass over a file (records and bytes
    /// counted, nothing decoded or validated), to quote a load's throughput against.
    CsvPass {
        /// The CSV file.
        file: PathBuf,
    },
    /// Engine lookup vs. raw RocksDB get_pinned on a synthetic store, in one run.
    Engine {
        /// People in the store.
        #[arg(long, default_value_t = 1_000_000)]
        persons: u64,
        /// Timed operations per side.
        #[arg(long, default_value_t = 2_000_000)]
        ops: u64,
        /// Alternating rounds.
        #[arg(long, default_value_t = 10)]
        rounds: u32,
        /// Working directory (a temporary one by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Seed of the synthetic data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Block cache size in MiB.
        #[arg(long, default_value_t = 1024)]
        cache_mib: usize,
        /// Data block size in bytes (tuning experiments).
        #[arg(long)]
        block_size: Option<usize>,
        /// Use the hash index with this prefix length (tuning experiments).
        #[arg(long)]
        hash_index: Option<usize>,
        /// Data block restart interval (tuning experiments).
        #[arg(long)]
        restart_interval: Option<i32>,
        /// Use the LRU block cache instead of HyperClock (tuning experiments).
        #[arg(long)]
        lru: bool,
        /// Data-block hash index utilisation ratio; 0 disables it (tuning experiments).
        #[arg(long)]
        hash_ratio: Option<f64>,
        /// Row cache size in MiB; 0 turns it off (default: the engine's default).
        #[arg(long)]
        row_cache_mib: Option<usize>,
    },
    /// Builds a small synthetic store and shows a consented lookup, a refusal and the
    /// access log.
    Demo {
        /// People in the store.
        #[arg(long, default_value_t = 100_000)]
        persons: u64,
        /// Store directory.
        #[arg(long, default_value = "var/demo")]
        dir: PathBuf,
    },
    /// Writes the generated section of docs/benchmarks.md and the latency plot from the
    /// results directory of one `make bench` run.
    Report {
        /// The results directory (scripts/bench.sh writes it).
        #[arg(long)]
        results: PathBuf,
        /// The document to update.
        #[arg(long, default_value = "docs/benchmarks.md")]
        doc: PathBuf,
        /// The plot to write (SVG).
        #[arg(long, default_value = "docs/latency-vs-rate.svg")]
        plot: PathBuf,
        /// Instead: print the lookup requests/s of this `pmh-bench http --json` file.
        #[arg(long)]
        lookup_rps_of: Option<PathBuf>,
    },
    /// Writes deterministic synthetic nationwide upload files: full, diff and manifest.json.
    Gen {
        /// People in the full file(s) (persons 0..N).
        #[arg(long)]
        persons: u64,
        /// Output directory (created if needed).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the synthetic data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// File format: csv or json.
        #[arg(long, default_value = "csv")]
        format: Format,
        /// Encoding: utf-8 (LF) or shift_jis (CRLF, half-width kana; CSV only).
        #[arg(long, default_value = "utf-8")]
        encoding: Encoding,
        /// CSV header language: english (API names) or japanese.
        #[arg(long, default_value = "english")]
        header: HeaderLanguage,
        /// Percent of persons the diff touches (updates/inserts/deletes about 60/25/15).
        #[arg(long, default_value_t = 1.0)]
        diff_share: f64,
        /// The date certificates are valid around, YYYY-MM-DD (default: today in Tokyo).
        #[arg(long)]
        date: Option<String>,
        /// Number of full files, split by person ranges (full-000.csv, …).
        #[arg(long, default_value_t = 1)]
        files: usize,
        /// Writer threads, one file each at a time (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Load test of a running pmh-server: lookups vs. the `GET /v1/ping` ceiling, with
    /// throughput and latency percentiles (see docs/benchmarks.md).
    Http(Box<HttpArgs>),
}

/// `pmh-bench http` options.
#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("auth").required(true).args(["token", "token_file"]))]
struct HttpArgs {
    /// Base URL of the server, http://HOST[:PORT][/BASE] (plain HTTP only).
    #[arg(long)]
    url: String,
    /// Gateway bearer token.
    #[arg(long)]
    token: Option<String>,
    /// File holding the gateway token (surrounding whitespace ignored).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Timed part of each phase (e.g. 30s, 2m; at most 1h).
    #[arg(long, default_value = "10s", value_parser = http::parse_duration)]
    duration: Duration,
    /// Unrecorded warm-up before each phase.
    #[arg(long, default_value = "2s", value_parser = http::parse_duration)]
    warmup: Duration,
    /// Alternate the ceiling and the lookups this many times (ABBA order); the ratio is
    /// taken over all rounds, each round's is listed.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Open loop at this many requests/s in total (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Runtime threads of the client (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop each phase's timed part after this many requests.
    #[arg(long)]
    max_requests: Option<u64>,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = http::parse_duration)]
    timeout: Duration,
    /// HTTP client: raw (lean, default) or hyper (cross-check).
    #[arg(long, default_value = "raw")]
    client: ClientKind,
    /// Skip the ceiling phase.
    #[arg(long, conflicts_with = "only_ceiling")]
    no_ceiling: bool,
    /// Run only the ceiling phase (no set-up).
    #[arg(long)]
    only_ceiling: bool,
    /// People in the store the server serves (persons 0..N of the synthetic population).
    #[arg(long, default_value_t = 1_000_000)]
    persons: u64,
    /// Seed of the synthetic population (as given to `gen`/`engine`) and of the mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// People in the workload (resolved and, per --consent-share, consented in set-up).
    #[arg(long, default_value_t = 10_000)]
    people: usize,
    /// Percent of the people given a consent; the others' lookups are expected refusals.
    #[arg(long, default_value = "90", value_parser = http::parse_percent)]
    consent_share: f64,
    /// Percent of the people not in the store (consented too).
    #[arg(long, default_value = "5", value_parser = http::parse_percent)]
    unknown_share: f64,
    /// Percent of the requests that are batch calls.
    #[arg(long, default_value = "0", value_parser = http::parse_percent)]
    batch_share: f64,
    /// People per batch call.
    #[arg(long, default_value_t = 10)]
    batch_size: usize,
    /// Institution code of the consents and lookups.
    #[arg(long, default_value = BENCH_INSTITUTION)]
    institution: String,
    /// Lookup date, YYYY-MM-DD (default: today in Tokyo).
    #[arg(long)]
    date: Option<String>,
    /// Fail (exit 1) when a phase's error share is above this percent.
    #[arg(long, default_value = "1", value_parser = http::parse_percent)]
    max_error_share: f64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Http(args) = cli.cmd {
        return http_command(*args);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pmh-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// `pmh-bench http`: exit 0 when passed, 1 when the error share was too high, 2 when the
/// run could not be made (bad settings, server unreachable, set-up failed).
fn http_command(a: HttpArgs) -> ExitCode {
    let json = a.json;
    let config = match http_config(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pmh-bench http: {e}");
            return ExitCode::from(2);
        }
    };
    match http::run(&config) {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            if report.passed { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("pmh-bench http: {e}");
            ExitCode::from(2)
        }
    }
}

fn http_config(a: HttpArgs) -> Result<http::Config, String> {
    let token = match (a.token, a.token_file) {
        (Some(t), _) => t,
        (None, Some(f)) => {
            std::fs::read_to_string(&f).map_err(|e| format!("--token-file {}: {e}", f.display()))?.trim().to_string()
        }
        (None, None) => return Err("--token or --token-file is required".into()),
    };
    let date = match a.date {
        Some(d) => Date::parse(&d).map_err(|e| format!("--date {d:?}: {e}"))?,
        None => Date::today_tokyo(),
    };
    Ok(http::Config {
        client: a.client,
        threads: a.threads,
        connections: a.connections,
        mode: match a.rate {
            Some(rate) => http::Mode::Open { rate },
            None => http::Mode::Closed,
        },
        duration: a.duration,
        rounds: a.rounds,
        warmup: a.warmup,
        max_requests: a.max_requests,
        timeout: a.timeout,
        phases: if a.only_ceiling {
            Phases::CeilingOnly
        } else if a.no_ceiling {
            Phases::LookupOnly
        } else {
            Phases::Both
        },
        persons: a.persons,
        seed: a.seed,
        people: a.people,
        consent_share: a.consent_share,
        unknown_share: a.unknown_share,
        batch_share: a.batch_share,
        batch_size: a.batch_size,
        institution: a.institution,
        date,
        max_error_share: a.max_error_share,
        ..http::Config::new(&a.url, &token)
    })
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        // Has its own exit codes: dispatched in `main`.
        Cmd::Http(_) => Err("http is run from main".into()),
        Cmd::Engine {
            persons,
            ops,
            rounds,
            dir,
            seed,
            cache_mib,
            block_size,
            hash_index,
            restart_interval,
            lru,
            hash_ratio,
            row_cache_mib,
        } => {
            let tmp;
            let dir = match dir {
                Some(d) => d,
                None => {
                    tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
                    tmp.path().to_path_buf()
                }
            };
            let mut config = StoreConfig { sync_writes: false, ..StoreConfig::default() };
            config.rocks.block_cache_bytes = cache_mib << 20;
            if let Some(b) = block_size {
                config.rocks.block_size = b;
            }
            if let Some(r) = restart_interval {
                config.rocks.block_restart_interval = r;
            }
            if let Some(r) = hash_ratio {
                config.rocks.data_block_hash_ratio = (r > 0.0).then_some(r);
            }
            if let Some(r) = row_cache_mib {
                config.rocks.row_cache_bytes = r << 20;
            }
            if lru {
                config.rocks.cache = pmh_engine::options::CacheKind::Lru;
            }
            if let Some(p) = hash_index {
                config.rocks.index = pmh_engine::options::IndexKind::Hash { prefix_len: p };
            }
            let t = Instant::now();
            let b = engine::build_store(&dir, persons, seed, config)?;
            println!("built store: {persons} persons in {:.1} s", t.elapsed().as_secs_f64());
            let r = engine::run(&b, ops, rounds, seed)?;
            print_op(&r.ceiling);
            print_op(&r.lookup);
            for c in &r.components {
                print_op(c);
            }
            println!("ratio lookup/ceiling (throughput): {:.3}", r.ratio());
            Ok(())
        }
        Cmd::Demo { persons, dir } => demo(persons, dir),
        Cmd::CsvPass { file } => {
            let t = Instant::now();
            let f = std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let mut r = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(true)
                .from_reader(std::io::BufReader::with_capacity(1 << 20, f));
            let mut rec = csv::ByteRecord::new();
            let (mut rows, mut bytes) = (0u64, 0u64);
            while r.read_byte_record(&mut rec).map_err(|e| format!("{}: {e}", file.display()))? {
                rows += 1;
                bytes += rec.as_slice().len() as u64;
            }
            let s = t.elapsed().as_secs_f64();
            println!("csv pass: {rows} rows, {bytes} field bytes, {s:.2} s, {:.0} rows/s", rows as f64 / s);
            Ok(())
        }
        Cmd::Report { lookup_rps_of: Some(f), .. } => {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?)
                    .map_err(|e| format!("{}: {e}", f.display()))?;
            let rps = v["lookup"]["rps"].as_f64().ok_or_else(|| format!("{}: no lookup.rps", f.display()))?;
            println!("{rps:.0}");
            Ok(())
        }
        Cmd::Report { results, doc, plot, lookup_rps_of: None } => pmh_bench::report::run(&results, &doc, &plot),
        Cmd::Gen { persons, out, seed, format, encoding, header, diff_share, date, files, threads } => {
            let date = match date {
                Some(d) => Date::parse(&d).map_err(|e| format!("--date {d:?}: {e}"))?,
                None => Date::today_tokyo(),
            };
            let config = GenConfig { persons, seed, date, format, encoding, header, diff_share, files, threads };
            let t = Instant::now();
            let m = r#gen::generate(&out, &config).map_err(|e| format!("gen: {e}"))?;
            let secs = t.elapsed().as_secs_f64();
            let rows = m.total_rows();
            println!(
                "gen: {} files in {} ({} full + diff + manifest.json), {rows} rows ({} full; diff {} updated, {} inserted, {} deleted), {:.1} MiB, {secs:.2} s, {:.0} rows/s",
                m.full.len() + 2,
                out.display(),
                m.full.len(),
                m.full_certificates(),
                m.diff.updated,
                m.diff.inserted,
                m.diff.deleted,
                m.total_bytes() as f64 / (1024.0 * 1024.0),
                rows as f64 / secs.max(1e-9),
            );
            Ok(())
        }
    }
}

fn print_op(r: &OpReport) {
    println!(
        "{:<16} ops={:<9} p50={:>6} ns  p99={:>6} ns  p99.9={:>6} ns  mean={:>8.0} ns  throughput={:>10.0} ops/s",
        r.name, r.ops, r.p50_ns, r.p99_ns, r.p999_ns, r.mean_ns, r.ops_per_sec
    );
}

fn demo(persons: u64, dir: PathBuf) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("clear {}: {e}", dir.display()))?;
    }
    let t = Instant::now();
    let config = StoreConfig { sync_writes: false, ..StoreConfig::default() };
    let b: BenchStore = engine::build_store(&dir, persons, 7, config)?;
    println!("demo store: {persons} synthetic people at {} ({:.1} s)", dir.display(), t.elapsed().as_secs_f64());
    let inst = InstitutionCode::parse(BENCH_INSTITUTION).map_err(|e| e.to_string())?;
    let who = &b.ids[0];
    println!("\nlookup of person 0 (PMH-ID {who}) by institution {inst}, date {}:", b.today);
    let demo = b.store.register_client("demo");
    let t = Instant::now();
    match b.store.lookup(demo, who, inst, b.today).map_err(|e| e.to_string())? {
        Lookup::ConsentRequired => println!("  consent required"),
        Lookup::Answered(e) => {
            println!(
                "  answered in {:.1} µs (first read, from disk), {} certificate(s)",
                t.elapsed().as_secs_f64() * 1e6,
                e.len()
            );
            for c in e.certificates() {
                let a = c.certificate;
                println!(
                    "  - {} 公費負担者番号 {:08} 受給者番号 {} 有効 {}..{} 上限 {:?} 指定医療機関 {}",
                    a.certification_name,
                    a.medical_subsidy_insurer_number.to_native(),
                    a.medical_subsidy_recipient_number,
                    pmh_engine::Date::from_days(a.valid_from.to_native()),
                    pmh_engine::Date::from_days(a.valid_to.to_native()),
                    a.max_copayment_amount.monthly.as_ref().map(|v| v.to_native()),
                    c.is_designated_institution,
                );
                if c.personal_disclosed {
                    println!("    氏名 {} ({})", a.basic_five_info.name, a.basic_five_info.name_kana);
                } else {
                    println!("    基本5情報: 不開示");
                }
            }
        }
    }
    // The first read above came from disk; time a few warm ones.
    let t = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(
            b.store.lookup(demo, who, inst, b.today).map_err(|e| e.to_string())?.answered().map(|e| e.len()),
        );
    }
    println!("  warm: {:.2} µs per lookup (1,000 repeats, each also logged)", t.elapsed().as_secs_f64() * 1e3);
    b.store.revoke_consent(who, inst).map_err(|e| e.to_string())?;
    let refused =
        matches!(b.store.lookup(demo, who, inst, b.today).map_err(|e| e.to_string())?, Lookup::ConsentRequired);
    println!("\nafter revoking the consent: {}", if refused { "consent required" } else { "ANSWERED (bug)" });
    let history = b.store.access_history(who).map_err(|e| e.to_string())?;
    println!("\naccess log of person 0: {} entries; first and last:", history.len());
    for e in [history.first(), history.last()].into_iter().flatten() {
        println!(
            "  {} institution {:010} via {} → {:?}, {} certificate(s), personal block {}",
            jst(e.at_micros),
            e.institution,
            e.client,
            e.outcome,
            e.disclosed.len(),
            if e.personal_disclosed { "shown" } else { "not shown" }
        );
    }
    let s = b.store.stats().map_err(|e| e.to_string())?;
    println!("\nstore: generation {}, {} live consents", s.generation, s.live_consents);
    for c in s.column_families {
        println!("  {:<11} ~{:>8} keys  {:>10} bytes on disk", c.name, c.estimated_keys, c.sst_bytes);
    }
    println!("\nThe HTTP server is not built yet: this demo drives the engine directly.");
    Ok(())
}

/// A Unix time in µs as a JST timestamp.
fn jst(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let day = pmh_engine::Date::tokyo_date_of(secs);
    let tod = secs + pmh_engine::date::JST_OFFSET_SECS - i64::from(day.days()) * 86_400;
    format!("{day} {:02}:{:02}:{:02}.{:06} JST", tod / 3600, tod / 60 % 60, tod % 60, micros.rem_euclid(1_000_000))
}
