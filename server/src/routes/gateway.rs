//! Gateway routes: PMH-ID resolution, consents, eligibility lookups (single and batch),
//! and the constant `ping` route that benchmarks quote lookups against.
//!
//! Lookups call the engine directly on the runtime's worker thread instead of through
//! `spawn_blocking`: an in-cache lookup takes a few microseconds, less than the hand-off
//! to the blocking pool would cost (see `docs/server.md`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use pmh_engine::date::unix_now;
use pmh_engine::{Lookup, MyNumber};
use pmh_loader::config::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, Code, ErrorBody, consent_required, json_bytes, json_response};
use crate::extract::{self, Body, LookupQuery, PathPmhId};
use crate::metrics::LookupOutcome;
use crate::render;
use crate::state::AppState;
use crate::time::rfc3339_tokyo;

/// Most PMH-IDs in one batch lookup.
pub const MAX_BATCH: usize = 1000;

/// `POST /v1/pmh-ids` body.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PmhIdRequest {
    /// 個人番号: 12 digits with a valid check digit. Never stored or logged.
    #[schema(example = "123456789018")]
    pub my_number: String,
}

/// `POST /v1/pmh-ids` answer.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PmhIdResponse {
    /// The PMH-ID: 32 hexadecimal characters.
    pub pmh_id: String,
}

/// Resolves a My Number to its PMH-ID, for any valid number whether or not records exist.
#[utoipa::path(post, path = "/v1/pmh-ids", tag = "gateway", request_body = PmhIdRequest,
    responses((status = 200, body = PmhIdResponse), (status = 422, description = "bad My Number", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resolve_pmh_id(State(st): State<AppState>, caller: Caller, body: Body) -> Result<Response, ApiError> {
    caller.require(Role::Gateway)?;
    let req: PmhIdRequest = extract::json(&body.0)?;
    let number = MyNumber::parse(&req.my_number).map_err(|e| {
        ApiError::invalid("myNumber", e.rule, format!("not a valid My Number (12 digits with check digit): {}", e.rule))
    })?;
    let id = st.deriver().derive(&number);
    json_response(StatusCode::OK, &PmhIdResponse { pmh_id: id.to_string() })
}

/// `POST /v1/consents` body.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsentRequest {
    /// The person.
    pub pmh_id: String,
    /// The institution consented to (10-digit 医療機関コード).
    #[schema(example = "1311234569")]
    pub institution_code: String,
}

/// `POST /v1/consents` answer.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsentResponse {
    /// The person.
    pub pmh_id: String,
    /// The institution.
    pub institution_code: String,
    /// When the consent ends (exclusive), RFC 3339 in Japan time.
    #[schema(example = "2026-11-23T00:00:00+09:00")]
    pub valid_until: String,
}

/// Records the person's consent (提供同意) for an institution, for the configured lifetime.
#[utoipa::path(post, path = "/v1/consents", tag = "gateway", request_body = ConsentRequest,
    responses((status = 201, body = ConsentResponse), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn grant_consent(State(st): State<AppState>, caller: Caller, body: Body) -> Result<Response, ApiError> {
    caller.require(Role::Gateway)?;
    let req: ConsentRequest = extract::json(&body.0)?;
    let id = extract::pmh_id(&req.pmh_id, "pmhId")?;
    let inst = extract::institution(&req.institution_code, "institutionCode")?;
    let until = st.store().grant_consent(&id, inst, unix_now())?;
    json_response(
        StatusCode::CREATED,
        &ConsentResponse {
            pmh_id: id.to_string(),
            institution_code: inst.to_string(),
            valid_until: rfc3339_tokyo(until),
        },
    )
}

/// Revokes a consent. 204 when one was live, 404 `not_found` when none was.
#[utoipa::path(delete, path = "/v1/consents/{pmhId}", tag = "gateway",
    params(("pmhId" = String, Path, description = "the person"),
           ("institution" = String, Query, description = "10-digit institution code")),
    responses((status = 204, description = "revoked"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_consent(
    State(st): State<AppState>,
    caller: Caller,
    PathPmhId(id): PathPmhId,
    q: LookupQuery,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Gateway)?;
    if st.store().revoke_consent(&id, q.institution)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(Code::NotFound, "no live consent of this person for this institution"))
    }
}

/// Looks a person up for an institution on a date (design §5): 403 `consent_required`
/// without a live consent — the same body whether or not the person has records.
#[utoipa::path(get, path = "/v1/subsidy/eligibility/{pmhId}", tag = "gateway",
    params(("pmhId" = String, Path, description = "the person"),
           ("institution" = String, Query, description = "the asking institution (10-digit code)"),
           ("date" = Option<String>, Query, description = "YYYY-MM-DD; default today in Asia/Tokyo")),
    responses((status = 200, description = "`{pmhId, date, certificates: [...]}`; each certificate carries the upload \
                 field names plus `isDesignatedInstitution`, `basicFiveInfo` only when not withheld"),
              (status = 403, description = "consent_required", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn eligibility(
    State(st): State<AppState>,
    caller: Caller,
    PathPmhId(id): PathPmhId,
    q: LookupQuery,
) -> Result<Response, ApiError> {
    caller.require(Role::Gateway)?;
    match st.store().lookup(caller.client(), &id, q.institution, q.date)? {
        Lookup::ConsentRequired => {
            st.metrics().record_lookups(LookupOutcome::ConsentRequired, 1);
            Ok(consent_required())
        }
        Lookup::Answered(e) => {
            let outcome = if e.is_empty() { LookupOutcome::AnsweredEmpty } else { LookupOutcome::Answered };
            st.metrics().record_lookups(outcome, 1);
            let mut buf = Vec::with_capacity(256 + 1024 * e.len());
            render::eligibility(&mut buf, &id, &e);
            Ok(json_bytes(StatusCode::OK, buf))
        }
    }
}

/// `POST /v1/subsidy/eligibility:batch` body.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchRequest {
    /// The asking institution.
    pub institution_code: String,
    /// YYYY-MM-DD; default today in Asia/Tokyo.
    #[serde(default)]
    pub date: Option<String>,
    /// The people, at most 1000.
    pub pmh_ids: Vec<String>,
}

/// Looks many people up at once (pre-visit batch checks); results in request order, each
/// `ok` with its certificates or `consent_required`.
#[utoipa::path(post, path = "/v1/subsidy/eligibility:batch", tag = "gateway", request_body = BatchRequest,
    responses((status = 200, description = "`{results: [{pmhId, status: ok|consent_required, certificates}]}`"),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn eligibility_batch(State(st): State<AppState>, caller: Caller, body: Body) -> Result<Response, ApiError> {
    caller.require(Role::Gateway)?;
    let req: BatchRequest = extract::json(&body.0)?;
    let inst = extract::institution(&req.institution_code, "institutionCode")?;
    let date = extract::date_or_today(req.date.as_deref(), "date")?;
    if req.pmh_ids.len() > MAX_BATCH {
        return Err(ApiError::invalid("pmhIds", "size", format!("at most {MAX_BATCH} PMH-IDs per batch")));
    }
    let ids = req
        .pmh_ids
        .iter()
        .enumerate()
        .map(|(i, s)| extract::pmh_id(s, &format!("pmhIds[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let answers = st.store().lookup_batch(caller.client(), &ids, inst, date)?;
    let refused = answers.iter().filter(|a| matches!(a, Lookup::ConsentRequired)).count() as u64;
    let empty = answers.iter().filter(|a| a.answered().is_some_and(|e| e.is_empty())).count() as u64;
    let m = st.metrics();
    m.record_lookups(LookupOutcome::ConsentRequired, refused);
    m.record_lookups(LookupOutcome::AnsweredEmpty, empty);
    m.record_lookups(LookupOutcome::Answered, answers.len() as u64 - refused - empty);
    let mut buf = Vec::with_capacity(64 + 1024 * answers.len());
    render::batch(&mut buf, &ids, &answers);
    Ok(json_bytes(StatusCode::OK, buf))
}

/// The constant answer of `GET /v1/ping`.
pub const PING_BODY: &str = r#"{"status":"ok"}"#;

/// A constant answer behind the same authentication as lookups: the ceiling that HTTP
/// lookup throughput is quoted against (`pmh-bench http`). Any role.
#[utoipa::path(get, path = "/v1/ping", tag = "operations",
    responses((status = 200, description = "`{\"status\":\"ok\"}`")), security(("bearer" = [])))]
pub async fn ping(_caller: Caller) -> Response {
    json_bytes(StatusCode::OK, PING_BODY.as_bytes())
}
