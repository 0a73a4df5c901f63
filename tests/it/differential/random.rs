//! Randomized differential test: proptest sequences of KV, txn, session, lock, service and
//! check operations, and short blocking reads, sent to a fresh sim and to a real Consul
//! 1.8.7; the normalized answers must be identical. A divergence is shrunk to the shortest
//! sequence that still shows it, printed as a case one can paste into a `.cases` file.
//!
//! `DIFFERENTIAL_SEQUENCES` sets how many sequences run (200 by default).

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use super::backend::{Backend, clean};
use super::normalize::{first_difference, normalize};
use super::script::{Send, Step};
use super::{leave_summary, run};
use crate::real_consul::RealConsul;

/// One operation, over a small space of keys, sessions and services so they collide.
#[derive(Clone, Debug)]
enum Op {
    Put { key: u8, value: u8, flags: Option<u8> },
    Get { key: u8, raw: bool },
    Delete { key: u8 },
    DeleteTree,
    CasAtReadIndex { key: u8, value: u8 },
    CasZero { key: u8, value: u8 },
    Keys { separator: bool },
    Recurse,
    Acquire { key: u8, session: u8 },
    Release { key: u8, session: u8 },
    Txn(Vec<TxnOp>),
    SessionCreate { slot: u8, delete: bool },
    SessionRenew { slot: u8 },
    SessionDestroy { slot: u8 },
    SessionInfo { slot: u8 },
    SessionList,
    Register { svc: u8, tag: u8 },
    Deregister { svc: u8 },
    CheckPass { svc: u8 },
    CheckFail { svc: u8 },
    AgentChecks,
    ShortBlockingRead { key: u8 },
}

#[derive(Clone, Debug)]
enum TxnOp {
    Set { key: u8, value: u8 },
    Get { key: u8 },
    Delete { key: u8 },
    CheckNotExists { key: u8 },
    Lock { key: u8, session: u8 },
}

fn key() -> impl Strategy<Value = u8> {
    0u8..3
}

fn slot() -> impl Strategy<Value = u8> {
    0u8..2
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        (key(), any::<u8>()).prop_map(|(key, value)| TxnOp::Set { key, value }),
        key().prop_map(|key| TxnOp::Get { key }),
        key().prop_map(|key| TxnOp::Delete { key }),
        key().prop_map(|key| TxnOp::CheckNotExists { key }),
        (key(), slot()).prop_map(|(key, session)| TxnOp::Lock { key, session }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), any::<u8>(), proptest::option::of(any::<u8>()))
            .prop_map(|(key, value, flags)| Op::Put { key, value, flags }),
        3 => (key(), any::<bool>()).prop_map(|(key, raw)| Op::Get { key, raw }),
        2 => key().prop_map(|key| Op::Delete { key }),
        1 => Just(Op::DeleteTree),
        2 => (key(), any::<u8>()).prop_map(|(key, value)| Op::CasAtReadIndex { key, value }),
        1 => (key(), any::<u8>()).prop_map(|(key, value)| Op::CasZero { key, value }),
        1 => any::<bool>().prop_map(|separator| Op::Keys { separator }),
        1 => Just(Op::Recurse),
        3 => (key(), slot()).prop_map(|(key, session)| Op::Acquire { key, session }),
        2 => (key(), slot()).prop_map(|(key, session)| Op::Release { key, session }),
        2 => proptest::collection::vec(txn_op(), 1..4).prop_map(Op::Txn),
        1 => (slot(), any::<bool>()).prop_map(|(slot, delete)| Op::SessionCreate { slot, delete }),
        1 => slot().prop_map(|slot| Op::SessionRenew { slot }),
        1 => slot().prop_map(|slot| Op::SessionDestroy { slot }),
        1 => slot().prop_map(|slot| Op::SessionInfo { slot }),
        1 => Just(Op::SessionList),
        1 => (slot(), 0u8..2).prop_map(|(svc, tag)| Op::Register { svc, tag }),
        1 => slot().prop_map(|svc| Op::Deregister { svc }),
        1 => slot().prop_map(|svc| Op::CheckPass { svc }),
        1 => slot().prop_map(|svc| Op::CheckFail { svc }),
        1 => Just(Op::AgentChecks),
        1 => key().prop_map(|key| Op::ShortBlockingRead { key }),
    ]
}

fn capture(mut s: Send, name: &str, selector: super::script::Selector) -> Send {
    s.captures.push((name.to_string(), selector));
    s
}

/// The steps of a sequence: two sessions first (so every slot names one), then the ops.
fn steps(ops: &[Op]) -> Vec<Step> {
    use super::script::Selector;
    let mut out = Vec::new();
    let mut send = |s: Send| out.push(Step::Send(s));
    for slot in 0..2 {
        send(capture(
            Send::new("PUT", "/v1/session/create", format!(r#"{{"Name":"s{slot}"}}"#)),
            &format!("s{slot}"),
            Selector::Json("/ID".into()),
        ));
    }
    let k = |key: &u8| format!("/v1/kv/${{P}}/k{key}");
    for op in ops {
        match op {
            Op::Put { key, value, flags } => {
                let q = flags.map(|f| format!("?flags={f}")).unwrap_or_default();
                send(Send::new("PUT", format!("{}{q}", k(key)), format!("v{value}")));
            }
            Op::Get { key, raw } => {
                send(Send::new("GET", format!("{}{}", k(key), if *raw { "?raw" } else { "" }), ""))
            }
            Op::Delete { key } => send(Send::new("DELETE", k(key), "")),
            Op::DeleteTree => send(Send::new("DELETE", "/v1/kv/${P}/?recurse", "")),
            Op::CasAtReadIndex { key, value } => {
                send(capture(
                    Send::new("GET", k(key), ""),
                    "i",
                    Selector::Header("x-consul-index".into()),
                ));
                send(Send::new("PUT", format!("{}?cas=${{i}}", k(key)), format!("c{value}")));
            }
            Op::CasZero { key, value } => {
                send(Send::new("PUT", format!("{}?cas=0", k(key)), format!("z{value}")))
            }
            Op::Keys { separator } => send(Send::new(
                "GET",
                format!("/v1/kv/${{P}}/?keys{}", if *separator { "&separator=/" } else { "" }),
                "",
            )),
            Op::Recurse => send(Send::new("GET", "/v1/kv/${P}/?recurse", "")),
            Op::Acquire { key, session } => {
                send(Send::new("PUT", format!("{}?acquire=${{s{session}}}", k(key)), "held"))
            }
            Op::Release { key, session } => {
                send(Send::new("PUT", format!("{}?release=${{s{session}}}", k(key)), "free"))
            }
            Op::Txn(ops) => {
                let ops: Vec<String> = ops.iter().map(txn_json).collect();
                send(Send::new("PUT", "/v1/txn", format!("[{}]", ops.join(","))));
            }
            Op::SessionCreate { slot, delete } => send(capture(
                Send::new(
                    "PUT",
                    "/v1/session/create",
                    format!(
                        r#"{{"Name":"s{slot}","Behavior":"{}","LockDelay":"1s"}}"#,
                        if *delete { "delete" } else { "release" }
                    ),
                ),
                &format!("s{slot}"),
                Selector::Json("/ID".into()),
            )),
            Op::SessionRenew { slot } => {
                send(Send::new("PUT", format!("/v1/session/renew/${{s{slot}}}"), ""))
            }
            Op::SessionDestroy { slot } => {
                send(Send::new("PUT", format!("/v1/session/destroy/${{s{slot}}}"), ""))
            }
            Op::SessionInfo { slot } => {
                send(Send::new("GET", format!("/v1/session/info/${{s{slot}}}"), ""))
            }
            Op::SessionList => {
                let mut s = Send::new("GET", "/v1/session/list", "");
                s.unordered = true;
                send(s);
            }
            Op::Register { svc, tag } => send(Send::new(
                "PUT",
                "/v1/agent/service/register",
                format!(
                    r#"{{"Name":"svc{svc}","ID":"svc{svc}","Port":{},"Tags":["t{tag}"],"Check":{{"TTL":"30s"}}}}"#,
                    8000 + u16::from(*svc)
                ),
            )),
            Op::Deregister { svc } => {
                send(Send::new("PUT", format!("/v1/agent/service/deregister/svc{svc}"), ""))
            }
            Op::CheckPass { svc } => {
                send(Send::new("PUT", format!("/v1/agent/check/pass/service:svc{svc}"), ""))
            }
            Op::CheckFail { svc } => send(Send::new(
                "PUT",
                format!("/v1/agent/check/fail/service:svc{svc}?note=down"),
                "",
            )),
            Op::AgentChecks => send(Send::new("GET", "/v1/agent/checks", "")),
            Op::ShortBlockingRead { key } => {
                send(capture(
                    Send::new("GET", k(key), ""),
                    "b",
                    Selector::Header("x-consul-index".into()),
                ));
                send(Send::new("GET", format!("{}?index=${{b}}&wait=100ms", k(key)), ""));
            }
        }
    }
    out
}

fn txn_json(op: &TxnOp) -> String {
    use base64::Engine;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let key = |k: &u8| format!("${{P}}/k{k}");
    match op {
        TxnOp::Set { key: k, value } => {
            format!(
                r#"{{"KV":{{"Verb":"set","Key":"{}","Value":"{}"}}}}"#,
                key(k),
                b64(format!("t{value}"))
            )
        }
        TxnOp::Get { key: k } => format!(r#"{{"KV":{{"Verb":"get","Key":"{}"}}}}"#, key(k)),
        TxnOp::Delete { key: k } => format!(r#"{{"KV":{{"Verb":"delete","Key":"{}"}}}}"#, key(k)),
        TxnOp::CheckNotExists { key: k } => {
            format!(r#"{{"KV":{{"Verb":"check-not-exists","Key":"{}"}}}}"#, key(k))
        }
        TxnOp::Lock { key: k, session } => format!(
            r#"{{"KV":{{"Verb":"lock","Key":"{}","Value":"{}","Session":"${{s{session}}}"}}}}"#,
            key(k),
            b64("locked".into())
        ),
    }
}

/// Renders a sequence as a case, for the failure message.
fn as_case(steps: &[Step]) -> String {
    let mut out = String::from("case shrunk: found by the randomized differential test\n");
    for s in steps {
        if let Step::Send(s) = s {
            out.push_str(&s.text);
            out.push('\n');
        }
    }
    out
}

/// Runs one sequence on Consul and on a fresh sim; the first difference, if any.
fn compare(
    rt: &tokio::runtime::Runtime,
    consul: &Arc<Backend>,
    prefix: &str,
    ops: &[Op],
) -> Result<Option<String>, TestCaseError> {
    let steps = steps(ops);
    let ((want, want_base), (got, got_base)) = rt.block_on(async {
        let fail = |e: String| TestCaseError::fail(e);
        let want_base = consul.baseline().await.map_err(fail)?;
        let want = run::run(consul, prefix, &steps).await;
        clean(consul).await.map_err(|e| TestCaseError::fail(format!("cleaning Consul: {e}")))?;
        let sim = Arc::new(Backend::sim_in_process());
        let got_base = sim.baseline().await.map_err(fail)?;
        let got = run::run(&sim, prefix, &steps).await;
        Ok::<_, TestCaseError>(((want, want_base), (got, got_base)))
    })?;
    if !want.failures.is_empty() {
        return Err(TestCaseError::fail(format!("on Consul: {:?}", want.failures)));
    }
    let diff = first_difference(
        &normalize(&want.transcript, &[], want_base),
        &normalize(&got.transcript, &[], got_base),
        &|_| false,
    );
    Ok(match diff {
        Some(d) => Some(format!("{d}\n\n{}", as_case(&steps))),
        None if !got.failures.is_empty() => {
            Some(format!("on the sim: {:?}\n\n{}", got.failures, as_case(&steps)))
        }
        None => None,
    })
}

/// The sequences' seed: `DIFFERENTIAL_SEED` to replay a run, else a new one each run.
fn seed() -> u64 {
    std::env::var("DIFFERENTIAL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

fn runner(sequences: u32, seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config {
            cases: sequences,
            failure_persistence: None,
            max_shrink_iters: 300,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

#[test]
fn random_sequences_agree_with_real_consul() {
    let sequences: u32 =
        std::env::var("DIFFERENTIAL_SEQUENCES").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let seed = seed();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let real = rt.block_on(RealConsul::start());
    let consul = Arc::new(Backend::consul(&real));
    rt.block_on(clean(&consul)).expect("cleaning a fresh Consul");
    // Each sequence gets its own keys: a lock-delay left by one (Consul keeps it after the
    // session is gone) must not reach the next.
    let n = std::sync::atomic::AtomicUsize::new(0);
    let prefix = || format!("r{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let strategy = proptest::collection::vec(op(), 1..12);
    // First every sequence, counting divergences; then, if there were any, the same sequences
    // again (same seed) stopping at the first divergence and shrinking it.
    let divergences = std::sync::atomic::AtomicUsize::new(0);
    let counted = runner(sequences, seed).run(&strategy, |ops| {
        if compare(&rt, &consul, &prefix(), &ops)?.is_some() {
            divergences.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    });
    let shrunk = match (&counted, divergences.load(std::sync::atomic::Ordering::Relaxed)) {
        (Err(e), _) => Some(e.to_string()),
        (Ok(()), 0) => None,
        (Ok(()), _) => runner(sequences, seed)
            .run(&strategy, |ops| match compare(&rt, &consul, &prefix(), &ops)? {
                Some(d) => Err(TestCaseError::fail(d)),
                None => Ok(()),
            })
            .err()
            .map(|e| e.to_string()),
    };
    drop(real);
    let d = divergences.load(std::sync::atomic::Ordering::Relaxed);
    leave_summary(
        "differential.txt",
        &format!("differential {sequences} sequences, {d} divergences"),
    );
    if let Some(e) = shrunk {
        panic!(
            "the sim and Consul 1.8.7 diverge (DIFFERENTIAL_SEED={seed} replays this run):\n{e}"
        );
    }
}
