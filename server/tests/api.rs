//! Router tests (`oneshot`, no socket) for every endpoint and error case, and the
//! end-to-end flow over the `data/` samples.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

#[tokio::test]
async fn health_metrics_and_unknown_routes() {
    let t = TestApp::new();
    let r = t.get("/healthz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");
    let r = t.get("/nope", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = t.call("PUT", "/healthz", None, None, b"").await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let r = t.get("/v1/ping", Some(GATEWAY)).await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, r#"{"status":"ok"}"#.to_owned()));
    let m = t.get("/metrics", None).await.text();
    assert!(m.contains(r#"pmh_http_requests_total{route="/v1/ping",status="200"} 1"#), "{m}");
    assert!(m.contains(r#"pmh_http_requests_total{route="/healthz",status="405"} 1"#), "{m}");
    assert!(m.contains(r#"pmh_http_request_duration_seconds_count{route="/healthz"} 2"#), "{m}");
    assert!(m.contains("pmh_store_keys{cf=\"holders.0\"}"), "{m}");
    assert!(m.contains("\npmh_row_cache_bytes 0\n"), "the row cache is off by default: {m}");
}

#[tokio::test]
async fn tokens_and_roles() {
    let t = TestApp::new();
    let body = json!({"myNumber": "123456789018"}).to_string();
    for token in [None, Some("wrong-token"), Some("")] {
        let r = t.post("/v1/pmh-ids", token, &body).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    for token in [ADMIN, CHIYODA] {
        let r = t.post("/v1/pmh-ids", Some(token), &body).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    }
    let r = t.get(&format!("/v1/access-log/{}", "0".repeat(32)), Some(GATEWAY)).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = t.upload("diff", GATEWAY, "text/csv", b"x").await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    // Gateways read no upload outcomes; municipalities and admins no eligibility.
    for path in ["/v1/subsidy/uploads", "/v1/subsidy/uploads/131016-1"] {
        assert_error(&t.get(path, Some(GATEWAY)).await, StatusCode::FORBIDDEN, "forbidden");
    }
    for token in [CHIYODA, ADMIN] {
        let r = t.get(&lookup_path(&"0".repeat(32)), Some(token)).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    }
    // An admin listing one municipality's uploads must name a valid one.
    let r = t.get("/v1/subsidy/uploads?municipality=131010", Some(ADMIN)).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let r = t.get("/v1/subsidy/uploads?limit=0", Some(CHIYODA)).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
}

#[tokio::test]
async fn pmh_id_resolution_is_deterministic_and_checks_the_number() {
    let t = TestApp::new();
    let a = t.pmh_id("123456789018").await;
    assert_eq!(a.len(), 32);
    assert_eq!(a, t.pmh_id("123456789018").await);
    // Any valid number answers, with or without records: no existence oracle.
    let unknown = t.pmh_id(&pmh_engine::ids::make::my_number(99_999_999)).await;
    assert_ne!(a, unknown);
    let r = t.post("/v1/pmh-ids", Some(GATEWAY), &json!({"myNumber": "123456789012"}).to_string()).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(r.json()["error"]["details"][0]["field"], "myNumber");
    assert!(!r.text().contains("123456789012"), "the number must not be echoed: {}", r.text());
    let r = t.post("/v1/pmh-ids", Some(GATEWAY), "{\"myNumber\": ").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed_request");
    let r = t.post("/v1/pmh-ids", Some(GATEWAY), &json!({"myNumber": 123456789018u64}).to_string()).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert!(!r.text().contains("123456789018"), "{}", r.text());
    let r = t.post("/v1/pmh-ids", Some(GATEWAY), "{}").await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
}

#[tokio::test]
async fn no_consent_answers_the_same_bytes_for_existing_and_unknown_people() {
    let t = TestApp::new();
    t.upload_ok("full", CHIYODA, "application/json", &own_rows_json(131016)).await;
    let existing = t.pmh_id("123456789018").await;
    let unknown = t.pmh_id(&pmh_engine::ids::make::my_number(77_777_777)).await;
    let a = t.get(&lookup_path(&existing), Some(GATEWAY)).await;
    let b = t.get(&lookup_path(&unknown), Some(GATEWAY)).await;
    assert_error(&a, StatusCode::FORBIDDEN, "consent_required");
    assert_eq!((a.status, a.body.clone(), a.content_type()), (b.status, b.body.clone(), b.content_type()));
    // The batch says the same for both.
    let r = t.batch(&[&existing, &unknown]).await;
    assert_eq!(r["results"][0], json!({"pmhId": existing, "status": "consent_required"}));
    assert_eq!(r["results"][1], json!({"pmhId": unknown, "status": "consent_required"}));
    // With consent, an unknown person is answered with no certificates.
    t.consent(&unknown).await;
    let r = t.get(&lookup_path(&unknown), Some(GATEWAY)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["certificates"], json!([]));
}

#[tokio::test]
async fn lookups_answer_503_while_the_access_log_cannot_be_written() {
    let t = TestApp::new();
    t.upload_ok("full", CHIYODA, "application/json", &own_rows_json(131016)).await;
    let id = t.pmh_id("123456789018").await;
    t.consent(&id).await;
    assert_eq!(t.get(&lookup_path(&id), Some(GATEWAY)).await.status, StatusCode::OK);
    t.store.inject_access_log_write_failures(u64::MAX);
    t.store.flush_access_log();
    assert!(t.store.access_log_failing());
    assert_error(&t.get(&lookup_path(&id), Some(GATEWAY)).await, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let r = t
        .post(
            "/v1/subsidy/eligibility:batch",
            Some(GATEWAY),
            &json!({"institutionCode": CLINIC, "pmhIds": [id]}).to_string(),
        )
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let h = t.get("/healthz", None).await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.json()["status"], "access_log_unavailable");
    // Once the batch is written, lookups are answered again and the health check is green.
    t.store.inject_access_log_write_failures(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while t.store.access_log_failing() {
        assert!(std::time::Instant::now() < deadline, "the access log never recovered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(t.get("/healthz", None).await.status, StatusCode::OK);
    assert_eq!(t.get(&lookup_path(&id), Some(GATEWAY)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn consents_grant_and_revoke() {
    let t = TestApp::new();
    t.upload_ok("full", CHIYODA, "application/json", &own_rows_json(131016)).await;
    let id = t.pmh_id("123456789018").await;
    let r = t.post("/v1/consents", Some(GATEWAY), &json!({"pmhId": id, "institutionCode": CLINIC}).to_string()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let v = r.json();
    assert_eq!((v["pmhId"].as_str(), v["institutionCode"].as_str()), (Some(id.as_str()), Some(CLINIC)));
    assert!(v["validUntil"].as_str().unwrap().ends_with("+09:00"), "{v}");
    assert_eq!(t.get(&lookup_path(&id), Some(GATEWAY)).await.status, StatusCode::OK);
    // Another institution has no consent.
    let r =
        t.get(&format!("/v1/subsidy/eligibility/{id}?institution={OTHER_CLINIC}&date=2026-11-21"), Some(GATEWAY)).await;
    assert_error(&r, StatusCode::FORBIDDEN, "consent_required");
    let r = t.call("DELETE", &format!("/v1/consents/{id}?institution={CLINIC}"), Some(GATEWAY), None, b"").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = t.call("DELETE", &format!("/v1/consents/{id}?institution={CLINIC}"), Some(GATEWAY), None, b"").await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = t.call("DELETE", &format!("/v1/consents/{id}"), Some(GATEWAY), None, b"").await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(r.json()["error"]["details"][0]["field"], "institution");
    assert_error(&t.get(&lookup_path(&id), Some(GATEWAY)).await, StatusCode::FORBIDDEN, "consent_required");
    // Bad inputs.
    let r =
        t.post("/v1/consents", Some(GATEWAY), &json!({"pmhId": "xyz", "institutionCode": CLINIC}).to_string()).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let r =
        t.post("/v1/consents", Some(GATEWAY), &json!({"pmhId": id, "institutionCode": "1311234567"}).to_string()).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(r.json()["error"]["details"][0]["field"], "institutionCode");
}

#[tokio::test]
async fn lookups_answer_the_upload_fields_and_check_their_query() {
    let t = TestApp::new();
    t.upload_ok("full", CHIYODA, "text/csv", &own_rows_csv("sample-utf8.csv", 131016)).await;
    let id = t.pmh_id("234567890121").await; // 難病, designated 1311234569
    t.consent(&id).await;
    let r = t.get(&lookup_path(&id), Some(GATEWAY)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["pmhId"], id);
    assert_eq!(v["date"], "2026-11-21");
    let c = &v["certificates"][0];
    assert_eq!(c["municipalityCode"], "131016");
    assert_eq!(c["orgSpecificCertificateTypeId"], "NANBYO");
    assert_eq!(c["medicalSubsidyInsurerNumber"], "54131016");
    assert_eq!(c["medicalSubsidyRecipientNumber"], "1234566");
    assert_eq!(c["isDesignatedInstitution"], true);
    assert_eq!(c["validFrom"], "2026-01-01");
    assert_eq!(c["validTo"], "2026-12-31");
    assert_eq!(c["basicFiveInfo"]["name"], "佐藤 花子");
    assert_eq!(c["basicFiveInfo"]["nameKana"], "サトウ　ハナコ");
    assert_eq!(c["basicFiveInfo"]["dateOfBirth"], "1958-11-23");
    assert_eq!(c["copayment"][0], json!({"category": "外来", "burdenDefinition": "定率上限", "ratePerVisit": 20}));
    assert_eq!(c["maxCopaymentAmount"], json!({"monthly": 10000, "inpatientMonthly": 10000}));
    assert_eq!(c["additionalConditions"][1], json!({"item": "B02", "code": "3"}));
    assert_eq!(c["designatedMedicalInstitutions"][0], json!({"code": "1311234569", "name": "千代田クリニック"}));
    assert_eq!(c["certificationDetail"][0], json!({"name": "疾病名", "value": "パーキンソン病"}));
    assert_eq!(c["isAlwaysReimbursement"], "0");
    assert!(c.get("myNumber").is_none());
    // Out of period: nothing.
    let r = t.get(&format!("/v1/subsidy/eligibility/{id}?institution={CLINIC}&date=2027-01-01"), Some(GATEWAY)).await;
    assert_eq!(r.json()["certificates"], json!([]));
    // YYYYMMDD accepted; a bad date, a missing institution, a bad PMH-ID are 422.
    let r = t.get(&format!("/v1/subsidy/eligibility/{id}?institution={CLINIC}&date=20261121"), Some(GATEWAY)).await;
    assert_eq!(r.json()["date"], "2026-11-21");
    for path in [
        format!("/v1/subsidy/eligibility/{id}?institution={CLINIC}&date=2026-13-01"),
        format!("/v1/subsidy/eligibility/{id}"),
        format!("/v1/subsidy/eligibility/{}?institution={CLINIC}", "g".repeat(32)),
    ] {
        assert_error(&t.get(&path, Some(GATEWAY)).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    }
    // Without a date: today in Japan.
    let r = t.get(&format!("/v1/subsidy/eligibility/{id}?institution={CLINIC}"), Some(GATEWAY)).await;
    assert_eq!(r.json()["date"], pmh_engine::Date::today_tokyo().to_string());
}

#[tokio::test]
async fn non_disclosed_personal_fields_never_appear() {
    let t = TestApp::new();
    t.upload_ok("full", CHIYODA, "text/csv", &own_rows_csv("sample-utf8.csv", 131016)).await;
    let id = t.pmh_id("345678901234").await; // ひとり親, 不開示
    t.consent(&id).await;
    for r in [
        t.get(&lookup_path(&id), Some(GATEWAY)).await.json()["certificates"].clone(),
        t.batch(&[&id]).await["results"][0]["certificates"].clone(),
    ] {
        let c = &r[0];
        assert_eq!(c["isNotDisclosed"], true, "{r}");
        assert!(c.get("basicFiveInfo").is_none(), "{r}");
        assert_eq!(c["orgSpecificCertificateTypeId"], "HITORIOYA");
        let text = r.to_string();
        for personal in ["鈴木", "ｽｽﾞｷ", "スズキ", "1985-01-15", "201号室"] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
    }
}

#[tokio::test]
async fn batch_lookups_answer_in_request_order() {
    let t = TestApp::new();
    t.upload_ok("full", CHIYODA, "application/json", &own_rows_json(131016)).await;
    let a = t.pmh_id("123456789018").await;
    let b = t.pmh_id("234567890121").await;
    let c = t.pmh_id("456789012346").await;
    t.consent(&a).await;
    t.consent(&c).await;
    let v = t.batch(&[&c, &b, &a]).await;
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!((r[0]["pmhId"].as_str(), r[0]["status"].as_str()), (Some(c.as_str()), Some("ok")));
    assert_eq!(r[0]["certificates"][0]["historyKey"], "SEISHIN-2026");
    assert_eq!(r[1], json!({"pmhId": b, "status": "consent_required"}));
    assert_eq!(r[2]["certificates"][0]["historyKey"], "H20260401-001");
    let too_many: Vec<String> = (0..1001).map(|_| a.clone()).collect();
    let body = json!({"institutionCode": CLINIC, "pmhIds": too_many}).to_string();
    let r = t.post("/v1/subsidy/eligibility:batch", Some(GATEWAY), &body).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let body = json!({"institutionCode": CLINIC, "pmhIds": [a, "bad"]}).to_string();
    let r = t.post("/v1/subsidy/eligibility:batch", Some(GATEWAY), &body).await;
    assert_eq!(r.json()["error"]["details"][0]["field"], "pmhIds[1]");
}

#[tokio::test]
async fn uploads_are_all_or_nothing_with_every_bad_row_listed() {
    let t = TestApp::new();
    let first = t.upload_ok("full", CHIYODA, "text/csv", &own_rows_csv("sample-utf8.csv", 131016)).await;
    assert_eq!((first["rows"].as_u64(), first["inserted"].as_u64()), (Some(5), Some(5)));
    let before = t.snapshot().await;
    // bad-rows.csv: every error of its expected report, 422, nothing changed.
    let bad = std::fs::read(data("bad-rows.csv")).unwrap();
    let r = t.upload("diff", CHIYODA, "text/csv", &bad).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let details = r.json()["error"]["details"].as_array().unwrap().clone();
    let expected = std::fs::read_to_string(data("bad-rows.expected.txt")).unwrap();
    assert_eq!(details.len(), expected.lines().count(), "{details:?}");
    for (d, line) in details.iter().zip(expected.lines()) {
        let row = d["row"].as_u64().unwrap();
        assert!(line.contains(&format!("row {row}, field {}", d["field"].as_str().unwrap())), "{d} vs {line}");
        assert!(line.contains(&format!("rule {}", d["rule"].as_str().unwrap())), "{d} vs {line}");
    }
    assert!(!r.text().contains("123456789012"), "an unmasked My Number in {}", r.text());
    assert_eq!(t.snapshot().await, before);
    // One bad row among good ones changes nothing either.
    let mut csv = own_rows_csv("sample-diff.csv", 131016);
    csv.extend_from_slice(b"131016,KODOMO01,123456789018,,,,,,false,88131016,x,K-1,,,,,,0,,,,,,,,,,,,2026-04-01,2026-03-01,BAD-PERIOD,0,\n");
    let r = t.upload("diff", CHIYODA, "text/csv", &csv).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(t.snapshot().await, before);
    // The refusal has an id and a stored outcome.
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    let id = msg.rsplit("(upload ").next().unwrap().trim_end_matches(')').to_owned();
    let rec = t.get(&format!("/v1/subsidy/uploads/{id}"), Some(CHIYODA)).await.json();
    assert_eq!(rec["status"], "rejected");
    assert_eq!(rec["errorCount"], 1);
    // The good diff applies.
    let v = t.upload_ok("diff", CHIYODA, "text/csv", &own_rows_csv("sample-diff.csv", 131016)).await;
    assert_eq!((v["updated"].as_u64(), v["deleted"].as_u64()), (Some(1), Some(1)));
    // Re-applied, it is a no-op.
    let v = t.upload_ok("diff", CHIYODA, "text/csv", &own_rows_csv("sample-diff.csv", 131016)).await;
    assert_eq!((v["updated"].as_u64(), v["unchanged"].as_u64(), v["deleted"].as_u64()), (Some(0), Some(2), Some(0)));
}

#[tokio::test]
async fn a_municipality_cannot_touch_another_municipalitys_certificates() {
    let t = TestApp::new();
    t.upload_ok("full", CHUO, "text/csv", &own_rows_csv("sample-utf8.csv", 131024)).await;
    let before = t.snapshot().await;
    // The whole sample holds a 131024 row: 千代田区 may not write it.
    let all = std::fs::read(data("sample.json")).unwrap();
    let r = t.upload("diff", CHIYODA, "application/json", &all).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let d = &r.json()["error"]["details"];
    assert_eq!(d.as_array().unwrap().len(), 1, "{d}");
    assert_eq!((d[0]["row"].as_u64(), d[0]["field"].as_str()), (Some(6), Some("municipalityCode")));
    assert_eq!(t.snapshot().await, before);
    // A delete of 131024's certificate by 131016 is refused too.
    let header = own_rows_csv("sample-utf8.csv", 0);
    let mut fields = vec![""; 34];
    (fields[0], fields[1], fields[2], fields[31], fields[32]) = ("131024", "KODOMO01", "567890123457", "C-2026-7", "1");
    let del = [header, format!("{}\n", fields.join(",")).into_bytes()].concat();
    assert_error(&t.upload("diff", CHIYODA, "text/csv", &del).await, StatusCode::FORBIDDEN, "forbidden");
    // A 公費負担者番号 not on the token: 403.
    let mut own = own_rows_csv("sample-utf8.csv", 131016);
    let text = String::from_utf8(own.clone())
        .unwrap()
        .replace("88131016", &pmh_engine::ids::make::insurer_number(80, 13, 101));
    own = text.into_bytes();
    let r = t.upload("diff", CHIYODA, "text/csv", &own).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(r.json()["error"]["details"][0]["rule"], "own insurer numbers");
    assert_eq!(t.snapshot().await, before);
    // 131016's full upload replaces only 131016's certificates.
    t.upload_ok("full", CHIYODA, "text/csv", &own_rows_csv("sample-utf8.csv", 131016)).await;
    let chuo = t.pmh_id("567890123457").await;
    t.consent(&chuo).await;
    let v = t.get(&lookup_path(&chuo), Some(GATEWAY)).await.json();
    assert_eq!(v["certificates"][0]["municipalityCode"], "131024");
    // And an empty full upload is refused unless meant.
    let header = b"municipalityCode,orgSpecificCertificateTypeId,myNumber,isNotDisclosed,medicalSubsidyInsurerNumber,certificationName,medicalSubsidyRecipientNumber,validFrom,validTo,historyKey,isDeleted\n";
    let r = t.upload("full", CHUO, "text/csv", header).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let r = t.call("POST", "/v1/subsidy/uploads?mode=full&allowEmpty=true", Some(CHUO), Some("text/csv"), header).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["deleted"], 1);
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_another_body() {
    let t = TestApp::new();
    let body = own_rows_csv("sample-utf8.csv", 131016);
    let send = |key: &'static str, body: Vec<u8>| {
        let t = &t;
        async move {
            t.call_with(
                "POST",
                "/v1/subsidy/uploads?mode=diff",
                Some(CHIYODA),
                Some("text/csv"),
                &body,
                &[("idempotency-key", key)],
            )
            .await
        }
    };
    let a = send("k-1", body.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let b = send("k-1", body.clone()).await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.header("idempotent-replayed"), Some("true".into()));
    assert_eq!(a.json(), b.json(), "the replay is the same answer, same upload id");
    assert_eq!(b.json()["inserted"], 5);
    let c = send("k-2", body.clone()).await;
    assert_eq!((c.json()["inserted"].as_u64(), c.json()["unchanged"].as_u64()), (Some(0), Some(5)));
    let d = send("k-1", own_rows_csv("sample-diff.csv", 131016)).await;
    assert_error(&d, StatusCode::CONFLICT, "idempotency_conflict");
    // A key that is not 1-200 printable ASCII characters is refused before anything is read.
    let e = send("has space", body.clone()).await;
    assert_error(&e, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(e.json()["error"]["details"][0]["field"], "Idempotency-Key");
    // The list shows the two applied uploads, newest first; another municipality sees none.
    let list = t.get("/v1/subsidy/uploads", Some(CHIYODA)).await.json();
    let ids: Vec<&str> = list["uploads"].as_array().unwrap().iter().map(|u| u["uploadId"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![c.json()["uploadId"].as_str().unwrap(), a.json()["uploadId"].as_str().unwrap()]);
    assert_eq!(t.get("/v1/subsidy/uploads", Some(CHUO)).await.json()["uploads"], json!([]));
    let id = a.json()["uploadId"].as_str().unwrap().to_owned();
    assert_error(&t.get(&format!("/v1/subsidy/uploads/{id}"), Some(CHUO)).await, StatusCode::NOT_FOUND, "not_found");
    let rec = t.get(&format!("/v1/subsidy/uploads/{id}"), Some(ADMIN)).await.json();
    assert_eq!((rec["status"].as_str(), rec["uploadedBy"].as_str()), (Some("accepted"), Some("chiyoda")));
    assert_eq!(t.get("/v1/subsidy/uploads", Some(ADMIN)).await.json()["uploads"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn shift_jis_csv_uploads_like_its_utf8_twin() {
    let a = TestApp::new();
    let b = TestApp::new();
    a.upload_ok("full", CHIYODA, "text/csv", &own_rows_csv("sample-utf8.csv", 131016)).await;
    let sjis = own_rows_csv("sample-sjis.csv", 131016);
    b.upload_ok("full", CHIYODA, "text/csv; charset=Shift_JIS", &sjis).await;
    assert_eq!(a.snapshot().await, b.snapshot().await);
}

#[tokio::test]
async fn bodies_over_the_limit_and_odd_media_types() {
    let t = TestApp::with_limit(1024);
    let big = vec![b'a'; 4096];
    let r = t.upload("diff", CHIYODA, "text/csv", &big).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let r = t.post("/v1/pmh-ids", Some(GATEWAY), &format!("{{\"myNumber\": \"{}\"}}", "1".repeat(4096))).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let r = t.upload("diff", CHIYODA, "application/xml", b"<x/>").await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let r = t.call("POST", "/v1/subsidy/uploads?mode=sometimes", Some(CHIYODA), Some("text/csv"), b"a").await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let r = t.upload("diff", CHIYODA, "application/json", b"[{").await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
}

#[tokio::test]
async fn end_to_end_upload_resolve_consent_lookup_and_access_log() {
    let t = TestApp::new();
    t.upload_ok("full", CHIYODA, "text/csv", &own_rows_csv("sample-utf8.csv", 131016)).await;
    t.upload_ok("full", CHUO, "application/json", &own_rows_json(131024)).await;
    t.upload_ok("diff", CHIYODA, "text/csv", &own_rows_csv("sample-diff.csv", 131016)).await;
    let id = t.pmh_id("123456789018").await;
    t.get(&lookup_path(&id), Some(GATEWAY)).await; // refused: logged too
    t.consent(&id).await;
    let v = t.get(&lookup_path(&id), Some(GATEWAY)).await.json();
    assert_eq!(v["certificates"][0]["copayment"][0]["burdenDefinition"], "負担なし", "the diff's update: {v}");
    let log = t.get(&format!("/v1/access-log/{id}"), Some(ADMIN)).await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text());
    let log = log.json();
    assert_eq!(log["pmhId"], id);
    let e = log["entries"].as_array().unwrap();
    assert_eq!(e.len(), 2, "{log}");
    assert_eq!((e[0]["outcome"].as_str(), e[1]["outcome"].as_str()), (Some("consent_required"), Some("answered")));
    assert_eq!(e[1]["client"], "gw");
    assert_eq!(e[1]["institutionCode"], CLINIC);
    assert_eq!(e[1]["date"], "2026-11-21");
    assert_eq!(e[1]["personalDisclosed"], true);
    assert_eq!(e[1]["certificates"][0]["historyKey"], "H20260401-001");
    assert!(!log.to_string().contains("123456789018"));
    let stats = t.get("/v1/admin/stats", Some(ADMIN)).await.json();
    assert_eq!(stats["liveConsents"], 1 + SAMPLE_PEOPLE.len(), "the test's own and the snapshot consents");
    assert_eq!(stats["rowCacheBytes"], 0, "the row cache is off by default");
}

#[tokio::test]
async fn every_route_in_the_openapi_document_is_served_and_described() {
    let t = TestApp::new();
    let doc = t.get("/openapi.json", None).await.json();
    let paths = doc["paths"].as_object().unwrap();
    let mut listed = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            listed.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    listed.sort();
    let mut expected: Vec<String> = [
        "GET /v1/subsidy/eligibility/{pmhId}",
        "POST /v1/subsidy/eligibility:batch",
        "POST /v1/pmh-ids",
        "POST /v1/consents",
        "DELETE /v1/consents/{pmhId}",
        "POST /v1/subsidy/uploads",
        "GET /v1/subsidy/uploads",
        "GET /v1/subsidy/uploads/{id}",
        "GET /v1/access-log/{pmhId}",
        "POST /v1/admin/snapshots",
        "GET /v1/admin/stats",
        "GET /v1/ping",
        "GET /healthz",
        "GET /metrics",
        "GET /openapi.json",
        "GET /ui/",
        "GET /ui/style.css",
        "GET /ui/login",
        "POST /ui/login",
        "POST /ui/logout",
        "GET /ui/upload",
        "POST /ui/upload",
        "GET /ui/uploads",
        "GET /ui/uploads/{id}",
        "GET /ui/uploads/{id}/errors.csv",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.sort();
    assert_eq!(listed, expected);
    // Each listed route is served: with any token, the answer is never "no such route".
    let id = "0".repeat(32);
    for route in &listed {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path.replace("{pmhId}", &id).replace("{id}", "131016-1");
        let r = t.call(method, &path, Some(ADMIN), Some("application/json"), b"{}").await;
        assert!(!(r.status == StatusCode::NOT_FOUND && r.text().contains("no such route")), "{route}: {}", r.text());
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{route}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // And the metrics know every documented route.
    for route in &listed {
        let path = route.split_once(' ').unwrap().1;
        assert!(pmh_server::metrics::ROUTES.contains(&path), "{path} not in metrics::ROUTES");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_installed_while_serving_switches_without_failed_lookups() {
    use pmh_loader::load::{self, LoadOptions, NoProgress};
    let t = TestApp::new();
    t.upload_ok("full", CHIYODA, "text/csv", &own_rows_csv("sample-utf8.csv", 131016)).await;
    let id = t.pmh_id("234567890121").await;
    t.consent(&id).await;
    // A nationwide snapshot where the 難病 certificate has another history key.
    let csv = String::from_utf8(std::fs::read(data("sample-utf8.csv")).unwrap())
        .unwrap()
        .replace("NANBYO-2026", "NANBYO-2026B");
    let input = t.dir.path().join("nationwide.csv");
    std::fs::write(&input, csv).unwrap();
    let prepared = t.dir.path().join("prepared");
    let config = pmh_loader::config::Config::from_toml_str(&config_text(1 << 20), "test").unwrap();
    load::prepare(&config.rocksdb, t.state.deriver(), &[input], &LoadOptions::default(), &prepared, &NoProgress)
        .unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (router, stop, path) = (t.router.clone(), stop.clone(), lookup_path(&id));
        tokio::spawn(async move {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = axum::http::Request::get(&path)
                    .header("authorization", format!("Bearer {GATEWAY}"))
                    .body(axum::body::Body::empty())
                    .unwrap();
                let r = router.clone().oneshot(req).await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let v: serde_json::Value =
                    serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
                let keys: Vec<String> = v["certificates"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["historyKey"].as_str().unwrap().to_owned())
                    .collect();
                assert_eq!(keys.len(), 1, "each answer wholly old or wholly new: {keys:?}");
                seen.insert(keys[0].clone());
            }
            seen
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let body = json!({"dir": prepared.to_str().unwrap()}).to_string();
    let r = t.post("/v1/admin/snapshots", Some(ADMIN), &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["generation"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.await.unwrap();
    assert!(seen.contains("NANBYO-2026B"), "{seen:?}");
    // The consent carried over; a gateway may not install; a bad directory is 422.
    let r = t.post("/v1/admin/snapshots", Some(GATEWAY), &body).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = t.post("/v1/admin/snapshots", Some(ADMIN), &json!({"dir": "/nonexistent"}).to_string()).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
}
