//! The upload screen through the router: sign-in, CSRF, uploads with results, the error
//! list and its CSV, history, sign-out. (The browser test drives the same pages in
//! headless Chromium: `ui_browser.rs`.)

mod common;

use axum::http::StatusCode;
use common::*;

/// A signed-in browser: the session cookie and the page's CSRF token.
struct Browser<'a> {
    t: &'a TestApp,
    cookie: String,
    csrf: String,
}

fn between<'s>(s: &'s str, start: &str, end: &str) -> Option<&'s str> {
    let i = s.find(start)? + start.len();
    Some(&s[i..i + s[i..].find(end)?])
}

async fn sign_in<'a>(t: &'a TestApp, token: &str) -> Browser<'a> {
    let r = t
        .call("POST", "/ui/login", None, Some("application/x-www-form-urlencoded"), format!("token={token}").as_bytes())
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.header("location").as_deref(), Some("/ui/upload"));
    let set = r.header("set-cookie").unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/ui"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = t.call_with("GET", "/ui/upload", None, None, b"", &[("cookie", &cookie)]).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = between(&page.text(), "name=\"csrf\" value=\"", "\"").unwrap().to_owned();
    Browser { t, cookie, csrf }
}

impl Browser<'_> {
    async fn get(&self, path: &str) -> Resp {
        self.t.call_with("GET", path, None, None, b"", &[("cookie", &self.cookie)]).await
    }

    async fn upload(&self, csrf: &str, mode: &str, name: &str, file: &[u8]) -> Resp {
        let boundary = "XyZzY0123456789";
        let mut body = Vec::new();
        for (k, v) in [("csrf", csrf.as_bytes()), ("mode", mode.as_bytes())] {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(v);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/csv\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let ct = format!("multipart/form-data; boundary={boundary}");
        self.t.call_with("POST", "/ui/upload", None, Some(&ct), &body, &[("cookie", &self.cookie)]).await
    }
}

#[tokio::test]
async fn sign_in_needs_a_municipality_token() {
    let t = TestApp::new();
    let r = t.get("/ui/", None).await;
    assert_eq!((r.status, r.header("location").as_deref()), (StatusCode::SEE_OTHER, Some("/ui/login")));
    let r = t.get("/ui/login", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("サインイン") && r.header("content-security-policy").is_some());
    for token in ["nope", GATEWAY, ADMIN] {
        let r = t
            .call(
                "POST",
                "/ui/login",
                None,
                Some("application/x-www-form-urlencoded"),
                format!("token={token}").as_bytes(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.header("set-cookie").is_none());
        assert!(r.text().contains("トークンが正しくない"));
    }
    // Pages need a session.
    for path in ["/ui/upload", "/ui/uploads", "/ui/uploads/131016-1"] {
        let r = t.get(path, None).await;
        assert_eq!((r.status, r.header("location").as_deref()), (StatusCode::SEE_OTHER, Some("/ui/login")), "{path}");
    }
    let r = t.call_with("GET", "/ui/upload", None, None, b"", &[("cookie", "pmh_session=forged")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn an_upload_shows_its_counts_and_a_bad_file_every_error() {
    let t = TestApp::new();
    let b = sign_in(&t, CHIYODA).await;
    // A good file: 303 to its result page with the counts.
    let r = b.upload(&b.csrf, "full", "chiyoda.csv", &own_rows_csv("sample-utf8.csv", 131016)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let page = b.get(&r.header("location").unwrap()).await.text();
    assert!(page.contains("受理"), "{page}");
    assert!(page.contains(r#"<td id="inserted">5</td>"#), "{page}");
    // The store has it.
    let id = t.pmh_id("123456789018").await;
    t.consent(&id).await;
    assert_eq!(t.get(&lookup_path(&id), Some(GATEWAY)).await.json()["certificates"][0]["historyKey"], "H20260401-001");
    // A bad file: every error with its Japanese column; nothing changed.
    let before = t.snapshot().await;
    let bad = std::fs::read(data("bad-rows.csv")).unwrap();
    let r = b.upload(&b.csrf, "diff", "bad.csv", &bad).await;
    let location = r.header("location").unwrap();
    let page = b.get(&location).await.text();
    assert!(page.contains("エラー") && page.contains("何も変更されていません"), "{page}");
    let expected = std::fs::read_to_string(data("bad-rows.expected.txt")).unwrap();
    assert_eq!(page.matches("<tr><td>").count(), expected.lines().count(), "one table row per error: {page}");
    assert!(page.contains("個人番号 (myNumber)"), "{page}");
    assert!(!page.contains("123456789012"), "a My Number unmasked: {page}");
    assert_eq!(t.snapshot().await, before);
    // The CSV of the errors.
    let csv = b.get(&format!("{location}/errors.csv")).await;
    assert_eq!(csv.header("content-type").as_deref(), Some("text/csv; charset=utf-8"));
    let text = csv.text();
    assert_eq!(text.lines().count(), 1 + expected.lines().count(), "{text}");
    assert!(text.starts_with("行,列,項目名,ルール,内容,値\r\n"));
    // History: both, newest first.
    let h = b.get("/ui/uploads").await.text();
    let (bad_at, good_at) = (h.find("エラー</span>").unwrap(), h.find("受理</span>").unwrap());
    assert!(bad_at < good_at, "{h}");
}

#[tokio::test]
async fn shift_jis_uploads_answer_errors_in_shift_jis() {
    let t = TestApp::new();
    let b = sign_in(&t, CHIYODA).await;
    let sjis = own_rows_csv("sample-sjis.csv", 131016);
    let r = b.upload(&b.csrf, "diff", "sjis.csv", &sjis).await;
    assert!(b.get(&r.header("location").unwrap()).await.text().contains("受理"));
    // Break one My Number's check digit in the Shift_JIS file.
    let text = encoding_rs::SHIFT_JIS.decode(&sjis).0.replace("123456789018", "123456789010");
    let broken = encoding_rs::SHIFT_JIS.encode(&text).0.into_owned();
    let r = b.upload(&b.csrf, "diff", "sjis.csv", &broken).await;
    let csv = b.get(&format!("{}/errors.csv", r.header("location").unwrap())).await;
    assert_eq!(csv.header("content-type").as_deref(), Some("text/csv; charset=shift_jis"));
    let decoded = encoding_rs::SHIFT_JIS.decode(&csv.body).0.into_owned();
    assert!(decoded.contains("個人番号"), "{decoded}");
    assert!(!decoded.contains("123456789010"), "{decoded}");
}

#[tokio::test]
async fn forms_need_the_csrf_token_and_sign_out_ends_the_session() {
    let t = TestApp::new();
    let b = sign_in(&t, CHIYODA).await;
    let before = t.snapshot().await;
    let r = b.upload("wrong", "full", "x.csv", &own_rows_csv("sample-utf8.csv", 131016)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(t.snapshot().await, before);
    // Another municipality's upload result is not shown.
    let c = sign_in(&t, CHUO).await;
    let r = c.upload(&c.csrf, "diff", "chuo.csv", &own_rows_csv("sample-utf8.csv", 131024)).await;
    let location = r.header("location").unwrap();
    assert_eq!(b.get(&location).await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.get(&location).await.status, StatusCode::OK);
    // Sign-out with the token ends the session.
    let r = t
        .call_with(
            "POST",
            "/ui/logout",
            None,
            Some("application/x-www-form-urlencoded"),
            format!("csrf={}", b.csrf).as_bytes(),
            &[("cookie", &b.cookie)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(b.get("/ui/upload").await.status, StatusCode::SEE_OTHER);
    assert_eq!(c.get("/ui/upload").await.status, StatusCode::OK);
}
