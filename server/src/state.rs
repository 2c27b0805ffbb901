//! The state every handler shares: the store, the configuration, the PMH-ID deriver and
//! the metrics, behind one `Arc`.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use pmh_engine::{ClientId, PmhIdDeriver, Store};
use pmh_loader::config::{Config, ConfigError};

use crate::metrics::Metrics;

/// Shared state of the router (cheap to clone: one `Arc`).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    config: Config,
    deriver: PmhIdDeriver,
    /// The access-log client id of each token, by token index (interned once, so that a
    /// lookup logs its client without allocating).
    clients: Vec<ClientId>,
    metrics: Metrics,
    /// Serialises the check-then-apply of uploads, so that two uploads with the same
    /// `Idempotency-Key` cannot both pass the check. Parsing happens outside it.
    upload_lock: tokio::sync::Mutex<()>,
    started: Instant,
    /// The OpenAPI document, rendered once by [`crate::app`].
    openapi: OnceLock<String>,
    ui_sessions: crate::ui::Sessions,
}

impl AppState {
    /// State over an open store. The store must have been opened with
    /// `config.store_config()` (same secret fingerprint); the configuration must have a
    /// `pmh_id_secret`.
    pub fn new(store: Arc<Store>, config: Config) -> Result<AppState, ConfigError> {
        let deriver = config.deriver()?;
        let clients = config.tokens.iter().map(|t| store.register_client(&t.name)).collect();
        Ok(AppState {
            inner: Arc::new(Inner {
                store,
                config,
                deriver,
                clients,
                metrics: Metrics::default(),
                upload_lock: tokio::sync::Mutex::new(()),
                started: Instant::now(),
                openapi: OnceLock::new(),
                ui_sessions: crate::ui::Sessions::default(),
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The PMH-ID deriver (under the configured secret).
    pub fn deriver(&self) -> &PmhIdDeriver {
        &self.inner.deriver
    }

    /// The access-log client id of token `index`.
    pub fn client(&self, index: usize) -> ClientId {
        self.inner.clients[index]
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn upload_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.upload_lock
    }

    /// The OpenAPI document (JSON).
    pub fn openapi_json(&self) -> &str {
        self.inner.openapi.get().map(String::as_str).unwrap_or("{}")
    }

    pub(crate) fn set_openapi(&self, json: String) {
        let _ = self.inner.openapi.set(json);
    }

    /// Sessions of the upload screen.
    pub fn ui_sessions(&self) -> &crate::ui::Sessions {
        &self.inner.ui_sessions
    }

    /// When the state was created.
    pub fn started(&self) -> Instant {
        self.inner.started
    }
}
