//! Shared helpers of the server tests: an app over a temporary store with four tokens, a
//! request helper, and the `data/` samples cut per municipality.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use pmh_engine::Store;
use pmh_loader::config::Config;
use pmh_server::{AppState, app};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const GATEWAY: &str = "gw-token-0123456789";
pub const ADMIN: &str = "admin-token-0123456789";
/// 千代田区 (131016): the 公費負担者番号 of the samples there.
pub const CHIYODA: &str = "chiyoda-token-0123456789";
/// 中央区 (131024).
pub const CHUO: &str = "chuo-token-0123456789";
/// The asking clinic (designated for the 難病 sample certificate).
pub const CLINIC: &str = "1311234569";
/// Another clinic with no consents.
pub const OTHER_CLINIC: &str = "1312345679";
/// The institution the tests' store snapshots read with (consented for every sample person).
pub const AUDIT: &str = "0110113719";
/// My Numbers of the sample people.
pub const SAMPLE_PEOPLE: [&str; 5] = ["123456789018", "234567890121", "345678901234", "456789012346", "567890123457"];

pub fn config_text(max_body: usize) -> String {
    format!(
        r#"
pmh_id_secret = "server-test-secret"
consent_ttl = "24h"

[[tokens]]
name = "gw"
role = "gateway"
token = "{GATEWAY}"

[[tokens]]
name = "admin"
role = "admin"
token = "{ADMIN}"

[[tokens]]
name = "chiyoda"
role = "municipality"
token = "{CHIYODA}"
municipality = "131016"
insurer_numbers = ["88131016", "54131016", "21131016", "89131015"]

[[tokens]]
name = "chuo"
role = "municipality"
token = "{CHUO}"
municipality = "131024"
insurer_numbers = ["88131024"]

[store]
sync_writes = false

[limits]
max_body_bytes = {max_body}
request_timeout = "10s"
"#
    )
}

pub struct TestApp {
    pub router: Router,
    pub store: Arc<Store>,
    pub state: AppState,
    pub dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    }
    pub fn content_type(&self) -> Option<String> {
        self.header("content-type")
    }
}

/// Asserts an error response: status, code, and the one error shape.
pub fn assert_error(r: &Resp, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(v["error"]["details"].is_array(), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    assert_eq!(r.content_type().as_deref(), Some("application/json"));
}

pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data").join(name)
}

/// A CSV sample with only the header and the records of `municipality` (records may span
/// lines inside quotes; works on Shift_JIS too, where `"` and LF are never trail bytes).
pub fn own_rows_csv(file: &str, municipality: u32) -> Vec<u8> {
    let bytes = std::fs::read(data(file)).unwrap();
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut cur = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        cur.extend_from_slice(line);
        if cur.iter().filter(|&&b| b == b'"').count() % 2 == 0 {
            records.push(std::mem::take(&mut cur));
        }
    }
    let prefix = format!("{municipality:06},");
    let mut out = records[0].clone();
    for r in &records[1..] {
        if r.starts_with(prefix.as_bytes()) {
            out.extend_from_slice(r);
        }
    }
    out
}

/// `sample.json` with only the records of `municipality`.
pub fn own_rows_json(municipality: u32) -> Vec<u8> {
    let v: Value = serde_json::from_slice(&std::fs::read(data("sample.json")).unwrap()).unwrap();
    let m = format!("{municipality:06}");
    let rows: Vec<&Value> = v.as_array().unwrap().iter().filter(|r| r["municipalityCode"] == m.as_str()).collect();
    serde_json::to_vec(&rows).unwrap()
}

pub fn lookup_path(pmh_id: &str) -> String {
    format!("/v1/subsidy/eligibility/{pmh_id}?institution={CLINIC}&date=2026-11-21")
}

impl TestApp {
    pub fn new() -> TestApp {
        TestApp::with_limit(8 << 20)
    }

    pub fn with_limit(max_body: usize) -> TestApp {
        TestApp::from_config_text(&config_text(max_body))
    }

    /// An app over a configuration written out (a variation of [`config_text`]).
    pub fn from_config_text(text: &str) -> TestApp {
        let config = Config::from_toml_str(text, "test config").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut sc = config.store_config();
        sc.rocks.block_cache_bytes = 8 << 20;
        let store = Arc::new(Store::open(dir.path().join("db"), sc).unwrap());
        let state = AppState::new(store.clone(), config).unwrap();
        let router = app(state.clone());
        let t = TestApp { router, store, state, dir };
        let audit = pmh_engine::InstitutionCode::parse(AUDIT).unwrap();
        for n in SAMPLE_PEOPLE {
            let id = t.state.deriver().derive(&pmh_engine::MyNumber::parse(n).unwrap());
            t.store.grant_consent(&id, audit, pmh_engine::date::unix_now()).unwrap();
        }
        t
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self.router.clone().oneshot(b.body(Body::from(body.to_vec())).unwrap()).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
        Resp { status, headers, body }
    }

    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, ct: Option<&str>, body: &[u8]) -> Resp {
        self.call_with(method, path, token, ct, body, &[]).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.call("GET", path, token, None, b"").await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, json: &str) -> Resp {
        self.call("POST", path, token, Some("application/json"), json.as_bytes()).await
    }

    pub async fn upload(&self, mode: &str, token: &str, ct: &str, body: &[u8]) -> Resp {
        self.call("POST", &format!("/v1/subsidy/uploads?mode={mode}"), Some(token), Some(ct), body).await
    }

    /// Uploads and asserts 200; returns the summary.
    pub async fn upload_ok(&self, mode: &str, token: &str, ct: &str, body: &[u8]) -> Value {
        let r = self.upload(mode, token, ct, body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        for k in ["uploadId", "mode", "rows", "inserted", "updated", "deleted", "unchanged"] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
        assert_eq!(v["mode"], mode);
        v
    }

    pub async fn pmh_id(&self, my_number: &str) -> String {
        let r = self.post("/v1/pmh-ids", Some(GATEWAY), &json!({ "myNumber": my_number }).to_string()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()["pmhId"].as_str().unwrap().to_owned()
    }

    pub async fn consent(&self, pmh_id: &str) {
        let r = self
            .post("/v1/consents", Some(GATEWAY), &json!({"pmhId": pmh_id, "institutionCode": CLINIC}).to_string())
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }

    pub async fn batch(&self, ids: &[&str]) -> Value {
        let body = json!({"institutionCode": CLINIC, "date": "2026-11-21", "pmhIds": ids}).to_string();
        let r = self.post("/v1/subsidy/eligibility:batch", Some(GATEWAY), &body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    /// Everything the sample people hold, as answered on several dates: two stores (or one
    /// store at two times) with equal snapshots hold the same certificates.
    pub async fn snapshot(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in SAMPLE_PEOPLE {
            let id = self.state.deriver().derive(&pmh_engine::MyNumber::parse(n).unwrap());
            for date in ["2025-06-01", "2026-01-15", "2026-06-01", "2026-11-21", "2027-02-01"] {
                let r = self
                    .get(&format!("/v1/subsidy/eligibility/{id}?institution={AUDIT}&date={date}"), Some(GATEWAY))
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text());
                out.push(r.text());
            }
        }
        out
    }
}
