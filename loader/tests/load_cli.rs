//! `pmh-load` as a process: exit codes, reports, and a load killed mid-way.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pmh_engine::Store;
use pmh_loader::config::Config;

const SECRET: &str = "load-cli-test-secret";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("data").join(name)
}

fn config(dir: &Path) -> PathBuf {
    let p = dir.join("pmh.toml");
    std::fs::write(&p, format!("db = {:?}\npmh_id_secret = {SECRET:?}\n", dir.join("store").display().to_string()))
        .expect("write config");
    p
}

fn pmh_load(cfg: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pmh-load")).arg("--config").arg(cfg).args(args).output().expect("run pmh-load")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_reports_every_bad_row_and_exits_1() {
    let t = tempfile::tempdir().expect("tmp");
    let cfg = config(t.path());
    let out = pmh_load(&cfg, &["check", &data("bad-rows.csv").display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let expected = std::fs::read_to_string(data("bad-rows.expected.txt")).expect("expected");
    for line in expected.lines() {
        let (_, rest) = line.split_once(": ").expect("file prefix");
        assert!(err.contains(rest), "missing {rest:?} in\n{err}");
    }
    assert!(!err.contains("123456789019"), "a My Number leaked");
    assert!(!t.path().join("store").exists(), "check must not create a store");
}

#[test]
fn out_of_range_numbers_are_usage_errors() {
    // `--threads 100000` panicked spawning threads, and a `--sort-mib` past 2^44 wrapped
    // around when turned into bytes, before both were bounded.
    let t = tempfile::tempdir().expect("tmp");
    let cfg = config(t.path());
    let sample = data("sample-utf8.csv").display().to_string();
    for (option, value) in
        [("--threads", "0"), ("--threads", "100000"), ("--sort-mib", "0"), ("--sort-mib", "18446744073709551615")]
    {
        let out = pmh_load(&cfg, &[option, value, "full", &sample]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{option} {value}: {err}");
        assert!(err.contains(option), "{option} {value}: {err}");
        assert!(!t.path().join("store").exists(), "{option} {value}: no store is created");
    }
}

/// A store in a temporary directory with the UTF-8 sample loaded (`--quiet full`), its
/// configuration, and the load's output.
fn sample_store() -> (tempfile::TempDir, PathBuf, std::process::Output) {
    let t = tempfile::tempdir().expect("tmp");
    let cfg = config(t.path());
    let out = pmh_load(&cfg, &["--quiet", "full", &data("sample-utf8.csv").display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    (t, cfg, out)
}

#[test]
fn full_then_diff_twice_with_summaries() {
    let (t, cfg, out) = sample_store();
    let s = text(&out.stdout);
    assert!(s.starts_with("full load: ") && s.contains("rows/s"), "{s}");
    // "…, generation 1 (serving after 0.1 s), 0.2 s, …": the switch is on the total's clock.
    let after = |s: &str, pat: &str| -> f64 {
        let at = s.find(pat).unwrap_or_else(|| panic!("no {pat:?} in {s}")) + pat.len();
        s[at..].split(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no number after {pat:?}: {s}"))
    };
    let (live, total) = (after(&s, "(serving after "), after(&s, " s), "));
    assert!(live <= total, "{s}");
    // Off a terminal the stages are logged on the same clock: the switch is when the
    // runs' removal starts (to the 0.1 s both are printed in), not when the store closed.
    let out = pmh_load(&cfg, &["full", &data("sample-utf8.csv").display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (s, log) = (text(&out.stdout), text(&out.stderr));
    let removal = after(&log, "pmh-load: remove sort runs (at ");
    assert!((after(&s, "(serving after ") - removal).abs() <= 0.15, "{s}\n{log}");
    let diff = data("sample-diff.csv").display().to_string();
    let first = pmh_load(&cfg, &["--quiet", "diff", &diff]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    // The diff's writes are in table files when it ends: the next open has no log to replay.
    assert_eq!(wal_bytes(&t.path().join("store")), 0, "a diff left its writes in the write-ahead log");
    let again = pmh_load(&cfg, &["--quiet", "diff", &diff]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("inserted 0, updated 0, deleted 0"), "{}", text(&again.stdout));
    // Bad input: exit 1, nothing changed.
    let bad = pmh_load(&cfg, &["--quiet", "diff", &data("bad-rows.csv").display().to_string()]);
    assert_eq!(bad.status.code(), Some(1));
    // Usage error: exit 2.
    let missing = pmh_load(&cfg, &["--quiet", "full", "/no/such/file.csv"]);
    assert_eq!(
        missing.status.code(),
        Some(1),
        "an unreadable file is reported like a bad row: {}",
        text(&missing.stderr)
    );
    assert!(text(&missing.stderr).contains("/no/such/file.csv"));
}

#[test]
fn a_rejected_file_stops_a_diff_run_and_the_files_before_it_stay_applied_and_flushed() {
    let (t, cfg, _) = sample_store();
    let (diff, bad) = (data("sample-diff.csv").display().to_string(), data("bad-rows.csv").display().to_string());
    let run = pmh_load(&cfg, &["--quiet", "diff", &diff, &bad]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let err = text(&run.stderr);
    assert!(err.contains("applied before the failure: diff: 1 file(s)"), "{err}");
    // The applied file is in table files even though the run failed.
    assert_eq!(wal_bytes(&t.path().join("store")), 0, "the applied file was left in the write-ahead log");
    // And it is applied: the same file again changes nothing.
    let again = pmh_load(&cfg, &["--quiet", "diff", &diff]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("inserted 0, updated 0, deleted 0"), "{}", text(&again.stdout));
}

/// Bytes in the store's write-ahead log files.
fn wal_bytes(store: &Path) -> u64 {
    std::fs::read_dir(store)
        .expect("store dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| std::fs::metadata(&p).expect("log file").len())
        .sum()
}

/// A CSV of `n` valid rows: the sample's rows repeated with distinct history keys.
fn big_csv(path: &Path, n: usize) {
    csv_rows(path, 0..n, false);
}

/// A CSV of the rows numbered `numbers` (row `i` is the sample's row `i` modulo their
/// count, with history key `K{i:09}`), marked deleted if `deleted`.
fn csv_rows(path: &Path, numbers: std::ops::Range<usize>, deleted: bool) {
    let sample = std::fs::read_to_string(data("sample-utf8.csv")).expect("sample");
    let mut lines = sample.lines();
    let header = lines.next().expect("header");
    let cols: Vec<&str> = header.split(',').collect();
    let hk = cols.iter().position(|c| *c == "historyKey").expect("historyKey column");
    let del = cols.iter().position(|c| *c == "isDeleted").expect("isDeleted column");
    let rows: Vec<Vec<String>> = lines
        .filter(|l| !l.contains('"'))
        .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|r| r.len() == cols.len() && r[del] == "0")
        .collect();
    assert!(!rows.is_empty());
    let mut out = String::with_capacity(numbers.len() * 400);
    out.push_str(header);
    out.push('\n');
    for i in numbers {
        let mut r = rows[i % rows.len()].clone();
        r[hk] = format!("K{i:09}");
        if deleted {
            r[del] = "1".to_string();
        }
        out.push_str(&r.join(","));
        out.push('\n');
    }
    std::fs::write(path, out).expect("write big csv");
}

#[test]
fn a_killed_full_load_leaves_the_previous_snapshot_serving() {
    let t = tempfile::tempdir().expect("tmp");
    let cfg = config(t.path());
    let ok = pmh_load(&cfg, &["--quiet", "full", &data("sample-utf8.csv").display().to_string()]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let big = t.path().join("big.csv");
    big_csv(&big, 300_000);
    let staging = t.path().join("store.staging");
    // Kill early (while parsing) and late (once the merge writes SST files).
    for (round, late) in [false, true].into_iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pmh-load"))
            .arg("--config")
            .arg(&cfg)
            .args(["--quiet", "--threads", "1", "full"])
            .arg(&big)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(60);
        let hit = |dir: &Path| -> bool {
            let Ok(rd) = std::fs::read_dir(dir) else { return false };
            rd.flatten().any(|e| {
                let p = e.path();
                if late { p.join("source.sst").exists() } else { p.join("runs").exists() }
            })
        };
        while !hit(&staging) && Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("round {round}: load finished ({status}) before it could be killed; make the file bigger");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().expect("kill -9");
        let _ = child.wait();
        // The previous snapshot is intact and readable.
        let c = Config::load(Some(&cfg)).expect("config");
        let store = Store::open(t.path().join("store"), c.store_config()).expect("reopens after the kill");
        assert_eq!(store.generation(), 1, "round {round}: the killed load must not have switched");
        let r = store.verify().expect("verify");
        assert!(r.is_ok(), "{:?}", r.problems);
        assert!(r.certificates > 0 && r.certificates < 100, "round {round}: the old snapshot serves");
    }
    // The killed loads left their scratch files; the next full load removes them.
    let leftovers = |dir: &Path| std::fs::read_dir(dir).map(|rd| rd.flatten().count()).unwrap_or(0);
    assert!(leftovers(&staging) > 0, "kill -9 runs no clean-up");
    let ok = pmh_load(&cfg, &["full", &data("sample-utf8.csv").display().to_string()]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert_eq!(leftovers(&staging), 0, "the next load cleans up after the killed ones");
    assert!(text(&ok.stderr).contains("removed what an interrupted full load left"), "{}", text(&ok.stderr));
}

#[test]
fn a_killed_diff_run_leaves_each_file_applied_whole_or_not_at_all() {
    const N: usize = 100_000;
    const D: usize = 40_000;
    const I: usize = 60_000;
    let t = tempfile::tempdir().expect("tmp");
    let cfg = config(t.path());
    let path = |name: &str| t.path().join(name);
    csv_rows(&path("base.csv"), 0..N, false);
    csv_rows(&path("deletes.csv"), 0..D, true);
    csv_rows(&path("inserts.csv"), N..N + I, false);
    let ok = pmh_load(&cfg, &["--quiet", "full", &path("base.csv").display().to_string()]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    // What a run of the two files may leave: nothing applied, the deletes, or both.
    let states = [N as u64, (N - D) as u64, (N - D + I) as u64];
    let c = Config::load(Some(&cfg)).expect("config");
    const ROUNDS: usize = 7;
    {
        let base = Store::open(path("store"), c.store_config()).expect("open the loaded store");
        for round in 0..ROUNDS {
            base.checkpoint(&path(&format!("round{round}"))).expect("checkpoint");
        }
    }
    let diff = |round: usize| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pmh-load"));
        c.arg("--config")
            .arg(&cfg)
            .arg("--db")
            .arg(path(&format!("round{round}")))
            .args(["--quiet", "diff"])
            .arg(path("deletes.csv"))
            .arg(path("inserts.csv"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let certificates = |round: usize| -> u64 {
        let store = Store::open(path(&format!("round{round}")), c.store_config()).expect("reopens after the kill");
        let r = store.verify().expect("verify");
        assert!(r.is_ok(), "round {round}: {:?}", r.problems);
        r.certificates
    };
    // Round 0 runs to the end and times the run; the others are killed at fractions of it.
    let started = Instant::now();
    let whole = diff(0).status().expect("run pmh-load");
    let took = started.elapsed();
    assert!(whole.success(), "{whole}");
    assert_eq!(certificates(0), states[2]);
    let mut killed = 0;
    for round in 1..ROUNDS {
        let mut child = diff(round).spawn().expect("spawn");
        std::thread::sleep(took.mul_f64(round as f64 / ROUNDS as f64));
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().expect("kill -9");
            killed += 1;
        }
        let _ = child.wait();
        let left = certificates(round);
        assert!(
            states.contains(&left),
            "round {round}: {left} certificates, a file applied in part (whole files give {states:?})"
        );
        // Running the same files again finishes the job: what was applied is a no-op.
        let again = diff(round).status().expect("run pmh-load");
        assert!(again.success(), "round {round}: {again}");
        assert_eq!(certificates(round), states[2], "round {round}: after the rerun");
    }
    assert!(killed > 0, "every run ended before its kill; make the files bigger");
}

#[test]
fn configuration_warnings_are_printed() {
    let t = tempfile::tempdir().expect("tmp");
    let cfg = config(t.path());
    let mut text_of_cfg = std::fs::read_to_string(&cfg).expect("read config");
    text_of_cfg.push_str("[[tokens]]\nname = \"gw\"\nrole = \"gateway\"\ntoken = \"plain-for-the-test\"\n");
    std::fs::write(&cfg, text_of_cfg).expect("write config");
    let out = pmh_load(&cfg, &["--quiet", "check", &data("sample-utf8.csv").display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let warning = "tokens[0] (gw): a plain `token` is for local use only";
    assert_eq!(err.matches(warning).count(), 1, "once, through the log: {err}");
    assert!(err.lines().any(|l| l.contains("WARN") && l.contains(warning)), "{err}");
}
