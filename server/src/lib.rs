//! # pmh-server — the HTTP API of the PMH lookup engine
//!
//! Receipt gateways look patients up at the reception desk; municipalities push their
//! files; operators watch and run the hub. [`app`] builds the axum [`Router`] over an
//! [`AppState`] (the open store and the configuration); [`serve`] runs it on a listener
//! with the connection policy (keep-alive, header timeout, graceful shutdown); the
//! `pmh-server` binary only reads the configuration, opens the store and calls both.
//!
//! ## Routes (design §6; `GET /openapi.json` is generated from the same handlers)
//! | route | role | module |
//! |---|---|---|
//! | `POST /v1/subsidy/uploads?mode=full\|diff`, `GET /v1/subsidy/uploads[/{id}]` | municipality (admin reads) | [`routes::uploads`] |
//! | `POST /v1/pmh-ids`, `POST /v1/consents`, `DELETE /v1/consents/{pmhId}` | gateway | [`routes::gateway`] |
//! | `GET /v1/subsidy/eligibility/{pmhId}`, `POST /v1/subsidy/eligibility:batch` | gateway | [`routes::gateway`] |
//! | `GET /v1/access-log/{pmhId}`, `POST /v1/admin/snapshots`, `GET /v1/admin/stats` | admin | [`routes::admin`] |
//! | `GET /v1/ping` | any token | [`routes::gateway`] (the benchmark ceiling) |
//! | `GET /healthz`, `GET /metrics`, `GET /openapi.json` | none | [`routes::ops`] |
//! | `/ui/…` (HTML) | municipality, signed in with a session cookie | [`ui`] |
//!
//! ## The hot path
//! `GET /v1/subsidy/eligibility/{pmhId}`: authenticate (SHA-256 of the token, constant-time
//! compare), parse the PMH-ID and the query in place, one engine lookup on the worker
//! thread (a few µs, so no `spawn_blocking`), render JSON straight from the archived
//! certificates into one buffer. Per request: the response buffer and nothing else of
//! ours is allocated; metrics are relaxed atomic adds.
//!
//! Every error, from any layer, is the one shape of [`error::ErrorBody`].

#![warn(missing_docs)]

pub mod auth;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod render;
pub mod routes;
pub mod serve;
pub mod state;
pub mod time;
pub mod ui;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use serve::serve;
pub use state::AppState;

use crate::error::{ApiError, Code};
use crate::routes::{admin, gateway, ops, uploads};

#[derive(OpenApi)]
#[openapi(
    info(title = "PMH lookup engine", description = "Medical-expense-subsidy eligibility (医療費助成の受給者証情報) \
        from municipalities to medical institutions: uploads, consents, lookups. Errors: \
        `{\"error\": {\"code\", \"message\", \"details\"}}`."),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody, error::ErrorObject, error::Detail)),
    tags((name = "gateway", description = "receipt gateways at the reception desk"),
         (name = "municipality", description = "municipalities' uploads"),
         (name = "admin", description = "operators"),
         (name = "operations", description = "health, metrics, this document"),
         (name = "ui", description = "the municipal upload screen (HTML)")),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The router and the OpenAPI document, from the same registrations: a route exists if
/// and only if the document lists it.
fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(gateway::eligibility))
        .routes(routes!(gateway::eligibility_batch))
        .routes(routes!(gateway::resolve_pmh_id))
        .routes(routes!(gateway::grant_consent))
        .routes(routes!(gateway::revoke_consent))
        .routes(routes!(gateway::ping))
        .routes(routes!(uploads::upload, uploads::list_uploads))
        .routes(routes!(uploads::get_upload))
        .routes(routes!(admin::access_log))
        .routes(routes!(admin::install_snapshot))
        .routes(routes!(admin::stats))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .routes(routes!(ui::index))
        .routes(routes!(ui::style))
        .routes(routes!(ui::login_form, ui::login))
        .routes(routes!(ui::logout))
        .routes(routes!(ui::upload_page, ui::upload))
        .routes(routes!(ui::history))
        .routes(routes!(ui::upload_result))
        .routes(routes!(ui::errors_csv))
        .split_for_parts()
}

/// The application: every route of design §6 over `state`.
pub fn app(state: AppState) -> Router {
    let (router, doc) = routes();
    state.set_openapi(doc.to_pretty_json().unwrap_or_else(|_| "{}".into()));
    let limit = state.config().limits.max_body_bytes;
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Per matched route: the request timeout, the error shape for 405, and metrics.
async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = metrics::route_index(req.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
    // Uploads and snapshot installs time their body read themselves and are not cut off
    // once they commit: a timeout answered while the commit goes on would be a lie.
    let long = matches!(metrics::ROUTES[route], "/v1/subsidy/uploads" | "/v1/admin/snapshots" | "/ui/upload");
    let mut resp = if long {
        next.run(req).await
    } else {
        match tokio::time::timeout(st.config().limits.request_timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::new(Code::Timeout, "the request took longer than request_timeout").into_response(),
        }
    };
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED && !resp.headers().contains_key(header::CONTENT_TYPE) {
        let allow = resp.headers().get(header::ALLOW).cloned();
        resp = ApiError::new(Code::MethodNotAllowed, "this route does not take that method").into_response();
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    }
    st.metrics().record_request(route, resp.status().as_u16(), start.elapsed());
    resp
}

async fn fallback(State(st): State<AppState>) -> ApiError {
    st.metrics().record_request(metrics::route_index(None), 404, std::time::Duration::ZERO);
    ApiError::new(Code::NotFound, "no such route; GET /openapi.json lists them")
}
