//! The JSON reader: a top-level array of record objects with the PMH API field names,
//! streamed one element at a time.
//!
//! `serde_json`'s streaming deserializer drives a [`Visitor`] whose `visit_seq` takes the
//! array's elements one by one, converts each to a `RawRecord`, validates it and hands
//! the result to the caller before reading the next, so memory holds one record whatever
//! the array's length. Each element is first read into `(key, serde_json::Value)` pairs:
//! that keeps duplicate keys visible and lets a value of the wrong type become a row
//! error (naming the field) instead of a deserialization failure that would end the file.
//!
//! Nothing here lets `serde_json` put a value into an error message: its syntax errors
//! name a position, never content, and every "wrong type" case is handled by this module
//! without quoting the value (a My Number could be anywhere in a malformed file).

use std::collections::HashSet;
use std::fmt;
use std::io::{BufReader, Read};

use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::csv_reader::strip_bom;
use crate::error::{FIELD_FILE, FIELD_RECORD, ParseError, RowError, RowErrors};
use crate::field::{ALL_FIELDS, COPAY_FIELDS, Field};
use crate::options::{Encoding, ParseOptions, ParseSummary};
use crate::raw::{RawCondition, RawCopay, RawFaceItem, RawInstitution, RawRecord, Text, clean_string};
use crate::row::ParsedRow;
use crate::validate::validate;

/// Read-ahead buffer: `serde_json` reads byte by byte from its reader.
const BUFFER: usize = 64 * 1024;

/// Parses a JSON file (a top-level array of record objects), calling `on_row` once per
/// element, in array order, with the row or every error found in it.
///
/// Record objects use the PMH API names: `basicFiveInfo` is an object, list fields are
/// arrays of objects (see `docs/file-formats.md`). Scalar values may be strings, numbers
/// or booleans (`"isNotDisclosed": false` and `"false"` are the same); `null` is absent.
/// Unknown and duplicate keys are row errors. The input must be UTF-8 (a BOM is
/// skipped).
///
/// Returns `Err(ParseError::Invalid)` for a syntax error (after the rows before it were
/// delivered: the caller must drop the whole file) or a top level that is not an array.
pub fn parse_json<R: Read>(
    input: R,
    opts: &ParseOptions,
    mut on_row: impl FnMut(Result<ParsedRow, Vec<RowError>>),
) -> Result<ParseSummary, ParseError> {
    let file = opts.file_name.as_deref();
    if opts.encoding == Encoding::ShiftJis {
        let msg = "JSON files must be UTF-8 (RFC 8259); Shift_JIS is accepted for CSV only";
        return Err(ParseError::Invalid(vec![RowError::named(file, 0, FIELD_FILE.into(), "encoding", msg, "")]));
    }
    let (_, input) = strip_bom(input)?;
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(BUFFER, input));
    let mut state =
        State { opts, summary: ParseSummary { encoding: Encoding::Utf8, ..Default::default() }, in_array: false };
    let result = de.deserialize_any(TopVisitor { state: &mut state, on_row: &mut on_row }).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(state.summary),
        Err(e) if e.is_io() => Err(ParseError::Io(e.into())),
        Err(e) => {
            let (row, field) = if state.in_array { (state.summary.rows + 1, FIELD_RECORD) } else { (0, FIELD_FILE) };
            Err(ParseError::Invalid(vec![RowError::named(file, row, field.into(), "json syntax", e.to_string(), "")]))
        }
    }
}

struct State<'o> {
    opts: &'o ParseOptions,
    summary: ParseSummary,
    /// Whether the error position is inside the top-level array (row = next element).
    in_array: bool,
}

struct TopVisitor<'s, 'o, F> {
    state: &'s mut State<'o>,
    on_row: &'s mut F,
}

impl<'de, F: FnMut(Result<ParsedRow, Vec<RowError>>)> Visitor<'de> for TopVisitor<'_, '_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of record objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.state.in_array = true;
        while let Some(element) = seq.next_element_seed(ElementSeed)? {
            let s = &mut *self.state;
            s.summary.rows += 1;
            let mut errs = RowErrors::new(s.opts.file_name.as_deref(), s.summary.rows);
            let result = match element {
                Element::Object(pairs) => {
                    let mut raw = RawRecord::default();
                    read_object(pairs, &mut raw, &mut errs);
                    validate(raw, errs, s.opts)
                }
                Element::Other(kind) => {
                    let msg = format!("each element of the array must be a record object, not {kind}");
                    errs.push_named(FIELD_RECORD, "type", msg, "");
                    Err(errs.into_sorted())
                }
            };
            match &result {
                Ok(_) => s.summary.accepted += 1,
                Err(e) => {
                    s.summary.rejected += 1;
                    s.summary.errors += e.len();
                }
            }
            (self.on_row)(result);
        }
        self.state.in_array = false;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(A::Error::custom("the top level must be an array of records, not an object"))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom("the top level must be an array of records, not a string"))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom("the top level must be an array of records, not a boolean"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom("the top level must be an array of records, not a number"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom("the top level must be an array of records, not a number"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom("the top level must be an array of records, not a number"))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom("the top level must be an array of records, not null"))
    }
}

/// One array element: an object's key/value pairs in file order, or what it was instead.
enum Element {
    Object(Vec<(String, Value)>),
    Other(&'static str),
}

struct ElementSeed;

impl<'de> DeserializeSeed<'de> for ElementSeed {
    type Value = Element;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Element, D::Error> {
        d.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
        let mut pairs = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            pairs.push((key, value));
        }
        Ok(Element::Object(pairs))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Element::Other("an array"))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Element, E> {
        Ok(Element::Other("a string"))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Element, E> {
        Ok(Element::Other("a boolean"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Element, E> {
        Ok(Element::Other("a number"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Element, E> {
        Ok(Element::Other("a number"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Element, E> {
        Ok(Element::Other("a number"))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Element, E> {
        Ok(Element::Other("null"))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A scalar as text: strings as they are, numbers and booleans in their JSON spelling;
/// `Ok(None)` for null, `Err(kind)` for arrays and objects.
fn scalar_text(v: Value) -> Result<Option<String>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(kind(&other)),
    }
}

/// The top-level keys that hold one scalar field.
fn top_scalar(key: &str) -> Option<Field> {
    ALL_FIELDS.iter().copied().find(|f| !f.name().contains('.') && f.name() == key && !is_list(*f))
}

fn is_list(f: Field) -> bool {
    matches!(f, Field::AdditionalConditions | Field::DesignatedMedicalInstitutions | Field::CertificationDetail)
}

fn scalar(f: Field, v: Value, raw: &mut RawRecord<'_>, errs: &mut RowErrors<'_>) {
    match scalar_text(v) {
        Ok(Some(s)) => raw.set(f, clean_string(s)),
        Ok(None) => {}
        Err(k) => {
            errs.push(f, "type", format!("must be a string, number or boolean, not {k}"), "");
            raw.fail(f);
        }
    }
}

fn unknown(errs: &mut RowErrors<'_>, path: &str) {
    errs.push_named(path, "unknown field", format!("{path:?} is not a PMH field"), "");
}

/// Converts one record object.
fn read_object(pairs: Vec<(String, Value)>, raw: &mut RawRecord<'_>, errs: &mut RowErrors<'_>) {
    let mut seen = HashSet::with_capacity(pairs.len());
    for (key, value) in pairs {
        if !seen.insert(key.clone()) {
            errs.push_named(&key, "duplicate field", format!("{key:?} appears twice in the record"), "");
            continue;
        }
        match key.as_str() {
            "basicFiveInfo" => read_basic_five_info(value, raw, errs),
            "maxCopaymentAmount" => read_max_copayment(value, raw, errs),
            "additionalConditions" => {
                let items = two_key_list(Field::AdditionalConditions, value, raw, errs, ("item", "code"));
                raw.conditions.extend(items.into_iter().map(|(item, code)| RawCondition { item, code }));
            }
            "designatedMedicalInstitutions" => {
                let items = two_key_list(Field::DesignatedMedicalInstitutions, value, raw, errs, ("code", "name"));
                raw.institutions.extend(items.into_iter().map(|(code, name)| RawInstitution { code, name }));
            }
            "certificationDetail" => {
                let items = two_key_list(Field::CertificationDetail, value, raw, errs, ("name", "value"));
                raw.detail.extend(items.into_iter().map(|(name, value)| RawFaceItem { name, value }));
            }
            "copayment" => read_copayment(value, raw, errs),
            k => match top_scalar(k) {
                Some(f) => scalar(f, value, raw, errs),
                None => unknown(errs, k),
            },
        }
    }
}

fn read_basic_five_info(value: Value, raw: &mut RawRecord<'_>, errs: &mut RowErrors<'_>) {
    const PARTS: [Field; 5] = [Field::Name, Field::NameKana, Field::Address, Field::DateOfBirth, Field::Sex];
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                match PARTS.iter().find(|f| f.json_key() == k) {
                    Some(&f) => scalar(f, v, raw, errs),
                    None => unknown(errs, &format!("basicFiveInfo.{k}")),
                }
            }
        }
        other => {
            let msg = format!("must be an object {{name, nameKana, address, dateOfBirth, sex}}, not {}", kind(&other));
            errs.push_named("basicFiveInfo", "type", msg, "");
            for f in PARTS {
                raw.fail(f);
            }
        }
    }
}

fn read_max_copayment(value: Value, raw: &mut RawRecord<'_>, errs: &mut RowErrors<'_>) {
    const PARTS: [Field; 3] = [Field::MaxMonthly, Field::MaxPerVisit, Field::MaxInpatientMonthly];
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match PARTS.iter().find(|f| f.json_key() == k) {
                    Some(&f) => scalar(f, v, raw, errs),
                    None => unknown(errs, &format!("maxCopaymentAmount.{k}")),
                }
            }
        }
        // A plain amount is the monthly ceiling, as the CSV column `maxCopaymentAmount`.
        other => scalar(Field::MaxMonthly, other, raw, errs),
    }
}

fn read_copayment(value: Value, raw: &mut RawRecord<'_>, errs: &mut RowErrors<'_>) {
    let f = Field::CopayCategory;
    let shape = "{category, burdenDefinition, ratePerDay, …}";
    for (p, mut obj) in list(f, value, raw, errs, shape) {
        let mut rule = RawCopay::default();
        let mut ok = true;
        for (k, cf) in COPAY_FIELDS.iter().enumerate() {
            match sub(*cf, &mut obj, cf.json_key(), &p, errs) {
                Ok(v) => rule.values[k] = v,
                Err(()) => ok = false,
            }
        }
        report_unknown_keys(f, obj, errs);
        if ok {
            raw.copayment.push(rule);
        }
    }
}

/// The objects of a list field, each with its message prefix (`item N: ` / `copayment N: `).
/// Elements that are not objects are reported and skipped.
fn list(
    f: Field,
    value: Value,
    raw: &mut RawRecord<'_>,
    errs: &mut RowErrors<'_>,
    shape: &str,
) -> Vec<(String, serde_json::Map<String, Value>)> {
    let (list_name, noun) = if f == Field::CopayCategory { ("copayment", "copayment") } else { (f.name(), "item") };
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let p = format!("{noun} {}: ", i + 1);
                match item {
                    Value::Object(map) => out.push((p, map)),
                    other => {
                        let msg = format!("{p}must be an object {shape}, not {}", kind(&other));
                        errs.push_named(list_name, "type", msg, "");
                    }
                }
            }
            out
        }
        other => {
            let msg = format!("must be an array of {shape} objects, not {}", kind(&other));
            errs.push_named(list_name, "type", msg, "");
            raw.fail(f);
            Vec::new()
        }
    }
}

/// Takes a scalar member of a list object; `Err` (already reported) for a wrong type.
/// A list of two-key objects (`[{item, code}, …]` and the like): each element's two
/// values, for the elements whose values are both well-formed; every problem goes to
/// `errs`.
fn two_key_list(
    f: Field,
    value: Value,
    raw: &mut RawRecord<'_>,
    errs: &mut RowErrors<'_>,
    (a, b): (&str, &str),
) -> Vec<(Text<'static>, Text<'static>)> {
    let shape = format!("{{{a}, {b}}}");
    let mut out = Vec::new();
    for (p, mut obj) in list(f, value, raw, errs, &shape) {
        let x = sub(f, &mut obj, a, &p, errs);
        let y = sub(f, &mut obj, b, &p, errs);
        report_unknown_keys(f, obj, errs);
        if let (Ok(x), Ok(y)) = (x, y) {
            out.push((x, y));
        }
    }
    out
}

fn sub(
    f: Field,
    obj: &mut serde_json::Map<String, Value>,
    key: &str,
    p: &str,
    errs: &mut RowErrors<'_>,
) -> Result<Text<'static>, ()> {
    match obj.remove(key).map(scalar_text) {
        None => Ok(None),
        Some(Ok(v)) => Ok(v.and_then(clean_string)),
        Some(Err(k)) => {
            errs.push(f, "type", format!("{p}{key} must be a string or number, not {k}"), "");
            Err(())
        }
    }
}

/// Reports the keys left in a list object once its known members were taken (all unknown).
fn report_unknown_keys(f: Field, obj: serde_json::Map<String, Value>, errs: &mut RowErrors<'_>) {
    let list_name = if f == Field::CopayCategory { "copayment" } else { f.name() };
    for k in obj.keys() {
        unknown(errs, &format!("{list_name}.{k}"));
    }
}
