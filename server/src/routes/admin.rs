//! Admin routes: a person's access history, installing a prepared full snapshot while
//! serving, and store statistics.

use std::path::PathBuf;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use pmh_engine::AccessOutcome;
use pmh_loader::config::Role;
use pmh_loader::load::LoadError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, json_response};
use crate::extract::{self, Body, PathPmhId};
use crate::state::AppState;
use crate::time::rfc3339_tokyo_micros;

/// `GET /v1/access-log/{pmhId}` answer.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessHistory {
    /// The person.
    pub pmh_id: String,
    /// Every answer and refusal about the person, oldest first.
    pub entries: Vec<AccessItem>,
}

/// One access-log entry.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessItem {
    /// When (RFC 3339, Japan time, µs).
    pub at: String,
    /// The institution that asked.
    pub institution_code: String,
    /// The gateway token's name.
    pub client: String,
    /// The date asked about.
    pub date: String,
    /// `answered` or `consent_required`.
    pub outcome: String,
    /// Whether the personal block (基本5情報) was disclosed.
    pub personal_disclosed: bool,
    /// The certificates disclosed.
    pub certificates: Vec<DisclosedItem>,
}

/// A certificate named in an answer.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisclosedItem {
    /// 自治体コード.
    pub municipality_code: String,
    /// 公費負担者番号.
    pub medical_subsidy_insurer_number: String,
    /// 機関別受給者証種別ID.
    pub org_specific_certificate_type_id: String,
    /// 履歴キー.
    pub history_key: String,
}

/// The person's access history (アクセス記録): who asked, when, for which date, and what
/// was disclosed, including refusals. Admin only.
#[utoipa::path(get, path = "/v1/access-log/{pmhId}", tag = "admin",
    params(("pmhId" = String, Path, description = "the person")),
    responses((status = 200, body = AccessHistory), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn access_log(
    State(st): State<AppState>,
    caller: Caller,
    PathPmhId(id): PathPmhId,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let store = st.store().clone();
    let entries =
        tokio::task::spawn_blocking(move || store.access_history(&id)).await.map_err(ApiError::internal)??;
    let entries = entries
        .into_iter()
        .map(|e| AccessItem {
            at: rfc3339_tokyo_micros(e.at_micros),
            institution_code: format!("{:010}", e.institution),
            client: e.client,
            date: pmh_engine::Date::from_days(e.date).to_string(),
            outcome: match e.outcome {
                AccessOutcome::Answered => "answered".into(),
                AccessOutcome::ConsentRequired => "consent_required".into(),
            },
            personal_disclosed: e.personal_disclosed,
            certificates: e
                .disclosed
                .into_iter()
                .map(|d| DisclosedItem {
                    municipality_code: format!("{:06}", d.municipality_code),
                    medical_subsidy_insurer_number: format!("{:08}", d.insurer_number),
                    org_specific_certificate_type_id: d.org_specific_certificate_type_id,
                    history_key: d.history_key,
                })
                .collect(),
        })
        .collect();
    json_response(StatusCode::OK, &AccessHistory { pmh_id: id.to_string(), entries })
}

/// `POST /v1/admin/snapshots` body.
#[derive(Deserialize, ToSchema)]
pub struct InstallRequest {
    /// A directory written by `pmh-load full --prepare DIR`, readable by the server.
    pub dir: String,
}

/// `POST /v1/admin/snapshots` answer.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct InstallResponse {
    /// The new active generation.
    pub generation: u64,
}

/// Installs a full snapshot prepared by `pmh-load full --prepare DIR` and switches to it
/// atomically while serving (docs/operations.md). Lookups keep being answered throughout.
#[utoipa::path(post, path = "/v1/admin/snapshots", tag = "admin", request_body = InstallRequest,
    responses((status = 200, body = InstallResponse), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn install_snapshot(State(st): State<AppState>, caller: Caller, body: Body) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let req: InstallRequest = extract::json(&body.0)?;
    let dir = PathBuf::from(req.dir);
    let store = st.store().clone();
    let _one_writer = st.upload_lock().lock().await;
    let generation = tokio::task::spawn_blocking(move || pmh_loader::load::install(&store, &dir))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            LoadError::Io { .. } | LoadError::Usage(_) | LoadError::Rejected(_) => {
                ApiError::invalid("dir", "prepared snapshot", e.to_string())
            }
            LoadError::Store(e) => ApiError::internal(e),
        })?;
    tracing::info!(generation, "full snapshot installed");
    json_response(StatusCode::OK, &InstallResponse { generation })
}

/// `GET /v1/admin/stats` answer.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsResponse {
    /// Active generation.
    pub generation: u64,
    /// Live consents.
    pub live_consents: usize,
    /// Lookups that met a corrupt value since start.
    pub corrupt_reads: usize,
    /// Bytes held by the row cache (0 when `[rocksdb] row_cache_mib = 0`).
    pub row_cache_bytes: u64,
    /// Per column family: name, estimated keys, bytes.
    pub column_families: Vec<CfItem>,
}

/// One column family in [`StatsResponse`].
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CfItem {
    /// Name.
    pub name: String,
    /// Estimated keys.
    pub estimated_keys: u64,
    /// SST bytes.
    pub sst_bytes: u64,
    /// Memtable bytes.
    pub memtable_bytes: u64,
}

/// Store statistics (as `pmh-admin stats`). Admin only.
#[utoipa::path(get, path = "/v1/admin/stats", tag = "admin",
    responses((status = 200, body = StatsResponse)), security(("bearer" = [])))]
pub async fn stats(State(st): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let s = st.store().stats()?;
    json_response(
        StatusCode::OK,
        &StatsResponse {
            generation: s.generation,
            live_consents: s.live_consents,
            corrupt_reads: st.store().corrupt_reads(),
            row_cache_bytes: s.row_cache_bytes,
            column_families: s
                .column_families
                .iter()
                .map(|c| CfItem {
                    name: c.name.to_owned(),
                    estimated_keys: c.estimated_keys,
                    sst_bytes: c.sst_bytes,
                    memtable_bytes: c.memtable_bytes,
                })
                .collect(),
        },
    )
}
