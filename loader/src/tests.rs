//! Tests over whole files: the samples in `data/`, every error path of both readers, and
//! random input. Set `PMH_BLESS=1` to rewrite the generated files (`data/sample-sjis.csv`,
//! `data/bad-rows.expected.txt`) from the current code instead of comparing against them.

use std::io::{self, Read};
use std::path::PathBuf;

use pmh_engine::ids::make;
use pmh_engine::{Certificate, Change, Date, MunicipalityCode, PmhIdDeriver};
use proptest::prelude::*;

use crate::error::{FIELD_FILE, FIELD_RECORD};
use crate::field::ALL_FIELDS;
use crate::*;

/// The My Numbers of the sample files: none may ever appear in an error or `Debug` output.
const SAMPLE_MY_NUMBERS: [&str; 5] = ["123456789018", "234567890121", "345678901234", "456789012346", "567890123457"];

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("data").join(name)
}

fn read_data(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn bless() -> bool {
    std::env::var_os("PMH_BLESS").is_some()
}

type RowResult = Result<ParsedRow, Vec<RowError>>;

fn collect(format: Format, input: &[u8], opts: &ParseOptions) -> (Result<ParseSummary, ParseError>, Vec<RowResult>) {
    let mut rows = Vec::new();
    let summary = parse(format, input, opts, |r| rows.push(r));
    (summary, rows)
}

/// Every row of a file that must be entirely valid.
fn good_rows(format: Format, input: &[u8], opts: &ParseOptions) -> Vec<ParsedRow> {
    let (summary, rows) = collect(format, input, opts);
    let summary = summary.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.rejected, 0);
    rows.into_iter().map(|r| r.unwrap_or_else(|e| panic!("unexpected errors:\n{}", format_report(&e)))).collect()
}

fn certificates(rows: &[ParsedRow]) -> Vec<(usize, String, Certificate, bool)> {
    rows.iter().map(|r| (r.row, r.pmh_source.masked(), r.certificate.clone(), r.is_deleted)).collect()
}

/// Errors of all rows, flattened.
fn errors(rows: &[RowResult]) -> Vec<RowError> {
    rows.iter().filter_map(|r| r.as_ref().err()).flatten().cloned().collect()
}

fn invalid(r: Result<ParseSummary, ParseError>) -> Vec<RowError> {
    match r {
        Err(ParseError::Invalid(e)) => e,
        other => panic!("expected ParseError::Invalid, got {other:?}"),
    }
}

fn date(s: &str) -> i32 {
    Date::parse(s).unwrap().days()
}

fn utf8_sample() -> Vec<ParsedRow> {
    good_rows(Format::Csv, &read_data("sample-utf8.csv"), &ParseOptions::default())
}

/// The sample's header row and the rest of the file.
fn split_header(text: &str) -> (&str, &str) {
    text.split_once('\n').unwrap()
}

const MINIMAL_HEADER: &str = "municipalityCode,orgSpecificCertificateTypeId,myNumber,isNotDisclosed,\
    medicalSubsidyInsurerNumber,certificationName,medicalSubsidyRecipientNumber,validFrom,validTo,historyKey,isDeleted";

fn minimal_row(my_number: &str) -> String {
    format!("131016,KODOMO,{my_number},0,88131016,子ども医療費受給者証,K-1,2026-04-01,2027-03-31,H1,0")
}

// ---------------------------------------------------------------- happy paths

#[test]
fn utf8_csv_with_english_header() {
    let rows = utf8_sample();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows.iter().map(|r| r.row).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);

    let c = &rows[0].certificate;
    assert_eq!(c.municipality_code, 131016);
    assert_eq!(c.org_specific_certificate_type_id, "KODOMO01");
    assert_eq!(c.history_key, "H20260401-001");
    assert_eq!(c.basic_five_info.name, "山田 太郎");
    assert_eq!(c.basic_five_info.name_kana, "ヤマダ\u{3000}タロウ");
    assert_eq!(c.basic_five_info.date_of_birth, Some(date("2019-05-05")));
    assert_eq!(c.basic_five_info.sex, 1);
    assert!(!c.is_not_disclosed);
    assert_eq!(c.medical_subsidy_insurer_number, 88131016);
    assert_eq!(c.medical_subsidy_recipient_number, "K-0012345");
    assert_eq!(c.segment.as_deref(), Some("未就学児"));
    assert_eq!(c.income_segment, None);
    assert_eq!(c.copayment.len(), 2);
    assert_eq!((c.copayment[0].category.as_str(), c.copayment[0].amount_per_visit), ("外来", Some(200)));
    assert_eq!((c.copayment[1].category.as_str(), c.copayment[1].amount_per_day), ("入院", Some(500)));
    assert_eq!(c.copayment[1].amount_per_visit, None);
    assert_eq!(c.max_copayment_amount.monthly, Some(1000));
    assert_eq!((c.valid_from, c.valid_to), (date("2026-04-01"), date("2027-03-31")));
    assert_eq!(c.certification_detail.len(), 1);
    assert_eq!(c.certification_detail[0].name, "備考");
    assert!(c.check().is_ok());

    let c = &rows[1].certificate;
    assert_eq!(c.basic_five_info.name_kana, "サトウ\u{3000}ハナコ");
    assert_eq!(c.additional_conditions.len(), 2);
    assert_eq!((c.additional_conditions[1].item.as_str(), c.additional_conditions[1].code.as_str()), ("B02", "3"));
    assert_eq!(c.designated_medical_institutions.len(), 2);
    assert_eq!(c.designated_medical_institutions[0].code, 1311234569);
    assert_eq!(c.designated_medical_institutions[0].name.as_deref(), Some("千代田クリニック"));
    assert_eq!(c.copayment[0].rate_per_visit, Some(20));
    assert_eq!(c.max_copayment_amount.inpatient_monthly, Some(10000));
    assert_eq!(c.income_segment.as_deref(), Some("一般Ⅰ"));
    assert_eq!(c.certification_detail[1].value, "千代田クリニック、麹町薬局");

    // A quoted field with a comma and a line break; YYYYMMDD dates; 不開示.
    let c = &rows[2].certificate;
    assert_eq!(c.basic_five_info.address, "東京都新宿区髙田馬場1-1, 髙田ハイツ\n201号室");
    assert_eq!(c.basic_five_info.name_kana, "スズキ\u{3000}イチロウ");
    assert!(c.is_not_disclosed);
    assert!(c.is_always_reimbursement);
    assert_eq!(c.valid_from, date("2026-04-01"));

    assert_eq!(rows[3].certificate.basic_five_info.name_kana, "パク\u{3000}ジュン");
    assert_eq!(rows[3].certificate.certification_sub_key.as_deref(), Some("01"));
    assert_eq!(rows[3].certificate.basic_five_info.sex, 0);
    assert_eq!(rows[3].pmh_source, rows[4].pmh_source);
    assert_ne!(rows[3].id(), rows[4].id());
    assert_eq!(rows[5].certificate.municipality_code, 131024);
    assert_eq!(rows[5].certificate.basic_five_info.name_kana, "タカハシ\u{3000}ユイ");
    assert_eq!(rows[5].certificate.basic_five_info.date_of_birth, Some(date("2015-03-03")));
    assert!(rows.iter().all(|r| !r.is_deleted && r.certificate.check().is_ok()));
}

#[test]
fn lists_longer_than_a_record_holds_inline_keep_every_item_in_order() {
    // A record holds two items of each list (and four values of each copay column) inline;
    // longer lists move to the heap, and must lose and reorder nothing.
    let header = format!(
        "{MINIMAL_HEADER},additionalConditions,designatedMedicalInstitutions,copayment.category,\
         copayment.burdenDefinition,copayment.amountPerVisit,certificationDetail"
    );
    let row = format!(
        "{},A01-1;B02-2;C03-3,1311234569:一;1312345679:二;1311234569:三,\
         外来;入院;外来;入院;外来;入院,定額;定額;定額;定額;定額;定額,100;200;300;400;500;600,\
         a=1;b=2;c=3;d=4;e=5",
        minimal_row("123456789018")
    );
    let rows = good_rows(Format::Csv, format!("{header}\n{row}\n").as_bytes(), &ParseOptions::default());
    let c = &rows[0].certificate;
    let conditions: Vec<_> = c.additional_conditions.iter().map(|a| (a.item.as_str(), a.code.as_str())).collect();
    assert_eq!(conditions, [("A01", "1"), ("B02", "2"), ("C03", "3")]);
    let names: Vec<_> = c.designated_medical_institutions.iter().map(|i| i.name.as_deref()).collect();
    assert_eq!(names, [Some("一"), Some("二"), Some("三")]);
    let amounts: Vec<_> = c.copayment.iter().map(|r| (r.category.as_str(), r.amount_per_visit)).collect();
    assert_eq!(
        amounts,
        [
            ("外来", Some(100)),
            ("入院", Some(200)),
            ("外来", Some(300)),
            ("入院", Some(400)),
            ("外来", Some(500)),
            ("入院", Some(600))
        ]
    );
    let detail: Vec<_> = c.certification_detail.iter().map(|d| (d.name.as_str(), d.value.as_str())).collect();
    assert_eq!(detail, [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")]);
}

#[test]
fn json_sample_equals_the_csv_sample() {
    let json = good_rows(Format::Json, &read_data("sample.json"), &ParseOptions::default());
    assert_eq!(certificates(&json), certificates(&utf8_sample()));
}

#[test]
fn bom_and_japanese_header_give_the_same_certificates() {
    let text = String::from_utf8(read_data("sample-utf8.csv")).unwrap();
    let (header, body) = split_header(&text);
    let japanese: Vec<String> = header
        .split(',')
        .enumerate()
        .map(|(i, h)| {
            let f = crate::field::Field::from_header(h).unwrap();
            let j = f.japanese_names()[0];
            // Alternate full-width and half-width parentheses.
            if i % 2 == 0 { j.replace('(', "（").replace(')', "）") } else { j.to_owned() }
        })
        .collect();
    assert!(japanese.contains(&"負担率（日）".to_owned()) && japanese.contains(&"負担率(月)".to_owned()));
    let mut file = vec![0xEF, 0xBB, 0xBF];
    file.extend_from_slice(japanese.join(",").as_bytes());
    file.push(b'\n');
    file.extend_from_slice(body.as_bytes());
    let rows = good_rows(Format::Csv, &file, &ParseOptions::default());
    assert_eq!(certificates(&rows), certificates(&utf8_sample()));
    // The BOM is honoured whatever the option says, except a contradicting Shift_JIS.
    let opts = ParseOptions { encoding: Encoding::Utf8, ..Default::default() };
    assert_eq!(certificates(&good_rows(Format::Csv, &file, &opts)), certificates(&rows));
    let opts = ParseOptions { encoding: Encoding::ShiftJis, ..Default::default() };
    let e = invalid(parse_csv(&file[..], &opts, |_| {}));
    assert_eq!((e[0].field.as_str(), e[0].rule), (FIELD_FILE, "encoding"));
}

/// The Shift_JIS sample is the UTF-8 sample, CRLF line ends, encoded by encoding_rs.
fn sjis_of_utf8_sample() -> Vec<u8> {
    let text = String::from_utf8(read_data("sample-utf8.csv")).unwrap();
    let crlf = text.replace('\n', "\r\n");
    let (bytes, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&crlf);
    assert!(!unmappable, "the UTF-8 sample has characters Shift_JIS cannot hold");
    bytes.into_owned()
}

#[test]
fn shift_jis_csv_with_crlf_and_half_width_kana() {
    let expected = sjis_of_utf8_sample();
    if bless() {
        std::fs::write(data("sample-sjis.csv"), &expected).unwrap();
    }
    let file = read_data("sample-sjis.csv");
    assert_eq!(file, expected, "data/sample-sjis.csv is stale: run the tests with PMH_BLESS=1");
    // Real Shift_JIS: CRLF, half-width ﾊﾟ as the bytes CA DF, and not valid UTF-8.
    assert!(file.windows(2).any(|w| w == b"\r\n"));
    assert!(file.windows(2).any(|w| w == [0xCA, 0xDF]));
    assert!(std::str::from_utf8(&file).is_err());

    let want = certificates(&utf8_sample());
    let mut summary = None;
    let mut rows = Vec::new();
    for encoding in [Encoding::Auto, Encoding::ShiftJis] {
        let opts = ParseOptions { encoding, ..Default::default() };
        rows.clear();
        summary = Some(parse_csv(&file[..], &opts, |r| rows.push(r.unwrap())).unwrap());
        assert_eq!(certificates(&rows), want, "{encoding}");
    }
    assert_eq!(summary.map(|s| s.encoding), Some(Encoding::ShiftJis));
    // Declared UTF-8, the same bytes are reported row by row, not mangled.
    let opts = ParseOptions { encoding: Encoding::Utf8, ..Default::default() };
    let (summary, rows) = collect(Format::Csv, &file, &opts);
    assert_eq!(summary.unwrap().rejected, 6);
    let e = errors(&rows);
    assert!(e.iter().all(|e| e.rule == "encoding" && e.row >= 1), "{e:?}");
    assert!(e[0].message.contains("it reads as Shift_JIS"), "{}", e[0].message);
}

#[test]
fn quoted_field_with_comma_and_line_break() {
    let csv = format!(
        "{MINIMAL_HEADER},basicFiveInfo.address,certificationDetail\r\n{},\"千代田区1-1,\r\n2階\",\"備考=a, b\"\r\n",
        minimal_row("123456789018")
    );
    let rows = good_rows(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].certificate.basic_five_info.address, "千代田区1-1,\n2階");
    assert_eq!(rows[0].certificate.certification_detail[0].value, "a, b");
    // Escaped quotes too.
    let csv = format!("{MINIMAL_HEADER},basicFiveInfo.name\n{},\"\"\"ﾀﾛｳ\"\" 山田\"\n", minimal_row("123456789018"));
    let rows = good_rows(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    assert_eq!(rows[0].certificate.basic_five_info.name, "\"ﾀﾛｳ\" 山田");
}

#[test]
fn differential_sample() {
    let rows = good_rows(Format::Csv, &read_data("sample-diff.csv"), &ParseOptions::default());
    let base = utf8_sample();
    assert_eq!(rows.len(), 3);
    // An update of an existing certificate: same identity, new content.
    assert_eq!(rows[0].id(), base[0].id());
    assert_ne!(rows[0].certificate, base[0].certificate);
    assert_eq!(rows[0].certificate.copayment[0].burden_definition, "負担なし");
    // A new certificate for a known person.
    assert!(base.iter().all(|b| b.id() != rows[1].id()));
    assert_eq!(rows[1].pmh_source, base[5].pmh_source);
    // A delete with only its identity and My Number filled in.
    assert!(rows[2].is_deleted);
    assert_eq!(rows[2].id(), base[3].id());
    let deriver = PmhIdDeriver::new(b"test secret");
    let changes: Vec<Change> = rows.into_iter().map(|r| r.into_change(&deriver)).collect();
    assert!(matches!(&changes[0], Change::Upsert { pmh_id, .. } if *pmh_id == deriver.derive(&base[0].pmh_source)));
    assert_eq!(changes[2], Change::Delete(base[3].id()));
    assert!(pmh_engine::change::validate_changes(&changes, pmh_engine::ApplyMode::Diff).is_ok());
}

// ---------------------------------------------------------------- the error report

#[test]
fn bad_rows_report_is_exact() {
    let opts = ParseOptions { file_name: Some("bad-rows.csv".into()), ..Default::default() };
    let (summary, rows) = collect(Format::Csv, &read_data("bad-rows.csv"), &opts);
    let summary = summary.unwrap();
    let report = format_report(&errors(&rows));
    if bless() {
        std::fs::write(data("bad-rows.expected.txt"), &report).unwrap();
    }
    let expected = String::from_utf8(read_data("bad-rows.expected.txt")).unwrap();
    assert_eq!(report, expected, "run the tests with PMH_BLESS=1 to rewrite, then review the diff");
    assert_eq!((summary.rows, summary.accepted, summary.rejected), (15, 1, 14));
    assert_eq!(summary.errors, report.lines().count());
    assert!(rows[14].is_ok());
    // Every kind of bad value the file is made of is there.
    for rule in [
        "check digit",
        "validFrom <= validTo",
        "required",
        "date",
        "0, 1 or 2",
        "max length",
        "katakana",
        "boolean",
        "12 digits",
        "half-width alphanumerics",
        "percent 0-100",
        "yen amount",
        "list syntax",
    ] {
        assert!(report.contains(&format!(", rule {rule}: ")), "no {rule:?} error");
    }
    for field in [
        "myNumber",
        "municipalityCode",
        "medicalSubsidyInsurerNumber",
        "designatedMedicalInstitutions",
        "medicalSubsidyRecipientNumber",
    ] {
        assert!(report.contains(&format!("field {field}, rule check digit")), "no check digit error on {field}");
    }
    // The bad My Numbers are masked.
    for n in ["123456789019", "23456789012"] {
        assert!(!report.contains(n) && !format!("{rows:?}").contains(n));
    }
}

#[test]
fn my_numbers_never_appear_in_output() {
    let mut text = String::new();
    for (format, file) in
        [(Format::Csv, "sample-utf8.csv"), (Format::Json, "sample.json"), (Format::Csv, "bad-rows.csv")]
    {
        let (summary, rows) = collect(format, &read_data(file), &ParseOptions::default());
        text.push_str(&format!("{summary:?}{rows:?}"));
        for r in &rows {
            if let Err(e) = r {
                text.push_str(&format_report(e));
            }
        }
    }
    // A file without its header row: the first person is read as the header.
    let sample = String::from_utf8(read_data("sample-utf8.csv")).unwrap();
    let (_, body) = split_header(&sample);
    text.push_str(&format!("{:?}", parse_csv(body.as_bytes(), &ParseOptions::default(), |_| {})));
    // Columns shifted by one: the My Number lands in the municipality and type columns.
    let shifted = sample.replace("\n131016,", "\n");
    text.push_str(&format!("{:?}", collect(Format::Csv, shifted.as_bytes(), &ParseOptions::default())));
    // Forced to fail on the municipality, every row's errors are built.
    let opts = ParseOptions { municipality: Some(MunicipalityCode::parse("011002").unwrap()), ..Default::default() };
    let (_, rows) = collect(Format::Csv, &read_data("sample-utf8.csv"), &opts);
    text.push_str(&format!("{rows:?}"));
    for n in SAMPLE_MY_NUMBERS {
        assert!(!text.contains(n), "a My Number leaked");
    }
    assert!(text.contains("MyNumber(****)"));
}

// ---------------------------------------------------------------- the caller's municipality

#[test]
fn forced_municipality() {
    let own = MunicipalityCode::parse("131016").unwrap();
    let opts = ParseOptions { municipality: Some(own), ..Default::default() };
    let (summary, rows) = collect(Format::Csv, &read_data("sample-utf8.csv"), &opts);
    assert_eq!(summary.unwrap().rejected, 1);
    let e = rows[5].as_ref().unwrap_err();
    assert_eq!(
        (e[0].field.as_str(), e[0].rule, e[0].value.as_str()),
        ("municipalityCode", "caller's municipality", "131024")
    );

    // Without the column, the caller's code is taken; without either, the header is bad.
    let header = MINIMAL_HEADER.replacen("municipalityCode,", "", 1);
    let row = minimal_row("123456789018").replacen("131016,", "", 1);
    let csv = format!("{header}\n{row}\n");
    let rows = good_rows(Format::Csv, csv.as_bytes(), &opts);
    assert_eq!(rows[0].certificate.municipality_code, 131016);
    let e = invalid(parse_csv(csv.as_bytes(), &ParseOptions::default(), |_| {}));
    assert_eq!((e[0].field.as_str(), e[0].rule), ("municipalityCode", "required column"));
    // An empty value takes the caller's code as well.
    let csv = format!("{MINIMAL_HEADER}\n{}\n", minimal_row("123456789018").replacen("131016", "", 1));
    assert_eq!(good_rows(Format::Csv, csv.as_bytes(), &opts)[0].certificate.municipality_code, 131016);
    let (_, rows) = collect(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    assert_eq!(rows[0].as_ref().unwrap_err()[0].rule, "required");
    // JSON likewise.
    let json = br#"[{"orgSpecificCertificateTypeId":"A","myNumber":"123456789018","isNotDisclosed":false,
        "medicalSubsidyInsurerNumber":"88131016","certificationName":"x","medicalSubsidyRecipientNumber":"1",
        "validFrom":"2026-04-01","validTo":"2026-04-01","historyKey":"h","isDeleted":false}]"#;
    assert_eq!(good_rows(Format::Json, json, &opts)[0].certificate.municipality_code, 131016);
}

// ---------------------------------------------------------------- CSV structure

#[test]
fn header_problems_are_all_reported() {
    let header = "municipalityCode,myNumber,nickname,maxCopaymentAmount,自己負担上限額（月）,,isDeleted";
    let e = invalid(parse_csv(format!("{header}\n").as_bytes(), &ParseOptions::default(), |_| {}));
    let got: Vec<(&str, &str)> = e.iter().map(|e| (e.field.as_str(), e.rule)).collect();
    assert_eq!(
        got,
        [
            ("nickname", "unknown column"),
            ("自己負担上限額（月）", "duplicate column"),
            ("", "unknown column"),
            ("orgSpecificCertificateTypeId", "required column"),
            ("isNotDisclosed", "required column"),
            ("medicalSubsidyInsurerNumber", "required column"),
            ("certificationName", "required column"),
            ("medicalSubsidyRecipientNumber", "required column"),
            ("validFrom", "required column"),
            ("validTo", "required column"),
            ("historyKey", "required column"),
        ]
    );
    assert!(e.iter().all(|e| e.row == 0));
    assert_eq!(
        e[0].to_string(),
        "field nickname, rule unknown column: header column 3 (\"nickname\") is not a PMH field name"
    );
    let e = invalid(parse_csv(&b""[..], &ParseOptions::default(), |_| {}));
    assert_eq!(e[0].rule, "header");
}

#[test]
fn a_header_only_file_has_no_rows() {
    let (summary, rows) = collect(Format::Csv, format!("{MINIMAL_HEADER}\r\n").as_bytes(), &ParseOptions::default());
    assert_eq!(summary.unwrap().rows, 0);
    assert!(rows.is_empty());
    let (summary, _) = collect(Format::Json, b" [ ] ", &ParseOptions::default());
    assert_eq!(summary.unwrap().rows, 0);
}

#[test]
fn rows_with_the_wrong_field_count_and_blank_lines() {
    let csv =
        format!("{MINIMAL_HEADER}\n\n{}\n1,2,3\n\n{}\n", minimal_row("123456789018"), minimal_row("234567890121"));
    let (summary, rows) = collect(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    assert_eq!(summary.unwrap().rows, 3);
    let e = rows[1].as_ref().unwrap_err();
    assert_eq!((e.len(), e[0].row, e[0].field.as_str(), e[0].rule), (1, 2, FIELD_RECORD, "column count"));
    assert_eq!(rows[2].as_ref().unwrap().row, 3);
}

#[test]
fn control_characters_and_lengths_are_judged_by_character_in_any_script() {
    // The text rule works on bytes (see `Validator::text_ok`): a control character is
    // U+0000–U+001F, U+007F or U+0080–U+009F (C2 80–C2 9F), whatever surrounds it, and a
    // length counts characters, not bytes.
    let header = format!("{MINIMAL_HEADER},basicFiveInfo.name,basicFiveInfo.address");
    let row = |name: &str, address: &str| {
        let quoted = |v: &str| format!("\"{}\"", v.replace('"', "\"\""));
        format!("{},{},{}", minimal_row("123456789018"), quoted(name), quoted(address))
    };
    let kana_100 = "ア".repeat(100);
    let rows = [
        row("山田\u{b7}太郎", "東京都\n千代田区\t1-1"), // U+00B7 (C2 B7) is no control; lines may break
        row(&kana_100, "東京都"),                       // 100 characters, 300 bytes: the limit
        row("山田\u{85}太郎", "東京都"),                // U+0085 NEL (C2 85)
        row("山田\t太郎", "東京都"),                    // a tab in a one-line text
        row(&format!("{kana_100}ア"), "東京都"),        // 101 characters
        row("山田\u{7f}", "東京都\u{9f}"),              // DEL, and U+009F at the end
    ];
    let csv = format!("{header}\n{}\n", rows.join("\n"));
    let (_, results) = collect(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    assert_eq!(results.len(), rows.len());
    let ok = |i: usize| results[i].as_ref().map(|r| r.certificate.basic_five_info.name.clone());
    assert_eq!(ok(0).ok().as_deref(), Some("山田\u{b7}太郎"));
    assert_eq!(ok(1).ok().as_deref(), Some(kana_100.as_str()));
    let rules = |i: usize| -> Vec<(String, &'static str, String)> {
        results[i].as_ref().unwrap_err().iter().map(|e| (e.field.clone(), e.rule, e.message.clone())).collect()
    };
    let control = |field: &str, cp: &str| {
        (field.to_owned(), "no control characters", format!("must not contain control characters (found U+{cp})"))
    };
    assert_eq!(rules(2), [control("basicFiveInfo.name", "0085")]);
    assert_eq!(rules(3), [control("basicFiveInfo.name", "0009")]);
    assert_eq!(
        rules(4),
        [("basicFiveInfo.name".to_owned(), "max length", "at most 100 characters, got 101".to_owned())]
    );
    assert_eq!(rules(5), [control("basicFiveInfo.name", "007F"), control("basicFiveInfo.address", "009F")]);
}

#[test]
fn list_items_without_their_separator_are_row_errors() {
    // Both `a{sep}b` lists (see `csv_reader::list_pairs`): a bad item is reported with its
    // position and value, and the good items of the row are still read.
    let header = format!("{MINIMAL_HEADER},additionalConditions,certificationDetail");
    let row = format!("{},\"A01-1;B02\",\"備考=a;受給者証名\"", minimal_row("123456789018"));
    let csv = format!("{header}\n{row}\n");
    let (_, results) = collect(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    let e = results[0].as_ref().unwrap_err();
    let got: Vec<(&str, &str, &str, &str)> =
        e.iter().map(|e| (e.field.as_str(), e.rule, e.message.as_str(), e.value.as_str())).collect();
    assert_eq!(
        got,
        [
            ("additionalConditions", "list syntax", "item 2: expected item-code", "B02"),
            ("certificationDetail", "list syntax", "item 2: expected name=value", "受給者証名"),
        ]
    );
}

#[test]
fn encoding_errors_are_reported_with_their_row() {
    // Auto: the Japanese header settles UTF-8; a Shift_JIS row later is an error of that row.
    let mut csv = format!("{MINIMAL_HEADER},氏名\n{},山田\n", minimal_row("123456789018")).into_bytes();
    let row2 = format!("{},山田\n", minimal_row("234567890121"));
    csv.extend_from_slice(&encoding_rs::SHIFT_JIS.encode(&row2).0);
    let (summary, rows) = collect(Format::Csv, &csv, &ParseOptions::default());
    assert_eq!(summary.unwrap().encoding, Encoding::Utf8);
    assert!(rows[0].is_ok());
    let e = rows[1].as_ref().unwrap_err();
    assert_eq!((e[0].row, e[0].field.as_str(), e[0].rule), (2, "basicFiveInfo.name", "encoding"));
    // Shift_JIS declared: a byte sequence Shift_JIS has no character for.
    let mut csv = format!("{MINIMAL_HEADER},氏名\n{},", minimal_row("123456789018")).into_bytes();
    csv = encoding_rs::SHIFT_JIS.encode(std::str::from_utf8(&csv).unwrap()).0.into_owned();
    csv.extend_from_slice(&[0x81, 0x20, b'\n']);
    let opts = ParseOptions { encoding: Encoding::ShiftJis, ..Default::default() };
    let (_, rows) = collect(Format::Csv, &csv, &opts);
    assert_eq!(rows[0].as_ref().unwrap_err()[0].rule, "encoding");
    // An all-ASCII file is UTF-8.
    let csv = format!("{MINIMAL_HEADER}\n{}\n", "131016,A,123456789018,0,88131016,x,K-1,2026-04-01,2027-03-31,H1,0");
    let (summary, _) = collect(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    assert_eq!(summary.unwrap().encoding, Encoding::Utf8);
}

#[test]
fn a_character_split_by_a_delimiter_is_an_error_in_both_fields() {
    // 「ぁ」 is E3 81 81: split as E3 81 | 81 by a comma, the record's bytes without the
    // delimiter are valid UTF-8, but neither field is.
    let mut csv = format!("{MINIMAL_HEADER},氏名,住所\n{},", minimal_row("123456789018")).into_bytes();
    csv.extend_from_slice(&[0xE3, 0x81, b',', 0x81, b'\n']);
    let (_, rows) = collect(Format::Csv, &csv, &ParseOptions { encoding: Encoding::Utf8, ..Default::default() });
    let e = rows[0].as_ref().unwrap_err();
    let fields: Vec<_> = e.iter().map(|e| (e.field.as_str(), e.rule)).collect();
    assert_eq!(fields, vec![("basicFiveInfo.name", "encoding"), ("basicFiveInfo.address", "encoding")]);
}

#[test]
fn copayment_columns_must_agree() {
    let header = format!("{MINIMAL_HEADER},copayment.category,copayment.burdenDefinition,copayment.ratePerDay");
    let csv = format!("{header}\n{},外来;入院,定額,\n", minimal_row("123456789018"));
    let (_, rows) = collect(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    let e = rows[0].as_ref().unwrap_err();
    assert_eq!((e[0].field.as_str(), e[0].rule), ("copayment.burdenDefinition", "same number of rules"));
    // Empty items are positions: rule 1 has no rate, rule 2 has one.
    let csv = format!("{header}\n{},外来;入院,定率;定率,;10\n", minimal_row("123456789018"));
    let rows = good_rows(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    let c = &rows[0].certificate.copayment;
    assert_eq!((c[0].rate_per_day, c[1].rate_per_day), (None, Some(10)));
    // A rule without its 種別 / 負担定義.
    let csv = format!("{header}\n{},,,30\n", minimal_row("123456789018"));
    let (_, rows) = collect(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    let e = rows[0].as_ref().unwrap_err();
    let got: Vec<_> = e.iter().map(|e| (e.field.as_str(), e.rule)).collect();
    assert_eq!(got, [("copayment.category", "required"), ("copayment.burdenDefinition", "required")]);
    assert_eq!(e[0].message, "copayment 1: category (種別) is required");
}

#[test]
fn plain_max_copayment_column_is_monthly() {
    let csv = format!(
        "{MINIMAL_HEADER},maxCopaymentAmount,maxCopaymentAmount.perVisit\n{},2500,500\n",
        minimal_row("123456789018")
    );
    let rows = good_rows(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    let m = &rows[0].certificate.max_copayment_amount;
    assert_eq!((m.monthly, m.per_visit, m.inpatient_monthly), (Some(2500), Some(500), None));
}

#[test]
fn delete_rows_need_only_their_identity() {
    let header = format!("{MINIMAL_HEADER},basicFiveInfo.sex,basicFiveInfo.nameKana");
    // Everything but the identity is garbage or empty: accepted.
    let csv = format!("{header}\n131016,KODOMO,123456789018,maybe,1,,x,2026-13-01,,H1,1,9,やまだ\n");
    let rows = good_rows(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    assert!(rows[0].is_deleted);
    assert_eq!(rows[0].certificate.history_key, "H1");
    // The identity itself is still checked, all of it.
    let csv = format!("{header}\n131017,KO-DOMO,123456789019,,,,,,,,true,,\n");
    let (_, rows) = collect(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    let e = rows[0].as_ref().unwrap_err();
    let got: Vec<_> = e.iter().map(|e| (e.field.as_str(), e.rule)).collect();
    assert_eq!(
        got,
        [
            ("municipalityCode", "check digit"),
            ("orgSpecificCertificateTypeId", "half-width alphanumerics"),
            ("myNumber", "check digit"),
            ("historyKey", "required"),
        ]
    );
    // A row whose isDeleted is itself bad gets the full check.
    let csv = format!("{header}\n131016,KODOMO,123456789018,,,,,,,H1,x,,\n");
    let (_, rows) = collect(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    assert!(rows[0].as_ref().unwrap_err().len() > 5);
}

#[test]
fn non_ascii_dates_are_errors_not_panics() {
    // Found by the random-row test: `Date::parse` slices by byte offset, so an 8- or
    // 10-byte value with a multi-byte character in it must not reach it.
    let header = format!("{MINIMAL_HEADER},basicFiveInfo.dateOfBirth");
    for bad in [",ア ｱ", "２０２６0401", "2026-0４-01"] {
        let csv = format!("{header}\n{},\"{bad}\"\n", minimal_row("123456789018"));
        let (_, rows) = collect(Format::Csv, csv.as_bytes(), &ParseOptions::default());
        let e = rows[0].as_ref().unwrap_err();
        assert_eq!((e[0].field.as_str(), e[0].rule), ("basicFiveInfo.dateOfBirth", "date"), "{bad}");
    }
}

// ---------------------------------------------------------------- JSON structure

fn json_record(extra: &str) -> String {
    format!(
        r#"{{"municipalityCode":"131016","orgSpecificCertificateTypeId":"A","myNumber":"123456789018",
        "isNotDisclosed":"0","medicalSubsidyInsurerNumber":88131016,"certificationName":"x",
        "medicalSubsidyRecipientNumber":"1","validFrom":20260401,"validTo":"2026-04-01","historyKey":"h",
        "isDeleted":false{extra}}}"#
    )
}

#[test]
fn json_values_of_natural_types() {
    let json = format!(
        "[{}]",
        json_record(
            r#","basicFiveInfo":{"sex":2,"dateOfBirth":null,"nameKana":"ｶﾞ"},"maxCopaymentAmount":1500,
            "isAlwaysReimbursement":1,"copayment":[{"category":"外来","burdenDefinition":"定率","ratePerVisit":"30"}],
            "designatedMedicalInstitutions":[{"code":1311234569}]"#
        )
    );
    let rows = good_rows(Format::Json, json.as_bytes(), &ParseOptions::default());
    let c = &rows[0].certificate;
    assert_eq!((c.basic_five_info.sex, c.basic_five_info.name_kana.as_str()), (2, "ガ"));
    assert_eq!(c.max_copayment_amount.monthly, Some(1500));
    assert!(c.is_always_reimbursement);
    assert_eq!(c.copayment[0].rate_per_visit, Some(30));
    assert_eq!(c.designated_medical_institutions[0].code, 1311234569);
    assert_eq!(c.valid_from, date("2026-04-01"));
}

#[test]
fn json_record_errors_are_row_errors() {
    let json = format!(
        "[{}, 123456789018, {}, {}]",
        json_record(r#","nickname":"x","myNumber":"1","basicFiveInfo":{"age":3}"#),
        json_record(r#","copayment":{"category":"外来"},"certificationDetail":[{"name":"a","value":["b"]},"c"]"#),
        json_record(r#","segment":[],"additionalConditions":[{"item":"a","code":"1","extra":2}]"#),
    );
    let (summary, rows) = collect(Format::Json, json.as_bytes(), &ParseOptions::default());
    let summary = summary.unwrap();
    assert_eq!((summary.rows, summary.rejected), (4, 4));
    let got: Vec<Vec<(String, &str)>> =
        rows.iter().map(|r| r.as_ref().unwrap_err().iter().map(|e| (e.field.clone(), e.rule)).collect()).collect();
    assert_eq!(
        got[0],
        [
            ("nickname".to_owned(), "unknown field"),
            ("myNumber".to_owned(), "duplicate field"),
            ("basicFiveInfo.age".to_owned(), "unknown field")
        ]
    );
    assert_eq!(got[1], [(FIELD_RECORD.to_owned(), "type")]);
    assert_eq!(
        got[2],
        [
            ("copayment".to_owned(), "type"),
            ("certificationDetail".to_owned(), "type"),
            ("certificationDetail".to_owned(), "type")
        ]
    );
    assert_eq!(got[3], [("additionalConditions.extra".to_owned(), "unknown field"), ("segment".to_owned(), "type")]);
    let text = format!("{rows:?}");
    assert!(!text.contains("123456789018"), "a My Number leaked: {text}");
}

#[test]
fn json_syntax_errors_end_the_file_with_the_row() {
    let good = json_record("");
    let json = format!("[{good}, {good}, {{\"myNumber\": \"123456789018\" \"x\"}}, {good}]");
    let mut delivered = 0;
    let e = invalid(parse_json(json.as_bytes(), &ParseOptions::default(), |_| delivered += 1));
    assert_eq!(delivered, 2);
    assert_eq!((e[0].row, e[0].field.as_str(), e[0].rule), (3, FIELD_RECORD, "json syntax"));
    assert!(e[0].message.contains("line") && !e[0].message.contains("123456789018"), "{}", e[0].message);

    for (bad, rule) in [
        (r#"{"myNumber":"123456789018"}"#, "json syntax"),
        (r#""123456789018""#, "json syntax"),
        ("123456789018", "json syntax"),
        ("[] []", "json syntax"),
        ("", "json syntax"),
        ("[", "json syntax"),
    ] {
        let e = invalid(parse_json(bad.as_bytes(), &ParseOptions::default(), |_| {}));
        assert_eq!(e[0].rule, rule, "{bad}");
        assert!(!e[0].to_string().contains("123456789018"), "{}", e[0]);
    }
    let e =
        invalid(parse_json(&b"[]"[..], &ParseOptions { encoding: Encoding::ShiftJis, ..Default::default() }, |_| {}));
    assert_eq!(e[0].rule, "encoding");
    // A BOM is fine.
    let json = format!("\u{FEFF}[{good}]");
    assert_eq!(good_rows(Format::Json, json.as_bytes(), &ParseOptions::default()).len(), 1);
}

// ---------------------------------------------------------------- streaming

/// Yields `head`, then fails: a parser that delivers rows before the failure streams.
struct FailAfter<'a> {
    head: &'a [u8],
}

impl Read for FailAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.head.is_empty() {
            return Err(io::Error::other("disk on fire"));
        }
        // Trickle: a few bytes per call.
        let n = buf.len().min(self.head.len()).min(7);
        buf[..n].copy_from_slice(&self.head[..n]);
        self.head = &self.head[n..];
        Ok(n)
    }
}

#[test]
fn both_readers_stream() {
    let csv = format!("{MINIMAL_HEADER}\n{}\n{}\n", minimal_row("123456789018"), minimal_row("234567890121"));
    let mut seen = 0;
    let r = parse_csv(FailAfter { head: csv.as_bytes() }, &ParseOptions::default(), |r| {
        assert!(r.is_ok());
        seen += 1;
    });
    assert!(matches!(r, Err(ParseError::Io(_))));
    assert_eq!(seen, 2);

    let json = format!("[{},{},", json_record(""), json_record(""));
    let mut seen = 0;
    let r = parse_json(FailAfter { head: json.as_bytes() }, &ParseOptions::default(), |r| {
        assert!(r.is_ok());
        seen += 1;
    });
    assert!(matches!(r, Err(ParseError::Io(_))), "{r:?}");
    assert_eq!(seen, 2);
}

#[test]
fn parse_all_is_all_or_nothing() {
    let all = parse_all(Format::Csv, &read_data("sample-utf8.csv")[..], &ParseOptions::default()).unwrap();
    assert_eq!(all.len(), 6);
    let e = invalid(
        parse_all(Format::Csv, &read_data("bad-rows.csv")[..], &ParseOptions::default())
            .map(|_| ParseSummary::default()),
    );
    assert_eq!(e.len(), String::from_utf8(read_data("bad-rows.expected.txt")).unwrap().lines().count());
}

// ---------------------------------------------------------------- generated identifiers

#[test]
fn many_generated_people_round_trip_through_both_formats() {
    let mut csv = format!("{MINIMAL_HEADER},designatedMedicalInstitutions\n");
    let mut json = Vec::new();
    for i in 0..200u32 {
        let my = make::my_number(u64::from(i) * 7_919 + 1);
        let muni = make::municipality_code(13_101 + i % 20);
        let insurer = make::insurer_number(54, (i % 47 + 1) as u8, (i % 1000) as u16);
        let recipient = make::national_recipient_number(i * 31);
        let inst = make::institution_code((i % 47 + 1) as u8, 1, i);
        csv.push_str(&format!("{muni},T{i},{my},0,{insurer},難病,{recipient},2026-04-01,2027-03-31,H{i},0,{inst}\n"));
        json.push(format!(
            r#"{{"municipalityCode":"{muni}","orgSpecificCertificateTypeId":"T{i}","myNumber":"{my}","isNotDisclosed":false,
            "medicalSubsidyInsurerNumber":"{insurer}","certificationName":"難病","medicalSubsidyRecipientNumber":"{recipient}",
            "validFrom":"2026-04-01","validTo":"2027-03-31","historyKey":"H{i}","isDeleted":false,
            "designatedMedicalInstitutions":[{{"code":"{inst}"}}]}}"#
        ));
    }
    let from_csv = good_rows(Format::Csv, csv.as_bytes(), &ParseOptions::default());
    let from_json = good_rows(Format::Json, format!("[{}]", json.join(",")).as_bytes(), &ParseOptions::default());
    assert_eq!(from_csv.len(), 200);
    assert_eq!(certificates(&from_csv), certificates(&from_json));
}

// ---------------------------------------------------------------- documentation

#[test]
fn docs_list_every_column() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/file-formats.md");
    let doc = std::fs::read_to_string(path).unwrap();
    for f in ALL_FIELDS {
        assert!(doc.contains(&format!("`{}`", f.name())), "docs/file-formats.md does not list {}", f.name());
        for j in f.japanese_names() {
            let full = j.replace('(', "（").replace(')', "）");
            assert!(doc.contains(j) || doc.contains(&full), "docs/file-formats.md does not list {j}");
        }
    }
}

// ---------------------------------------------------------------- random input

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for encoding in [Encoding::Auto, Encoding::Utf8, Encoding::ShiftJis] {
            let opts = ParseOptions { encoding, ..Default::default() };
            let _ = parse_csv(&bytes[..], &opts, |_| {});
            let _ = parse_json(&bytes[..], &opts, |_| {});
        }
    }

    #[test]
    fn random_rows_under_a_valid_header_never_panic(
        cells in proptest::collection::vec(
            proptest::collection::vec("[0-9a-zA-Zｱ-ﾝﾞﾟア-ンあ-ん;:=\\-\", \r\n]{0,16}", ALL_FIELDS.len()),
            0..8,
        )
    ) {
        let header: Vec<&str> = ALL_FIELDS.iter().map(|f| f.name()).collect();
        let mut csv = header.join(",");
        csv.push('\n');
        for row in &cells {
            let quoted: Vec<String> = row.iter().map(|c| format!("\"{}\"", c.replace('"', "\"\""))).collect();
            csv.push_str(&quoted.join(","));
            csv.push('\n');
        }
        let mut n = 0;
        let summary = parse_csv(csv.as_bytes(), &ParseOptions::default(), |r| {
            n += 1;
            if let Err(e) = r {
                assert!(!e.is_empty());
            }
        });
        prop_assert_eq!(summary.map(|s| s.rows).ok(), Some(n));
        prop_assert_eq!(n, cells.len());
    }

    #[test]
    fn random_json_records_never_panic(
        pairs in proptest::collection::vec(
            (proptest::sample::select(vec![
                "municipalityCode", "myNumber", "basicFiveInfo", "copayment", "maxCopaymentAmount",
                "additionalConditions", "designatedMedicalInstitutions", "certificationDetail", "isDeleted", "x",
            ]),
            proptest::sample::select(vec![
                "null", "true", "1", "-1.5e3", "\"\"", "\"ｶﾞ\"", "[]", "{}", "[{}]", "[1]", "[{\"code\":1}]",
                "{\"monthly\":\"a\"}", "[{\"category\":[]}]", "\"123456789018\"",
            ])),
            0..12,
        )
    ) {
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let json = format!("[{{{}}}]", body.join(","));
        let mut n = 0;
        let summary = parse_json(json.as_bytes(), &ParseOptions::default(), |r| {
            n += 1;
            if let Err(e) = r {
                assert!(!format!("{e:?}").contains("123456789018"));
            }
        });
        prop_assert!(summary.is_ok());
        prop_assert_eq!(n, 1);
    }

    #[test]
    fn kana_normalisation_never_panics(s in "\\PC{0,24}") {
        let _ = crate::kana::normalise_kana(&s);
    }
}

/// What `split_csv_chunks` + `CsvBatch::validate` give, with the row numbers.
fn chunked_rows(
    input: &[u8],
    opts: &ParseOptions,
    chunk_bytes: usize,
) -> (Result<(usize, Encoding), String>, Vec<RowResult>) {
    let mut rows = Vec::new();
    let r = crate::csv_reader::split_csv_chunks(
        input,
        opts,
        chunk_bytes,
        || None,
        |batch| {
            batch.validate(|_, r| rows.push(r));
        },
    );
    (r.map_err(|e| format!("{e:?}")), rows)
}

#[test]
fn chunked_splitting_reads_every_awkward_file_like_the_record_loop() {
    let a = minimal_row("123456789018");
    let b = minimal_row("234567890121");
    let header = format!("{MINIMAL_HEADER},basicFiveInfo.name,basicFiveInfo.address");
    let cases: Vec<Vec<u8>> = vec![
        // Quoted fields holding delimiters, line breaks (LF, CRLF, CR) and doubled quotes.
        format!("{header}\r\n{a},\"山田\"\"\r\n太郎\",\"千代田区,\n1\r2\"\r\n{b},x,\"\"\r\n").into_bytes(),
        // A quote inside an unquoted field is a character; blank lines and CR line ends.
        format!("{header}\n\n{a},ab\"c,d\"\r\r\n\n{b},\"e\"f,g\n\n").into_bytes(),
        // … also when no other quote follows on its line (an inch mark).
        format!("{header}\n{a},5\",x\n{b},x,\"y\"\n{a},\"z\",w\n").into_bytes(),
        // A BOM, no final line end, a row with too many fields.
        format!("\u{feff}{header}\n{a},x,y,z\n{b},x,y").into_bytes(),
        // A quoted header cell and an unterminated quote at the end.
        format!("{header},\"basicFiveInfo.nameKana\"\n{a},x,y,ﾀﾛｳ\n{b},\"x,y\n").into_bytes(),
        // Header only; empty; blank lines only.
        format!("{header}\n").into_bytes(),
        Vec::new(),
        b"\n\r\n".to_vec(),
    ];
    for (i, input) in cases.iter().enumerate() {
        for encoding in [Encoding::Auto, Encoding::Utf8] {
            let opts = ParseOptions { encoding, ..Default::default() };
            let (whole, want) = collect(Format::Csv, input, &opts);
            let whole = whole.map(|s| (s.rows, s.encoding)).map_err(|e| format!("{e:?}"));
            for chunk_bytes in [1, 2, 3, 5, 8, 13, 64, 1 << 16] {
                let (got, rows) = chunked_rows(input, &opts, chunk_bytes);
                assert_eq!(got, whole, "case {i} {encoding} chunks of {chunk_bytes}");
                assert_eq!(rows, want, "case {i} {encoding} chunks of {chunk_bytes}");
            }
        }
    }
    // Shift_JIS: detected on the first non-ASCII record, whichever chunk holds it.
    let sjis = sjis_of_utf8_sample();
    let (whole, want) = collect(Format::Csv, &sjis, &ParseOptions::default());
    for chunk_bytes in [1, 10, 333, 1 << 16] {
        let (got, rows) = chunked_rows(&sjis, &ParseOptions::default(), chunk_bytes);
        assert_eq!(got, whole.as_ref().map(|s| (s.rows, s.encoding)).map_err(|e| format!("{e:?}")).clone());
        assert_eq!(rows, want, "Shift_JIS in chunks of {chunk_bytes}");
    }
}

/// A record split in place is checked for UTF-8 as a whole line, delimiters included; a
/// `csv::ByteRecord` as its fields back to back. A sequence cut by a delimiter is valid
/// in the second and not in the first, and must be an encoding error in the field either
/// way: in unquoted records (split in place), and after a quoted one (the csv reader).
#[test]
fn a_utf8_sequence_cut_by_a_delimiter_is_an_encoding_error_in_both_csv_paths() {
    let a = minimal_row("123456789018");
    let b = minimal_row("234567890121");
    let mut input = format!("{MINIMAL_HEADER},basicFiveInfo.name,basicFiveInfo.address\n").into_bytes();
    for (row, rest) in [
        (&a, &b",\xE3\x81,\x82\n"[..]),
        (&b, b",\xE3\x81,\x82\n"),
        (&a, b",\"\xE3\x81\",\x82\n"),
        (&b, b",\xE3\x81,\x82\n"),
    ] {
        input.extend_from_slice(row.as_bytes());
        input.extend_from_slice(rest);
    }
    let opts = ParseOptions { encoding: Encoding::Utf8, ..Default::default() };
    let (whole, want) = collect(Format::Csv, &input, &opts);
    assert_eq!(whole.map(|s| s.rows).map_err(|e| format!("{e:?}")), Ok(4));
    for (i, row) in want.iter().enumerate() {
        let errs = row.as_ref().expect_err("a value that is not UTF-8");
        for field in ["basicFiveInfo.name", "basicFiveInfo.address"] {
            assert!(errs.iter().any(|e| e.field == field && e.rule == "encoding"), "row {} {field}: {errs:?}", i + 1);
        }
    }
    for chunk_bytes in [1, 7, 64, 1 << 16] {
        let (got, rows) = chunked_rows(&input, &opts, chunk_bytes);
        assert_eq!(got, Ok((4, Encoding::Utf8)), "chunks of {chunk_bytes}");
        assert_eq!(rows, want, "chunks of {chunk_bytes}");
    }
}

#[test]
fn parallel_diff_parsing_gives_the_changes_and_errors_of_the_sequential_parse() {
    let deriver = PmhIdDeriver::new(b"parallel diff test");
    let sequential = |input: &[u8], opts: &ParseOptions| {
        parse_all(Format::Csv, input, opts).map(|rows| {
            let row_of: Vec<usize> = rows.iter().map(|r| r.row).collect();
            (row_of, rows.into_iter().map(|r| r.into_change(&deriver)).collect::<Vec<Change>>())
        })
    };
    // The sample files, and files rejected before any row: an unknown column, a header
    // without data rows, no bytes at all.
    let mut files: Vec<(String, Vec<u8>)> = ["sample-utf8.csv", "sample-sjis.csv", "sample-diff.csv", "bad-rows.csv"]
        .iter()
        .map(|n| (n.to_string(), read_data(n)))
        .collect();
    let a = minimal_row("123456789018");
    files.push(("unknown column".into(), format!("{MINIMAL_HEADER},noSuchField\n{a},x\n").into_bytes()));
    files.push(("header only".into(), format!("{MINIMAL_HEADER}\n").into_bytes()));
    files.push(("empty".into(), Vec::new()));
    for (name, input) in &files {
        let opts = ParseOptions { file_name: Some(name.clone()), ..Default::default() };
        let want = format!("{:?}", sequential(input, &opts));
        for threads in [1, 2, 3] {
            for chunk_bytes in [1, 7, 100, 1 << 20] {
                let got = crate::load::parse_changes_in_chunks(
                    Format::Csv,
                    &input[..],
                    &opts,
                    &deriver,
                    threads,
                    chunk_bytes,
                );
                assert_eq!(format!("{got:?}"), want, "{name}, {threads} threads, chunks of {chunk_bytes}");
            }
        }
    }
    // The bad-rows file is rejected with every error, in row order, however it is cut.
    let bad = crate::load::parse_changes_in_chunks(
        Format::Csv,
        &read_data("bad-rows.csv")[..],
        &ParseOptions::default(),
        &deriver,
        2,
        50,
    );
    let Err(ParseError::Invalid(errors)) = bad else { panic!("bad-rows.csv must be rejected") };
    assert!(errors.len() > 10, "{errors:?}");
    assert!(errors.windows(2).all(|w| w[0].row <= w[1].row), "errors out of row order");
}

#[test]
fn parallel_diff_parsing_reports_a_read_error_and_returns_no_changes() {
    // Good rows before the failure must not come back as a partial change set.
    let deriver = PmhIdDeriver::new(b"parallel diff test");
    let rows: String = (0..50u64).map(|i| format!("{}\n", minimal_row(&make::my_number(1000 + i)))).collect();
    let csv = format!("{MINIMAL_HEADER}\n{rows}");
    for threads in [1, 2, 3] {
        for chunk_bytes in [1, 100, 1 << 20] {
            let got = crate::load::parse_changes_in_chunks(
                Format::Csv,
                FailAfter { head: csv.as_bytes() },
                &ParseOptions::default(),
                &deriver,
                threads,
                chunk_bytes,
            );
            match got {
                Err(ParseError::Io(e)) => assert!(e.to_string().contains("disk on fire"), "{e}"),
                other => panic!("{threads} threads, chunks of {chunk_bytes}: {other:?}"),
            }
        }
    }
}
