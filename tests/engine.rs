//! The engine's contract: lookup rules (design §5), consents, atomic change sets,
//! snapshot switches, collisions, checkpoint and verify.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pmh_engine::date::unix_now;
use pmh_engine::record::CertificateId;
use pmh_engine::{AccessOutcome, ApplyMode, ApplySummary, Change, Error, Lookup, PmhId, Store, StoreKey};

use crate::util::*;

fn upsert(pmh_id: PmhId, certificate: pmh_engine::Certificate) -> Change {
    Change::Upsert { pmh_id, certificate }
}

/// History keys of the certificates answered, sorted.
fn answered(store: &Store, who: &PmhId, on: &str) -> Option<Vec<String>> {
    match store.lookup(store.register_client("test"), who, institution(), date(on)).expect("lookup") {
        Lookup::ConsentRequired => None,
        Lookup::Answered(e) => {
            let mut v: Vec<String> = e.certificates().map(|c| c.certificate.history_key.to_string()).collect();
            v.sort();
            Some(v)
        }
    }
}

#[test]
fn consented_lookup_returns_valid_certificates() {
    let t = store();
    let a = person(1);
    t.store.apply(vec![upsert(a, cert("H1"))], ApplyMode::Diff).unwrap();
    t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    let l = t.store.lookup(t.store.register_client("gw"), &a, institution(), date("2026-11-21")).unwrap();
    let e = l.answered().expect("answered");
    assert_eq!(e.len(), 1);
    let c = e.certificates().next().unwrap();
    assert_eq!(c.certificate.history_key.as_str(), "H1");
    assert!(c.personal_disclosed);
    assert_eq!(c.certificate.basic_five_info.name.as_str(), "山田 花子");
    assert!(c.is_designated_institution);
}

#[test]
fn without_consent_the_answer_is_the_same_for_existing_and_unknown_people() {
    let t = store();
    let known = person(1);
    let unknown = person(2);
    t.store.apply(vec![upsert(known, cert("H1"))], ApplyMode::Diff).unwrap();
    for who in [known, unknown] {
        let l = t.store.lookup(t.store.register_client("gw"), &who, institution(), date("2026-11-21")).unwrap();
        assert!(matches!(l, Lookup::ConsentRequired));
    }
    // Consent for another institution does not count.
    t.store.grant_consent(&known, other_institution(), unix_now()).unwrap();
    assert_eq!(answered(&t.store, &known, "2026-11-21"), None);
}

#[test]
fn consent_expires_and_can_be_revoked() {
    let t = store();
    let a = person(1);
    t.store.apply(vec![upsert(a, cert("H1"))], ApplyMode::Diff).unwrap();
    // Granted yesterday (end-of-day lifetime): expired now.
    t.store.grant_consent(&a, institution(), unix_now() - 86_400 - 60).unwrap();
    assert_eq!(answered(&t.store, &a, "2026-11-21"), None);
    // Granted now: live.
    let exp = t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    assert!(exp > unix_now());
    assert_eq!(answered(&t.store, &a, "2026-11-21"), Some(vec!["H1".into()]));
    // Revoked: refused again.
    assert!(t.store.revoke_consent(&a, institution()).unwrap());
    assert_eq!(answered(&t.store, &a, "2026-11-21"), None);
    assert!(!t.store.revoke_consent(&a, institution()).unwrap());
}

#[test]
fn end_of_day_consent_ends_at_tokyo_midnight() {
    let t = store();
    let a = person(1);
    let exp = t.store.grant_consent(&a, institution(), noon("2026-11-21")).unwrap();
    assert_eq!(exp, date("2026-11-22").tokyo_midnight_unix());
    assert!(t.store.consent_expiry(&a, institution(), exp - 1).is_some());
    assert!(t.store.consent_expiry(&a, institution(), exp).is_none());
}

#[test]
fn consents_survive_reopen_and_expired_ones_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (person(1), person(2));
    {
        let s = Store::open(dir.path(), config()).unwrap();
        s.grant_consent(&a, institution(), unix_now()).unwrap();
        s.grant_consent(&b, institution(), unix_now() - 3 * 86_400).unwrap();
        assert_eq!(s.live_consents(), 2, "in memory until purged");
        assert_eq!(s.purge_expired_consents(unix_now()).unwrap(), 1);
    }
    let s = Store::open(dir.path(), config()).unwrap();
    assert_eq!(s.live_consents(), 1);
    assert!(s.consent_expiry(&a, institution(), unix_now()).is_some());
}

#[test]
fn out_of_period_and_deleted_certificates_are_not_returned() {
    let t = store();
    let a = person(1);
    let mut old = cert("OLD");
    old.valid_from = date("2024-04-01").days();
    old.valid_to = date("2025-03-31").days();
    let mut future = cert("FUTURE");
    future.valid_from = date("2027-04-01").days();
    future.valid_to = date("2028-03-31").days();
    t.store
        .apply(
            vec![upsert(a, cert("NOW")), upsert(a, old), upsert(a, future), upsert(a, cert("GONE"))],
            ApplyMode::Diff,
        )
        .unwrap();
    t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    assert_eq!(answered(&t.store, &a, "2026-11-21"), Some(vec!["GONE".into(), "NOW".into()]));
    // Period ends are inclusive.
    assert_eq!(answered(&t.store, &a, "2025-03-31"), Some(vec!["OLD".into()]));
    assert_eq!(answered(&t.store, &a, "2027-04-01"), Some(vec!["FUTURE".into()]));

    let gone = cert("GONE").id();
    let s = t.store.apply(vec![Change::Delete(gone.clone())], ApplyMode::Diff).unwrap();
    assert_eq!(s.deleted, 1);
    assert_eq!(answered(&t.store, &a, "2026-11-21"), Some(vec!["NOW".into()]));
    // Deleting again is harmless.
    let s = t.store.apply(vec![Change::Delete(gone)], ApplyMode::Diff).unwrap();
    assert_eq!(s, ApplySummary { unchanged: 1, ..Default::default() });
}

#[test]
fn not_disclosed_withholds_the_personal_block_but_not_billing_fields() {
    let t = store();
    let a = person(1);
    let mut hidden = cert("DV");
    hidden.is_not_disclosed = true;
    // Another certificate of the same person without the flag: the personal block must be
    // withheld from it too, or it would leak through it.
    t.store.apply(vec![upsert(a, hidden), upsert(a, cert("PLAIN"))], ApplyMode::Diff).unwrap();
    t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    let l = t.store.lookup(t.store.register_client("gw"), &a, institution(), date("2026-11-21")).unwrap();
    let e = l.answered().unwrap();
    assert!(e.personal_withheld());
    assert_eq!(e.len(), 2);
    for c in e.certificates() {
        assert!(!c.personal_disclosed);
        assert_eq!(c.certificate.medical_subsidy_recipient_number.as_str(), "00012345");
        assert_eq!(c.certificate.max_copayment_amount.monthly.as_ref().map(|v| v.to_native()), Some(1000));
    }
    drop(l);
    let log = t.store.access_history(&a).unwrap();
    assert!(!log.last().unwrap().personal_disclosed);
}

#[test]
fn designated_institution_flag() {
    let t = store();
    let a = person(1);
    t.store.apply(vec![upsert(a, cert("H1"))], ApplyMode::Diff).unwrap();
    t.store.grant_consent(&a, other_institution(), unix_now()).unwrap();
    let l = t.store.lookup(t.store.register_client("gw"), &a, other_institution(), date("2026-11-21")).unwrap();
    assert!(!l.answered().unwrap().certificates().next().unwrap().is_designated_institution);
}

#[test]
fn every_answer_and_refusal_is_in_the_access_log() {
    let t = store();
    let a = person(1);
    t.store.apply(vec![upsert(a, cert("H1"))], ApplyMode::Diff).unwrap();
    assert!(matches!(
        t.store.lookup(t.store.register_client("gw-1"), &a, institution(), date("2026-11-21")).unwrap(),
        Lookup::ConsentRequired
    ));
    t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    let _ = t.store.lookup(t.store.register_client("gw-2"), &a, institution(), date("2026-11-21")).unwrap();
    let log = t.store.access_history(&a).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].outcome, AccessOutcome::ConsentRequired);
    assert_eq!(log[0].client, "gw-1");
    assert!(log[0].disclosed.is_empty());
    assert_eq!(log[1].outcome, AccessOutcome::Answered);
    assert_eq!(log[1].client, "gw-2");
    assert_eq!(log[1].institution, institution().get());
    assert_eq!(log[1].disclosed.len(), 1);
    assert_eq!(log[1].disclosed[0].history_key, "H1");
    assert!(log[1].personal_disclosed);
    assert!(log[0].at_micros <= log[1].at_micros);
    // Another person's history is separate.
    assert!(t.store.access_history(&person(2)).unwrap().is_empty());
}

#[test]
fn lookups_are_refused_while_the_access_log_cannot_be_written_and_nothing_is_lost() {
    let t = store();
    let a = person(1);
    t.store.apply(vec![upsert(a, cert("H1"))], ApplyMode::Diff).unwrap();
    t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    let gw = t.store.register_client("gw");
    let day = date("2026-11-21");
    // Answered before the log fails: its entry is queued, then its batch fails, and keeps
    // failing until the injection ends.
    t.store.inject_access_log_write_failures(u64::MAX);
    assert!(matches!(t.store.lookup(gw, &a, institution(), day).unwrap(), Lookup::Answered(_)));
    t.store.flush_access_log();
    assert!(t.store.access_log_failing(), "the failed batch is known when a flush returns");
    // Meanwhile nothing is answered, nor refused for want of consent: no trail, no answer.
    assert!(matches!(t.store.lookup(gw, &a, institution(), day), Err(Error::AccessLogUnavailable)));
    assert!(matches!(t.store.lookup(gw, &person(2), institution(), day), Err(Error::AccessLogUnavailable)));
    assert!(matches!(t.store.lookup_batch(gw, &[a], institution(), day), Err(Error::AccessLogUnavailable)));
    assert!(t.store.stats().unwrap().access_log_failures >= 1);
    // The batch is tried again until it is written; then lookups resume.
    t.store.inject_access_log_write_failures(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while t.store.access_log_failing() {
        assert!(std::time::Instant::now() < deadline, "the access log never recovered");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(matches!(t.store.lookup(gw, &a, institution(), day).unwrap(), Lookup::Answered(_)));
    let log = t.store.access_history(&a).unwrap();
    assert_eq!(log.len(), 2, "the answer given before the failure is logged after it, the refused ones not at all");
    assert!(log.iter().all(|e| e.outcome == AccessOutcome::Answered));
    assert!(t.store.access_history(&person(2)).unwrap().is_empty());
}

#[test]
fn batch_lookup_answers_in_request_order() {
    let t = store();
    let (a, b, c) = (person(1), person(2), person(3));
    t.store.apply(vec![upsert(a, cert("A")), upsert(b, cert("B"))], ApplyMode::Diff).unwrap();
    for p in [a, b, c] {
        t.store.grant_consent(&p, institution(), unix_now()).unwrap();
    }
    t.store.revoke_consent(&b, institution()).unwrap();
    let d = person(4); // no consent, no records
    let r = t
        .store
        .lookup_batch(t.store.register_client("gw"), &[c, b, a, d, a], institution(), date("2026-11-21"))
        .unwrap();
    let summary: Vec<Option<Vec<String>>> = r
        .iter()
        .map(|l| l.answered().map(|e| e.certificates().map(|c| c.certificate.history_key.to_string()).collect()))
        .collect();
    assert_eq!(summary, vec![Some(vec![]), None, Some(vec!["A".into()]), None, Some(vec!["A".into()])]);
    drop(r);
    assert_eq!(t.store.access_history(&a).unwrap().len(), 2);
    assert_eq!(t.store.access_history(&b).unwrap()[0].outcome, AccessOutcome::ConsentRequired);
}

#[test]
fn a_failed_change_set_changes_nothing() {
    let t = store();
    let a = person(1);
    t.store.apply(vec![upsert(a, cert("KEEP"))], ApplyMode::Diff).unwrap();
    let mut reversed = cert("BAD");
    reversed.valid_from = reversed.valid_to + 1;
    let mut keep2 = cert("KEEP");
    keep2.certification_name = "changed".into();
    let err = t
        .store
        .apply(
            vec![upsert(a, cert("NEW")), upsert(a, keep2), upsert(a, reversed), upsert(person(2), cert("NEW"))],
            ApplyMode::Diff,
        )
        .unwrap_err();
    let Error::Rejected(e) = err else { panic!("expected a rejection, got {err}") };
    // Every problem, not only the first: the reversed period and the duplicate identity.
    assert_eq!(e.problems.len(), 2, "{e}");
    assert_eq!((e.problems[0].index, e.problems[0].field), (2, "validTo"));
    assert_eq!((e.problems[1].index, e.problems[1].rule), (3, "unique certificate identity"));
    t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    let l = t.store.lookup(t.store.register_client("gw"), &a, institution(), date("2026-11-21")).unwrap();
    let e = l.answered().unwrap();
    let names: Vec<_> = e
        .certificates()
        .map(|c| (c.certificate.history_key.to_string(), c.certificate.certification_name.to_string()))
        .collect();
    assert_eq!(names, vec![("KEEP".to_string(), "子ども医療費受給者証".to_string())]);
    drop(l);
    assert!(t.store.verify().unwrap().is_ok());
}

#[test]
fn every_repeat_and_every_bad_certificate_is_reported_in_change_order() {
    // Checked on one thread below 4,096 changes and on every core above: the same problems
    // in the same order either way. An identity given three times is reported twice, each
    // time with the change just before it; a change with a problem of its own and a
    // repeat lists its own first.
    for n in [60usize, 5_000] {
        let t = store();
        let at = |i: usize| i * n / 60; // the same places, scaled to the set
        let mut set: Vec<Change> = (0..n).map(|i| upsert(person(i as u64 + 1), cert(&format!("C{i}")))).collect();
        let reversed = |c: &mut pmh_engine::Certificate| c.valid_from = c.valid_to + 1;
        let (first, second, third, bad) = (at(3), at(10), at(40), at(20));
        set[second] = upsert(person(7), cert(&format!("C{first}")));
        let mut again = cert(&format!("C{first}"));
        reversed(&mut again);
        set[third] = upsert(person(8), again);
        let mut c = cert(&format!("C{bad}"));
        reversed(&mut c);
        set[bad] = upsert(person(9), c);
        let Err(Error::Rejected(e)) = t.store.apply(set, ApplyMode::Diff) else { panic!("must be rejected") };
        let got: Vec<(usize, &str, &str)> = e.problems.iter().map(|p| (p.index, p.field, p.rule)).collect();
        assert_eq!(
            got,
            vec![
                (second, "historyKey", "unique certificate identity"),
                (bad, "validTo", "certificate invariant"),
                (third, "validTo", "certificate invariant"),
                (third, "historyKey", "unique certificate identity"),
            ],
            "{n} changes"
        );
        assert!(
            e.problems[0].message.contains(&format!("(changes {first} and {second})")),
            "{}",
            e.problems[0].message
        );
        assert!(
            e.problems[3].message.contains(&format!("(changes {second} and {third})")),
            "{}",
            e.problems[3].message
        );
        t.store.grant_consent(&person(1), institution(), unix_now()).unwrap();
        assert_eq!(answered(&t.store, &person(1), "2026-11-21"), Some(vec![]), "nothing written");
    }
}

#[test]
fn reapplying_a_diff_is_a_no_op_and_updates_are_counted() {
    let t = store();
    let a = person(1);
    let set = vec![upsert(a, cert("H1")), upsert(a, cert("H2"))];
    assert_eq!(
        t.store.apply(set.clone(), ApplyMode::Diff).unwrap(),
        ApplySummary { inserted: 2, ..Default::default() }
    );
    assert_eq!(t.store.apply(set, ApplyMode::Diff).unwrap(), ApplySummary { unchanged: 2, ..Default::default() });
    let mut changed = cert("H2");
    changed.max_copayment_amount.monthly = Some(2500);
    assert_eq!(
        t.store.apply(vec![upsert(a, changed)], ApplyMode::Diff).unwrap(),
        ApplySummary { updated: 1, ..Default::default() }
    );
}

#[test]
fn a_certificate_moved_to_another_person_leaves_the_first() {
    // A municipality corrects a certificate registered under the wrong My Number.
    let t = store();
    let (a, b) = (person(1), person(2));
    t.store.apply(vec![upsert(a, cert("H1"))], ApplyMode::Diff).unwrap();
    let s = t.store.apply(vec![upsert(b, cert("H1"))], ApplyMode::Diff).unwrap();
    assert_eq!(s.updated, 1);
    for p in [a, b] {
        t.store.grant_consent(&p, institution(), unix_now()).unwrap();
    }
    assert_eq!(answered(&t.store, &a, "2026-11-21"), Some(vec![]));
    assert_eq!(answered(&t.store, &b, "2026-11-21"), Some(vec!["H1".into()]));
    assert!(t.store.verify().unwrap().is_ok());
}

#[test]
fn a_municipality_full_upload_replaces_exactly_its_own_certificates() {
    let t = store();
    let a = person(1);
    let mut osaka = cert("OSAKA");
    osaka.municipality_code = 271004;
    t.store
        .apply(vec![upsert(a, cert("OLD1")), upsert(a, cert("OLD2")), upsert(a, osaka.clone())], ApplyMode::Diff)
        .unwrap();
    let s = t
        .store
        .apply(vec![upsert(a, cert("OLD2")), upsert(a, cert("NEW"))], ApplyMode::ReplaceMunicipality(131016))
        .unwrap();
    assert_eq!(s, ApplySummary { inserted: 1, unchanged: 1, deleted: 1, updated: 0 });
    t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    assert_eq!(answered(&t.store, &a, "2026-11-21"), Some(vec!["NEW".into(), "OLD2".into(), "OSAKA".into()]));
    // A full upload may not carry another municipality's certificate.
    let err = t.store.apply(vec![upsert(a, osaka)], ApplyMode::ReplaceMunicipality(131016)).unwrap_err();
    let Error::Rejected(e) = err else { panic!("expected rejection") };
    assert_eq!(e.problems[0].rule, "own municipality only");
    assert!(t.store.verify().unwrap().is_ok());
}

/// A key function that maps every PMH-ID to the same key: a worst-case collision.
fn colliding_key(_: &PmhId) -> StoreKey {
    StoreKey([0x42; 16])
}

#[test]
fn store_key_collisions_never_mix_people() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with_key_fn(dir.path(), config(), colliding_key).unwrap();
    let (a, b, c) = (person(1), person(2), person(3));
    assert_eq!(s.key_of(&a), s.key_of(&b));
    let mut bs = cert("B1");
    bs.basic_five_info.name = "別人 次郎".into();
    bs.org_specific_certificate_type_id = "NANBYO".into();
    s.apply(vec![upsert(a, cert("A1")), upsert(b, bs)], ApplyMode::Diff).unwrap();
    for p in [a, b, c] {
        s.grant_consent(&p, institution(), unix_now()).unwrap();
    }
    assert_eq!(answered(&s, &a, "2026-11-21"), Some(vec!["A1".into()]));
    assert_eq!(answered(&s, &b, "2026-11-21"), Some(vec!["B1".into()]));
    // c shares the key but has no records: it must see nothing of a's or b's.
    assert_eq!(answered(&s, &c, "2026-11-21"), Some(vec![]));
    let batch = s.lookup_batch(s.register_client("gw"), &[c, a], institution(), date("2026-11-21")).unwrap();
    assert_eq!(batch[0].answered().unwrap().len(), 0);
    assert_eq!(
        batch[1].answered().unwrap().certificates().next().unwrap().certificate.basic_five_info.name.as_str(),
        "山田 花子"
    );
    drop(batch);
    // Deleting a's certificate leaves b's in the shared bucket.
    s.apply(vec![Change::Delete(cert("A1").id())], ApplyMode::Diff).unwrap();
    assert_eq!(answered(&s, &a, "2026-11-21"), Some(vec![]));
    assert_eq!(answered(&s, &b, "2026-11-21"), Some(vec!["B1".into()]));
    // The same through a full snapshot.
    s.load_snapshot(vec![(a, cert("A2")), (b, cert("B2"))], &dir.path().join("staging")).unwrap();
    assert_eq!(answered(&s, &a, "2026-11-21"), Some(vec!["A2".into()]));
    assert_eq!(answered(&s, &b, "2026-11-21"), Some(vec!["B2".into()]));
    assert!(s.verify().unwrap().is_ok());
}

/// One generated change: upsert (`kind` 0–2) or delete (3) of the certificate with history
/// key `H{key}` of municipality `MUNICIPALITIES[m]`, held by `person(who)`, in content
/// version `version`.
type Op = (u8, usize, usize, usize, u8);

const MUNICIPALITIES: [u32; 2] = [131016, 271004];

/// People `person(0)`..`person(PEOPLE - 1)` hold the generated certificates.
const PEOPLE: u64 = 3;

/// What the store must answer, as a map of certificate identity (municipality, history
/// key) to (holder, content version).
type Model = std::collections::BTreeMap<(u32, usize), (u64, u8)>;

fn generated_cert(m: usize, key: usize, version: u8) -> pmh_engine::Certificate {
    let mut c = cert(&format!("H{key}"));
    c.municipality_code = MUNICIPALITIES[m];
    c.certification_name = format!("v{version}");
    c
}

/// Applies `ops` to `model` as the store should, or `None` if the store must reject them.
fn model_apply(model: &mut Model, ops: &[Op], replace: Option<usize>) -> Option<ApplySummary> {
    let mut ids = std::collections::BTreeSet::new();
    for &(_, _, m, key, _) in ops {
        if !ids.insert((MUNICIPALITIES[m], key)) || replace.is_some_and(|r| r != m) {
            return None;
        }
    }
    let mut sum = ApplySummary::default();
    for &(kind, who, m, key, version) in ops {
        let id = (MUNICIPALITIES[m], key);
        if kind == 3 {
            match model.remove(&id) {
                Some(_) => sum.deleted += 1,
                None => sum.unchanged += 1,
            }
        } else {
            match model.insert(id, (who as u64, version)) {
                None => sum.inserted += 1,
                Some(old) if old == (who as u64, version) => sum.unchanged += 1,
                Some(_) => sum.updated += 1,
            }
        }
    }
    if let Some(r) = replace {
        let before = model.len();
        model.retain(|id, _| id.0 != MUNICIPALITIES[r] || ids.contains(id));
        sum.deleted += (before - model.len()) as u64;
    }
    Some(sum)
}

/// One person's certificates: (municipality, history key, content version), sorted.
type Answer = Vec<(u32, String, String)>;

/// Every person's answer as the model has it and as the store gives it.
fn person_answers(store: &Store, model: &Model) -> (Vec<Answer>, Vec<Answer>) {
    let client = store.register_client("model");
    let (mut want, mut got) = (Vec::new(), Vec::new());
    for who in 0..PEOPLE {
        let mut w: Vec<_> = model
            .iter()
            .filter(|(_, (h, _))| *h == who)
            .map(|((m, key), (_, v))| (*m, format!("H{key}"), format!("v{v}")))
            .collect();
        w.sort();
        want.push(w);
        let Lookup::Answered(e) =
            store.lookup(client, &person(who), institution(), date("2026-11-21")).expect("lookup")
        else {
            panic!("person {who} has consent")
        };
        let mut g: Vec<_> = e
            .certificates()
            .map(|c| {
                let c = c.certificate;
                (c.municipality_code.to_native(), c.history_key.to_string(), c.certification_name.to_string())
            })
            .collect();
        g.sort();
        got.push(g);
    }
    (want, got)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    /// Random change sets — upserts, updates, moves between people, deletes, repeats and
    /// municipality full uploads — and full snapshots between them, against a model: each
    /// set is rejected exactly when the model says, counted as the model counts it, and
    /// leaves every person answered with exactly the model's certificates. With `collide`,
    /// every person shares one bucket; sets of up to 60 changes over 80 identities also
    /// reach the bucket's indexed edits.
    #[test]
    fn change_sets_agree_with_a_model(
        collide in proptest::bool::ANY,
        sets in proptest::collection::vec(
            (
                proptest::collection::vec((0u8..4, 0..PEOPLE as usize, 0usize..2, 0usize..40, 0u8..2), 0..60),
                proptest::option::weighted(0.2, 0usize..2),
                proptest::bool::weighted(0.15),
                proptest::bool::weighted(0.15),
            ),
            1..6,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = if collide {
            Store::open_with_key_fn(dir.path(), config(), colliding_key).unwrap()
        } else {
            Store::open(dir.path(), config()).unwrap()
        };
        for who in 0..PEOPLE {
            store.grant_consent(&person(who), institution(), unix_now()).unwrap();
        }
        let mut model = Model::new();
        for (mut ops, replace, keep_repeats, snapshot) in sets {
            // Mostly sets a store accepts: no identity twice, and a full upload only of
            // its own municipality. The others must be refused.
            if !keep_repeats {
                if let Some(r) = replace {
                    ops.iter_mut().for_each(|op| op.2 = r);
                }
                let mut seen = std::collections::BTreeSet::new();
                ops.retain(|&(_, _, m, key, _)| seen.insert((m, key)));
            }
            if snapshot {
                // A full snapshot of the upserts: the store holds exactly them afterwards,
                // in the other pair of column families, where the next sets apply.
                ops.retain(|op| op.0 != 3);
                let records = ops
                    .iter()
                    .map(|&(_, who, m, key, version)| (person(who as u64), generated_cert(m, key, version)))
                    .collect();
                let generation = store.generation();
                let mut next = Model::new();
                let unique = ops.iter().all(|&(_, who, m, key, version)| {
                    next.insert((MUNICIPALITIES[m], key), (who as u64, version)).is_none()
                });
                match store.load_snapshot(records, &dir.path().join("staging")) {
                    Ok(s) if unique => {
                        proptest::prop_assert_eq!((s.generation, s.certificates), (generation + 1, ops.len() as u64));
                        model = next;
                    }
                    Err(Error::Rejected(_)) if !unique => proptest::prop_assert_eq!(store.generation(), generation),
                    got => proptest::prop_assert!(false, "snapshot {got:?}, unique {unique}"),
                }
            } else {
                let changes: Vec<Change> = ops
                    .iter()
                    .map(|&(kind, who, m, key, version)| match kind {
                        3 => Change::Delete(generated_cert(m, key, version).id()),
                        _ => upsert(person(who as u64), generated_cert(m, key, version)),
                    })
                    .collect();
                let mode = match replace {
                    Some(r) => ApplyMode::ReplaceMunicipality(MUNICIPALITIES[r]),
                    None => ApplyMode::Diff,
                };
                let mut next = model.clone();
                let expected = model_apply(&mut next, &ops, replace);
                match (store.apply(changes, mode), expected) {
                    (Ok(sum), Some(want)) => {
                        proptest::prop_assert_eq!(sum, want);
                        model = next;
                    }
                    (Err(Error::Rejected(_)), None) => {}
                    (got, want) => proptest::prop_assert!(false, "store {got:?}, model {want:?}"),
                }
            }
            let (want, got) = person_answers(&store, &model);
            proptest::prop_assert_eq!(got, want);
            let report = store.verify().unwrap();
            proptest::prop_assert!(report.is_ok(), "{:?}", report.problems);
            proptest::prop_assert_eq!(report.certificates, model.len() as u64);
        }
    }
}

#[test]
fn full_snapshot_replaces_everything_and_keeps_consents() {
    let t = store();
    let (a, b) = (person(1), person(2));
    t.store.apply(vec![upsert(a, cert("A-DIFF"))], ApplyMode::Diff).unwrap();
    t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    t.store.grant_consent(&b, institution(), unix_now()).unwrap();
    let g0 = t.store.generation();
    let s = t.store.load_snapshot(vec![(b, cert("B1")), (b, cert("B2"))], &t.dir.path().join("staging")).unwrap();
    assert_eq!(s.generation, g0 + 1);
    assert_eq!(s.certificates, 2);
    assert_eq!(answered(&t.store, &a, "2026-11-21"), Some(vec![]));
    assert_eq!(answered(&t.store, &b, "2026-11-21"), Some(vec!["B1".into(), "B2".into()]));
    // The pair the snapshot replaced, which held the diff in its memtable, is emptied. An
    // empty memtable still reports its first arena block (about 2 KiB), hence "at most
    // 4 KiB" rather than 0; the diff's memtable here held well over that.
    let old = (g0 & 1) as usize;
    for c in t.store.stats().unwrap().column_families {
        if c.name == pmh_engine::layout::HOLDERS[old] || c.name == pmh_engine::layout::SOURCE[old] {
            assert_eq!((c.estimated_keys, c.sst_bytes, c.memtable_bytes > 4096), (0, 0, false), "{}", c.name);
        }
    }
    // Diffs apply on top of the new snapshot.
    t.store.apply(vec![Change::Delete(cert("B1").id())], ApplyMode::Diff).unwrap();
    assert_eq!(answered(&t.store, &b, "2026-11-21"), Some(vec!["B2".into()]));
    assert!(t.store.verify().unwrap().is_ok());
}

#[test]
fn snapshot_with_duplicate_identities_is_rejected_and_changes_nothing() {
    let t = store();
    let a = person(1);
    t.store.load_snapshot(vec![(a, cert("H1"))], &t.dir.path().join("s1")).unwrap();
    let g = t.store.generation();
    let err =
        t.store.load_snapshot(vec![(a, cert("H2")), (person(2), cert("H2"))], &t.dir.path().join("s2")).unwrap_err();
    let Error::Rejected(e) = err else { panic!("expected rejection") };
    assert_eq!(e.problems.len(), 1);
    assert!(e.problems[0].message.contains("record 0"), "{}", e.problems[0].message);
    assert_eq!(t.store.generation(), g);
    t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    assert_eq!(answered(&t.store, &a, "2026-11-21"), Some(vec!["H1".into()]));
}

#[test]
fn lookups_keep_succeeding_during_snapshot_switches() {
    let t = store();
    let people: Vec<PmhId> = (0..200).map(person).collect();
    let records = || people.iter().enumerate().map(|(i, &p)| (p, cert(&format!("P{i}")))).collect::<Vec<_>>();
    t.store.load_snapshot(records(), &t.dir.path().join("s0")).unwrap();
    for p in &people {
        t.store.grant_consent(p, institution(), unix_now()).unwrap();
    }
    let store = Arc::new(t.store);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (store, stop, reads, people) = (store.clone(), stop.clone(), reads.clone(), people.clone());
            std::thread::spawn(move || {
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    let got = answered(&store, &people[i % people.len()], "2026-11-21");
                    // Every snapshot gives every person exactly one certificate: never none,
                    // never two, whatever the switch is doing.
                    assert_eq!(got.map(|v| v.len()), Some(1), "person {i} during a switch");
                    reads.fetch_add(1, Ordering::Relaxed);
                    i += 7;
                }
            })
        })
        .collect();
    for round in 1..=6 {
        store.load_snapshot(records(), &t.dir.path().join(format!("s{round}"))).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader panicked");
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert!(store.verify().unwrap().is_ok());
}

/// What a person is answered after each step of a store's life: values read from table
/// files (after `compact`), then overwritten in the memtable, compacted again, changed
/// once more, replaced by a snapshot and deleted.
fn answers_through_changes(t: &TestStore) -> Vec<Option<Vec<String>>> {
    let a = person(1);
    let s = &t.store;
    let mut seen = Vec::new();
    s.grant_consent(&a, institution(), unix_now()).unwrap();
    s.apply(vec![upsert(a, cert("H1"))], ApplyMode::Diff).unwrap();
    s.compact().unwrap();
    seen.push(answered(s, &a, "2026-11-21"));
    seen.push(answered(s, &a, "2026-11-21"));
    s.apply(vec![Change::Delete(cert("H1").id()), upsert(a, cert("H2"))], ApplyMode::Diff).unwrap();
    seen.push(answered(s, &a, "2026-11-21"));
    s.compact().unwrap();
    seen.push(answered(s, &a, "2026-11-21"));
    s.apply(vec![upsert(a, cert("H2b"))], ApplyMode::Diff).unwrap();
    seen.push(answered(s, &a, "2026-11-21"));
    // The switch empties the old pair, whose newest values are still in its memtable: they
    // are flushed to level 0, which RocksDB never drops whole, so they are point-deleted.
    let old = s.stats().unwrap().active_pair;
    s.load_snapshot(vec![(a, cert("H3"))], &t.dir.path().join("staging")).unwrap();
    for cf in s.stats().unwrap().column_families {
        if cf.name.ends_with(&format!(".{old}")) {
            assert_eq!((cf.estimated_keys, cf.sst_bytes), (0, 0), "{} after the switch", cf.name);
        }
    }
    seen.push(answered(s, &a, "2026-11-21"));
    s.compact().unwrap();
    seen.push(answered(s, &a, "2026-11-21"));
    s.apply(vec![Change::Delete(cert("H3").id())], ApplyMode::Diff).unwrap();
    seen.push(answered(s, &a, "2026-11-21"));
    seen
}

#[test]
fn the_row_cache_serves_lookups_and_never_answers_a_stale_value() {
    let expected: Vec<Option<Vec<String>>> =
        [&["H1"][..], &["H1"], &["H2"], &["H2"], &["H2", "H2b"], &["H3"], &["H3"], &[]]
            .iter()
            .map(|keys| Some(keys.iter().map(|k| k.to_string()).collect()))
            .collect();
    let on = store();
    assert_eq!(on.store.stats().unwrap().row_cache_bytes, 0, "nothing read yet");
    assert_eq!(answers_through_changes(&on), expected);
    assert!(on.store.stats().unwrap().row_cache_bytes > 0, "lookups from table files go through the row cache");

    let dir = tempfile::tempdir().unwrap();
    let mut config = config();
    config.rocks = config.rocks.for_offline_tools();
    let off = TestStore { store: Store::open(dir.path().join("db"), config).unwrap(), dir };
    assert_eq!(answers_through_changes(&off), expected);
    assert_eq!(off.store.stats().unwrap().row_cache_bytes, 0);
}

#[test]
fn checkpoint_reopens_with_the_same_answers() {
    let t = store();
    let a = person(1);
    t.store.apply(vec![upsert(a, cert("H1"))], ApplyMode::Diff).unwrap();
    t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    let _ = answered(&t.store, &a, "2026-11-21");
    let cp = t.dir.path().join("checkpoint");
    t.store.checkpoint(&cp).unwrap();
    // The original keeps changing; the checkpoint does not.
    t.store.apply(vec![upsert(a, cert("H2"))], ApplyMode::Diff).unwrap();
    let copy = Store::open(&cp, config()).unwrap();
    assert_eq!(answered(&copy, &a, "2026-11-21"), Some(vec!["H1".into()]));
    assert_eq!(copy.access_history(&a).unwrap().len(), 2, "the access log is in the checkpoint");
    assert!(copy.verify().unwrap().is_ok());
}

#[test]
fn a_store_refuses_another_secret() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), config()).unwrap());
    let mut other = config();
    other.secret_fingerprint = Some(pmh_engine::PmhIdDeriver::new(b"another secret").fingerprint());
    assert!(matches!(Store::open(dir.path(), other), Err(Error::SecretMismatch)));
}

#[test]
fn verify_catches_a_corrupted_value_and_lookup_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = person(1);
    let key = {
        let s = Store::open(dir.path(), config()).unwrap();
        s.apply(vec![upsert(a, cert("H1")), upsert(person(2), cert("H2"))], ApplyMode::Diff).unwrap();
        assert!(s.verify().unwrap().is_ok());
        s.key_of(&a)
    };
    // Corrupt the value behind the engine's back, with plain RocksDB.
    {
        let db = pmh_engine::store::open_raw_db(dir.path(), &config()).unwrap();
        let cf = db.cf_handle(pmh_engine::layout::HOLDERS[0]).unwrap();
        let mut v = db.get_cf(cf, key.0).unwrap().unwrap();
        let n = v.len();
        v[n - 4..].copy_from_slice(&[0xff; 4]);
        db.put_cf(cf, key.0, v).unwrap();
    }
    let s = Store::open(dir.path(), config()).unwrap();
    let r = s.verify().unwrap();
    assert_eq!(r.problem_count, 2, "{:?}", r.problems);
    assert!(r.problems.iter().any(|p| p.contains("does not validate")), "{:?}", r.problems);
    assert!(r.problems.iter().any(|p| p.contains("no such certificate")), "{:?}", r.problems);
    s.grant_consent(&a, institution(), unix_now()).unwrap();
    assert!(matches!(s.lookup(s.register_client("gw"), &a, institution(), date("2026-11-21")), Err(Error::Corrupt(_))));
    assert_eq!(s.corrupt_reads(), 1);
    // The count is the store's own, not the process's.
    assert_eq!(store().store.corrupt_reads(), 0);
}

#[test]
fn a_change_set_that_meets_a_corrupt_holder_value_fails_and_writes_nothing() {
    // Person 1's value is corrupted; a set touching it must fail as corrupt, on the
    // one-thread path and when it is split across threads, and leave every other person's
    // certificates and the source index as they were.
    let dir = tempfile::tempdir().unwrap();
    let n = 5_000u64;
    let key = {
        let s = Store::open(dir.path(), config()).unwrap();
        s.apply((1..=n).map(|i| upsert(person(i), cert(&format!("H{i}")))).collect(), ApplyMode::Diff).unwrap();
        s.key_of(&person(1))
    };
    {
        let db = pmh_engine::store::open_raw_db(dir.path(), &config()).unwrap();
        let cf = db.cf_handle(pmh_engine::layout::HOLDERS[0]).unwrap();
        let mut v = db.get_cf(cf, key.0).unwrap().unwrap();
        v[20] ^= 0x40;
        db.put_cf(cf, key.0, v).unwrap();
    }
    let s = Store::open(dir.path(), config()).unwrap();
    let small = vec![upsert(person(1), cert("X1")), upsert(person(2), cert("X2"))];
    let large: Vec<Change> = (1..=n).map(|i| upsert(person(i), cert(&format!("X{i}")))).collect();
    for set in [small, large] {
        assert!(matches!(s.apply(set, ApplyMode::Diff), Err(Error::Corrupt(_))));
        for i in [2, n / 2, n] {
            s.grant_consent(&person(i), institution(), unix_now()).unwrap();
            assert_eq!(answered(&s, &person(i), "2026-11-21"), Some(vec![format!("H{i}")]), "person {i}");
        }
    }
    // Only the corrupted value is reported: nothing of the failed sets was written.
    let r = s.verify().unwrap();
    assert_eq!(r.problem_count, 2, "{:?}", r.problems);
}

#[test]
fn stats_count_what_is_stored() {
    let t = store();
    t.store
        .load_snapshot((0..50).map(|i| (person(i), cert(&format!("H{i}")))).collect(), &t.dir.path().join("s"))
        .unwrap();
    t.store.grant_consent(&person(1), institution(), unix_now()).unwrap();
    let s = t.store.stats().unwrap();
    assert_eq!(s.generation, 1);
    assert_eq!(s.live_consents, 1);
    let holders = s.column_families.iter().find(|c| c.name == pmh_engine::layout::HOLDERS[1]).unwrap();
    assert_eq!(holders.estimated_keys, 50);
    assert!(holders.sst_bytes > 0);
    t.store.compact().unwrap();
    assert!(t.store.verify().unwrap().is_ok());
}

#[test]
fn certificate_identity_is_municipality_type_and_history_key() {
    let id = cert("H1").id();
    assert_eq!(
        id,
        CertificateId {
            municipality_code: 131016,
            org_specific_certificate_type_id: "KODOMO".into(),
            history_key: "H1".into()
        }
    );
}

#[test]
fn a_person_with_many_certificates_is_answered_and_logged_in_full() {
    // Past 64 certificates the answer switches from a bit mask to a list, and the access
    // log entry outgrows its inline buffer: both paths must keep every certificate.
    let t = store();
    let a = person(1);
    let keys: Vec<String> = (0..70).map(|i| format!("history-key-with-some-length-{i:03}")).collect();
    let mut expired = cert("EXPIRED");
    expired.valid_to = expired.valid_from;
    let mut changes: Vec<Change> = keys.iter().map(|k| upsert(a, cert(k))).collect();
    changes.push(upsert(a, expired));
    t.store.apply(changes, ApplyMode::Diff).unwrap();
    t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(answered(&t.store, &a, "2026-11-21"), Some(want.clone()));
    let log = t.store.access_history(&a).unwrap();
    let mut logged: Vec<String> = log[0].disclosed.iter().map(|d| d.history_key.clone()).collect();
    logged.sort();
    assert_eq!(logged, want);
    assert!(
        log[0]
            .disclosed
            .iter()
            .all(|d| d.municipality_code == 131016 && d.org_specific_certificate_type_id == "KODOMO")
    );
}

#[test]
fn a_store_of_another_schema_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(Store::open(&path, config()).unwrap());
    // Make it a schema-1 store (one rkyv archive per bucket), as an older build wrote it.
    {
        let db = pmh_engine::store::open_raw_db(&path, &config()).unwrap();
        db.put_cf(db.cf_handle(pmh_engine::layout::META).unwrap(), b"schema_version", 1u32.to_be_bytes()).unwrap();
    }
    let Err(Error::Schema(msg)) = Store::open(&path, config()) else { panic!("a schema-1 store must be refused") };
    assert!(msg.contains("store schema 1"), "{msg}");
    assert!(msg.contains(&format!("reads {}", pmh_engine::layout::SCHEMA_VERSION)), "{msg}");
    assert!(msg.contains("pmh-load full") && msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn a_store_with_block_based_holders_is_refused_as_an_older_schema() {
    // What a schema-2 build created: every family with RocksDB's built-in comparator and
    // block-based tables, holders included.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&opts, &path, pmh_engine::layout::ALL_CFS).unwrap();
        db.put_cf(db.cf_handle(pmh_engine::layout::META).unwrap(), b"schema_version", 2u32.to_be_bytes()).unwrap();
        db.put_cf(db.cf_handle(pmh_engine::layout::HOLDERS[0]).unwrap(), [7u8; 16], b"old").unwrap();
        db.flush_cf(db.cf_handle(pmh_engine::layout::HOLDERS[0]).unwrap()).unwrap();
    }
    let Err(Error::Schema(msg)) = Store::open(&path, config()) else { panic!("a schema-2 store must be refused") };
    assert!(msg.contains("older build") && msg.contains("block-based"), "{msg}");
    assert!(msg.contains(&format!("reads {}", pmh_engine::layout::SCHEMA_VERSION)), "{msg}");
    assert!(msg.contains("pmh-load full") && msg.contains(&path.display().to_string()), "{msg}");
    // Refusing it changed nothing: the old store still opens as it was.
    let opts = rocksdb::Options::default();
    let db = rocksdb::DB::open_cf(&opts, &path, pmh_engine::layout::ALL_CFS).unwrap();
    assert_eq!(db.get_cf(db.cf_handle(pmh_engine::layout::HOLDERS[0]).unwrap(), [7u8; 16]).unwrap().unwrap(), b"old");
}

#[test]
fn a_failed_snapshot_install_leaves_the_previous_snapshot_serving() {
    let dir = tempfile::tempdir().unwrap();
    let a = person(1);
    {
        let s = Store::open(dir.path().join("db"), config()).unwrap();
        s.load_snapshot(vec![(a, cert("OLD"))], &dir.path().join("s1")).unwrap();
        let g = s.generation();
        // Build a valid holders file for the next snapshot, then fail on its source index
        // file: the holders part is already ingested into the inactive pair when it fails.
        let opts = s.holders_sst_writer();
        let holders = dir.path().join("next-holders.sst");
        let mut w = opts.writer();
        w.open(&holders).unwrap();
        let bucket = pmh_engine::record::Bucket {
            holders: vec![pmh_engine::record::Holder { pmh_id: *a.as_bytes(), certificates: vec![cert("NEW")] }],
        };
        w.put(s.key_of(&a).0, pmh_engine::record::encode_bucket(&bucket).unwrap()).unwrap();
        let holders = w.finish().unwrap();
        let missing = pmh_engine::snapshot::SstFile::at(dir.path().join("no-such-source.sst"));
        assert!(s.install_snapshot(&[holders], &[missing]).is_err());
        assert_eq!(s.generation(), g);
        s.grant_consent(&a, institution(), unix_now()).unwrap();
        assert_eq!(answered(&s, &a, "2026-11-21"), Some(vec!["OLD".into()]));
        let inactive =
            s.stats().unwrap().column_families.into_iter().find(|c| c.name == pmh_engine::layout::HOLDERS[0]).unwrap();
        assert_eq!(inactive.estimated_keys, 1, "the partial ingest sits in the inactive pair");
        assert!(s.verify().unwrap().is_ok());
    }
    // Reopening reclaims the partial ingest and still serves the old snapshot.
    let s = Store::open(dir.path().join("db"), config()).unwrap();
    let inactive =
        s.stats().unwrap().column_families.into_iter().find(|c| c.name == pmh_engine::layout::HOLDERS[0]).unwrap();
    assert_eq!(inactive.estimated_keys, 0);
    assert_eq!(answered(&s, &a, "2026-11-21"), Some(vec!["OLD".into()]));
}

/// Writes one holders file per person of `people` (ascending store keys across files, as a
/// full load's key ranges are) and returns them as this process's writer finished them.
fn holders_files(s: &Store, people: &[(PmhId, &str)], dir: &std::path::Path) -> Vec<pmh_engine::snapshot::SstFile> {
    let mut people = people.to_vec();
    people.sort_by_key(|(p, _)| s.key_of(p));
    // Every other file from a writer that drops its pages (as a prepared directory's do).
    let opts = [s.holders_sst_writer(), pmh_engine::snapshot::SstOptions::holders(&s.config().rocks)];
    people
        .iter()
        .enumerate()
        .map(|(i, (p, history_key))| {
            let mut w = opts[i % 2].writer();
            w.open(&dir.join(format!("h{i}.sst"))).unwrap();
            let bucket = pmh_engine::record::Bucket {
                holders: vec![pmh_engine::record::Holder {
                    pmh_id: *p.as_bytes(),
                    certificates: vec![cert(history_key)],
                }],
            };
            w.put(s.key_of(p).0, pmh_engine::record::encode_bucket(&bucket).unwrap()).unwrap();
            w.finish().unwrap()
        })
        .collect()
}

#[test]
fn a_prepared_file_gone_before_its_install_fails_it_and_the_old_snapshot_serves() {
    // The ingestion takes a prepared file's key range from its writer and never opens it;
    // a file removed meanwhile (a staging directory cleaned by someone) must still fail
    // the install, never switch to a snapshot missing people.
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("db"), config()).unwrap();
    let a = person(1);
    s.load_snapshot(vec![(a, cert("OLD"))], &dir.path().join("s1")).unwrap();
    s.grant_consent(&a, institution(), unix_now()).unwrap();
    let g = s.generation();
    let files = holders_files(&s, &[(a, "NEW"), (person(2), "B")], dir.path());
    assert!(files.iter().all(|f| f.is_prepared()));
    std::fs::remove_file(files[1].path()).unwrap();
    let err = s.install_snapshot(&files, &[]).unwrap_err();
    let name = files[1].path().file_name().unwrap().to_string_lossy().into_owned();
    assert!(matches!(&err, Error::Storage(m) if m.contains(&name)), "names the missing file: {err}");
    assert_eq!(s.generation(), g);
    assert_eq!(answered(&s, &a, "2026-11-21"), Some(vec!["OLD".into()]));
}

#[test]
fn holders_files_install_alike_whether_their_writer_is_at_hand_or_not() {
    // A full load's own files are ingested with what their writer learnt of them (RocksDB
    // does not read them again); a prepared directory's are named by path and read. Both
    // ways, and a mix of the two in one install, must serve the same answers.
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("db"), config()).unwrap();
    let people: Vec<(PmhId, &str)> = vec![(person(1), "A"), (person(2), "B"), (person(3), "C")];
    for p in &people {
        s.grant_consent(&p.0, institution(), unix_now()).unwrap();
    }
    let at = |files: Vec<pmh_engine::snapshot::SstFile>| {
        files.iter().map(|f| pmh_engine::snapshot::SstFile::at(f.path())).collect::<Vec<_>>()
    };
    let round = |n: usize| {
        let d = dir.path().join(format!("round{n}"));
        std::fs::create_dir_all(&d).unwrap();
        holders_files(&s, &people, &d)
    };
    let prepared = round(0);
    assert!(prepared.iter().all(|f| f.is_prepared()));
    let named = at(round(1));
    assert!(named.iter().all(|f| !f.is_prepared()));
    let mut mixed = round(2);
    let last = mixed.pop().unwrap();
    mixed.push(pmh_engine::snapshot::SstFile::at(last.path()));
    for (files, how) in [(prepared, "prepared"), (named, "named"), (mixed, "mixed")] {
        let paths: Vec<_> = files.iter().map(|f| f.path().to_path_buf()).collect();
        let before = s.generation();
        s.install_snapshot(&files, &[]).unwrap();
        assert_eq!(s.generation(), before + 1, "{how}");
        for (p, history_key) in &people {
            assert_eq!(answered(&s, p, "2026-11-21"), Some(vec![history_key.to_string()]), "{how}");
        }
        assert!(paths.iter().all(|p| !p.exists()), "{how}: the files were moved into the store");
    }
}

#[test]
fn journal_records_are_written_with_their_change_set_or_not_at_all() {
    let t = store();
    let a = person(1);
    let s = t
        .store
        .apply_journaled(vec![upsert(a, cert("J1"))], ApplyMode::Diff, |sum| {
            vec![(b"u/131016/0001".to_vec(), format!("inserted={}", sum.inserted).into_bytes())]
        })
        .unwrap();
    assert_eq!(s.inserted, 1);
    assert_eq!(t.store.journal_get(b"u/131016/0001").unwrap().as_deref(), Some(&b"inserted=1"[..]));
    // A rejected change set writes none of its records.
    let mut osaka = cert("X");
    osaka.municipality_code = 271004;
    let err = t.store.apply_journaled(vec![upsert(a, osaka)], ApplyMode::ReplaceMunicipality(131016), |_| {
        vec![(b"u/131016/0002".to_vec(), b"never".to_vec())]
    });
    assert!(err.is_err());
    assert_eq!(t.store.journal_get(b"u/131016/0002").unwrap(), None);
    // An unchanged re-apply still writes its record.
    let s = t
        .store
        .apply_journaled(vec![upsert(a, cert("J1"))], ApplyMode::Diff, |_| vec![(b"u/131016/0003".to_vec(), vec![3])])
        .unwrap();
    assert_eq!(s.unchanged, 1);
    assert_eq!(t.store.journal_get(b"u/131016/0003").unwrap(), Some(vec![3]));
}

#[test]
fn journal_scan_is_newest_first_and_stays_in_its_prefix() {
    let t = store();
    let recs: Vec<(Vec<u8>, Vec<u8>)> =
        [&b"u/1/\x00\x01"[..], b"u/1/\x00\x02", b"u/1/\xff\xff", b"u/2/\x00\x01", b"u/0/\x05"]
            .iter()
            .map(|k| (k.to_vec(), k.to_vec()))
            .collect();
    let refs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    t.store.journal_put(&refs).unwrap();
    let keys = |prefix: &[u8], limit| -> Vec<Vec<u8>> {
        t.store.journal_scan_rev(prefix, limit).unwrap().into_iter().map(|(k, _)| k).collect()
    };
    assert_eq!(keys(b"u/1/", 10), vec![b"u/1/\xff\xff".to_vec(), b"u/1/\x00\x02".to_vec(), b"u/1/\x00\x01".to_vec()]);
    assert_eq!(keys(b"u/1/", 1), vec![b"u/1/\xff\xff".to_vec()]);
    assert_eq!(keys(b"u/2/", 10), vec![b"u/2/\x00\x01".to_vec()]);
    assert_eq!(keys(b"u/3/", 10), Vec::<Vec<u8>>::new());
    assert_eq!(keys(b"u/1/\xff", 10), vec![b"u/1/\xff\xff".to_vec()]);
    assert_eq!(keys(b"", 10).len(), 5);
}

#[test]
fn access_entries_written_one_after_another_carry_only_their_own_details() {
    // The access-log writer reuses one entry and one buffer for every record it writes:
    // nothing of an earlier record (a longer list of certificates, another client) may
    // carry over into the next, whether they share a batch or not.
    let t = store();
    let (a, b, c) = (person(1), person(2), person(3));
    let long = "L".repeat(40); // with H1 and H2, past the entry's inline buffer: it spills
    let changes = vec![upsert(a, cert("H1")), upsert(a, cert("H2")), upsert(a, cert(&long)), upsert(b, cert("B1"))];
    t.store.apply(changes, ApplyMode::Diff).unwrap();
    for p in [a, b] {
        t.store.grant_consent(&p, institution(), unix_now()).unwrap();
    }
    let day = date("2026-11-21");
    let early = t.store.register_client("gw-early");
    let _ = t.store.lookup(early, &a, institution(), day).unwrap();
    t.store.flush_access_log();
    // A client registered after the writer has written a batch without it.
    let late = t.store.register_client("gw-late");
    let _ = t.store.lookup(late, &b, institution(), day).unwrap();
    let _ = t.store.lookup(late, &c, institution(), day).unwrap(); // no consent: refused
    let _ = t.store.lookup(early, &b, institution(), day).unwrap();

    let keys = |e: &pmh_engine::audit::AccessEntry| {
        let mut k: Vec<String> = e.disclosed.iter().map(|d| d.history_key.clone()).collect();
        k.sort();
        k
    };
    let ha = t.store.access_history(&a).unwrap();
    assert_eq!(ha.len(), 1);
    assert_eq!(ha[0].client, "gw-early");
    assert_eq!(keys(&ha[0]), vec!["H1".to_string(), "H2".to_string(), long.clone()]);
    let hb = t.store.access_history(&b).unwrap();
    assert_eq!(hb.len(), 2);
    assert_eq!((hb[0].client.as_str(), keys(&hb[0])), ("gw-late", vec!["B1".to_string()]));
    assert_eq!((hb[1].client.as_str(), keys(&hb[1])), ("gw-early", vec!["B1".to_string()]));
    let hc = t.store.access_history(&c).unwrap();
    assert_eq!(hc.len(), 1);
    assert_eq!(hc[0].client, "gw-late");
    assert_eq!(hc[0].outcome, AccessOutcome::ConsentRequired);
    assert!(hc[0].disclosed.is_empty());
    assert!(!hc[0].personal_disclosed);
}

#[test]
fn a_change_set_split_across_threads_puts_every_bucket_under_its_own_key() {
    // More buckets than the engine handles on one thread (4,096): their reads and rewrites
    // are split across threads by key range, and the new values come back per thread; each
    // must still land under its own key.
    let t = store();
    let n = 5_000usize;
    let people: Vec<PmhId> = (0..n as u64).map(|i| person(i + 1)).collect();
    let first: Vec<Change> = people.iter().enumerate().map(|(i, p)| upsert(*p, cert(&format!("H{i}")))).collect();
    assert_eq!(t.store.apply(first, ApplyMode::Diff).unwrap().inserted, n as u64);
    // Every person gains a certificate; every tenth loses the first one.
    let mut second = Vec::new();
    for (i, p) in people.iter().enumerate() {
        second.push(upsert(*p, cert(&format!("X{i}"))));
        if i % 10 == 0 {
            second.push(Change::Delete(cert(&format!("H{i}")).id()));
        }
    }
    let s = t.store.apply(second, ApplyMode::Diff).unwrap();
    assert_eq!((s.inserted, s.deleted, s.updated), (n as u64, n as u64 / 10, 0));
    for (i, p) in people.iter().enumerate() {
        t.store.grant_consent(p, institution(), unix_now()).unwrap();
        let mut want = vec![format!("X{i}")];
        if i % 10 != 0 {
            want.insert(0, format!("H{i}"));
        }
        want.sort();
        assert_eq!(answered(&t.store, p, "2026-11-21"), Some(want), "person {i}");
    }
    assert!(t.store.verify().unwrap().is_ok());
}

/// Every certificate each person holds, in stored order, with its name: what two stores
/// must agree on exactly.
fn holdings(store: &Store, people: &[PmhId]) -> Vec<Vec<(String, String)>> {
    people
        .iter()
        .map(|p| {
            store.grant_consent(p, institution(), unix_now()).unwrap();
            match store.lookup(store.register_client("test"), p, institution(), date("2026-11-21")).unwrap() {
                Lookup::ConsentRequired => panic!("consent was granted"),
                Lookup::Answered(e) => e
                    .certificates()
                    .map(|c| {
                        let c = &c.certificate;
                        (c.history_key.to_string(), c.basic_five_info.name.to_string())
                    })
                    .collect(),
            }
        })
        .collect()
}

#[test]
fn a_change_set_edited_on_every_core_ends_exactly_as_one_applied_row_by_row() {
    // A set above the one-thread threshold is edited in key-range parts on several threads;
    // the same rows applied as sets below it go through one thread in row order. Both must
    // leave every holder with the same certificates in the same order: certificates moved
    // between people (a removal in one part, an insertion in another), deletes, content
    // updates and new certificates, with and without store-key collisions.
    // And with the store taken as cold, when the sets are read and edited on more threads
    // than cores.
    let key_fns = [None, Some(colliding_key as fn(&PmhId) -> StoreKey)];
    for (key_fn, cold) in key_fns.into_iter().flat_map(|k| [(k, false), (k, true)]) {
        let open = |dir: &std::path::Path| match key_fn {
            None => Store::open(dir, config()).unwrap(),
            Some(f) => Store::open_with_key_fn(dir, config(), f).unwrap(),
        };
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (whole, rows) = (open(da.path()), open(db.path()));
        whole.assume_cold_reads(cold);
        let n = match key_fn {
            None => 6_000usize,
            Some(_) => 300, // one bucket holds everyone: keep its rewriting cheap
        };
        let people: Vec<PmhId> = (0..n as u64).map(|i| person(i + 1)).collect();
        let first: Vec<Change> = people.iter().enumerate().map(|(i, p)| upsert(*p, cert(&format!("H{i}")))).collect();
        let mut second = Vec::new();
        for (i, p) in people.iter().enumerate() {
            second.push(upsert(*p, cert(&format!("X{i}"))));
            let mut h = cert(&format!("H{i}"));
            match i % 5 {
                0 => second.push(upsert(people[(i * 7 + 3) % n], h)), // moved to someone else
                1 => second.push(Change::Delete(h.id())),
                2 => {
                    h.basic_five_info.name = format!("改名 {i}");
                    second.push(upsert(*p, h));
                }
                _ => {}
            }
        }
        // Enough rows for the split path even in the small colliding case.
        while second.len() < 4_200 {
            let i = second.len();
            second.push(upsert(people[i % n], cert(&format!("P{i}"))));
        }
        let mut total = ApplySummary::default();
        for set in [first, second] {
            let s = whole.apply(set.clone(), ApplyMode::Diff).unwrap();
            for chunk in set.chunks(1_000) {
                let c = rows.apply(chunk.to_vec(), ApplyMode::Diff).unwrap();
                total.inserted += c.inserted;
                total.updated += c.updated;
                total.deleted += c.deleted;
                total.unchanged += c.unchanged;
            }
            assert_eq!((s.inserted + s.updated + s.deleted + s.unchanged) as usize, set.len());
        }
        let (a, b) = (holdings(&whole, &people), holdings(&rows, &people));
        assert_eq!(a.len(), n);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "person {i} (colliding keys: {}, cold: {cold})", key_fn.is_some());
        }
        // Spot checks that the edits happened at all: H0 moved from person 0 to person 3,
        // who gained X0; person 2's H2 was renamed; person 1's H1 was deleted.
        let has = |i: usize, key: &str| a[i].iter().any(|(h, _)| h == key);
        assert!(has(0, "X0") && !has(0, "H0") && has(3, "H0"));
        assert!(a[2].iter().any(|(h, name)| h == "H2" && name == "改名 2"));
        assert!(!has(1, "H1"));
        assert!(total.deleted > 0 && total.updated > 0);
        assert!(whole.verify().unwrap().is_ok());
        assert!(rows.verify().unwrap().is_ok());
    }
}

/// The scheduling policy of each thread of this process named `rocksdb:*` (field 41 of
/// `/proc/self/task/TID/stat`; 0 = SCHED_OTHER, 5 = SCHED_IDLE).
/// The scheduling policy (field 41) of a `/proc/.../stat` line. Fields after the
/// parenthesised name start at field 3, so field 41 is index 38 there.
#[cfg(target_os = "linux")]
fn policy_of(stat: &str) -> u32 {
    stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(38).unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
fn rocksdb_thread_policies() -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let (Ok(name), Ok(stat)) =
            (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("stat")))
        else {
            continue; // exited meanwhile
        };
        if !name.starts_with("rocksdb:") {
            continue;
        }
        out.push((name.trim_end().to_owned(), policy_of(&stat)));
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn rocksdb_background_threads_move_to_the_idle_class_and_still_flush_and_compact() {
    // RocksDB's thread pools belong to the process: the check runs in a process of its own
    // (this test binary, running only the test below), so that no other test's flushes
    // wait for idle CPU.
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "engine::idle_background_threads_in_own_process", "--ignored", "--test-threads=1"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let tail: String = text.chars().skip(text.chars().count().saturating_sub(3000)).collect();
    assert!(out.status.success(), "the child failed: {tail}");
    assert!(text.contains("1 passed"), "the child ran no test: {text}");
}

#[cfg(target_os = "linux")]
#[test]
#[ignore = "run in a process of its own by rocksdb_background_threads_move_to_the_idle_class_and_still_flush_and_compact"]
fn idle_background_threads_in_own_process() {
    // Threads inherit the class of whoever started them, so compare with this thread's
    // (0 normally, but a test run under `chrt` starts elsewhere).
    let own_policy = || policy_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    let own = own_policy();
    assert_ne!(own, 5, "run the tests outside SCHED_IDLE");
    let t = store();
    let before = rocksdb_thread_policies();
    assert!(before.len() >= 2, "a flush and a compaction thread: {before:?}");
    assert!(before.iter().all(|(_, p)| *p == own), "{before:?}");
    assert_eq!(t.store.idle_background_threads().unwrap(), before.len());
    let after = rocksdb_thread_policies();
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|(_, p)| *p == 5), "every rocksdb thread SCHED_IDLE: {after:?}");
    // The test's own thread keeps its class.
    assert_eq!(own_policy(), own);

    // Flushes and compactions still run (on the idle threads) and lose nothing.
    let people: Vec<PmhId> = (1..=200).map(person).collect();
    let changes = |step: usize, tag: &str| -> Vec<Change> {
        people.iter().enumerate().step_by(step).map(|(i, p)| upsert(*p, cert(&format!("{tag}-{i}")))).collect()
    };
    t.store.apply(changes(1, "H1"), ApplyMode::Diff).unwrap();
    t.store.compact().unwrap();
    t.store.apply(changes(2, "H2"), ApplyMode::Diff).unwrap();
    t.store.compact().unwrap();
    assert!(t.store.verify().unwrap().is_ok());
    let gw = t.store.register_client("gw");
    for (i, p) in people.iter().enumerate() {
        t.store.grant_consent(p, institution(), unix_now()).unwrap();
        let l = t.store.lookup(gw, p, institution(), date("2026-11-21")).unwrap();
        assert_eq!(l.answered().unwrap().len(), if i % 2 == 0 { 2 } else { 1 }, "person {i}");
    }
}

#[test]
fn a_store_knows_when_its_directory_is_deleted_or_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = Store::open(&path, config()).unwrap();
    assert!(!store.directory_replaced());
    std::fs::rename(&path, dir.path().join("moved")).unwrap();
    assert!(store.directory_replaced(), "deleted (moved away)");
    std::fs::create_dir(&path).unwrap();
    assert!(store.directory_replaced(), "another directory at the same path");
}

#[test]
fn a_store_whose_directory_was_replaced_writes_nothing_into_the_new_one_when_closed() {
    // Closing flushes the memtables and writes a manifest, by path: into whatever
    // directory is there now. Every program holding a store gets this through its drop.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = Store::open(&path, config()).unwrap();
    let a = person(1);
    store.apply(vec![upsert(a, cert("H1"))], ApplyMode::Diff).unwrap();
    store.grant_consent(&a, institution(), unix_now()).unwrap();
    std::fs::rename(&path, dir.path().join("moved")).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("marker"), b"the new store").unwrap();
    drop(store);
    let left: Vec<_> = std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("marker")], "the old store wrote into the new directory");
}

#[test]
fn a_store_closes_even_while_its_access_log_cannot_be_written() {
    // The failed batch is tried again until it is written, but not past shutdown: a store
    // dropped meanwhile gives it up (logged) instead of hanging its process.
    let t = store();
    let a = person(1);
    t.store.apply(vec![upsert(a, cert("H1"))], ApplyMode::Diff).unwrap();
    t.store.grant_consent(&a, institution(), unix_now()).unwrap();
    t.store.inject_access_log_write_failures(u64::MAX);
    let _ = t.store.lookup(t.store.register_client("gw"), &a, institution(), date("2026-11-21")).unwrap();
    t.store.flush_access_log();
    assert!(t.store.access_log_failing());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(t);
        let _ = done_tx.send(());
    });
    assert!(done_rx.recv_timeout(std::time::Duration::from_secs(20)).is_ok(), "the store did not close");
}
