//! The lookup workload: which people, their set-up through the API, and the request mix.
//!
//! People come from the synthetic population the store was generated from
//! ([`Population`]): person `i < persons` exists in the store, person `i ≥ persons` has a
//! valid My Number and no records ("unknown"). Of the `people` the run uses:
//!
//! ```text
//! [ unknown (consented) | known, consented | known, not consented ]
//!   unknown-share          consent-share − unknown-share   the rest
//! ```
//!
//! Set-up, before any timing: every person's PMH-ID is resolved with `POST /v1/pmh-ids`,
//! then the consented ones get `POST /v1/consents` at the institution, both spread over
//! all connections. The timed mix then picks, per request, a batch call (with probability
//! `batch-share`) of `batch-size` random people, or a single lookup of one random person;
//! a single lookup of a not-consented person should come back `403 consent_required`, an
//! *expected refusal*. Every request is built once here (head and body bytes), so the
//! timed loop only picks one.

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use super::conn::{Client, Headers, Prepared, Reply};
use super::stats::Outcome;
use super::target::Target;
use super::{Config, HttpError};
use crate::synth::{Population, Rng};

/// Distinct batch requests pre-built for the mix (picked at random from this pool).
const BATCH_POOL: usize = 1024;
/// Random stream of the people sample (independent of the connections' streams).
const PEOPLE_STREAM: u64 = 0x7065_6f70;
/// Random stream of the batch pool.
const BATCH_STREAM: u64 = 0x6261_7463;

/// One person of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Index in the synthetic population (`≥ persons` for unknown people).
    pub index: u64,
    /// Their My Number.
    pub my_number: String,
    /// Not in the store.
    pub unknown: bool,
    /// Gets a consent at the institution during set-up.
    pub consented: bool,
}

/// How many people fall in each part, from the shares (percent) and `people`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Split {
    /// People in the workload.
    pub people: usize,
    /// Of them consented (unknown people included).
    pub consented: usize,
    /// Of them not in the store (all consented).
    pub unknown: usize,
}

impl Split {
    /// The split for `config`'s shares.
    pub fn of(config: &Config) -> Split {
        let share = |pct: f64| ((config.people as f64) * pct / 100.0).round() as usize;
        Split { people: config.people, consented: share(config.consent_share), unknown: share(config.unknown_share) }
    }
}

/// The workload's people: unknown first, then known consented, then known not consented.
/// Known people are distinct, sampled without replacement from `0..persons`.
pub fn candidates(config: &Config) -> Vec<Candidate> {
    let split = Split::of(config);
    let pop = Population::new(config.seed, config.date);
    let known = (split.people - split.unknown) as u64;
    let mut rng = Rng::new(config.seed, PEOPLE_STREAM);
    let indices = sample(&mut rng, config.persons, known);
    let unknown = (0..split.unknown as u64).map(|j| config.persons + j);
    unknown
        .map(|i| (i, true))
        .chain(indices.into_iter().map(|i| (i, false)))
        .enumerate()
        .map(|(pos, (index, unknown))| Candidate {
            index,
            my_number: pop.my_number(index),
            unknown,
            consented: pos < split.consented,
        })
        .collect()
}

/// `k` distinct values of `0..n` in random order (Floyd's sampling, then a shuffle so the
/// order does not lean towards large values).
fn sample(rng: &mut Rng, n: u64, k: u64) -> Vec<u64> {
    let mut seen = std::collections::HashSet::with_capacity(k as usize);
    let mut out = Vec::with_capacity(k as usize);
    for j in n - k..n {
        let t = rng.below(j + 1);
        let v = if seen.insert(t) { t } else { j };
        seen.insert(v);
        out.push(v);
    }
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    out
}

/// What the set-up did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SetupReport {
    /// People in the workload and how they split.
    #[serde(flatten)]
    pub split: Split,
    /// PMH-IDs resolved (`POST /v1/pmh-ids`).
    pub resolved: usize,
    /// Consents granted (`POST /v1/consents`).
    pub consents_granted: usize,
    /// Set-up requests sent.
    pub requests: usize,
    /// Wall time of the set-up.
    pub secs: f64,
}

/// What a timed request should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A 2xx answer.
    Answer,
    /// A single lookup of a not-consented person: `403 consent_required`.
    Refusal,
}

impl Expect {
    /// Classifies a response.
    pub fn outcome(self, reply: &Reply<'_>) -> Outcome {
        match (self, reply.status) {
            (Expect::Answer, 200..=299) => Outcome::Ok,
            (Expect::Refusal, 200..=299) => Outcome::AnsweredUnconsented,
            (Expect::Refusal, 403) if contains(reply.body, b"consent_required") => Outcome::ExpectedRefusal,
            (_, s) => Outcome::Status(s),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The requests of a timed phase.
#[derive(Debug)]
pub enum Traffic {
    /// The ceiling: `GET /v1/ping`, every time.
    Ping(Prepared),
    /// The lookup mix.
    Lookup(Workload),
}

impl Traffic {
    /// The next request and what it should get.
    pub fn pick(&self, rng: &mut Rng) -> (&Prepared, Expect) {
        match self {
            Traffic::Ping(p) => (p, Expect::Answer),
            Traffic::Lookup(w) => w.pick(rng),
        }
    }
}

/// The lookup mix, every request pre-built.
#[derive(Debug)]
pub struct Workload {
    /// `GET /v1/subsidy/eligibility/{pmhId}?…` per person.
    singles: Vec<Prepared>,
    /// Whether person `i` was consented.
    consented: Vec<bool>,
    /// Pre-built batch calls.
    batches: Vec<Prepared>,
    /// Batch calls per million requests.
    batch_ppm: u64,
}

impl Workload {
    fn pick(&self, rng: &mut Rng) -> (&Prepared, Expect) {
        if self.batch_ppm > 0 && rng.below(1_000_000) < self.batch_ppm {
            return (&self.batches[rng.below(self.batches.len() as u64) as usize], Expect::Answer);
        }
        let i = rng.below(self.singles.len() as u64) as usize;
        (&self.singles[i], if self.consented[i] { Expect::Answer } else { Expect::Refusal })
    }
}

#[derive(Deserialize)]
struct PmhIdReply {
    #[serde(rename = "pmhId")]
    pmh_id: String,
}

/// Resolves and consents the workload's people over `clients`, then builds the mix.
pub(crate) async fn setup(
    clients: Vec<Client>,
    config: &Config,
    target: &Target,
    headers: &Headers,
) -> Result<(Vec<Client>, Workload, SetupReport), HttpError> {
    let started = Instant::now();
    let people = candidates(config);
    let prepare = |r: Result<Prepared, String>| r.map_err(HttpError::Config);
    let resolve: Vec<Prepared> = people
        .iter()
        .map(|p| {
            let body = serde_json::json!({ "myNumber": p.my_number }).to_string().into_bytes();
            prepare(Prepared::post_json(headers, target.path("/v1/pmh-ids"), body))
        })
        .collect::<Result<_, _>>()?;
    let (clients, ids) = fan_out(clients, resolve, |label, reply| {
        expect_status(label, reply, &[200])?;
        let r: PmhIdReply = serde_json::from_slice(reply.body)
            .map_err(|e| format!("{label}: answer is not {{\"pmhId\": …}}: {e}: {}", excerpt(reply.body)))?;
        if r.pmh_id.is_empty() || !r.pmh_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("{label}: unexpected pmhId {:?}", r.pmh_id));
        }
        Ok(r.pmh_id)
    })
    .await?;
    let institution = &config.institution;
    let consent: Vec<Prepared> = people
        .iter()
        .zip(&ids)
        .filter(|(p, _)| p.consented)
        .map(|(_, id)| {
            let body = serde_json::json!({ "pmhId": id, "institutionCode": institution }).to_string().into_bytes();
            prepare(Prepared::post_json(headers, target.path("/v1/consents"), body))
        })
        .collect::<Result<_, _>>()?;
    let consents_granted = consent.len();
    let (clients, _) = fan_out(clients, consent, |label, reply| expect_status(label, reply, &[200, 201])).await?;

    let date = config.date.to_string();
    let singles = ids
        .iter()
        .map(|id| {
            prepare(Prepared::get(
                headers,
                target.path(&format!("/v1/subsidy/eligibility/{id}?institution={institution}&date={date}")),
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut rng = Rng::new(config.seed, BATCH_STREAM);
    let batches = if config.batch_share > 0.0 {
        (0..BATCH_POOL)
            .map(|_| {
                let ids: Vec<&str> =
                    (0..config.batch_size).map(|_| ids[rng.below(ids.len() as u64) as usize].as_str()).collect();
                let body = serde_json::json!({ "institutionCode": institution, "date": date, "pmhIds": ids });
                prepare(Prepared::post_json(
                    headers,
                    target.path("/v1/subsidy/eligibility:batch"),
                    body.to_string().into_bytes(),
                ))
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let workload = Workload {
        singles,
        consented: people.iter().map(|p| p.consented).collect(),
        batches,
        batch_ppm: (config.batch_share * 10_000.0).round() as u64,
    };
    let report = SetupReport {
        split: Split::of(config),
        resolved: ids.len(),
        consents_granted,
        requests: ids.len() + consents_granted,
        secs: started.elapsed().as_secs_f64(),
    };
    Ok((clients, workload, report))
}

/// Checks the status of a set-up answer; a refusal of the token gets a hint.
fn expect_status(label: &str, reply: &Reply<'_>, ok: &[u16]) -> Result<(), String> {
    if ok.contains(&reply.status) {
        return Ok(());
    }
    let hint = match reply.status {
        401 | 403 => " (is --token a gateway token of this server?)",
        404 => " (is --url the server's base URL?)",
        _ => "",
    };
    Err(format!("{label}: HTTP {}{hint}: {}", reply.status, excerpt(reply.body)))
}

/// The start of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if body.len() > 200 { format!("{s}…") } else { s }
}

/// Sends `jobs` over the clients (connection `c` takes jobs `c`, `c + n`, …, one at a
/// time) and returns the clients and each job's result, in job order. The first failure
/// fails the set-up: a run on a half-prepared workload would measure nonsense.
async fn fan_out<T: Send + 'static>(
    clients: Vec<Client>,
    jobs: Vec<Prepared>,
    check: fn(&str, &Reply<'_>) -> Result<T, String>,
) -> Result<(Vec<Client>, Vec<T>), HttpError> {
    let jobs = Arc::new(jobs);
    let n = clients.len();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            let jobs = Arc::clone(&jobs);
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(jobs.len() / n + 1);
                for i in (c..jobs.len()).step_by(n) {
                    let job = &jobs[i];
                    let reply = client
                        .send(job)
                        .await
                        .map_err(|f| HttpError::Setup(format!("{}: {}", job.label, f.message)))?;
                    out.push(check(&job.label, &reply).map_err(HttpError::Setup)?);
                }
                Ok::<_, HttpError>((client, out))
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(n);
    let mut per_conn = Vec::with_capacity(n);
    for t in tasks {
        let (client, out) = t.await.map_err(|e| HttpError::Setup(format!("set-up task: {e}")))??;
        clients.push(client);
        per_conn.push(out.into_iter());
    }
    // Interleave back: job i was done by connection i % n, as its (i / n)-th.
    let mut results = Vec::with_capacity(jobs.len());
    for i in 0..jobs.len() {
        if let Some(r) = per_conn[i % n].next() {
            results.push(r);
        }
    }
    Ok((clients, results))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(people: usize, consent: f64, unknown: f64) -> Config {
        Config {
            people,
            persons: 1_000,
            consent_share: consent,
            unknown_share: unknown,
            ..Config::new("http://127.0.0.1:1/", "t")
        }
    }

    #[test]
    fn people_split_as_configured() {
        let c = config(200, 90.0, 5.0);
        let people = candidates(&c);
        assert_eq!(people.len(), 200);
        assert_eq!(people.iter().filter(|p| p.unknown).count(), 10);
        assert_eq!(people.iter().filter(|p| p.consented).count(), 180);
        assert!(people.iter().filter(|p| p.unknown).all(|p| p.consented && p.index >= 1_000));
        assert!(people.iter().filter(|p| !p.unknown).all(|p| p.index < 1_000));
        let distinct: std::collections::HashSet<_> = people.iter().map(|p| &p.my_number).collect();
        assert_eq!(distinct.len(), 200);
        // Same seed, same people; the My Numbers are the population's.
        assert_eq!(people, candidates(&c));
        let pop = Population::new(c.seed, c.date);
        assert!(people.iter().all(|p| p.my_number == pop.my_number(p.index)));
    }

    #[test]
    fn sample_is_distinct_and_covers_all_when_full() {
        let mut rng = Rng::new(1, 2);
        let mut all = sample(&mut rng, 50, 50);
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        let some = sample(&mut rng, 1_000_000, 1_000);
        assert_eq!(some.iter().collect::<std::collections::HashSet<_>>().len(), 1_000);
    }

    #[test]
    fn refusals_are_expected_only_for_unconsented_people() {
        let refusal = Reply { status: 403, body: br#"{"error":{"code":"consent_required","message":"no"}}"# };
        let forbidden = Reply { status: 403, body: br#"{"error":{"code":"forbidden","message":"no"}}"# };
        let ok = Reply { status: 200, body: b"{}" };
        assert_eq!(Expect::Refusal.outcome(&refusal), Outcome::ExpectedRefusal);
        assert_eq!(Expect::Answer.outcome(&refusal), Outcome::Status(403));
        assert_eq!(Expect::Refusal.outcome(&forbidden), Outcome::Status(403));
        assert_eq!(Expect::Refusal.outcome(&ok), Outcome::AnsweredUnconsented);
        assert_eq!(Expect::Answer.outcome(&ok), Outcome::Ok);
        assert_eq!(Expect::Answer.outcome(&Reply { status: 500, body: b"" }), Outcome::Status(500));
    }
}
