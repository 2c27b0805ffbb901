//! Full and differential loads through `pmh_loader::load`, on the sample files in `data/`.

use std::path::{Path, PathBuf};

use pmh_engine::date::unix_now;
use pmh_engine::{Date, InstitutionCode, Lookup, PmhIdDeriver, Store, StoreConfig};
use pmh_loader::load::{self, LoadError, LoadOptions, NoProgress};
use pmh_loader::{Format, ParseOptions, parse_all};

const SECRET: &[u8] = b"loader-test-secret";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("data").join(name)
}

fn open(dir: &Path) -> Store {
    let mut c = StoreConfig {
        sync_writes: false,
        secret_fingerprint: Some(PmhIdDeriver::new(SECRET).fingerprint()),
        ..StoreConfig::default()
    };
    c.rocks.block_cache_bytes = 8 << 20;
    Store::open(dir, c).expect("open store")
}

fn clinic() -> InstitutionCode {
    InstitutionCode::parse("1311234569").expect("institution")
}

/// Every (history key, name) a lookup of each person in `file` answers on `date`.
fn answers(store: &Store, file: &str, date: &str) -> Vec<(String, Vec<String>)> {
    let deriver = PmhIdDeriver::new(SECRET);
    let rows = parse_all(
        Format::from_file_name(file),
        std::fs::File::open(data(file)).expect("open"),
        &ParseOptions::default(),
    )
    .expect("sample parses");
    let client = store.register_client("test");
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in rows {
        let id = deriver.derive(&r.pmh_source);
        if !seen.insert(id) {
            continue;
        }
        store.grant_consent(&id, clinic(), unix_now()).expect("grant");
        let Lookup::Answered(e) =
            store.lookup(client, &id, clinic(), Date::parse(date).expect("date")).expect("lookup")
        else {
            panic!("consent was granted");
        };
        let mut keys: Vec<String> = e.certificates().map(|c| c.certificate.history_key.to_string()).collect();
        keys.sort();
        out.push((id.to_string(), keys));
    }
    out.sort();
    out
}

fn full(store: &Store, files: &[&str]) -> Result<load::FullSummary, LoadError> {
    let files: Vec<PathBuf> = files.iter().map(|f| data(f)).collect();
    load::full(
        store,
        &PmhIdDeriver::new(SECRET),
        &files,
        &LoadOptions { threads: 2, ..LoadOptions::default() },
        &NoProgress,
    )
}

#[test]
fn every_sample_loads_to_the_same_lookups() {
    let t = tempfile::tempdir().expect("tmp");
    let mut results = Vec::new();
    for (i, f) in ["sample-utf8.csv", "sample-sjis.csv", "sample.json"].iter().enumerate() {
        let store = open(&t.path().join(format!("db{i}")));
        let s = full(&store, &[f]).expect("loads");
        assert!(s.certificates > 0);
        assert_eq!(s.generation, 1);
        assert!(store.verify().expect("verify").is_ok());
        assert!(!t.path().join(format!("db{i}.staging")).exists(), "the default staging directory goes with the load");
        results.push(answers(&store, "sample-utf8.csv", "2026-11-21"));
    }
    assert!(results[0].iter().any(|(_, keys)| !keys.is_empty()), "some sample certificate is valid on the date");
    assert_eq!(results[0], results[1], "Shift_JIS twin loads the same");
    assert_eq!(results[0], results[2], "JSON twin loads the same");
}

#[test]
#[cfg(unix)]
fn a_full_load_reads_a_named_pipe_as_a_stream() {
    // A regular input file is read around the page cache and its cached pages are dropped
    // after the parse; a pipe (process substitution, a named pipe) is read as a stream, and
    // nothing opens it a second time (that would wait for a writer that has gone).
    let t = tempfile::tempdir().expect("tmp");
    let fifo = t.path().join("input.csv");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    let sample = std::fs::read(data("sample-utf8.csv")).expect("sample");
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, sample).expect("write the pipe"))
    };
    let piped = std::sync::Arc::new(open(&t.path().join("piped")));
    // On a thread, so that a load stuck opening the pipe again fails the test, not hangs it.
    let (done, finished) = std::sync::mpsc::channel();
    {
        let piped = piped.clone();
        std::thread::spawn(move || {
            let opts = LoadOptions { threads: 2, ..LoadOptions::default() };
            let _ = done.send(load::full(&piped, &PmhIdDeriver::new(SECRET), &[fifo], &opts, &NoProgress));
        });
    }
    let s = finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the load ends within a minute")
        .expect("loads from a pipe");
    writer.join().expect("writer");
    let from_file = open(&t.path().join("file"));
    assert_eq!(full(&from_file, &["sample-utf8.csv"]).expect("loads").certificates, s.certificates);
    assert_eq!(answers(&piped, "sample-utf8.csv", "2026-11-21"), answers(&from_file, "sample-utf8.csv", "2026-11-21"));
}

#[test]
fn bad_rows_are_all_reported_and_change_nothing() {
    let t = tempfile::tempdir().expect("tmp");
    let store = open(&t.path().join("db"));
    full(&store, &["sample-utf8.csv"]).expect("loads");
    let before = answers(&store, "sample-utf8.csv", "2026-11-21");
    let g = store.generation();
    let Err(LoadError::Rejected(errors)) = full(&store, &["sample-utf8.csv", "bad-rows.csv"]) else {
        panic!("bad rows must be rejected");
    };
    assert!(!t.path().join("db.staging").exists(), "a rejected load leaves no staging directory either");
    let expected = std::fs::read_to_string(data("bad-rows.expected.txt")).expect("expected report");
    assert_eq!(errors.len(), expected.lines().count(), "every bad row, not only the first");
    assert_eq!(store.generation(), g);
    assert_eq!(answers(&store, "sample-utf8.csv", "2026-11-21"), before);
}

#[test]
fn duplicate_identities_across_files_name_both_rows() {
    let t = tempfile::tempdir().expect("tmp");
    let store = open(t.path());
    let Err(LoadError::Rejected(errors)) = full(&store, &["sample-utf8.csv", "sample-utf8.csv"]) else {
        panic!("duplicates must be rejected");
    };
    assert!(!errors.is_empty());
    assert!(errors.iter().all(|e| e.rule == "unique certificate identity"), "{errors:?}");
    assert!(errors[0].message.contains("also"), "{}", errors[0].message);
    assert_eq!(store.generation(), 0, "nothing installed");
}

#[test]
fn duplicates_are_found_between_runs_on_disk_and_in_memory() {
    // The last sort buffer of each worker is merged from memory, the rest from run files:
    // a duplicate must be found whichever of them holds each copy.
    let t = tempfile::tempdir().expect("tmp");
    let files = vec![data("sample-utf8.csv"), data("sample-utf8.csv")];
    let mut reports = Vec::new();
    // All in memory; a run every few certificates with the last ones in memory; every
    // certificate its own run on disk.
    for budget in [512 << 20, 8192, 1] {
        let store = open(&t.path().join(format!("db-{budget}")));
        let opts = LoadOptions { threads: 2, sort_budget_bytes: budget, ..LoadOptions::default() };
        let Err(LoadError::Rejected(errors)) =
            load::full(&store, &PmhIdDeriver::new(SECRET), &files, &opts, &NoProgress)
        else {
            panic!("duplicates must be rejected (budget {budget})");
        };
        assert_eq!(store.generation(), 0, "nothing installed");
        reports.push(errors.iter().map(|e| (e.file.clone(), e.row, e.message.clone())).collect::<Vec<_>>());
    }
    assert!(!reports[0].is_empty());
    assert_eq!(reports[0], reports[1], "a run every few certificates");
    assert_eq!(reports[0], reports[2], "every certificate its own run");
}

#[test]
fn a_small_sort_budget_spills_runs_and_loads_the_same() {
    let t = tempfile::tempdir().expect("tmp");
    let a = open(&t.path().join("a"));
    let b = open(&t.path().join("b"));
    full(&a, &["sample-utf8.csv"]).expect("loads");
    let files = vec![data("sample-utf8.csv")];
    // 1-byte budget: every certificate becomes its own run, merged back.
    let staging = t.path().join("staging");
    let opts =
        LoadOptions { threads: 3, sort_budget_bytes: 1, staging: Some(staging.clone()), ..LoadOptions::default() };
    // When the runs' removal starts, the new snapshot already serves and the runs are
    // still on disk: the switch does not wait for their deletion.
    struct AtRemoval<'s> {
        store: &'s pmh_engine::Store,
        staging: &'s Path,
        seen: std::sync::Mutex<Option<(u64, usize)>>,
    }
    impl load::Progress for AtRemoval<'_> {
        fn stage(&self, name: &str) {
            if name == "remove sort runs" {
                let runs = std::fs::read_dir(self.staging)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .flat_map(|snapshot| std::fs::read_dir(snapshot.path().join("runs")).into_iter().flatten())
                    .count();
                *self.seen.lock().unwrap() = Some((self.store.generation(), runs));
            }
        }
    }
    let progress = AtRemoval { store: &b, staging: &staging, seen: std::sync::Mutex::new(None) };
    let s = load::full(&b, &PmhIdDeriver::new(SECRET), &files, &opts, &progress).expect("loads");
    let (generation, runs) = progress.seen.lock().unwrap().expect("the runs were removed after the install");
    assert_eq!(generation, s.generation, "the new snapshot served before the runs were removed");
    assert!(runs > 0, "the runs were still there at the switch");
    assert!(s.live_after > std::time::Duration::ZERO && s.live_after <= s.elapsed, "{s:?}");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0, "nothing is left in the staging directory");
    assert_eq!(answers(&a, "sample-utf8.csv", "2026-11-21"), answers(&b, "sample-utf8.csv", "2026-11-21"));
    assert!(b.verify().expect("verify").is_ok());
}

#[test]
fn an_empty_full_load_is_refused_unless_allowed() {
    let t = tempfile::tempdir().expect("tmp");
    let store = open(&t.path().join("db"));
    full(&store, &["sample-utf8.csv"]).expect("loads");
    let header = std::fs::read_to_string(data("sample-utf8.csv")).expect("read");
    let empty = t.path().join("empty.csv");
    std::fs::write(&empty, header.lines().next().expect("header")).expect("write");
    let d = PmhIdDeriver::new(SECRET);
    let r = load::full(&store, &d, std::slice::from_ref(&empty), &LoadOptions::default(), &NoProgress);
    assert!(matches!(r, Err(LoadError::Usage(_))), "{r:?}");
    assert_eq!(store.generation(), 1);
    let opts = LoadOptions { allow_empty: true, ..LoadOptions::default() };
    let s = load::full(&store, &d, &[empty], &opts, &NoProgress).expect("allowed");
    assert_eq!(s.certificates, 0);
    assert!(answers(&store, "sample-utf8.csv", "2026-11-21").iter().all(|(_, k)| k.is_empty()));
}

#[test]
fn too_many_worker_threads_are_refused_before_anything_changes() {
    let t = tempfile::tempdir().expect("tmp");
    let store = open(&t.path().join("db"));
    full(&store, &["sample-utf8.csv"]).expect("loads");
    let before = answers(&store, "sample-utf8.csv", "2026-11-21");
    let d = PmhIdDeriver::new(SECRET);
    let too_many = LoadOptions { threads: load::MAX_THREADS + 1, ..LoadOptions::default() };

    let r = load::full(&store, &d, &[data("sample-diff.csv")], &too_many, &NoProgress);
    let Err(LoadError::Usage(msg)) = r else { panic!("a full load with too many threads: {r:?}") };
    assert!(msg.contains("1025") && msg.contains("1024"), "{msg}");
    assert_eq!(store.generation(), 1, "no new snapshot");
    assert!(!t.path().join("db.staging").exists(), "nothing left beside the store");

    let r = load::diff(&store, &d, &[data("sample-diff.csv")], &too_many, &NoProgress);
    let Err((done, LoadError::Usage(_))) = r else { panic!("a diff with too many threads: {r:?}") };
    assert!(done.is_empty());
    assert_eq!(answers(&store, "sample-utf8.csv", "2026-11-21"), before, "nothing applied");

    // The limit itself is allowed, and 0 is taken as 1.
    for threads in [0, load::MAX_THREADS] {
        let opts = LoadOptions { threads, ..LoadOptions::default() };
        load::diff(&store, &d, &[data("sample-diff.csv")], &opts, &NoProgress).expect("applies");
    }
}

#[test]
fn a_diff_applies_once_and_reapplying_it_changes_nothing() {
    let t = tempfile::tempdir().expect("tmp");
    let store = open(t.path());
    full(&store, &["sample-utf8.csv"]).expect("loads");
    let d = PmhIdDeriver::new(SECRET);
    let files = vec![data("sample-diff.csv")];
    let first = load::diff(&store, &d, &files, &LoadOptions::default(), &NoProgress).expect("applies");
    let a = first[0].applied;
    assert!(a.inserted + a.updated + a.deleted > 0, "{a:?}");
    let after = answers(&store, "sample-utf8.csv", "2026-11-21");
    let again = load::diff(&store, &d, &files, &LoadOptions::default(), &NoProgress).expect("applies");
    let b = again[0].applied;
    assert_eq!((b.inserted, b.updated, b.deleted), (0, 0, 0), "{b:?}");
    assert_eq!(b.unchanged, first[0].rows);
    assert_eq!(answers(&store, "sample-utf8.csv", "2026-11-21"), after);
    assert!(store.verify().expect("verify").is_ok());
}

#[test]
fn a_bad_diff_file_changes_nothing_and_stops_the_run() {
    let t = tempfile::tempdir().expect("tmp");
    let store = open(t.path());
    full(&store, &["sample-utf8.csv"]).expect("loads");
    let before = answers(&store, "sample-utf8.csv", "2026-11-21");
    let d = PmhIdDeriver::new(SECRET);
    let files = vec![data("bad-rows.csv"), data("sample-diff.csv")];
    let Err((done, LoadError::Rejected(errors))) = load::diff(&store, &d, &files, &LoadOptions::default(), &NoProgress)
    else {
        panic!("must be rejected");
    };
    assert!(done.is_empty(), "the later file is not applied");
    assert!(!errors.is_empty());
    assert_eq!(answers(&store, "sample-utf8.csv", "2026-11-21"), before);
}

#[test]
fn check_validates_without_a_store() {
    let files = vec![data("sample-utf8.csv"), data("sample.json")];
    assert!(load::check(&files, &LoadOptions::default(), &NoProgress).expect("valid") > 0);
    let Err(LoadError::Rejected(errors)) = load::check(&[data("bad-rows.csv")], &LoadOptions::default(), &NoProgress)
    else {
        panic!("must be rejected");
    };
    let report = pmh_loader::format_report(&errors);
    let expected = std::fs::read_to_string(data("bad-rows.expected.txt")).expect("expected report");
    // The CLI names files by the path it was given; compare the lines without the file part.
    let strip =
        |s: &str| s.lines().map(|l| l.split_once(": ").map(|x| x.1).unwrap_or(l).to_string()).collect::<Vec<_>>();
    assert_eq!(strip(&report), strip(&expected));
}

#[test]
fn a_prepared_snapshot_installs_like_a_full_load_and_only_under_the_same_secret() {
    let t = tempfile::tempdir().expect("tmp");
    let direct = open(&t.path().join("direct"));
    full(&direct, &["sample-utf8.csv"]).expect("loads");

    // Prepared without any open store (as beside a running server), installed later.
    let prepared = t.path().join("prepared");
    let files = vec![data("sample-utf8.csv")];
    let d = PmhIdDeriver::new(SECRET);
    let tuning = pmh_engine::RocksTuning::default();
    let s = load::prepare(&tuning, &d, &files, &LoadOptions::default(), &prepared, &NoProgress).expect("prepares");
    assert!(s.certificates > 0);
    assert!(prepared.join(load::MANIFEST).exists());
    assert!(matches!(
        load::prepare(&tuning, &d, &files, &LoadOptions::default(), &prepared, &NoProgress),
        Err(LoadError::Usage(_))
    ));

    // Another secret's store refuses it.
    let other =
        StoreConfig { secret_fingerprint: Some(PmhIdDeriver::new(b"another").fingerprint()), ..StoreConfig::default() };
    let foreign = Store::open(t.path().join("foreign"), other).expect("open");
    assert!(matches!(load::install(&foreign, &prepared), Err(LoadError::Usage(_))));
    assert_eq!(foreign.generation(), 0);
    drop(foreign);

    let served = open(&t.path().join("served"));
    assert_eq!(load::install(&served, &prepared).expect("installs"), 1);
    assert_eq!(answers(&served, "sample-utf8.csv", "2026-11-21"), answers(&direct, "sample-utf8.csv", "2026-11-21"));
    assert!(served.verify().expect("verify").is_ok());
}

#[test]
fn chunks_validated_apart_give_exactly_what_parse_csv_gives() {
    for file in ["sample-utf8.csv", "sample-sjis.csv", "sample-diff.csv", "bad-rows.csv"] {
        for encoding in [pmh_loader::Encoding::Auto, pmh_loader::Encoding::Utf8, pmh_loader::Encoding::ShiftJis] {
            let opts = ParseOptions { encoding, municipality: None, file_name: Some(file.into()) };
            let bytes = std::fs::read(data(file)).expect("read");
            let mut whole = Vec::new();
            let a = pmh_loader::parse_csv(&bytes[..], &opts, |r| whole.push(r));
            // Cut into chunks of whole records (down to a byte at a time, so every record
            // is cut at every possible place), validated chunk by chunk.
            for (chunk_bytes, recycle) in [(1, false), (7, true), (100, true), (1 << 20, false)] {
                let done = std::cell::RefCell::new(Vec::new());
                let mut chunked = Vec::new();
                let c = pmh_loader::csv_reader::split_csv_chunks(
                    &bytes[..],
                    &opts,
                    chunk_bytes,
                    || done.borrow_mut().pop(),
                    |batch| {
                        batch.validate(|row, r| chunked.push((row, r)));
                        if recycle {
                            done.borrow_mut().push(batch);
                        }
                    },
                );
                let rows: Vec<usize> = chunked.iter().map(|(row, _)| *row).collect();
                assert_eq!(rows, (1..=rows.len()).collect::<Vec<_>>(), "{file} {encoding:?} chunks of {chunk_bytes}");
                let chunked: Vec<_> = chunked.into_iter().map(|(_, r)| r).collect();
                match (&a, &c) {
                    (Ok(summary), Ok((n, settled))) => {
                        assert_eq!((summary.rows, summary.encoding), (*n, *settled), "{file} {encoding:?}");
                    }
                    (Err(x), Err(y)) => assert_eq!(format!("{x:?}"), format!("{y:?}"), "{file} {encoding:?}"),
                    _ => panic!("{file} {encoding:?} chunks of {chunk_bytes}: {a:?} against {c:?}"),
                }
                assert_eq!(whole, chunked, "{file} {encoding:?} chunks of {chunk_bytes}, recycled {recycle}");
            }
        }
    }
}

#[test]
fn installing_an_incomplete_prepared_directory_changes_nothing() {
    let t = tempfile::tempdir().expect("tmp");
    let store = open(&t.path().join("db"));
    full(&store, &["sample-utf8.csv"]).expect("loads");
    let before = answers(&store, "sample-utf8.csv", "2026-11-21");

    // A prepare killed before its manifest was written: no manifest, nothing installed.
    let no_manifest = t.path().join("no-manifest");
    std::fs::create_dir_all(&no_manifest).expect("mkdir");
    assert!(matches!(load::install(&store, &no_manifest), Err(LoadError::Io { .. })));

    // A manifest whose SST files are gone: the ingest fails, the old snapshot serves.
    let prepared = t.path().join("prepared");
    let d = PmhIdDeriver::new(SECRET);
    let files = vec![data("sample-utf8.csv")];
    load::prepare(&pmh_engine::RocksTuning::default(), &d, &files, &LoadOptions::default(), &prepared, &NoProgress)
        .expect("prepares");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(prepared.join(load::MANIFEST)).expect("manifest")).expect("json");
    let holder_files = manifest["holderFiles"].as_array().expect("holderFiles");
    assert!(!holder_files.is_empty());
    let last = holder_files.last().and_then(|f| f.as_str()).expect("a file name");
    std::fs::remove_file(prepared.join(last)).expect("remove");
    assert!(matches!(load::install(&store, &prepared), Err(LoadError::Io { .. })));

    // A holders file that is no SST file (overwritten, cut short): the ingestion refuses it
    // while the install's second thread reads the files' pages, and the old snapshot serves.
    std::fs::write(prepared.join(last), vec![0x5a; 3 * 4096 + 17]).expect("write");
    match load::install(&store, &prepared) {
        Err(LoadError::Store(_)) => {}
        other => panic!("a damaged holders file must fail the install, got {other:?}"),
    }
    assert_eq!(store.generation(), 1);

    // A snapshot prepared by an older build (block-based holders files) is refused by its
    // format before anything is ingested.
    let mut older = manifest.clone();
    older["format"] = serde_json::json!("pmh-snapshot/2");
    std::fs::write(prepared.join(load::MANIFEST), older.to_string()).expect("write manifest");
    match load::install(&store, &prepared) {
        Err(LoadError::Usage(msg)) => {
            assert!(msg.contains("pmh-snapshot/2") && msg.contains(load::SNAPSHOT_FORMAT), "{msg}");
            assert!(msg.contains("prepare the snapshot again"), "{msg}");
        }
        other => panic!("an older snapshot format must be refused, got {other:?}"),
    }
    // A manifest whose file list is missing or damaged is refused, not installed as a
    // snapshot without those files.
    for damage in [serde_json::json!(null), serde_json::json!("holders-000.sst"), serde_json::json!(["a.sst", 7])] {
        let mut bad = manifest.clone();
        if damage.is_null() {
            bad.as_object_mut().expect("an object").remove("holderFiles");
        } else {
            bad["holderFiles"] = damage;
        }
        std::fs::write(prepared.join(load::MANIFEST), bad.to_string()).expect("write manifest");
        match load::install(&store, &prepared) {
            Err(LoadError::Usage(msg)) => assert!(msg.contains("`holderFiles` must be a list of file names"), "{msg}"),
            other => panic!("a damaged file list must be refused, got {other:?}"),
        }
    }

    assert_eq!(store.generation(), 1);
    assert_eq!(answers(&store, "sample-utf8.csv", "2026-11-21"), before);
    assert!(store.verify().expect("verify").is_ok());
}

/// Writes `files` CSV files holding `people` people with 1–4 certificates each, a person's
/// certificates scattered over the files and far apart in each, so that a full load must
/// bring them together from different rows, runs and workers. Returns the files and every
/// (My Number, history key) written.
fn scattered_people(dir: &Path, people: u32, files: usize) -> (Vec<PathBuf>, Vec<(String, String)>) {
    use pmh_engine::ids::make;
    let header = "municipalityCode,orgSpecificCertificateTypeId,myNumber,basicFiveInfo.name,isNotDisclosed,\
        medicalSubsidyInsurerNumber,certificationName,medicalSubsidyRecipientNumber,validFrom,validTo,historyKey,\
        isDeleted,designatedMedicalInstitutions";
    let mut bodies = vec![String::new(); files];
    let mut written = Vec::new();
    // Certificate j of every person, then certificate j + 1 of every person, …
    for j in 0..4u32 {
        for p in 0..people {
            if j > p % 4 {
                continue;
            }
            let my = make::my_number(u64::from(p) * 7_919 + 11);
            let muni = make::municipality_code(13_101 + (p + j) % 20);
            let insurer = make::insurer_number(54, 13, (p % 1000) as u16);
            let recipient = make::national_recipient_number(p * 4 + j);
            let history = format!("H{p}-{j}");
            let f = ((p + j) as usize) % files;
            bodies[f].push_str(&format!(
                "{muni},T{j},{my},受給者{p},0,{insurer},難病,{recipient},2026-04-01,2027-03-31,{history},0,1311234569\n"
            ));
            written.push((my, history));
        }
    }
    let paths = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let path = dir.join(format!("scattered-{i}.csv"));
            std::fs::write(&path, format!("{header}\n{body}")).expect("write");
            path
        })
        .collect();
    (paths, written)
}

/// Each person's (history keys, names) as a consented lookup answers them.
fn lookups(store: &Store, numbers: &[String]) -> Vec<(String, Vec<(String, String)>)> {
    let deriver = PmhIdDeriver::new(SECRET);
    let client = store.register_client("test");
    let mut out = Vec::new();
    for n in numbers {
        let id = deriver.derive(&pmh_engine::MyNumber::parse(n).expect("my number"));
        store.grant_consent(&id, clinic(), unix_now()).expect("grant");
        let Lookup::Answered(e) =
            store.lookup(client, &id, clinic(), Date::parse("2026-11-21").expect("date")).expect("lookup")
        else {
            panic!("consent was granted");
        };
        let mut certs: Vec<(String, String)> = e
            .certificates()
            .map(|c| (c.certificate.history_key.to_string(), c.certificate.basic_five_info.name.to_string()))
            .collect();
        certs.sort();
        out.push((n.clone(), certs));
    }
    out
}

#[test]
fn scattered_people_load_the_same_whatever_the_runs_and_key_ranges() {
    let t = tempfile::tempdir().expect("tmp");
    let (files, written) = scattered_people(t.path(), 400, 3);
    let mut numbers: Vec<String> = written.iter().map(|(n, _)| n.clone()).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 400);

    // The reference: the engine's in-memory snapshot builder, from the same parsed rows.
    let reference = open(&t.path().join("reference"));
    let deriver = PmhIdDeriver::new(SECRET);
    let mut records = Vec::new();
    for f in &files {
        let rows = parse_all(Format::Csv, std::fs::File::open(f).expect("open"), &ParseOptions::default())
            .expect("generated rows are valid");
        records.extend(rows.into_iter().map(|r| (deriver.derive(&r.pmh_source), r.certificate)));
    }
    reference.load_snapshot(records, &t.path().join("reference-staging")).expect("reference loads");
    let want = lookups(&reference, &numbers);
    assert_eq!(want.iter().map(|(_, c)| c.len()).sum::<usize>(), written.len());

    // One thread or several; everything in one run, or a run every few certificates.
    for (threads, budget) in [(1, 512 << 20), (2, 512 << 20), (3, 4096), (2, 64 << 10)] {
        let dir = t.path().join(format!("store-{threads}-{budget}"));
        let store = open(&dir);
        let opts = LoadOptions { threads, sort_budget_bytes: budget, ..LoadOptions::default() };
        let s = load::full(&store, &deriver, &files, &opts, &NoProgress).expect("loads");
        assert_eq!((s.certificates, s.holders), (written.len() as u64, 400), "{threads} threads, budget {budget}");
        assert_eq!(lookups(&store, &numbers), want, "{threads} threads, budget {budget}");
        assert!(store.verify().expect("verify").is_ok());
    }
}
