//! The municipal upload screen (`/ui/`, the seeds' method #3): sign in with the
//! municipality's token, upload a CSV (UTF-8 or Shift_JIS, as Excel saves it) or JSON file
//! as full or differential, see the result — counts, or every error with row, column
//! (Japanese header name), rule and value — download the errors as CSV in the upload's
//! encoding, and browse the municipality's upload history.
//!
//! Server-rendered HTML (maud: compile-time templates, every value escaped), one small
//! stylesheet, no JavaScript. Uploads go through [`crate::routes::uploads::submit`]: the
//! same checks, atomicity, durability and stored outcome as the API.
//!
//! Security:
//! - The token is exchanged at sign-in for a random session id in a cookie that is
//!   `HttpOnly`, `SameSite=Strict`, `Path=/ui` and `Secure` unless the server is reached on a
//!   loopback address (local use). Sessions live in memory for 8 hours; the token itself is
//!   never stored in the browser.
//! - Every form that changes something carries the session's CSRF token (compared in
//!   constant time), and a POST whose `Origin` names another host is refused.
//! - Pages are `Cache-Control: no-store` with a strict Content-Security-Policy (no scripts,
//!   no framing).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{Form, Multipart, Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use parking_lot::Mutex;
use pmh_loader::config::{Role, constant_time_eq, random_secret};
use pmh_loader::{Encoding, Format, japanese_header};
use serde::Deserialize;

use crate::error::Detail;
use crate::routes::uploads::{self, Mode, Submission, UploadRecord};
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "pmh_session";
/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Most sessions held at once (the oldest are dropped beyond).
const MAX_SESSIONS: usize = 10_000;

struct Session {
    token_index: usize,
    csrf: String,
    expires: Instant,
}

/// Signed-in sessions of the upload screen.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn create(&self, token_index: usize) -> std::io::Result<(String, String)> {
        let (id, csrf) = (random_secret()?, random_secret()?);
        let mut m = self.map.lock();
        let now = Instant::now();
        m.retain(|_, s| s.expires > now);
        if m.len() >= MAX_SESSIONS
            && let Some(oldest) = m.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(id.clone(), Session { token_index, csrf: csrf.clone(), expires: now + SESSION_LIFETIME });
        Ok((id, csrf))
    }

    fn get(&self, id: &str) -> Option<(usize, String)> {
        let m = self.map.lock();
        let s = m.get(id)?;
        (s.expires > Instant::now()).then(|| (s.token_index, s.csrf.clone()))
    }

    fn remove(&self, id: &str) {
        self.map.lock().remove(id);
    }
}

/// The signed-in municipality user of a request.
struct User {
    session: String,
    token_index: usize,
    csrf: String,
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

fn user(st: &AppState, headers: &HeaderMap) -> Option<User> {
    let session = cookie_value(headers, COOKIE_NAME)?;
    let (token_index, csrf) = st.ui_sessions().get(session)?;
    Some(User { session: session.to_owned(), token_index, csrf })
}

fn is_loopback_host(headers: &HeaderMap) -> bool {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let name =
        host.rsplit_once(':').map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

/// A POST from a page of another site is refused (in addition to the CSRF token).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|o| o.to_str().ok()) else { return true };
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
}

fn page(status: StatusCode, body: Markup) -> Response {
    let mut r = (status, body.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    r
}

fn redirect(to: &'static str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(LOCATION, HeaderValue::from_static(to));
    r
}

fn layout(title: &str, user: Option<(&User, &str)>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="ja" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — PMH 受給者証情報アップロード" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                header {
                    span.brand { "PMH 受給者証情報アップロード" }
                    @if let Some((u, name)) = user {
                        nav {
                            a href="/ui/upload" { "アップロード" }
                            a href="/ui/uploads" { "履歴" }
                            span.who { (name) }
                            form.inline method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(u.csrf);
                                button type="submit" { "ログアウト" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (content) }
            }
        }
    }
}

/// The stylesheet (the only asset; no build step).
#[utoipa::path(get, path = "/ui/style.css", tag = "ui", responses((status = 200, description = "the stylesheet", content_type = "text/css")))]
pub async fn style() -> Response {
    let mut r = STYLE.into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    r
}

const STYLE: &str = "body{font-family:system-ui,'Hiragino Sans','Noto Sans JP',sans-serif;margin:0;color:#222}\
header{background:#1d4e89;color:#fff;padding:.6em 1em;display:flex;justify-content:space-between;align-items:center}\
header a{color:#fff;margin-right:1em}.who{margin-right:1em;opacity:.85}.inline{display:inline}\
main{padding:1em 2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}\
th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#eef}\
.ok{color:#176b2c;font-weight:bold}.ng{color:#a11;font-weight:bold}.msg{padding:.6em;border:1px solid #a11;background:#fee}\
fieldset{border:1px solid #ccc;margin:1em 0}button{padding:.4em 1.2em}";

/// `GET /ui/`: to the upload form, or to sign-in.
#[utoipa::path(get, path = "/ui/", tag = "ui", responses((status = 303, description = "to /ui/upload or /ui/login")))]
pub async fn index(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if user(&st, &headers).is_some() { redirect("/ui/upload") } else { redirect("/ui/login") }
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    page(
        status,
        layout(
            "サインイン",
            None,
            html! {
                p { "自治体に発行されたトークンを入力してください。" }
                @if let Some(e) = error { p.msg role="alert" { (e) } }
                form method="post" action="/ui/login" {
                    label for="token" { "トークン" } " "
                    input #token type="password" name="token" autocomplete="off" required;
                    " "
                    button #signin type="submit" { "サインイン" }
                }
            },
        ),
    )
}

/// `GET /ui/login`.
#[utoipa::path(get, path = "/ui/login", tag = "ui", responses((status = 200, description = "sign-in page", content_type = "text/html")))]
pub async fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /ui/login`: a municipality token opens a session.
#[utoipa::path(post, path = "/ui/login", tag = "ui", request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`token`"), responses((status = 303, description = "signed in: to /ui/upload, with the session cookie"), (status = 401, description = "sign-in page with an error", content_type = "text/html")))]
pub async fn login(State(st): State<AppState>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    if !same_origin(&headers) {
        return login_page(StatusCode::FORBIDDEN, Some("別のサイトからの送信は受け付けません。"));
    }
    let config = st.config();
    let index = config.authenticate_index(f.token.trim()).filter(|&i| config.tokens[i].role == Role::Municipality);
    let Some(index) = index else {
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("トークンが正しくないか、自治体用のトークンではありません。"),
        );
    };
    let (session, _) = match st.ui_sessions().create(index) {
        Ok(s) => s,
        Err(e) => return crate::error::ApiError::internal(e).into_response(),
    };
    let secure = if is_loopback_host(&headers) { "" } else { "; Secure" };
    let cookie = format!(
        "{COOKIE_NAME}={session}; HttpOnly; SameSite=Strict; Path=/ui; Max-Age={}{secure}",
        SESSION_LIFETIME.as_secs()
    );
    let mut r = redirect("/ui/upload");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

/// The CSRF-only form (sign-out).
#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /ui/logout`.
#[utoipa::path(post, path = "/ui/logout", tag = "ui", request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`csrf`"), responses((status = 303, description = "signed out: to /ui/login")))]
pub async fn logout(State(st): State<AppState>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if let Some(u) = user(&st, &headers)
        && constant_time_eq(u.csrf.as_bytes(), f.csrf.as_bytes())
        && same_origin(&headers)
    {
        st.ui_sessions().remove(&u.session);
    }
    let mut r = redirect("/ui/login");
    r.headers_mut()
        .insert(SET_COOKIE, HeaderValue::from_static("pmh_session=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0"));
    r
}

fn token_name(st: &AppState, u: &User) -> String {
    let t = &st.config().tokens[u.token_index];
    match t.municipality {
        Some(m) => format!("{} ({m})", t.name),
        None => t.name.clone(),
    }
}

fn upload_form(st: &AppState, u: &User, status: StatusCode, error: Option<&str>) -> Response {
    page(
        status,
        layout(
            "ファイルのアップロード",
            Some((u, &token_name(st, u))),
            html! {
                @if let Some(e) = error { p.msg role="alert" { (e) } }
                form method="post" action="/ui/upload" enctype="multipart/form-data" {
                    input type="hidden" name="csrf" value=(u.csrf);
                    fieldset {
                        legend { "連携の種類" }
                        label { input #mode-diff type="radio" name="mode" value="diff" checked; " 差分連携（変更分のみ）" }
                        br;
                        label { input #mode-full type="radio" name="mode" value="full"; " 全件連携（自治体の受給者証をこのファイルの内容に置き換え）" }
                    }
                    p {
                        label for="file" { "ファイル（CSV: UTF-8 または Shift_JIS、あるいは JSON）" }
                        br;
                        input #file type="file" name="file" accept=".csv,.json,text/csv,application/json" required;
                    }
                    button #upload type="submit" { "アップロード" }
                }
                p { "ファイルは全件まとめて検証されます。1 行でもエラーがあれば、何も登録されません。" }
            },
        ),
    )
}

/// `GET /ui/upload`.
#[utoipa::path(get, path = "/ui/upload", tag = "ui", responses((status = 200, description = "upload form", content_type = "text/html")))]
pub async fn upload_page(State(st): State<AppState>, headers: HeaderMap) -> Response {
    match user(&st, &headers) {
        Some(u) => upload_form(&st, &u, StatusCode::OK, None),
        None => redirect("/ui/login"),
    }
}

/// `POST /ui/upload` (multipart: `csrf`, `mode`, `file`): submits and shows the outcome.
#[utoipa::path(post, path = "/ui/upload", tag = "ui", request_body(content = String, content_type = "multipart/form-data", description = "`csrf`, `mode` (full|diff), `file`"), responses((status = 303, description = "to the upload's result page")))]
pub async fn upload(State(st): State<AppState>, headers: HeaderMap, mut form: Multipart) -> Response {
    let Some(u) = user(&st, &headers) else { return redirect("/ui/login") };
    let (mut csrf, mut mode, mut file) = (None, None, None);
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_owned();
                let file_name = field.file_name().map(str::to_owned);
                let Ok(bytes) = field.bytes().await else {
                    return upload_form(
                        &st,
                        &u,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        Some("ファイルが大きすぎるか、送信が途切れました。"),
                    );
                };
                match name.as_str() {
                    "csrf" => csrf = Some(bytes),
                    "mode" => mode = Some(bytes),
                    "file" => file = Some((file_name.unwrap_or_default(), bytes)),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => {
                return upload_form(
                    &st,
                    &u,
                    StatusCode::BAD_REQUEST,
                    Some("送信内容を読み取れませんでした。もう一度お試しください。"),
                );
            }
        }
    }
    if !same_origin(&headers) || !csrf.is_some_and(|c| constant_time_eq(&c, u.csrf.as_bytes())) {
        return upload_form(
            &st,
            &u,
            StatusCode::FORBIDDEN,
            Some("画面の有効期限が切れました。もう一度お試しください。"),
        );
    }
    let mode = match mode.as_deref() {
        Some(b"full") => Mode::Full,
        _ => Mode::Diff,
    };
    let Some((name, body)) = file.filter(|(_, b)| !b.is_empty()) else {
        return upload_form(&st, &u, StatusCode::UNPROCESSABLE_ENTITY, Some("ファイルを選んでください。"));
    };
    let json = name.to_ascii_lowercase().ends_with(".json") || uploads::looks_like_json(&body);
    let format = if json { Format::Json } else { Format::Csv };
    let token = st.config().tokens[u.token_index].clone();
    let sub = Submission { mode, allow_empty: false, idempotency_key: None, format, encoding: Encoding::Auto, body };
    match uploads::submit(&st, &token, sub).await {
        Ok(s) => {
            let location = format!("/ui/uploads/{}", s.record.upload_id);
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(LOCATION, v);
            }
            r
        }
        Err(e) => upload_form(&st, &u, e.code.status(), Some(&e.message)),
    }
}

fn status_ja(r: &UploadRecord) -> Markup {
    match r.status.as_str() {
        "accepted" => html! { span.ok { "受理" } },
        "forbidden" => html! { span.ng { "権限なし" } },
        _ => html! { span.ng { "エラー" } },
    }
}

fn mode_ja(m: &str) -> &'static str {
    if m == "full" { "全件" } else { "差分" }
}

fn own_record(st: &AppState, u: &User, id: &str) -> Option<UploadRecord> {
    let token = &st.config().tokens[u.token_index];
    let m = token.municipality?;
    let (mun, _) = id.split_once('-')?;
    if mun != format!("{:06}", m.get()) {
        return None;
    }
    uploads::stored(st, id).ok().flatten()
}

/// `GET /ui/uploads/{id}`: one upload's outcome, with every error.
#[utoipa::path(get, path = "/ui/uploads/{id}", tag = "ui", params(("id" = String, Path, description = "upload id")), responses((status = 200, description = "the outcome with every error", content_type = "text/html")))]
pub async fn upload_result(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(u) = user(&st, &headers) else { return redirect("/ui/login") };
    let Some(r) = own_record(&st, &u, &id) else {
        return page(
            StatusCode::NOT_FOUND,
            layout(
                "見つかりません",
                Some((&u, &token_name(&st, &u))),
                html! {
                    p { "このアップロードは見つかりません。" } a href="/ui/uploads" { "履歴へ" }
                },
            ),
        );
    };
    let details: &[Detail] = r.error.as_ref().map(|e| e.details.as_slice()).unwrap_or(&[]);
    let content = html! {
        table #summary {
            tr { th { "受付番号" } td { (r.upload_id) } }
            tr { th { "受付日時" } td { (r.received_at) } }
            tr { th { "種類" } td { (mode_ja(&r.mode)) } }
            tr { th { "結果" } td #status { (status_ja(&r)) } }
            tr { th { "行数" } td #rows { (r.rows) } }
            @if r.error.is_none() {
                tr { th { "追加" } td #inserted { (r.inserted) } }
                tr { th { "更新" } td #updated { (r.updated) } }
                tr { th { "削除" } td #deleted { (r.deleted) } }
                tr { th { "変更なし" } td #unchanged { (r.unchanged) } }
            }
        }
        @if let Some(e) = &r.error {
            p.msg role="alert" { "このファイルは登録されませんでした（何も変更されていません）。" (e.message) }
            p { a #errors-csv href={ "/ui/uploads/" (r.upload_id) "/errors.csv" } { "エラー一覧を CSV でダウンロード" } }
            table #errors {
                thead { tr { th { "行" } th { "列" } th { "ルール" } th { "内容" } th { "値" } } }
                tbody {
                    @for d in details {
                        tr {
                            td { (d.row.map(|r| r.to_string()).unwrap_or_default()) }
                            td { (column_ja(&d.field)) }
                            td { (d.rule) }
                            td { (d.message) }
                            td { (d.value.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        p { a href="/ui/upload" { "続けてアップロード" } " ・ " a href="/ui/uploads" { "履歴" } }
    };
    page(StatusCode::OK, layout("アップロード結果", Some((&u, &token_name(&st, &u))), content))
}

/// The column as a spreadsheet user knows it: `氏名 (basicFiveInfo.name)`.
fn column_ja(field: &str) -> String {
    match japanese_header(field) {
        Some(j) => format!("{j} ({field})"),
        None => field.to_owned(),
    }
}

/// `GET /ui/uploads/{id}/errors.csv`: the error list, in the encoding of the upload (a
/// Shift_JIS file's errors open in the same spreadsheet without garbling).
#[utoipa::path(get, path = "/ui/uploads/{id}/errors.csv", tag = "ui", params(("id" = String, Path, description = "upload id")), responses((status = 200, description = "the errors as CSV, in the upload's encoding", content_type = "text/csv")))]
pub async fn errors_csv(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(u) = user(&st, &headers) else { return redirect("/ui/login") };
    let Some(r) = own_record(&st, &u, &id) else { return StatusCode::NOT_FOUND.into_response() };
    let mut text = String::from("行,列,項目名,ルール,内容,値\r\n");
    for d in r.error.iter().flat_map(|e| &e.details) {
        let cells = [
            d.row.map(|r| r.to_string()).unwrap_or_default(),
            japanese_header(&d.field).unwrap_or("").to_owned(),
            d.field.clone(),
            d.rule.clone(),
            d.message.clone(),
            d.value.clone().unwrap_or_default(),
        ];
        let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        text.push_str(&line.join(","));
        text.push_str("\r\n");
    }
    let (bytes, charset) = if r.encoding == Encoding::ShiftJis.as_str() {
        (encoding_rs::SHIFT_JIS.encode(&text).0.into_owned(), "shift_jis")
    } else {
        (text.into_bytes(), "utf-8")
    };
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("text/csv; charset={charset}")) {
        h.insert(CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"errors-{}.csv\"", r.upload_id)) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A CSV cell, quoted when it must be; a leading `=`, `+`, `-` or `@` is prefixed with `'`
/// so that a spreadsheet does not run it as a formula.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\r', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

/// `GET /ui/uploads`: the municipality's uploads, newest first.
#[utoipa::path(get, path = "/ui/uploads", tag = "ui", responses((status = 200, description = "the municipality's uploads", content_type = "text/html")))]
pub async fn history(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let Some(u) = user(&st, &headers) else { return redirect("/ui/login") };
    let Some(m) = st.config().tokens[u.token_index].municipality else { return redirect("/ui/login") };
    let records = match uploads::list(&st, m.get(), uploads::MAX_LIST) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let content = html! {
        @if records.is_empty() {
            p { "まだアップロードはありません。" }
        } @else {
            table #history {
                thead { tr { th { "受付日時" } th { "種類" } th { "結果" } th { "行数" } th { "追加" } th { "更新" } th { "削除" } th { "変更なし" } th { "エラー" } th { "" } } }
                tbody {
                    @for r in &records {
                        tr {
                            td { (r.received_at) }
                            td { (mode_ja(&r.mode)) }
                            td { (status_ja(r)) }
                            td { (r.rows) }
                            td { (r.inserted) } td { (r.updated) } td { (r.deleted) } td { (r.unchanged) }
                            td { (r.error_count) }
                            td { a href={ "/ui/uploads/" (r.upload_id) } { "詳細" } }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, layout("アップロード履歴", Some((&u, &token_name(&st, &u))), content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("a"), "a");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=1+1"), "'=1+1");
        assert_eq!(csv_cell("-5"), "'-5");
    }

    #[test]
    fn cookies_and_hosts() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("a=1; pmh_session=abc; b=2"));
        assert_eq!(cookie_value(&h, COOKIE_NAME), Some("abc"));
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(is_loopback_host(&h));
        h.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
        h.insert(HOST, HeaderValue::from_static("pmh.example.jp"));
        assert!(!is_loopback_host(&h));
        assert!(
            constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"a", b"ab")
        );
    }
}
