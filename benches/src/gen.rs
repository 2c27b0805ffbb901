//! `pmh-bench gen`: deterministic synthetic nationwide upload files — a full file (or
//! several, split by person ranges), a differential file against it, and a manifest of
//! what was written — in the formats of `docs/file-formats.md`, so that loader tests and
//! load benchmarks have realistic input of any size.
//!
//! ## What is written
//! - `full.csv` / `full.json` (`full-000.csv` … with [`GenConfig::files`] > 1): every
//!   certificate of persons `0..persons` ([`Population::person`]), one record per
//!   certificate, every column filled the way [`crate::synth`] makes it.
//! - `diff.csv` / `diff.json`: [`diff_plan`] — for [`GenConfig::diff_share`] percent of the
//!   persons, an update (same identity, `maxCopaymentAmount.monthly` or `validTo`
//!   changed), an insert (a renewal with a new history key, or — one insert in five — a
//!   brand-new person numbered from `persons` upward, all of whose certificates are
//!   inserted) or a delete (`isDeleted` = 1 on an identity of the full file), about
//!   60/25/15. No identity appears twice in the diff.
//! - `manifest.json`: the [`Manifest`]: the settings and what every file holds.
//!
//! ## Encodings and values
//! UTF-8 files have LF line ends and no BOM; Shift_JIS (CP932) files have CRLF line ends
//! and carry 氏名カナ in half-width katakana (`ﾜﾀﾅﾍﾞ ﾊﾙﾄ`), as files exported from Excel
//! and older municipal systems do; the loader normalises it to full width. UTF-8 files
//! write the kana full-width with an ideographic space (U+3000), which is exactly the form
//! the loader stores. [`crate::synth`] writes the kana with an ASCII space, so the
//! certificate the loader returns differs from synth's in that one respect: the space in
//! 氏名カナ is U+3000 ([`loaded_form`] applies that normalisation).
//!
//! JSON is always UTF-8 (the loader refuses Shift_JIS JSON, and so does the generator);
//! the header language applies to CSV only. Booleans are written `1`/`0` in CSV and
//! `true`/`false` in JSON; amounts as digits (JSON numbers); identifiers zero-padded
//! (JSON strings). A CSV field is quoted only when it holds `,` `"` CR or LF. A value that
//! the CSV list syntax cannot carry (a `;` inside a list item, a `-` in an
//! additionalConditions item, a `=` in a face-item name) is an error rather than a file
//! that would not load back.
//!
//! ## Speed
//! Each file streams through an 8 MiB `BufWriter`; a record is built in one reused
//! `String` (numbers and dates written digit by digit, no per-field allocation) and, for
//! Shift_JIS, encoded into one reused `Vec<u8>` (by `encoding_rs`, memoised per
//! character). The cost per record is dominated by [`Population::person`] itself. Files
//! are written by up to [`GenConfig::threads`] threads (one file per thread at a time; the
//! diff is one more job); the output does not depend on the thread count.
//!
//! Same configuration (seed, date, persons, …), byte-identical files.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use pmh_engine::Date;
use pmh_engine::record::Certificate;
use pmh_loader::{Encoding, Format};

use crate::synth::{Population, Rng};

/// Output buffer of each file.
const BUFFER: usize = 8 << 20;

/// Persons must stay below this so that brand-new diff persons still get distinct My
/// Numbers (synth's numbering is a bijection below 10¹¹).
pub const MAX_PERSONS: u64 = 90_000_000_000;

/// Salt of the diff's random stream (distinct from the population's `Rng::new(seed, i)`).
const DIFF_SALT: u64 = 0xD1FF_5EED_0BAD_CAFE;

/// Language of the CSV header row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderLanguage {
    /// API names (`municipalityCode`, `basicFiveInfo.name`, …).
    #[default]
    English,
    /// The Japanese names of design §4 (`自治体コード`, `氏名`, `負担率（日）`, …).
    Japanese,
}

impl HeaderLanguage {
    /// `english` or `japanese`.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderLanguage::English => "english",
            HeaderLanguage::Japanese => "japanese",
        }
    }
}

impl FromStr for HeaderLanguage {
    type Err = String;

    fn from_str(s: &str) -> Result<HeaderLanguage, String> {
        match s.to_ascii_lowercase().as_str() {
            "english" | "en" => Ok(HeaderLanguage::English),
            "japanese" | "ja" | "jp" => Ok(HeaderLanguage::Japanese),
            _ => Err(format!("unknown header language {s:?}: expected english or japanese")),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Persons `0..persons` in the full file(s).
    pub persons: u64,
    /// Seed of the population and of the diff.
    pub seed: u64,
    /// The date certificates are valid around ([`Population::today`]).
    pub date: Date,
    /// CSV or JSON.
    pub format: Format,
    /// UTF-8 or Shift_JIS (CSV only); [`Encoding::Auto`] is refused.
    pub encoding: Encoding,
    /// CSV header language.
    pub header: HeaderLanguage,
    /// Percent (0–100) of persons the diff touches.
    pub diff_share: f64,
    /// Number of full files (split by person ranges); 1 writes `full.csv`.
    pub files: usize,
    /// Writer threads; 0 means one per available core.
    pub threads: usize,
}

impl GenConfig {
    /// Defaults: seed 1, CSV, UTF-8, English header, 1 % diff, one file, all cores.
    pub fn new(persons: u64, date: Date) -> GenConfig {
        GenConfig {
            persons,
            seed: 1,
            date,
            format: Format::Csv,
            encoding: Encoding::Utf8,
            header: HeaderLanguage::English,
            diff_share: 1.0,
            files: 1,
            threads: 0,
        }
    }

    /// Refuses settings that cannot produce loadable, distinct data.
    pub fn check(&self) -> io::Result<()> {
        let bad = |m: String| Err(io::Error::new(io::ErrorKind::InvalidInput, m));
        if self.persons > MAX_PERSONS {
            return bad(format!("--persons must be at most {MAX_PERSONS}"));
        }
        if self.files == 0 {
            return bad("--files must be at least 1".into());
        }
        if !(self.diff_share.is_finite() && (0.0..=100.0).contains(&self.diff_share)) {
            return bad(format!("--diff-share must be a percentage from 0 to 100, got {}", self.diff_share));
        }
        match (self.format, self.encoding) {
            (_, Encoding::Auto) => bad("choose an output encoding: utf-8 or shift_jis".into()),
            (Format::Json, Encoding::ShiftJis) => {
                bad("JSON files are UTF-8 only (the loader refuses Shift_JIS JSON); use --format csv".into())
            }
            _ => Ok(()),
        }
    }

    fn extension(&self) -> &'static str {
        match self.format {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }

    /// The name of full file `k`.
    pub fn full_file_name(&self, k: usize) -> String {
        if self.files == 1 { format!("full.{}", self.extension()) } else { format!("full-{k:03}.{}", self.extension()) }
    }

    /// The name of the diff file.
    pub fn diff_file_name(&self) -> String {
        format!("diff.{}", self.extension())
    }

    /// Persons of full file `k`: `start..end`.
    pub fn person_range(&self, k: usize) -> (u64, u64) {
        let part = |k: usize| (u128::from(self.persons) * k as u128 / self.files as u128) as u64;
        (part(k), part(k + 1))
    }

    /// The diff share in parts per million.
    fn diff_ppm(&self) -> u64 {
        (self.diff_share * 10_000.0).round() as u64
    }
}

/// One full file as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// File name inside the output directory.
    pub name: String,
    /// First person.
    pub first_person: u64,
    /// One past the last person.
    pub end_person: u64,
    /// Records (certificates) written.
    pub certificates: u64,
    /// File size.
    pub bytes: u64,
}

/// The diff file as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiffReport {
    /// File name inside the output directory.
    pub name: String,
    /// Records written (`updated + inserted + deleted`).
    pub rows: u64,
    /// File size.
    pub bytes: u64,
    /// Persons of the full files the diff touches.
    pub touched_persons: u64,
    /// Update records (identity in the full files, content changed).
    pub updated: u64,
    /// Insert records (identity new: renewals of existing persons and every certificate
    /// of the brand-new persons).
    pub inserted: u64,
    /// Delete records (`isDeleted` = 1 on an identity of the full files).
    pub deleted: u64,
    /// Brand-new persons, numbered `persons..persons + new_persons`.
    pub new_persons: u64,
    /// Certificates of the brand-new persons (included in `inserted`).
    pub new_person_certificates: u64,
}

/// What `gen` wrote (`manifest.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The settings.
    pub config: GenConfig,
    /// The full files, in person order.
    pub full: Vec<FileReport>,
    /// The diff file.
    pub diff: DiffReport,
}

impl Manifest {
    /// Certificates over all full files.
    pub fn full_certificates(&self) -> u64 {
        self.full.iter().map(|f| f.certificates).sum()
    }

    /// Records over all files.
    pub fn total_rows(&self) -> u64 {
        self.full_certificates() + self.diff.rows
    }

    /// Bytes over all data files (the manifest not counted).
    pub fn total_bytes(&self) -> u64 {
        self.full.iter().map(|f| f.bytes).sum::<u64>() + self.diff.bytes
    }

    /// The manifest as JSON (what `manifest.json` holds).
    pub fn to_json(&self) -> String {
        let c = &self.config;
        let mut s = String::with_capacity(1024 + 160 * self.full.len());
        s.push_str("{\n");
        s.push_str(&format!("  \"persons\": {},\n", c.persons));
        s.push_str(&format!("  \"seed\": {},\n", c.seed));
        s.push_str(&format!("  \"date\": \"{}\",\n", c.date));
        s.push_str(&format!("  \"format\": \"{}\",\n", c.extension()));
        s.push_str(&format!("  \"encoding\": \"{}\",\n", c.encoding.as_str()));
        match c.format {
            Format::Csv => s.push_str(&format!("  \"header\": \"{}\",\n", c.header.as_str())),
            Format::Json => s.push_str("  \"header\": null,\n"),
        }
        let eol = if c.format == Format::Csv && c.encoding == Encoding::ShiftJis { "crlf" } else { "lf" };
        s.push_str(&format!("  \"lineEnding\": \"{eol}\",\n"));
        s.push_str(&format!("  \"diffSharePercent\": {},\n", c.diff_share));
        s.push_str(&format!("  \"fullCertificates\": {},\n", self.full_certificates()));
        s.push_str("  \"full\": [\n");
        for (k, f) in self.full.iter().enumerate() {
            s.push_str(&format!(
                "    {{\"file\": \"{}\", \"firstPerson\": {}, \"endPerson\": {}, \"certificates\": {}, \"bytes\": {}}}{}\n",
                f.name,
                f.first_person,
                f.end_person,
                f.certificates,
                f.bytes,
                if k + 1 < self.full.len() { "," } else { "" }
            ));
        }
        s.push_str("  ],\n");
        let d = &self.diff;
        s.push_str("  \"diff\": {\n");
        s.push_str(&format!("    \"file\": \"{}\",\n", d.name));
        s.push_str(&format!("    \"rows\": {},\n", d.rows));
        s.push_str(&format!("    \"bytes\": {},\n", d.bytes));
        s.push_str(&format!("    \"touchedPersons\": {},\n", d.touched_persons));
        s.push_str(&format!("    \"updated\": {},\n", d.updated));
        s.push_str(&format!("    \"inserted\": {},\n", d.inserted));
        s.push_str(&format!("    \"deleted\": {},\n", d.deleted));
        s.push_str(&format!("    \"newPersons\": {},\n", d.new_persons));
        s.push_str(&format!("    \"firstNewPerson\": {},\n", c.persons));
        s.push_str(&format!("    \"newPersonCertificates\": {}\n", d.new_person_certificates));
        s.push_str("  }\n}\n");
        s
    }
}

/// What a diff record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffKind {
    /// Same identity as a full-file record, content changed.
    Update,
    /// A new identity.
    Insert,
    /// `isDeleted` = 1 on a full-file identity.
    Delete,
}

/// One record of the diff.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffRow {
    /// Update, insert or delete.
    pub kind: DiffKind,
    /// The synthetic person (`>= persons` for a brand-new person).
    pub person: u64,
    /// Their My Number.
    pub my_number: String,
    /// The certificate written (for a delete: the full file's, unchanged).
    pub certificate: Certificate,
}

/// The diff's records, in file order: deterministic for the configuration. Persons are
/// visited in order; a touched person contributes one record, or — when the insert is a
/// brand-new person — every certificate of that person.
pub fn diff_plan(cfg: &GenConfig) -> DiffPlan {
    DiffPlan {
        pop: Population::new(cfg.seed, cfg.date),
        seed: cfg.seed,
        persons: cfg.persons,
        ppm: cfg.diff_ppm(),
        next: 0,
        next_new: cfg.persons,
        pending: VecDeque::new(),
        touched: 0,
    }
}

/// Iterator over the diff's records (see [`diff_plan`]).
#[derive(Debug, Clone)]
pub struct DiffPlan {
    pop: Population,
    seed: u64,
    persons: u64,
    ppm: u64,
    next: u64,
    next_new: u64,
    pending: VecDeque<DiffRow>,
    touched: u64,
}

impl DiffPlan {
    /// Persons of the full files touched so far.
    pub fn touched_persons(&self) -> u64 {
        self.touched
    }

    /// Brand-new persons so far (numbered from `persons`).
    pub fn new_persons(&self) -> u64 {
        self.next_new - self.persons
    }

    /// Plans the records for person `i`, if touched.
    fn visit(&mut self, i: u64) {
        let mut r = Rng::new(self.seed ^ DIFF_SALT, i);
        if r.below(1_000_000) >= self.ppm {
            return;
        }
        self.touched += 1;
        let action = r.below(100);
        if (60..85).contains(&action) && r.percent(20) {
            // A brand-new person: every certificate is an insert.
            let j = self.next_new;
            self.next_new += 1;
            let p = self.pop.person(j);
            for c in p.certificates {
                self.pending.push_back(DiffRow {
                    kind: DiffKind::Insert,
                    person: j,
                    my_number: p.my_number.clone(),
                    certificate: c,
                });
            }
            return;
        }
        let p = self.pop.person(i);
        let n = p.certificates.len() as u64;
        let row = if action < 60 {
            let k = r.below(n) as usize;
            let mut c = p.certificates[k].clone();
            if r.percent(50) {
                const LEVELS: [u32; 5] = [0, 2_500, 5_000, 10_000, 20_000];
                let choices: Vec<u32> =
                    LEVELS.iter().copied().filter(|&v| Some(v) != c.max_copayment_amount.monthly).collect();
                c.max_copayment_amount.monthly = Some(choices[r.below(choices.len() as u64) as usize]);
            } else {
                // An extension by a year.
                c.valid_to += 365;
            }
            DiffRow { kind: DiffKind::Update, person: i, my_number: p.my_number, certificate: c }
        } else if action < 85 {
            // A renewal of the current certificate: the next period, a new history key.
            let mut c = p.certificates[0].clone();
            c.history_key = format!("{i:011}-{n}");
            c.valid_from = c.valid_to + 1;
            c.valid_to = c.valid_from + 364;
            DiffRow { kind: DiffKind::Insert, person: i, my_number: p.my_number, certificate: c }
        } else {
            let k = r.below(n) as usize;
            let c = p.certificates[k].clone();
            DiffRow { kind: DiffKind::Delete, person: i, my_number: p.my_number, certificate: c }
        };
        self.pending.push_back(row);
    }
}

impl Iterator for DiffPlan {
    type Item = DiffRow;

    fn next(&mut self) -> Option<DiffRow> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(r);
            }
            if self.next >= self.persons {
                return None;
            }
            let i = self.next;
            self.next += 1;
            self.visit(i);
        }
    }
}

/// A certificate as the loader returns it after reading a generated file: 氏名カナ with
/// its spaces as U+3000 (the loader's normalisation; synth writes an ASCII space).
pub fn loaded_form(c: &Certificate) -> Certificate {
    let mut c = c.clone();
    c.basic_five_info.name_kana = c.basic_five_info.name_kana.replace(' ', "\u{3000}");
    c
}

/// Writes the full file(s), the diff and `manifest.json` into `out` (created if needed).
pub fn generate(out: &Path, cfg: &GenConfig) -> io::Result<Manifest> {
    cfg.check()?;
    std::fs::create_dir_all(out)?;
    let jobs = cfg.files + 1;
    let threads = match cfg.threads {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        t => t,
    }
    .min(jobs);
    let next = AtomicUsize::new(0);
    let full: Mutex<Vec<Option<FileReport>>> = Mutex::new(vec![None; cfg.files]);
    let diff: Mutex<Option<DiffReport>> = Mutex::new(None);
    let worker = || -> io::Result<()> {
        loop {
            let job = next.fetch_add(1, Ordering::Relaxed);
            if job > cfg.files {
                return Ok(());
            }
            // The diff first: it is the shortest job when there is one thread per file.
            if job == 0 {
                let d = write_diff(out, cfg)?;
                *diff.lock().map_err(|_| io::Error::other("poisoned"))? = Some(d);
            } else {
                let k = job - 1;
                let f = write_full(out, cfg, k)?;
                full.lock().map_err(|_| io::Error::other("poisoned"))?[k] = Some(f);
            }
        }
    };
    if threads <= 1 {
        worker()?;
    } else {
        std::thread::scope(|s| -> io::Result<()> {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
            for h in handles {
                h.join().map_err(|_| io::Error::other("a writer thread panicked"))??;
            }
            Ok(())
        })?;
    }
    let full = full.into_inner().map_err(|_| io::Error::other("poisoned"))?;
    let full =
        full.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| io::Error::other("a file was not written"))?;
    let diff = diff
        .into_inner()
        .map_err(|_| io::Error::other("poisoned"))?
        .ok_or_else(|| io::Error::other("the diff was not written"))?;
    let manifest = Manifest { config: cfg.clone(), full, diff };
    std::fs::write(out.join("manifest.json"), manifest.to_json())?;
    Ok(manifest)
}

fn write_full(out: &Path, cfg: &GenConfig, k: usize) -> io::Result<FileReport> {
    let name = cfg.full_file_name(k);
    let (first, end) = cfg.person_range(k);
    let pop = Population::new(cfg.seed, cfg.date);
    let mut w = RecordWriter::create(&out.join(&name), cfg)?;
    for i in first..end {
        let p = pop.person(i);
        for c in &p.certificates {
            w.write(&p.my_number, c, false)?;
        }
    }
    let (certificates, bytes) = w.finish()?;
    Ok(FileReport { name, first_person: first, end_person: end, certificates, bytes })
}

fn write_diff(out: &Path, cfg: &GenConfig) -> io::Result<DiffReport> {
    let name = cfg.diff_file_name();
    let mut w = RecordWriter::create(&out.join(&name), cfg)?;
    let mut plan = diff_plan(cfg);
    let mut d = DiffReport::default();
    for row in plan.by_ref() {
        match row.kind {
            DiffKind::Update => d.updated += 1,
            DiffKind::Insert => d.inserted += 1,
            DiffKind::Delete => d.deleted += 1,
        }
        if row.person >= cfg.persons {
            d.new_person_certificates += 1;
        }
        w.write(&row.my_number, &row.certificate, row.kind == DiffKind::Delete)?;
    }
    let (rows, bytes) = w.finish()?;
    d.name = name;
    d.rows = rows;
    d.bytes = bytes;
    d.touched_persons = plan.touched_persons();
    d.new_persons = plan.new_persons();
    Ok(d)
}

/// CSV columns: API name and Japanese name, in the order of `docs/file-formats.md`.
pub const COLUMNS: [(&str, &str); 34] = [
    ("municipalityCode", "自治体コード"),
    ("orgSpecificCertificateTypeId", "機関別受給者証種別ID"),
    ("myNumber", "個人番号"),
    ("basicFiveInfo.name", "氏名"),
    ("basicFiveInfo.nameKana", "氏名カナ"),
    ("basicFiveInfo.address", "住所"),
    ("basicFiveInfo.dateOfBirth", "生年月日"),
    ("basicFiveInfo.sex", "性別"),
    ("isNotDisclosed", "不開示フラグ"),
    ("medicalSubsidyInsurerNumber", "公費負担者番号"),
    ("certificationName", "受給者証名"),
    ("medicalSubsidyRecipientNumber", "公費受給者番号"),
    ("certificationSubKey", "受給者証サブキー"),
    ("segment", "区分"),
    ("incomeSegment", "所得区分"),
    ("additionalConditions", "追加条件"),
    ("designatedMedicalInstitutions", "指定医療機関情報"),
    ("isAlwaysReimbursement", "常に償還払い"),
    ("copayment.category", "種別"),
    ("copayment.burdenDefinition", "負担定義"),
    ("copayment.ratePerDay", "負担率（日）"),
    ("copayment.ratePerMonth", "負担率（月）"),
    ("copayment.ratePerVisit", "負担率（回）"),
    ("copayment.amountPerDay", "金額（日）"),
    ("copayment.amountPerMonth", "金額（月）"),
    ("copayment.amountPerVisit", "金額（回）"),
    ("maxCopaymentAmount.monthly", "自己負担上限額"),
    ("maxCopaymentAmount.perVisit", "自己負担上限額（回）"),
    ("maxCopaymentAmount.inpatientMonthly", "自己負担上限額（入院）"),
    ("validFrom", "有効期間始期"),
    ("validTo", "有効期間終期"),
    ("historyKey", "履歴キー"),
    ("isDeleted", "削除フラグ"),
    ("certificationDetail", "受給者証券面項目"),
];

/// Streams records of one file.
struct RecordWriter {
    out: BufWriter<File>,
    format: Format,
    sjis: bool,
    eol: &'static str,
    /// The record being built (UTF-8).
    row: String,
    /// The record encoded as Shift_JIS.
    encoded: Vec<u8>,
    sjis_table: SjisEncoder,
    rows: u64,
    bytes: u64,
}

impl RecordWriter {
    fn create(path: &Path, cfg: &GenConfig) -> io::Result<RecordWriter> {
        let file = File::create(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let sjis = cfg.encoding == Encoding::ShiftJis;
        let mut w = RecordWriter {
            out: BufWriter::with_capacity(BUFFER, file),
            format: cfg.format,
            sjis,
            eol: if sjis { "\r\n" } else { "\n" },
            row: String::with_capacity(2048),
            encoded: Vec::with_capacity(4096),
            sjis_table: SjisEncoder::default(),
            rows: 0,
            bytes: 0,
        };
        match cfg.format {
            Format::Csv => {
                for (k, (en, ja)) in COLUMNS.iter().enumerate() {
                    if k > 0 {
                        w.row.push(',');
                    }
                    w.row.push_str(if cfg.header == HeaderLanguage::Japanese { ja } else { en });
                }
                w.row.push_str(w.eol);
            }
            Format::Json => w.row.push('['),
        }
        w.emit()?;
        Ok(w)
    }

    /// Writes one record.
    fn write(&mut self, my_number: &str, c: &Certificate, deleted: bool) -> io::Result<()> {
        self.row.clear();
        match self.format {
            Format::Csv => csv_record(&mut self.row, my_number, c, deleted, self.sjis)?,
            Format::Json => {
                self.row.push_str(if self.rows == 0 { "\n" } else { ",\n" });
                json_record(&mut self.row, my_number, c, deleted);
            }
        }
        if self.format == Format::Csv {
            self.row.push_str(self.eol);
        }
        self.emit()?;
        self.rows += 1;
        Ok(())
    }

    /// Writes `row` out in the file's encoding.
    fn emit(&mut self) -> io::Result<()> {
        if !self.sjis || self.row.is_ascii() {
            self.out.write_all(self.row.as_bytes())?;
            self.bytes += self.row.len() as u64;
            return Ok(());
        }
        self.encoded.clear();
        self.sjis_table.encode(&self.row, &mut self.encoded)?;
        self.out.write_all(&self.encoded)?;
        self.bytes += self.encoded.len() as u64;
        Ok(())
    }

    /// Ends the file; returns (records, bytes).
    fn finish(mut self) -> io::Result<(u64, u64)> {
        if self.format == Format::Json {
            self.row.clear();
            self.row.push_str("\n]\n");
            self.emit()?;
        }
        self.out.flush()?;
        Ok((self.rows, self.bytes))
    }
}

/// Shift_JIS (CP932) through `encoding_rs`, one character at a time, memoised per code
/// point: records use a few hundred distinct characters, and encoding_rs's CJK encoder
/// (built for size, not speed) searches its index for every kanji. Shift_JIS is stateless,
/// so encoding character by character gives exactly the bytes of encoding the whole text.
#[derive(Default)]
struct SjisEncoder {
    /// Per BMP code point (allocated on first use): 0 not seen yet, below 0x100 a one-byte
    /// code, otherwise `lead << 8 | trail`.
    table: Vec<u16>,
}

impl SjisEncoder {
    fn encode(&mut self, text: &str, out: &mut Vec<u8>) -> io::Result<()> {
        if self.table.is_empty() {
            self.table = vec![0; 0x1_0000];
        }
        out.reserve(text.len());
        for c in text.chars() {
            if c.is_ascii() {
                out.push(c as u8);
                continue;
            }
            let cp = c as usize;
            let code = match self.table.get(cp) {
                Some(&v) if v != 0 => v,
                _ => {
                    let v = sjis_char(c)?;
                    if let Some(slot) = self.table.get_mut(cp) {
                        *slot = v;
                    }
                    v
                }
            };
            if code < 0x100 {
                out.push(code as u8);
            } else {
                out.extend_from_slice(&code.to_be_bytes());
            }
        }
        Ok(())
    }
}

/// The Shift_JIS (CP932) code of one character, by `encoding_rs`.
fn sjis_char(c: char) -> io::Result<u16> {
    let mut buf = [0u8; 4];
    let (bytes, _, unmappable) = encoding_rs::SHIFT_JIS.encode(c.encode_utf8(&mut buf));
    match (unmappable, &bytes[..]) {
        (false, [b]) if *b != 0 => Ok(u16::from(*b)),
        (false, [lead, trail]) => Ok(u16::from_be_bytes([*lead, *trail])),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("'{c}' (U+{:04X}) has no Shift_JIS (CP932) encoding", c as u32),
        )),
    }
}

/// Appends `v` in decimal, zero-padded to `width` digits.
fn push_num(s: &mut String, v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    // Only ASCII digits were written.
    s.push_str(std::str::from_utf8(&buf[start..]).unwrap_or("0"));
}

/// Appends a date as `YYYY-MM-DD`.
fn push_date(s: &mut String, days: i32) {
    let (y, m, d) = Date::from_days(days).ymd();
    push_num(s, y.max(0) as u64, 4);
    s.push('-');
    push_num(s, u64::from(m), 2);
    s.push('-');
    push_num(s, u64::from(d), 2);
}

/// Half-width katakana (U+FF66..=U+FF9D) in code-point order, and their full-width forms.
const HALF: &str = "ｦｧｨｩｪｫｬｭｮｯｰｱｲｳｴｵｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄﾅﾆﾇﾈﾉﾊﾋﾌﾍﾎﾏﾐﾑﾒﾓﾔﾕﾖﾗﾘﾙﾚﾛﾜﾝ";
const FULL: &str =
    "ヲァィゥェォャュョッーアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン";

/// The half-width form of one full-width katakana (U+30A0..=U+30FF only).
fn half_of(c: char) -> Option<char> {
    static TABLE: OnceLock<[Option<char>; 0x60]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [None; 0x60];
        for (f, h) in FULL.chars().zip(HALF.chars()) {
            t[f as usize - 0x30A0] = Some(h);
        }
        t
    });
    (c as usize).checked_sub(0x30A0).and_then(|k| table.get(k).copied().flatten())
}

/// Appends full-width katakana as half-width (`ガ` → `ｶﾞ`, `パ` → `ﾊﾟ`, `ヴ` → `ｳﾞ`, spaces
/// as ASCII spaces), as Excel-made Shift_JIS files carry 氏名カナ. Characters with no
/// half-width form (`ヵ`, `ヶ`, `ヮ`, …) are kept as they are.
pub fn push_half_width_kana(s: &mut String, kana: &str) {
    for c in kana.chars() {
        if c == ' ' || c == '\u{3000}' {
            s.push(' ');
        } else if c == '・' {
            s.push('･');
        } else if let Some(h) = half_of(c) {
            s.push(h);
        } else if c == 'ヴ' {
            s.push_str("ｳﾞ");
        } else if let Some(h) =
            (c as u32).checked_sub(1).and_then(char::from_u32).filter(|b| voiceable(*b)).and_then(half_of)
        {
            s.push(h);
            s.push('ﾞ');
        } else if let Some(h) = (c as u32)
            .checked_sub(2)
            .and_then(char::from_u32)
            .filter(|b| matches!(b, 'ハ' | 'ヒ' | 'フ' | 'ヘ' | 'ホ'))
            .and_then(half_of)
        {
            s.push(h);
            s.push('ﾟ');
        } else {
            s.push(c);
        }
    }
}

/// Kana whose code point + 1 is its voiced form (カ→ガ … ホ→ボ).
fn voiceable(c: char) -> bool {
    "カキクケコサシスセソタチツテトハヒフヘホ".contains(c)
}

/// Appends full-width katakana with full-width spaces (the loader's stored form).
fn push_full_width_kana(s: &mut String, kana: &str) {
    for c in kana.chars() {
        s.push(if c == ' ' { '\u{3000}' } else { c });
    }
}

/// Quotes the CSV field that starts at byte `start` of `s` if it needs it.
fn end_field(s: &mut String, start: usize) {
    if s.as_bytes()[start..].iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        let field = s.split_off(start);
        s.push('"');
        for c in field.chars() {
            if c == '"' {
                s.push('"');
            }
            s.push(c);
        }
        s.push('"');
    }
}

fn csv_text(s: &mut String, v: &str) {
    let start = s.len();
    s.push_str(v);
    end_field(s, start);
}

fn csv_opt_num(s: &mut String, v: Option<u64>) {
    if let Some(v) = v {
        push_num(s, v, 1);
    }
}

fn bit(b: bool) -> char {
    if b { '1' } else { '0' }
}

/// A list item the CSV list syntax cannot carry.
fn list_error(column: &str, item: &str, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{column}: item {item:?} {what}: cannot be written to CSV"))
}

fn check_item(column: &str, item: &str, forbidden: &[char]) -> io::Result<()> {
    match item.chars().find(|c| *c == ';' || forbidden.contains(c)) {
        Some(c) => Err(list_error(column, item, &format!("contains '{c}'"))),
        None => Ok(()),
    }
}

/// One CSV record (without its line end), in [`COLUMNS`] order.
fn csv_record(s: &mut String, my_number: &str, c: &Certificate, deleted: bool, half_kana: bool) -> io::Result<()> {
    let b = &c.basic_five_info;
    push_num(s, u64::from(c.municipality_code), 6);
    s.push(',');
    csv_text(s, &c.org_specific_certificate_type_id);
    s.push(',');
    s.push_str(my_number);
    s.push(',');
    csv_text(s, &b.name);
    s.push(',');
    let start = s.len();
    if half_kana {
        push_half_width_kana(s, &b.name_kana);
    } else {
        push_full_width_kana(s, &b.name_kana);
    }
    end_field(s, start);
    s.push(',');
    csv_text(s, &b.address);
    s.push(',');
    if let Some(d) = b.date_of_birth {
        push_date(s, d);
    }
    s.push(',');
    push_num(s, u64::from(b.sex), 1);
    s.push(',');
    s.push(bit(c.is_not_disclosed));
    s.push(',');
    push_num(s, u64::from(c.medical_subsidy_insurer_number), 8);
    s.push(',');
    csv_text(s, &c.certification_name);
    s.push(',');
    csv_text(s, &c.medical_subsidy_recipient_number);
    for v in [&c.certification_sub_key, &c.segment, &c.income_segment] {
        s.push(',');
        if let Some(v) = v {
            csv_text(s, v);
        }
    }
    s.push(',');
    let start = s.len();
    for (k, a) in c.additional_conditions.iter().enumerate() {
        check_item("additionalConditions", &a.item, &['-'])?;
        check_item("additionalConditions", &a.code, &[])?;
        if k > 0 {
            s.push(';');
        }
        s.push_str(&a.item);
        s.push('-');
        s.push_str(&a.code);
    }
    end_field(s, start);
    s.push(',');
    let start = s.len();
    for (k, d) in c.designated_medical_institutions.iter().enumerate() {
        if k > 0 {
            s.push(';');
        }
        push_num(s, d.code, 10);
        if let Some(n) = &d.name {
            check_item("designatedMedicalInstitutions", n, &[])?;
            s.push(':');
            s.push_str(n);
        }
    }
    end_field(s, start);
    s.push(',');
    s.push(bit(c.is_always_reimbursement));
    // Copay rules, position by position; a column with no value in any rule stays empty.
    let texts: [fn(&pmh_engine::record::Copayment) -> &str; 2] = [|r| &r.category, |r| &r.burden_definition];
    for get in texts {
        s.push(',');
        let start = s.len();
        for (k, r) in c.copayment.iter().enumerate() {
            check_item("copayment", get(r), &[])?;
            if k > 0 {
                s.push(';');
            }
            s.push_str(get(r));
        }
        end_field(s, start);
    }
    type Num = fn(&pmh_engine::record::Copayment) -> Option<u64>;
    let nums: [Num; 6] = [
        |r| r.rate_per_day.map(u64::from),
        |r| r.rate_per_month.map(u64::from),
        |r| r.rate_per_visit.map(u64::from),
        |r| r.amount_per_day.map(u64::from),
        |r| r.amount_per_month.map(u64::from),
        |r| r.amount_per_visit.map(u64::from),
    ];
    for get in nums {
        s.push(',');
        if c.copayment.iter().any(|r| get(r).is_some()) {
            for (k, r) in c.copayment.iter().enumerate() {
                if k > 0 {
                    s.push(';');
                }
                csv_opt_num(s, get(r));
            }
        }
    }
    let m = &c.max_copayment_amount;
    for v in [m.monthly, m.per_visit, m.inpatient_monthly] {
        s.push(',');
        csv_opt_num(s, v.map(u64::from));
    }
    s.push(',');
    push_date(s, c.valid_from);
    s.push(',');
    push_date(s, c.valid_to);
    s.push(',');
    csv_text(s, &c.history_key);
    s.push(',');
    s.push(bit(deleted));
    s.push(',');
    let start = s.len();
    for (k, f) in c.certification_detail.iter().enumerate() {
        check_item("certificationDetail", &f.name, &['='])?;
        check_item("certificationDetail", &f.value, &[])?;
        if k > 0 {
            s.push(';');
        }
        s.push_str(&f.name);
        s.push('=');
        s.push_str(&f.value);
    }
    end_field(s, start);
    Ok(())
}

/// Appends one character of a JSON string literal, escaped where JSON needs it.
fn json_char(s: &mut String, c: char) {
    match c {
        '"' => s.push_str("\\\""),
        '\\' => s.push_str("\\\\"),
        '\n' => s.push_str("\\n"),
        '\r' => s.push_str("\\r"),
        '\t' => s.push_str("\\t"),
        c if (c as u32) < 0x20 => {
            s.push_str("\\u00");
            let n = c as u32;
            s.push(char::from_digit(n >> 4, 16).unwrap_or('0'));
            s.push(char::from_digit(n & 15, 16).unwrap_or('0'));
        }
        c => s.push(c),
    }
}

/// Appends a JSON string literal.
fn json_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        json_char(s, c);
    }
    s.push('"');
}

/// Appends `,"key":` (`first` omits the comma).
fn json_key(s: &mut String, key: &str, first: bool) {
    if !first {
        s.push(',');
    }
    s.push('"');
    s.push_str(key);
    s.push_str("\":");
}

fn json_padded(s: &mut String, key: &str, v: u64, width: usize) {
    json_key(s, key, false);
    s.push('"');
    push_num(s, v, width);
    s.push('"');
}

fn json_date(s: &mut String, key: &str, days: i32) {
    json_key(s, key, false);
    s.push('"');
    push_date(s, days);
    s.push('"');
}

fn json_bool(s: &mut String, key: &str, v: bool) {
    json_key(s, key, false);
    s.push_str(if v { "true" } else { "false" });
}

/// One JSON record object, on one line.
fn json_record(s: &mut String, my_number: &str, c: &Certificate, deleted: bool) {
    let b = &c.basic_five_info;
    s.push('{');
    json_key(s, "municipalityCode", true);
    s.push('"');
    push_num(s, u64::from(c.municipality_code), 6);
    s.push('"');
    json_key(s, "orgSpecificCertificateTypeId", false);
    json_str(s, &c.org_specific_certificate_type_id);
    json_key(s, "myNumber", false);
    json_str(s, my_number);
    json_key(s, "basicFiveInfo", false);
    s.push('{');
    json_key(s, "name", true);
    json_str(s, &b.name);
    json_key(s, "nameKana", false);
    s.push('"');
    for c in b.name_kana.chars() {
        json_char(s, if c == ' ' { '\u{3000}' } else { c });
    }
    s.push('"');
    json_key(s, "address", false);
    json_str(s, &b.address);
    if let Some(d) = b.date_of_birth {
        json_date(s, "dateOfBirth", d);
    }
    json_padded(s, "sex", u64::from(b.sex), 1);
    s.push('}');
    json_bool(s, "isNotDisclosed", c.is_not_disclosed);
    json_padded(s, "medicalSubsidyInsurerNumber", u64::from(c.medical_subsidy_insurer_number), 8);
    json_key(s, "certificationName", false);
    json_str(s, &c.certification_name);
    json_key(s, "medicalSubsidyRecipientNumber", false);
    json_str(s, &c.medical_subsidy_recipient_number);
    for (key, v) in [
        ("certificationSubKey", &c.certification_sub_key),
        ("segment", &c.segment),
        ("incomeSegment", &c.income_segment),
    ] {
        if let Some(v) = v {
            json_key(s, key, false);
            json_str(s, v);
        }
    }
    json_key(s, "additionalConditions", false);
    s.push('[');
    for (k, a) in c.additional_conditions.iter().enumerate() {
        if k > 0 {
            s.push(',');
        }
        s.push('{');
        json_key(s, "item", true);
        json_str(s, &a.item);
        json_key(s, "code", false);
        json_str(s, &a.code);
        s.push('}');
    }
    s.push(']');
    json_key(s, "designatedMedicalInstitutions", false);
    s.push('[');
    for (k, d) in c.designated_medical_institutions.iter().enumerate() {
        if k > 0 {
            s.push(',');
        }
        s.push('{');
        json_key(s, "code", true);
        s.push('"');
        push_num(s, d.code, 10);
        s.push('"');
        if let Some(n) = &d.name {
            json_key(s, "name", false);
            json_str(s, n);
        }
        s.push('}');
    }
    s.push(']');
    json_bool(s, "isAlwaysReimbursement", c.is_always_reimbursement);
    json_key(s, "copayment", false);
    s.push('[');
    for (k, r) in c.copayment.iter().enumerate() {
        if k > 0 {
            s.push(',');
        }
        s.push('{');
        json_key(s, "category", true);
        json_str(s, &r.category);
        json_key(s, "burdenDefinition", false);
        json_str(s, &r.burden_definition);
        for (key, v) in [
            ("ratePerDay", r.rate_per_day.map(u64::from)),
            ("ratePerMonth", r.rate_per_month.map(u64::from)),
            ("ratePerVisit", r.rate_per_visit.map(u64::from)),
            ("amountPerDay", r.amount_per_day.map(u64::from)),
            ("amountPerMonth", r.amount_per_month.map(u64::from)),
            ("amountPerVisit", r.amount_per_visit.map(u64::from)),
        ] {
            if let Some(v) = v {
                json_key(s, key, false);
                push_num(s, v, 1);
            }
        }
        s.push('}');
    }
    s.push(']');
    json_key(s, "maxCopaymentAmount", false);
    s.push('{');
    let m = &c.max_copayment_amount;
    let mut first = true;
    for (key, v) in [("monthly", m.monthly), ("perVisit", m.per_visit), ("inpatientMonthly", m.inpatient_monthly)] {
        if let Some(v) = v {
            json_key(s, key, first);
            push_num(s, u64::from(v), 1);
            first = false;
        }
    }
    s.push('}');
    json_date(s, "validFrom", c.valid_from);
    json_date(s, "validTo", c.valid_to);
    json_key(s, "historyKey", false);
    json_str(s, &c.history_key);
    json_bool(s, "isDeleted", deleted);
    json_key(s, "certificationDetail", false);
    s.push('[');
    for (k, f) in c.certification_detail.iter().enumerate() {
        if k > 0 {
            s.push(',');
        }
        s.push('{');
        json_key(s, "name", true);
        json_str(s, &f.name);
        json_key(s, "value", false);
        json_str(s, &f.value);
        s.push('}');
    }
    s.push(']');
    s.push('}');
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::path::PathBuf;

    use pmh_engine::MyNumber;
    use pmh_engine::record::{AdditionalCondition, CertificateId, FaceItem};
    use pmh_loader::{ParseError, ParseOptions, ParsedRow, format_report, parse_all};

    use super::*;

    fn date() -> Date {
        Date::parse("2026-11-21").unwrap()
    }

    fn config(persons: u64, format: Format, encoding: Encoding, header: HeaderLanguage) -> GenConfig {
        GenConfig { seed: 7, format, encoding, header, diff_share: 10.0, ..GenConfig::new(persons, date()) }
    }

    /// Parses one generated file, failing with the loader's report on any error.
    fn load(path: &Path, format: Format, encoding: Encoding) -> Vec<ParsedRow> {
        let file = File::open(path).unwrap();
        let opts = ParseOptions { encoding, ..ParseOptions::default() };
        match parse_all(format, file, &opts) {
            Ok(rows) => rows,
            Err(ParseError::Invalid(errors)) => {
                let shown = &errors[..errors.len().min(20)];
                panic!("{}: {} error(s):\n{}", path.display(), errors.len(), format_report(shown))
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }

    /// The rows without their row numbers (files split differently number them differently).
    type Content = Vec<(MyNumber, Certificate, bool)>;

    fn content(rows: &[ParsedRow]) -> Content {
        rows.iter().map(|r| (r.pmh_source.clone(), r.certificate.clone(), r.is_deleted)).collect()
    }

    struct Loaded {
        manifest: Manifest,
        full: Vec<ParsedRow>,
        diff: Vec<ParsedRow>,
        dir: tempfile::TempDir,
    }

    fn generate_and_load(cfg: &GenConfig, parse_encoding: Encoding) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        let manifest = generate(dir.path(), cfg).unwrap();
        let mut full = Vec::new();
        for (k, f) in manifest.full.iter().enumerate() {
            assert_eq!(f.name, cfg.full_file_name(k));
            let rows = load(&dir.path().join(&f.name), cfg.format, parse_encoding);
            assert_eq!(rows.len() as u64, f.certificates, "{}", f.name);
            assert_eq!(std::fs::metadata(dir.path().join(&f.name)).unwrap().len(), f.bytes);
            full.extend(rows);
        }
        let diff = load(&dir.path().join(&manifest.diff.name), cfg.format, parse_encoding);
        assert_eq!(diff.len() as u64, manifest.diff.rows);
        assert_eq!(manifest.diff.rows, manifest.diff.updated + manifest.diff.inserted + manifest.diff.deleted);
        let written = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
        assert_eq!(written, manifest.to_json());
        Loaded { manifest, full, diff, dir }
    }

    /// Every certificate of the full files is synth's, in person order, up to the loader's
    /// one normalisation (氏名カナ spaces → U+3000).
    fn assert_full_is_synth(cfg: &GenConfig, full: &[ParsedRow]) {
        let pop = Population::new(cfg.seed, cfg.date);
        let mut rows = full.iter();
        for i in 0..cfg.persons {
            let p = pop.person(i);
            let n = MyNumber::parse(&p.my_number).unwrap();
            for c in &p.certificates {
                let r = rows.next().unwrap_or_else(|| panic!("person {i}: missing certificates"));
                assert!(r.pmh_source == n, "person {i}: another My Number");
                assert!(!r.is_deleted);
                assert_eq!(r.certificate, loaded_form(c), "person {i}");
            }
        }
        assert!(rows.next().is_none(), "rows beyond the population");
    }

    #[test]
    fn every_combination_loads_and_matches_synth() {
        let mut results: Vec<(String, Content, Content)> = Vec::new();
        for format in [Format::Csv, Format::Json] {
            for encoding in [Encoding::Utf8, Encoding::ShiftJis] {
                for header in [HeaderLanguage::English, HeaderLanguage::Japanese] {
                    let cfg = config(300, format, encoding, header);
                    let what = format!("{format:?}/{encoding}/{}", header.as_str());
                    if format == Format::Json && encoding == Encoding::ShiftJis {
                        let dir = tempfile::tempdir().unwrap();
                        let e = generate(dir.path(), &cfg).unwrap_err();
                        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{what}");
                        continue;
                    }
                    let l = generate_and_load(&cfg, encoding);
                    assert_full_is_synth(&cfg, &l.full);
                    assert!(l.manifest.full_certificates() > 300, "{what}");
                    assert!(l.manifest.diff.rows > 0, "{what}");
                    // Auto-detection reads the same.
                    if format == Format::Csv {
                        let auto = load(&l.dir.path().join("full.csv"), format, Encoding::Auto);
                        assert_eq!(content(&auto), content(&l.full), "{what}");
                    }
                    let bytes = std::fs::read(l.dir.path().join(&l.manifest.full[0].name)).unwrap();
                    if encoding == Encoding::ShiftJis {
                        // CRLF everywhere, and half-width kana (ｻ is 0xBB in Shift_JIS).
                        let lf = bytes.iter().filter(|&&b| b == b'\n').count();
                        let crlf = bytes.windows(2).filter(|w| w == b"\r\n").count();
                        assert_eq!(lf, crlf, "{what}");
                        assert!(std::str::from_utf8(&bytes).is_err(), "{what}");
                        let (text, _, bad) = encoding_rs::SHIFT_JIS.decode(&bytes);
                        assert!(!bad);
                        assert_eq!(encoding_rs::SHIFT_JIS.encode(&text).0.as_ref(), &bytes[..], "{what}");
                        assert!(text.contains("ｻﾄｳ ") && text.contains("ﾜﾀﾅﾍﾞ "), "{what}: no half-width kana");
                        assert!(!text.contains("サトウ") && !text.contains("ワタナベ"), "{what}: full-width kana");
                    } else {
                        assert!(!bytes.contains(&b'\r'), "{what}");
                        let text = std::str::from_utf8(&bytes).unwrap();
                        assert!(text.contains('\u{3000}'), "{what}: kana space is full-width");
                    }
                    if format == Format::Csv && header == HeaderLanguage::Japanese {
                        let first = bytes.split(|&b| b == b'\n').next().unwrap();
                        let (h, _, _) = encoding_rs::SHIFT_JIS.decode(first);
                        let h = if encoding == Encoding::Utf8 { String::from_utf8_lossy(first) } else { h };
                        assert!(h.starts_with("自治体コード,機関別受給者証種別ID,個人番号,氏名,"), "{what}");
                    }
                    results.push((what, content(&l.full), content(&l.diff)));
                }
            }
        }
        // UTF-8 and Shift_JIS, English and Japanese headers, CSV and JSON: the same data.
        assert_eq!(results.len(), 6);
        let (first, full0, diff0) = &results[0];
        for (what, full, diff) in &results[1..] {
            assert!(full == full0, "{what} differs from {first} (full)");
            assert!(diff == diff0, "{what} differs from {first} (diff)");
        }
    }

    /// A larger run, streamed through the loader (`-- --ignored`; about 140,000 records per
    /// file).
    #[test]
    #[ignore]
    fn large_files_load_without_errors() {
        for (format, encoding) in
            [(Format::Csv, Encoding::ShiftJis), (Format::Csv, Encoding::Utf8), (Format::Json, Encoding::Utf8)]
        {
            let cfg = GenConfig { files: 2, ..config(100_000, format, encoding, HeaderLanguage::Japanese) };
            let dir = tempfile::tempdir().unwrap();
            let m = generate(dir.path(), &cfg).unwrap();
            let names =
                m.full.iter().map(|f| (f.name.clone(), f.certificates)).chain([(m.diff.name.clone(), m.diff.rows)]);
            for (name, rows) in names {
                let file = File::open(dir.path().join(&name)).unwrap();
                let opts = ParseOptions { encoding, ..ParseOptions::default() };
                let mut bad = Vec::new();
                let summary = pmh_loader::parse(format, file, &opts, |r| {
                    if let Err(e) = r
                        && bad.len() < 20
                    {
                        bad.extend(e);
                    }
                })
                .unwrap();
                assert!(bad.is_empty(), "{name}: {}", format_report(&bad));
                assert_eq!((summary.rows as u64, summary.rejected), (rows, 0), "{name}");
            }
        }
    }

    #[test]
    fn json_ignores_the_header_language() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        generate(a.path(), &config(50, Format::Json, Encoding::Utf8, HeaderLanguage::English)).unwrap();
        generate(b.path(), &config(50, Format::Json, Encoding::Utf8, HeaderLanguage::Japanese)).unwrap();
        for f in ["full.json", "diff.json"] {
            assert_eq!(std::fs::read(a.path().join(f)).unwrap(), std::fs::read(b.path().join(f)).unwrap());
        }
    }

    #[test]
    fn diff_updates_inserts_and_deletes_against_full() {
        let cfg = GenConfig { diff_share: 20.0, ..config(1000, Format::Csv, Encoding::Utf8, HeaderLanguage::English) };
        let l = generate_and_load(&cfg, Encoding::Utf8);
        let full: HashMap<CertificateId, &ParsedRow> = l.full.iter().map(|r| (r.id(), r)).collect();
        assert_eq!(full.len(), l.full.len(), "identities in full are unique");
        let (mut updated, mut inserted, mut deleted) = (0, 0, 0);
        let mut seen = HashSet::new();
        for r in &l.diff {
            assert!(seen.insert(r.id()), "identity twice in the diff");
            match (r.is_deleted, full.get(&r.id())) {
                (true, Some(f)) => {
                    assert!(f.pmh_source == r.pmh_source, "delete by another person");
                    deleted += 1;
                }
                (true, None) => panic!("delete of an identity not in full: {:?}", r.id()),
                (false, Some(f)) => {
                    assert!(f.pmh_source == r.pmh_source);
                    assert_ne!(f.certificate, r.certificate, "an update must change something");
                    // Only the ceiling or the end of validity changes.
                    let mut g = r.certificate.clone();
                    g.max_copayment_amount.monthly = f.certificate.max_copayment_amount.monthly;
                    g.valid_to = f.certificate.valid_to;
                    assert_eq!(g, f.certificate);
                    updated += 1;
                }
                (false, None) => inserted += 1,
            }
        }
        let d = &l.manifest.diff;
        assert_eq!((updated, inserted, deleted), (d.updated, d.inserted, d.deleted));
        // 20 % of 1000 persons, about 60/25/15.
        assert!((150..=250).contains(&d.touched_persons), "{d:?}");
        assert!(d.updated > d.deleted && d.deleted > 0 && d.inserted > d.deleted / 2, "{d:?}");
        assert!(d.new_persons > 0, "{d:?}");
        // The brand-new persons are synth's persons N.., all of their certificates inserted.
        let pop = Population::new(cfg.seed, cfg.date);
        let mut new_certs = 0;
        for j in cfg.persons..cfg.persons + d.new_persons {
            let p = pop.person(j);
            let n = MyNumber::parse(&p.my_number).unwrap();
            for c in &p.certificates {
                let r = l.diff.iter().find(|r| r.id() == c.id()).unwrap_or_else(|| panic!("person {j} missing"));
                assert!(r.pmh_source == n && !r.is_deleted);
                assert_eq!(r.certificate, loaded_form(c));
                new_certs += 1;
            }
        }
        assert_eq!(new_certs, d.new_person_certificates);
        // The plan is what was written.
        let plan: Vec<DiffRow> = diff_plan(&cfg).collect();
        assert_eq!(plan.len(), l.diff.len());
        for (p, r) in plan.iter().zip(&l.diff) {
            assert!(MyNumber::parse(&p.my_number).unwrap() == r.pmh_source);
            assert_eq!(p.kind == DiffKind::Delete, r.is_deleted);
            if p.kind == DiffKind::Delete {
                assert_eq!(p.certificate.id(), r.id());
            } else {
                assert_eq!(loaded_form(&p.certificate), r.certificate);
            }
        }
    }

    fn files_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let bytes = std::fs::read(&p).unwrap();
                (PathBuf::from(p.file_name().unwrap()), bytes)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn same_seed_same_bytes_whatever_the_threads() {
        for (format, encoding) in [(Format::Csv, Encoding::ShiftJis), (Format::Json, Encoding::Utf8)] {
            let cfg = GenConfig { files: 3, ..config(400, format, encoding, HeaderLanguage::Japanese) };
            let a = tempfile::tempdir().unwrap();
            let b = tempfile::tempdir().unwrap();
            generate(a.path(), &GenConfig { threads: 1, ..cfg.clone() }).unwrap();
            generate(b.path(), &GenConfig { threads: 4, ..cfg.clone() }).unwrap();
            let fa = files_of(a.path());
            assert_eq!(fa.len(), 5, "3 full files, the diff, the manifest");
            assert!(fa == files_of(b.path()), "{format:?}/{encoding}: not byte-identical");
            let c = tempfile::tempdir().unwrap();
            generate(c.path(), &GenConfig { seed: 8, ..cfg.clone() }).unwrap();
            assert!(fa != files_of(c.path()), "another seed, other files");
        }
    }

    #[test]
    fn split_files_hold_the_single_file() {
        let one = config(301, Format::Csv, Encoding::Utf8, HeaderLanguage::English);
        let three = GenConfig { files: 3, ..one.clone() };
        let a = generate_and_load(&one, Encoding::Utf8);
        let b = generate_and_load(&three, Encoding::Utf8);
        assert_eq!(b.manifest.full.len(), 3);
        assert_eq!(b.manifest.full[0].name, "full-000.csv");
        assert_eq!(
            b.manifest.full.iter().map(|f| (f.first_person, f.end_person)).collect::<Vec<_>>(),
            [(0, 100), (100, 200), (200, 301)]
        );
        assert_eq!(content(&a.full), content(&b.full));
        assert_eq!(content(&a.diff), content(&b.diff));
        assert_eq!(a.manifest.full_certificates(), b.manifest.full_certificates());
    }

    #[test]
    fn empty_population_gives_valid_empty_files() {
        for format in [Format::Csv, Format::Json] {
            let l = generate_and_load(&config(0, format, Encoding::Utf8, HeaderLanguage::English), Encoding::Utf8);
            assert!(l.full.is_empty() && l.diff.is_empty());
        }
    }

    #[test]
    fn half_width_kana() {
        let mut s = String::new();
        push_half_width_kana(&mut s, "ワタナベ\u{3000}パピプ ヴァ・ヶー");
        assert_eq!(s, "ﾜﾀﾅﾍﾞ ﾊﾟﾋﾟﾌﾟ ｳﾞｧ･ヶｰ");
    }

    #[test]
    fn memoised_shift_jis_is_encoding_rs() {
        let text = "髙橋①Ⅰ ｻﾄｳ ﾜﾀﾅﾍﾞ,子ども医療費（指定難病）¥~\\\r\n受給者証券面項目";
        let mut e = SjisEncoder::default();
        let mut out = Vec::new();
        for _ in 0..2 {
            out.clear();
            e.encode(text, &mut out).unwrap();
            assert_eq!(out, encoding_rs::SHIFT_JIS.encode(text).0.as_ref());
        }
        let err = e.encode("a😀", &mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(e.encode("한", &mut out).is_err());
    }

    #[test]
    fn numbers_and_dates() {
        let mut s = String::new();
        push_num(&mut s, 0, 1);
        s.push(' ');
        push_num(&mut s, 42, 6);
        s.push(' ');
        push_num(&mut s, 1234567, 3);
        s.push(' ');
        push_num(&mut s, u64::MAX, 1);
        s.push(' ');
        push_date(&mut s, Date::parse("2024-02-29").unwrap().days());
        assert_eq!(s, "0 000042 1234567 18446744073709551615 2024-02-29");
    }

    /// Values synth never makes (commas, quotes, line breaks) are quoted and load back.
    #[test]
    fn awkward_values_round_trip() {
        let pop = Population::new(1, date());
        let mut c = pop.person(3).certificates[0].clone();
        c.basic_five_info.address = "東京都, \"髙田\"\n201号室".into();
        c.basic_five_info.name = "O'Brien \\ 太郎".into();
        c.certification_detail.push(FaceItem { name: "備考".into(), value: "a,b \"c\"".into() });
        c.additional_conditions.push(AdditionalCondition { item: "X".into(), code: "1".into() });
        let mn = pop.my_number(3);
        for format in [Format::Csv, Format::Json] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = GenConfig { format, ..GenConfig::new(0, date()) };
            let path = dir.path().join("x");
            let mut w = RecordWriter::create(&path, &cfg).unwrap();
            w.write(&mn, &c, false).unwrap();
            w.finish().unwrap();
            let rows = load(&path, format, Encoding::Utf8);
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].certificate, loaded_form(&c), "{format:?}");
        }
        // What the CSV list syntax cannot carry is refused, not written.
        let mut bad = c.clone();
        bad.certification_detail.push(FaceItem { name: "a".into(), value: "x;y".into() });
        let mut s = String::new();
        assert!(csv_record(&mut s, &mn, &bad, false, false).is_err());
    }

    #[test]
    fn config_is_checked() {
        let ok = GenConfig::new(10, date());
        assert!(ok.check().is_ok());
        for bad in [
            GenConfig { format: Format::Json, encoding: Encoding::ShiftJis, ..ok.clone() },
            GenConfig { encoding: Encoding::Auto, ..ok.clone() },
            GenConfig { files: 0, ..ok.clone() },
            GenConfig { diff_share: 100.5, ..ok.clone() },
            GenConfig { diff_share: f64::NAN, ..ok.clone() },
            GenConfig { persons: MAX_PERSONS + 1, ..ok.clone() },
        ] {
            assert_eq!(bad.check().unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert_eq!("Japanese".parse(), Ok(HeaderLanguage::Japanese));
        assert!("french".parse::<HeaderLanguage>().is_err());
    }

    #[test]
    fn manifest_names_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let m = generate(dir.path(), &config(200, Format::Csv, Encoding::ShiftJis, HeaderLanguage::English)).unwrap();
        let j = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
        for needle in [
            "\"persons\": 200,".to_string(),
            "\"seed\": 7,".into(),
            "\"date\": \"2026-11-21\",".into(),
            "\"format\": \"csv\",".into(),
            "\"encoding\": \"shift_jis\",".into(),
            "\"lineEnding\": \"crlf\",".into(),
            format!("\"fullCertificates\": {},", m.full_certificates()),
            format!("\"updated\": {},", m.diff.updated),
            format!("\"inserted\": {},", m.diff.inserted),
            format!("\"deleted\": {},", m.diff.deleted),
        ] {
            assert!(j.contains(&needle), "{needle} not in\n{j}");
        }
    }
}
