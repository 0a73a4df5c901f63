//! Differential conformance: the same requests to the sim in-process, the sim over HTTP and a
//! real Consul 1.8.7 dev agent (started here), whole answers compared after normalization.
//!
//! - [`cases_agree_with_real_consul`]: every case in `tests/conformance/*.cases` (see
//!   [`script`] for the language). A case passes on a backend when each step's own
//!   expectations hold there; on a sim it must also give Consul's answers, step by step.
//! - [`random`]: random sequences of operations, sim against Consul, shrunk on a divergence.
//!
//! Where the sim follows a behaviour newer than 1.8.7, the difference is one row of
//! [`VERSION_DIFFERENCES`], the only place a sim may differ from Consul.
//! `cargo xtask conformance` runs both and prints their summary line.

mod backend;
mod normalize;
mod random;
mod run;
mod script;

use std::sync::Arc;

use backend::{Backend, Kind, clean};
use script::{Case, Step};

use crate::real_consul::RealConsul;

/// A behaviour where the sim follows Consul's current documentation, not 1.8.7.
pub(crate) struct VersionDifference {
    /// The case, and the step (its request: method, target, body) that differs.
    pub(crate) case: &'static str,
    pub(crate) step: &'static str,
    /// What Consul 1.8.7 answers there (the step's `->` is what current Consul answers).
    pub(crate) consul_1_8_7: u16,
    /// What changed, and where the current behaviour is documented.
    pub(crate) what: &'static str,
    pub(crate) doc: &'static str,
}

/// Every place the sim may differ from Consul 1.8.7, with the documentation it follows.
pub(crate) const VERSION_DIFFERENCES: &[VersionDifference] = &[
    VersionDifference {
        case: "txn-128-ops",
        step: "PUT /v1/txn ${txn:100}",
        consul_1_8_7: 413,
        what: "a transaction may hold 128 operations since Consul 1.14 (64 before)",
        doc: "https://developer.hashicorp.com/consul/api-docs/txn",
    },
    VersionDifference {
        case: "txn-129-ops",
        step: "PUT /v1/txn ${txn:129}",
        consul_1_8_7: 413,
        what: "the refusal names the limit: \"(129 > 128)\" since Consul 1.14, \"(129 > 64)\" before",
        doc: "https://developer.hashicorp.com/consul/api-docs/txn",
    },
];

/// The row for a step, matched on its request (method, target, body) as written.
fn version_difference(case: &str, step: &str) -> Option<&'static VersionDifference> {
    let request = step.split(" -> ").next().unwrap_or(step).split_whitespace();
    let request = request.collect::<Vec<_>>().join(" ");
    VERSION_DIFFERENCES.iter().find(|d| d.case == case && d.step == request)
}

/// Every case of every file under `tests/conformance/`, in file order.
pub(crate) fn load_cases() -> Vec<Case> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cases"))
        .collect();
    files.sort();
    let mut cases: Vec<Case> = Vec::new();
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for case in script::parse(&name, &text).unwrap_or_else(|e| panic!("{e}")) {
            assert!(
                !cases.iter().any(|c| c.name == case.name),
                "{}: case {:?} is defined in two files",
                case.origin,
                case.name
            );
            cases.push(case);
        }
    }
    // Fresh cases see the long-lived Consul before any other case has written to it.
    for c in cases.iter().filter(|c| c.fresh) {
        let writes = c.steps.iter().any(|s| matches!(s, Step::Send(s) if s.method != "GET"));
        assert!(!writes, "{}: a fresh case must not write", c.origin);
    }
    cases.sort_by_key(|c| !c.fresh);
    cases
}

/// The steps as Consul 1.8.7 should see them: a version difference's status is 1.8.7's.
fn steps_for_consul(case: &Case) -> Vec<Step> {
    case.steps
        .iter()
        .map(|s| match s {
            Step::Send(send) => {
                let mut send = send.clone();
                if let Some(d) = version_difference(&case.name, &send.text) {
                    send.status = Some(d.consul_1_8_7);
                }
                Step::Send(send)
            }
            other => other.clone(),
        })
        .collect()
}

/// Writes a summary line where `cargo xtask conformance` looks for it.
pub(crate) fn leave_summary(file: &str, line: &str) {
    if let Some(dir) = std::env::var_os("CONFORMANCE_RESULTS") {
        let dir = std::path::PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(file), format!("{line}\n"));
    }
    eprintln!("{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_agree_with_real_consul() {
    let only = std::env::var("CONFORMANCE_CASE").ok().filter(|s| !s.is_empty());
    let cases: Vec<Case> = load_cases()
        .into_iter()
        .filter(|c| only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();
    assert!(!cases.is_empty(), "no conformance cases found");
    let real = RealConsul::start().await;
    // A new agent syncs its own node once more after it reports ready (anti-entropy); let
    // that settle before the cases that read a fresh agent's state.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let consul = Arc::new(Backend::consul(&real));
    clean(&consul).await.expect("cleaning a fresh Consul");
    let mut passed = [0usize; 3];
    let mut report = Vec::new();
    for case in &cases {
        let prefix = format!("t/{}", case.name);
        let base = consul.baseline().await.unwrap_or_else(|e| panic!("Consul's raft index: {e}"));
        let want = run::run(&consul, &prefix, &steps_for_consul(case)).await;
        clean(&consul).await.unwrap_or_else(|e| panic!("cleaning Consul after {}: {e}", case.name));
        let want_norm = normalize::normalize(&want.transcript, &case.masks, base);
        if want.failures.is_empty() {
            passed[2] += 1;
        } else {
            report.push(format!(
                "{} ({}) on consul-1.8.7:\n    {}",
                case.name,
                case.origin,
                want.failures.join("\n    ")
            ));
        }
        for (slot, kind) in [Kind::SimInProcess, Kind::SimHttp].into_iter().enumerate() {
            let backend = Arc::new(match kind {
                Kind::SimInProcess => Backend::sim_in_process(),
                _ => Backend::sim_http().await,
            });
            let base = backend.baseline().await.unwrap_or_else(|e| panic!("sim index: {e}"));
            let got = run::run(&backend, &prefix, &case.steps).await;
            let got_norm = normalize::normalize(&got.transcript, &case.masks, base);
            let skip = |step: &str| version_difference(&case.name, step).is_some();
            let mut problems = got.failures;
            if want.failures.is_empty()
                && let Some(d) = normalize::first_difference(&want_norm, &got_norm, &skip)
            {
                problems.push(d);
            }
            if problems.is_empty() {
                passed[slot] += 1;
            } else {
                report.push(format!(
                    "{} ({}) on {}:\n    {}",
                    case.name,
                    case.origin,
                    kind.label(),
                    problems.join("\n    ")
                ));
            }
        }
    }
    drop(real);
    let n = cases.len();
    let line = format!(
        "conformance: {n} cases; {} {}/{n}, {} {}/{n}, {} {}/{n}",
        Kind::ALL[0].label(),
        passed[0],
        Kind::ALL[1].label(),
        passed[1],
        Kind::ALL[2].label(),
        passed[2]
    );
    if only.is_none() {
        leave_summary("cases.txt", &line);
    } else {
        eprintln!("{line}");
    }
    assert!(report.is_empty(), "{line}\n\n{}", report.join("\n\n"));
}

#[test]
fn every_version_difference_names_a_step_of_a_case_and_its_doc() {
    let cases = load_cases();
    for d in VERSION_DIFFERENCES {
        let case = cases
            .iter()
            .find(|c| c.name == d.case)
            .unwrap_or_else(|| panic!("version difference names no case: {:?}", d.case));
        let steps = case.steps.iter().filter(|s| match s {
            Step::Send(s) => version_difference(&case.name, &s.text).is_some(),
            _ => false,
        });
        assert_eq!(steps.count(), 1, "{}: {:?} must name exactly one step", case.name, d.step);
        assert!(
            d.doc.starts_with("https://") && !d.what.is_empty(),
            "{}: say what and where",
            d.case
        );
        assert!(
            !case.about.is_empty(),
            "{}: a case with a version difference says what it shows",
            d.case
        );
    }
}
