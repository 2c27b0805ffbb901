//! Municipal uploads (`POST /v1/subsidy/uploads?mode=full|diff`) and their outcomes.
//!
//! An upload is all or nothing:
//! 1. The body (JSON array with the PMH field names, or CSV in UTF-8 or Shift_JIS) is
//!    parsed and validated by the loader library, every row, with the caller's
//!    municipality filled in where the file leaves `municipalityCode` empty.
//! 2. Authority: a row of another municipality, or a certificate whose 公費負担者番号 is not
//!    one the token may write, makes the whole upload 403 `forbidden`, listing those rows.
//! 3. Validity: any bad row makes it 422 `invalid_input`, listing every bad row and field.
//! 4. Otherwise the rows become one engine change set — `diff`: upserts and deletes;
//!    `full`: the municipality's certificates become exactly the file's — applied in one
//!    synced RocksDB batch together with the upload's outcome record and its
//!    `Idempotency-Key`, so that a 200 survives `kill -9` and so does the memory of it.
//!
//! Every upload gets an id and a stored outcome, accepted or not
//! (`GET /v1/subsidy/uploads/{id}`; a municipality lists its own with
//! `GET /v1/subsidy/uploads`). A retry with the same `Idempotency-Key` (per token) and the
//! same body gets the stored outcome again (header `Idempotent-Replayed: true`) and
//! changes nothing; the same key with another body is 409 `idempotency_conflict`.
//!
//! Uploads run one at a time (a lock around check, parse and apply): they are a few a day
//! per municipality, and serialising them makes the idempotency check exact.

use axum::extract::{FromRequest, Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pmh_engine::store::JournalRecord;
use pmh_engine::{ApplyMode, Change, Error as EngineError, InsurerNumber, MunicipalityCode};
use pmh_loader::config::{Role, Token};
use pmh_loader::{Encoding, Format, ParseError, ParseOptions, ParsedRow, RowError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, Code, Detail, ErrorBody, ErrorObject, json_bytes, json_response};
use crate::extract::{Body, query_pair};
use crate::metrics::UploadOutcome;
use crate::state::AppState;
use crate::time::rfc3339_tokyo_micros;

/// Rule of a row outside the caller's 公費負担者番号.
pub const RULE_OWN_INSURER: &str = "own insurer numbers";
/// The loader's rule for a row of another municipality.
const RULE_OWN_MUNICIPALITY: &str = "caller's municipality";
/// Most uploads listed at once.
pub const MAX_LIST: usize = 200;

/// Whether a full upload replaces the municipality's certificates or a differential
/// one changes only the listed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 全件連携.
    Full,
    /// 差分連携.
    Diff,
}

impl Mode {
    /// `full` or `diff`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Diff => "diff",
        }
    }
}

/// The success body of an upload (design §6).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadSummary {
    /// The upload's id.
    pub upload_id: String,
    /// `full` or `diff`.
    pub mode: String,
    /// Data rows in the file.
    pub rows: u64,
    /// New certificates.
    pub inserted: u64,
    /// Changed certificates.
    pub updated: u64,
    /// Removed certificates (delete rows; for `full`, the municipality's certificates the
    /// file no longer lists).
    pub deleted: u64,
    /// Rows that changed nothing.
    pub unchanged: u64,
}

/// The stored outcome of an upload (`GET /v1/subsidy/uploads/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadRecord {
    /// The upload's id.
    pub upload_id: String,
    /// `accepted`, `rejected` (bad rows) or `forbidden` (outside the caller's authority).
    pub status: String,
    /// `full` or `diff`.
    pub mode: String,
    /// The municipality (6 digits).
    pub municipality_code: String,
    /// The name of the token that uploaded.
    pub uploaded_by: String,
    /// When it was received (RFC 3339, Japan time).
    pub received_at: String,
    /// `csv` or `json`.
    pub format: String,
    /// The encoding the file was read in.
    pub encoding: String,
    /// Body size in bytes.
    pub bytes: u64,
    /// Data rows in the file.
    pub rows: u64,
    /// New certificates.
    pub inserted: u64,
    /// Changed certificates.
    pub updated: u64,
    /// Removed certificates.
    pub deleted: u64,
    /// Rows that changed nothing.
    pub unchanged: u64,
    /// Number of errors (the same as `error.details` in full records).
    pub error_count: u64,
    /// Why it was refused (absent when accepted). In listings `details` is left empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

impl UploadRecord {
    fn summary(&self) -> UploadSummary {
        UploadSummary {
            upload_id: self.upload_id.clone(),
            mode: self.mode.clone(),
            rows: self.rows,
            inserted: self.inserted,
            updated: self.updated,
            deleted: self.deleted,
            unchanged: self.unchanged,
        }
    }

    /// The response this outcome was (and is, when replayed) answered with.
    fn response(&self) -> Response {
        match &self.error {
            None => json_response(StatusCode::OK, &self.summary()).unwrap_or_else(IntoResponse::into_response),
            Some(e) => {
                let code = match e.code.as_str() {
                    "forbidden" => Code::Forbidden,
                    _ => Code::InvalidInput,
                };
                let mut err = ApiError::with_details(code, e.message.clone(), e.details.clone());
                err.message = format!("{} (upload {})", e.message, self.upload_id);
                err.into_response()
            }
        }
    }
}

/// `GET /v1/subsidy/uploads` answer.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct UploadList {
    /// Newest first, without error details.
    pub uploads: Vec<UploadRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdempotencyRecord {
    upload_id: String,
    body_sha256: String,
}

fn upload_key(municipality: u32, micros: i64) -> Vec<u8> {
    format!("upload/{municipality:06}/{micros:020}").into_bytes()
}

fn upload_id(municipality: u32, micros: i64) -> String {
    format!("{municipality:06}-{micros}")
}

fn parse_upload_id(id: &str) -> Option<(u32, i64)> {
    let (m, t) = id.split_once('-')?;
    if m.len() != 6 || !m.bytes().all(|b| b.is_ascii_digit()) || t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((m.parse().ok()?, t.parse().ok()?))
}

fn idempotency_key(token: &Token, key: &str) -> Vec<u8> {
    format!("idem/{}/{key}", token.name).into_bytes()
}

/// Format and encoding from `Content-Type` (absent: JSON if the body starts with `[`).
fn format_of(headers: &HeaderMap, body: &[u8]) -> Result<(Format, Encoding), ApiError> {
    let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let mut parts = ct.split(';').map(str::trim);
    let mime = parts.next().unwrap_or("");
    let charset = parts.find_map(|p| p.strip_prefix("charset=")).map(|c| c.trim_matches('"'));
    let encoding = match charset {
        None => Encoding::Auto,
        Some(c) => c.parse::<Encoding>().map_err(|_| {
            ApiError::new(Code::UnsupportedMediaType, format!("charset {c} is not read; send utf-8 or shift_jis"))
        })?,
    };
    let format = match mime {
        "application/json" => Format::Json,
        "text/csv" | "application/csv" | "text/plain" => Format::Csv,
        "" | "application/octet-stream" => {
            if looks_like_json(body) {
                Format::Json
            } else {
                Format::Csv
            }
        }
        other => {
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                format!("{other} is not read; send application/json or text/csv (charset utf-8 or shift_jis)"),
            ));
        }
    };
    Ok((format, encoding))
}

/// Whether a body of unknown type is a JSON upload: its first non-blank byte (after any
/// UTF-8 BOM) opens an array. A CSV cannot start so: its first line is a header.
pub fn looks_like_json(body: &[u8]) -> bool {
    let start = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    start.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// What parsing and checking a body found.
struct Checked {
    rows: Vec<ParsedRow>,
    total_rows: u64,
    encoding: Encoding,
    /// Rows outside the caller's authority.
    forbidden: Vec<Detail>,
    /// Every other error.
    invalid: Vec<Detail>,
}

fn check_body(body: &[u8], format: Format, encoding: Encoding, token: &Token) -> Result<Checked, ApiError> {
    let municipality = token.municipality.ok_or_else(|| ApiError::new(Code::Forbidden, "token has no municipality"))?;
    let opts = ParseOptions { encoding, municipality: Some(municipality), file_name: None };
    let mut rows = Vec::new();
    let mut errors: Vec<RowError> = Vec::new();
    let summary = match pmh_loader::parse(format, body, &opts, |r| match r {
        Ok(row) => rows.push(row),
        Err(e) => errors.extend(e),
    }) {
        Ok(s) => s,
        Err(ParseError::Invalid(e)) => {
            errors.extend(e);
            Default::default()
        }
        Err(ParseError::Io(e)) => {
            return Err(ApiError::new(Code::MalformedRequest, format!("cannot read the body: {e}")));
        }
    };
    let (mut forbidden, invalid): (Vec<Detail>, Vec<Detail>) =
        errors.iter().map(Detail::from).partition(|d| d.rule == RULE_OWN_MUNICIPALITY);
    for r in rows.iter().filter(|r| !r.is_deleted) {
        let insurer = InsurerNumber::from_u32(r.certificate.medical_subsidy_insurer_number);
        if !token.may_write(insurer) {
            forbidden.push(Detail {
                row: Some(r.row),
                field: "medicalSubsidyInsurerNumber".into(),
                rule: RULE_OWN_INSURER.into(),
                message: format!("公費負担者番号 {insurer} is not one this token may write"),
                value: Some(insurer.to_string()),
            });
        }
    }
    forbidden.sort_by_key(|d| d.row);
    Ok(Checked { rows, total_rows: summary.rows as u64, encoding: summary.encoding, forbidden, invalid })
}

/// Uploads a municipality's file: `mode=full` (全件連携: the municipality's certificates
/// become exactly the file's) or `mode=diff` (差分連携). All or nothing.
#[utoipa::path(post, path = "/v1/subsidy/uploads", tag = "municipality",
    params(("mode" = String, Query, description = "`full` or `diff`"),
           ("allowEmpty" = Option<bool>, Query, description = "let a `full` upload with no rows remove every certificate of the municipality"),
           ("Idempotency-Key" = Option<String>, Header, description = "makes a retried upload harmless")),
    request_body(content = String, content_type = "text/csv", description = "CSV (UTF-8 or Shift_JIS), or with `Content-Type: application/json` a JSON array of records (PMH field names)"),
    responses((status = 200, body = UploadSummary),
              (status = 403, description = "rows outside the caller's municipality or 公費負担者番号", body = ErrorBody),
              (status = 409, description = "Idempotency-Key reused with another body", body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, description = "every bad row and field", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    caller.require(Role::Municipality)?;
    let token = caller.token(&st).clone();
    token.municipality.ok_or_else(|| ApiError::new(Code::Forbidden, "token has no municipality"))?;
    // Uploads are exempt from the whole-request timeout (a refusal must not race a
    // commit); the body alone must arrive within it.
    let body = match tokio::time::timeout(st.config().limits.request_timeout, Body::from_request(req, &st)).await {
        Ok(b) => b?.0,
        Err(_) => return Err(ApiError::new(Code::Timeout, "the body did not arrive within request_timeout")),
    };
    let (mode, allow_empty) = query_pair(uri.query().unwrap_or(""), "mode", "allowEmpty");
    let mode = match mode {
        Some("full") => Mode::Full,
        Some("diff") => Mode::Diff,
        _ => return Err(ApiError::invalid("mode", "enumeration", "the query parameter `mode` is `full` or `diff`")),
    };
    let allow_empty = matches!(allow_empty, Some("true" | "1"));
    let idem = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(s) if !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_graphic()) => Some(s.to_owned()),
            _ => {
                return Err(ApiError::invalid(
                    "Idempotency-Key",
                    "format",
                    "1-200 printable ASCII characters without spaces",
                ));
            }
        },
    };
    let (format, encoding) = format_of(&headers, &body)?;
    let submitted =
        submit(&st, &token, Submission { mode, allow_empty, idempotency_key: idem, format, encoding, body }).await?;
    let mut r = submitted.record.response();
    if submitted.replayed {
        r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(r)
}

/// An upload as received, by the API or the upload screen.
pub struct Submission {
    /// Full or differential.
    pub mode: Mode,
    /// Let an empty full upload delete every certificate of the municipality.
    pub allow_empty: bool,
    /// `Idempotency-Key`, validated.
    pub idempotency_key: Option<String>,
    /// JSON or CSV.
    pub format: Format,
    /// The encoding asked for (CSV).
    pub encoding: Encoding,
    /// The file.
    pub body: axum::body::Bytes,
}

/// What became of a submission.
pub struct Submitted {
    /// The stored outcome: accepted, rejected or forbidden.
    pub record: UploadRecord,
    /// Whether this is the replay of an earlier submission with the same idempotency key.
    pub replayed: bool,
}

/// Checks, applies and records an upload of `token`'s municipality (module doc). An `Err`
/// is an answer given before any outcome was recorded (idempotency conflict, our faults);
/// refusals of the file are `Ok` with a `rejected` or `forbidden` record.
pub async fn submit(st: &AppState, token: &Token, sub: Submission) -> Result<Submitted, ApiError> {
    let Submission { mode, allow_empty, idempotency_key: idem, format, encoding, body } = sub;
    let municipality: MunicipalityCode =
        token.municipality.ok_or_else(|| ApiError::new(Code::Forbidden, "token has no municipality"))?;
    let token = token.clone();
    let mut hasher = Sha256::new();
    hasher.update(mode.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(&body);
    let body_sha256: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();

    let _one_at_a_time = st.upload_lock().lock().await;
    let store = st.store().clone();
    if let Some(key) = &idem
        && let Some(v) = store.journal_get(&idempotency_key(&token, key))?
    {
        let rec: IdempotencyRecord = serde_json::from_slice(&v).map_err(ApiError::internal)?;
        if rec.body_sha256 != body_sha256 {
            return Err(ApiError::new(
                Code::IdempotencyConflict,
                format!("Idempotency-Key {key} was used for upload {} with another body", rec.upload_id),
            ));
        }
        let (m, t) = parse_upload_id(&rec.upload_id).ok_or_else(|| ApiError::internal("bad stored upload id"))?;
        let stored =
            store.journal_get(&upload_key(m, t))?.ok_or_else(|| ApiError::internal("upload record missing"))?;
        let record: UploadRecord = serde_json::from_slice(&stored).map_err(ApiError::internal)?;
        st.metrics().record_upload(UploadOutcome::Replayed);
        return Ok(Submitted { record, replayed: true });
    }

    // A strictly increasing time id (uploads are serialised by the lock above).
    let micros = {
        let now = pmh_engine::date::unix_now_micros();
        let last = store.journal_scan_rev(format!("upload/{:06}/", municipality.get()).as_bytes(), 1)?;
        let last = last.first().and_then(|(k, _)| std::str::from_utf8(&k[14..]).ok()?.parse::<i64>().ok());
        last.map_or(now, |l| now.max(l + 1))
    };
    let id = upload_id(municipality.get(), micros);
    let mut record = UploadRecord {
        upload_id: id.clone(),
        status: "accepted".into(),
        mode: mode.as_str().into(),
        municipality_code: municipality.to_string(),
        uploaded_by: token.name.clone(),
        received_at: rfc3339_tokyo_micros(micros),
        format: match format {
            Format::Csv => "csv".into(),
            Format::Json => "json".into(),
        },
        encoding: encoding.as_str().into(),
        bytes: body.len() as u64,
        rows: 0,
        inserted: 0,
        updated: 0,
        deleted: 0,
        unchanged: 0,
        error_count: 0,
        error: None,
    };
    // The records an outcome is stored as: the upload's, and its idempotency key's.
    let journal_records = {
        let idem =
            idem.map(|key| (idempotency_key(&token, &key), IdempotencyRecord { upload_id: id.clone(), body_sha256 }));
        move |record: &UploadRecord| -> Result<Vec<JournalRecord>, ApiError> {
            let mut out =
                vec![(upload_key(municipality.get(), micros), serde_json::to_vec(record).map_err(ApiError::internal)?)];
            if let Some((k, v)) = &idem {
                out.push((k.clone(), serde_json::to_vec(v).map_err(ApiError::internal)?));
            }
            Ok(out)
        }
    };

    let st2 = st.clone();
    let token2 = token.clone();
    // Returns the outcome as stored: the answer is built from it, not read back.
    let record = tokio::task::spawn_blocking(move || -> Result<UploadRecord, ApiError> {
        let checked = check_body(&body, format, encoding, &token2)?;
        record.rows = checked.total_rows;
        record.encoding = checked.encoding.as_str().into();
        let refusal = if !checked.forbidden.is_empty() {
            Some(ApiError::with_details(
                Code::Forbidden,
                format!("{} row(s) outside this token's municipality or 公費負担者番号; nothing was changed", checked.forbidden.len()),
                checked.forbidden,
            ))
        } else if !checked.invalid.is_empty() {
            Some(ApiError::with_details(
                Code::InvalidInput,
                format!("{} error(s) in the file; nothing was changed", checked.invalid.len()),
                checked.invalid,
            ))
        } else if mode == Mode::Full && checked.rows.is_empty() && !allow_empty {
            Some(ApiError::invalid(
                "(file)",
                "not empty",
                "a full upload with no rows would remove every certificate of the municipality; add allowEmpty=true to mean that",
            ))
        } else {
            None
        };
        let rows = checked.rows;
        let result = match refusal {
            Some(e) => Err(e),
            None => {
                let row_numbers: Vec<usize> = rows.iter().map(|r| r.row).collect();
                let deriver = st2.deriver();
                let changes: Vec<Change> = rows.into_iter().map(|r| r.into_change(deriver)).collect();
                let apply_mode = match mode {
                    Mode::Full => ApplyMode::ReplaceMunicipality(municipality.get()),
                    Mode::Diff => ApplyMode::Diff,
                };
                let mut journal_err = None;
                let applied = st2.store().apply_journaled(changes, apply_mode, |sum| {
                    let r = &mut record;
                    (r.inserted, r.updated, r.deleted, r.unchanged) = (sum.inserted, sum.updated, sum.deleted, sum.unchanged);
                    journal_records(r).unwrap_or_else(|e| {
                        journal_err = Some(e);
                        Vec::new()
                    })
                });
                if let Some(e) = journal_err {
                    return Err(e);
                }
                match applied {
                    Ok(_) => Ok(()),
                    Err(EngineError::Rejected(ce)) => {
                        let details: Vec<Detail> = ce
                            .problems
                            .iter()
                            .map(|p| Detail {
                                row: row_numbers.get(p.index).copied(),
                                field: p.field.to_owned(),
                                rule: p.rule.to_owned(),
                                message: p.message.clone(),
                                value: None,
                            })
                            .collect();
                        Err(ApiError::with_details(
                            Code::InvalidInput,
                            format!("{} error(s) in the file; nothing was changed", details.len()),
                            details,
                        ))
                    }
                    Err(e) => return Err(ApiError::internal(e)),
                }
            }
        };
        if let Err(e) = result {
            // Store the refusal too, so the upload's id answers and a retry replays it.
            record.status = if e.code == Code::Forbidden { "forbidden".into() } else { "rejected".into() };
            (record.inserted, record.updated, record.deleted, record.unchanged) = (0, 0, 0, 0);
            record.error_count = e.details.len() as u64;
            record.error = Some(e.body().error);
            let recs = journal_records(&record)?;
            let refs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
            st2.store().journal_put(&refs)?;
        }
        Ok(record)
    })
    .await
    .map_err(ApiError::internal)??;

    let r = &record;
    match r.status.as_str() {
        "accepted" => {
            st.metrics().record_upload(UploadOutcome::Accepted);
            tracing::info!(upload = %id, municipality = %municipality, mode = mode.as_str(), inserted = r.inserted,
                updated = r.updated, deleted = r.deleted, unchanged = r.unchanged, "upload accepted");
        }
        status => {
            let outcome = if status == "forbidden" { UploadOutcome::Forbidden } else { UploadOutcome::Rejected };
            st.metrics().record_upload(outcome);
            tracing::info!(upload = %id, municipality = %municipality, errors = r.error_count, status, "upload refused");
        }
    }
    Ok(Submitted { record, replayed: false })
}

/// The stored outcome of an upload. A municipality sees only its own (others' are 404);
/// an admin sees all.
#[utoipa::path(get, path = "/v1/subsidy/uploads/{id}", tag = "municipality",
    params(("id" = String, Path, description = "upload id")),
    responses((status = 200, body = UploadRecord), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_upload(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(Code::NotFound, "no such upload");
    let (m, _) = parse_upload_id(&id).ok_or_else(not_found)?;
    let token = caller.token(&st);
    match token.role {
        Role::Admin => {}
        Role::Municipality if token.municipality.map(|c| c.get()) == Some(m) => {}
        Role::Municipality => return Err(not_found()),
        Role::Gateway => {
            return Err(ApiError::new(Code::Forbidden, "uploads are read by municipality or admin tokens"));
        }
    }
    // The record is stored as the JSON it is answered with.
    Ok(json_bytes(StatusCode::OK, stored_json(&st, &id)?.ok_or_else(not_found)?))
}

/// The stored outcome of upload `id` as stored (JSON), if there is one.
fn stored_json(st: &AppState, id: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let Some((m, t)) = parse_upload_id(id) else { return Ok(None) };
    Ok(st.store().journal_get(&upload_key(m, t))?)
}

/// The stored outcome of upload `id`, if there is one.
pub fn stored(st: &AppState, id: &str) -> Result<Option<UploadRecord>, ApiError> {
    match stored_json(st, id)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v).map(Some).map_err(ApiError::internal),
    }
}

/// Up to `limit` uploads of `municipality` (all municipalities when `None`), newest
/// first, without error details.
pub fn list(st: &AppState, municipality: impl Into<Option<u32>>, limit: usize) -> Result<Vec<UploadRecord>, ApiError> {
    let prefix = match municipality.into() {
        Some(m) => format!("upload/{m:06}/"),
        None => "upload/".to_owned(),
    };
    let mut uploads = Vec::new();
    for (_, v) in st.store().journal_scan_rev(prefix.as_bytes(), limit)? {
        let mut r: UploadRecord = serde_json::from_slice(&v).map_err(ApiError::internal)?;
        if let Some(e) = &mut r.error {
            e.details.clear();
        }
        uploads.push(r);
    }
    Ok(uploads)
}

/// The caller's uploads, newest first (`limit`, default 50, at most 200). An admin lists
/// one municipality's with `municipality=NNNNNN`, or everyone's.
#[utoipa::path(get, path = "/v1/subsidy/uploads", tag = "municipality",
    params(("limit" = Option<usize>, Query, description = "at most 200; default 50"),
           ("municipality" = Option<String>, Query, description = "admin only: whose uploads")),
    responses((status = 200, body = UploadList)),
    security(("bearer" = [])))]
pub async fn list_uploads(
    State(st): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let (limit, muni) = query_pair(uri.query().unwrap_or(""), "limit", "municipality");
    let limit =
        match limit {
            None => 50,
            Some(s) => s.parse::<usize>().ok().filter(|n| (1..=MAX_LIST).contains(n)).ok_or_else(|| {
                ApiError::invalid("limit", "range", format!("limit is a number from 1 to {MAX_LIST}"))
            })?,
        };
    let token = caller.token(&st);
    let municipality = match token.role {
        Role::Municipality => {
            Some(token.municipality.ok_or_else(|| ApiError::new(Code::Forbidden, "token has no municipality"))?.get())
        }
        Role::Admin => match muni {
            Some(m) => Some(
                MunicipalityCode::parse(m)
                    .map_err(|e| ApiError::invalid("municipality", e.rule, "not a valid municipality code"))?
                    .get(),
            ),
            None => None,
        },
        Role::Gateway => {
            return Err(ApiError::new(Code::Forbidden, "uploads are read by municipality or admin tokens"));
        }
    };
    let uploads = list(&st, municipality, limit)?;
    json_response(StatusCode::OK, &UploadList { uploads })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_round_trip() {
        let id = upload_id(131016, 1_763_778_000_123_456);
        assert_eq!(id, "131016-1763778000123456");
        assert_eq!(parse_upload_id(&id), Some((131016, 1_763_778_000_123_456)));
        for bad in ["", "131016", "13101-1", "131016-", "131016-12a", "../etc-1"] {
            assert_eq!(parse_upload_id(bad), None, "{bad}");
        }
        // Keys sort by time within a municipality.
        assert!(upload_key(131016, 99) < upload_key(131016, 100));
    }

    #[test]
    fn formats_from_content_type() {
        let mut h = HeaderMap::new();
        assert_eq!(format_of(&h, b" [{}]").unwrap(), (Format::Json, Encoding::Auto));
        assert_eq!(format_of(&h, b"a,b\n").unwrap(), (Format::Csv, Encoding::Auto));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=Shift_JIS"));
        assert_eq!(format_of(&h, b"").unwrap(), (Format::Csv, Encoding::ShiftJis));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        assert_eq!(format_of(&h, b"").unwrap(), (Format::Json, Encoding::Utf8));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        assert_eq!(format_of(&h, b"").unwrap_err().code, Code::UnsupportedMediaType);
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=latin1"));
        assert_eq!(format_of(&h, b"").unwrap_err().code, Code::UnsupportedMediaType);
    }
}
