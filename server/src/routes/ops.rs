//! Operations routes without authentication: health, metrics, the OpenAPI document.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::json_bytes;
use crate::state::AppState;

/// Liveness and readiness: 200 `{"status":"ok","generation":N}` while the store is open;
/// 503 `{"status":"access_log_unavailable",…}` while the access log cannot be written and
/// lookups are refused, so that a load balancer sends them elsewhere.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`{\"status\":\"ok\",\"generation\":N}`"),
              (status = 503, description = "`{\"status\":\"access_log_unavailable\",\"generation\":N}`")))]
pub async fn healthz(State(st): State<AppState>) -> Response {
    let store = st.store();
    let (status, word) = if store.access_log_failing() {
        (StatusCode::SERVICE_UNAVAILABLE, "access_log_unavailable")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = format!(r#"{{"status":"{word}","generation":{}}}"#, store.generation());
    json_bytes(status, body.into_bytes())
}

/// Prometheus metrics (text format 0.0.4): requests and latency per route, lookups by
/// outcome, uploads by outcome, store sizes.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(State(st): State<AppState>) -> Response {
    let store = st.store().clone();
    let st2 = st.clone();
    let text = tokio::task::spawn_blocking(move || st2.metrics().render(&store, st2.started().elapsed()))
        .await
        .unwrap_or_default();
    let mut r = text.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}

/// This document: every route the server serves, generated from the handlers.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi(State(st): State<AppState>) -> Response {
    json_bytes(StatusCode::OK, st.openapi_json().as_bytes().to_vec())
}
