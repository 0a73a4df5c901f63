//! `cargo xtask real-cluster`: the fault scenarios on a real Consul 1.8.7 cluster
//! (`tests/it/real_cluster`, `#[ignore]`d in the default run), one at a time, then one
//! summary line from the figures each scenario left in `target/real-cluster/`.

use std::path::Path;

use serde_json::Value;

/// The scenarios that must have passed; a missing result counts as failed.
const SCENARIOS: &[&str] = &[
    "member_crash",
    "member_pause",
    "consul_servers",
    "agent_restart",
    "rolling_restart",
    "partition",
];

/// `cargo xtask real-cluster`.
pub(crate) fn run(root: &Path) -> Result<(), String> {
    let consul = match std::env::var_os("CONSUL_BIN").filter(|p| !p.is_empty()) {
        Some(p) => p.into(),
        None => crate::consul::ensure(root)?,
    };
    let results = root.join("target/real-cluster");
    let _ = std::fs::remove_dir_all(&results);
    let mut nextest = crate::cargo(&[
        "nextest",
        "run",
        "-p",
        "consul-ha-tests",
        "--no-fail-fast",
        "--run-ignored",
        "all",
        // One at a time: each scenario runs a dozen processes and measures time.
        "--test-threads",
        "1",
        "-E",
        "test(/^real_cluster::/)",
    ]);
    nextest.env("CONSUL_BIN", &consul).env("REAL_CLUSTER_OUT", &results);
    let outcome = crate::step("real-cluster scenarios (nextest)", nextest);
    let read = |name: &str| -> Option<Value> {
        let text = std::fs::read_to_string(results.join(format!("{name}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    };
    let reports: Vec<(&str, Option<Value>)> = SCENARIOS.iter().map(|s| (*s, read(s))).collect();
    let passed = reports.iter().filter(|(_, r)| r.as_ref().is_some_and(|r| r["passed"] == true));
    let passed = passed.count();
    let failed = SCENARIOS.len() - passed;
    let figures = |name: &str, field: &str| -> Vec<f64> {
        let mut v: Vec<f64> = reports
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, r)| r.as_ref())
            .flat_map(|r| r[field].as_array().cloned().unwrap_or_default())
            .filter_map(|x| x.as_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let total = |field: &str| -> u64 {
        reports.iter().filter_map(|(_, r)| r.as_ref()).map(|r| r[field].as_u64().unwrap_or(0)).sum()
    };
    let crash = figures("member_crash", "crash_failover_s");
    let sim: Vec<f64> = {
        let mut v: Vec<f64> = read("sim_prediction")
            .map(|r| r["crash_failover_s"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let bound = read("member_crash").and_then(|r| r["failover_bound_s"].as_f64());
    let handover = figures("rolling_restart", "handover_ms");
    for (name, r) in &reports {
        match r {
            Some(r) => {
                let list = |field: &str| -> String {
                    let v = r[field].as_array().cloned().unwrap_or_default();
                    let v: Vec<String> =
                        v.iter().filter_map(Value::as_f64).map(|x| format!("{x:.2}")).collect();
                    v.join(", ")
                };
                println!(
                    "  {name}: {}; cold-start election [{}] s; shard recovery [{}] s; session reaped after [{}] s; {}",
                    if r["passed"] == true { "passed" } else { "FAILED" },
                    list("cold_start_s"),
                    list("shard_recovery_s"),
                    list("session_reap_s"),
                    r["notes"],
                );
                for f in r["failures"].as_array().cloned().unwrap_or_default() {
                    println!("    failure: {}", f.as_str().unwrap_or_default());
                }
            }
            None => println!("  {name}: FAILED (no result)"),
        }
    }
    println!(
        "  crash failover over {} crashes: max {}; sim p99 {}; handover p99 {} ms",
        crash.len(),
        fmt(crash.last().copied()),
        fmt(pct(&sim, 0.99)),
        fmt(pct(&handover, 0.99)),
    );
    let (a, d) = (pct(&crash, 0.5), pct(&sim, 0.5));
    let sim_close = matches!((a, d), (Some(a), Some(d)) if (d - a).abs() <= 0.1 * a);
    println!(
        "real-cluster: {passed} scenarios passed, {failed} failed; crash failover p50 {} s p99 {} s (bound {} s, sim {} s); handover p50 {} ms; stale-token writes {}; overlapping leaders {}",
        fmt(a),
        fmt(pct(&crash, 0.99)),
        fmt(bound),
        fmt(d),
        pct(&handover, 0.5).map_or("-".into(), |x| format!("{x:.0}")),
        total("stale_token_writes"),
        total("overlapping_leaders"),
    );
    outcome?;
    if failed > 0 {
        return Err(format!("{failed} scenario(s) failed"));
    }
    if !sim_close {
        return Err("the sim's crash failover is not within 10 % of real Consul's".into());
    }
    Ok(())
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.2}"))
}
