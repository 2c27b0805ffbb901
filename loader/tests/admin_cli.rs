//! `pmh-admin` end to end: a store built with the engine in a temporary directory, a
//! configuration file, and the real binary run on them (exit codes, stdout JSON, stderr).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pmh_engine::ids::make;
use pmh_engine::record::Certificate;
use pmh_engine::{InstitutionCode, MyNumber, PmhId, PmhIdDeriver, Store, StoreConfig, StoreKey};
use serde_json::Value;

const SECRET: &str = "admin-cli-test-secret";

fn store_config(secret: &str) -> StoreConfig {
    let mut c = StoreConfig {
        sync_writes: false,
        secret_fingerprint: Some(PmhIdDeriver::new(secret.as_bytes()).fingerprint()),
        ..StoreConfig::default()
    };
    c.rocks.block_cache_bytes = 8 << 20;
    c
}

fn person(n: u64) -> PmhId {
    let number = MyNumber::parse(&make::my_number(n)).expect("valid my number");
    PmhIdDeriver::new(SECRET.as_bytes()).derive(&number)
}

fn institution() -> InstitutionCode {
    InstitutionCode::parse(&make::institution_code(13, 1, 123_456)).expect("institution")
}

/// A certificate of municipality 131016 valid 2026-04-01..2027-03-31.
fn cert(history_key: &str) -> Certificate {
    Certificate::example(history_key)
}

/// Three people, four certificates: person 1 holds two.
fn records() -> Vec<(PmhId, Certificate)> {
    vec![(person(1), cert("H1")), (person(1), cert("H2")), (person(2), cert("H3")), (person(3), cert("H4"))]
}

/// A store at `dir/db` holding [`records`] as one full snapshot (generation 1) and one
/// consent, with a configuration file `dir/pmh.toml` naming it and the secret.
struct Fixture {
    dir: tempfile::TempDir,
    db: PathBuf,
    config: PathBuf,
}

fn fixture() -> Fixture {
    fixture_with(|path| Store::open(path, store_config(SECRET)).expect("open store"))
}

fn fixture_with(open: impl FnOnce(&Path) -> Store) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("db");
    {
        let store = open(&db);
        store.load_snapshot(records(), &dir.path().join("staging")).expect("load snapshot");
        store.grant_consent(&person(1), institution(), pmh_engine::date::unix_now()).expect("consent");
    }
    let config = write_config(dir.path(), "pmh.toml", &format!("pmh_id_secret = {SECRET:?}\n"), &db);
    Fixture { dir, db, config }
}

/// Writes a configuration file (mode 600, so no warning): `db`, then `extra` (top-level
/// keys, then any tables), then small `[rocksdb]` and `[store]` sections.
fn write_config(dir: &Path, name: &str, extra: &str, db: &Path) -> PathBuf {
    let path = dir.join(name);
    let text =
        format!("db = {:?}\n{extra}[rocksdb]\nblock_cache_mib = 8\n[store]\nsync_writes = false\n", db.display());
    std::fs::write(&path, text).expect("write config");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    path
}

/// Runs `pmh-admin` with `args`, in an environment without `PMH_*` variables.
fn admin<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pmh-admin"));
    for var in ["PMH_LISTEN", "PMH_DB", "PMH_PMH_ID_SECRET", "PMH_CONSENT_TTL"] {
        cmd.env_remove(var);
    }
    cmd.args(args).output().expect("run pmh-admin")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(o)))
}

/// Asserts exit code 2 and a single stderr line containing every one of `needles`.
fn assert_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(code(o), 2, "stdout: {} stderr: {err}", stdout(o));
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("pmh-admin: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err}");
    }
}

#[test]
fn stats_json_counts_what_is_stored() {
    let f = fixture();
    let o = admin([OsStr::new("--config"), f.config.as_os_str(), OsStr::new("stats"), OsStr::new("--json")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    let s = json(&o);
    assert_eq!(s["db"], f.db.display().to_string());
    assert_eq!(s["generation"], 1);
    assert_eq!(s["active_pair"], 1);
    assert_eq!(s["live_consents"], 1);
    assert_eq!(s["access_log_failures"], 0);
    let cfs = &s["column_families"];
    assert_eq!(cfs.as_object().map(|m| m.len()), Some(pmh_engine::layout::ALL_CFS.len()));
    assert_eq!(cfs["holders.1"]["estimated_keys"], 3, "{s}");
    assert_eq!(cfs["source.1"]["estimated_keys"], 4, "{s}");
    assert_eq!(cfs["holders.0"]["estimated_keys"], 0, "{s}");
    assert!(cfs["holders.1"]["sst_bytes"].as_u64().is_some_and(|b| b > 0), "{s}");
    assert!(cfs["consents"]["memtable_bytes"].is_u64());

    // The human table says the same.
    let o = admin([OsStr::new("--config"), f.config.as_os_str(), OsStr::new("stats")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("generation   1 (active pair 1)"), "{text}");
    assert!(text.contains("consents     1 live"), "{text}");
    let holders = text.lines().find(|l| l.starts_with("holders.1")).expect("holders.1 row");
    assert_eq!(holders.split_whitespace().nth(1), Some("3"), "{text}");
    assert!(holders.ends_with(" *"), "active pair marked: {text}");
}

#[test]
fn verify_passes_on_a_sound_store() {
    let f = fixture();
    let o = admin([OsStr::new("--config"), f.config.as_os_str(), OsStr::new("verify")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("3 buckets, 3 holders, 4 certificates, 4 source-index entries"), "{text}");
    assert!(text.contains("OK"), "{text}");

    let o = admin([OsStr::new("--json"), OsStr::new("--config"), f.config.as_os_str(), OsStr::new("verify")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["ok"], true);
    assert_eq!((r["buckets"].as_u64(), r["holders"].as_u64()), (Some(3), Some(3)));
    assert_eq!((r["certificates"].as_u64(), r["source_entries"].as_u64()), (Some(4), Some(4)));
    assert_eq!(r["problem_count"], 0);
    assert_eq!(r["problems"], Value::Array(vec![]));
}

/// A store written under another PMH-ID → key function: every holder sits under a key
/// that is not its own, which `verify` must report (exit 1). (The engine tests corrupt a
/// value with plain RocksDB; this crate has no direct RocksDB dependency.)
#[test]
fn verify_reports_problems_with_exit_code_1() {
    fn wrong_key(_: &PmhId) -> StoreKey {
        StoreKey([0x5a; 16])
    }
    let f = fixture_with(|path| Store::open_with_key_fn(path, store_config(SECRET), wrong_key).expect("open store"));
    let o = admin([OsStr::new("--config"), f.config.as_os_str(), OsStr::new("verify"), OsStr::new("--json")]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["ok"], false);
    assert_eq!(r["problem_count"], 3, "{r}");
    let problems = r["problems"].as_array().expect("problems");
    assert!(problems.iter().all(|p| p.as_str().is_some_and(|p| p.contains("whose key is"))), "{r}");

    let o = admin([OsStr::new("--config"), f.config.as_os_str(), OsStr::new("verify")]);
    assert_eq!(code(&o), 1);
    let text = stdout(&o);
    assert!(text.contains("3 problem(s):"), "{text}");
    assert_eq!(text.lines().filter(|l| l.contains("whose key is")).count(), 3, "{text}");
}

#[test]
fn a_checkpoint_is_a_sound_store_of_its_own() {
    let f = fixture();
    let cp = f.dir.path().join("checkpoint");
    let o = admin([OsStr::new("--config"), f.config.as_os_str(), OsStr::new("checkpoint"), cp.as_os_str()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&cp.display().to_string()));
    assert!(cp.join("CURRENT").is_file());

    let o = admin([
        OsStr::new("--config"),
        f.config.as_os_str(),
        OsStr::new("--db"),
        cp.as_os_str(),
        OsStr::new("verify"),
        OsStr::new("--json"),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!((r["db"].as_str(), r["certificates"].as_u64()), (Some(&*cp.display().to_string()), Some(4)));

    let o = admin([
        OsStr::new("--db"),
        cp.as_os_str(),
        OsStr::new("--config"),
        f.config.as_os_str(),
        OsStr::new("stats"),
        OsStr::new("--json"),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["generation"], 1);
}

#[test]
fn a_checkpoint_into_an_existing_directory_is_refused() {
    let f = fixture();
    let existing = f.dir.path().join("already-here");
    std::fs::create_dir(&existing).expect("mkdir");
    let o = admin([OsStr::new("--config"), f.config.as_os_str(), OsStr::new("checkpoint"), existing.as_os_str()]);
    assert_error(&o, &[&existing.display().to_string(), "already exists"]);
    assert_eq!(std::fs::read_dir(&existing).expect("read dir").count(), 0, "nothing written into it");
}

#[test]
fn compact_keeps_the_store_sound() {
    let f = fixture();
    let o = admin([OsStr::new("--config"), f.config.as_os_str(), OsStr::new("compact"), OsStr::new("--json")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["compacted"], true);
    let o = admin([OsStr::new("--config"), f.config.as_os_str(), OsStr::new("verify")]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn an_unknown_configuration_key_is_an_error_naming_it() {
    let f = fixture();
    let bad = write_config(f.dir.path(), "bad.toml", "colour = \"blue\"\n", &f.db);
    let o = admin([OsStr::new("--config"), bad.as_os_str(), OsStr::new("stats")]);
    assert_error(&o, &[&bad.display().to_string(), "line 2", "colour", "unknown key `colour`"]);

    let bad = write_config(
        f.dir.path(),
        "bad2.toml",
        "[[tokens]]\nrole = \"gateway\"\ntoken = \"x\"\nmunicipality = \"131016\"\n",
        &f.db,
    );
    let o = admin([OsStr::new("--config"), bad.as_os_str(), OsStr::new("stats")]);
    assert_error(&o, &[&bad.display().to_string(), "tokens[0].municipality"]);

    let missing = f.dir.path().join("missing.toml");
    let o = admin([OsStr::new("--config"), missing.as_os_str(), OsStr::new("stats")]);
    assert_error(&o, &[&missing.display().to_string(), "cannot read"]);
}

#[test]
fn a_store_created_under_another_secret_is_refused() {
    let f = fixture();
    let other = write_config(f.dir.path(), "other.toml", "pmh_id_secret = \"another-secret\"\n", &f.db);
    let o = admin([OsStr::new("--config"), other.as_os_str(), OsStr::new("stats")]);
    assert_error(&o, &[&f.db.display().to_string(), "different pmh_id_secret", &other.display().to_string()]);

    // The same through the environment override of the secret.
    let o = Command::new(env!("CARGO_BIN_EXE_pmh-admin"))
        .env("PMH_PMH_ID_SECRET", "wrong")
        .args([OsStr::new("--config"), f.config.as_os_str(), OsStr::new("verify")])
        .output()
        .expect("run pmh-admin");
    assert_error(&o, &["different pmh_id_secret"]);
}

#[test]
fn the_environment_can_replace_the_file() {
    let f = fixture();
    let o = Command::new(env!("CARGO_BIN_EXE_pmh-admin"))
        .env_remove("PMH_LISTEN")
        .env_remove("PMH_CONSENT_TTL")
        .env("PMH_DB", &f.db)
        .env("PMH_PMH_ID_SECRET", SECRET)
        .args(["stats", "--json"])
        .output()
        .expect("run");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["generation"], 1);
}

#[test]
fn a_store_in_use_is_reported_as_locked() {
    let f = fixture();
    let _held = Store::open(&f.db, store_config(SECRET)).expect("open store");
    let o = admin([OsStr::new("--config"), f.config.as_os_str(), OsStr::new("stats")]);
    assert_error(&o, &[&f.db.display().to_string(), "locked by another process"]);
}

#[test]
fn a_directory_without_a_store_is_refused_not_created() {
    let f = fixture();
    let nowhere = f.dir.path().join("typo");
    let o = admin([
        OsStr::new("--config"),
        f.config.as_os_str(),
        OsStr::new("--db"),
        nowhere.as_os_str(),
        OsStr::new("stats"),
    ]);
    assert_error(&o, &[&nowhere.display().to_string(), "no such store directory"]);
    assert!(!nowhere.exists());
    let o = admin([OsStr::new("--db"), f.dir.path().as_os_str(), OsStr::new("verify")]);
    assert_error(&o, &[&f.dir.path().display().to_string(), "not a PMH store"]);
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(code(&admin(Vec::<&str>::new())), 2);
    assert_eq!(code(&admin(["checkpoint"])), 2);
    assert_eq!(code(&admin(["frobnicate"])), 2);
    let help = admin(["--help"]);
    assert_eq!(code(&help), 0);
    assert!(stdout(&help).contains("checkpoint"));
}

#[test]
fn configuration_warnings_are_logged_once_and_stdout_stays_clean() {
    let f = fixture();
    let extra = format!(
        "pmh_id_secret = {SECRET:?}\n[[tokens]]\nname = \"gw\"\nrole = \"gateway\"\ntoken = \"plain-for-the-test\"\n"
    );
    let config = write_config(f.dir.path(), "plain-token.toml", &extra, &f.db);
    let o = admin([OsStr::new("--config"), config.as_os_str(), OsStr::new("stats"), OsStr::new("--json")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let warning = "tokens[0] (gw): a plain `token` is for local use only";
    let err = stderr(&o);
    assert_eq!(err.matches(warning).count(), 1, "once, through the log: {err}");
    assert!(err.lines().any(|l| l.contains("WARN") && l.contains(warning)), "{err}");
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("stdout is only the JSON");
    assert_eq!(s["generation"], 1);
}
